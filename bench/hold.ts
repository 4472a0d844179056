/**
 * (a) Hold: every client connects at once and sends one line; after its
 * reply it keeps the connection HOLD_MS. Who waits for whom?
 */
import { ms, paragraph, percentile, table } from "./format.ts";
import { label, type Mode, type Server, workers } from "./runner.ts";
import {
  closeAll,
  HOST,
  LINE,
  readLine,
  request,
  sleep,
  writeAll,
} from "./wire.ts";

export const HOLD_CLIENTS = 20;
export const HOLD_MS = 200;
export const HOLD_POOL = 10; // the tutorial's pool

export type HoldRow = {
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

export async function hold(
  server: Server,
  mode: Mode,
  work: number,
): Promise<HoldRow> {
  const open = new Set<Deno.Conn>();
  const start = performance.now();
  // Every wait ends by then: connects are aborted, connections closed.
  const longest = HOLD_CLIENTS * (HOLD_MS + work) * 2 + 10_000;
  const signal = AbortSignal.timeout(longest);
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
    server: label(server.target, HOLD_POOL),
    mode,
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

export function holdTable(rows: HoldRow[], work: number) {
  const cpu = work ? `, each line costs ${work} ms of CPU` : "";
  return [
    `## (a) Hold: ${HOLD_CLIENTS} clients at once, each keeps its ` +
    `connection ${HOLD_MS} ms after its reply${cpu}`,
    "",
    ...table(
      ["server", "replied", "reply p50", "reply max", "total", "expected"],
      rows.map((r) => [
        r.server,
        `${r.replied} of ${HOLD_CLIENTS}`,
        ms(r.p50),
        ms(r.max),
        ms(r.total),
        expected(r, work),
      ]),
    ),
    "",
    ...paragraph(
      "Time to reply counts from the start of the connect. Serial answers " +
        "one client at a time, so each waits while everyone before it holds " +
        `its ${HOLD_MS} ms; ` +
        (work
          ? "on the other modes, each thread does one line's work at a " +
            "time, so one event loop answers the last client after all " +
            "twenty lines' work, and worker-pool shares it among its threads."
          : `the pool answers ${HOLD_POOL} at a time; a task per connection ` +
            "answers all of them at once."),
    ),
    "",
  ];
}

// What the table expects of the total: turns of HOLD_MS without work; with
// it, one event loop does all the work in turn, one thread at a time.
function expected(row: HoldRow, work: number) {
  if (!work) return `about ${turns(row.mode)} x ${HOLD_MS} ms`;
  if (row.mode === "serial") {
    return `about ${HOLD_CLIENTS} x ${HOLD_MS + work} ms`;
  }
  const threads = row.mode === "worker-pool" ? workers.count : 1;
  return `at least ${HOLD_CLIENTS / threads} x ${work} ms`;
}

// How many turns of HOLD_MS the clients need, as the mode serves them.
export function turns(mode: Mode) {
  const atOnce = { serial: 1, "fixed-pool": HOLD_POOL }[mode as string];
  return Math.ceil(HOLD_CLIENTS / (atOnce ?? HOLD_CLIENTS));
}

// A title for each mode's panel of the timeline; with --work, where the
// lines' work is done.
export function timelineTitle(row: HoldRow, work: number) {
  const titles: Record<Mode, string> = work
    ? {
      serial: `serial --work ${work}: one at a time`,
      "fixed-pool": `fixed-pool --pool-size ${HOLD_POOL} --work ${work}: ` +
        "one thread, the work in turn",
      "thread-per-connection": `thread-per-connection --work ${work}: ` +
        "one thread, the work in turn",
      "worker-pool": `${row.server} --work ${work}: ` +
        `${workers.count} threads`,
    }
    : {
      serial: "serial: one at a time",
      "fixed-pool":
        `fixed-pool --pool-size ${HOLD_POOL}: ${HOLD_POOL} at a time`,
      "thread-per-connection": "thread-per-connection: all at once",
      "worker-pool": `${row.server}: all at once`,
    };
  return titles[row.mode];
}
