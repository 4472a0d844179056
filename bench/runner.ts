/**
 * The servers the bench measures: a mode or a bare loop (bench/peers/), on
 * one of the runtimes (bench/runtimes.ts), started as a child process on a
 * free port, ready once it prints its "listening on" line, and always
 * stopped by its PID.
 */
import { programs, type Runtime, runtimeName } from "./runtimes.ts";
import { sleep } from "./wire.ts";

export const MODES = [
  "serial",
  "fixed-pool",
  "thread-per-connection",
  "worker-pool",
] as const;
export type Mode = typeof MODES[number];

// The least a server can do per message on each runtime: bench/peers/.
export const BARE = "bare loop";
export type Target = { mode: Mode | typeof BARE; runtime: Runtime };

const PEERS: Record<Exclude<Runtime, "c">, string> = {
  deno: "bench/peers/deno.ts",
  bun: "bench/peers/bun.ts",
  node: "bench/peers/node.mjs",
};
const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname);

// worker-pool's --workers, for every server of the run (set from the flag).
export const workers = { count: navigator.hardwareConcurrency };

// How a server is named in the tables: fixed-pool with its pool, worker-pool
// with its workers, and the runtime unless it is Deno.
export function label({ mode, runtime }: Target, pool: number) {
  const on = runtime === "deno" && mode !== BARE
    ? ""
    : ` ${runtime === "c" ? "in" : "on"} ${runtimeName(runtime)}`;
  if (mode === "fixed-pool") return `fixed-pool --pool-size ${pool}${on}`;
  if (mode === "worker-pool") {
    return `worker-pool --workers ${workers.count}${on}`;
  }
  return mode + on;
}

// The command line that starts a target, listening on a free port. A mode
// runs quiet, and with no grace: there is nothing to wait for when we stop
// it. Bun reads bunfig.toml from the repository's top folder, the servers'
// working folder, and so loads the Deno stand-in first.
function command({ mode, runtime }: Target, args: string[]): string[] {
  if (runtime === "c") return [programs.c, "0"]; // only a bare loop
  const runner = runtime === "deno"
    ? [Deno.execPath(), "run", `--allow-net=127.0.0.1`]
    : [programs[runtime]];
  if (mode === BARE) return [...runner, PEERS[runtime], "0"];
  // worker-pool's workers load their own file and share a port through
  // Deno's unstable reusePort.
  const permissions = mode === "worker-pool" && runtime === "deno"
    ? ["--allow-read", "--unstable-net"]
    : [];
  const pool = mode === "worker-pool" ? ["--workers", `${workers.count}`] : [];
  return [
    ...runner,
    ...permissions,
    ...[`modes/${mode}.ts`, "--port", "0", "--quiet", "--grace", "0"],
    ...pool,
    ...args,
  ];
}

const running = new Set<Server>();

export class Server {
  port = 0;
  #exited = false;
  readonly #status: Promise<Deno.CommandStatus>;

  constructor(readonly target: Target, readonly child: Deno.ChildProcess) {
    this.#status = child.status.finally(() => this.#exited = true);
  }

  static async start(target: Target, args: string[]): Promise<Server> {
    const [program, ...argv] = command(target, args);
    const child = new Deno.Command(program, {
      args: argv,
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const server = new Server(target, child);
    running.add(server);
    const line = await firstLine(child, 15_000);
    server.port = Number(/ listening on .*:(\d+)$/.exec(line)?.[1]);
    if (!server.port) {
      await server.stop();
      const name = label(target, 0);
      throw new Error(`${name} did not start: ${line || "no output"}`);
    }
    return server;
  }

  // Resident memory in KiB, or null without /proc.
  rssKiB(): number | null {
    const status = readProc(`/proc/${this.child.pid}/status`);
    const kib = status && /VmRSS:\s+(\d+)/.exec(status)?.[1];
    return kib ? Number(kib) : null;
  }

  // CPU seconds used so far, all threads, or null without /proc.
  cpuSeconds(): number | null {
    const stat = readProc(`/proc/${this.child.pid}/stat`);
    if (!stat) return null;
    // After "pid (name) ": utime and stime are fields 12 and 13, counted
    // in 1/100 s (USER_HZ, 100 on Linux as good as everywhere).
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  }

  // SIGTERM, and SIGKILL if it is not gone within two seconds.
  async stop(): Promise<void> {
    running.delete(this);
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      if (this.#exited) break;
      try {
        Deno.kill(this.child.pid, signal);
      } catch { /* gone already */ }
      await Promise.race([this.#status, sleep(2000)]);
    }
    await this.#status;
  }
}

// The first line of the child's stdout. The rest of its output is drained,
// so that it can never block on a full pipe.
async function firstLine(child: Deno.ChildProcess, ms: number) {
  const reader = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  const timeout = sleep(ms).then(() => ({ done: true, value: "" }));
  let text = "";
  while (!text.includes("\n")) {
    const { done, value } = await Promise.race([reader.read(), timeout]);
    if (done) break;
    text += value;
  }
  drain(reader);
  drain(child.stderr.getReader());
  return text.split("\n")[0];
}

async function drain(reader: ReadableStreamDefaultReader<unknown>) {
  try {
    while (!(await reader.read()).done);
  } catch { /* the process is gone */ }
}

export async function withServer<T>(
  target: Target,
  args: string[],
  body: (server: Server) => Promise<T>,
): Promise<T> {
  const server = await Server.start(target, args);
  try {
    return await body(server);
  } finally {
    await server.stop();
  }
}

// On Ctrl+C or an error: every server still running, stopped.
export function stopAll(): Promise<void[]> {
  return Promise.all([...running].map((server) => server.stop()));
}

// ---- What the bench reads of the system: /proc (Linux).

let procError: unknown;

function readProc(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    procError ??= err;
    return null;
  }
}

// Why /proc could not be read: Deno opens it only to --allow-all.
export function procNote() {
  return procError instanceof Deno.errors.NotCapable
    ? "skipped: reading /proc needs -A"
    : "skipped: no /proc on this system";
}

// The limit on open files, where /proc tells it (Linux).
export function openFileLimit(): number | null {
  const limits = readProc("/proc/self/limits");
  return Number(limits && /Max open files\s+(\d+)/.exec(limits)?.[1]) || null;
}

// Both the bench and the server need a file descriptor per connection, and
// Deno cannot raise the limit: the shell must (`ulimit -n`) before the run.
export function fileLimitNote(conns: number): string | null {
  const limit = openFileLimit();
  const needed = conns + 64;
  if (!limit || limit >= needed) return null;
  const enough = 2 ** Math.ceil(Math.log2(needed));
  return `skipped: needs about ${needed} open files, the limit is ` +
    `${limit}; run \`ulimit -n ${enough}\` first`;
}
