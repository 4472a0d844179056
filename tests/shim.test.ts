// bun/deno-shim.ts, on a stand-in for Bun's socket: what a connection does
// where Bun's callbacks and the server's calls cross; and on a real socket,
// how much unread input it holds. Bun only: under Deno the real Deno
// namespace is in use.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import net from "node:net";
import { Conn } from "../bun/deno-shim.ts";
import { IS_BUN, PATIENCE_MS } from "./helpers.ts";

const skip = !IS_BUN && "the shim stands in for Deno on Bun only";

// Enough of Bun's socket for a Conn; `onWrite` says what a write does.
function fakeSocket(onWrite: () => number) {
  return {
    remoteAddress: "127.0.0.1",
    remotePort: 1,
    localAddress: "127.0.0.1",
    localPort: 2,
    pause() {},
    resume() {},
    terminate() {},
    write: onWrite,
    end() {},
    shutdown() {},
  };
}

test("shim: a write that Bun fails with a reset says reset, not broken pipe", {
  skip,
}, async () => {
  const reset = Object.assign(new Error("connection reset by peer"), {
    code: "ECONNRESET",
  });
  // Bun reports the error through its close callback, during the write.
  const socket = fakeSocket(() => (conn.onClose(reset), -1));
  const conn = new Conn(socket);
  await assert.rejects(conn.write(new Uint8Array(8)), {
    name: "ConnectionReset",
  });
});

test("shim: a write to a socket closed without a reason is a broken pipe", {
  skip,
}, async () => {
  const conn = new Conn(fakeSocket(() => -1));
  await assert.rejects(conn.write(new Uint8Array(8)), { name: "BrokenPipe" });
});

test("shim: a read waiting when the connection is closed fails", {
  skip,
}, async () => {
  const conn = new Conn(fakeSocket(() => 0));
  const read = conn.read(new Uint8Array(16));
  conn.close();
  await assert.rejects(read, { name: "Interrupted" });
  conn.onData(new Uint8Array([104, 105])); // too late: dropped, no throw
});

test("shim: bytes held when the connection is closed are not read", {
  skip,
}, () => {
  const conn = new Conn(fakeSocket(() => 0));
  conn.onData(new Uint8Array([104, 105])); // no read() waits: held
  conn.close();
  assert.throws(() => conn.read(new Uint8Array(16)), { name: "BadResource" });
});

// Data that came just before the peer's FIN, while no read() waited, is
// still read before the end of input.
test("shim: bytes held when the peer ends are read, then the end", {
  skip,
}, async () => {
  const conn = new Conn(fakeSocket(() => 0));
  conn.onData(new Uint8Array([104, 105, 10])); // no read() waits: held
  conn.onEnd();
  const buffer = new Uint8Array(16);
  assert.equal(await conn.read(buffer), 3);
  assert.deepEqual([...buffer.subarray(0, 3)], [104, 105, 10]);
  assert.equal(await conn.read(buffer), null);
});

// Input nobody reads is held up to HIGH_WATER (64 KiB), then the socket is
// paused until read() has taken it down to LOW_WATER (16 KiB).
test("shim: unread input past 64 KiB pauses the socket, reading resumes it", {
  skip,
}, async () => {
  const calls: string[] = [];
  const socket = {
    ...fakeSocket(() => 0),
    pause: () => calls.push("pause"),
    resume: () => calls.push("resume"),
  };
  const conn = new Conn(socket);
  const chunk = new Uint8Array(16 * 1024);
  for (let i = 0; i < 4; i++) conn.onData(chunk); // 64 KiB: not past it
  assert.deepEqual(calls, []);
  conn.onData(chunk); // 80 KiB
  assert.deepEqual(calls, ["pause"]);
  const buffer = new Uint8Array(32 * 1024);
  assert.equal(await conn.read(buffer), 32 * 1024); // 48 KiB left
  assert.equal(await conn.read(buffer), 32 * 1024); // 16 KiB left
  assert.deepEqual(calls, ["pause"]);
  assert.equal(await conn.read(new Uint8Array(1)), 1); // below 16 KiB
  assert.deepEqual(calls, ["pause", "resume"]);
});

// Bun calls back once per socket with input, then runs the microtasks: the
// reads its data completed are resolved together, after all those callbacks,
// so that the microtasks run once for all of them.
test("shim: reads completed in one turn resolve together, data before end", {
  skip,
}, async () => {
  const first = new Conn(fakeSocket(() => 0));
  const second = new Conn(fakeSocket(() => 0));
  const buffers = [new Uint8Array(4), new Uint8Array(4)];
  const resolved: (number | null)[] = [];
  const reads = [first.read(buffers[0]), second.read(buffers[1])]
    .map((read) => read.then((n) => (resolved.push(n), n)));
  first.onData(new Uint8Array([104, 105]));
  await Promise.resolve(); // the microtasks Bun runs after this callback
  assert.deepEqual(resolved, [], "resolved before Bun's other callbacks");
  second.onData(new Uint8Array([111, 107, 33]));
  second.onEnd(); // in the same turn: the data still comes first
  assert.deepEqual(await Promise.all(reads), [2, 3]);
  assert.deepEqual([...buffers[0].subarray(0, 2)], [104, 105]);
  assert.deepEqual([...buffers[1].subarray(0, 3)], [111, 107, 33]);
  assert.equal(await second.read(buffers[1]), null);
});

