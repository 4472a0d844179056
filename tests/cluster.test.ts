// Scaling out: deploy/cluster.ts runs three instances behind HAProxy. The
// tests talk to HAProxy's port over plain TCP, as any client would, and read
// the cluster's log to learn which instance served which client.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import net from "node:net";
import process from "node:process";
import { readFileSync } from "node:fs";
import {
  Child,
  expectReply,
  isAlive,
  PATIENCE_MS,
  ROOT,
  TestClient,
} from "./helpers.ts";

const CLUSTER = "deploy/cluster.ts";
const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
// CI installs HAProxy (.ci/run): there, a missing haproxy fails the tests
// rather than skipping them, so a broken install cannot pass unnoticed.
const noHaproxy = !process.env.CI &&
  Boolean(spawnSync("haproxy", ["-v"]).error);
const skip = isBun
  ? "deploy/cluster.ts is a Deno script (deno task cluster)"
  : noHaproxy && "haproxy is not installed (apt-get install haproxy)";
if (skip) console.log(`skipping the cluster tests: ${skip}`);

function startCluster(
  env?: Record<string, string>,
  denoFlags: string[] = [],
): Child {
  const args = ["run", "--allow-net", "--allow-run", ...denoFlags, CLUSTER];
  return new Child(spawn(process.execPath, [...args, "--port", "0"], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: env && { ...process.env, ...env },
  }));
}

// The running cluster: HAProxy's port, and each process's pid by name.
class Cluster {
  port = 0;
  readonly pids = new Map<string, number>();

  constructor(readonly child: Child) {}

  async ready() {
    const line = await this.child.waitForLine(/^cluster: connect to /);
    this.port = Number(/127\.0\.0\.1:(\d+)/.exec(line)![1]);
    const pids = await this.child.waitForLine(/^cluster: s1 is pid /);
    for (const [, name, pid] of pids.matchAll(/(\w+) is pid (\d+)/g)) {
      this.pids.set(name, Number(pid));
    }
  }

  waitForLine(pattern: RegExp): Promise<string> {
    return this.child.waitForLine(pattern);
  }

  // The instance that serves `client`, from two log lines: HAProxy's, that
  // names the instance and the port HAProxy connected from, and the
  // instance's own, that says it opened a connection from that port.
  async instanceOf(client: TestClient): Promise<string> {
    const haproxy = await this.waitForLine(
      new RegExp(
        `^haproxy +\\| 127\\.0\\.0\\.1:${client.socket.localPort} -> ` +
          `(s\\d) \\(seen there as 127\\.0\\.0\\.1:(\\d+)\\)$`,
      ),
    );
    const [, instance, port] = / (s\d) .*:(\d+)\)$/.exec(haproxy)!;
    await this.waitForLine(
      new RegExp(`^${instance} +\\| #\\d+ 127\\.0\\.0\\.1:${port} opened$`),
    );
    return instance;
  }

  // Every pid it printed (HAProxy's worker too) that is still running.
  leftovers(): number[] {
    const pids = [...this.pids.values()];
    for (const line of this.child.stdoutLines) {
      const worker = /New worker \((\d+)\) forked/.exec(line);
      if (worker) pids.push(Number(worker[1]));
    }
    return pids.filter(isRunning);
  }

  // The port each instance printed that it listens on.
  instancePorts(): number[] {
    return this.child.stdoutLines
      .map((line) => /^s\d +\| .* listening on .*:(\d+)$/.exec(line))
      .filter((match) => match !== null)
      .map((match) => Number(match[1]));
  }
}

// A process killed after its parent died stays a zombie until the system's
// first process collects it (in some containers, never): it runs no code and
// holds no socket, but a signal 0 still finds it. Linux shows it in /proc.
function isRunning(pid: number): boolean {
  if (!isAlive(pid)) return false;
  try {
    const state = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1];
    return !state.startsWith("Z");
  } catch {
    return true; // no /proc (macOS): there, zombies are collected at once
  }
}

