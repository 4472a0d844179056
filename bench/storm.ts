/**
 * Connect storm: many clients connect at once and ping-pong. How long until
 * every one of them had its first reply, and how many had none at all?
 *
 * Run:   deno run -A bench/storm.ts                (deno task storm)
 *          storms the smallest Deno server there is, run in this process
 *          (a read and a write per connection, nothing else), and says when
 *          it accepted each client and when it first read from it.
 *        deno run -A bench/storm.ts --port 8080    a server already running
 *        deno run -A bench/storm.ts --serve        only the small server
 * See:   whether every client had its first reply, and how soon. Against
 *        a busy event loop, look for clients accepted but answered late, or
 *        not at all: the small server's summary tells accept from first
 *        read. These clients are JavaScript, and on a small machine they may
 *        not load the server enough; a C load generator does (see
 *        docs/performance.md, "Connect storm", for the numbers, the likely
 *        cause and what to do).
 *
 * The clients run in STORM_THREADS workers, each its own event loop with
 * a share of the sockets, so the storm never starves itself.
 */
import { parseArgs } from "node:util";

const HOST = "127.0.0.1";
const STORM_THREADS = 4;
const USAGE = `usage: deno run -A bench/storm.ts [flags]
  --clients N   clients that connect at once (1024)
  --seconds S   seconds of ping-pong, at most 60 (3)
  --port N      storm a server already running there; 0: start the small
                Deno server in this process and storm it (0)
  --serve       only start the small server, on --port (0: a free one)
  --help        this text`;

// ---- The storm: one worker per share of the clients.

export type StormResult = {
  clients: number;
  connected: number;
  allConnectedMs: number | null; // when the last connect completed, if all did
  connectError: string; // the first reason a connect failed
  answered: number; // clients with a right first reply within the seconds
  allAnsweredMs: number | null; // when the last of them had it, if all did
  firstReplyP99Ms: number | null; // when 99% of the clients had it, if they did
  roundTripP99Ms: number | null;
  repliesPerSecond: number;
  wrong: number; // replies that were not the echo of their line
  closedByServer: number; // connections the server closed before the end
};

type Share = { port: number; clients: number; seconds: number; at: number };
type ShareResult = {
  connectedMs: number[]; // one per client that connected
  connectError: string;
  firstReplyMs: number[]; // one per client that had a right reply
  roundTripsMs: number[];
  wrong: number;
  closedByServer: number;
};

export async function storm(
  port: number,
  clients: number,
  seconds: number,
): Promise<StormResult> {
  const file = new URL(import.meta.url);
  if (
    Deno.permissions.querySync({ name: "read", path: file }).state !== "granted"
  ) {
    throw new Error(
      "the storm's client threads load bench/storm.ts: " +
        "run with --allow-read (or -A)",
    );
  }
  // The clock starts once every thread is loaded and waiting: then all of
  // them connect at the same moment.
  const workers = await Promise.all(
    Array.from({ length: STORM_THREADS }, startWorker),
  );
  const at = epochMs();
  const results = await Promise.all(workers.map((worker, i) => {
    const share = Math.floor((clients + i) / STORM_THREADS);
    return runInWorker(worker, { port, clients: share, seconds, at });
  }));
  const connects = results.flatMap((r) => r.connectedMs).sort(byValue);
  const firstReplies = results.flatMap((r) => r.firstReplyMs).sort(byValue);
  const roundTrips = results.flatMap((r) => r.roundTripsMs).sort(byValue);
  const answered = firstReplies.length;
  return {
    clients,
    connected: connects.length,
    allConnectedMs: connects.length === clients ? connects.at(-1)! : null,
    connectError: results.map((r) => r.connectError).find(Boolean) ?? "",
    answered,
    allAnsweredMs: answered === clients ? firstReplies.at(-1)! : null,
    firstReplyP99Ms: firstReplies[Math.ceil(0.99 * clients) - 1] ?? null,
    roundTripP99Ms: percentile(roundTrips, 0.99),
    repliesPerSecond: roundTrips.length / seconds,
    wrong: sum(results.map((r) => r.wrong)),
    closedByServer: sum(results.map((r) => r.closedByServer)),
  };
}

// A worker that has loaded this file and says so.
function startWorker(): Promise<Worker> {
  const worker = new Worker(import.meta.url, { type: "module" });
  return reply<string>(worker).then(() => worker);
}

function runInWorker(worker: Worker, share: Share): Promise<ShareResult> {
  const result = reply<ShareResult>(worker);
  worker.postMessage(share);
  return result.finally(() => worker.terminate());
}

function reply<T>(worker: Worker): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    worker.onmessage = (event) => resolve(event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      worker.terminate();
      reject(new Error(event.message));
    };
  });
}

// ---- In a worker: its share of the clients, all connecting at once.

