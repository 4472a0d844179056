/**
 * Serial server: one connection at a time, like the tutorial's first server.
 * The next client is accepted only once the current one closes; until then
 * the kernel holds it in the listen backlog, connected but unanswered.
 *
 * Run:   deno run --allow-net modes/serial.ts       (or: deno task serial)
 * Watch: run `deno task client` in two more terminals. The first gets
 *        replies; the second waits at its first line until the first quits.
 */
import process from "node:process";
import { parseArgs } from "node:util";

const MODE = "serial";

// ---- The lesson: serve each connection to the end, then accept the next.
async function acceptLoop(listener: Deno.Listener, options: Options) {
  for (;;) {
    const conn = await accept(listener);
    if (!conn) return; // the server is stopping
    await serve(conn, options);
  }
}

async function main() {
  const options = parseCommandLine();
  const listener = listen(options);
  stopOnSignals(listener, options.grace);
  closeIdleConnections(options.idleTimeout);
  const { port } = listener.addr as Deno.NetAddr;
  log(`${MODE} listening on ${address(options.host, port)}`);
  await acceptLoop(listener, options);
}

// ---- What the server does with each line: the tutorial's timestamped echo.
// Change it to make the server your own. It gets one line as text, without
// its "\n", and what it returns is sent back with a "\n" (raw framing: a
// whole read in, the reply as it is).
export function respond(line: string): string {
  return `[${now()}] ${line}`;
}

// ---- The rest is the same in every mode file, but for the flags a mode adds.

// -- Accepting. A client that gave up while it waited in the backlog (it
// reset) concerns that client only: accept again at once. Running out of
// descriptors or memory concerns everyone: retrying at once would spin, so
// wait a little, and say so once per burst, even with --quiet.
async function accept(listener: Deno.Listener): Promise<Deno.Conn | null> {
  for (;;) {
    try {
      const conn = await listener.accept();
      if (!server.stopSignal) return conn;
      conn.close(); // taken as the listener closed: dropped like the backlog
      return null;
    } catch (err) {
      if (server.stopSignal) return null;
      if (clientGaveUp(err)) continue;
      if (performance.now() - troubleLoggedAt > 10_000) {
        troubleLoggedAt = performance.now();
        log(`accept failing, retrying: ${(err as Error).message}`);
      }
      await new Promise((retry) => setTimeout(retry, 100));
    }
  }
}

let troubleLoggedAt = -Infinity;

function clientGaveUp(err: unknown): boolean {
  const { ConnectionAborted, ConnectionReset, NotConnected } = Deno.errors;
  return err instanceof ConnectionAborted || err instanceof ConnectionReset ||
    err instanceof NotConnected;
}

// -- The connection. Each reply is written in full before the next read: a
// client that does not read stops us reading, and its data waits in the
// kernel, not in our memory (backpressure).
const server = { connections: 0, messages: 0, stopSignal: "", stopAt: 0 };
const open = new Map<Connection, Promise<void>>(); // each with its end

function serve(conn: Deno.Conn, options: Options, worker = 0) {
  server.connections++;
  const connection = new Connection(conn, options, worker);
  const done = connection.serve();
  open.set(connection, done);
  return done;
}

const READ_SIZE = 1024; // the tutorial's recv(1024)
const FIRST_READ_SIZE = 64;
const REPLY_BUFFER_MAX = 4 * READ_SIZE;
const LF = 10, CR = 13;
const NEWLINE = new Uint8Array([LF]), EMPTY = new Uint8Array();
const encoder = new TextEncoder();
// Invalid UTF-8 becomes U+FFFD, never a throw; a leading byte-order mark is
// kept (TextDecoder drops it by default), so text echoes byte for byte.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

export class Connection {
  readonly id = server.connections;
  readonly opened = performance.now();
  lastProgress = performance.now(); // a whole line in, or reply bytes out
  messages = 0;
  #line = EMPTY; // a line whose \n is still to come: its first #lineBytes
  #lineBytes = 0; // bytes, with room to grow
  #writing: Promise<void> = Promise.resolve(); // the last write begun
  #replyBuffer = EMPTY; // see #encode
  #endReason = "";

  constructor(
    readonly conn: Deno.Conn,
    readonly options: Options,
    readonly worker = 0, // the worker that serves it, in modes that have them
  ) {}

