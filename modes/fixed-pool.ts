/**
 * Fixed-pool server: N workers (--pool-size, 10 by default, as in the
 * tutorial) take turns to accept, and each serves the connection it accepted
 * to the end before it accepts again. At most N clients are served at once;
 * client N+1 is connected by the kernel but waits in the backlog for a worker.
 *
 * Run:   deno task pool --pool-size 2
 *        (deno run --allow-net modes/fixed-pool.ts --pool-size 2)
 * Watch: run `deno task client` in three terminals. Two get replies; the third
 *        waits until one of the first two quits. The log names each worker.
 */
import { parseArgs } from "node:util";

const MODE = "fixed-pool";
const USAGE = `usage: deno run --allow-net modes/${MODE}.ts [--host 127.0.0.1]
  [--port 8080] [--backlog 511] [--framing line|raw] [--max-line 65536]
  [--idle-timeout 300] [--grace 5] [--pool-size 10] [--quiet] [--help]`;

type Options = ReturnType<typeof parseOptions>;

function parseOptions(args: string[]) {
  const { values: flag } = parseArgs({
    args,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "8080" },
      backlog: { type: "string", default: "511" }, // Deno's default
      framing: { type: "string", default: "line" },
      "max-line": { type: "string", default: "65536" },
      "idle-timeout": { type: "string", default: "300" },
      grace: { type: "string", default: "5" },
      "pool-size": { type: "string", default: "10" },
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
    poolSize: int("pool-size", flag["pool-size"]),
  };
}

function int(name: string, text: string, min = 1, max = 1e6) {
  if (/^\d+$/.test(text) && +text >= min && +text <= max) return +text;
  throw new Error(`--${name} must be a whole number from ${min} to ${max}`);
}

// ---- The lesson: a fixed number of workers. Each accepts one connection and
// serves it to the end; while all are busy, nobody accepts.
async function acceptLoop(listener: Deno.Listener, options: Options) {
  const workers = [];
  for (let id = 1; id <= options.poolSize; id++) {
    workers.push(worker(id, listener, options));
  }
  await Promise.all(workers);
}

let acceptTurn: Promise<unknown> = Promise.resolve();

async function worker(id: number, listener: Deno.Listener, options: Options) {
  for (;;) {
    // Deno's accept() takes one caller at a time: workers queue for a turn.
    const myTurn = acceptTurn.then(() => accept(listener));
    acceptTurn = myTurn;
    const conn = await myTurn;
    if (!conn) return;
    await serve(conn, options, id);
  }
}

const server = { connections: 0, messages: 0, stopSignal: "", stopAt: 0 };
const open = new Map<Connection, Promise<void>>(); // each with its end
let acceptTroubleLoggedAt = 0;

// The next connection, or null once the server is stopping. A client that
// gave up before we took it concerns only that client: accept again at once.
// Running out of descriptors or memory concerns everyone: retrying at once
// would spin, so wait a little, and say so once per burst, even with --quiet.
async function accept(listener: Deno.Listener): Promise<Deno.Conn | null> {
  for (;;) {
    try {
      const conn = await listener.accept();
      if (!server.stopSignal) return conn;
      conn.close(); // taken as the listener closed: dropped, as the backlog is
      return null;
    } catch (err) {
      if (server.stopSignal) return null;
      if (clientGaveUp(err)) continue;
      logAcceptTrouble(err as Error);
      await new Promise((retry) => setTimeout(retry, 100));
    }
  }
}

// The errors of a client that reset or aborted its connect while queued.
function clientGaveUp(err: unknown): boolean {
  const { ConnectionAborted, ConnectionReset, NotConnected } = Deno.errors;
  return err instanceof ConnectionAborted || err instanceof ConnectionReset ||
    err instanceof NotConnected;
}

function logAcceptTrouble(err: Error) {
  if (Date.now() - acceptTroubleLoggedAt <= 10_000) return;
  acceptTroubleLoggedAt = Date.now();
  console.log(`accept failing, retrying: ${err.message}`);
}

function serve(
  conn: Deno.Conn,
  options: Options,
  worker: number,
): Promise<void> {
  const connection = new Connection(conn, options, worker);
  const done = connection.serve().finally(() => open.delete(connection));
  open.set(connection, done);
  return done;
}

const READ_SIZE = 1024; // the tutorial's recv(1024)
const LF = 10, CR = 13;
const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();
// Invalid UTF-8 becomes U+FFFD, never a throw; a leading byte-order mark is
// kept (by default TextDecoder drops it), so valid text echoes byte for byte.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

