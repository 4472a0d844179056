/**
 * Benchmark: starts each mode on a free port and measures what its
 * concurrency model buys and costs. All traffic stays on 127.0.0.1.
 *
 * Run:   deno run -A bench/bench.ts              (or: deno task bench)
 *        -A because Deno lets a script read /proc (the server's memory and
 *        CPU) only with --allow-all. Without /proc it needs just
 *        --allow-net=127.0.0.1 --allow-run --allow-write --allow-read, and
 *        says what it skipped.
 * See:   a progress line on stderr, then markdown tables on stdout, in
 *        about three minutes:
 *        (a) hold: 20 clients connect at once, each keeps its connection
 *            200 ms after its reply. Serial answers them in turn (about
 *            20 x 200 ms), fixed-pool 10 at a time (about 2 x 200 ms),
 *            a task per connection all at once (about 200 ms).
 *        (b) ping-pong at 1, 16 and 256 connections: replies/s, p50, p99,
 *            and whether the client, not the server, set the pace.
 *        (c) memory per idle connection (Linux).
 *        (d) framing: the server's CPU per MiB of input, with 1 KiB, 64 KiB
 *            and 1 MB lines (Linux): about the same per MiB, or the line
 *            parser rescans what it has seen.
 *        (e) connect storm: 1,024 clients connect at once; how many had a
 *            reply, and how soon, beside the smallest Deno server.
 *        With --svg FILE, a chart of (a) and (b).
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { joinNegativeValues } from "../client/client.ts";
import {
  openFileLimit,
  readLine,
  storm,
  type StormResult,
  writeAll,
  WrongReply,
} from "./storm.ts";

const MODES = [
  "serial",
  "fixed-pool",
  "thread-per-connection",
  "worker-pool",
] as const;
type Mode = typeof MODES[number];

const CORES = navigator.hardwareConcurrency;
const USAGE = `usage: deno task bench [flags]
  --modes LIST       modes to measure (${MODES.join(",")})
  --conns LIST       connections for each ping-pong row (1,16,256)
  --seconds S        seconds per ping-pong row (3)
  --idle N           idle connections for the memory table; 0 skips it (4000)
  --framing-mib N    MiB per line length in the framing table; 0 skips (16)
  --storm N          clients that connect at once in the storm table; 0
                     skips it (1024)
  --workers N        worker-pool's --workers (${CORES}: one per core)
  --svg FILE         also draw the hold and ping-pong tables as a chart (none)
  --timeline FILE    also draw who waited in the hold test, a lane a client
                     (none)
  --help             this text`;

type Options = ReturnType<typeof parseOptions>;

function parseOptions(args: string[]) {
  const { values: flag } = parseArgs({
    args,
    options: {
      modes: { type: "string", default: MODES.join(",") },
      conns: { type: "string", default: "1,16,256" },
      seconds: { type: "string", default: "3" },
      idle: { type: "string", default: "4000" },
      "framing-mib": { type: "string", default: "16" },
      storm: { type: "string", default: "1024" },
      workers: { type: "string", default: `${navigator.hardwareConcurrency}` },
      svg: { type: "string" },
      timeline: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  const modes = flag.modes.split(",").map((name) => {
    if (MODES.includes(name as Mode)) return name as Mode;
    throw new Error(`--modes takes ${MODES.join(", ")}, not "${name}"`);
  });
  return {
    ...flag,
    modes: [...new Set(modes)],
    conns: flag.conns.split(",").map((text) => int("conns", text, 1, 10000)),
    seconds: int("seconds", flag.seconds, 1, 600),
    idle: int("idle", flag.idle, 0, 100000), // 0 skips the memory test
    framingMiB: int("framing-mib", flag["framing-mib"], 0, 1024), // 0 skips
    storm: int("storm", flag.storm, 0, 100000), // 0 skips
    workers: int("workers", flag.workers, 1, 256),
  };
}

function int(name: string, text: string, min: number, max: number) {
  if (/^\d+$/.test(text) && +text >= min && +text <= max) return +text;
  throw new Error(`--${name} must be a whole number from ${min} to ${max}`);
}

const HOST = "127.0.0.1";
const HOLD_CLIENTS = 20;
const HOLD_MS = 200;
const HOLD_POOL = 10; // the tutorial's pool
const CONNECT_MS = 3000; // past a full backlog, Linux lets a handshake hang
const DRAIN_MS = 300; // for the last replies of a ping-pong row
const SETTLE_MS = 500; // before reading the server's memory
const CLIENT_BOUND = 90; // % of one core at which the bench is the limit
const LINE = 16; // bytes per request: 15 characters and "\n"

// ---- Servers: child processes of this Deno, stopped by PID, always.

// worker-pool's workers load their own file and share a port through
// Deno's unstable reusePort.
const DENO_FLAGS: Partial<Record<Served, string[]>> = {
  "worker-pool": ["--allow-read", "--unstable-net"],
};

const running = new Set<Server<Served>>();

// The storm table also runs bench/storm.ts's small server: the least a
// Deno server can do, under the same storm.
const SMALL = "small server" as const;
type Served = Mode | typeof SMALL;

class Server<M extends Served = Mode> {
  port = 0;
  #exited = false;
  readonly #status: Promise<Deno.CommandStatus>;

  constructor(readonly mode: M, readonly child: Deno.ChildProcess) {
    this.#status = child.status.finally(() => this.#exited = true);
  }

  static async start<M extends Served>(
    mode: M,
    args: string[],
  ): Promise<Server<M>> {
    const script = (path: string) => new URL(path, import.meta.url).href;
    const command = mode === SMALL ? [script("./storm.ts"), "--serve"] : [
      ...[script(`../modes/${mode}.ts`), "--port", "0", "--quiet"],
      ...(mode === "worker-pool" ? ["--workers", `${workers.count}`] : []),
      ...["--grace", "0", ...args], // nothing to wait for when we stop it
    ];
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", `--allow-net=${HOST}`, ...DENO_FLAGS[mode] ?? []],
        ...command,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const server = new Server(mode, child);
    running.add(server);
    const line = await firstLine(child, 15_000);
    server.port = Number(/ listening on .*:(\d+)$/.exec(line)?.[1]);
    if (!server.port) {
      await server.stop();
      throw new Error(`${mode} did not start: ${line || "no output"}`);
    }
    return server;
  }

  // Resident memory in KiB, or null without /proc.
  rssKiB(): number | null {
    const status = readProc(`/proc/${this.child.pid}/status`);
    const kib = status && /VmRSS:\s+(\d+)/.exec(status)?.[1];
    return kib ? Number(kib) : null;
  }

  // CPU seconds used so far, all threads, or null without /proc.
  cpuSeconds(): number | null {
    const stat = readProc(`/proc/${this.child.pid}/stat`);
    if (!stat) return null;
    // After "pid (name) ": utime and stime are fields 12 and 13, counted
    // in 1/100 s (USER_HZ, 100 on Linux as good as everywhere).
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  }

  // SIGTERM, and SIGKILL if it is not gone within two seconds.
  async stop(): Promise<void> {
    running.delete(this);
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      if (this.#exited) break;
      try {
        Deno.kill(this.child.pid, signal);
      } catch { /* gone already */ }
      await Promise.race([this.#status, sleep(2000)]);
    }
    await this.#status;
  }
}

