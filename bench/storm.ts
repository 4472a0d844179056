/**
 * Connect storm: many clients connect at once and ping-pong. How long until
 * every one of them had its first reply, and how many had none at all?
 *
 * Run:   deno run -A bench/storm.ts                 (deno task storm)
 *          storms the smallest Deno server there is, run in this process
 *          (a read and a write per connection, nothing else), and says when
 *          it accepted each client and when it first read from it.
 *        deno run -A bench/storm.ts --port 8080     a server already running
 *        deno run -A bench/storm.ts --serve         only the small server
 * See:   whether every client had its first reply, and how soon. Against
 *        a busy event loop, look for clients accepted but answered late, or
 *        not at all: the small server's summary tells accept from first
 *        read. These clients are JavaScript, and on a small machine they may
 *        not load the server enough (docs/notes/2026-12-01-connect-storm.md
 *        has the numbers, the likely cause and what to do).
 *
 * The clients run in STORM_THREADS threads (bench/clients.ts), each its own
 * event loop with a share of the sockets, so the storm never starves itself.
 * The bench's table (e) is this storm, against each mode.
 */
import { parseArgs } from "node:util";
import { stormClients } from "./clients.ts";
import { count, ms, paragraph, percentile, table, wholeMs } from "./format.ts";
import { fileLimitNote, label, openFileLimit, type Server } from "./runner.ts";
import { serveSmall } from "./small-server.ts";
import { HOST } from "./wire.ts";

const STORM_THREADS = 4;
const USAGE = `usage: deno run -A bench/storm.ts [flags]
  --clients N   clients that connect at once (1024)
  --seconds S   seconds of ping-pong, at most 60 (3)
  --port N      storm a server already running there; 0: start the small
                Deno server in this process and storm it (0)
  --serve       only start the small server, on --port (0: a free one)
  --help        this text`;

type StormResult = {
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

export async function storm(
  port: number,
  clients: number,
  seconds: number,
): Promise<StormResult> {
  const tally = await stormClients(port, clients, STORM_THREADS, seconds);
  const connects = tally.connectedMs.sort(byValue);
  const firstReplies = tally.firstReplyMs.sort(byValue);
  const roundTrips = tally.roundTripsMs.sort(byValue);
  const answered = firstReplies.length;
  const orNull = (x: number) => isNaN(x) ? null : x;
  return {
    clients,
    connected: connects.length,
    allConnectedMs: connects.length === clients ? connects.at(-1)! : null,
    connectError: tally.connectError,
    answered,
    allAnsweredMs: answered === clients ? firstReplies.at(-1)! : null,
    firstReplyP99Ms: firstReplies[Math.ceil(0.99 * clients) - 1] ?? null,
    roundTripP99Ms: orNull(percentile(roundTrips, 0.99)),
    repliesPerSecond: roundTrips.length / seconds,
    wrong: tally.wrong,
    closedByServer: tally.closedByServer,
  };
}

const byValue = (a: number, b: number) => a - b;

// ---- The bench's table (e): this storm against each server.

export type StormRow = { server: string; note: string } & Partial<StormResult>;

export async function stormRow(
  server: Server,
  clients: number,
  seconds: number,
): Promise<StormRow> {
  const row = { server: label(server.target, clients) };
  const tooMany = fileLimitNote(clients);
  if (tooMany) return { ...row, note: tooMany };
  try {
    const result = await storm(server.port, clients, seconds);
    return { ...row, ...result, note: "" };
  } catch (err) {
    return { ...row, note: `skipped: ${(err as Error).message}` };
  }
}

export function stormTable(rows: StormRow[], clients: number, seconds: number) {
  if (clients === 0) return [];
  const orNone = (x: number | null | undefined) => x == null ? NaN : x;
  return [
    `## (e) Connect storm: ${clients} clients connect at once and ` +
    `ping-pong for ${seconds} s`,
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
        "start of the storm. The bare loop (bench/peers/deno.ts) is the " +
        "least a Deno server can do per message: a mode should answer as " +
        "many, as soon. Handshakes past a full listen backlog (511) are " +
        "dropped by the kernel, and the client tries again after a " +
        "second. docs/notes/2026-12-01-connect-storm.md says why one busy " +
        "event loop may leave some clients unanswered, and what to do.",
    ),
    "",
  ];
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

function describe(r: StormResult, seconds: number): string {
  const connected = r.allConnectedMs === null
    ? (r.connectError ? `; the first failure: ${r.connectError}` : "")
    : `, the last at ${wholeMs(r.allConnectedMs)}`;
  const answered = r.allAnsweredMs === null
    ? `${r.clients - r.answered} never did`
    : `the last at ${wholeMs(r.allAnsweredMs)}`;
  const trouble = [
    r.wrong && `${r.wrong} wrong replies`,
    r.closedByServer && `${r.closedByServer} closed by the server`,
  ].filter(Boolean).join(", ");
  return [
    `connected:     ${r.connected} of ${r.clients}${connected}`,
    `first reply:   ${r.answered} within ${seconds} s; ${answered}; ` +
    `99% of clients by ${wholeMs(r.firstReplyP99Ms)}`,
    `round trips:   ${Math.round(r.repliesPerSecond)}/s, ` +
    `p99 ${wholeMs(r.roundTripP99Ms)}${trouble && `; ${trouble}`}`,
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

if (import.meta.main) await main();
