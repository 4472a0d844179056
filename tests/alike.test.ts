// Each mode file stands alone, so what all modes share is written four
// times. Below the banner it must stay the same in all four, but for the
// lines that name a mode's own flags or its workers, declared here whole: a
// fix made in one file and forgotten in another fails this test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { type Mode, MODE_NAMES, MODES, ROOT } from "./helpers.ts";

const BANNER =
  "// ---- The rest is the same in every mode file, but for the flags a mode adds.";

// The single-threaded modes keep their accept-trouble time in a variable;
// worker-pool's threads share it, and share the connection count.
const ONE_THREAD = [
  "      if (performance.now() - troubleLoggedAt > 10_000) {",
  "        troubleLoggedAt = performance.now();",
  "let troubleLoggedAt = -Infinity;",
  "  readonly id = server.connections;",
];
const OWN: Record<Mode, string[]> = {
  serial: ONE_THREAD,
  "fixed-pool": [
    ...ONE_THREAD,
    "  --pool-size N       workers, each serving one connection at a time (10)",
    '      "pool-size": { type: "string", default: "10" },',
    '    poolSize: int("pool-size", flag["pool-size"]),',
  ],
  "thread-per-connection": [
    ...ONE_THREAD,
    "  --max-connections N stop accepting while N are open; 0: no cap (0)",
    '      "max-connections": { type: "string", default: "0" },',
    '    maxConnections: int("max-connections", flag["max-connections"], 0),',
  ],
  "worker-pool": [
    "      if (claimTroubleLog()) { // one line for all workers: see there",
    "  if (inWorker) return mainThread.postMessage({ log: line }); // one writer",
    "  readonly id = Atomics.add(worker.connectionCounter, 0, 1) + 1; // see there",
    "const WORKERS = Math.min(navigator.hardwareConcurrency, 256); // a core each",
    "const USAGE = `usage: deno run --allow-net --allow-read --unstable-net",
    "  modes/${MODE}.ts [flags]",
    "  --workers N         threads, each with a listener (${WORKERS}: one a core)",
    '      workers: { type: "string", default: `${WORKERS}` },',
    '    workers: int("workers", flag.workers, 1, 256),',
  ],
};
// The first line of the usage, in the modes that need no more permissions.
const USAGE =
  "const USAGE = `usage: deno run --allow-net modes/${MODE}.ts [flags]";

// The lines from the banner to the next banner ("// ---- "), less the
// mode's own: each declared line must be there, and is taken out once.
function shared(mode: Mode): string[] {
  const lines = readFileSync(ROOT + MODES[mode], "utf8").split("\n");
  const start = lines.indexOf(BANNER);
  assert.notEqual(start, -1, `${mode}: no banner`);
  const end = lines.findIndex((line, i) =>
    i > start && line.startsWith("// ---- ")
  );
  const part = lines.slice(start, end);
  const own = mode === "worker-pool" ? OWN[mode] : [...OWN[mode], USAGE];
  for (const line of own) {
    const at = part.indexOf(line);
    assert.notEqual(at, -1, `${mode}: declared line not found: ${line}`);
    part.splice(at, 1);
  }
  return part.filter((line) => line !== ""); // blank lines are no matter
}

for (const mode of MODE_NAMES.filter((mode) => mode !== "serial")) {
  test(`${mode}: below the banner, the same as serial but for its own lines`, () => {
    assert.deepEqual(shared(mode), shared("serial"));
  });
}

// How the single-threaded modes listen and stop, after a second banner.
const tail = (mode: Mode) => {
  const text = readFileSync(ROOT + MODES[mode], "utf8");
  return text.slice(text.indexOf("// ---- Listening and stopping"));
};
for (const mode of ["fixed-pool", "thread-per-connection"] as const) {
  test(`${mode}: listening and stopping, the same as serial`, () => {
    assert.equal(tail(mode), tail("serial"));
  });
}