// The first line of the child's stdout. The rest of its output is drained,
// so that it can never block on a full pipe.
async function firstLine(child: Deno.ChildProcess, ms: number) {
  const reader = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  const timeout = sleep(ms).then(() => ({ done: true, value: "" }));
  let text = "";
  while (!text.includes("\n")) {
    const { done, value } = await Promise.race([reader.read(), timeout]);
    if (done) break;
    text += value;
  }
  drain(reader);
  drain(child.stderr.getReader());
  return text.split("\n")[0];
}

async function drain(reader: ReadableStreamDefaultReader<unknown>) {
  try {
    while (!(await reader.read()).done);
  } catch { /* the process is gone */ }
}

async function withServer<M extends Served, T>(
  mode: M,
  args: string[],
  body: (server: Server<M>) => Promise<T>,
): Promise<T> {
  const server = await Server.start(mode, args);
  try {
    return await body(server);
  } finally {
    await server.stop();
  }
}

// ---- Connections: Deno.connect, reads into a small reused buffer, one
// awaited write per request. Web streams would cost the client far more CPU.

const encoder = new TextEncoder();

// Opens up to `count` connections within CONNECT_MS, 128 handshakes at a
// time; past a full backlog, a handshake hangs rather than fails.
async function connectMany(port: number, count: number) {
  const signal = AbortSignal.timeout(CONNECT_MS);
  const conns: Deno.Conn[] = [];
  let started = 0;
  let error = "";
  async function lane() {
    while (started < count && !signal.aborted) {
      started++;
      try {
        conns.push(await Deno.connect({ hostname: HOST, port, signal }));
      } catch (err) {
        if (!signal.aborted) error ||= (err as Error).message;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(count, 128) }, lane));
  return { conns, error };
}

function closeAll(conns: Iterable<Deno.Conn>) {
  for (const conn of conns) {
    try {
      conn.close();
    } catch { /* closed already */ }
  }
}

// Request `seq` of connection `id`, e.g. "00007 000000042\n": every request
// differs, so a reply to the wrong one is caught.
function request(id: number, seq: number, into: Uint8Array) {
  const digits = (n: number, width: number) =>
    String(n % 10 ** width).padStart(width, "0");
  encoder.encodeInto(`${digits(id, 5)} ${digits(seq, 9)}\n`, into);
}

// The reply must be "[<time>] <request>".
function isEcho(reply: Uint8Array, length: number, sent: Uint8Array) {
  const at = length - sent.length;
  const framed = reply[0] === 0x5b && reply[at - 2] === 0x5d && // "[", "]"
    reply[at - 1] === 0x20;
  return framed && sent.every((byte, i) => reply[at + i] === byte);
}

// ---- (a) Hold: every client connects at once and sends one line; after
// its reply it keeps the connection HOLD_MS. Who waits for whom?

type HoldRow = {
  server: string;
  mode: Mode;
  replied: number;
  p50: number;
  max: number;
  total: number;
  lanes: Lane[];
};

// One client, in ms from the start of the test: when its connect completed,
// when its reply came (null: never), and when it closed.
export type Lane = {
  connected: number;
  replied: number | null;
  closed: number;
};

async function hold(server: Server): Promise<HoldRow> {
  const open = new Set<Deno.Conn>();
  const start = performance.now();
  // Every wait ends by then: connects are aborted, connections closed.
  const signal = AbortSignal.timeout(HOLD_CLIENTS * HOLD_MS * 2 + 10_000);
  signal.onabort = () => closeAll(open);
  const target = { hostname: HOST, port: server.port, signal };
  const lanes = await Promise.all(
    Array.from(
      { length: HOLD_CLIENTS },
      (_, id) => holdOne(id, target, open, start),
    ),
  );
  signal.onabort = null;
  const replied = lanes.flatMap((lane) => lane.replied ?? [])
    .sort((a, b) => a - b);
  return {
    server: label(server.mode, HOLD_POOL),
    mode: server.mode,
    replied: replied.length,
    p50: percentile(replied, 0.5),
    max: replied.at(-1) ?? NaN,
    total: performance.now() - start,
    lanes,
  };
}