async function runShare(share: Share): Promise<ShareResult> {
  const until = share.at + share.seconds * 1000;
  const result: ShareResult = {
    connectedMs: [],
    connectError: "",
    firstReplyMs: [],
    roundTripsMs: [],
    wrong: 0,
    closedByServer: 0,
  };
  async function client(id: number) {
    let conn: Deno.Conn;
    try {
      const signal = AbortSignal.timeout(until - epochMs());
      conn = await Deno.connect({ hostname: HOST, port: share.port, signal });
    } catch (err) {
      if (epochMs() < until) result.connectError ||= (err as Error).message;
      return;
    }
    result.connectedMs.push(epochMs() - share.at);
    // A reply still awaited at the end is not coming in time: closing the
    // connection ends the wait.
    const timer = setTimeout(() => conn.close(), until - epochMs());
    const line = encoder.encode(`${id}`.padStart(15, "0") + "\n");
    const reply = new Uint8Array(256);
    try {
      for (let first = true;; first = false) {
        const sentAt = epochMs();
        await writeAll(conn, line);
        const length = await readLine(conn, reply);
        const now = epochMs();
        if (now >= until) break;
        // Anything but the echo (an ERROR line, say) is no answer.
        if (!endsWith(reply.subarray(0, length), line)) {
          result.wrong++;
          break;
        }
        if (first) result.firstReplyMs.push(now - share.at);
        result.roundTripsMs.push(now - sentAt);
      }
      clearTimeout(timer);
      conn.close();
    } catch (err) {
      if (err instanceof ClosedByServer) result.closedByServer++;
      if (err instanceof WrongReply) result.wrong++;
      clearTimeout(timer);
    }
  }
  await Promise.all(
    Array.from({ length: share.clients }, (_, id) => client(id)),
  );
  return result;
}

const encoder = new TextEncoder();

// A write may take only part of the bytes.
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array) {
  while (bytes.length) bytes = bytes.subarray(await conn.write(bytes));
}

// Reads one reply line into `buffer`; returns its length with the "\n".
export async function readLine(conn: Deno.Conn, buffer: Uint8Array) {
  let filled = 0;
  for (;;) {
    const n = await conn.read(buffer.subarray(filled));
    if (n === null) throw new ClosedByServer("server closed the connection");
    const lf = buffer.subarray(0, filled + n).indexOf(10, filled);
    filled += n;
    if (lf === filled - 1) return filled;
    if (lf !== -1 || filled === buffer.length) throw new WrongReply();
  }
}

export class WrongReply extends Error {}
export class ClosedByServer extends Error {}

function endsWith(bytes: Uint8Array, end: Uint8Array) {
  const tail = bytes.subarray(bytes.length - end.length);
  return tail.length === end.length && tail.every((b, i) => b === end[i]);
}

// ---- The small server: deno_bare's loop, plus when each connection was
// accepted and first read, to tell a slow accept from a slow first read.
// It echoes each read as it came, without the time: the least a server
// can do per message.

type Arrival = { accepted: number; firstRead: number | null }; // epoch ms

// Once every connection of a storm has closed, `report` gets a summary.
function serveSmall(port: number, report: (summary: string) => void) {
  const listener = listen(port);
  let arrivals: Arrival[] = [];
  let open = 0;
  (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch { // out of descriptors, say: wait a little, and accept again
        await new Promise((retry) => setTimeout(retry, 100));
        continue;
      }
      const arrival = { accepted: epochMs(), firstRead: null };
      arrivals.push(arrival);
      open++;
      echo(conn, arrival).then(() => {
        if (--open) return;
        report(summarize(arrivals));
        arrivals = [];
      });
    }
  })();
  return listener;
}

// When the small server accepted each client, and first read from it,
// counted from its first accept.
function summarize(arrivals: Arrival[]) {
  const at = arrivals[0].accepted;
  const read = arrivals.filter((a) => a.firstRead !== null);
  const waits = read.map((a) => a.firstRead! - a.accepted).sort(byValue);
  const lastAccept = Math.max(...arrivals.map((a) => a.accepted)) - at;
  const lastRead = Math.max(...read.map((a) => a.firstRead!)) - at;
  return [
    `small server:  accepted ${arrivals.length}, the last ${ms(lastAccept)} ` +
    "after the first",
    `               first read from ${read.length}, the last at ` +
    `${ms(read.length ? lastRead : null)}`,
    `               accept to first read: median ` +
    `${ms(percentile(waits, 0.5))}, max ${ms(waits.at(-1) ?? null)}`,
  ].join("\n");
}

function listen(port: number): Deno.Listener {
  try {
    return Deno.listen({ hostname: HOST, port });
  } catch (err) {
    console.error(`error: ${HOST}:${port}: ${(err as Error).message}`);
    Deno.exit(1);
  }
}

