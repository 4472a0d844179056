/**
 * Soak: keeps a server busy with many short connections and checks every
 * reply. Each request names its connection and its sequence number, so a
 * lost, duplicated, reordered or corrupted reply is caught exactly. After
 * the run the server must hold as many file descriptors as before it, and no
 * more than 10 % more resident memory than after the warm-up.
 *
 * The warm-up is unmeasured traffic of the same shape, there because V8
 * sizes its heap by what a program allocates: under this load the server's
 * memory grows in steps (about 60 to 117 MiB) over the first 6,000 to 9,000
 * connections, then stays level. Measured before that, the 10 % would test
 * V8's sizing, not the server.
 *
 * Run:   deno task soak             (deno run -A tests/soak.ts)
 *        -A because Deno lets a script read another process's /proc entries
 *        only with --allow-all. Flags: --connections 10000
 *        --messages 1000000 --warm-up 10000 --concurrency 100
 *        --pool-size 200 --seed 1 --modes thread-per-connection,fixed-pool
 * See:   progress on stderr, then a markdown table on stdout, a row per
 *        mode, in about a minute; exit status 1 if anything was lost or
 *        leaked. tests/soak.test.ts runs a shorter soak.
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { type Mode, Server } from "./helpers.ts";
import {
  between,
  echoed,
  eventually,
  logged,
  Peer,
  random,
  settled,
} from "./load.ts";
import { joinNegativeValues } from "../client/client.ts";

export type SoakOptions = {
  connections: number; // opened and closed over the measured run
  messages: number; // in all, shared evenly between the connections
  warmUp: number; // connections first, unmeasured, as many messages each
  concurrency: number; // connections open at once
  seed: number;
};

type Tally = {
  connections: number; // that completed their exchange
  replies: number; // that matched their request exactly
  lost: number;
  duplicated: number;
  reordered: number;
  corrupted: number;
  failed: string[]; // connections that could not finish, and why
};

export type SoakReport = Tally & {
  mode: Mode;
  args: string[];
  warmUp: Tally;
  seconds: number; // of the measured run
  cpuSeconds: number; // the server's, during the measured run
  fds: { baseline: number; afterWarmUp: number; after: number };
  rssKiB: { afterWarmUp: number; after: number; peak: number };
  logged: { opened: number; closed: number }; // during warm-up and run
};

const MAX_BATCH = 20; // requests sent together before waiting for replies
// Request text: letters, digits, punctuation, a tab, and characters of two,
// three and four bytes in UTF-8.
const ALPHABET = [..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"];
ALPHABET.push(..."0123456789 -_.,;:!?\té中🙂");

// Starts `mode` with `args`, runs the soak against it, stops it.
export async function soak(
  mode: Mode,
  args: string[],
  options: SoakOptions,
  progress: (text: string) => void = () => {},
): Promise<SoakReport> {
  const server = await Server.launch(mode, args);
  try {
    return await run(server, mode, args, options, progress);
  } finally {
    await server.kill();
  }
}

// One connection first, so that the baseline counts what the runtime opens
// on first use; then the warm-up, so that the runtime's heap has grown to
// its working size; then the measured run.
async function run(
  server: Server,
  mode: Mode,
  args: string[],
  options: SoakOptions,
  progress: (text: string) => void,
): Promise<SoakReport> {
  const { port } = server;
  const probe = tally();
  await phase(port, { firstId: -1, count: 1, messages: 1 }, options, probe);
  // The log is written in the background: the probe's lines may come after
  // its reply. The baseline is taken once its close is logged.
  await eventually(() => logged(server).closed === 1);
  const before = await settled(server, Infinity);
  const baseline = before.fds;

  const warmUp = tally();
  const warmUpPhase = {
    firstId: 0,
    count: options.warmUp,
    messages: warmUpMessages(options),
  };
  await reporting(
    phase(port, warmUpPhase, options, warmUp),
    () => progress(`${mode}: warm-up: ${count(warmUp)}`),
  );
  const afterWarmUp = await settled(server, baseline);
  const rssAfterWarmUp = server.rssKiB();
  progress(`${mode}: warmed up: ${count(warmUp)}`);

  const measured = tally();
  const { connections, messages } = options;
  const runPhase = { firstId: options.warmUp, count: connections, messages };
  const cpuBefore = server.cpuTicks();
  const start = Date.now();
  await reporting(
    phase(port, runPhase, options, measured),
    () => progress(`${mode}: run: ${count(measured)}`),
  );
  const seconds = (Date.now() - start) / 1000;
  const after = await settled(server, baseline);
  return {
    mode,
    args,
    ...measured,
    failed: [...probe.failed, ...measured.failed],
    warmUp,
    seconds,
    cpuSeconds: (server.cpuTicks() - cpuBefore) / 100,
    fds: { baseline, afterWarmUp: afterWarmUp.fds, after: after.fds },
    rssKiB: {
      afterWarmUp: rssAfterWarmUp,
      after: server.rssKiB(),
      peak: peakRssKiB(server),
    },
    logged: {
      opened: after.opened - before.opened,
      closed: after.closed - before.closed,
    },
  };
}

// The warm-up's connections send as many messages each as the run's.
const warmUpMessages = (options: SoakOptions) =>
  Math.round(options.warmUp * options.messages / options.connections);

const tally = (): Tally => ({
  connections: 0,
  replies: 0,
  lost: 0,
  duplicated: 0,
  reordered: 0,
  corrupted: 0,
  failed: [],
});

const count = (counts: Tally) =>
  `${counts.connections} connections, ${counts.replies} replies`;

// Waits for `work`, calling `report` every 5 s meanwhile.
async function reporting(work: Promise<void>, report: () => void) {
  const timer = setInterval(report, 5000);
  try {
    await work;
  } finally {
    clearInterval(timer);
  }
}

// Runs `count` connections that send `messages` in all, `concurrency` at a
// time; their ids start at `firstId`.
async function phase(
  port: number,
  { firstId, count, messages }: Record<string, number>,
  { concurrency, seed }: SoakOptions,
  tally: Tally,
) {
  let next = 0;
  const lane = async () => {
    while (next < count) {
      const index = next++;
      const share = Math.floor(messages / count) +
        (index < messages % count ? 1 : 0);
      const id = firstId + index;
      try {
        await connection(port, id, share, seed, tally);
      } catch (err) {
        tally.failed.push(`connection ${id}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
}

// One connection: batches of requests, each batch sent in two writes split
// at a random byte (so lines arrive cut), then its replies awaited and
// checked. Then an orderly close: half the connections half-close and wait
// for the server to close, the others just close.
async function connection(
  port: number,
  id: number,
  messages: number,
  seed: number,
  tally: Tally,
) {
  const rng = random(seed * 1_000_003 + id);
  const peer = await Peer.connect(port);
  try {
    let sent = 0;
    while (sent < messages) {
      const batch = [];
      const count = Math.min(between(rng, 1, MAX_BATCH), messages - sent);
      for (let i = 0; i < count; i++) batch.push(request(id, sent + i, rng));
      const bytes = Buffer.from(batch.map((line) => line + "\n").join(""));
      const cut = between(rng, 0, bytes.length);
      const writing = [peer.write(bytes.subarray(0, cut))];
      writing.push(peer.write(bytes.subarray(cut)));
      await Promise.all(writing);
      const complete = await peer.waitLines(sent + count);
      check(peer.lines.slice(sent, sent + count), batch, id, sent, tally);
      sent += count;
      if (!complete) {
        throw new Error(`no reply after ${peer.lines.length} of ${sent}`);
      }
    }
    if (id % 2 === 0) {
      peer.socket.end();
      const closed = await peer.waitEnded();
      if (!closed) throw new Error("server did not close after half-close");
    }
    tally.duplicated += peer.lines.length - sent;
    tally.connections++;
  } finally {
    peer.socket.destroy();
  }
}

// Request `seq` of connection `id`: "<id>:<seq> <random text>".
function request(id: number, seq: number, rng: () => number): string {
  let text = `${id}:${seq} `;
  const length = between(rng, 0, 120);
  for (let i = 0; i < length; i++) {
    text += ALPHABET[Math.floor(rng() * ALPHABET.length)];
  }
  return text;
}

// Matches each reply against the request it should answer; missing replies
// count as lost.
function check(
  replies: string[],
  batch: string[],
  id: number,
  first: number,
  tally: Tally,
) {
  tally.lost += batch.length - replies.length;
  const seen = new Set<number>();
  replies.forEach((reply, i) => {
    const text = echoed(reply);
    if (text === batch[i]) {
      tally.replies++;
      seen.add(first + i);
      return;
    }
    const [, replyId, replySeq] = /^(\d+):(\d+) /.exec(text ?? "") ?? [];
    const seq = Number(replySeq);
    if (Number(replyId) !== id) tally.corrupted++; // or another's reply
    else if (seq < first || seen.has(seq)) tally.duplicated++;
    else if (text === batch[seq - first]) tally.reordered++;
    else tally.corrupted++;
    seen.add(seq);
  });
}

// The most resident memory the server has used (Linux: VmHWM).
function peakRssKiB(server: Server): number {
  const status = readFileSync(`/proc/${server.pid}/status`, "utf8");
  return Number(/VmHWM:\s+(\d+)/.exec(status)![1]);
}

// What the report shows to be wrong; empty if the soak passed.
export function problems(report: SoakReport, options: SoakOptions): string[] {
  const wrong = [];
  for (
    const [phase, counts, connections, messages] of [
      ["warm-up", report.warmUp, options.warmUp, warmUpMessages(options)],
      ["run", report, options.connections, options.messages],
    ] as const
  ) {
    const { lost, duplicated, reordered, corrupted } = counts;
    const bad = { lost, duplicated, reordered, corrupted };
    for (const [what, count] of Object.entries(bad)) {
      if (count) wrong.push(`${phase}: ${count} replies ${what}`);
    }
    if (counts.replies !== messages) {
      wrong.push(`${phase}: ${counts.replies} of ${messages} replies matched`);
    }
    if (counts.connections !== connections) {
      wrong.push(`${phase}: ${counts.connections} connections finished`);
    }
    wrong.push(...counts.failed.slice(0, 5).map((why) => `${phase}: ${why}`));
  }
  const { opened, closed } = report.logged;
  const expected = options.warmUp + options.connections;
  if (opened !== expected || closed !== opened) {
    wrong.push(`server logged ${opened} opened, ${closed} closed`);
  }
  const { baseline, after } = report.fds;
  if (after !== baseline) {
    wrong.push(`server holds ${after} descriptors, ${baseline} before`);
  }
  const { afterWarmUp, after: rss } = report.rssKiB;
  if (rss > afterWarmUp * 1.1) {
    wrong.push(`server memory ${rss} KiB, ${afterWarmUp} KiB after warm-up`);
  }
  return wrong;
}

// ---- The command line: both modes, a table, exit 1 on any problem.

// worker-pool soaks too, but its workers each have a V8 heap to grow: give
// it --warm-up 30000.
const MODES: Mode[] = ["thread-per-connection", "fixed-pool", "worker-pool"];
const DEFAULT_MODES = MODES.slice(0, 2);
const USAGE = `usage: deno task soak [flags]
  --connections N   connections opened and closed over the run (10000)
  --messages N      messages sent in all, every reply checked (1000000)
  --warm-up N       connections before memory and descriptors are read (10000)
  --concurrency N   connections open at once (100)
  --pool-size N     fixed-pool's --pool-size (200)
  --seed N          seed of the random text, to repeat a run (1)
  --modes LIST      servers to soak, or worker-pool too (${
  DEFAULT_MODES.join(",")
})
  --help            this text`;

function parseOptions(argv: string[]) {
  const { values: flag } = parseArgs({
    args: argv,
    options: {
      connections: { type: "string", default: "10000" },
      messages: { type: "string", default: "1000000" },
      "warm-up": { type: "string", default: "10000" },
      concurrency: { type: "string", default: "100" },
      "pool-size": { type: "string", default: "200" },
      seed: { type: "string", default: "1" },
      modes: { type: "string", default: DEFAULT_MODES.join(",") },
      help: { type: "boolean", default: false },
    },
  });
  const modes = flag.modes.split(",").map((name) => {
    if (MODES.includes(name as Mode)) return name as Mode;
    throw new Error(`--modes takes ${MODES.join(", ")}, not "${name}"`);
  });
  const options: SoakOptions = {
    connections: int("connections", flag.connections, 1, 1e6),
    messages: int("messages", flag.messages, 1, 1e9),
    warmUp: int("warm-up", flag["warm-up"], 0, 1e6),
    concurrency: int("concurrency", flag.concurrency, 1, 10_000),
    seed: int("seed", flag.seed, 0, 2 ** 31),
  };
  const poolSize = int("pool-size", flag["pool-size"], 1, 10_000);
  return { ...options, modes, poolSize, help: flag.help };
}

function int(name: string, text: string, min: number, max: number) {
  if (/^\d+$/.test(text) && +text >= min && +text <= max) return +text;
  throw new Error(`--${name} must be a whole number from ${min} to ${max}`);
}

const number = (n: number) => n.toLocaleString("en-US");

// One markdown table row per report, under TABLE_HEAD.
export function tableRow(report: SoakReport): string {
  const { fds, rssKiB } = report;
  const mib = (kib: number) => (kib / 1024).toFixed(1);
  const growth = ((rssKiB.after / rssKiB.afterWarmUp - 1) * 100).toFixed(1);
  const bad = report.lost + report.duplicated + report.reordered +
    report.corrupted;
  return [
    "",
    [report.mode, ...report.args].join(" "),
    number(report.connections),
    number(report.replies),
    number(bad),
    `${report.seconds.toFixed(1)} s`,
    number(Math.round(report.replies / report.seconds)),
    `${report.cpuSeconds.toFixed(1)} s`,
    `${fds.baseline} / ${fds.afterWarmUp} / ${fds.after}`,
    `${mib(rssKiB.afterWarmUp)} / ${mib(rssKiB.after)} (${growth} %)`,
    mib(rssKiB.peak),
    "",
  ].join(" | ").trim();
}

export const TABLE_HEAD = [
  "| server | connections | replies matched " +
  "| lost, duplicated, reordered, corrupted | time | replies/s " +
  "| server CPU | fds before / after warm-up / after " +
  "| RSS MiB after warm-up / after | peak RSS MiB |",
  "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
].join("\n");

if (import.meta.main) {
  let options: ReturnType<typeof parseOptions>;
  try {
    options = parseOptions(joinNegativeValues(Deno.args));
  } catch (err) {
    console.error(`error: ${(err as Error).message.split(/\.\s/)[0]}`);
    console.error("run with --help for usage");
    Deno.exit(2);
  }
  if (options.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const log = (text: string) => console.error(`soak: ${text}`);
  log(
    `${number(options.warmUp)} connections to warm up, then ` +
      `${number(options.connections)} connections and ` +
      `${number(options.messages)} messages, ` +
      `${options.concurrency} connections at once, seed ${options.seed}`,
  );
  const rows = [];
  let failed = false;
  for (const mode of options.modes) {
    const args = mode === "fixed-pool"
      ? ["--pool-size", String(options.poolSize)]
      : [];
    const report = await soak(mode, args, options, log);
    const wrong = problems(report, options);
    for (const problem of wrong) log(`${mode}: FAILED: ${problem}`);
    if (!wrong.length) log(`${mode}: passed`);
    failed ||= wrong.length > 0;
    rows.push(tableRow(report));
  }
  console.log([TABLE_HEAD, ...rows].join("\n"));
  process.exitCode = failed ? 1 : 0;
}
