/**
 * (c) Memory: the server's resident memory as --idle connections open, a
 * quarter at a time, and then sit idle. What does a connection cost?
 */
import { bytes, kib, paragraph, table } from "./format.ts";
import { fileLimitNote, label, procNote, type Server } from "./runner.ts";
import {
  closeAll,
  CONNECT_MS,
  HOST,
  LINE,
  request,
  sleep,
  writeAll,
} from "./wire.ts";

const SETTLE_MS = 500; // before reading the server's memory

export type IdleRow = {
  server: string;
  count: number;
  connected: number;
  served: number;
  perConn: number; // bytes: the median growth per connection of 3 quarters
  before: number; // KiB, after the first quarter
  after: number;
  note: string;
};

export async function idleRow(server: Server, count: number) {
  const row = {
    server: label(server.target, count),
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

export function idleTable(rows: IdleRow[], idle: number) {
  return [
    `## (c) Memory: ${idle} idle connections, the server's ` +
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
