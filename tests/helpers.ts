// Test harness shared by every test file: start a mode as a child process of
// the runtime running the tests, talk to it over plain sockets, stop it.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import assert from "node:assert/strict";

export const ROOT = new URL("..", import.meta.url).pathname;

export const MODES = {
  serial: "modes/serial.ts",
  "fixed-pool": "modes/fixed-pool.ts",
  "thread-per-connection": "modes/thread-per-connection.ts",
  "worker-pool": "modes/worker-pool.ts",
} as const;
export type Mode = keyof typeof MODES;
export const MODE_NAMES = Object.keys(MODES) as Mode[];

export const CLIENT = "client/client.ts";

// How long a test waits for something that should happen. Generous, because
// a slow, busy machine must still pass; a healthy run never waits this long.
export const PATIENCE_MS = 15_000;

// `[Sat Nov 28 06:26:46 2026] `: the reply prefix, ctime style, padded day.
export const STAMP =
  /^\[(Sun|Mon|Tue|Wed|Thu|Fri|Sat) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 123]\d \d\d:\d\d:\d\d \d{4}\] /;

// True when Bun runs the tests (and so the scripts), false under Deno.
export const IS_BUN =
  typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";

// Deno permissions beyond --allow-net: worker-pool's workers and the storm's
// client threads load their own file, and worker-pool shares its port
// through Deno's unstable reusePort.
const DENO_FLAGS: Record<string, string[]> = {
  "modes/worker-pool.ts": ["--allow-read", "--unstable-net"],
  "bench/storm.ts": ["--allow-read"],
};

// The command line that runs a script under the runtime running the tests:
// the file itself, or `file` in its place (a changed copy of it), after a
// `preload` file if one is given (which may read the environment).
export function scriptArgs(
  script: string,
  args: string[],
  { file = script, preload }: { file?: string; preload?: string } = {},
): string[] {
  const first = preload ? ["--preload", preload] : [];
  if (IS_BUN) return [...first, file, ...args];
  if (preload) first.push("--allow-env");
  const flags = ["--allow-net", ...DENO_FLAGS[script] ?? [], ...first];
  return ["run", ...flags, file, ...args];
}

export type Exit = { code: number | null; signal: string | null };
// How to start a server: extra environment, a file-descriptor limit, a file
// to preload, or a changed copy of the mode's file to run in its place.
type LaunchOptions = {
  env?: Record<string, string>;
  fdLimit?: number;
  preload?: string;
  file?: string;
};

// A running script: its output as lines, and its exit.
export class Child {
  readonly stdoutLines: string[] = [];
  stderr = "";
  readonly exited: Promise<Exit>;
  hasExited = false;
  #waiters: (() => void)[] = [];

  constructor(readonly process: ChildProcess) {
    let partial = "";
    process.stdout!.setEncoding("utf8").on("data", (text: string) => {
      const lines = (partial + text).split("\n");
      partial = lines.pop()!;
      this.stdoutLines.push(...lines);
      this.#wake();
    });
    process.stderr!.setEncoding("utf8").on("data", (text: string) => {
      this.stderr += text;
      this.#wake();
    });
    this.exited = new Promise((resolve) => {
      process.on("exit", (code, signal) => {
        if (partial) this.stdoutLines.push(partial);
        this.hasExited = true;
        resolve({ code, signal });
        this.#wake();
      });
    });
  }

  static start(
    script: string,
    args: string[],
    stdin: "pipe" | "ignore" = "ignore",
  ) {
    const child = spawn(process.execPath, scriptArgs(script, args), {
      cwd: ROOT,
      stdio: [stdin, "pipe", "pipe"],
    });
    return new Child(child);
  }

  get pid(): number {
    return this.process.pid!;
  }

