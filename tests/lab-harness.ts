// What the lab's tests share: start the lab as `deno task lab` runs it, talk
// to it over its WebSocket as its page does, and stop it and every server it
// started, whatever happens.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";
import { Child, IS_BUN, isAlive, PATIENCE_MS, ROOT } from "./helpers.ts";

// The lab serves its page with Deno.serve, which bun/deno-shim.ts does not
// provide; `--runtime bun` (servers on Bun) is tested from Deno.
export const LAB_SKIP = IS_BUN &&
  "the lab runs on Deno (Deno.serve); its Bun servers are tested from Deno";

// deno.json's `lab` task, so the tests run the lab with the permissions
// users give it.
const TASK = JSON.parse(readFileSync(`${ROOT}deno.json`, "utf8")).tasks.lab;

// What the lab sends is JSON: the tests read the fields they check.
// deno-lint-ignore no-explicit-any
export type Message = { type: string; [key: string]: any };
// deno-lint-ignore no-explicit-any
export type Event = { kind: string; mode: string; [key: string]: any };

// The lab as `deno task lab ARGS` starts it.
export function spawnLab(args: string[]): Child {
  const [, ...taskArgs] = TASK.split(" ");
  return new Child(spawn(process.execPath, [...taskArgs, ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  }));
}

export class Lab {
  port = 0;
  pids: number[] = []; // the servers it started, from its first message
  readonly sockets: LabSocket[] = [];

  constructor(readonly child: Child) {}

  static async start(args: string[] = []): Promise<Lab> {
    const lab = new Lab(spawnLab(["--port", "0", ...args]));
    const line = await lab.child.waitForLine(/^lab: open /);
    lab.port = Number(
      /^lab: open http:\/\/127\.0\.0\.1:(\d+)\/ /.exec(line)![1],
    );
    return lab;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/`;
  }

  // A WebSocket to the lab, sent with the Origin of the lab's own page,
  // once the four servers listen.
  async connect(): Promise<LabSocket> {
    const socket = new LabSocket(this.port);
    this.sockets.push(socket);
    await socket.next((m) => m.type === "hello");
    const panels = await socket.until(() => {
      const panels = socket.panels();
      return panels.every((p) => p.state === "listening") ? panels : undefined;
    });
    this.pids = panels.map((p) => p.pid);
    return socket;
  }

  // The servers still running (a zombie, collected later, does not count).
  leftovers(): number[] {
    return this.pids.filter((pid) => {
      if (!isAlive(pid)) return false;
      try {
        return !readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]
          .startsWith("Z");
      } catch {
        return false;
      }
    });
  }

  // Stops the lab as Ctrl+C does; kills what is left if that fails.
  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.close();
    if (!this.child.hasExited) this.child.signal("SIGINT");
    await this.child.exit();
    for (const pid of this.leftovers()) process.kill(pid, "SIGKILL");
  }
}

// Starts a lab, runs `body`, then stops the lab and its servers.
export async function withLab(
  body: (lab: Lab, socket: LabSocket) => void | Promise<void>,
  args: string[] = [],
): Promise<void> {
  const lab = await Lab.start(args);
  try {
    await body(lab, await lab.connect());
  } finally {
    await lab.stop();
  }
}

export class LabSocket {
  readonly messages: Message[] = [];
  readonly events: Event[] = [];
  #socket: WebSocket;
  #waiters: (() => void)[] = [];

  constructor(port: number) {
    this.#socket = new WebSocket(`ws://127.0.0.1:${port}/socket`, {
      headers: { origin: `http://127.0.0.1:${port}` },
    });
    this.#socket.onmessage = (e) => {
      const message = JSON.parse(e.data);
      this.messages.push(message);
      this.events.push(...(message.events ?? []));
      for (const wake of this.#waiters.splice(0)) wake();
    };
  }

  send(request: unknown) {
    this.#socket.send(
      typeof request === "string" ? request : JSON.stringify(request),
    );
  }

  close() {
    this.#socket.close();
  }

  // The first message from now on that matches.
  next(match: (m: Message) => boolean): Promise<Message> {
    const from = this.messages.length;
    return this.until(() => this.messages.slice(from).find(match));
  }

  // Each panel's server as last reported: the first message, then events.
  panels(): Event[] {
    const [hello] = this.messages;
    return hello.panels.map((panel: Event) =>
      this.events.findLast((e) =>
        e.kind === "server" && e.mode === panel.mode
      ) ?? panel
    );
  }

  // The first event of a client (`mode`, `id`) in `state`, past or future.
  seen(mode: string, id: number, state: string): Promise<Event> {
    return this.until(() =>
      this.events.find((e) =>
        e.kind === "client" && e.mode === mode && e.id === id &&
        e.state === state
      )
    );
  }

  // Waits until `found` returns something, for up to PATIENCE_MS * 2.
  async until<T>(found: () => T | undefined): Promise<T> {
    const deadline = performance.now() + PATIENCE_MS * 2;
    for (;;) {
      const value = found();
      if (value !== undefined) return value;
      if (performance.now() > deadline) {
        throw new Error(
          `not seen in time; last: ${
            JSON.stringify(this.messages.slice(-3)).slice(0, 2000)
          }`,
        );
      }
      await new Promise<void>((wake) => {
        const timer = setTimeout(wake, 200);
        this.#waiters.push(() => (clearTimeout(timer), wake()));
      });
    }
  }
}
