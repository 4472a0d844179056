/**
 * (b) against the bare loop, with --peers: each server's replies per second
 * over those of its runtime's bare loop (bench/peers/) in the same round,
 * and its p99 over the bare loop's at the most connections. The servers of
 * a round run one after another, so a ratio compares two servers measured
 * seconds apart, in the same state of the machine.
 */
import { median, paragraph, plural, table } from "./format.ts";
import type { PingRow } from "./ping-pong.ts";
import { BARE } from "./runner.ts";
import type { Runtime } from "./runtimes.ts";

type Settings = { conns: number[]; rounds: number };

export function ratioTable(
  rows: PingRow[],
  options: Settings,
  missing: string[],
) {
  const most = Math.max(...options.conns);
  const servers = [...new Set(rows.map((r) => r.server))]
    .filter((server) => !server.startsWith(BARE));
  const lines = table(
    ["server", ...options.conns.map((c) => plural(c, "conn"))]
      .concat([`p99 at ${most}`]),
    servers.map((server) => {
      const own = rows.filter((r) => r.server === server);
      const ratios = (conns: number, pick: (r: PingRow) => number) =>
        spread(
          own.filter((r) => r.conns === conns).map((r) => {
            const bare = bareOf(rows, r);
            return bare ? pick(r) / pick(bare) : NaN;
          }),
        );
      return [
        server,
        ...options.conns.map((conns) => ratios(conns, (r) => r.rate)),
        ratios(most, (r) => r.p99),
      ];
    }),
  );
  const rounds = options.rounds > 1
    ? `: the median of ${options.rounds} rounds, the lowest and highest ` +
      "round in brackets"
    : "";
  return [
    "## (b) Against the bare loop: replies/s over those of the runtime's " +
    `bare loop in the same round${rounds}`,
    "",
    ...lines,
    "",
    ...paragraph(
      "The bare loop (bench/peers/) is the least a server can do per " +
        "message on its runtime and still speak the protocol: a read, the " +
        "replies, a write. 1.00 is as fast as it; p99 is the other way " +
        "round, 1.00 as short a tail, more is longer. A server that serves " +
        "one connection at a time (serial) is compared all the same.",
    ),
    ...missing.flatMap((line) => ["", line]),
    "",
  ];
}

// The bare loop's row of the same round, runtime and connection count.
function bareOf(rows: PingRow[], row: PingRow): PingRow | undefined {
  const runtime: Runtime = row.target.runtime;
  return rows.find((r) =>
    r.target.mode === BARE && r.target.runtime === runtime &&
    r.round === row.round && r.conns === row.conns
  );
}

// "0.97", or with rounds "0.97 (0.91-1.02)".
function spread(ratios: number[]) {
  const known = ratios.filter((ratio) => isFinite(ratio));
  if (!known.length) return "-";
  const middle = median(known).toFixed(2);
  if (known.length === 1) return middle;
  const low = Math.min(...known).toFixed(2);
  const high = Math.max(...known).toFixed(2);
  return `${middle} (${low}-${high})`;
}
