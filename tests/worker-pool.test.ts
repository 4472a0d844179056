// worker-pool: several workers, each with its own listener on one port.
// The shared protocol, bad-input and command-line tests run against it too
// (it is in MODES); these check what only this mode promises.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import {
  Child,
  expectReply,
  IS_BUN,
  MODES,
  ROOT,
  type Server,
  TestClient,
  unusedPort,
  withServer,
} from "./helpers.ts";

// Connects `count` clients, all held open, each exchanging one line.
async function connectMany(server: Server, count: number) {
  const clients: TestClient[] = [];
  for (let i = 0; i < count; i++) {
    const client = await TestClient.connect(server.port);
    clients.push(client);
    await client.write(`client ${i}\n`);
    await expectReply(client, `client ${i}`);
  }
  return clients;
}

// The worker that the server's log says served `client`.
async function workerOf(server: Server, client: TestClient): Promise<string> {
  const port = client.socket.localPort;
  const opened = new RegExp(`^#\\d+ 127\\.0\\.0\\.1:${port} worker (\\d+) `);
  return opened.exec(await server.waitForLine(opened))![1];
}

test("worker-pool: connections land on more than one worker", () =>
  withServer("worker-pool", ["--workers", "2"], async (server) => {
    // The kernel picks a listener by a hash of each connection's addresses:
    // 20 connections all on one of 2 workers would be a 1 in 500,000 chance.
    const clients = await connectMany(server, 20);
    try {
      const workers = new Set<string>();
      for (const client of clients) workers.add(await workerOf(server, client));
      assert.deepEqual([...workers].sort(), ["1", "2"]);
    } finally {
      for (const client of clients) client.close();
    }
  }));

// --workers N starts N workers, not one a core. Counts other than this
// machine's 2 cores (1 and 3), so that one a core would show: the kernel
// spreads 30 connections over the listeners by a hash of their addresses,
// so every worker from 1 to N serves one (3 workers, one of them left out:
// a 1 in 60,000 chance) and no other worker appears; and the main thread
// says how many it stops.
for (const count of [1, 3]) {
  test(`worker-pool --workers ${count}: as many workers serve, not one a core`, () =>
    withServer("worker-pool", ["--workers", `${count}`], async (server) => {
      const clients = await connectMany(server, 30);
      try {
        const workers = new Set<string>();
        for (const client of clients) {
          workers.add(await workerOf(server, client));
        }
        const oneToCount = Array.from({ length: count }, (_, i) => `${i + 1}`);
        assert.deepEqual([...workers].sort(), oneToCount);
      } finally {
        for (const client of clients) client.close();
      }
      server.signal("SIGTERM");
      const stopping = await server.waitForLine(/^stopping: /);
      assert.match(stopping, new RegExp(`^stopping: ${count} workers?,`));
    }));
}

test("worker-pool: connections are numbered across the process, not per worker", () =>
  withServer("worker-pool", ["--workers", "2"], async (server) => {
    const clients = await connectMany(server, 20);
    try {
      const numbers = [];
      for (const client of clients) {
        const port = client.socket.localPort;
        const opened = new RegExp(`^#(\\d+) 127\\.0\\.0\\.1:${port} worker`);
        numbers.push(Number(opened.exec(await server.waitForLine(opened))![1]));
      }
      const oneToTwenty = Array.from({ length: 20 }, (_, i) => i + 1);
      assert.deepEqual(numbers.sort((a, b) => a - b), oneToTwenty);
    } finally {
      for (const client of clients) client.close();
    }
  }));

// reusePort would let a second instance share the port and take half the
// clients; the UDP lock lets exactly one of two started together listen.
test("worker-pool: of two instances started at once on one port, one listens, one fails", async () => {
  for (let round = 0; round < 3; round++) {
    const port = `${await unusedPort()}`;
    const args = ["--port", port, "--workers", "2"];
    const both = [0, 1].map(() => Child.start(MODES["worker-pool"], args));
    try {
      const outcomes = await Promise.all(both.map(async (child) => {
        const listening = await child.waitForLine(/ listening on /)
          .then(() => true, () => false); // false: exited first
        return listening ? "listening" : child;
      }));
      const failedChild = outcomes.find((o) => o !== "listening") as Child;
      assert.equal(outcomes.filter((o) => o === "listening").length, 1);
      assert.equal((await failedChild.exit()).code, 1);
      assert.match(failedChild.stderr, /^error: .* is already in use/);
    } finally {
      for (const child of both) await child.kill();
    }
  }
});

