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
 *   It is paused, too, while no descriptor is free, and accept() fails as in
 *   Deno: Bun would retry a failing accept(2) at once, and spin.
 * - A connection's input goes straight to a waiting read(); what no read()
 *   waits for is held here, and past 64 KiB the socket is paused, so that a
 *   client that sends without reading is held up in the kernel's buffers, not
 *   in this process (backpressure, as in Deno). Bun reads up to 512 KiB at a
 *   time, so a connection holds at most 576 KiB; when the peer resets, Bun
 *   reads on while paused, and past 576 KiB the connection is closed and
 *   the rest dropped (see #abort). Reads resolve once a turn of the event
 *   loop, together, after Bun has handed over all the input at hand: each
 *   connection, and the listener, gets one step a turn.
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
  terminate(): void; // closes at once
  write(bytes: Uint8Array): number; // bytes the kernel took; -1 if closed
  end(): void;
  shutdown(): void; // shutdown(2) of the write side
  setNoDelay(on: boolean): boolean; // TCP_NODELAY
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

// Input that Bun has read and read() has not taken yet is held here. Past
// HIGH_WATER bytes the socket is paused, so that the rest waits in the
// kernel, and it is resumed once below LOW_WATER. Bun reads up to 512 KiB at
// a time, and a socket can only be paused after a read: so a connection
// holds at most HELD_MAX bytes.
const HIGH_WATER = 64 * 1024;
const LOW_WATER = 16 * 1024;
const BUN_READ_MAX = 512 * 1024;
const HELD_MAX = HIGH_WATER + BUN_READ_MAX; // 576 KiB
const INPUT_DROPPED = "Connection reset by peer, with more than " +
  `${HELD_MAX / 1024} KiB of its input unread: the rest was dropped`;

type Reader = {
  buffer: Uint8Array;
  resolve(n: number | null): void;
  reject(err: Error): void;
};

// Reads are resolved together, once Bun has called back for every event at
// hand (setImmediate): those that Bun's data completed, and those that took
// bytes held here. Bun runs the microtasks after each callback: a round per
// read cost about a tenth of each reply (docs/performance.md). And a read of
// held bytes waits its turn like the others: resolved at once, it let one
// connection answer hundreds of KiB in one turn of the event loop, while the
// listener takes one client a turn (new clients waited seconds under load).
const completed: [Reader, number][] = [];
function completeRead(reader: Reader, n: number) {
  if (!completed.length) setImmediate(resolveCompleted);
  completed.push([reader, n]);
}
function resolveCompleted() {
  for (const [reader, n] of completed.splice(0)) reader.resolve(n);
}

export class Conn {
  readonly remoteAddr: NetAddr;
  readonly localAddr: NetAddr;
  #socket: BunSocket;
  #unread: Uint8Array[] = []; // what Bun gave us and read() has not taken
  #unreadBytes = 0;
  #paused = false; // by us, with HIGH_WATER bytes unread
  #reader: Reader | null = null; // the read() waiting for bytes
  #ended = false; // the peer will send nothing more
  #error: Error | null = null; // why reads and writes fail from now on
  #closed = false; // by close(), after which every call is a BadResource
  #waiting: (() => void)[] = []; // writes waiting for drain or close

  constructor(socket: BunSocket) {
    this.#socket = socket;
    this.remoteAddr = netAddr(socket.remoteAddress, socket.remotePort);
    this.localAddr = netAddr(socket.localAddress, socket.localPort);
  }

  // Bytes held, if any, resolved with the reads Bun's data completes; else
  // waits for Bun's next data, end or error.
  read(buffer: Uint8Array): Promise<number | null> {
    this.#assertOpen();
    if (this.#unreadBytes) {
      return new Promise((resolve, reject) => {
        completeRead({ buffer, resolve, reject }, this.#take(buffer));
      });
    }
    if (this.#error) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#reader = { buffer, resolve, reject };
    });
  }

  // Resolves once the kernel has taken some of `bytes`, with how many: at
  // once when it takes any, else after Bun's drain.
  write(bytes: Uint8Array): Promise<number> {
    this.#assertOpen();
    if (this.#error) return Promise.reject(this.#error);
    const n = this.#socket.write(bytes);
    if (n > 0 || bytes.length === 0) return Promise.resolve(n);
    // Closed: Bun may have said why (a reset, say) during this write.
    if (n < 0) {
      return Promise.reject(this.#error ?? new errors.BrokenPipe(BROKEN_PIPE));
    }
    return this.#event().then(() => this.write(bytes)); // drain, or close
  }

  // Sends small writes at once rather than waiting to fill a packet.
  setNoDelay(on = true) {
    this.#socket.setNoDelay(on);
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
    this.#settleReader();
    this.#wake();
  }

  // Bun's callbacks. Data goes straight to a waiting read(), and what it
  // cannot take is held, copied, so that nothing here depends on what Bun
  // does with its chunk afterwards.
  onData(bytes: Uint8Array) {
    if (this.#error) return; // closed, or reset: nobody will read it
    if (this.#paused && this.#unreadBytes + bytes.length > HELD_MAX) {
      return this.#abort();
    }
    const reader = this.#reader;
    this.#reader = null;
    let taken = 0;
    if (reader) {
      taken = Math.min(bytes.length, reader.buffer.length);
      const whole = taken === bytes.length; // on Bun, a cut may copy `bytes`
      reader.buffer.set(whole ? bytes : bytes.subarray(0, taken));
    }
    if (taken < bytes.length) {
      this.#unread.push(bytes.slice(taken));
      this.#unreadBytes += bytes.length - taken;
      if (this.#unreadBytes > HIGH_WATER && !this.#paused) {
        this.#paused = true;
        this.#socket.pause();
      }
    }
    if (reader) completeRead(reader, taken);
  }

  onEnd() {
    this.#ended = true;
    this.#settleReader();
  }

  onClose(err?: Error) {
    this.#ended = true;
    this.#error ??= err ? denoError(err) : null;
    this.#settleReader();
    this.#wake();
  }

  // Bun hands over data while the socket is paused when the peer has reset:
  // it reads all that the kernel holds (megabytes) before it reports the
  // reset. No reply can reach the peer any more: past HELD_MAX, stop Bun
  // reading (the kernel drops the rest), and fail the reads that come after
  // the bytes held, as the reset would have.
  #abort() {
    this.#error = new errors.ConnectionReset(INPUT_DROPPED);
    this.#socket.terminate();
  }

  // Copies held bytes into `buffer`; resumes a paused socket when few are
  // left.
  #take(buffer: Uint8Array): number {
    let n = 0;
    while (n < buffer.length && this.#unread.length) {
      const head = this.#unread[0];
      const part = head.subarray(0, buffer.length - n);
      buffer.set(part, n);
      n += part.length;
      if (part.length === head.length) this.#unread.shift();
      else this.#unread[0] = head.subarray(part.length);
    }
    this.#unreadBytes -= n;
    if (this.#paused && this.#unreadBytes < LOW_WATER) {
      this.#paused = false;
      this.#socket.resume();
    }
    return n;
  }

  // A read() waiting when no more data can come: it gets the error, or the
  // end of input.
  #settleReader() {
    const reader = this.#reader;
    this.#reader = null;
    if (this.#error) reader?.reject(this.#error);
    else reader?.resolve(null);
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
const TOO_MANY_FILES = "Too many open files (os error 24)";
// How often a worker's listener that Bun accepts on checks that a descriptor
// is free (see #checkRoomIn): 10 ms after Bun resumes accepting, then twice as
// long each time, up to a second, so that an idle worker sleeps (as Go's
// accept backs off from 5 ms to 1 s). Each client accepted starts it again.
const ROOM_CHECK_FIRST_MS = 10;
const ROOM_CHECK_MAX_MS = 1000;
type Taker = { resolve(conn: Conn): void; reject(err: Error): void };

class Listener {
  readonly addr: NetAddr;
  #bun: BunListener | null; // null while paused
  #spare = -1; // a copy of the socket's descriptor that Bun never owns
  #idle = -1; // while paused, the copy to give Bun when it resumes
  #backlog?: number;
  #options: object;
  #roomCheck?: ReturnType<typeof setTimeout>; // while Bun accepts
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
    clearTimeout(this.#roomCheck);
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
    clearTimeout(this.#roomCheck);
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
    if (!this.#hasRoom() || this.#idle < 0) throw new Error(TOO_MANY_FILES);
    this.#bun = Bun.listen({ ...this.#options, fd: this.#idle });
    this.#idle = -1;
    this.#setBacklog();
    if (!isMainThread) this.#checkRoomIn(ROOM_CHECK_FIRST_MS);
  }

  // In a worker, the last free descriptor can go after #resume() checked:
  // worker-pool's workers share the process's descriptors, and another
  // one's accept may take it. Bun would then spin: so while it accepts, look
  // again from time to time, and if none is left, stop and fail as above. (One
  // thread alone takes no descriptor between the check and Bun's accept.)
  #checkRoomIn(ms: number) {
    this.#roomCheck = setTimeout(() => {
      if (this.#hasRoom()) {
        return this.#checkRoomIn(Math.min(2 * ms, ROOM_CHECK_MAX_MS));
      }
      this.#pause();
      this.#taker?.reject(new Error(TOO_MANY_FILES));
      this.#taker = null;
    }, ms);
  }

  #hasRoom(): boolean {
    const room = libc!.dup(this.#spare);
    if (room >= 0) libc!.close(room);
    return room >= 0;
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

// Deno.stdout.write resolves once the bytes are written, without holding up
// the event loop while stdout is full (a log reader that stopped reading):
// process.stdout.write calls back when the kernel has taken them.
const stdout = {
  write: (bytes: Uint8Array) =>
    new Promise<number>((written, failed) => {
      process.stdout.write(bytes, (err) =>
        err ? failed(err) : written(bytes.length));
    }),
};

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
      stdout,
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
