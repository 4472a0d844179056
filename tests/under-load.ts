/**
 * New clients under load: 10 connections send lines as fast as the server
 * answers them (pipelining), then 50 new clients connect at once and send a
 * line each. It prints how long the last of the 50 waited for its reply. A
 * server that keeps reading its busy connections and seldom accepts makes
 * the newcomers wait for the load to end.
 *
 * Run:   deno run -A tests/under-load.ts [--mode thread-per-connection]
 *        bun tests/under-load.ts [--mode ...]   (from the repository root)
 *        It starts the mode under the runtime that runs it (worker-pool,
 *        thread-per-connection, or fixed-pool, given --pool-size 100);
 *        --port N measures a server already listening on 127.0.0.1:N.
 * See:   one line on stdout. The load stops once the 50 have their replies,
 *        or after 60 s (exit status 1). tests/under-load.test.ts runs it.
 */
import net from "node:net";
import process from "node:process";
import { parseArgs } from "node:util";
import { type Mode, MODE_NAMES, Server } from "./helpers.ts";

const BUSY = 10; // connections that pipeline
const NEWCOMERS = 50; // clients that connect once the load runs
const LINE = Buffer.from("pipelined line\n");
const CHUNK = Buffer.alloc(64 * 1024 - (64 * 1024) % LINE.length, LINE);
// A reply is `[Tue Dec  1 06:00:00 2026] ` and the line: a fixed length.
const REPLY_BYTES = 27 + LINE.length;
const WARM_REPLIES = 1000; // each busy connection's, before newcomers come

export type UnderLoad = {
  seconds: number | null; // until the last newcomer's reply; null: too long
  busyDone: number; // busy connections that had every reply before that
};

// Runs the load against 127.0.0.1:`port`: each busy connection sends up to
// `bytesEach`; the newcomers wait at most `limitMs` for their replies.
export async function underLoad(
  port: number,
  bytesEach = Infinity,
  limitMs = 60_000,
): Promise<UnderLoad> {
  const busy = await Promise.all(
    Array.from({ length: BUSY }, () => Busy.start(port, bytesEach)),
  );
  try {
    const warm = Promise.all(busy.map((b) => b.replied(WARM_REPLIES)));
    if (!await within(limitMs, warm)) {
      throw new Error("the busy connections got no replies");
    }
    const start = performance.now();
    const newcomers = Array.from({ length: NEWCOMERS }, () => newcomer(port));
    const answered = await within(limitMs, Promise.all(newcomers));
    const seconds = answered && (performance.now() - start) / 1000;
    return { seconds, busyDone: busy.filter((b) => b.done).length };
  } finally {
    for (const b of busy) b.socket.destroy();
  }
}

// A connection that writes whole lines as fast as the server takes them and
// counts the bytes of the replies.
class Busy {
  sentLines = 0;
  receivedBytes = 0;
  #finished = false; // sent all it was to send
  #wake = () => {}; // a reply came
  #drained = () => {}; // the socket can take more, or has closed

  constructor(readonly socket: net.Socket, readonly bytesEach: number) {
    socket.on("data", (data: Buffer) => {
      this.receivedBytes += data.length;
      this.#wake();
    });
    socket.on("drain", () => this.#drained());
    socket.on("close", () => this.#drained());
    socket.on("error", () => {}); // destroyed at the end: its load is over
  }

  static async start(port: number, bytesEach: number): Promise<Busy> {
    const busy = new Busy(await connect(port), bytesEach);
    busy.#send();
    return busy;
  }

  get done(): boolean {
    return this.#finished &&
      this.receivedBytes === this.sentLines * REPLY_BYTES;
  }

  // Resolves once `count` replies have come.
  async replied(count: number): Promise<void> {
    while (this.receivedBytes < count * REPLY_BYTES) {
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  async #send() {
    let sent = 0;
    while (sent + CHUNK.length <= this.bytesEach && !this.socket.destroyed) {
      this.sentLines += CHUNK.length / LINE.length;
      sent += CHUNK.length;
      if (!this.socket.write(CHUNK)) {
        await new Promise<void>((resolve) => this.#drained = resolve);
      }
    }
    this.#finished = true;
  }
}

// A new client: connects, sends a line and waits for the first reply.
async function newcomer(port: number): Promise<void> {
  const socket = await connect(port);
  try {
    const replied = new Promise<void>((resolve) => {
      socket.on("data", (data: Buffer) => data.includes(10) && resolve());
    });
    socket.write("newcomer\n");
    await replied;
  } finally {
    socket.destroy();
  }
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

// What `work` resolves with, or null if it takes longer than `ms`.
async function within<T>(ms: number, work: Promise<T>): Promise<T | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

// The modes that can accept while serving others (serial cannot), with the
// flags that let them.
const SERVERS: Partial<Record<Mode, string[]>> = {
  "thread-per-connection": [],
  "worker-pool": [],
  "fixed-pool": ["--pool-size", "100"],
};

async function main() {
  const { values: flag } = parseArgs({
    args: Deno.args,
    options: {
      mode: { type: "string", default: "thread-per-connection" },
      port: { type: "string" },
    },
  });
  const mode = flag.mode as Mode;
  const args = SERVERS[mode];
  if (!args) {
    const modes = MODE_NAMES.filter((name) => SERVERS[name]).join(", ");
    throw new Error(`--mode takes ${modes}, not "${flag.mode}"`);
  }
  const server = flag.port ? null : await Server.launch(mode, [
    "--quiet",
    ...args,
  ]);
  try {
    const port = server?.port ?? Number(flag.port);
    const { seconds } = await underLoad(port);
    const what = server ? `${mode} on ${runtime()}` : `port ${port}`;
    if (seconds === null) {
      throw new Error(`${what}: not all ${NEWCOMERS} answered within 60 s`);
    }
    console.log(
      `${what}: ${NEWCOMERS} new clients answered in ${seconds.toFixed(3)} s ` +
        `while ${BUSY} connections pipelined`,
    );
  } finally {
    await server?.kill();
  }
}

const runtime = () => "Bun" in globalThis ? "Bun" : "Deno";

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error(`error: ${(err as Error).message.split(/\.\s/)[0]}`);
    process.exit(1);
  }
}
