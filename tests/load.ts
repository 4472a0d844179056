// Tools for the load and fault tests (tests/soak.ts and the soak, faults and
// fuzz tests): a client that collects reply lines, a seeded random
// generator, and what /proc and the server's log say about open connections.
import { readdirSync, readlinkSync } from "node:fs";
import net from "node:net";
import { PATIENCE_MS, type Server, STAMP } from "./helpers.ts";

export const sleep = (ms: number) =>
  new Promise<void>((resolve) => setTimeout(resolve, ms));

// mulberry32: a tiny seeded generator, so that a failing run can be repeated.
// Returns numbers in [0, 1).
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// A whole number from `min` to `max`, both included.
export function between(rng: () => number, min: number, max: number) {
  return min + Math.floor(rng() * (max - min + 1));
}

// The server's open sockets (Linux), counted in /proc: its connections and
// its listeners. The runtime opens other descriptors of its own, once, as it
// needs them: Deno a second handle on stdout the first time a log reader
// falls behind, Bun one for each worker that writes to stdout (which is a
// socket when Bun runs the tests). Those are left out.
export function openFds(server: Server): number {
  const fd = `/proc/${server.pid}/fd`;
  const link = (name: string) => {
    try {
      return readlinkSync(`${fd}/${name}`);
    } catch {
      return ""; // closed while we looked
    }
  };
  const stdio = [link("1"), link("2")];
  return readdirSync(fd).map(link)
    .filter((to) => to.startsWith("socket:") && !stdio.includes(to)).length;
}

// Connections the server has logged as opened and as closed so far.
export function logged(server: Server): { opened: number; closed: number } {
  let opened = 0, closed = 0;
  for (const line of server.stdoutLines) {
    if (!line.startsWith("#")) continue;
    if (line.endsWith(" opened")) opened++;
    else if (line.includes(" closed after ")) closed++;
  }
  return { opened, closed };
}

// Waits until `ready()` holds, checking every 50 ms; false after `ms`.
export async function eventually(
  ready: () => boolean,
  ms = PATIENCE_MS,
): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!ready()) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

// Waits until the server has closed every connection it opened and holds no
// more descriptors than `fds`; returns what it saw last.
export async function settled(server: Server, fds: number) {
  let last = { ...logged(server), fds: openFds(server) };
  await eventually(() => {
    last = { ...logged(server), fds: openFds(server) };
    return last.opened === last.closed && last.fds <= fds;
  });
  return last;
}

// The text of a reply line after its `[<ctime>] ` stamp, or null if the line
// has no stamp.
export function echoed(line: string): string | null {
  const stamp = STAMP.exec(line);
  return stamp ? line.slice(stamp[0].length) : null;
}

// A client that splits what it receives into lines (without their "\n"), as
// UTF-8 text. `ended` is true once the server has closed its side (FIN);
// `error` is set by a reset. Cheap enough to drive thousands of connections.
export class Peer {
  readonly lines: string[] = [];
  readonly closed: Promise<void>;
  bytes = 0; // received so far
  ended = false;
  error?: Error;
  #partial: Buffer[] = [];
  #wake: (() => void) | null = null;

  constructor(readonly socket: net.Socket) {
    socket.on("data", (data: Buffer) => this.#receive(data));
    socket.on("end", () => (this.ended = true, this.#notify()));
    socket.on("error", (err) => this.error = err);
    this.closed = new Promise((resolve) => {
      socket.on("close", () => (resolve(), this.#notify()));
    });
  }

  // Connects, failing after `ms` (a full backlog makes a connect hang).
  static connect(port: number, ms = PATIENCE_MS): Promise<Peer> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error("connect did not complete"));
      }, ms);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeListener("error", reject);
        resolve(new Peer(socket));
      });
      socket.once("error", (err) => (clearTimeout(timer), reject(err)));
    });
  }

  // Bytes after the last "\n", not yet a line.
  get partial(): Buffer {
    return Buffer.concat(this.#partial);
  }

  get isClosed(): boolean {
    return this.socket.closed;
  }

  write(data: string | Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(data, (err) => err ? reject(err) : resolve());
    });
  }

  // Resolves true once `lines` holds `count` lines, false when the server
  // ends the connection first or nothing comes for `ms`.
  waitLines(count: number, ms = PATIENCE_MS): Promise<boolean> {
    return this.until(() => this.lines.length >= count, ms);
  }

  // Resolves true once the server has ended its side (or the connection is
  // gone), false after `ms`.
  waitEnded(ms = PATIENCE_MS): Promise<boolean> {
    return this.until(() => this.ended || this.isClosed, ms);
  }

  #receive(data: Buffer) {
    this.bytes += data.length;
    let start = 0;
    for (let lf = data.indexOf(10); lf !== -1; lf = data.indexOf(10, start)) {
      const piece = data.subarray(start, lf);
      const line = this.#partial.length
        ? Buffer.concat([...this.#partial.splice(0), piece])
        : piece;
      this.lines.push(line.toString("utf8"));
      start = lf + 1;
    }
    if (start < data.length) this.#partial.push(data.subarray(start));
    this.#notify();
  }

  // Waits for `ready()`, checked whenever something arrives; gives up when
  // the connection ends or after `ms` without any news.
  async until(ready: () => boolean, ms: number): Promise<boolean> {
    while (!ready()) {
      if (this.ended || this.isClosed) return ready();
      const news = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), ms);
        this.#wake = () => (clearTimeout(timer), resolve(true));
      });
      if (!news) return ready();
    }
    return true;
  }

  #notify() {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}
