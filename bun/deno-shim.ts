/**
 * The part of the `Deno` namespace that this project's scripts use, for Bun.
 *
 * Bun loads this file before every script and test (see bunfig.toml), so
 * `bun modes/serial.ts` runs the very file that `deno run` runs. It is not a
 * general Deno polyfill: only listen, connect, the listener and connection
 * methods the scripts call, args, signals, exit, the error classes they test
 * for, and what worker-pool needs (reusePort, and this file in its workers).
 *
 * Deno pulls: a server calls accept() when it wants the next client, and
 * read() when it wants more bytes. Bun pushes: it accepts and reads as soon as
 * it can and calls back. So that each mode's lesson (who waits, and where)
 * holds on Bun too, this file holds Bun back:
 * - The listener is paused while no accept() waits: Bun stops watching it, so
 *   clients wait in the kernel's listen queue, as under Deno, and --backlog
 *   limits that queue. Bun has neither a backlog option nor a way to pause a
 *   listener, so this takes a few C calls through bun:ffi (see `libc`).
 * - A connection is paused until read() asks for bytes: a client waiting to
 *   be accepted gets no reply, and a server that is busy writing reads nothing
 *   more, so a client that never reads is held up in the kernel's buffers.
 *   (What Bun reads at once, up to 512 KiB, waits here for read() to take.)
 * - Bun does not buffer writes: write() returns what the kernel took, and when
 *   it took nothing, waits for Bun's drain callback. Backpressure, as in Deno.
 */
import process from "node:process";
import { isMainThread } from "node:worker_threads";

type NetAddr = { transport: "tcp"; hostname: string; port: number };

// The few Bun APIs used here (Bun's own type package is not installed).
type BunSocket = {
  data?: Conn;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  pause(): void;
  resume(): void;
  write(bytes: Uint8Array): number; // bytes the kernel took; -1 if closed
  end(): void;
  shutdown(): void; // shutdown(2) of the write side
};
type BunListener = { fd: number; port: number; stop(): void };
declare const Bun: {
  listen(options: object): BunListener;
  connect(options: object): Promise<BunSocket>;
  udpSocket(options: object): Promise<{ close(): void }>;
};

// Deno's error classes, so that `err instanceof Deno.errors.X` works.
const errorClass = (name: string) =>
  class extends Error {
    override name = name;
  };
const errors = {
  AddrInUse: errorClass("AddrInUse"),
  BadResource: errorClass("BadResource"),
  BrokenPipe: errorClass("BrokenPipe"),
  Busy: errorClass("Busy"),
  ConnectionAborted: errorClass("ConnectionAborted"),
  ConnectionRefused: errorClass("ConnectionRefused"),
  ConnectionReset: errorClass("ConnectionReset"),
  Interrupted: errorClass("Interrupted"),
  NotConnected: errorClass("NotConnected"),
};
type ErrorClass = new (message: string, options?: ErrorOptions) => Error;
const errorsByCode: Record<string, ErrorClass> = {
  EADDRINUSE: errors.AddrInUse,
  ECONNABORTED: errors.ConnectionAborted,
  ECONNREFUSED: errors.ConnectionRefused,
  ECONNRESET: errors.ConnectionReset,
  ENOTCONN: errors.NotConnected,
  EPIPE: errors.BrokenPipe,
  EPROTO: errors.ConnectionAborted, // a protocol error: Deno has no class
};

// Bun's messages may not say why ("Failed to listen at 10.0.0.9"): add
// the error code (EADDRNOTAVAIL) where it is missing.
function denoError(err: Error & { code?: string }): Error {
  const { code = "", message } = err;
  const why = message.includes(code) ? message : `${message} (${code})`;
  const DenoError = errorsByCode[code] ?? Error;
  return new DenoError(why, { cause: err });
}

const netAddr = (hostname: string, port: number): NetAddr => ({
  transport: "tcp",
  hostname,
  port,
});

// dup(2), close(2) and listen(2) from the C library. Where they cannot be
// loaded (no FFI, Windows), Bun accepts every client at once, and those no
// accept() has taken wait, paused, in the listener's `#ready` queue instead:
// no reply until accepted still holds, but --backlog does not.
type Libc = Record<"dup" | "close" | "listen", (...fd: number[]) => number>;
const libc: Libc | null = await (async () => {
  if (process.platform === "win32") return null;
  try {
    const { dlopen } = await import("bun:ffi");
    const call = (...args: string[]) => ({ args, returns: "i32" });
    const name = process.platform === "darwin" ? "libc.dylib" : "libc.so.6";
    return dlopen(name, {
      dup: call("i32"),
      close: call("i32"),
      listen: call("i32", "i32"),
    }).symbols;
  } catch {
    return null;
  }
})();

