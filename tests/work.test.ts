// --work MS: each reply costs MS milliseconds of CPU on the server's thread.
// One event loop then answers two clients one after the other, where it
// answered them together while they only waited on the network; worker-pool
// answers them together again, from two threads. Timings are only bounded
// from the side a slow machine cannot cross: a busy loop of MS milliseconds
// never takes less, so two in turn take at least 2 x MS.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  expectReply,
  type Mode,
  type Server,
  TestClient,
  withServer,
} from "./helpers.ts";

const WORK = 1500;

// A client whose connection the server has taken (its log says so).
async function connect(server: Server, worker?: string) {
  for (let tries = 0; tries < 40; tries++) {
    const client = await TestClient.connect(server.port);
    const port = client.socket.localPort;
    const opened = new RegExp(
      `^#\\d+ 127\\.0\\.0\\.1:${port} (worker (\\d+) )?opened$`,
    );
    const line = await server.waitForLine(opened);
    if (worker === undefined || opened.exec(line)![2] !== worker) {
      return { client, worker: opened.exec(line)![2] };
    }
    client.close(); // the same worker as the first: try another port
  }
  throw new Error("every connection went to one worker");
}

// Both clients send a line at once; the time of each reply, from the send.
async function bothAsk(mode: Mode, args: string[], framing = "line") {
  let times: number[] = [];
  await withServer(mode, ["--framing", framing, ...args], async (server) => {
    const a = await connect(server);
    const b = await connect(
      server,
      mode === "worker-pool" ? a.worker : undefined,
    );
    try {
      const sent = performance.now();
      await Promise.all([a.client.write("A\n"), b.client.write("B\n")]);
      times = await Promise.all([a.client, b.client].map(async (client, i) => {
        if (framing === "line") await expectReply(client, "AB"[i]);
        else await client.nextBytes(1);
        return performance.now() - sent;
      }));
    } finally {
      a.client.close();
      b.client.close();
    }
  });
  return times.sort((x, y) => x - y);
}

for (const framing of ["line", "raw"]) {
  test(`thread-per-connection --work (${framing}): the second reply waits for the first one's work`, async () => {
    const [first, second] = await bothAsk(
      "thread-per-connection",
      ["--work", String(WORK)],
      framing,
    );
    assert.ok(first >= WORK, `first reply after ${first} ms`);
    assert.ok(second >= 2 * WORK, `second reply after ${second} ms`);
  });
}

test("thread-per-connection without --work: both replies come before one worked line would", async () => {
  const [, second] = await bothAsk("thread-per-connection", []);
  assert.ok(second < WORK, `second reply after ${second} ms`);
});

test("worker-pool --workers 2 --work: two clients on two workers are answered together", async () => {
  const [first, second] = await bothAsk(
    "worker-pool",
    ["--workers", "2", "--work", String(WORK)],
  );
  assert.ok(first >= WORK, `first reply after ${first} ms`);
  // In turn, the second would come after 2 x WORK at the least.
  assert.ok(second < 1.75 * WORK, `second reply after ${second} ms`);
});
