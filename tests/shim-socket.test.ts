// bun/deno-shim.ts on real sockets, under Bun: how much unread input a
// connection holds, and how often an idle worker-pool wakes. Bun only: under
// Deno the real Deno namespace is in use.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import { IS_BUN, PATIENCE_MS, withServer } from "./helpers.ts";

const skip = !IS_BUN && "the shim stands in for Deno on Bun only";

// On a real socket: Bun reads up to 512 KiB at a time, and the shim can
// pause a socket only after a read, so a connection holds up to 576 KiB
// unread. And when the peer resets, Bun reads all the kernel holds while the
// socket is paused (megabytes): past 576 KiB the shim must drop it.
test("shim: a real socket holds at most 576 KiB unread, a reset included", {
  skip: skip || (!existsSync("/proc/net/tcp") && "reads /proc/net/tcp"),
}, async (t) => {
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
    const unread = sent - read - queued;
    t.diagnostic(`held: ${unread} bytes; in the kernel: ${queued}`);
    assert.ok(queued > 1 * MiB, `only ${queued} bytes wait in the kernel`);
    assert.ok(unread <= 576 * 1024, `${unread} bytes held`);
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
    t.diagnostic(`held after the reset: ${held} bytes`);
    assert.ok(held <= 576 * 1024, `${held} bytes held after the reset`);
  } finally {
    client.destroy();
    listener.close();
  }
});

// worker-pool's workers always have an accept() waiting, and in a worker the
// shim checks for a free descriptor while Bun accepts: every 10 ms at
// first, less often while no client comes. Checked every 10 ms for good, two
// idle workers woke about 230 times a second.
test(
  "shim: an idle worker-pool's workers sleep",
  {
    skip: skip || (!existsSync("/proc/self/task") && "reads /proc"),
  },
  () =>
    withServer("worker-pool", ["--workers", "2", "--quiet"], async (server) => {
      await sleep(1500); // the checks have slowed down by now
      const before = wakeUps(server.pid);
      await sleep(2000);
      const after = wakeUps(server.pid);
      assert.equal(before.size, 2, "two worker threads");
      for (const [thread, count] of after) {
        const woke = count - before.get(thread)!;
        assert.ok(woke < 40, `a worker woke ${woke} times in 2 s`);
      }
    }),
);

// Times each of process `pid`'s worker threads has gone to sleep and woken,
// by thread id (Bun names its worker threads "Worker").
function wakeUps(pid: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (const thread of readdirSync(`/proc/${pid}/task`)) {
    const path = `/proc/${pid}/task/${thread}`;
    if (readFileSync(`${path}/comm`, "utf8").trim() !== "Worker") continue;
    const status = readFileSync(`${path}/status`, "utf8");
    counts.set(
      thread,
      Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)![1]),
    );
  }
  return counts;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

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
