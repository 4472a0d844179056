/**
 * The run: which servers each experiment measures, in what order, and how
 * long each step should take. Each server is fresh, started for its steps
 * and stopped after them, so that what one experiment leaves in a server's
 * heap is not counted by the next.
 */
import { type FramingRow, framingRow, LINE_LENGTHS } from "./framing.ts";
import {
  hold,
  HOLD_CLIENTS,
  HOLD_MS,
  HOLD_POOL,
  type HoldRow,
} from "./hold.ts";
import { type IdleRow, idleRow } from "./memory.ts";
import { type PingRow, pingRow } from "./ping-pong.ts";
import { plural } from "./format.ts";
import type { Progress } from "./progress.ts";
import {
  BARE,
  label,
  type Mode,
  type Server,
  type Target,
  withServer,
} from "./runner.ts";
import type { Runtime } from "./runtimes.ts";
import { type StormRow, stormRow } from "./storm.ts";

export type Settings = {
  modes: Mode[];
  conns: number[];
  work: number; // the hold test's --work, CPU ms per line
  seconds: number;
  rounds: number;
  idle: number;
  framingMiB: number;
  storm: number;
  peers: boolean; // each runtime's bare loop too, and the modes on Bun
  runtimes: Runtime[]; // Deno, and with --peers those found
};

export type Results = {
  hold: HoldRow[];
  ping: PingRow[];
  idle: IdleRow[];
  framing: FramingRow[];
  storm: StormRow[];
};

// What one server is started for: its steps, each with a guess of its
// seconds for the time-left estimate.
type Job = { target: Target; args: string[]; steps: Step[] };
type Step = {
  what: string;
  seconds: number;
  run: (s: Server) => Promise<void>;
};

const START = 1; // seconds to start a server and stop it, about

export function plan(options: Settings) {
  const results: Results = {
    hold: [],
    ping: [],
    idle: [],
    framing: [],
    storm: [],
  };
  return { jobs: jobs(options, results), results };
}

export function estimates(jobs: Job[]): number[] {
  return jobs.flatMap((job) => job.steps.map((step) => step.seconds));
}

export async function run(jobs: Job[], progress: Progress) {
  for (const job of jobs) {
    await withServer(job.target, job.args, async (server) => {
      for (const step of job.steps) {
        progress.next(step.what);
        await step.run(server);
      }
    });
  }
  progress.end();
}

function jobs(options: Settings, results: Results): Job[] {
  const deno = options.modes.map((mode): Target => ({ mode, runtime: "deno" }));
  // With --peers, each runtime's bare loop first, then the modes on it.
  // The modes run on Deno and on Bun (through bun/deno-shim.ts); Node and
  // C have only their bare loop.
  const all = options.peers
    ? options.runtimes.flatMap((runtime): Target[] => [
      { mode: BARE, runtime },
      ...(runtime === "deno" || runtime === "bun"
        ? options.modes.map((mode) => ({ mode, runtime }))
        : []),
    ])
    : deno;
  return [
    ...deno.map((target) => holdJob(target, options.work, results)),
    ...Array.from(
      { length: options.conns.length ? options.rounds : 0 },
      (_, round) =>
        all.map((target) => pingJob(target, round + 1, options, results)),
    ).flat(),
    ...(options.idle ? all.map((t) => idleJob(t, options, results)) : []),
    ...(options.framingMiB
      ? deno.map((target) => framingJob(target, options, results))
      : []),
    ...(options.storm
      ? [...deno, { mode: BARE, runtime: "deno" } as Target]
        .map((target) => stormJob(target, options, results))
      : []),
  ];
}

// fixed-pool gets as many workers as the test has clients; it is the only
// mode whose pool caps how many are served at once.
function poolArgs({ mode }: Target, pool: number) {
  return mode === "fixed-pool" ? ["--pool-size", `${pool}`] : [];
}

function holdJob(target: Target, work: number, results: Results): Job {
  const mode = target.mode as Mode;
  const turns = mode === "serial" ? HOLD_CLIENTS : 2;
  return {
    target,
    args: [...poolArgs(target, HOLD_POOL), "--work", `${work}`],
    steps: [{
      what: `(a) hold: ${label(target, HOLD_POOL)}, ${HOLD_CLIENTS} clients`,
      seconds: START + (turns * HOLD_MS + HOLD_CLIENTS * work) / 1000,
      run: async (server) => {
        results.hold.push(await hold(server, mode, work));
      },
    }],
  };
}

function idleJob(target: Target, options: Settings, results: Results): Job {
  return {
    target,
    args: poolArgs(target, options.idle),
    steps: [{
      what: `(c) memory: ${label(target, options.idle)}, ` +
        plural(options.idle, "idle connection"),
      seconds: START + 2 + options.idle / 1000,
      run: async (server) => {
        results.idle.push(await idleRow(server, options.idle));
      },
    }],
  };
}

function pingJob(
  target: Target,
  round: number,
  options: Settings,
  results: Results,
): Job {
  const pool = Math.max(...options.conns);
  const rounds = options.rounds > 1
    ? `, round ${round} of ${options.rounds}`
    : "";
  return {
    target,
    args: poolArgs(target, pool),
    steps: options.conns.map((conns, i) => ({
      what: `(b) ping-pong${rounds}: ${label(target, pool)}, ` +
        plural(conns, "connection"),
      seconds: (i ? 0 : START + 1) + options.seconds + 0.5,
      run: async (server) => {
        results.ping.push(await pingRow(server, conns, round, options));
      },
    })),
  };
}

function framingJob(target: Target, options: Settings, results: Results): Job {
  const mib = options.framingMiB;
  const name = label(target, HOLD_POOL); // fixed-pool's default pool
  return {
    target,
    args: ["--max-line", `${Math.max(...LINE_LENGTHS)}`],
    steps: [{
      what: `(d) framing: ${name}, ${mib} MiB a line length`,
      seconds: START + mib * LINE_LENGTHS.length / 20,
      run: async (server) => {
        results.framing.push(await framingRow(server, mib, HOLD_POOL));
      },
    }],
  };
}

function stormJob(target: Target, options: Settings, results: Results): Job {
  const { storm, seconds } = options;
  return {
    target,
    args: poolArgs(target, storm),
    steps: [{
      what: `(e) storm: ${label(target, storm)}, ${plural(storm, "client")} ` +
        "at once",
      seconds: START + 1 + seconds,
      run: async (server) => {
        results.storm.push(await stormRow(server, storm, seconds));
      },
    }],
  };
}
