// The soak, shortened for CI: `deno task soak` runs the full one (10,000
// connections, 1,000,000 messages). Here 1,000 connections carry 50,000
// messages after a warm-up of 15,000 connections, and the same rules hold:
// every reply matched to its request, nothing lost, duplicated, reordered or
// corrupted; afterwards the server's descriptors are back at their baseline
// and its memory within 10 % of its level after the warm-up.
//
// The warm-up is most of the time (about 10 s a mode here): V8 grows the
// server's heap in steps over the first 6,000 to 9,000 connections of this
// load, and only then is its memory level (see tests/soak.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import type { Mode } from "./helpers.ts";
import {
  problems,
  soak,
  type SoakOptions,
  TABLE_HEAD,
  tableRow,
} from "./soak.ts";

const SHORT: SoakOptions = {
  connections: 1_000,
  messages: 50_000,
  warmUp: 15_000,
  concurrency: 100,
  seed: 1,
};

const SERVERS: [Mode, string[]][] = [
  ["thread-per-connection", []],
  ["fixed-pool", ["--pool-size", "200"]],
];

for (const [mode, args] of SERVERS) {
  test(`${mode}: soak: every reply right, no descriptor or memory kept`, {
    skip: !existsSync("/proc/self/fd") && "reads descriptors from /proc",
    timeout: 300_000,
  }, async (t) => {
    const report = await soak(mode, args, SHORT);
    t.diagnostic(`${TABLE_HEAD}\n${tableRow(report)}`);
    assert.deepEqual(problems(report, SHORT), []);
  });
}
