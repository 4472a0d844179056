// Load and faults, every mode: a flood of connects, slow peers, and peers
// that vanish mid-exchange. The server must survive each, end only the
// connections concerned, and afterwards hold no connection and no file
// descriptor more than before. Outcomes are asserted, never speed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import net from "node:net";
import {
  assertServes,
  CHUNK,
  IS_BUN,
  MiB,
  type Mode,
  MODE_NAMES,
  PATIENCE_MS,
  pushWithoutReading,
  type Server,
  TestClient,
  unstamped,
  withServer,
} from "./helpers.ts";
import {
  echoed,
  eventually,
  logged,
  openFds,
  Peer,
  settled,
  sleep,
} from "./load.ts";

const HAS_PROC = existsSync("/proc/self/fd");

// The server's descriptors once it has served a first client (a runtime
// opens some things on first use) and closed it.
async function baselineFds(server: Server): Promise<number> {
  await assertServes(server);
  // The log is written in the background: wait until the close is logged.
  await eventually(() => logged(server).closed >= 1);
  return (await settled(server, Infinity)).fds;
}

// Every connection the server opened is closed, it holds no descriptor more
// than `baseline`, and it still serves.
async function assertNothingKept(server: Server, baseline: number) {
  await assertServes(server);
  const { opened, closed, fds } = await settled(server, baseline);
  assert.equal(closed, opened, "connections still open");
  assert.equal(fds, baseline, "descriptors kept");
}

// ---- 3. Connection flood: 2,000 connects in one burst.

const FLOOD = 2_000;

// How many files this process may open (Linux); the server inherits the
// same limit.
function fileLimit(): number {
  const limits = readFileSync("/proc/self/limits", "utf8");
  return Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1] ?? 0);
}

// Starts FLOOD connects at once; each sends "flood <i>" when connected.
// Resolves once `wanted` have their reply (or after a generous wait), with
// each reply found and the sockets, still open.
async function flood(port: number, wanted: number) {
  const sockets: net.Socket[] = [];
  const replies = new Map<number, string>();
  for (let i = 0; i < FLOOD; i++) {
    const socket = net.connect({ host: "127.0.0.1", port });
    let text = "";
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(`flood ${i}\n`));
    socket.on("data", (data: string) => {
      text += data;
      if (text.endsWith("\n")) replies.set(i, text.slice(0, -1));
    });
    socket.on("error", () => {}); // past a full backlog, connects may fail
    sockets.push(socket);
  }
  await eventually(() => replies.size >= wanted, 4 * PATIENCE_MS);
  return { replies, sockets };
}

// Thread-per-connection and worker-pool serve every one of them; serial
// and fixed-pool serve as many as they hold at once (1 and 10) while the
// rest wait.
const FLOOD_SERVED: Record<Mode, number> = {
  serial: 1,
  "fixed-pool": 10,
  "thread-per-connection": FLOOD,
  "worker-pool": FLOOD,
};

for (const mode of MODE_NAMES) {
  const served = FLOOD_SERVED[mode];
  test(`${mode}: a flood of ${FLOOD} connects: survives, serves ${served}`, {
    skip: !HAS_PROC
      ? "reads /proc"
      : fileLimit() < FLOOD + 500 && `needs ulimit -n of ${FLOOD + 500}`,
    timeout: 120_000,
  }, (t) =>
    withServer(mode, [], async (server) => {
      const baseline = await baselineFds(server);
      const { replies, sockets } = await flood(server.port, served);
      try {
        t.diagnostic(`${replies.size} of ${FLOOD} served during the flood`);
        assert.ok(replies.size >= served, `${replies.size} served`);
        for (const [i, reply] of replies) {
          assert.equal(echoed(reply), `flood ${i}`);
        }
      } finally {
        for (const socket of sockets) socket.destroy();
      }
      await assertNothingKept(server, baseline);
    }));
}

// ---- 4. Slow peers.

