// bun/deno-shim.ts, on a stand-in for Bun's socket: what a connection does
// where Bun's callbacks and the server's calls cross (tests/shim-socket.test.ts
// has the tests on real sockets). Bun only: under Deno the real Deno
// namespace is in use.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Conn } from "../bun/deno-shim.ts";
import { IS_BUN } from "./helpers.ts";

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
    setNoDelay: () => true,
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