// One client: connect, send a line, wait for the reply, hold HOLD_MS.
async function holdOne(
  id: number,
  target: Deno.ConnectOptions,
  open: Set<Deno.Conn>,
  start: number,
): Promise<Lane> {
  const since = () => performance.now() - start;
  const lane: Lane = { connected: NaN, replied: null, closed: NaN };
  let conn: Deno.Conn | undefined;
  try {
    conn = await Deno.connect(target);
    lane.connected = since();
    open.add(conn);
    const line = new Uint8Array(LINE);
    request(id, 0, line);
    await writeAll(conn, line);
    await readLine(conn, new Uint8Array(256));
    lane.replied = since();
    await sleep(HOLD_MS);
  } catch {
    /* no reply: the lane shows it */
  } finally {
    if (conn) {
      closeAll([conn]);
      open.delete(conn);
    }
    lane.closed = since();
  }
  return lane;
}

// ---- (b) Ping-pong: each connection sends a line, waits for the whole
// reply, and sends the next, for --seconds.

type PingRow = {
  server: string;
  mode: Mode;
  conns: number;
  connected: number;
  served: number;
  rate: number;
  p50: number;
  p99: number;
  wrong: number;
  failed: number;
  clientCpu: number;
  serverCpu: number | null;
  note: string;
};

type Tally = { latencies: number[]; served: number; wrong: number };

async function pingPong(server: Server, conns: number, seconds: number) {
  const { conns: open, error } = await connectMany(server.port, conns);
  const tally: Tally = { latencies: [], served: 0, wrong: 0 };
  const before = cpuNow(server);
  const until = performance.now() + seconds * 1000;
  const loops = open.map((conn, id) => pingPongOne(conn, id, until, tally));
  await sleep(seconds * 1000);
  const after = cpuNow(server);
  // A connection still waiting for a reply after DRAIN_MS was never served
  // (serial): closing it ends its wait.
  await Promise.race([Promise.all(loops), sleep(DRAIN_MS)]);
  closeAll(open);
  const failed = (await Promise.all(loops)).filter((ok) => !ok).length;
  const latencies = tally.latencies.sort((a, b) => a - b);
  return {
    conns,
    connected: open.length,
    served: tally.served,
    rate: latencies.length / seconds,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    wrong: tally.wrong,
    failed,
    ...cpuPercent(before, after),
    note: error && `connect failed: ${error}`,
  };
}

// Counts the replies that arrive before `until`. False if the connection
// failed before then (closing it afterwards is ours, and fine).
async function pingPongOne(
  conn: Deno.Conn,
  id: number,
  until: number,
  tally: Tally,
) {
  const line = new Uint8Array(LINE);
  const reply = new Uint8Array(256); // reused: no garbage per message
  try {
    for (let seq = 0; performance.now() < until; seq++) {
      request(id, seq, line);
      const sent = performance.now();
      await writeAll(conn, line);
      const length = await readLine(conn, reply);
      const now = performance.now();
      if (now >= until) break;
      if (!isEcho(reply, length, line)) tally.wrong++;
      if (seq === 0) tally.served++;
      tally.latencies.push(now - sent);
    }
    return true;
  } catch (err) {
    if (err instanceof WrongReply) tally.wrong++;
    return performance.now() >= until;
  }
}

type Cpu = { at: number; client: number; server: number | null };

function cpuNow(server: Server): Cpu {
  const { user, system } = process.cpuUsage(); // microseconds
  const client = (user + system) / 1e6;
  return { at: performance.now(), client, server: server.cpuSeconds() };
}

// CPU use between two readings, as % of one core.
function cpuPercent(before: Cpu, after: Cpu) {
  const seconds = (after.at - before.at) / 1000;
  const percent = (from: number | null, to: number | null) =>
    from === null || to === null ? null : 100 * (to - from) / seconds;
  return {
    clientCpu: percent(before.client, after.client)!,
    serverCpu: percent(before.server, after.server),
  };
}

// ---- (c) Memory: the server's resident memory as --idle connections
// open, a quarter at a time, and then sit idle.

type IdleRow = {
  server: string;
  mode: Mode;
  count: number;
  connected: number;
  served: number;
  perConn: number; // bytes: the median growth per connection of 3 quarters
  before: number; // KiB, after the first quarter
  after: number;
  note: string;
};

// Resident memory grows in steps (V8 doubles its young generation, tables
// double): a step inside one measured stretch would be charged to its
// connections. So the connections open in four quarters, memory is read
// after each, and the cost of a connection is the median of the three
// growths from one quarter to the next, each divided by the connections
// it added. The first quarter pays once for what does not grow with
// connections.
async function idle(server: Server, count: number) {
  const opened: Deno.Conn[] = [];
  const readings: number[] = [];
  const perConn: number[] = [];
  let served = 0;
  let error = "";
  try {
    for (let quarter = 0; quarter < 4; quarter++) {
      const step = Math.floor((count + quarter) / 4);
      const added = await openIdle(server, step, opened);
      readings.push(server.rssKiB() ?? NaN);
      served += added.served;
      error ||= added.error;
      if (added.served < step) break; // the rest would wait in the backlog
      if (quarter && added.served >= 250) {
        perConn.push(
          (readings[quarter] - readings[quarter - 1]) * 1024 / added.served,
        );
      }
    }
    return {
      connected: opened.length,
      served,
      before: readings[0],
      after: readings.at(-1)!,
      perConn: perConn.length === 3 ? perConn.sort((a, b) => a - b)[1] : NaN,
      note: error && `connect failed: ${error}`,
    };
  } finally {
    closeAll(opened);
  }
}

