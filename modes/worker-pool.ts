/**
 * Worker-pool server: N Web Workers (real threads, one per CPU core by
 * default), each with its own event loop and its own listener on the same
 * port. SO_REUSEPORT lets them share it: the kernel spreads new connections
 * over the listeners, and each worker serves its own connections, a task per
 * connection, as thread-per-connection does. This is how an event-loop
 * server puts every core to work.
 *
 * Run:   deno task workers   (deno run --allow-net --allow-read --unstable-net
 *        modes/worker-pool.ts). Linux. Deno's reusePort is unstable, hence
 *        --unstable-net; --allow-read lets the workers load this file.
 * Watch: run `deno task client` in a few terminals: all are answered at once,
 *        and the log names the worker that serves each.
 */
import { parseArgs } from "node:util";
import { isMainThread } from "node:worker_threads";

const MODE = "worker-pool";
const USAGE = `usage: deno run --allow-net --allow-read --unstable-net
  modes/${MODE}.ts [--host 127.0.0.1]
  [--port 8080] [--backlog 511] [--framing line|raw] [--max-line 65536]
  [--idle-timeout 300] [--grace 5] [--workers N] [--quiet] [--help]`;

type Options = ReturnType<typeof parseOptions>;
const defaultWorkers = Math.min(navigator.hardwareConcurrency, 256); // a core each

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
      workers: { type: "string", default: `${defaultWorkers}` },
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
    workers: int("workers", flag.workers, 1, 256),
  };
}

function int(name: string, text: string, min = 1, max = 1e6) {
  if (/^\d+$/.test(text) && +text >= min && +text <= max) return +text;
  throw new Error(`--${name} must be a whole number from ${min} to ${max}`);
}

// ---- The lesson, in the main thread: start N workers on one port. They
// report when they listen, and stop together (see stopWorkers).
function startWorkers(options: Options, port: number): Promise<Worker[]> {
  const connectionCounter = new SharedArrayBuffer(4); // one numbering for all
  const acceptTrouble = new SharedArrayBuffer(8); // one log line for all
  return Promise.all(Array.from({ length: options.workers }, (_, i) => {
    const worker = new Worker(new URL("?worker", import.meta.url), {
      type: "module",
    });
    const shared = { connectionCounter, acceptTrouble };
    worker.postMessage({ options, port, id: i + 1, ...shared });
    worker.onerror = (event) => fail(`worker ${i + 1}: ${event.message}`, 1);
    return new Promise<Worker>((ready) => {
      worker.onmessage = ({ data }) =>
        data.failed ? fail(data.failed, 1) : ready(worker);
    });
  }));
}

// ---- And in each worker: its own listener on the shared port (the kernel
// picks which worker gets a connection), and a task per connection.
async function acceptLoop(listener: Deno.Listener, options: Options) {
  for (;;) {
    const conn = await accept(listener);
    if (!conn) return;
    serve(conn, options);
  }
}

const server = { connections: 0, messages: 0, stopping: false };
const worker = {
  id: 0,
  connectionCounter: new Int32Array(1),
  acceptTroubleLoggedAt: new BigInt64Array(1), // shared: when any worker did
};
const open = new Map<Connection, Promise<void>>(); // each with its end