// Checks every 50 ms, for up to PATIENCE_MS, that no process is left.
async function allGone(cluster: Cluster): Promise<boolean> {
  const deadline = performance.now() + PATIENCE_MS;
  while (cluster.leftovers().length && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return cluster.leftovers().length === 0;
}

// Starts the cluster, runs `body`, then closes every client it opened and
// stops the cluster and all its processes, whatever happened.
async function withCluster(
  body: (cluster: Cluster, connect: () => Promise<TestClient>) => Promise<void>,
  denoFlags: string[] = [],
): Promise<void> {
  const cluster = new Cluster(startCluster(undefined, denoFlags));
  const clients: TestClient[] = [];
  const connect = async () => {
    const client = await TestClient.connect(cluster.port);
    clients.push(client);
    return client;
  };
  try {
    await cluster.ready();
    await body(cluster, connect);
  } finally {
    for (const client of clients) client.close();
    if (!cluster.child.hasExited) cluster.child.signal("SIGTERM");
    await cluster.child.exit();
    for (const pid of cluster.leftovers()) process.kill(pid, "SIGKILL");
  }
}

async function exchange(client: TestClient, text: string): Promise<void> {
  await client.write(`${text}\n`);
  await expectReply(client, text);
}

// A client in the middle of a conversation: it sends a numbered line, waits
// for its reply, pauses, and again, until told how many more to send. A
// reply that never comes, or comes wrong, makes `done` reject.
class Talker {
  sent = 0;
  readonly done: Promise<void>;
  #last = 10_000;

  constructor(readonly client: TestClient, readonly name: string) {
    this.done = this.#talk();
    this.done.catch(() => {}); // reported when the test awaits it
  }

  finishAfter(more: number): Promise<void> {
    this.#last = this.sent + more;
    return this.done;
  }

  async #talk() {
    const deadline = performance.now() + 120_000;
    while (this.sent < this.#last && performance.now() < deadline) {
      await exchange(this.client, `${this.name} line ${this.sent}`);
      this.sent++;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

test(
  "cluster: HAProxy spreads clients over three instances; when one is killed, its clients see a close, the others lose nothing, and new clients are served",
  { skip },
  () =>
    withCluster(async (cluster, connect) => {
      // Nine clients, one after another, all staying connected: leastconn
      // gives each to the instance with the fewest, so all three serve some.
      const served: { client: TestClient; instance: string }[] = [];
      for (let i = 0; i < 9; i++) {
        const client = await connect();
        await exchange(client, `client ${i}`);
        served.push({ client, instance: await cluster.instanceOf(client) });
      }
      const counts = new Map<string, number>();
      for (const { instance } of served) {
        counts.set(instance, (counts.get(instance) ?? 0) + 1);
      }
      assert.deepEqual([...counts.keys()].sort(), ["s1", "s2", "s3"]);
      const spread = Math.max(...counts.values()) -
        Math.min(...counts.values());
      assert.ok(spread <= 1, `uneven: ${JSON.stringify([...counts])}`);

      // The clients of s1 and s3 keep talking while s2 is killed.
      const victims = served.filter((s) => s.instance === "s2");
      const talkers = served
        .filter((s) => s.instance !== "s2")
        .map((s, i) => new Talker(s.client, `talker ${i}`));
      process.kill(cluster.pids.get("s2")!, "SIGKILL");

      // s2's clients see their connection end: a close, not a reset, and
      // nothing left unread.
      for (const { client } of victims) {
        await client.waitClosed();
        assert.equal(client.error, undefined, `${client.error}`);
        assert.equal(await client.rest(), "");
      }
      await cluster.waitForLine(/^cluster: s2 .* exited \(killed by SIGKILL\)/);
      // From here s2 is gone, so a reply proves that s1 or s3 served it.
      // (HAProxy's log, which names the instance, drops lines when clients
      // come in a burst: it writes to stdout only while there is room.)
      assert.ok(!isAlive(cluster.pids.get("s2")!), "s2 still running");

      // Right after the kill, perhaps before the check marks s2 DOWN: a
      // client sent to s2 is refused there, retried elsewhere, and served.
      for (let i = 0; i < 3; i++) {
        const client = await connect();
        await exchange(client, `right after the kill ${i}`);
      }

      // HAProxy's health check marks s2 DOWN; from then on, every new client
      // is served, by s1 or s3.
      await cluster.waitForLine(
        /^haproxy +\| \[WARNING\] Server instances\/s2 is DOWN/,
      );
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const client = await connect();
          await exchange(client, `after the failover ${i}`);
        }),
      );

      // The talkers got every reply, and go on getting them.
      await Promise.all(talkers.map((talker) => talker.finishAfter(2)));
      for (const talker of talkers) assert.ok(!talker.client.isClosed);
    }),
);

