// bun/deno-shim.ts, on a stand-in for Bun's socket: what a connection does
// where Bun's callbacks and the server's calls cross. Bun only: under Deno
// the real Deno namespace is in use.
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

test("shim: data that arrives as the connection is closed is not read", {
  skip,
}, async () => {
  const conn = new Conn(fakeSocket(() => 0));
  const read = conn.read(new Uint8Array(16));
  conn.onData(new Uint8Array([104, 105]));
  conn.close();
  await assert.rejects(read, { name: "Interrupted" });
});