// Opens `count` connections in 128 lanes; a lane sends a line on its
// connection and waits for the reply before it opens the next, so the server
// takes connections one by one, not a burst of thousands of lines at once,
// whose garbage would be counted too. A lane whose reply does not come (the
// connection waits in the backlog) stops; all stop after CONNECT_MS.
async function openIdle(server: Server, count: number, opened: Deno.Conn[]) {
  const signal = AbortSignal.timeout(CONNECT_MS);
  const timedOut = new Promise<null>((resolve) =>
    signal.addEventListener("abort", () => resolve(null), { once: true })
  );
  let started = 0;
  let served = 0;
  let error = "";
  async function lane() {
    while (started < count && !signal.aborted) {
      const line = new Uint8Array(LINE);
      request(started++, 0, line);
      try {
        const conn = await Deno.connect({
          hostname: HOST,
          port: server.port,
          signal,
        });
        opened.push(conn);
        await writeAll(conn, line);
        const reply = conn.read(new Uint8Array(256)).catch(() => null);
        if (!await Promise.race([reply, timedOut])) return;
        served++;
      } catch (err) {
        if (!signal.aborted) error ||= (err as Error).message;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(count, 128) }, lane));
  await sleep(SETTLE_MS);
  return { served, error };
}

// ---- (d) Framing: one connection sends --framing-mib MiB of lines of each
// length and reads every reply; the server's CPU time per MiB tells whether
// its line parser does work per byte (the same at every length) or rescans
// an unfinished line on every read (more per byte as lines grow).

const LINE_LENGTHS = [1024, 65536, 1_000_000]; // bytes, with the "\n"
const MiB = 1024 * 1024;

type FramingRow = { server: string; cpuMsPerMiB: (number | null)[] };

async function framingRow(server: Server, mib: number): Promise<FramingRow> {
  const cpuMsPerMiB = [];
  for (const length of LINE_LENGTHS) {
    const skip = mib === 0 || server.cpuSeconds() === null;
    cpuMsPerMiB.push(skip ? null : await framingCost(server, mib, length));
  }
  return { server: label(server.mode, HOLD_POOL), cpuMsPerMiB };
}

async function framingCost(server: Server, mib: number, length: number) {
  const line = new Uint8Array(length).fill(0x78); // "x"
  line[length - 1] = 10;
  const lines = Math.max(1, Math.round(mib * MiB / length));
  const conn = await Deno.connect({ hostname: HOST, port: server.port });
  try {
    const before = server.cpuSeconds()!;
    const replies = countReplies(conn, lines);
    for (let i = 0; i < lines; i++) await writeAll(conn, line);
    await replies;
    const seconds = server.cpuSeconds()! - before;
    return 1000 * seconds / (lines * length / MiB);
  } finally {
    conn.close();
  }
}

// Reads until `lines` replies have ended.
async function countReplies(conn: Deno.Conn, lines: number) {
  const buffer = new Uint8Array(64 * 1024);
  while (lines > 0) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("server closed the connection");
    for (let i = 0; i < n; i++) if (buffer[i] === 10) lines--;
  }
}

// ---- The run: for each mode, a fresh server for each table.

type Results = {
  hold: HoldRow[];
  ping: PingRow[];
  idle: IdleRow[];
  framing: FramingRow[];
  storm: StormRow[];
};

async function run(options: Options): Promise<Results> {
  const results: Results = {
    hold: [],
    ping: [],
    idle: [],
    framing: [],
    storm: [],
  };
  const steps = options.modes.length * (3 + options.conns.length) +
    (options.storm ? options.modes.length + 1 : 0);
  let step = 0;
  const show = (mode: Served, what: string) =>
    progress(`[${++step}/${steps}] ${mode}: ${what}`);
  const pool = Math.max(...options.conns);
  for (const mode of options.modes) {
    await withServer(mode, poolArgs(mode, HOLD_POOL), async (server) => {
      show(mode, `hold, ${HOLD_CLIENTS} clients`);
      results.hold.push(await hold(server));
    });
    // A fresh server: what the hold test left in its heap is not counted.
    const idlePool = options.idle || HOLD_POOL;
    await withServer(mode, poolArgs(mode, idlePool), async (server) => {
      show(mode, `memory, ${plural(options.idle, "idle connection")}`);
      results.idle.push(await idleRow(server, options));
    });
    await withServer(mode, poolArgs(mode, pool), async (server) => {
      for (const conns of options.conns) {
        show(mode, `ping-pong, ${plural(conns, "connection")}`);
        results.ping.push(await pingRow(server, conns, options));
      }
    });
    const longLines = ["--max-line", `${Math.max(...LINE_LENGTHS)}`];
    await withServer(mode, longLines, async (server) => {
      show(mode, `framing, ${options.framingMiB} MiB per line length`);
      results.framing.push(await framingRow(server, options.framingMiB));
    });
  }
  if (options.storm) {
    for (const mode of [...options.modes, SMALL] as Served[]) {
      await withServer(mode, poolArgs(mode, options.storm), async (server) => {
        show(mode, `storm, ${plural(options.storm, "client")} at once`);
        results.storm.push(await stormRow(server, options));
      });
    }
  }
  progress("");
  return results;
}

