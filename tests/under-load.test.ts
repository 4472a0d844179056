// New clients are served while other connections pipeline (tests/under-load.ts
// measures how long they wait). On Bun this failed when the shim resolved a
// read of input it already held at once: one connection's loop could then
// answer hundreds of KiB in one turn of the event loop, while the listener
// takes one client a turn, so the new clients waited for the load to end.
import { test } from "node:test";
import assert from "node:assert/strict";
import { withServer } from "./helpers.ts";
import { underLoad } from "./under-load.ts";

// Each busy connection sends 8 MiB of lines: a few seconds' work for the
// server, against a fraction of a second for the new clients.
const LOAD_BYTES = 8 * 1024 * 1024;

for (
  const [mode, args] of [
    ["thread-per-connection", []],
    ["fixed-pool", ["--pool-size", "100"]],
    ["worker-pool", []],
  ] as const
) {
  test(`${mode}: 50 new clients are answered while 10 others pipeline`, () =>
    withServer(mode, ["--quiet", ...args], async (server) => {
      const { seconds, busyDone } = await underLoad(server.port, LOAD_BYTES);
      assert.notEqual(seconds, null, "not all answered within 60 s");
      assert.equal(busyDone, 0, "a busy connection finished its load first");
    }));
}