  // Resolves with the first stdout line matching `pattern`, whether it came
  // already or comes later; rejects after PATIENCE_MS or if the process exits.
  async waitForLine(pattern: RegExp): Promise<string> {
    const deadline = Date.now() + PATIENCE_MS;
    for (;;) {
      const line = this.stdoutLines.find((l) => pattern.test(l));
      if (line !== undefined) return line;
      if (this.hasExited) {
        throw new Error(`exited before printing ${pattern}:\n${this.output()}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`no line ${pattern} in time:\n${this.output()}`);
      }
      await this.#nextOutput(deadline - Date.now());
    }
  }

  output(): string {
    return `stdout:\n${this.stdoutLines.join("\n")}\nstderr:\n${this.stderr}`;
  }

  // Waits for the exit, killing the process if it takes longer than PATIENCE_MS.
  async exit(): Promise<Exit> {
    const timer = setTimeout(() => this.process.kill("SIGKILL"), PATIENCE_MS);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  // By PID, not `this.process.kill()`: under Deno that reports the child as
  // killed by the signal even when it handles it and exits 0.
  signal(name: "SIGTERM" | "SIGINT"): void {
    process.kill(this.pid, name);
  }

  // Stops the process for good (used in `finally`): SIGKILL unless gone.
  async kill(): Promise<void> {
    if (!this.hasExited) this.process.kill("SIGKILL");
    await this.exited;
  }

  #nextOutput(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#waiters.push(() => (clearTimeout(timer), resolve()));
    });
  }

  #wake() {
    for (const wake of this.#waiters.splice(0)) wake();
  }
}

// A server started with --port 0; `port` is read from its first line.
export class Server extends Child {
  port = 0;

  static async launch(mode: Mode, args: string[], options: LaunchOptions = {}) {
    const { env, fdLimit } = options;
    let command = [
      process.execPath,
      ...scriptArgs(MODES[mode], ["--port", "0", ...args], options),
    ];
    if (fdLimit) {
      command = [
        "sh",
        "-c",
        `ulimit -n ${fdLimit} && exec "$@"`,
        "sh",
        ...command,
      ];
    }
    const child = spawn(command[0], command.slice(1), {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
      env: env && { ...process.env, ...env },
    });
    const server = new Server(child);
    try {
      const line = await server.waitForLine(/ listening on /);
      server.port = Number(line.split(":").at(-1));
    } catch (err) {
      await server.kill();
      throw err;
    }
    return server;
  }

  // CPU time used so far, in clock ticks (usually 1/100 s), from /proc.
  cpuTicks(): number {
    const stat = readFileSync(`/proc/${this.pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]); // utime + stime
  }

  // Resident memory in KiB, from /proc (Linux only).
  rssKiB(): number {
    const status = readFileSync(`/proc/${this.pid}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
  }
}

// Starts a server, runs `body`, and stops the server whatever happens.
export async function withServer(
  mode: Mode,
  args: string[],
  body: (server: Server) => Promise<void>,
  options?: LaunchOptions,
): Promise<void> {
  const server = await Server.launch(mode, args, options);
  try {
    await body(server);
  } finally {
    await server.kill();
  }
}

// Starts `mode`, connects one client and waits until the server has taken
// the connection (its "opened" log line), then runs `body`. The client and
// the server are closed and stopped afterwards, whatever happens.
export function withClient(
  mode: Mode,
  args: string[],
  body: (client: TestClient, server: Server) => Promise<void>,
): Promise<void> {
  return withServer(mode, args, async (server) => {
    const client = await TestClient.connect(server.port);
    try {
      await server.waitForLine(opened(client));
      await body(client, server);
    } finally {
      client.close();
    }
  });
}

// The server's log line saying it opened `client`'s connection.
export function opened(client: TestClient): RegExp {
  const port = client.socket.localPort;
  return new RegExp(`^#\\d+ 127\\.0\\.0\\.1:${port} (worker \\d+ )?opened$`);
}

// What a reply says after its `[<ctime>] ` stamp, which must be there.
export function unstamped(reply: string): string {
  assert.match(reply, STAMP);
  return reply.replace(STAMP, "");
}

// A new client gets its line echoed: the server is still serving.
export async function assertServes(server: Server): Promise<void> {
  const client = await TestClient.connect(server.port);
  try {
    await client.write("fine\n");
    assert.equal(unstamped(await client.nextLine()), "fine");
  } finally {
    client.close();
  }
}

// The next reply must be the echo of `text`: a time stamp, then the text.
export async function expectReply(client: TestClient, text: string) {
  assert.equal(unstamped(await client.nextLine()), text);
}

// Runs a script to its end, feeding it `stdin` if given.
export async function runScript(
  script: string,
  args: string[],
  stdin?: string,
): Promise<Exit & { stdout: string; stderr: string }> {
  const child = Child.start(
    script,
    args,
    stdin === undefined ? "ignore" : "pipe",
  );
  if (stdin !== undefined) child.process.stdin!.end(stdin);
  const exit = await child.exit();
  return {
    ...exit,
    stdout: child.stdoutLines.join("\n"),
    stderr: child.stderr,
  };
}

// A raw TCP client for tests: every byte it receives is kept in `received`.
export class TestClient {
  readonly closed: Promise<void>;
  #chunks: Buffer[] = [];
  #joined = Buffer.alloc(0);
  error?: Error;
  #consumed = 0;
  #waiters: (() => void)[] = [];

  constructor(readonly socket: net.Socket) {
    socket.on("data", (data: Buffer) => {
      this.#chunks.push(data);
      this.#wake();
    });
    socket.on("error", (err) => this.error = err);
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        resolve();
        this.#wake();
      });
    });
  }

