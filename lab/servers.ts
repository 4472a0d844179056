// One panel's server: a child process that runs the repository's own mode
// file, unchanged, with the panel's flags. It reports every line the server
// prints, and when it listens, stops or exits, so the page shows a server
// that failed instead of hiding it.
import {
  command,
  type Mode,
  type Runtime,
  type ServerSettings,
} from "./settings.ts";

export type ServerState =
  | "starting"
  | "listening"
  | "stopping"
  | "stopped"
  | "exited";

export type ServerReport =
  | { kind: "state"; state: ServerState; detail: string }
  | { kind: "line"; text: string; stream: "out" | "err" };

// A server that prints nothing for this long is taken as failed to start.
const START_TIMEOUT_MS = 30_000;
// After SIGTERM (--grace 0), a server that lingers this long is killed.
const STOP_TIMEOUT_MS = 5_000;

export class ModeServer {
  state: ServerState = "stopped";
  port = 0;
  pid = 0;
  argv: string[];
  #child: Deno.ChildProcess | null = null;
  #exited: Promise<void> = Promise.resolve();
  #started: Promise<boolean> = Promise.resolve(false);

  constructor(
    readonly mode: Mode,
    readonly runtime: Runtime,
    public settings: ServerSettings,
    readonly report: (report: ServerReport) => void,
  ) {
    this.argv = command(runtime, mode, settings);
  }

  // Starts the server; resolves true once it listens, false if it fails.
  start(): Promise<boolean> {
    this.argv = command(this.runtime, this.mode, this.settings);
    this.port = 0;
    this.#setState("starting", this.argv.join(" "));
    const [program, ...args] = this.argv;
    try {
      this.#child = new Deno.Command(
        program === "deno" ? Deno.execPath() : program,
        {
          args,
          cwd: new URL("..", import.meta.url), // where bunfig.toml is
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        },
      ).spawn();
    } catch (err) {
      this.#setState("exited", `cannot start: ${(err as Error).message}`);
      return this.#started = Promise.resolve(false);
    }
    const child = this.#child;
    this.pid = child.pid;
    const listening = this.#read(child.stdout, "out");
    this.#read(child.stderr, "err");
    this.#exited = child.status.then((status) => this.#ended(child, status));
    const timeout = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), START_TIMEOUT_MS);
      this.#exited.then(() => (clearTimeout(timer), resolve(false)));
      listening.then(() => clearTimeout(timer));
    });
    this.#started = Promise.race([listening.then(() => true), timeout]);
    this.#started.then((ok) => {
      if (!ok && this.#child === child) this.#kill(child, "SIGKILL");
    });
    return this.#started;
  }

  // Resolves true once the server listens (false if it does not).
  listening(): Promise<boolean> {
    return this.#started;
  }

  // Stops the server as Ctrl+C would; kills it if it lingers.
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#setState("stopping", `stopping pid ${child.pid}`);
    this.#kill(child, "SIGTERM");
    const timer = setTimeout(
      () => this.#kill(child, "SIGKILL"),
      STOP_TIMEOUT_MS,
    );
    await this.#exited;
    clearTimeout(timer);
  }

  async restart(settings: ServerSettings): Promise<boolean> {
    await this.stop();
    this.settings = settings;
    return this.start();
  }

  // Each line the server prints; resolves when it says it listens.
  #read(stream: ReadableStream<Uint8Array>, kind: "out" | "err") {
    return new Promise<void>((listening) => {
      (async () => {
        let rest = "";
        for await (const text of stream.pipeThrough(new TextDecoderStream())) {
          const lines = (rest + text).split("\n");
          rest = lines.pop()!;
          for (const line of lines) this.#line(line, kind, listening);
        }
        if (rest) this.#line(rest, kind, listening);
      })().catch(() => {/* the pipe closed with the process */});
    });
  }

  #line(text: string, stream: "out" | "err", listening: () => void) {
    this.report({ kind: "line", text, stream });
    const port = / listening on 127\.0\.0\.1:(\d+)$/.exec(text)?.[1];
    if (stream === "out" && port && this.state === "starting") {
      this.port = Number(port);
      this.#setState("listening", `listening on 127.0.0.1:${port}`);
      listening();
    }
  }

  #ended(child: Deno.ChildProcess, status: Deno.CommandStatus) {
    if (this.#child !== child) return;
    this.#child = null;
    this.port = 0;
    const how = status.signal
      ? `killed by ${status.signal}`
      : `exit code ${status.code}`;
    if (this.state === "stopping") {
      this.#setState("stopped", `stopped (${how})`);
    } else this.#setState("exited", `the server exited (${how})`);
  }

  #kill(child: Deno.ChildProcess, signal: Deno.Signal) {
    try {
      child.kill(signal);
    } catch { /* it has exited already */ }
  }

  #setState(state: ServerState, detail: string) {
    this.state = state;
    this.report({ kind: "state", state, detail });
  }
}