  async serve() {
    this.#log("opened");
    try {
      // An idle connection holds its buffer while its read waits: start
      // small, and grow once a read fills it. Raw framing answers each read
      // of up to READ_SIZE bytes, so it takes them all from the start.
      const raw = this.options.framing === "raw";
      let buffer = new Uint8Array(raw ? READ_SIZE : FIRST_READ_SIZE);
      for (;;) {
        const n = await this.conn.read(buffer);
        if (n === null) break;
        if (!this.#endReason) await this.#answer(buffer.subarray(0, n));
        if (n === buffer.length && n < READ_SIZE) {
          buffer = new Uint8Array(READ_SIZE);
        }
      }
      // A last line without its \n is answered as if the \n had come.
      if (this.#lineBytes && !this.#endReason) await this.#answer(NEWLINE);
    } catch (err) {
      this.#endReason ||= (err as Error).message;
    }
    await this.#writing.catch(() => {});
    this.#close();
    open.delete(this);
    server.messages += this.messages;
    const time = ((performance.now() - this.opened) / 1000).toFixed(1);
    const carried = count(this.messages, "message");
    const why = this.#endReason && ` (${this.#endReason})`;
    this.#log(`closed after ${time} s, ${carried}${why}`);
  }

  // Ends the connection from our side: after the replies in flight, a last
  // line says why, then FIN. Input is read and dropped until the client
  // closes too: closing with unread input makes the kernel reset the
  // connection, and a reset throws away what the client has not read yet,
  // our last line included. A client stuck for a second is closed anyway.
  end(reason: string, why = reason) {
    if (this.#endReason) return;
    this.#endReason = reason;
    const line = encoder.encode(`ERROR ${why}\n`);
    this.#writing = this.#writing.then(() => this.#writeAll(line));
    this.#writing.then(() => this.conn.closeWrite()).catch(() => this.#close());
    const closeWhenStuck = () => {
      if (performance.now() - this.lastProgress >= 1000) this.#close();
      else setTimeout(closeWhenStuck, 1000);
    };
    setTimeout(closeWhenStuck, 1000);
  }

  // Answers every whole line in `bytes` and keeps the rest for later. Only
  // new bytes are scanned, and an unfinished line grows in a buffer that
  // doubles when full: a long line costs no more per byte than a short one,
  // in time or in memory, however the client cuts it.
  #answer(bytes: Uint8Array): Promise<void> {
    if (this.options.framing === "raw") {
      return this.#write(this.#reply(bytes)); // its own \n, if any, ends it
    }
    let replies = "";
    let start = 0;
    for (let lf = bytes.indexOf(LF); lf !== -1; lf = bytes.indexOf(LF, start)) {
      const line = this.#takeLine(bytes.subarray(start, lf));
      const last = line[line.length - 1];
      if (this.#tooLong(line.length, last)) return this.#refuse(replies);
      replies += this.#reply(last === CR ? line.subarray(0, -1) : line) + "\n";
      start = lf + 1;
    }
    if (start < bytes.length) { // a line whose \n is still to come
      this.#keep(bytes.subarray(start)); // a copy: the next read reuses `bytes`
      const last = this.#line[this.#lineBytes - 1];
      if (this.#tooLong(this.#lineBytes, last)) return this.#refuse(replies);
    }
    return this.#write(replies);
  }

  // Past --max-line, only a \r whose \n is still to come may wait.
  #tooLong(bytes: number, lastByte?: number): boolean {
    return bytes > this.options.maxLine + (lastByte === CR ? 1 : 0);
  }

  #refuse(replies: string): Promise<void> {
    const written = this.#write(replies);
    this.end("line too long", `line longer than ${this.options.maxLine} bytes`);
    return written;
  }

  #keep(bytes: Uint8Array) {
    const needed = this.#lineBytes + bytes.length;
    if (needed > this.#line.length) {
      const bigger = new Uint8Array(Math.max(needed, 2 * this.#line.length));
      bigger.set(this.#line.subarray(0, this.#lineBytes));
      this.#line = bigger;
    }
    this.#line.set(bytes, this.#lineBytes);
    this.#lineBytes = needed;
  }

  // The line that `end` finishes: the bytes kept so far, then `end`.
  #takeLine(end: Uint8Array): Uint8Array {
    if (!this.#lineBytes) return end;
    this.#keep(end);
    const line = this.#line.subarray(0, this.#lineBytes);
    this.#line = EMPTY; // the next line starts small again
    this.#lineBytes = 0;
    return line;
  }

  // One line's reply, from respond(): the line as text (invalid UTF-8 as
  // U+FFFD, so respond() never sees a broken character).
  #reply(line: Uint8Array): string {
    this.messages++;
    work(this.options.work);
    this.lastProgress = performance.now();
    return respond(decoder.decode(line));
  }

  // Writes never overlap: only serve() writes replies, one read's at a time
  // (it waits for each before it reads on), and end() waits for the write in
  // flight.
  #write(replies: string): Promise<void> {
    return this.#writing = this.#writeAll(this.#encode(replies));
  }

  // One read's replies as UTF-8, in an array that the connection keeps for
  // the next read's: no new array for each reply. Safe because writes never
  // overlap (see #write). A reply too long for REPLY_BUFFER_MAX gets an array
  // used once, so that a long line does not hold its memory afterwards.
  #encode(text: string): Uint8Array {
    let { read, written } = encoder.encodeInto(text, this.#replyBuffer);
    if (read < text.length) {
      const most = 3 * text.length; // bytes: UTF-8 takes up to 3 a character
      if (most > REPLY_BUFFER_MAX) return encoder.encode(text);
      const doubled = Math.max(most, 2 * this.#replyBuffer.length);
      this.#replyBuffer = new Uint8Array(Math.min(doubled, REPLY_BUFFER_MAX));
      ({ written } = encoder.encodeInto(text, this.#replyBuffer));
    }
    return this.#replyBuffer.subarray(0, written);
  }

  // A write may take only part of the bytes: write the rest, and count
  // every part the kernel takes as progress.
  async #writeAll(bytes: Uint8Array) {
    while (bytes.length) {
      bytes = bytes.subarray(await this.conn.write(bytes));
      this.lastProgress = performance.now();
    }
  }

  #close() {
    try {
      this.conn.close();
    } catch { /* closed already */ }
  }

  // The peer's address is looked up only when logged: --quiet saves it.
  #log(event: string) {
    if (this.options.quiet) return;
    const { hostname, port } = this.conn.remoteAddr as Deno.NetAddr;
    const by = this.worker ? `worker ${this.worker} ` : "";
    log(`#${this.id} ${address(hostname, port)} ${by}${event}`);
  }
}

// One timer checks every connection; progress itself only stamps a time.
function closeIdleConnections(idleTimeout: number) {
  if (idleTimeout === 0) return;
  setInterval(() => {
    const stale = performance.now() - idleTimeout * 1000;
    for (const connection of open.keys()) {
      if (connection.lastProgress < stale) connection.end("idle timeout");
    }
  }, 1000);
}

// --work stands for what a real server computes for a reply (parsing,
// hashing, rendering): a loop that keeps this thread busy. While it runs,
// nothing else on this event loop runs: no other connection is served, no
// timer fires. Waiting for the network costs a task nothing; this does.
function work(ms: number) {
  if (ms === 0) return; // no clock read for each line when off
  const until = performance.now() + ms;
  while (performance.now() < until); // busy, on purpose
}

// The time as ctime() writes it, formatted once a second; exported, so that
// a respond() without it leaves nothing unused.
let clock = { second: -1, text: "" };
export function now(): string {
  const second = Math.floor(Date.now() / 1000);
  if (second === clock.second) return clock.text;
  clock = { second, text: ctime(new Date(second * 1000)) };
  return clock.text;
}

// C ctime() in local time, as Python's time.ctime(): "Sun Nov  8 06:05:04 2026"
export function ctime(date: Date): string {
  const [weekday, month, day, year, time] = date.toString().split(" ");
  return `${weekday} ${month} ${day.replace(/^0/, " ")} ${time} ${year}`;
}

const count = (n: number, noun: string) => `${n} ${noun}${n === 1 ? "" : "s"}`;

// -- The log. Lines are written in the background, in order, so that a log
// reader who stops reading (`deno task conn | less`, left unscrolled) cannot
// stop the server: while stdout is full, up to 10,000 lines wait (enough for
// bursts), and any more are dropped and counted, as busy servers do rather
// than stop serving.
const logQueue: string[] = [];
let logDropped = 0;
let logWriting: Promise<void> | undefined;

function log(line: string) {
  if (logQueue.length < 10_000) logQueue.push(line);
  else logDropped++;
  logWriting ??= writeLog();
}

async function writeLog() {
  while (logQueue.length) {
    const lines = logQueue.splice(0);
    if (logDropped) lines.push(`(${count(logDropped, "log line")} dropped)`);
    logDropped = 0;
    let bytes = encoder.encode(lines.join("\n") + "\n");
    try {
      while (bytes.length) {
        bytes = bytes.subarray(await Deno.stdout.write(bytes));
      }
    } catch { /* stdout was closed: nobody will read these lines */ }
  }
  logWriting = undefined;
}

// The log written, or a second gone by if nobody reads it.
function logWritten(): Promise<unknown> {
  const aSecond = new Promise((over) => setTimeout(over, 1000));
  return Promise.race([logWriting, aSecond]);
}

// An address as host:port, with an IPv6 host in brackets: [::1]:8080.
const address = (host: string, port: number) =>
  host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;

// -- The command line.
const USAGE = `usage: deno run --allow-net modes/${MODE}.ts [flags]
  --host H            address to listen on; 0.0.0.0: all (127.0.0.1)
  --port N            port; 0 picks a free one (8080)
  --backlog N         clients the kernel queues until accepted (511)
  --framing F         line: a reply per line; raw: per read (line)
  --max-line N        longest line in bytes; longer ends it (65536)
  --idle-timeout S    seconds without progress before a close; 0: never (300)
  --grace S           seconds open connections get on shutdown (5)
  --work MS           CPU time spent on each reply, a busy loop (0)
  --quiet             no line per connection opened and closed (off)
  --help              this text`;

type Options = ReturnType<typeof parseOptions>;

function parseOptions(args: string[]) {
  const { values: flag } = parseArgs({
    args,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "8080" },
      backlog: { type: "string", default: "511" },
      framing: { type: "string", default: "line" },
      "max-line": { type: "string", default: "65536" },
      "idle-timeout": { type: "string", default: "300" },
      grace: { type: "string", default: "5" },
      work: { type: "string", default: "0" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (flag.framing !== "line" && flag.framing !== "raw") {
    throw new Error(`--framing must be line or raw`);
  }
  return {
    ...flag,
    port: int("port", flag.port, 0, 65535),
    backlog: int("backlog", flag.backlog),
    maxLine: int("max-line", flag["max-line"]),
    idleTimeout: int("idle-timeout", flag["idle-timeout"], 0),
    grace: int("grace", flag.grace, 0),
    work: int("work", flag.work, 0, 60000),
  };
}

function int(name: string, text: string, min = 1, max = 1e6) {
  if (/^\d+$/.test(text) && +text >= min && +text <= max) return +text;
  throw new Error(`--${name} must be a whole number from ${min} to ${max}`);
}

// The options, or an exit: 0 after --help, 2 with one line for a bad flag.
function parseCommandLine(): Options {
  if (!("Deno" in globalThis)) { // Bun, without bun/deno-shim.ts preloaded
    console.error(
      `error: ${MODE}.ts needs Deno, or Bun with deno-shim.ts: run bun in ` +
        "the repository's top folder, or bun --preload ./deno-shim.ts " +
        `${MODE}.ts`,
    );
    process.exit(1);
  }
  try {
    const options = parseOptions(joinNegativeValues(Deno.args));
    if (!options.help) return options;
    console.log(USAGE);
    Deno.exit(0);
  } catch (err) {
    console.error(`error: ${(err as Error).message.split(/\.\s/)[0]}`);
    console.error("run with --help for usage");
    Deno.exit(2);
  }
}

// parseArgs reads "--port -1" as two flags; "--port=-1" gets a range error.
function joinNegativeValues(args: string[]): string[] {
  const joined: string[] = [];
  for (const arg of args) {
    const isValue = /^-\d/.test(arg) && joined.at(-1)?.startsWith("--");
    joined.push(isValue ? `${joined.pop()}=${arg}` : arg);
  }
  return joined;
}

// ---- Listening and stopping: the same in serial, fixed-pool and
// thread-per-connection. worker-pool's threads do both their own way.

function listen({ host, port, backlog }: Options): Deno.Listener {
  try {
    return Deno.listen({ hostname: host, port, tcpBacklog: backlog });
  } catch (err) {
    const why = err instanceof Deno.errors.AddrInUse
      ? "is already in use"
      : `cannot be listened on: ${(err as Error).message}`;
    console.error(`error: ${address(host, port)} ${why}`);
    Deno.exit(1);
  }
}

// -- Shutdown. The first signal stops accepting (clients in the backlog are
// dropped), gives open connections --grace seconds, then ends the rest. A
// second signal exits at once. One Ctrl+C can come twice (from the terminal,
// and forwarded by `deno task`): the same signal within 100 ms is one press.
function stopOnSignals(listener: Deno.Listener, grace: number) {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => stop(signal, listener, grace));
  }
}

async function stop(signal: string, listener: Deno.Listener, grace: number) {
  const { stopSignal, stopAt } = server;
  if (stopSignal) {
    if (signal !== stopSignal || performance.now() - stopAt > 100) {
      Deno.exit(signal === "SIGTERM" ? 143 : 130);
    }
    return;
  }
  Object.assign(server, { stopSignal: signal, stopAt: performance.now() });
  listener.close();
  log(`stopping: ${open.size} open, waiting up to ${grace} s`);
  const graceOver = new Promise((over) => setTimeout(over, grace * 1000));
  await Promise.race([Promise.all(open.values()), graceOver]);
  for (const connection of open.keys()) connection.end("server shutting down");
  await Promise.all(open.values());
  const total = count(server.connections, "connection");
  log(`stopped: ${total}, ${count(server.messages, "message")}`);
  await logWritten();
  Deno.exit(0);
}

if (import.meta.main) await main();