  // Fails, rather than hangs, if the handshake does not complete in time.
  static connect(port: number): Promise<TestClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to port ${port} did not complete`));
      }, PATIENCE_MS);
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve(new TestClient(socket));
      });
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  // Every byte received so far (joined only when asked: megabytes can come).
  get received(): Buffer {
    if (this.#chunks.length) {
      this.#joined = Buffer.concat([this.#joined, ...this.#chunks.splice(0)]);
    }
    return this.#joined;
  }

  get isClosed(): boolean {
    return this.socket.closed;
  }

  write(data: string | Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(data, (err) => err ? reject(err) : resolve());
    });
  }

  // The next line not yet taken, without its "\n", as UTF-8 text. Rejects if
  // the connection closes first or nothing comes within PATIENCE_MS.
  async nextLine(): Promise<string> {
    const bytes = await this.#take((buffer) => {
      const lf = buffer.indexOf(10);
      return lf === -1 ? -1 : lf + 1;
    });
    return bytes.toString("utf8", 0, bytes.length - 1);
  }

  // The next `count` bytes not yet taken.
  nextBytes(count: number): Promise<Buffer> {
    return this.#take((buffer) => buffer.length >= count ? count : -1);
  }

  // Everything not yet taken once the server has closed the connection.
  async rest(): Promise<string> {
    await this.#until(() => this.isClosed);
    const text = this.received.toString("utf8", this.#consumed);
    this.#consumed = this.received.length;
    return text;
  }

  // True if no byte arrives during `ms`: "no reply while watched for 300 ms".
  async silentFor(ms: number): Promise<boolean> {
    const before = this.received.length;
    await new Promise((resolve) => setTimeout(resolve, ms));
    return this.received.length === before;
  }

  // Resolves once the connection has closed, rejecting after PATIENCE_MS.
  waitClosed(): Promise<void> {
    return this.#until(() => this.isClosed);
  }

  close(): void {
    this.socket.destroy();
  }

  async #take(size: (unconsumed: Buffer) => number): Promise<Buffer> {
    let n = -1;
    await this.#until(() => {
      n = size(this.received.subarray(this.#consumed));
      if (n === -1 && this.isClosed) {
        const got = this.received.toString("utf8", this.#consumed);
        throw new Error(
          `connection closed; unconsumed: ${JSON.stringify(got)}`,
        );
      }
      return n !== -1;
    });
    const taken = this.received.subarray(this.#consumed, this.#consumed + n);
    this.#consumed += n;
    return taken;
  }

  async #until(ready: () => boolean): Promise<void> {
    const deadline = Date.now() + PATIENCE_MS;
    while (!ready()) {
      if (Date.now() > deadline) {
        throw new Error("timed out waiting for server");
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.#waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }

  #wake() {
    for (const wake of this.#waiters.splice(0)) wake();
  }
}

export const MiB = 1024 * 1024;
export const CHUNK = Buffer.from(("x".repeat(1023) + "\n").repeat(1024)); // 1 MiB
// Sends CHUNKs and never reads a reply, until a chunk is not taken within
// `stallMs` (the push has stalled), the connection ends, or 100 MiB are out.
export async function pushWithoutReading(socket: net.Socket, stallMs = 1000) {
  socket.pause();
  let sent = 0;
  while (sent < 100 * MiB && !socket.destroyed) {
    sent += CHUNK.length;
    if (!socket.write(CHUNK) && !await drained(socket, stallMs)) {
      return { stalled: !socket.destroyed, sent };
    }
  }
  return { stalled: false, sent };
}

// True on "drain", false on close or after `ms`.
function drained(socket: net.Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (drained: boolean) => {
      clearTimeout(timer);
      socket.off("drain", onDrain).off("close", onClose);
      resolve(drained);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const timer = setTimeout(onClose, ms);
    socket.on("drain", onDrain).on("close", onClose);
  });
}

// True while a process with this PID exists (signal 0 only checks).
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// A loopback port with nothing listening on it (free a moment ago).
export function unusedPort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}