const BROKEN_PIPE = "Broken pipe (os error 32)"; // as Deno says it

export class Conn {
  readonly remoteAddr: NetAddr;
  readonly localAddr: NetAddr;
  #socket: BunSocket;
  #unread = new Uint8Array(0); // what Bun gave us and read() has not taken
  #ended = false; // the peer will send nothing more
  #error: Error | null = null; // why reads and writes fail from now on
  #closed = false; // by close(), after which every call is a BadResource
  #waiting: (() => void)[] = []; // reads and writes waiting for an event

  constructor(socket: BunSocket) {
    this.#socket = socket;
    socket.pause(); // until read() asks
    this.remoteAddr = netAddr(socket.remoteAddress, socket.remotePort);
    this.localAddr = netAddr(socket.localAddress, socket.localPort);
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    this.#assertOpen();
    while (!this.#unread.length) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      this.#socket.resume();
      await this.#event();
    }
    if (this.#closed) throw this.#error; // close() came first: no data
    const n = Math.min(buffer.length, this.#unread.length);
    buffer.set(this.#unread.subarray(0, n));
    this.#unread = this.#unread.subarray(n);
    return n;
  }

  // Resolves once the kernel has taken some of `bytes`, with how many.
  async write(bytes: Uint8Array): Promise<number> {
    this.#assertOpen();
    for (;;) {
      if (this.#error) throw this.#error;
      const n = this.#socket.write(bytes);
      if (n > 0 || bytes.length === 0) return n;
      // Closed: Bun may have said why (a reset, say) during this write.
      if (n < 0) throw this.#error ?? new errors.BrokenPipe(BROKEN_PIPE);
      await this.#event(); // drain, or close
    }
  }

  // Sends FIN: the peer sees the end of our output, and we can still read.
  closeWrite(): Promise<void> {
    this.#assertOpen();
    this.#socket.shutdown(); // not shutdown(true): that shuts the read side
    return Promise.resolve();
  }

  // Like Deno's close(): a read or write still waiting fails.
  close() {
    this.#assertOpen();
    this.#closed = true;
    this.#error = new errors.Interrupted("operation canceled");
    this.#socket.end();
    this.#wake();
  }

  // Bun's callbacks. Data pauses the socket until read() has taken it all.
  onData(bytes: Uint8Array) {
    const joined = new Uint8Array(this.#unread.length + bytes.length);
    joined.set(this.#unread);
    joined.set(bytes, this.#unread.length);
    this.#unread = joined;
    this.#socket.pause();
    this.#wake();
  }

  onEnd() {
    this.#ended = true;
    this.#wake();
  }

  onClose(err?: Error) {
    this.#ended = true;
    this.#error ??= err ? denoError(err) : null;
    this.#wake();
  }

  onDrain() {
    this.#wake();
  }

  #assertOpen() {
    if (this.#closed) throw new errors.BadResource("Bad resource ID");
  }

  #event(): Promise<void> {
    return new Promise((wake) => this.#waiting.push(wake));
  }

  #wake() {
    for (const wake of this.#waiting.splice(0)) wake();
  }
}

const callbacks = {
  data: (socket: BunSocket, bytes: Uint8Array) => socket.data?.onData(bytes),
  end: (socket: BunSocket) => socket.data?.onEnd(),
  drain: (socket: BunSocket) => socket.data?.onDrain(),
  close: (socket: BunSocket, err?: Error) => socket.data?.onClose(err),
  error: (socket: BunSocket, err: Error) => socket.data?.onClose(err),
};

type ListenOptions = {
  hostname?: string;
  port: number;
  tcpBacklog?: number;
  reusePort?: boolean;
};
const NOT_CONNECTED = "Transport endpoint is not connected (os error 107)";
type Taker = { resolve(conn: Conn): void; reject(err: Error): void };

class Listener {
  readonly addr: NetAddr;
  #bun: BunListener | null; // null while paused
  #spare = -1; // a copy of the socket's descriptor that Bun never owns
  #idle = -1; // while paused, the copy to give Bun when it resumes
  #backlog?: number;
  #options: object;
  #ready: Conn[] = []; // accepted by Bun, not yet by accept()
  #taker: Taker | null = null; // the accept() waiting for a client
  #closed = false;

  constructor(options: ListenOptions) {
    const { hostname = "0.0.0.0", port, tcpBacklog, reusePort } = options;
    this.#options = {
      allowHalfOpen: true, // a client's end of input still gets its replies
      socket: { ...callbacks, open: (s: BunSocket) => this.#opened(s) },
    };
    try {
      this.#bun = Bun.listen({ ...this.#options, hostname, port, reusePort });
    } catch (err) {
      throw denoError(err as Error);
    }
    this.addr = netAddr(hostname, this.#bun.port);
    this.#backlog = tcpBacklog;
    this.#setBacklog();
    this.#spare = libc?.dup(this.#bun.fd) ?? -1;
    this.#pause();
  }

  accept(): Promise<Conn> {
    if (this.#closed) {
      return Promise.reject(new errors.BadResource("Listener has been closed"));
    }
    if (this.#taker) { // as in Deno, which takes one accept() at a time
      return Promise.reject(new errors.Busy("Another accept task is ongoing"));
    }
    const conn = this.#ready.shift();
    if (conn) return Promise.resolve(conn);
    return new Promise((resolve, reject) => {
      this.#resume();
      this.#taker = { resolve, reject };
    });
  }

  // Clients still in the queue are dropped, as when Deno closes a listener.
  close() {
    if (this.#closed) throw new errors.BadResource("Listener has been closed");
    this.#closed = true;
    this.#bun?.stop();
    for (const fd of [this.#idle, this.#spare]) if (fd >= 0) libc!.close(fd);
    for (const conn of this.#ready.splice(0)) conn.close();
    this.#taker?.reject(new errors.BadResource("Listener has been closed"));
    this.#taker = null;
  }

  // A client that reset while queued reaches Bun's open callback with no
  // address: Deno's accept() fails with NotConnected for it, and so does
  // this one, so that the server accepts again at once, as under Deno.
  #opened(socket: BunSocket) {
    if (!socket.remoteAddress) {
      socket.end();
      this.#taker?.reject(new errors.NotConnected(NOT_CONNECTED));
    } else {
      const conn = socket.data = new Conn(socket);
      if (this.#taker) this.#taker.resolve(conn);
      else this.#ready.push(conn); // Bun took two at once, or cannot pause
    }
    this.#taker = null;
    this.#pause();
  }

  // Stops Bun accepting. Bun closes its descriptor of the listening socket;
  // the spare copy holds the socket, and the clients queued on it, open.
  // A new copy takes the place of Bun's, ready for resume(): paused or not,
  // the listener holds two descriptors.
  #pause() {
    if (!this.#bun || this.#spare < 0) return;
    this.#bun.stop();
    this.#bun = null;
    this.#idle = libc!.dup(this.#spare);
  }

  // Where no descriptor is left for a client, Bun's accept(2) would fail and
  // Bun would retry it at once, forever: fail here instead, as Deno's
  // accept() does, and stay paused.
  #resume() {
    if (this.#bun) return;
    if (this.#idle < 0) this.#idle = libc!.dup(this.#spare);
    const room = libc!.dup(this.#spare);
    if (room >= 0) libc!.close(room);
    if (room < 0 || this.#idle < 0) {
      throw new Error("Too many open files (os error 24)");
    }
    this.#bun = Bun.listen({ ...this.#options, fd: this.#idle });
    this.#idle = -1;
    this.#setBacklog();
  }

  // Bun listens with a backlog of its own; listen(2) again sets ours.
  #setBacklog() {
    if (libc && this.#backlog !== undefined) {
      libc.listen(this.#bun!.fd, this.#backlog);
    }
  }
}

async function connect(options: { hostname?: string; port: number }) {
  const { hostname = "127.0.0.1", port } = options;
  try {
    const socket = await Bun.connect({
      hostname,
      port,
      allowHalfOpen: true,
      socket: { ...callbacks, open: (s: BunSocket) => s.data = new Conn(s) },
    });
    return socket.data!;
  } catch (err) {
    throw denoError(err as Error);
  }
}

async function listenDatagram(options: { hostname: string; port: number }) {
  const { hostname, port } = options;
  try {
    return await Bun.udpSocket({ hostname, port });
  } catch (err) {
    throw denoError(err as Error);
  }
}

// Bun runs bunfig.toml's preload in the main thread only: workers get this
// file from here.
class Worker extends globalThis.Worker {
  constructor(url: string | URL, options?: WorkerOptions) {
    super(url, { ...options, preload: [import.meta.url] } as WorkerOptions);
  }
}

if (!("Deno" in globalThis)) {
  Object.assign(globalThis, {
    Worker,
    Deno: {
      args: process.argv.slice(2),
      errors,
      listen: (options: ListenOptions) => new Listener(options),
      connect,
      addSignalListener: (signal: string, handler: () => void) =>
        process.on(signal, handler),
      exit: (code?: number) => process.exit(code),
      // worker-pool holds a UDP socket as a lock on its port, and takes this
      // function as the sign of Deno's --unstable-net (Bun needs no flag).
      // Bun's socket comes as a promise: worker-pool awaits it.
      listenDatagram,
    },
  });
  // Bun's workers lack the Web API close(), which worker-pool's call.
  if (!isMainThread && !("close" in globalThis)) {
    Object.assign(globalThis, { close: () => process.exit() });
  }
}