async function echo(conn: Deno.Conn, arrival: Arrival) {
  const buffer = new Uint8Array(1024);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      arrival.firstRead ??= epochMs();
      await writeAll(conn, buffer.subarray(0, n));
    }
  } catch { /* reset by the client */ }
  try {
    conn.close();
  } catch { /* closed already */ }
}

// ---- The command line.

async function main() {
  const options = parseOptions();
  if (options.serve) {
    const listener = serveSmall(options.port, console.log);
    const { port } = listener.addr as Deno.NetAddr;
    console.log(`small server listening on ${HOST}:${port}`);
    return;
  }
  const { clients, seconds } = options;
  // Each client is a descriptor here, and one more in the small server.
  const needed = (options.port ? 1 : 2) * clients + 64;
  const limit = openFileLimit();
  if (limit && limit < needed) {
    console.error(
      `error: ${clients} clients need about ${needed} open files, the ` +
        `limit is ${limit}: run \`ulimit -n ${needed}\` first, or use fewer`,
    );
    Deno.exit(1);
  }
  let port = options.port;
  let summary = Promise.resolve("");
  if (!port) {
    let report = (_: string) => {};
    summary = new Promise((resolve) => report = resolve);
    port = (serveSmall(0, report).addr as Deno.NetAddr).port;
  }
  console.log(
    `${clients} clients connect at once to ${HOST}:${port} and ping-pong ` +
      `for ${seconds} s` +
      (options.port ? "" : ", the small server in this process"),
  );
  let result: StormResult;
  try {
    result = await storm(port, clients, seconds);
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    Deno.exit(1);
  }
  if (!result.connected) {
    console.error(`error: no client could connect to ${HOST}:${port}`);
    Deno.exit(1);
  }
  console.log(describe(result, seconds));
  if (!options.port) console.log(await summary);
  Deno.exit(0);
}

export function describe(r: StormResult, seconds: number): string {
  const connected = r.allConnectedMs === null
    ? (r.connectError ? `; the first failure: ${r.connectError}` : "")
    : `, the last at ${ms(r.allConnectedMs)}`;
  const answered = r.allAnsweredMs === null
    ? `${r.clients - r.answered} never did`
    : `the last at ${ms(r.allAnsweredMs)}`;
  const trouble = [
    r.wrong && `${r.wrong} wrong replies`,
    r.closedByServer && `${r.closedByServer} closed by the server`,
  ].filter(Boolean).join(", ");
  return [
    `connected:     ${r.connected} of ${r.clients}${connected}`,
    `first reply:   ${r.answered} within ${seconds} s; ${answered}; ` +
    `99% of clients by ${ms(r.firstReplyP99Ms)}`,
    `round trips:   ${Math.round(r.repliesPerSecond)}/s, ` +
    `p99 ${ms(r.roundTripP99Ms)}${trouble && `; ${trouble}`}`,
  ].join("\n");
}

function parseOptions() {
  try {
    const { values } = parseArgs({
      args: Deno.args,
      options: {
        clients: { type: "string", default: "1024" },
        seconds: { type: "string", default: "3" },
        port: { type: "string", default: "0" },
        serve: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
    });
    if (values.help) {
      console.log(USAGE);
      Deno.exit(0);
    }
    return {
      clients: int("clients", values.clients, 1, 100_000),
      seconds: int("seconds", values.seconds, 1, 60), // every round trip is kept
      port: int("port", values.port, 0, 65535),
      serve: values.serve,
    };
  } catch (err) {
    console.error(`error: ${(err as Error).message.split(/\.\s/)[0]}`);
    console.error("run with --help for usage");
    Deno.exit(2);
  }
}

function int(name: string, text: string, min: number, max: number) {
  if (/^\d+$/.test(text) && +text >= min && +text <= max) return +text;
  throw new Error(`--${name} must be a whole number from ${min} to ${max}`);
}

// ---- Small helpers

// The limit on open files, where /proc tells it (Linux).
export function openFileLimit(): number | null {
  try {
    const limits = Deno.readTextFileSync("/proc/self/limits");
    return Number(/Max open files\s+(\d+)/.exec(limits)?.[1]) || null;
  } catch {
    return null;
  }
}

// Milliseconds on one clock for the main thread and the workers.
function epochMs() {
  return performance.timeOrigin + performance.now();
}

function percentile(sorted: number[], p: number): number | null {
  return sorted.length ? sorted[Math.ceil(p * sorted.length) - 1] : null;
}

const byValue = (a: number, b: number) => a - b;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const ms = (x: number | null) => x === null ? "-" : `${Math.round(x)} ms`;

if ("WorkerGlobalScope" in globalThis) {
  // Typed as a window here; in a worker it is a worker's global scope.
  const scope = self as unknown as Worker;
  scope.onmessage = async (event: MessageEvent<Share>) => {
    scope.postMessage(await runShare(event.data));
  };
  scope.postMessage("ready");
} else if (import.meta.main) {
  await main();
}
