// Durations are measured on a monotonic clock: the idle timeout and the
// second Ctrl+C hold while the wall clock (Date.now) jumps forward or back at
// every reading (tests/clock-step.ts, preloaded into the server). Only the
// reply's time stamp follows the wall clock.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  expectReply,
  MODE_NAMES,
  opened,
  ROOT,
  TestClient,
  withServer,
} from "./helpers.ts";

const preload = `${ROOT}tests/clock-step.ts`;
const FORWARD = { preload, env: { CLOCK_STEP_MS: "400000" } }; // 400 s
const BACK = { preload, env: { CLOCK_STEP_MS: "-3600000" } }; // an hour

const pause = (ms: number) => new Promise((over) => setTimeout(over, ms));

// A preload reaches no worker thread: worker-pool's connections run the same
// code as the other modes' (tests/modes.test.ts holds it the same), so only
// its main thread, which takes the signals, is checked here.
const SINGLE_THREADED = MODE_NAMES.filter((mode) => mode !== "worker-pool");

for (const mode of MODE_NAMES) {
  test(`${mode}: a clock that jumps back: a second Ctrl+C still exits`, () =>
    withServer(mode, ["--grace", "30"], async (server) => {
      const client = await TestClient.connect(server.port);
      try {
        await server.waitForLine(opened(client)); // it holds the grace open
        server.signal("SIGINT");
        await server.waitForLine(/^stopping: /);
        await pause(300); // a second press, not the first one twice
        server.signal("SIGINT");
        assert.deepEqual(await server.exit(), { code: 130, signal: null });
      } finally {
        client.close();
      }
    }, BACK));
}

for (const mode of SINGLE_THREADED) {
  test(`${mode}: a clock that jumps forward times out no busy client`, () =>
    withServer(mode, ["--idle-timeout", "1"], async (server) => {
      const client = await TestClient.connect(server.port);
      try {
        // A line every 300 ms for 2.4 s: always progress within the second.
        for (let i = 1; i <= 8; i++) {
          await client.write(`line ${i}\n`);
          await expectReply(client, `line ${i}`);
          await pause(300);
        }
      } finally {
        client.close();
      }
    }, FORWARD));

  test(`${mode}: a clock that jumps back still times out an idle client`, () =>
    withServer(mode, ["--idle-timeout", "1"], async (server) => {
      const client = await TestClient.connect(server.port);
      try {
        await client.write("hi\n");
        await expectReply(client, "hi");
        assert.equal(await client.nextLine(), "ERROR idle timeout");
      } finally {
        client.close();
      }
    }, BACK));
}