test("worker-pool: a failing connection does not disturb the others", () =>
  withServer("worker-pool", ["--workers", "2"], async (server) => {
    const clients = await connectMany(server, 10);
    try {
      const [broken, ...others] = clients;
      const port = broken.socket.localPort;
      await broken.write("half a line");
      broken.socket.resetAndDestroy();
      await server.waitForLine(new RegExp(`:${port} worker \\d+ closed `));
      for (const [i, client] of others.entries()) {
        await client.write(`still here ${i}\n`);
        await expectReply(client, `still here ${i}`);
      }
    } finally {
      for (const client of clients) client.close();
    }
  }));

test("worker-pool: SIGTERM drains every worker, then one summary", () =>
  withServer(
    "worker-pool",
    ["--workers", "2", "--grace", "30"],
    async (server) => {
      const clients = await connectMany(server, 12);
      const workers = new Set<string>();
      for (const client of clients) workers.add(await workerOf(server, client));
      assert.equal(workers.size, 2, "clients on both workers");
      server.signal("SIGTERM");
      await server.waitForLine(/^stopping: 2 workers/);
      // Every open connection, on either worker, is still answered...
      for (const [i, client] of clients.entries()) {
        await client.write(`after the signal ${i}\n`);
        await expectReply(client, `after the signal ${i}`);
      }
      // ...and once they close, the server stops long before its 30 s grace.
      for (const client of clients) client.close();
      assert.deepEqual(await server.exit(), { code: 0, signal: null });
      assert.equal(
        server.stdoutLines.at(-1),
        "stopped: 12 connections, 24 messages",
      );
    },
  ));

test("worker-pool without --unstable-net: one clear line, exit 1", {
  skip: IS_BUN && "the flag is Deno's",
}, async () => {
  const script = MODES["worker-pool"];
  const child = await runScriptWithout("--unstable-net", script);
  assert.equal(child.code, 1);
  assert.match(child.stderr, /^error: .*--unstable-net.*\n$/);
});

// Runs `script` with the usual Deno flags, minus `flag`.
async function runScriptWithout(flag: string, script: string) {
  const args = ["run", "--allow-net", "--allow-read", script, "--port", "0"];
  assert.ok(!args.includes(flag));
  const child = spawn(process.execPath, args, {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (text) => stderr += text);
  const code = await new Promise<number | null>((done) =>
    child.on("exit", done)
  );
  return { code, stderr };
}

// A copy of worker-pool.ts whose respond() makes its worker throw, outside
// any connection, once a client sends "crash": a bug a learner could bring.
function crashingCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), "crash-"));
  const file = join(dir, "worker-pool.ts");
  const code = readFileSync(join(ROOT, MODES["worker-pool"]), "utf8");
  const respond = "export function respond(line: string): string {";
  const bug = `if (line === "crash") {
    setTimeout(() => { throw new Error("a bug"); });
  }`;
  assert.ok(code.includes(respond));
  writeFileSync(file, code.replace(respond, `${respond}\n${bug}`));
  return file;
}

test("worker-pool: a worker that throws: one line, the others drain, exit 1", async () => {
  const file = crashingCopy();
  try {
    await withServer(
      "worker-pool",
      ["--workers", "2", "--grace", "1"],
      async (server) => {
        // Clients until both workers serve one (a 1 in 2^39 chance to fail).
        const byWorker = new Map<string, TestClient>();
        const clients = [];
        while (byWorker.size < 2 && clients.length < 40) {
          const client = await TestClient.connect(server.port);
          clients.push(client);
          byWorker.set(await workerOf(server, client), client);
        }
        try {
          const [failing, other] = [byWorker.get("1")!, byWorker.get("2")!];
          await failing.write("crash\n");
          // The other worker's client is served through the grace, then told.
          await other.write("still here\n");
          await expectReply(other, "still here");
          assert.equal(await other.nextLine(), "ERROR server shutting down");
          assert.deepEqual(await server.exit(), { code: 1, signal: null });
          assert.equal(server.stderr, "error: worker 1 failed: Error: a bug\n");
          const summary = /^stopped: \d+ connections?, \d+ messages?$/;
          assert.match(server.stdoutLines.at(-1)!, summary);
        } finally {
          for (const client of clients) client.close();
        }
      },
      { file },
    );
  } finally {
    rmSync(dirname(file), { recursive: true, force: true });
  }
});