// A read of bytes held here waits for the turn's end too: resolved at once,
// a connection with input held could loop through it all in one turn, while
// the listener takes one client a turn (tests/under-load.test.ts).
test("shim: a read of held bytes resolves with the turn's reads, not at once", {
  skip,
}, async () => {
  const conn = new Conn(fakeSocket(() => 0));
  conn.onData(new Uint8Array([104, 105, 10])); // no read() waits: held
  let resolved = false;
  const read = conn.read(new Uint8Array(16)).then((n) => (resolved = true, n));
  for (let i = 0; i < 10; i++) await Promise.resolve(); // microtasks only
  assert.equal(resolved, false, "resolved before the turn's end");
  assert.equal(await read, 3);
});

// On a real socket: Bun reads up to 512 KiB at a time, and the shim can
// pause a socket only after a read, so a connection holds up to 576 KiB
// unread. And when the peer resets, Bun reads all the kernel holds while the
// socket is paused (megabytes): past 576 KiB the shim must drop it.
test("shim: a real socket holds at most 576 KiB unread, a reset included", {
  skip: skip || (!existsSync("/proc/net/tcp") && "reads /proc/net/tcp"),
}, async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const client = net.connect({ host: "127.0.0.1", port });
  client.on("error", () => {}); // it resets, below
  const conn = await listener.accept();
  try {
    // Read 32 MiB as fast as it comes, so that the kernel grows the
    // connection's buffers: then Bun can read 512 KiB at a time.
    const sending = send(client, 64 * MiB);
    let read = 0;
    const buffer = new Uint8Array(64 * 1024);
    while (read < 32 * MiB) read += (await conn.read(buffer))!;
    // Stop reading: the client sends on until the kernel's buffers are full.
    await sending;
    const sent = client.bytesWritten - client.writableLength;
    const clientPort = client.localPort!;
    const server = tcpQueues(port, clientPort)!;
    const sender = tcpQueues(clientPort, port)!;
    const queued = server.rx + sender.tx;
    assert.ok(queued > 1 * MiB, `only ${queued} bytes wait in the kernel`);
    assert.ok(sent - read - queued <= 576 * 1024, `${sent - read - queued}`);
    // The client resets. Once the kernel has taken the reset (the socket
    // leaves /proc/net/tcp), Bun's next turn sees it; after that, all that
    // read() returns was held by the shim.
    (client as net.Socket & { resetAndDestroy(): void }).resetAndDestroy();
    await eventually(() => !tcpQueues(port, clientPort));
    await new Promise((resolve) => setTimeout(resolve, 50));
    let held = 0;
    await assert.rejects(async () => {
      for (;;) held += (await conn.read(buffer)) ?? assert.fail("no reset");
    }, { name: "ConnectionReset" });
    assert.ok(held <= 576 * 1024, `${held} bytes held after the reset`);
  } finally {
    client.destroy();
    listener.close();
  }
});

const MiB = 1024 * 1024;

// Writes up to `limit` bytes, and resolves once they are written or the
// socket has taken nothing for 500 ms (the kernel's buffers are full).
async function send(socket: net.Socket, limit: number) {
  const chunk = new Uint8Array(64 * 1024);
  for (let sent = 0; sent < limit; sent += chunk.length) {
    if (socket.write(chunk)) continue;
    const drained = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), 500);
      socket.once("drain", () => (clearTimeout(timer), resolve(true)));
    });
    if (!drained) return;
  }
}

// The send and receive queues of the TCP socket 127.0.0.1:`local` connected
// to `remote`, from /proc/net/tcp; null once it is gone.
function tcpQueues(local: number, remote: number) {
  const port = (n: number) => n.toString(16).toUpperCase().padStart(4, "0");
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n")) {
    const [, from, to, , queues] = line.trim().split(/\s+/);
    if (from?.endsWith(`:${port(local)}`) && to?.endsWith(`:${port(remote)}`)) {
      const [tx, rx] = queues.split(":").map((hex) => parseInt(hex, 16));
      return { tx, rx };
    }
  }
  return null;
}

// Checks `ready()` every 10 ms until it holds (PATIENCE_MS at most).
async function eventually(ready: () => boolean) {
  const deadline = performance.now() + PATIENCE_MS;
  while (!ready()) {
    if (performance.now() > deadline) assert.fail("not in time");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
