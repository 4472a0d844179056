/**
 * Benchmark: starts each mode on a free port and measures what its
 * concurrency model buys and costs. All traffic stays on 127.0.0.1.
 *
 * Run:   deno run -A bench/bench.ts               (or: deno task bench)
 *        -A because Deno lets a script read /proc (the server's memory and
 *        CPU) only with --allow-all. Without /proc it needs just
 *        --allow-net=127.0.0.1 --allow-run --allow-write --allow-read, and
 *        says what it skipped.
 *        deno task bench --peers: also the least a server can do on each
 *        runtime (bench/peers/), and the modes on Bun, in the same rounds;
 *        Bun and Node only if they are on PATH.
 * See:   a progress line on stderr, then markdown tables on stdout, in
 *        about three minutes (six with --peers):
 *        (a) hold: 20 clients connect at once, each keeps its connection
 *            200 ms after its reply. Serial answers them in turn (about
 *            20 x 200 ms), fixed-pool 10 at a time (about 2 x 200 ms),
 *            a task per connection all at once (about 200 ms).
 *        (b) ping-pong at 1, 16 and 256 connections: replies/s, p50, p99,
 *            and whether the client, not the server, set the pace; with
 *            --peers, each server over its runtime's bare loop.
 *        (c) memory per idle connection (Linux).
 *        (d) framing: the server's CPU per MiB of input, with 1 KiB, 64 KiB
 *            and 1 MB lines (Linux): about the same per MiB, or the line
 *            parser rescans what it has seen.
 *        (e) connect storm: 1,024 clients connect at once; how many had a
 *            reply, and how soon, beside Deno's bare loop.
 *        With --svg FILE, a chart of (a) and (b).
 */
import { parseArgs } from "node:util";
import { joinNegativeValues } from "../client/client.ts";
import { chart, timelineSvg } from "./draw.ts";
import { framingTable } from "./framing.ts";
import { holdTable, timelineTitle } from "./hold.ts";
import { idleTable } from "./memory.ts";
import { mergeRounds, pingTable } from "./ping-pong.ts";
import { estimates, plan, type Results, run, type Settings } from "./plan.ts";
import { Progress } from "./progress.ts";
import { ratioTable } from "./ratios.ts";
import { type Mode, MODES, stopAll, workers } from "./runner.ts";
import {
  findRuntimes,
  removeBuilt,
  type Runtime,
  runtimeName,
} from "./runtimes.ts";
import { stormTable } from "./storm.ts";

const CORES = navigator.hardwareConcurrency;
const USAGE = `usage: deno task bench [flags]
  --modes LIST       modes to measure (${MODES.join(",")})
  --conns LIST       connections for each ping-pong row; 0 skips (1,16,256)
  --work MS          the hold test's --work: CPU ms for each line (0)
  --seconds S        seconds per ping-pong row (3)
  --rounds N         ping-pong rounds; the servers take turns in each (1)
  --peers            also each runtime's bare loop, the modes on Bun (off)
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
      work: { type: "string", default: "0" },
      seconds: { type: "string", default: "3" },
      rounds: { type: "string", default: "1" },
      peers: { type: "boolean", default: false },
      idle: { type: "string", default: "4000" },
      "framing-mib": { type: "string", default: "16" },
      storm: { type: "string", default: "1024" },
      workers: { type: "string", default: `${CORES}` },
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
    conns: flag.conns === "0" // 0 skips ping-pong
      ? []
      : flag.conns.split(",").map((text) => int("conns", text, 1, 10000)),
    work: int("work", flag.work, 0, 60000),
    seconds: int("seconds", flag.seconds, 1, 600),
    rounds: int("rounds", flag.rounds, 1, 100),
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

// ---- The report: the tables, and a line for a runtime that was missing.

function report(
  results: Results,
  settings: Settings,
  runtimes: Runtimes,
): string {
  const versions = [...runtimes.found]
    .map(([runtime, version]) => `${runtimeName(runtime)} ${version}`);
  return [
    `${versions.join(", ")} on ${Deno.build.os}, ${CORES} CPU cores, ` +
    `shared by the bench and the server.`,
    "",
    ...holdTable(results.hold, settings.work),
    ...(settings.conns.length ? pingTable(results.ping, settings) : []),
    ...(settings.peers && settings.conns.length
      ? ratioTable(results.ping, settings, runtimes.missing)
      : []),
    ...(settings.idle ? idleTable(results.idle, settings.idle) : []),
    ...framingTable(results.framing, settings.framingMiB),
    ...stormTable(results.storm, settings.storm, settings.seconds),
  ].join("\n");
}

type Runtimes = Awaited<ReturnType<typeof findRuntimes>>;

function drawChart(results: Results, settings: Settings) {
  const deno = mergeRounds(results.ping)
    .filter((r) => r.target.runtime === "deno");
  return chart(
    results.hold.map((r) => ({ mode: r.mode, value: r.total })),
    deno.map((r) => ({ mode: r.target.mode, conns: r.conns, value: r.rate })),
    settings.conns,
  );
}

function drawTimeline(results: Results, work: number) {
  return timelineSvg(
    results.hold.map((r) => ({
      title: timelineTitle(r, work),
      lanes: r.lanes,
    })),
    work,
  );
}

function write(file: string | undefined, what: string, draw: () => string) {
  if (!file) return;
  try {
    Deno.writeTextFileSync(file, draw());
  } catch (err) {
    fail(`cannot write ${file}: ${(err as Error).message}`, 1);
  }
  console.log(`${what}: ${file}`);
}

function fail(message: string, exitCode: number): never {
  console.error(`error: ${message}`);
  if (exitCode === 2) console.error("run with --help for usage");
  Deno.exit(exitCode);
}

let progress: Progress | undefined;

// On Ctrl+C or an error, stop every server still running, then exit.
async function stop(exitCode: number): Promise<never> {
  progress?.end();
  await stopAll();
  removeBuilt();
  Deno.exit(exitCode);
}

async function main() {
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
  Deno.addSignalListener("SIGINT", () => stop(130));
  Deno.addSignalListener("SIGTERM", () => stop(143));
  const runtimes: Runtimes = options.peers ? await findRuntimes() : {
    found: new Map<Runtime, string>([["deno", Deno.version.deno]]),
    missing: [],
  };
  const settings = { ...options, runtimes: [...runtimes.found.keys()] };
  const { jobs, results } = plan(settings);
  progress = new Progress(estimates(jobs));
  await run(jobs, progress).catch((err) => {
    console.error(`error: ${(err as Error).message}`);
    return stop(1);
  });
  removeBuilt();
  console.log(report(results, settings, runtimes));
  write(options.svg, "Chart", () => drawChart(results, settings));
  write(
    options.timeline,
    "Timeline",
    () => drawTimeline(results, options.work),
  );
  const wrong = results.ping.reduce((sum, r) => sum + r.wrong, 0);
  if (wrong) fail(`${wrong} replies did not match their request`, 1);
  Deno.exit(0);
}

if (import.meta.main) await main();