// For ping-pong, fixed-pool gets a worker for every connection.
function poolArgs(mode: Served, pool: number) {
  return mode === "fixed-pool" ? ["--pool-size", `${pool}`] : [];
}

function label(mode: Served, pool: number) {
  if (mode === "fixed-pool") return `fixed-pool --pool-size ${pool}`;
  if (mode === "worker-pool") return `worker-pool --workers ${workers.count}`;
  return mode;
}

// worker-pool's --workers, for every server of the run (set from the flag).
const workers = { count: navigator.hardwareConcurrency };

async function pingRow(server: Server, conns: number, options: Options) {
  const pool = Math.max(...options.conns);
  const row = { server: label(server.mode, pool), mode: server.mode, conns };
  const tooMany = fileLimitNote(conns);
  if (tooMany) return { ...row, ...NO_PING, note: tooMany };
  return { ...row, ...await pingPong(server, conns, options.seconds) };
}

const NO_PING = {
  connected: 0,
  served: 0,
  rate: NaN,
  p50: NaN,
  p99: NaN,
  wrong: 0,
  failed: 0,
  clientCpu: NaN,
  serverCpu: null,
};

async function idleRow(server: Server, options: Options): Promise<IdleRow> {
  const count = options.idle;
  const row = {
    server: label(server.mode, count),
    mode: server.mode,
    count,
    connected: 0,
    served: 0,
    perConn: NaN,
    before: NaN,
    after: NaN,
  };
  const skip = count === 0
    ? "skipped (--idle 0)"
    : fileLimitNote(count) ?? (server.rssKiB() === null && procNote());
  if (skip) return { ...row, note: skip };
  return { ...row, ...await idle(server, count) };
}

// ---- (e) Connect storm: --storm clients connect at once and ping-pong
// for --seconds (bench/storm.ts, its clients spread over threads).

type StormRow = { server: string; note: string } & Partial<StormResult>;

async function stormRow(
  server: Server<Served>,
  options: Options,
): Promise<StormRow> {
  const row = { server: label(server.mode, options.storm) };
  const tooMany = fileLimitNote(options.storm);
  if (tooMany) return { ...row, note: tooMany };
  try {
    const result = await storm(server.port, options.storm, options.seconds);
    return { ...row, ...result, note: "" };
  } catch (err) {
    return { ...row, note: `skipped: ${(err as Error).message}` };
  }
}

// Both the bench and the server need a file descriptor per connection, and
// Deno cannot raise the limit: the shell must (`ulimit -n`) before the run.
function fileLimitNote(conns: number): string | null {
  const limit = openFileLimit();
  const needed = conns + 64;
  if (!limit || limit >= needed) return null;
  const enough = 2 ** Math.ceil(Math.log2(needed));
  return `skipped: needs about ${needed} open files, the limit is ` +
    `${limit}; run \`ulimit -n ${enough}\` first`;
}

// ---- Output

function progress(text: string) {
  const line = Deno.stderr.isTerminal()
    ? `\r\x1b[K${text}`
    : text && text + "\n";
  Deno.stderr.writeSync(encoder.encode(line));
}

function report(results: Results, options: Options): string {
  const cores = navigator.hardwareConcurrency;
  return [
    `Deno ${Deno.version.deno} on ${Deno.build.os}, ${cores} CPU cores, ` +
    `shared by the bench and the server.`,
    "",
    ...holdTable(results.hold),
    ...pingTable(results.ping, options),
    ...idleTable(results.idle, options),
    ...framingTable(results.framing, options),
    ...stormTable(results.storm, options),
  ].join("\n");
}

function holdTable(rows: HoldRow[]) {
  return [
    `## (a) Hold: ${HOLD_CLIENTS} clients at once, each keeps its ` +
    `connection ${HOLD_MS} ms after its reply`,
    "",
    ...table(
      ["server", "replied", "reply p50", "reply max", "total", "expected"],
      rows.map((r) => [
        r.server,
        `${r.replied} of ${HOLD_CLIENTS}`,
        ms(r.p50),
        ms(r.max),
        ms(r.total),
        `about ${rounds(r.mode)} x ${HOLD_MS} ms`,
      ]),
    ),
    "",
    ...paragraph(
      "Time to reply counts from the start of the connect. Serial answers " +
        "one client at a time, so each waits while everyone before it holds " +
        `its ${HOLD_MS} ms; the pool answers ${HOLD_POOL} at a time; a task ` +
        "per connection answers all of them at once.",
    ),
    "",
  ];
}

// How many turns of HOLD_MS the clients need, as the mode serves them.
function rounds(mode: Mode) {
  const atOnce = { serial: 1, "fixed-pool": HOLD_POOL }[mode as string];
  return Math.ceil(HOLD_CLIENTS / (atOnce ?? HOLD_CLIENTS));
}

