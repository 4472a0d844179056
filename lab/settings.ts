// What the page may change, and the command line each panel runs. The page
// may send anything: every value is checked here, against a range, before it
// reaches a command line or a socket.

import { type Mode, MODES } from "../bench/runner.ts"; // the four, by name

export { MODES };
export type { Mode };
export type Runtime = "deno" | "bun";

// Only the repository's own mode files: a mode is one of MODES.
const file = (mode: Mode) => `modes/${mode}.ts`;

// The permissions each file needs under Deno, as in deno.json's tasks.
const DENO_PERMISSIONS: Record<Mode, string[]> = {
  serial: ["--allow-net"],
  "fixed-pool": ["--allow-net"],
  "thread-per-connection": ["--allow-net"],
  "worker-pool": ["--allow-net", "--allow-read", "--unstable-net"],
};

// A server flag the page may set, and the values the lab accepts for it.
// `null` (an empty field on the page) leaves the flag out: the mode's own
// default. The ranges are the modes' own, kept small enough for a lab.
const SERVER_FLAGS = {
  backlog: { min: 1, max: 4096, optional: true },
  "pool-size": { min: 1, max: 100, optional: false },
  "max-connections": { min: 1, max: 2000, optional: true },
  workers: { min: 1, max: 16, optional: false },
  work: { min: 0, max: 60_000, optional: true },
};
export type Flag = keyof typeof SERVER_FLAGS;
export type ServerSettings = Partial<Record<Flag, number | null>>;

// The flags of each panel; `work` is set for all panels at once.
export const PANEL_FLAGS: Record<Mode, Flag[]> = {
  serial: ["backlog"],
  "fixed-pool": ["pool-size", "backlog"],
  "thread-per-connection": ["max-connections", "backlog"],
  "worker-pool": ["workers", "backlog"],
};

// Small pools by default, so that a few clicks fill them.
export const DEFAULTS: Record<Mode, ServerSettings> = {
  serial: { backlog: null, work: null },
  "fixed-pool": { "pool-size": 3, backlog: null, work: null },
  "thread-per-connection": {
    "max-connections": null,
    backlog: null,
    work: null,
  },
  "worker-pool": { workers: 2, backlog: null, work: null },
};

// The command that runs a panel's server: the repository's own mode file,
// unchanged, on a free port of this machine only, stopping at once when the
// lab restarts it (--grace 0).
export function command(
  runtime: Runtime,
  mode: Mode,
  settings: ServerSettings,
): string[] {
  const start = runtime === "bun"
    ? ["bun", file(mode)]
    : ["deno", "run", ...DENO_PERMISSIONS[mode], file(mode)];
  const flags = ["--host", "127.0.0.1", "--port", "0", "--grace", "0"];
  for (const flag of [...PANEL_FLAGS[mode], "work"] as Flag[]) {
    const value = settings[flag];
    if (value !== null && value !== undefined && !(flag === "work" && !value)) {
      flags.push(`--${flag}`, String(value));
    }
  }
  return [...start, ...flags];
}

// A mistake in what the page sent: the page shows the message.
export class InputError extends Error {}

export function checkMode(value: unknown): Mode {
  if (MODES.includes(value as Mode)) return value as Mode;
  throw new InputError(`no such panel: ${JSON.stringify(value)}`);
}

// One server setting of one panel, checked.
export function checkFlag(mode: Mode, flag: unknown, value: unknown) {
  if (flag !== "work" && !PANEL_FLAGS[mode].includes(flag as Flag)) {
    throw new InputError(`${mode} has no setting ${JSON.stringify(flag)}`);
  }
  const { min, max, optional } = SERVER_FLAGS[flag as Flag];
  if (value === null && optional) return { flag: flag as Flag, value: null };
  return { flag: flag as Flag, value: integer(`--${flag}`, value, min, max) };
}

// What each client does: send `lines` lines, `pause` ms apart, each after
// the reply to the last; then keep the connection open `hold` ms.
export type ClientSettings = { hold: number; lines: number; pause: number };
const CLIENT_RANGES = {
  hold: { min: 0, max: 60_000, what: "hold (ms)" },
  lines: { min: 1, max: 100, what: "lines" },
  pause: { min: 0, max: 10_000, what: "pause (ms)" },
};
export const CLIENT_DEFAULTS: ClientSettings = {
  hold: 3000,
  lines: 1,
  pause: 500,
};

export function checkClientSettings(input: Record<string, unknown>) {
  const settings = {} as ClientSettings;
  for (const [name, { min, max, what }] of Object.entries(CLIENT_RANGES)) {
    settings[name as keyof ClientSettings] = integer(
      what,
      input[name],
      min,
      max,
    );
  }
  return settings;
}

export function integer(
  what: string,
  value: unknown,
  min: number,
  max: number,
) {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new InputError(`${what} must be a whole number`);
  }
  if (value < min || value > max) {
    throw new InputError(`${what} must be from ${min} to ${max}`);
  }
  return value;
}