export class Connection {
  readonly id = ++server.connections;
  readonly opened = Date.now();
  lastProgress = Date.now();
  messages = 0;
  #peer = "";
  #unfinished = EMPTY; // a line whose \n is to come: its first
  #unfinishedBytes = 0; // #unfinishedBytes bytes, with room to grow
  #sending: Promise<unknown> = Promise.resolve(); // the write in flight
  #endReason = "";
  #lineTooLong = false;
  #goodbye: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(
    readonly conn: Deno.Conn,
    readonly options: Options,
    readonly worker: number,
  ) {}

  async serve() {
    const { hostname, port } = this.conn.remoteAddr as Deno.NetAddr;
    this.#peer = `${hostname}:${port} worker ${this.worker}`;
    this.#log("opened");
    try {
      await this.#exchange();
    } catch (err) {
      this.#endReason ||= (err as Error).message;
    }
    await this.#goodbye;
    this.#close();
    server.messages += this.messages;
    const time = ((Date.now() - this.opened) / 1000).toFixed(1);
    const why = this.#endReason ? ` (${this.#endReason})` : "";
    this.#log(`closed after ${time} s, ${this.messages} messages${why}`);
  }

  // Each answer is written in full before the next read: a peer that does not
  // read stops us reading, so its data waits in the kernel, not in our memory.
  async #exchange() {
    const buffer = new Uint8Array(READ_SIZE);
    for (;;) {
      const n = await this.conn.read(buffer);
      if (n === null) break;
      if (this.#endReason) continue; // ending: input is dropped, see end()
      await this.#send(this.#answer(buffer.subarray(0, n)));
      if (this.#lineTooLong) {
        this.end(
          "line too long",
          `line longer than ${this.options.maxLine} bytes`,
        );
      }
    }
    if (this.#unfinishedBytes && !this.#endReason) { // no final \n
      await this.#send(
        this.#answerLine(this.#lineEndingWith(EMPTY)),
      );
    }
  }

  // Ends the connection from the server's side: after any reply in flight, a
  // last line says why, then FIN. Input is read and dropped until the peer
  // closes too, because closing with unread input makes the kernel reset the
  // connection, and the peer loses what it has not read yet. A connection that
  // makes no progress for a second is closed all the same.
  end(reason: string, why = reason) {
    if (this.#endReason) return;
    this.#endReason = reason;
    const closeWhenStuck = () => {
      if (Date.now() - this.lastProgress >= 1000) this.#close();
      else setTimeout(closeWhenStuck, 1000);
    };
    setTimeout(closeWhenStuck, 1000);
    const goodbye = encoder.encode(`ERROR ${why}\n`);
    this.#goodbye = this.#sending.then(() => this.#writeAll(goodbye))
      .then(() => this.conn.closeWrite()).catch(() => this.#close());
  }

  // Answers every complete line; keeps the rest until its \n arrives. Only
  // new bytes are scanned, and an unfinished line grows in a buffer that
  // doubles when full: a long line costs no more per byte than a short one,
  // in time or in memory, however the client cuts it.
  #answer(bytes: Uint8Array): string {
    if (this.options.framing === "raw") return this.#reply(bytes);
    let replies = "";
    let start = 0;
    for (let lf = bytes.indexOf(LF); lf !== -1; lf = bytes.indexOf(LF, start)) {
      replies += this.#answerLine(
        this.#lineEndingWith(bytes.subarray(start, lf)),
      );
      if (this.#lineTooLong) return replies;
      start = lf + 1;
    }
    this.#keep(bytes.subarray(start)); // a copy: the next read reuses `bytes`
    // Past --max-line, only a \r whose \n is still to come may wait.
    const endsInCR = this.#unfinished[this.#unfinishedBytes - 1] === CR;
    const allowed = this.options.maxLine + (endsInCR ? 1 : 0);
    if (this.#unfinishedBytes > allowed) this.#lineTooLong = true;
    return replies;
  }

  #keep(bytes: Uint8Array) {
    const needed = this.#unfinishedBytes + bytes.length;
    if (needed > this.#unfinished.length) {
      const size = Math.max(needed, 2 * this.#unfinished.length);
      const bigger = new Uint8Array(size);
      bigger.set(this.#unfinished.subarray(0, this.#unfinishedBytes));
      this.#unfinished = bigger;
    }
    this.#unfinished.set(bytes, this.#unfinishedBytes);
    this.#unfinishedBytes = needed;
  }

  // The line that `end` finishes: the bytes kept so far, then `end`.
  #lineEndingWith(end: Uint8Array): Uint8Array {
    if (!this.#unfinishedBytes) return end;
    this.#keep(end);
    const line = this.#unfinished.subarray(0, this.#unfinishedBytes);
    this.#unfinished = EMPTY; // the next line starts small again
    this.#unfinishedBytes = 0;
    return line;
  }

  #answerLine(line: Uint8Array): string {
    if (line.at(-1) === CR) line = line.subarray(0, -1);
    if (line.length <= this.options.maxLine) return this.#reply(line) + "\n";
    this.#lineTooLong = true;
    return "";
  }

  #reply(bytes: Uint8Array): string {
    this.messages++;
    this.lastProgress = Date.now(); // a whole message is progress, a byte not
    return stamp() + decoder.decode(bytes);
  }

  #send(text: string): Promise<unknown> {
    return this.#sending = this.#writeAll(encoder.encode(text));
  }

  // A write may take only part of the bytes; loop until all are written.
  async #writeAll(bytes: Uint8Array) {
    while (bytes.length) {
      bytes = bytes.subarray(await this.conn.write(bytes));
      this.lastProgress = Date.now();
    }
  }

  #close() {
    if (!this.#closed) this.conn.close();
    this.#closed = true;
  }

  #log(event: string) {
    if (!this.options.quiet) console.log(`#${this.id} ${this.#peer} ${event}`);
  }
}