function pingTable(rows: PingRow[], options: Options) {
  const notes = rows.map(pingNote);
  const lines = table(
    ["server", "conns", "served", "replies/s", "p50", "p99"]
      .concat(["bench CPU", "server CPU", "note"]),
    rows.map((r, i) => [
      r.server,
      `${r.conns}`,
      `${r.served} of ${r.conns}`,
      count(r.rate),
      ms(r.p50),
      ms(r.p99),
      percent(r.clientCpu),
      percent(r.serverCpu),
      notes[i],
    ]),
  );
  const said = (word: string) => notes.some((note) => note.includes(word));
  const pool = Math.max(...options.conns);
  return [
    `## (b) Ping-pong: ${LINE}-byte lines, one at a time per connection, ` +
    `${options.seconds} s per row`,
    "",
    ...lines,
    "",
    ...paragraph(
      (options.modes.includes("fixed-pool")
        ? `fixed-pool runs here with --pool-size ${pool}, a worker for ` +
          "every connection, so that it is compared on equal terms. "
        : "") +
        "Latency is measured by the bench, from its write to the end of the " +
        "reply, so it includes the bench's own queueing. CPU is in percent " +
        "of one core.",
    ),
    ...(said("backlog")
      ? paragraph(
        "Serial serves one connection; the others wait in the backlog for " +
          "the whole row.",
      )
      : []),
    ...(said("client-bound")
      ? paragraph(
        `client-bound: the bench used ${CLIENT_BOUND}% or more of one core, ` +
          "so it could not send faster: the client, not the server, set the " +
          "pace of that row, and the server may well manage more.",
      )
      : []),
    "",
  ];
}

function pingNote(r: PingRow) {
  const notes = [r.note];
  if (r.wrong) notes.push(`${r.wrong} wrong replies`);
  if (r.failed) notes.push(`${r.failed} connections failed`);
  if (r.connected < r.conns && !r.note) {
    notes.push(`${r.conns - r.connected} could not connect`);
  }
  if (r.served < r.connected) {
    notes.push(`${r.connected - r.served} waited in the backlog`);
  }
  if (r.clientCpu >= CLIENT_BOUND) notes.push("client-bound");
  return notes.filter(Boolean).join("; ");
}

function idleTable(rows: IdleRow[], options: Options) {
  return [
    `## (c) Memory: ${options.idle} idle connections, the server's ` +
    "resident memory, a quarter at a time",
    "",
    ...table(
      ["server", "connected", "served", "at 1/4", "at all", "per conn"]
        .concat(["note"]),
      rows.map((r) => [
        r.server,
        `${r.connected} of ${r.count}`,
        `${r.served}`,
        kib(r.before),
        kib(r.after),
        isNaN(r.perConn) ? "-" : bytes(r.perConn),
        idleNote(r),
      ]),
    ),
    "",
    ...paragraph(
      "Each server is fresh, started for this table. The bench opens " +
        "the connections in 128 lanes: each sends a line, waits for its " +
        "reply and leaves the connection idle, a read pending, before it " +
        "opens the next. It reads the server's resident memory after each " +
        "quarter of the connections; per conn is the median of the three " +
        "growths from one quarter to the next, each divided by the " +
        "connections it added, in bytes (memory grows in steps, and the " +
        "median leaves out a step that falls in one quarter). A connection " +
        "costs the server memory only once it is accepted: serial accepts " +
        "one, and the others wait in the kernel's listen backlog, which is " +
        "kernel memory, not the server's; a lane whose reply does not come " +
        "opens no more.",
    ),
    "",
  ];
}

function idleNote(r: IdleRow) {
  if (r.note) return r.note;
  const notes = [];
  if (r.served < r.connected) {
    notes.push(`${r.connected - r.served} in the backlog`);
  }
  if (r.connected < r.count) {
    const why = r.served < r.connected ? "not tried" : "could not connect";
    notes.push(`${r.count - r.connected} ${why}`);
  }
  if (!notes.length && isNaN(r.perConn)) {
    notes.push("too few to measure: --idle 1000 or more");
  }
  return notes.join(", ");
}

function framingTable(rows: FramingRow[], options: Options) {
  if (options.framingMiB === 0) return [];
  const perMiB = (ms: number | null) =>
    ms === null ? "-" : `${ms.toFixed(1)} ms`;
  const ratio = ([short, , long]: (number | null)[]) =>
    short && long ? `${(long / short).toFixed(1)}x` : "-";
  return [
    `## (d) Framing: the server's CPU time per MiB of input, ` +
    `${options.framingMiB} MiB of lines of each length`,
    "",
    ...table(
      ["server", "1 KiB lines", "64 KiB lines", "1 MB lines", "1 MB / 1 KiB"],
      rows.map((
        r,
      ) => [r.server, ...r.cpuMsPerMiB.map(perMiB), ratio(r.cpuMsPerMiB)]),
    ),
    "",
    ...paragraph(
      "Each reply is the line again, so this counts reading, framing, " +
        "decoding and writing. A parser that scans only new bytes, and " +
        "joins a line's pieces once, costs about the same per MiB at every " +
        "length; /proc counts CPU time in steps of 10 ms.",
    ),
    "",
  ];
}

function stormTable(rows: StormRow[], options: Options) {
  if (options.storm === 0) return [];
  const orNone = (x: number | null | undefined) => x == null ? NaN : x;
  return [
    `## (e) Connect storm: ${options.storm} clients connect at once and ` +
    `ping-pong for ${options.seconds} s`,
    "",
    ...table(
      ["server", "connected", "by", "first reply", "all by", "99% by"]
        .concat(["replies/s", "p99", "note"]),
      rows.map((r) => [
        r.server,
        r.connected === undefined ? "-" : `${r.connected} of ${r.clients}`,
        ms(orNone(r.allConnectedMs)),
        r.answered === undefined ? "-" : `${r.answered} of ${r.clients}`,
        ms(orNone(r.allAnsweredMs)),
        ms(orNone(r.firstReplyP99Ms)),
        count(orNone(r.repliesPerSecond)),
        ms(orNone(r.roundTripP99Ms)),
        [
          r.note,
          r.wrong ? `${r.wrong} wrong replies` : "",
          r.closedByServer ? `${r.closedByServer} closed by the server` : "",
        ].filter(Boolean).join("; "),
      ]),
    ),
    "",
    ...paragraph(
      "Connected by: when the last connect completed; first reply: " +
        "clients that had the echo of their first line within the row; " +
        "all by: when the last of them had it; 99% by: when 99 in 100 of " +
        "the clients had it (-: they never did); times count from the " +
        "start of the storm. The small server is bench/storm.ts --serve, " +
        "the least a Deno server can do per message: a mode should answer " +
        "as many, as soon. Handshakes past a full listen backlog (511) are " +
        "dropped by the kernel, and the client tries again after a " +
        "second. " +
        'docs/performance.md, "Connect storm", says why one busy event ' +
        "loop may leave some clients unanswered, and what to do.",
    ),
    "",
  ];
}

