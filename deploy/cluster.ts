/**
 * Scaling out: three instances of one server behind HAProxy, a real TCP load
 * balancer. Each new client goes to the instance with the fewest open
 * connections; HAProxy checks every instance twice a second and stops sending
 * clients to one that is gone.
 *
 * Run:   deno run --allow-net --allow-run deploy/cluster.ts (deno task cluster)
 *        It needs HAProxy: sudo apt-get install haproxy
 * Watch: run `deno task client` in three terminals: the log shows each land on
 *        s1, s2 or s3. `kill -9` one instance's pid: its clients see the
 *        connection close, the others carry on, new clients go to the other
 *        two. Ctrl+C stops everything; so does a `kill -9` of this script.
 */
import { parseArgs } from "node:util";
import { joinNegativeValues } from "../client/client.ts";

const USAGE = `usage: deno run --allow-net --allow-run deploy/cluster.ts [flags]
  --port N     HAProxy's port, where clients connect (8080)
  --mode M     the mode each of the three instances runs: serial, fixed-pool
               or thread-per-connection (thread-per-connection)
  --help       this text`;

const MODES = ["serial", "fixed-pool", "thread-per-connection"];
const INSTANCES = ["s1", "s2", "s3"]; // the server names in haproxy.cfg
const CONFIG = new URL("haproxy.cfg", import.meta.url).pathname;
const START_MS = 15_000; // a slow machine may take this long to start them
const STOP_MS = 15_000; // instance grace (5 s) and HAProxy's hard-stop-after

function parseOptions(args: string[]) {
  const { values: flag } = parseArgs({
    args,
    options: {
      port: { type: "string", default: "8080" },
      mode: { type: "string", default: "thread-per-connection" },
      help: { type: "boolean", default: false },
    },
  });
  if (!/^\d+$/.test(flag.port) || +flag.port > 65535) {
    throw new Error("--port must be a whole number from 0 to 65535");
  }
  if (!MODES.includes(flag.mode)) {
    throw new Error(`--mode must be one of ${MODES.join(", ")}`);
  }
  return { ...flag, port: +flag.port };
}

// ---- The lesson: start the instances on free ports, put HAProxy in front
// with their ports, and keep going when an instance dies: that is failover.
async function main({ port, mode }: ReturnType<typeof parseOptions>) {
  await requireHaproxy();
  const front = reservePort(port);
  const instances = INSTANCES.map((name) => startInstance(name, mode));
  const ports = await Promise.all(instances.map(instancePort));
  const haproxy = startHaproxy(front, ports);
  await haproxy.waitForLine(/Loading success/);
  const pids = processes.map((p) => `${p.name} is pid ${p.child.pid}`);
  console.log(`cluster: ${pids.join(", ")}`);
  console.log(
    `cluster: connect to 127.0.0.1:${front}: haproxy in front of ` +
      `${INSTANCES.join(", ")}; Ctrl+C stops all`,
  );
  for (const instance of instances) {
    instance.exited.then((status) => {
      if (stopping) return;
      console.log(
        `cluster: ${instance.name} (pid ${instance.child.pid}) exited ` +
          `(${describe(status)}); haproxy sends new clients to the others`,
      );
    });
  }
  const status = await haproxy.exited;
  if (!stopping) throw new Error(`haproxy exited (${describe(status)})`);
}

// A child process whose output lines are shown with its name in front.
class Process {
  readonly exited: Promise<Deno.CommandStatus>;
  #watch = (_line: string) => {};

  constructor(
    readonly name: string,
    readonly child: Deno.ChildProcess,
    shown: (stdoutLine: string) => boolean,
  ) {
    const show = (line: string) => {
      console.log(`${name.padEnd(7)} | ${line}`);
      this.#watch(line);
    };
    this.exited = Promise.all([
      forEachLine(child.stdout, (line) => shown(line) && show(line)),
      forEachLine(child.stderr, (line) => show(tidy(line))),
    ]).then(() => child.status);
  }

  // The first line from now on that matches `pattern`. Fails if the process
  // exits first or takes longer than START_MS.
  waitForLine(pattern: RegExp): Promise<string> {
    return new Promise((resolve, reject) => {
      const fail = (why: string) => reject(new Error(`${this.name} ${why}`));
      const timer = setTimeout(() => fail("did not start in time"), START_MS);
      this.#watch = (line) => {
        if (!pattern.test(line)) return;
        clearTimeout(timer);
        resolve(line);
      };
      this.exited.then(() => {
        clearTimeout(timer);
        fail("exited");
      });
    });
  }

  // To its whole process group (its own, being detached). For HAProxy that
  // is the master and its worker: just after startup, the master alone can
  // miss a signal.
  kill(signal: Deno.Signal) {
    try {
      Deno.kill(-this.child.pid, signal);
    } catch {
      // it has exited already
    }
  }
}

// HAProxy's messages start "[WARNING]  (1234) : ": keep only the level.
function tidy(line: string): string {
  return line.replace(/^(\[\w+\])\s+\(\d+\) : /, "$1 ");
}

async function forEachLine(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
) {
  let partial = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (partial + text).split("\n");
    partial = lines.pop()!;
    lines.forEach(onLine);
  }
  if (partial) onLine(partial);
}

const processes: Process[] = []; // every one started, to stop them all

