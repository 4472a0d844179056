/**
 * The small server of `deno task storm`: the bare loop (a read and a write
 * per connection, nothing else), plus when each connection was accepted and
 * first read, to tell a slow accept from a slow first read. It echoes each
 * read as it came, without the time: the least a server can do per message.
 */
import { percentile, wholeMs } from "./format.ts";
import { epochMs, HOST, writeAll } from "./wire.ts";

type Arrival = { accepted: number; firstRead: number | null }; // epoch ms

// Once every connection of a storm has closed, `report` gets a summary.
export function serveSmall(port: number, report: (summary: string) => void) {
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
  const waits = read.map((a) => a.firstRead! - a.accepted)
    .sort((a, b) => a - b);
  const lastAccept = Math.max(...arrivals.map((a) => a.accepted)) - at;
  const lastRead = Math.max(...read.map((a) => a.firstRead!)) - at;
  const median = percentile(waits, 0.5);
  return [
    `small server:  accepted ${arrivals.length}, the last ` +
    `${wholeMs(lastAccept)} after the first`,
    `               first read from ${read.length}, the last at ` +
    `${wholeMs(read.length ? lastRead : null)}`,
    `               accept to first read: median ` +
    `${wholeMs(isNaN(median) ? null : median)}, max ` +
    `${wholeMs(waits.at(-1) ?? null)}`,
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