// A markdown table, padded so that it reads well in a terminal too.
function table(header: string[], rows: string[][]) {
  const widths = header.map((_, i) =>
    Math.max(3, ...[header, ...rows].map((row) => row[i].length))
  );
  const line = (cells: string[]) =>
    `| ${cells.map((cell, i) => cell.padEnd(widths[i])).join(" | ")} |`;
  const rule = line(widths.map((width) => "-".repeat(width)));
  return [line(header), rule, ...rows.map(line)];
}

// Words to lines of at most 78 characters.
function paragraph(text: string) {
  const lines = [""];
  for (const word of text.split(" ")) {
    const last = lines.length - 1;
    if (lines[last] && lines[last].length + word.length >= 78) lines.push("");
    lines[lines.length - 1] += (lines[lines.length - 1] ? " " : "") + word;
  }
  return lines;
}

function ms(value: number) {
  if (isNaN(value)) return "-";
  return `${value.toFixed(value < 1 ? 2 : value < 10 ? 1 : 0)} ms`;
}

function kib(value: number) {
  if (isNaN(value)) return "-";
  if (value < 10240) return `${value.toFixed(1)} KiB`;
  return `${(value / 1024).toFixed(1)} MiB`;
}

function bytes(value: number) {
  return `${count(value)} B`;
}

function count(value: number) {
  return isNaN(value) ? "-" : Math.round(value).toLocaleString("en-US");
}

function percent(value: number | null) {
  return value === null || isNaN(value) ? "-" : `${Math.round(value)}%`;
}

function plural(n: number, noun: string) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

// Nearest rank: the smallest value with a share `q` of them at or below it.
function percentile(sorted: number[], q: number) {
  if (!sorted.length) return NaN;
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)];
}

// ---- The chart: bars drawn by hand as SVG, no library.

const COLORS: Record<Mode, string> = {
  serial: "#d95f02",
  "fixed-pool": "#7570b3",
  "thread-per-connection": "#1b9e77",
  "worker-pool": "#e7298a",
};

type Group = { label: string; bars: { mode: Mode; value: number }[] };

function svg(results: Results, options: Options): string {
  const hold: Group = {
    label: `${HOLD_CLIENTS} clients, ${HOLD_MS} ms each`,
    bars: results.hold.map((r) => ({ mode: r.mode, value: r.total })),
  };
  const ping: Group[] = options.conns.map((conns) => ({
    label: plural(conns, "connection"),
    bars: results.ping.filter((r) => r.conns === conns)
      .map((r) => ({ mode: r.mode, value: r.rate })),
  }));
  const legend = options.modes.map((mode, i) =>
    `<rect x="${20 + i * 185}" y="282" width="12" height="12" ` +
    `fill="${COLORS[mode]}"/><text x="${38 + i * 185}" y="292">${mode}</text>`
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="760" height="310" ` +
    `font-family="sans-serif" font-size="12">`,
    `<rect width="760" height="310" fill="white"/>`,
    ...panel(20, 250, "(a) hold: total ms, lower is better", [hold]),
    ...panel(310, 430, "(b) ping-pong: replies/s, higher is better", ping),
    ...legend,
    "</svg>",
    "",
  ].join("\n");
}

// A title, a baseline, and for each group its bars with their values.
function panel(x: number, width: number, title: string, groups: Group[]) {
  const base = 240, height = 190;
  const values = groups.flatMap((group) => group.bars.map((bar) => bar.value));
  const max = Math.max(1, ...values.filter((value) => !isNaN(value)));
  const slot = width / groups.length;
  const out = [
    `<text x="${x}" y="24" font-weight="bold">${title}</text>`,
    `<line x1="${x}" y1="${base}" x2="${x + width}" y2="${base}" ` +
    `stroke="black"/>`,
  ];
  groups.forEach((group, g) => {
    const barWidth = Math.min(50, (slot - 20) / group.bars.length);
    const left = x + g * slot + (slot - barWidth * group.bars.length) / 2;
    group.bars.forEach(({ mode, value }, b) => {
      const h = isNaN(value) ? 0 : (value / max) * height;
      const bx = left + b * barWidth;
      out.push(
        `<rect x="${bx.toFixed(1)}" y="${(base - h).toFixed(1)}" ` +
          `width="${barWidth - 4}" height="${h.toFixed(1)}" ` +
          `fill="${COLORS[mode]}"/>`,
        `<text x="${(bx + barWidth / 2 - 2).toFixed(1)}" ` +
          `y="${(base - h - 4).toFixed(1)}" text-anchor="middle" ` +
          `font-size="10">${count(value)}</text>`,
      );
    });
    out.push(
      `<text x="${(x + (g + 0.5) * slot).toFixed(1)}" y="${base + 16}" ` +
        `text-anchor="middle">${group.label}</text>`,
    );
  });
  return out;
}

// ---- The timeline: who waited in (a), a lane a client, one panel a mode.

const TIMELINE = { width: 760, lane: 5, gap: 1, left: 24, right: 24 };
const WAITING = "#f0a030", SERVED = "#2f8f4e";

export type Panel = { title: string; lanes: Lane[] };

// Lanes in the order their clients were served (those never served last),
// on one time scale for all panels, so that the panels compare at a glance.
export function timelineSvg(panels: Panel[]): string {
  const { width, lane, gap, left, right } = TIMELINE;
  const end = Math.max(
    1,
    ...panels.flatMap((p) => p.lanes.map((l) => l.closed)),
  );
  const x = (ms: number) =>
    (left + (ms / end) * (width - left - right)).toFixed(1);
  const panelHeight = 28 + panels[0]?.lanes.length * (lane + gap);
  const bottom = 56 + panels.length * panelHeight; // the time axis
  const height = bottom + 24;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" ` +
    `height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" rx="6" fill="white"/>`,
    `<text x="20" y="22" font-weight="bold">Who waits: ${HOLD_CLIENTS} ` +
    `clients connect at once; each holds ${HOLD_MS} ms after its reply</text>`,
    `<rect x="20" y="32" width="12" height="10" fill="${WAITING}"/>`,
    `<text x="38" y="41">connected, waiting for its reply</text>`,
    `<rect x="250" y="32" width="12" height="10" fill="${SERVED}"/>`,
    `<text x="268" y="41">served (holding)</text>`,
  ];
  for (let s = 0; s * 1000 <= end; s++) { // a line and a label each second
    out.push(
      `<line x1="${x(s * 1000)}" y1="50" x2="${x(s * 1000)}" y2="${bottom}" ` +
        `stroke="#ddd"/>`,
      `<text x="${x(s * 1000)}" y="${bottom + 14}" text-anchor="middle" ` +
        `font-size="10" fill="#555">${s} s</text>`,
    );
  }
  panels.forEach((panel, p) => {
    const top = 56 + p * panelHeight;
    out.push(
      `<text x="20" y="${top + 14}" font-weight="bold">` +
        `${panel.title}</text>`,
    );
    const served = (l: Lane) => l.replied ?? Infinity;
    const lanes = [...panel.lanes].sort((a, b) => served(a) - served(b));
    lanes.forEach((l, i) => {
      const y = top + 22 + i * (lane + gap);
      const reply = l.replied ?? l.closed;
      out.push(bar(x(l.connected), x(reply), y, lane, WAITING));
      if (l.replied !== null) {
        out.push(bar(x(l.replied), x(l.closed), y, lane, SERVED));
      }
    });
  });
  out.push("</svg>", "");
  return out.join("\n");
}

