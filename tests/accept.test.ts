// The accept loop under hostile peers, every mode: clients that connect and
// reset before the server takes them concern only themselves, so the server
// accepts again at once, with no pause and no log line. And the cap of
// thread-per-connection keeps nothing per connection while it waits.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import {
  expectReply,
  type Mode,
  MODE_NAMES,
  type Server,
  TestClient,
  withClient,
  withServer,
} from "./helpers.ts";
import { sleep } from "./load.ts";

// Connects, waits for the handshake, and resets (RST, not FIN) at once.
function connectAndReset(port: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.resetAndDestroy();
      resolve();
    });
    socket.once("error", () => resolve());
  });
}

const troubleLines = (server: Server) =>
  server.stdoutLines.filter((line) => line.startsWith("accept failing"));

// The modes limited to one client at a time, so that others queue.
const ONE_AT_A_TIME: [Mode, string[]][] = [
  ["serial", []],
  ["fixed-pool", ["--pool-size", "1"]],
  ["thread-per-connection", ["--max-connections", "1"]],
];

const RESETS = 100;

for (const [mode, args] of ONE_AT_A_TIME) {
  test(
    `${
      [mode, ...args].join(" ")
    }: ${RESETS} clients that reset while queued do not delay the next`,
    {
      timeout: 60_000,
    },
    () =>
      withClient(mode, args, async (busy, server) => {
        for (let i = 0; i < RESETS; i++) await connectAndReset(server.port);
        const next = await TestClient.connect(server.port);
        try {
          await next.write("next\n");
          assert.ok(
            await next.silentFor(100),
            "served while the slot was busy",
          );
          const freed = Date.now();
          busy.close();
          await expectReply(next, "next");
          // A pause per reset would be RESETS x 100 ms = 10 s; a busy machine
          // takes well under a second to accept 100 queued connections.
          const waited = Date.now() - freed;
          assert.ok(waited < 5000, `next served ${waited} ms after the slot`);
          assert.deepEqual(troubleLines(server), []);
          const unknownPeer = server.stdoutLines.filter((l) =>
            /undefined/.test(l)
          );
          assert.deepEqual(unknownPeer, []);
        } finally {
          next.close();
        }
      }),
  );
}

const CLIENTS = 10;

for (const mode of MODE_NAMES) {
  test(
    `${mode}: ${CLIENTS} clients are served while others connect and reset, 100 a second`,
    {
      timeout: 60_000,
    },
    () =>
      withServer(mode, ["--quiet"], async (server) => {
        let resetting = true;
        let resets = 0;
        const resetLoop = (async () => {
          const until = Date.now() + 30_000; // bounded, whatever happens
          while (resetting && Date.now() < until) {
            await connectAndReset(server.port);
            resets++;
            await sleep(10);
          }
        })();
        try {
          while (resets < 10) await sleep(10); // the resets are under way
          for (let i = 0; i < CLIENTS; i++) {
            const client = await TestClient.connect(server.port);
            try {
              await client.write(`client ${i}\n`);
              await expectReply(client, `client ${i}`);
            } finally {
              client.close();
            }
          }
        } finally {
          resetting = false;
          await resetLoop;
        }
        assert.deepEqual(troubleLines(server), []);
      }),
  );
}

// Each accept at the cap used to race every open connection's promise, and
// left a callback on each: with long-lived connections, memory grew with
// every connection through the last slot. Deno: about 60 bytes per open
// connection per accept, so 300 x 4,000 = 70 MiB.
const IDLE = 299;
const THROUGH_LAST_SLOT = 4000;

test(
  `thread-per-connection --max-connections ${
    IDLE + 1
  }: ${THROUGH_LAST_SLOT} connections through the last slot keep no memory`,
  {
    timeout: 120_000,
  },
  (t) =>
    withServer(
      "thread-per-connection",
      ["--max-connections", `${IDLE + 1}`, "--quiet"],
      async (server) => {
        const idle: TestClient[] = [];
        try {
          for (let i = 0; i < IDLE; i++) {
            const client = await TestClient.connect(server.port);
            idle.push(client);
            await client.write("idle\n");
            await expectReply(client, "idle");
          }
          await throughLastSlot(server, 500); // warm up
          const before = server.rssKiB();
          await throughLastSlot(server, THROUGH_LAST_SLOT);
          const grown = (server.rssKiB() - before) / 1024;
          t.diagnostic(`resident memory grew ${grown.toFixed(1)} MiB`);
          assert.ok(grown < 25, `grew ${grown.toFixed(1)} MiB`);
        } finally {
          for (const client of idle) client.close();
        }
      },
    ),
);

// `count` clients one after another, each served through the one free slot.
async function throughLastSlot(server: Server, count: number) {
  for (let i = 0; i < count; i++) {
    const client = await TestClient.connect(server.port);
    try {
      await client.write("x\n");
      await expectReply(client, "x");
    } finally {
      client.close();
    }
    await client.closed;
  }
}