// The idle rule counts progress, not activity: a line that arrives a byte
// at a time is progress once complete, but a client that trickles bytes and
// never completes a line is closed after --idle-timeout, though a byte
// arrives every second.
for (const mode of MODE_NAMES) {
  test(`${mode}: a client that sends a byte a second is closed when idle`, {
    timeout: 60_000,
  }, () =>
    withServer(mode, ["--idle-timeout", "2"], async (server) => {
      const client = await TestClient.connect(server.port);
      try {
        for (let i = 0; i < 6; i++) { // a line each 0.5 s, for 3 s
          await client.write(`${i}`);
          await sleep(250);
          await client.write("\n");
          await sleep(250);
        }
        for (let i = 0; i < 6; i++) {
          assert.equal(unstamped(await client.nextLine()), `${i}`);
        }
        let sent = 0;
        const deadline = Date.now() + 4 * 2000 + 5000;
        while (!client.isClosed && Date.now() < deadline) {
          await client.write("x").catch(() => {}); // it may be closed
          sent++;
          await sleep(1000);
        }
        assert.ok(client.isClosed, `still open after ${sent} bytes`);
        assert.equal(await client.nextLine(), "ERROR idle timeout");
        await server.waitForLine(/^#1 .* closed .*\(idle timeout\)$/);
      } finally {
        client.close();
      }
    }));
}

const REPLY_BYTES = 28; // "[Sat Nov 28 06:26:46 2026] " and "\n"
const READ_SIZE = 1024; // what the server reads at once
// What the server may hold for a client: the replies to one read. Empty
// lines make the most of it: 1,024 of them are 28 KiB of replies.
const HOLD_LIMIT = READ_SIZE * REPLY_BYTES;

// Bytes the kernel has queued on the loopback socket from `local` to
// `remote` port (Linux /proc/net/tcp): tx sent but not acknowledged or not
// yet sent, rx received but not yet read by the program.
function kernelQueues(local: number, remote: number) {
  for (const row of readFileSync("/proc/net/tcp", "utf8").split("\n")) {
    const field = row.trim().split(/\s+/);
    const port = (address = "") => parseInt(address.split(":")[1], 16);
    if (port(field[1]) !== local || port(field[2]) !== remote) continue;
    const [tx, rx] = field[4].split(":").map((hex) => parseInt(hex, 16));
    return { tx, rx };
  }
  throw new Error(`no socket ${local} -> ${remote} in /proc/net/tcp`);
}

// Sends newlines until a write is not taken for a second, then calls
// `measure(sent)` with the bytes the kernel has taken, and returns what it
// returned if the write is still waiting (if not, the server was only slow,
// and the push goes on).
async function whenStalled<T>(conn: Deno.Conn, measure: (sent: number) => T) {
  const newlines = new Uint8Array(64 * 1024).fill(10);
  let sent = 0;
  while (sent < 64 * MiB) {
    const write = { taken: -1 };
    const writing = conn.write(newlines).then((n) => write.taken = n, () => 0);
    while (write.taken === -1) {
      await Promise.race([writing, sleep(1000)]);
      if (write.taken !== -1) break;
      const measured = measure(sent);
      if (write.taken === -1) return measured;
    }
    sent += write.taken;
  }
  throw new Error(`the server took ${sent} bytes without stalling`);
}

// Reads one byte a second until stopped; `read` counts them.
function readSlowly(conn: Deno.Conn) {
  const reader = { read: 0, stop: async () => {} };
  let reading = true;
  const done = (async () => {
    const one = new Uint8Array(1);
    try {
      while (reading && await conn.read(one) !== null) {
        reader.read++;
        await sleep(1000);
      }
    } catch { /* closed */ }
  })();
  reader.stop = () => (reading = false, conn.close(), done);
  return reader;
}

// The client reads its replies one byte a second, so the server's writes
// wait. What the server holds for it is measured from the bytes: the replies
// to all it has read, less what is in the kernel's buffers and what the
// client has read. Deno.connect reads one byte from the kernel when asked
// for one; Bun's sockets read all there is.
for (const mode of MODE_NAMES) {
  test(`${mode}: a client reading a byte a second costs <= 28 KiB`, {
    skip: IS_BUN
      ? "Bun reads all the kernel has, not one byte"
      : !existsSync("/proc/net/tcp") && "reads socket queues from /proc",
    timeout: 60_000,
  }, (t) =>
    withServer(mode, ["--idle-timeout", "3"], async (server) => {
      const conn = await Deno.connect({ port: server.port });
      const port = (conn.localAddr as Deno.NetAddr).port;
      const reader = readSlowly(conn);
      try {
        const { sent, client, serving, read } = await whenStalled(
          conn,
          (sent) => ({
            sent,
            client: kernelQueues(port, server.port),
            serving: kernelQueues(server.port, port),
            read: reader.read,
          }),
        );
        const taken = sent - client.tx - serving.rx;
        const held = taken * REPLY_BYTES - serving.tx - client.rx - read;
        t.diagnostic(
          `client sent ${sent} bytes and read ${read}; server read ` +
            `${taken} and holds ${held} bytes of replies; its kernel ` +
            `buffers hold ${serving.rx} bytes in and ${serving.tx} out`,
        );
        assert.ok(held <= HOLD_LIMIT + 2, `server holds ${held} bytes`);
        assert.ok(held >= -2, `bytes unaccounted for: ${held}`);
        // A byte a second opens no room in the kernel's window, so the
        // server's write makes no progress and the idle rule ends it.
        await server.waitForLine(/^#1 .* closed .*\(idle timeout\)$/);
      } finally {
        await reader.stop();
      }
    }));
}

// ---- 6. Abrupt peers: each kind ten times at once, then the server must
// hold no connection and no descriptor more than before.

const ABRUPT = 10;
const LINES = Buffer.from("0123456789abcdef0123456789abcdef\n".repeat(8192));

// Sends 256 KiB of lines and resets as soon as the first reply arrives,
// while the server is writing the rest.
async function resetMidReply(port: number) {
  const peer = await Peer.connect(port);
  peer.socket.write(LINES);
  assert.ok(await peer.until(() => peer.bytes > 0, PATIENCE_MS), "no reply");
  peer.socket.resetAndDestroy();
}

// Pushes lines without reading until the server's writes wait, then closes.
async function closeWhileServerWrites(port: number) {
  const peer = await Peer.connect(port);
  const push = await pushWithoutReading(peer.socket);
  assert.ok(push.stalled, "push did not stall");
  peer.socket.destroy();
}

// Sends lines and a last one without "\n", half-closes, and reads every
// reply until the server closes too.
async function halfClose(port: number) {
  const peer = await Peer.connect(port);
  for (let i = 0; i < 50; i++) peer.socket.write(`half ${i}\n`);
  peer.socket.end("last");
  assert.ok(await peer.waitEnded(), "server did not close");
  const expected = [...Array(50).keys()].map((i) => `half ${i}`);
  assert.deepEqual(peer.lines.map(echoed), [...expected, "last"]);
}

// Sends 1 MiB, half-closes, and closes at the first reply.
async function halfCloseAndVanish(port: number) {
  const peer = await Peer.connect(port);
  peer.socket.end(CHUNK);
  assert.ok(await peer.until(() => peer.bytes > 0, PATIENCE_MS), "no reply");
  peer.socket.destroy();
}

async function connectAndReset(port: number) {
  (await Peer.connect(port)).socket.resetAndDestroy();
}

async function connectAndClose(port: number) {
  (await Peer.connect(port)).socket.destroy();
}

const ABRUPT_PEERS = {
  "reset mid-reply": resetMidReply,
  "close while the server writes": closeWhileServerWrites,
  "half-close": halfClose,
  "half-close, then close at the first reply": halfCloseAndVanish,
  "connect and reset": connectAndReset,
  "connect and close": connectAndClose,
};

// How the server's log says its connections ended, counted.
function closeReasons(server: Server): string {
  const count = new Map<string, number>();
  for (const line of server.stdoutLines) {
    const why = / closed after .* messages?(?: \((.*)\))?$/.exec(line);
    if (why) count.set(why[1] ?? "", (count.get(why[1] ?? "") ?? 0) + 1);
  }
  return [...count].map(([why, n]) => `${n} ${why || "by the peer"}`)
    .join(", ");
}

for (const mode of MODE_NAMES) {
  test(`${mode}: abrupt peers leave no connection open`, {
    skip: !HAS_PROC && "reads descriptors from /proc",
    timeout: 120_000,
  }, (t) =>
    withServer(mode, [], async (server) => {
      const baseline = await baselineFds(server);
      const kinds = Object.entries(ABRUPT_PEERS);
      const results = await Promise.allSettled(
        kinds.flatMap(([, peer]) =>
          Array.from({ length: ABRUPT }, () => peer(server.port))
        ),
      );
      const failed = results.flatMap((result, i) =>
        result.status === "rejected"
          ? [`${kinds[Math.floor(i / ABRUPT)][0]}: ${result.reason}`]
          : []
      );
      assert.deepEqual(failed, []);
      await assertNothingKept(server, baseline);
      const { opened } = logged(server);
      t.diagnostic(
        `${opened} connections, all closed, ${openFds(server)} fds; ` +
          `closed: ${closeReasons(server)}`,
      );
    }));
}