function bar(x1: string, x2: string, y: number, h: number, fill: string) {
  const w = Math.max(1, Number(x2) - Number(x1)).toFixed(1);
  return `<rect x="${x1}" y="${y}" width="${w}" height="${h}" fill="${fill}"/>`;
}

function timelinePanels(results: Results): Panel[] {
  const titles: Record<Mode, string> = {
    serial: "serial: one at a time",
    "fixed-pool": `fixed-pool --pool-size ${HOLD_POOL}: ${HOLD_POOL} at a time`,
    "thread-per-connection": "thread-per-connection: all at once",
    "worker-pool": `worker-pool --workers ${workers.count}: all at once`,
  };
  return results.hold.map((r) => ({ title: titles[r.mode], lanes: r.lanes }));
}

// ---- Helpers

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

let procError: unknown;

function readProc(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    procError ??= err;
    return null;
  }
}

// Why /proc could not be read: Deno opens it only to --allow-all.
function procNote() {
  return procError instanceof Deno.errors.NotCapable
    ? "skipped: reading /proc needs -A"
    : "skipped: no /proc on this system";
}

function fail(message: string, exitCode: number): never {
  console.error(`error: ${message}`);
  if (exitCode === 2) console.error("run with --help for usage");
  Deno.exit(exitCode);
}

// On Ctrl+C or an error, stop every server still running, then exit.
async function stopAll(exitCode: number): Promise<never> {
  progress("");
  await Promise.all([...running].map((server) => server.stop()));
  Deno.exit(exitCode);
}

if (import.meta.main) {
  let options: Options;
  try {
    options = parseOptions(joinNegativeValues(Deno.args));
  } catch (err) {
    const [first] = (err as Error).message.split(/\n|\. /); // parseArgs says more
    fail(first, 2);
  }
  if (options.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  workers.count = options.workers;
  Deno.addSignalListener("SIGINT", () => stopAll(130));
  Deno.addSignalListener("SIGTERM", () => stopAll(143));
  const results = await run(options).catch((err) => {
    console.error(`error: ${(err as Error).message}`);
    return stopAll(1);
  });
  console.log(report(results, options));
  if (options.svg) {
    try {
      Deno.writeTextFileSync(options.svg, svg(results, options));
    } catch (err) {
      fail(`cannot write ${options.svg}: ${(err as Error).message}`, 1);
    }
    console.log(`Chart: ${options.svg}`);
  }
  if (options.timeline) {
    try {
      Deno.writeTextFileSync(
        options.timeline,
        timelineSvg(timelinePanels(results)),
      );
    } catch (err) {
      fail(`cannot write ${options.timeline}: ${(err as Error).message}`, 1);
    }
    console.log(`Timeline: ${options.timeline}`);
  }
  const wrong = results.ping.reduce((sum, r) => sum + r.wrong, 0);
  if (wrong) fail(`${wrong} replies did not match their request`, 1);
  Deno.exit(0);
}