// One timer checks all connections; progress itself only stamps a time.
function closeIdleConnections(idleTimeout: number) {
  if (idleTimeout === 0) return;
  setInterval(() => {
    const stale = Date.now() - idleTimeout * 1000;
    for (const connection of open.keys()) {
      if (connection.lastProgress < stale) connection.end("idle timeout");
    }
  }, 1000);
}

// ctime() counts whole seconds, so one formatting serves a second's replies.
let stampSecond = 0;
let stampText = "";
function stamp(): string {
  const second = Math.floor(Date.now() / 1000);
  if (second !== stampSecond) {
    stampSecond = second;
    stampText = `[${ctime(new Date(second * 1000))}] `;
  }
  return stampText;
}

// C ctime() in local time, as Python's time.ctime(): "Sun Nov  8 06:05:04 2026"
export function ctime(date: Date): string {
  const [weekday, month, day, year, time] = date.toString().split(" ");
  return `${weekday} ${month} ${day.replace(/^0/, " ")} ${time} ${year}`;
}

// First signal: stop accepting (clients in the backlog are dropped), give open
// connections --grace seconds, then end the rest. A second signal: exit now.
// One Ctrl+C can arrive twice at once: from the terminal, and forwarded by
// `deno task`; the same signal within 100 ms counts as the same press.
async function shutdown(
  signal: string,
  listener: Deno.Listener,
  grace: number,
) {
  if (server.stopSignal) {
    const samePress = signal === server.stopSignal &&
      Date.now() - server.stopAt < 100;
    if (!samePress) Deno.exit(130);
    return;
  }
  server.stopSignal = signal;
  server.stopAt = Date.now();
  listener.close();
  console.log(`stopping: ${open.size} open, waiting up to ${grace} s`);
  const graceOver = new Promise((over) => setTimeout(over, grace * 1000));
  await Promise.race([Promise.all(open.values()), graceOver]);
  for (const connection of open.keys()) connection.end("server shutting down");
  await Promise.all(open.values());
  const { connections, messages } = server;
  console.log(`stopped: ${connections} connections, ${messages} messages`);
  Deno.exit(0);
}

function fail(message: string, exitCode: number): never {
  console.error(`error: ${message}`);
  if (exitCode === 2) console.error("run with --help for usage");
  Deno.exit(exitCode);
}

function listen({ host, port, backlog }: Options): Deno.Listener {
  try {
    return Deno.listen({ hostname: host, port, tcpBacklog: backlog });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      fail(`${host}:${port} is already in use`, 1);
    }
    fail(`cannot listen on ${host}:${port}: ${(err as Error).message}`, 1);
  }
}

if (import.meta.main) {
  let options: Options;
  try {
    options = parseOptions(Deno.args);
  } catch (err) {
    fail((err as Error).message.split(/\.\s/)[0], 2); // parseArgs says more
  }
  if (options.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const listener = listen(options);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(
      signal,
      () => shutdown(signal, listener, options.grace),
    );
  }
  closeIdleConnections(options.idleTimeout);
  const { port } = listener.addr as Deno.NetAddr;
  console.log(`${MODE} listening on ${options.host}:${port}`);
  await acceptLoop(listener, options);
}
