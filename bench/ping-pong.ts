/**
 * (b) Ping-pong: each connection sends a line, waits for the whole reply and
 * sends the next, for --seconds a row: replies per second, latency, and the
 * CPU that the bench and the server spent. With --rounds N every server
 * runs its rows N times, the servers taking turns, and the table shows the
 * median of the rounds.
 */
import process from "node:process";
import { Clients } from "./clients.ts";
import {
  count,
  median,
  ms,
  paragraph,
  percent,
  percentile,
  plural,
  table,
} from "./format.ts";
import {
  fileLimitNote,
  label,
  type Server,
  type Target,
  workers,
} from "./runner.ts";
import { epochMs, LINE, sleep } from "./wire.ts";

const CLIENT_BOUND = 90; // % of one core at which the bench is the limit
const WARM_UP = { conns: 16, seconds: 1 }; // not counted: the JITs settle

// Client threads: one core is left to the server; more than four buy little.
const THREADS = Math.max(
  1,
  Math.min(4, navigator.hardwareConcurrency - 1),
);

export type PingRow = {
  server: string;
  target: Target;
  round: number;
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

type Settings = { conns: number[]; seconds: number; rounds: number };

// The first row of a server starts with a warm-up.
export async function pingRow(
  server: Server,
  conns: number,
  round: number,
  options: Settings,
): Promise<PingRow> {
  const pool = Math.max(...options.conns);
  const row = { server: label(server.target, pool), target: server.target };
  const head = { ...row, round, conns };
  const tooMany = fileLimitNote(conns);
  if (tooMany) return { ...head, ...NO_PING, note: tooMany };
  if (conns === options.conns[0]) {
    await measure(server, Math.min(WARM_UP.conns, pool), WARM_UP.seconds);
  }
  return { ...head, ...await measure(server, conns, options.seconds) };
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

async function measure(server: Server, conns: number, seconds: number) {
  const clients = await Clients.open(server.port, conns, THREADS);
  try {
    const before = cpuNow(server);
    const at = epochMs();
    const tally = clients.run(at, at + seconds * 1000);
    await sleep(seconds * 1000);
    const after = cpuNow(server);
    const { roundTripsMs, firstReplyMs, ...trouble } = await tally;
    const latencies = roundTripsMs.sort((a, b) => a - b);
    return {
      connected: clients.connected,
      served: firstReplyMs.length,
      rate: latencies.length / seconds,
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99),
      wrong: trouble.wrong,
      failed: trouble.failed + trouble.closedByServer,
      ...cpuPercent(before, after),
      note: clients.error && `connect failed: ${clients.error}`,
    };
  } finally {
    clients.close();
  }
}

type Cpu = { at: number; client: number; server: number | null };

function cpuNow(server: Server): Cpu {
  const { user, system } = process.cpuUsage(); // microseconds, all threads
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

// ---- The table: a row per server and connection count.

export function pingTable(rows: PingRow[], options: Settings) {
  const merged = mergeRounds(rows);
  const notes = merged.map(pingNote);
  const lines = table(
    ["server", "conns", "served", "replies/s", "p50", "p99"]
      .concat(["bench CPU", "server CPU", "note"]),
    merged.map((r, i) => [
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
  const rounds = options.rounds > 1
    ? `, the median of ${options.rounds} rounds`
    : "";
  return [
    `## (b) Ping-pong: ${LINE}-byte lines, one at a time per connection, ` +
    `${options.seconds} s per row${rounds}`,
    "",
    ...lines,
    "",
    ...paragraph(
      (rows.some((r) => r.target.mode === "fixed-pool")
        ? `fixed-pool runs here with --pool-size ${pool}, a worker for ` +
          "every connection, so that it is compared on equal terms. "
        : "") +
        (rows.some((r) => r.target.mode === "worker-pool")
          ? `worker-pool runs ${workers.count} workers. `
          : "") +
        "Latency is measured by the bench, from its write to the end of the " +
        `reply, so it includes the bench's own queueing. The bench's ` +
        `clients run in ${plural(THREADS, "thread")} of their own; CPU is in ` +
        "percent of one core.",
    ),
    ...(said("backlog")
      ? paragraph(
        "Serial serves one connection; the others wait in the backlog for " +
          "the whole row.",
      )
      : []),
    ...(said("client-bound")
      ? paragraph(
        `client-bound: the bench used ${CLIENT_BOUND}% or more of a core ` +
          "per client thread, so it could not send faster: the client, not " +
          "the server, set the pace of that row, and the server may well " +
          "manage more.",
      )
      : []),
    "",
  ];
}

// One row per server and connection count, in the order first measured:
// the median of each figure over the rounds, the fewest served.
export function mergeRounds(rows: PingRow[]): PingRow[] {
  const groups = new Map<string, PingRow[]>();
  for (const row of rows) {
    const key = `${row.server}/${row.conns}`;
    groups.set(key, [...groups.get(key) ?? [], row]);
  }
  return [...groups.values()].map((group) => {
    const of = (pick: (r: PingRow) => number | null) =>
      median(group.map((r) => pick(r) ?? NaN));
    const serverCpu = of((r) => r.serverCpu);
    return {
      ...group[0],
      connected: Math.min(...group.map((r) => r.connected)),
      served: Math.min(...group.map((r) => r.served)),
      rate: of((r) => r.rate),
      p50: of((r) => r.p50),
      p99: of((r) => r.p99),
      wrong: group.reduce((sum, r) => sum + r.wrong, 0),
      failed: group.reduce((sum, r) => sum + r.failed, 0),
      clientCpu: of((r) => r.clientCpu),
      serverCpu: isNaN(serverCpu) ? null : serverCpu,
      note: [...new Set(group.map((r) => r.note))].join("; "),
    };
  });
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
  const threads = Math.min(r.conns, THREADS);
  if (r.clientCpu >= CLIENT_BOUND * threads) notes.push("client-bound");
  return notes.filter(Boolean).join("; ");
}