test(
  "cluster: Ctrl+C (SIGTERM) lets open clients finish, stops every process, exits 0",
  { skip },
  () =>
    withCluster(async (cluster, connect) => {
      const client = await connect();
      await exchange(client, "before the stop");
      cluster.child.signal("SIGTERM");
      await cluster.waitForLine(/^cluster: stopping$/);

      // HAProxy takes no new client, but the open one is still answered
      // until its instance's grace runs out and it says goodbye.
      await exchange(client, "during the stop");
      assert.equal(await client.nextLine(), "ERROR server shutting down");
      await client.waitClosed();

      assert.deepEqual(await cluster.child.exit(), { code: 0, signal: null });
      assert.equal(cluster.child.stdoutLines.at(-1), "cluster: stopped");
      for (const name of ["s1", "s2", "s3"]) {
        assert.ok(
          cluster.child.stdoutLines.some((line) =>
            new RegExp(`^${name} +\\| stopped: `).test(line)
          ),
          `${name} did not stop gracefully:\n${cluster.child.output()}`,
        );
      }
      assert.deepEqual(cluster.leftovers(), []);
    }),
);

// An instance ends each client with a last line and a FIN; a client that
// never closes its side in return must not hold HAProxy until its hard stop
// (10 s), the backstop for a stop gone wrong.
test(
  "cluster: a client that never answers the goodbye does not hold the stop",
  { skip },
  () =>
    withCluster(async (cluster) => {
      const socket = net.connect({
        host: "127.0.0.1",
        port: cluster.port,
        allowHalfOpen: true, // Node would answer a FIN with its own
      });
      const client = new TestClient(socket);
      try {
        await new Promise((connected) => socket.once("connect", connected));
        await exchange(client, "and then silence");
        cluster.child.signal("SIGTERM");
        assert.deepEqual(await cluster.child.exit(), { code: 0, signal: null });
        const output = cluster.child.output();
        assert.doesNotMatch(output, /hard-stop/, output);
      } finally {
        client.close();
      }
    }),
);

// Loaded before the script: a wall clock stepped by `stepMs` at every
// reading, as if NTP, a resumed VM or `date -s` moved it between two looks.
function steppedClock(stepMs: number): string[] {
  const code =
    `const wall = Date.now; let n = 0; Date.now = () => wall() + ${stepMs} * ++n;`;
  return ["--preload", `data:text/javascript,${encodeURIComponent(code)}`];
}

// A second signal, not the first repeated (that comes within half a second),
// kills everything at once, and the script exits as a process ended by that
// signal: 128 + its number. A step of the wall clock changes nothing.
const STEPS = { "back an hour": -3_600_000, "forward 400 s": 400_000 };
for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
  for (const [step, stepMs] of Object.entries(STEPS)) {
    test(
      `cluster: a second ${signal} a second after the first kills every process and exits ${code}, the wall clock stepping ${step} at every reading`,
      { skip },
      () =>
        withCluster(async (cluster, connect) => {
          // An open client makes the graceful stop last the 5 s grace.
          await exchange(await connect(), "held open");
          cluster.child.signal(signal);
          await cluster.waitForLine(/^cluster: stopping$/);
          await new Promise((resolve) => setTimeout(resolve, 1000));
          cluster.child.signal(signal);
          assert.deepEqual(await cluster.child.exit(), { code, signal: null });
          assert.ok(!cluster.child.stdoutLines.includes("cluster: stopped"));
          assert.ok(await allGone(cluster), `running: ${cluster.leftovers()}`);
        }, steppedClock(stepMs)),
    );
  }
}

// The script may be killed with no chance to stop anything: `kill -9`, or
// the out-of-memory killer. Its children must then end by themselves.
test(
  "cluster: killed with SIGKILL, it takes HAProxy and the three instances with it, and their ports refuse connections",
  { skip },
  () =>
    withCluster(async (cluster, connect) => {
      await exchange(await connect(), "before the kill");
      const ports = [cluster.port, ...cluster.instancePorts()];
      assert.equal(ports.length, 4, cluster.child.output());
      // s1, s2, s3, and HAProxy's master and worker
      assert.equal(cluster.leftovers().length, 5, cluster.child.output());

      process.kill(cluster.child.pid, "SIGKILL");
      assert.equal((await cluster.child.exit()).signal, "SIGKILL");
      assert.ok(await allGone(cluster), `running: ${cluster.leftovers()}`);
      for (const port of ports) {
        await assert.rejects(TestClient.connect(port), {
          code: "ECONNREFUSED",
        });
      }
    }),
);

test(
  "cluster without haproxy: one error line saying how to install it, exit 1",
  { skip: isBun && "deploy/cluster.ts is a Deno script (deno task cluster)" },
  async () => {
    const cluster = startCluster({ PATH: "/nonexistent" });
    const exit = await cluster.exit();
    assert.equal(
      cluster.stderr,
      "error: haproxy is not installed; install it: sudo apt-get install haproxy\n",
    );
    assert.deepEqual(cluster.stdoutLines.filter(Boolean), []);
    assert.equal(exit.code, 1);
  },
);