// A child outlives the script that started it, and a script killed with
// `kill -9` (or by the out-of-memory killer) runs no more code. So each child
// starts through these lines of sh, its stdin a pipe from this script. The
// kernel closes a dead process's files, so once this script is gone the pipe
// reads as ended, and a watcher waiting for that kills the child's group.
const GUARD = [
  "exec 3<&0 0</dev/null", // the pipe becomes fd 3; the child reads nothing
  "trap '' TERM USR1", // the watcher, in the group, ignores a graceful stop
  // Started by a subshell that ends at once, it is no child of the command
  // (HAProxy waits for its children), and it holds none of its output pipes.
  "( { read -r _ <&3; kill -s KILL -- -$$; } >/dev/null 2>&1 & )",
  "trap - TERM USR1", // the command stops on them, as usual
  'exec "$@" 3<&-', // the command replaces the sh: same pid, same group
].join("\n");

// Each child runs in its own process group (detached), so that a Ctrl+C in
// the terminal reaches only this script, which stops each the right way.
function spawn(
  name: string,
  command: string,
  args: string[],
  env = {},
  shown = (_stdoutLine: string) => true,
) {
  const child = new Deno.Command("sh", {
    args: ["-c", GUARD, "sh", command, ...args],
    env,
    stdin: "piped", // never written: it ends when this script does
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
  const started = new Process(name, child, shown);
  processes.push(started);
  return started;
}

function startInstance(name: string, mode: string): Process {
  const script = new URL(`../modes/${mode}.ts`, import.meta.url).pathname;
  const args = ["run", "--allow-net", script, "--port", "0"];
  return spawn(name, Deno.execPath(), args);
}

async function instancePort(instance: Process): Promise<number> {
  const line = await instance.waitForLine(/ listening on /);
  return Number(line.split(":").at(-1));
}

// -W: a master process that reports "Loading success." once the listener
// is bound; -db: stay in the foreground, log to this terminal. Its log on
// stdout repeats its warnings, shown already from stderr: keep the clients.
function startHaproxy(front: number, ports: number[]): Process {
  const env: Record<string, string> = { FRONT_PORT: String(front) };
  ports.forEach((port, i) => env[`S${i + 1}_PORT`] = String(port));
  const args = ["-W", "-db", "-f", CONFIG];
  const clientLine = (line: string) => line.includes(" -> ");
  return spawn("haproxy", "haproxy", args, env, clientLine);
}

async function requireHaproxy() {
  try {
    await new Deno.Command("haproxy", { args: ["-v"] }).output();
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    fail("haproxy is not installed; install it: sudo apt-get install haproxy");
  }
}

// The front port, checked free now (0: a free one), so that a port in use is
// one clear line rather than HAProxy's alert.
function reservePort(port: number): number {
  try {
    const listener = Deno.listen({ hostname: "127.0.0.1", port });
    listener.close();
    return (listener.addr as Deno.NetAddr).port;
  } catch (err) {
    if (!(err instanceof Deno.errors.AddrInUse)) throw err;
    fail(`127.0.0.1:${port} is already in use`);
  }
}

let stopping = false;
let firstSignalAt = -Infinity; // performance.now(): a clock step cannot move it

// Ctrl+C gives a process SIGINT, `kill` SIGTERM, a closed terminal SIGHUP. A
// process ended by one exits 128 + its number, as a shell reports it.
const EXIT_CODES = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 } as const;
type StopSignal = keyof typeof EXIT_CODES;

// The first signal stops everything gracefully; a second kills everything at
// once (one within half a second is the first, repeated by `deno task`).
function onSignal(signal: StopSignal) {
  if (!stopping) {
    firstSignalAt = performance.now();
    return stop(0);
  }
  if (performance.now() - firstSignalAt < 500) return;
  processes.forEach((p) => p.kill("SIGKILL"));
  Deno.exit(EXIT_CODES[signal]);
}

// HAProxy stops taking clients (SIGUSR1: soft stop) while its open sessions
// go on, and each instance gets SIGTERM: it finishes its clients within
// --grace seconds. A stop taking too long kills everything.
async function stop(exitCode: number) {
  stopping = true;
  console.log("cluster: stopping");
  for (const p of processes) {
    p.kill(p.name === "haproxy" ? "SIGUSR1" : "SIGTERM");
  }
  const tooLong = setTimeout(() => {
    console.log("cluster: stopping takes too long; killing everything");
    processes.forEach((p) => p.kill("SIGKILL"));
  }, STOP_MS);
  await Promise.all(processes.map((p) => p.exited));
  clearTimeout(tooLong);
  console.log("cluster: stopped");
  Deno.exit(exitCode);
}

function describe({ code, signal }: Deno.CommandStatus): string {
  return signal ? `killed by ${signal}` : `exit code ${code}`;
}

function fail(message: string, exitCode = 1): never {
  console.error(`error: ${message}`);
  if (exitCode === 2) console.error("run with --help for usage");
  Deno.exit(exitCode);
}

if (import.meta.main) {
  let options;
  try {
    options = parseOptions(joinNegativeValues(Deno.args));
  } catch (err) {
    fail((err as Error).message.split(". ")[0], 2);
  }
  if (options.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  for (const signal of Object.keys(EXIT_CODES) as StopSignal[]) {
    Deno.addSignalListener(signal, () => onSignal(signal));
  }
  try {
    await main(options);
  } catch (err) {
    // After a Ctrl+C during startup, stop() is already at work.
    if (!stopping) {
      console.error(`error: ${(err as Error).message}`);
      await stop(1);
    }
  }
}