// The next connection, or null once the server is stopping. A client that
// gave up before we took it concerns only that client: accept again at once.
// Running out of descriptors or memory concerns everyone: retrying at once
// would spin, so wait a little, and say so once per burst, even with --quiet.
async function accept(listener: Deno.Listener): Promise<Deno.Conn | null> {
  for (;;) {
    try {
      const conn = await listener.accept();
      if (!server.stopping) return conn;
      conn.close(); // taken as the listener closed: dropped, as the backlog is
      return null;
    } catch (err) {
      if (server.stopping) return null;
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
  if (claimTroubleLog()) {
    console.log(`accept failing, retrying: ${err.message}`);
  }
}

// True for the one worker that may log accept trouble now: at most one line
// per 10 s for all workers together, since they share the descriptors.
function claimTroubleLog(): boolean {
  const loggedAt = worker.acceptTroubleLoggedAt;
  const last = Atomics.load(loggedAt, 0);
  const now = BigInt(Date.now());
  if (now - last <= 10_000n) return false;
  return Atomics.compareExchange(loggedAt, 0, last, now) === last;
}

function serve(conn: Deno.Conn, options: Options): Promise<void> {
  const connection = new Connection(conn, options);
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
  readonly id = Atomics.add(worker.connectionCounter, 0, 1) + 1;
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

  constructor(readonly conn: Deno.Conn, readonly options: Options) {
    server.connections++;
  }

  async serve() {
    const { hostname, port } = this.conn.remoteAddr as Deno.NetAddr;
    this.#peer = `${hostname}:${port} worker ${worker.id}`;
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

// First signal: every worker stops accepting, gives its connections --grace
// seconds, ends the rest and reports; then one summary for all. A second
// signal: exit now. One Ctrl+C can arrive twice at once: from the terminal,
// and forwarded by `deno task`; the same signal within 100 ms is one press.
const stop = { signal: "", at: 0 };
async function stopWorkers(signal: string, workers: Worker[], grace: number) {
  if (stop.signal) {
    const samePress = signal === stop.signal && Date.now() - stop.at < 100;
    if (!samePress) Deno.exit(130);
    return;
  }
  Object.assign(stop, { signal, at: Date.now() });
  let notAccepting = 0; // "stopping" once no worker accepts any more
  const reports = await Promise.all(
    workers.map((worker) =>
      new Promise<typeof server>((stopped) => {
        worker.onmessage = ({ data }) => {
          if (!data.closedListener) return stopped(data);
          if (++notAccepting < workers.length) return;
          console.log(
            `stopping: ${workers.length} workers, waiting up to ${grace} s`,
          );
        };
        worker.postMessage("stop");
      })
    ),
  );
  const connections = reports.reduce((sum, r) => sum + r.connections, 0);
  const messages = reports.reduce((sum, r) => sum + r.messages, 0);
  console.log(`stopped: ${connections} connections, ${messages} messages`);
  Deno.exit(0);
}

// In a worker, on "stop": as the other modes do on a signal.
async function stopServing(listener: Deno.Listener, grace: number) {
  server.stopping = true;
  listener.close();
  mainThread.postMessage({ closedListener: true });
  const graceOver = new Promise((over) => setTimeout(over, grace * 1000));
  await Promise.race([Promise.all(open.values()), graceOver]);
  for (const connection of open.keys()) connection.end("server shutting down");
  await Promise.all(open.values());
  mainThread.postMessage(server);
  mainThread.close();
}

function fail(message: string, exitCode: number): never {
  console.error(`error: ${message}`);
  if (exitCode === 2) console.error("run with --help for usage");
  Deno.exit(exitCode);
}

// Deno offers reusePort only with --unstable-net, and without it exits at
// once rather than throwing; listenDatagram comes with the same flag.
function checkReusePort() {
  if (
    typeof (Deno as { listenDatagram?: unknown }).listenDatagram === "function"
  ) return;
  fail(
    "worker-pool shares its port through reusePort, which needs Deno's " +
      "--unstable-net (try: deno task workers)",
    1,
  );
}

// A plain listener, opened and closed at once: it fails if anyone holds the
// port (even with reusePort, which would otherwise share it), and with
// --port 0 it picks the port that the workers then share.
function freePort({ host, port }: Options): number {
  try {
    const probe = Deno.listen({ hostname: host, port });
    probe.close();
    return (probe.addr as Deno.NetAddr).port;
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      fail(`${host}:${port} is already in use`, 1);
    }
    fail(`cannot listen on ${host}:${port}: ${(err as Error).message}`, 1);
  }
}

// reusePort lets any process of the same user join the workers' port, so two
// instances started together could both pass freePort's probe, then share
// the port and split the clients. A UDP socket bound to the same address and
// port, without reusePort, is a lock the kernel gives to one process only:
// the second instance fails here, however close together they start. It is
// held until the process exits. (Bun's UDP socket comes as a promise.)
// With --port 0, a UDP port taken by another program reads as in use.
async function lockPort({ host }: Options, port: number) {
  try {
    await Deno.listenDatagram({ transport: "udp", hostname: host, port });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      fail(`${host}:${port} is already in use`, 1);
    }
    fail(`cannot lock ${host}:${port}: ${(err as Error).message}`, 1);
  }
}

function listen({ host, backlog }: Options, port: number): Deno.Listener {
  const options = {
    hostname: host,
    port,
    tcpBacklog: backlog,
    reusePort: true,
  };
  return Deno.listen(options as Deno.TcpListenOptions);
}

// In a worker, the channel to the main thread (typed here by hand: the same
// file also runs as the main thread, where `self` is no worker).
const mainThread = self as unknown as {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent) => void) | null;
  close(): void;
};

// This file is also the workers' script, loaded as "worker-pool.ts?worker"
// (Bun drops the query, but tells a worker by isMainThread).
const isWorker = !isMainThread || new URL(import.meta.url).search === "?worker";

if (isWorker) {
  mainThread.onmessage = ({ data }) => {
    const { options, port, id, connectionCounter, acceptTrouble } = data;
    Object.assign(worker, {
      id,
      connectionCounter: new Int32Array(connectionCounter),
      acceptTroubleLoggedAt: new BigInt64Array(acceptTrouble),
    });
    let listener: Deno.Listener;
    try {
      listener = listen(options, port);
    } catch (err) {
      mainThread.postMessage({
        failed: `worker ${id}: ${(err as Error).message}`,
      });
      return;
    }
    mainThread.onmessage = () => stopServing(listener, options.grace);
    closeIdleConnections(options.idleTimeout);
    mainThread.postMessage({ listening: true });
    acceptLoop(listener, options);
  };
} else if (import.meta.main) {
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
  checkReusePort();
  // A given port is locked before the probe, so that two instances cannot
  // probe each other's workers; a port picked by the probe, after it.
  if (options.port) await lockPort(options, options.port);
  const port = freePort(options);
  if (!options.port) await lockPort(options, port);
  const workers = await startWorkers(options, port);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(
      signal,
      () => stopWorkers(signal, workers, options.grace),
    );
  }
  console.log(`${MODE} listening on ${options.host}:${port}`);
}
