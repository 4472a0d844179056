/**
 * (d) Framing: one connection sends --framing-mib MiB of lines of each
 * length and reads every reply; the server's CPU time per MiB tells whether
 * its line parser does work per byte (the same at every length) or rescans
 * an unfinished line on every read (more per byte as lines grow).
 */
import { paragraph, table } from "./format.ts";
import { label, type Server } from "./runner.ts";
import { HOST, writeAll } from "./wire.ts";

export const LINE_LENGTHS = [1024, 65536, 1_000_000]; // bytes, with the "\n"
const MiB = 1024 * 1024;

export type FramingRow = { server: string; cpuMsPerMiB: (number | null)[] };

export async function framingRow(
  server: Server,
  mib: number,
  pool: number,
): Promise<FramingRow> {
  const cpuMsPerMiB = [];
  for (const length of LINE_LENGTHS) {
    const skip = mib === 0 || server.cpuSeconds() === null;
    cpuMsPerMiB.push(skip ? null : await framingCost(server, mib, length));
  }
  return { server: label(server.target, pool), cpuMsPerMiB };
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

export function framingTable(rows: FramingRow[], mib: number) {
  if (mib === 0) return [];
  const perMiB = (ms: number | null) =>
    ms === null ? "-" : `${ms.toFixed(1)} ms`;
  const ratio = ([short, , long]: (number | null)[]) =>
    short && long ? `${(long / short).toFixed(1)}x` : "-";
  return [
    `## (d) Framing: the server's CPU time per MiB of input, ` +
    `${mib} MiB of lines of each length`,
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
