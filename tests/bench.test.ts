// The benchmark, run small: its tables, its orderings that hold on any
// machine, its chart, its errors, and that it stops its servers on Ctrl+C.
// Speed is never asserted: only structure, and what the models dictate.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  Child,
  isAlive,
  ROOT,
  runScript,
  unusedPort,
  withServer,
} from "./helpers.ts";
import type { PingRow } from "../bench/ping-pong.ts";
import { ratioTable } from "../bench/ratios.ts";

const BENCH = "bench/bench.ts";
const STORM = "bench/storm.ts";

// The bench is a Deno tool (`deno task bench`); under Bun there is no Deno
// to start it with.
const skip = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" &&
  "the bench runs under Deno only";
const LONG = { skip, timeout: 120_000 };

type Run = { code: number | null; stdout: string; stderr: string };

// Runs the bench as `deno task bench` does, killing it after two minutes.
async function bench(args: string[], shell = "", env?: Env): Promise<Run> {
  const child = start(args, shell, env);
  const timer = setTimeout(() => child.process.kill("SIGKILL"), 120_000);
  const { code } = await child.exited;
  clearTimeout(timer);
  return { code, stdout: child.stdoutLines.join("\n"), stderr: child.stderr };
}

type Env = Record<string, string | undefined>;

// `shell`, if given, runs first in `sh -c` (e.g. `ulimit -n 256`).
function start(args: string[], shell = "", env?: Env): Child {
  const deno = [process.execPath, "run", "-A", BENCH, ...args];
  const [file, ...argv] = shell
    ? ["sh", "-c", `${shell}; exec "$@"`, "sh", ...deno]
    : deno;
  const stdio = ["ignore", "pipe", "pipe"] as const;
  return new Child(spawn(file, argv, { cwd: ROOT, stdio: [...stdio], env }));
}

// The cells of the markdown table row that starts with `server`, after the
// heading that contains `heading`.
function row(stdout: string, heading: string, server: string, nth = 0) {
  const section = stdout.slice(stdout.indexOf(heading));
  const rows = section.split("\n")
    .filter((line) => line.startsWith(`| ${server} `))
    .map((line) => line.split("|").slice(1, -1).map((cell) => cell.trim()));
  assert.ok(rows[nth], `no row ${nth} for ${server} under ${heading}`);
  return rows[nth];
}

const ms = (cell: string) => Number(cell.replace(/ ms$/, ""));
const number = (cell: string) => Number(cell.replace(/,/g, ""));

// One small run serves most tests below: started by the first that needs it.
const dir = mkdtempSync(join(tmpdir(), "bench-test-"));
const svgFile = join(dir, "bench.svg");
const timelineFile = join(dir, "timeline.svg");
after(() => rmSync(dir, { recursive: true, force: true }));
const smallArgs = ["--modes", "serial,thread-per-connection", "--conns"]
  .concat(["1,4", "--seconds", "1", "--idle", "20", "--svg", svgFile])
  .concat(["--framing-mib", "1", "--timeline", timelineFile])
  .concat(["--storm", "40"]);
let small: Promise<Run> | undefined;
const smallRun = () => small ??= bench(smallArgs);

test("bench runs small and exits 0", LONG, async () => {
  const { code, stdout, stderr } = await smallRun();
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /error/);
  const headings = ["## (a) Hold", "## (b) Ping-pong", "## (c) Memory"]
    .concat(["## (d) Framing", "## (e) Connect storm"]);
  for (const heading of headings) {
    assert.ok(stdout.includes(heading), `no ${heading} in:\n${stdout}`);
  }
});

test(
  "bench progress: a line per step on a pipe, and the time left",
  LONG,
  async () => {
    const { stderr } = await smallRun();
    assert.doesNotMatch(stderr, /\r/); // no updating line in a pipe
    const steps = stderr.split("\n").filter((line) =>
      /^\[\d+\/13\] /.test(line)
    );
    assert.equal(steps.length, 13, stderr);
    const left = / \(about (?:(\d+) min )?(\d+) s left\)$/;
    assert.equal(
      steps[0].replace(left, ""),
      "[1/13] (a) hold: serial, 20 clients",
    );
    assert.equal(
      steps[12].replace(left, ""),
      "[13/13] (e) storm: bare loop on Deno, 40 clients at once",
    );
    // Every step says how long is left, less and less.
    const seconds = steps.map((step) => {
      const [, min = "0", sec] = left.exec(step) ?? assert.fail(step);
      return 60 * Number(min) + Number(sec);
    });
    assert.deepEqual(seconds, [...seconds].sort((a, b) => b - a));
  },
);

// `script` (util-linux) runs the bench on a pseudo-terminal: its progress is
// then one line, written over every second.
test("bench progress on a terminal: one line, updated", {
  ...LONG,
  skip: skip || (!existsSync("/usr/bin/script") && "needs util-linux script"),
}, async () => {
  const args = ["--modes", "thread-per-connection", "--conns", "1"]
    .concat(["--seconds", "3", "--idle", "0", "--framing-mib", "0"])
    .concat(["--storm", "0"]);
  const command = [process.execPath, "run", "-A", BENCH, ...args]
    .map((word) => `'${word}'`).join(" ");
  const terminal = new Child(spawn("script", ["-qec", command, "/dev/null"], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  }));
  const { code } = await terminal.exited;
  const output = terminal.stdoutLines.join("\n");
  assert.equal(code, 0, output);
  const shown = output.split("\r\x1b[K").slice(1); // each time the line is drawn
  const pingPong = shown.filter((line) => line.startsWith("[2/2] (b)"));
  assert.ok(pingPong.length >= 2, `not updated:\n${JSON.stringify(output)}`);
  assert.notEqual(pingPong[0], pingPong.at(-2), "the time left stood still");
  // Drawn over, never below: no line break until the line is cleared.
  assert.ok(shown.slice(0, -1).every((line) => !line.includes("\n")));
  assert.match(shown.at(-1)!, /^Deno /); // cleared, then the report
});

test("bench hold: serial's waits stack up", LONG, async () => {
  const { stdout } = await smallRun();
  const serial = row(stdout, "(a) Hold", "serial");
  const perConn = row(stdout, "(a) Hold", "thread-per-connection");
  assert.equal(serial[1], "20 of 20");
  assert.equal(perConn[1], "20 of 20");
  // Serial serves the next client only after the last held its 200 ms: at
  // least 20 x 200 ms in all, however fast the machine. Everyone holds once.
  assert.ok(ms(serial[4]) >= 20 * 200 - 100, `serial total ${serial[4]}`);
  assert.ok(ms(perConn[4]) >= 200 - 10, `per-connection total ${perConn[4]}`);
  assert.ok(ms(serial[4]) > 3 * ms(perConn[4]), "serial not 3x slower");
  assert.ok(ms(serial[3]) > ms(perConn[3]), "serial's last waited less");
});

test("bench ping-pong: every served connection got replies", LONG, async () => {
  const { stdout } = await smallRun();
  const served = {
    serial: ["1 of 1", "1 of 4"],
    "thread-per-connection": ["1 of 1", "4 of 4"],
  };
  for (const [server, expected] of Object.entries(served)) {
    expected.forEach((cell, nth) => {
      const cells = row(stdout, "(b) Ping-pong", server, nth);
      assert.equal(cells[2], cell, cells.join(" | "));
      assert.ok(number(cells[3]) > 0, `no replies: ${cells.join(" | ")}`);
      assert.ok(ms(cells[4]) > 0 && ms(cells[5]) >= ms(cells[4]));
      assert.doesNotMatch(cells[8], /wrong|failed/);
    });
  }
  const waiting = row(stdout, "(b) Ping-pong", "serial", 1)[8];
  assert.match(waiting, /3 waited in the backlog/);
});

test("bench memory: only accepted ones cost", LONG, async (t) => {
  if (!existsSync("/proc/self/status")) return t.skip("no /proc");
  const { stdout } = await smallRun();
  const serial = row(stdout, "(c) Memory", "serial");
  const perConn = row(stdout, "(c) Memory", "thread-per-connection");
  // Serial answers the first of the first quarter's five lanes; the other
  // four wait in the backlog, so the bench opens no more.
  assert.deepEqual(serial.slice(1, 3), ["5 of 20", "1"]);
  assert.equal(serial[6], "4 in the backlog, 15 not tried");
  assert.deepEqual(perConn.slice(1, 3), ["20 of 20", "20"]);
  assert.match(perConn[3], /^\d+\.\d (KiB|MiB)$/);
  assert.equal(perConn[6], "too few to measure: --idle 1000 or more");
});

test(
  "bench storm: who had a first reply, beside the bare loop",
  LONG,
  async () => {
    const { stdout } = await smallRun();
    // Serial serves its first client to the end: the other 39 wait in the
    // backlog for the whole row, connected but never answered.
    const serial = row(stdout, "(e) Connect storm", "serial");
    assert.deepEqual([serial[1], ...serial.slice(3, 5)], [
      "40 of 40",
      "1 of 40",
      "-",
    ]);
    for (const server of ["thread-per-connection", "bare loop on Deno"]) {
      const cells = row(stdout, "(e) Connect storm", server);
      assert.deepEqual([cells[1], cells[3]], ["40 of 40", "40 of 40"]);
      // connected by <= all by; 99% by <= all by
      assert.ok(ms(cells[2]) <= ms(cells[4]), cells.join("|"));
      assert.ok(ms(cells[4]) > 0 && ms(cells[5]) <= ms(cells[4]));
      assert.ok(number(cells[6]) > 0, `no round trips: ${cells.join(" | ")}`);
      assert.equal(cells[8], "");
    }
  },
);

test("bench framing: CPU per MiB for each line length", LONG, async (t) => {
  if (!existsSync("/proc/self/stat")) return t.skip("no /proc");
  const { stdout } = await smallRun();
  for (const server of ["serial", "thread-per-connection"]) {
    const cells = row(stdout, "(d) Framing", server);
    for (const cell of cells.slice(1, 4)) assert.match(cell, /^\d+\.\d ms$/);
    assert.match(cells[4], /^(\d+\.\dx|-)$/); // "-": too quick to count
  }
});

test(
  "bench --timeline draws a panel per mode, a lane per client",
  LONG,
  async () => {
    const { code } = await smallRun();
    assert.equal(code, 0);
    const svg = readFileSync(timelineFile, "utf8");
    assert.match(svg, /^<svg [^>]*>/);
    assert.ok(svg.includes(">serial: one at a time<"));
    assert.ok(svg.includes(">thread-per-connection: all at once<"));
    const served = svg.match(/fill="#2f8f4e"\/>/g) ?? [];
    assert.equal(served.length, 1 + 2 * 20); // the legend, then 20 a panel
  },
);

test("bench --svg writes a well-formed chart", LONG, async () => {
  assert.equal((await smallRun()).code, 0);
  const svg = readFileSync(svgFile, "utf8");
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" /);
  assertWellFormed(svg);
  assert.match(svg, /\(a\) hold/);
  assert.match(svg, /\(b\) ping-pong/);
  // A bar per hold result and per ping-pong row, 2 + 2 x 2, in the two
  // modes' colours, and their two legend swatches.
  const bars = svg.match(/<rect [^>]*fill="#(d95f02|1b9e77)"/g) ?? [];
  assert.equal(bars.length, 2 + 4 + 2);
});

// Every tag closed in order, attributes quoted, no stray "&" or "<".
function assertWellFormed(xml: string) {
  const open: string[] = [];
  const tag =
    /<(\/?)([a-z]+)((?:\s+[a-z][a-z0-9-]*="[^"<&]*")*)\s*(\/?)>|([^<]+)/gy;
  for (const match of xml.trim().matchAll(tag)) {
    const [, closing, name, , selfClosing, text] = match;
    if (text !== undefined) {
      assert.doesNotMatch(text, /&(?!(amp|lt|gt|quot);)/);
    } else if (closing) assert.equal(open.pop(), name);
    else if (!selfClosing) open.push(name);
  }
  const consumed = [...xml.trim().matchAll(tag)].map((m) => m[0]).join("");
  assert.equal(consumed, xml.trim(), "text the tag pattern cannot read");
  assert.deepEqual(open, []);
}

test("bench says when the open-file limit is too low for a row", {
  ...LONG,
  skip: skip || (!existsSync("/proc/self/limits") && "no /proc"),
}, async () => {
  const args = ["--modes", "thread-per-connection", "--conns", "1,300"]
    .concat(["--seconds", "1", "--idle", "0"]);
  const { code, stdout, stderr } = await bench(args, "ulimit -n 256");
  assert.equal(code, 0, stderr);
  const cells = row(stdout, "(b) Ping-pong", "thread-per-connection", 1);
  const skipped = "skipped: needs about 364 open files, the limit is 256; " +
    "run `ulimit -n 512` first";
  assert.equal(cells[8], skipped);
  const fits = row(stdout, "(b) Ping-pong", "thread-per-connection", 0);
  assert.ok(number(fits[3]) > 0, "the row that fits ran");
});

// --peers: each runtime's bare loop, and the modes on Bun, in rounds that
// take turns. Bun, Node and C take part where they are on PATH.
const onPath = (name: string) =>
  spawnSync(name, ["--version"], { stdio: "ignore" }).status === 0;
const peersArgs = ["--peers", "--modes", "thread-per-connection"]
  .concat(["--conns", "4", "--seconds", "1", "--idle", "0"])
  .concat(["--framing-mib", "0", "--storm", "0"]);

test("bench --peers: each runtime's bare loop, in rounds that take turns", {
  ...LONG,
  skip: skip || (!(onPath("bun") && onPath("node")) && "needs bun, node"),
}, async () => {
  const { code, stdout, stderr } = await bench([...peersArgs, "--rounds", "2"]);
  assert.equal(code, 0, stderr);
  const servers = ["bare loop on Deno", "thread-per-connection"]
    .concat(["bare loop on Bun", "thread-per-connection on Bun"])
    .concat(["bare loop on Node"])
    .concat(onPath("cc") ? ["bare loop in C"] : []); // built, if it can be
  for (const server of servers) {
    const cells = row(stdout, "(b) Ping-pong", server);
    assert.equal(cells[2], "4 of 4", cells.join(" | "));
    assert.ok(number(cells[3]) > 0, `no replies: ${cells.join(" | ")}`);
  }
  // The modes over their own runtime's bare loop: a median and its range.
  const ratio = /^\d+\.\d\d \(\d+\.\d\d-\d+\.\d\d\)$/;
  for (
    const server of ["thread-per-connection", "thread-per-connection on Bun"]
  ) {
    const cells = row(stdout, "(b) Against the bare loop", server);
    assert.match(cells[1], ratio);
    assert.match(cells[2], ratio);
  }
  // Round 1: every server, in turn; then round 2, in the same order.
  const order = stderr.split("\n").flatMap((line) =>
    /round (\d) of 2: (.*), 4 connections/.exec(line)?.slice(1, 3).join(" ") ??
      []
  );
  const round = (r: string) => servers.map((server) => `${r} ${server}`);
  assert.deepEqual(order, [...round("1"), ...round("2")]);
});

test("bench --peers without Bun, Node or cc on PATH: a line for each", {
  ...LONG,
  skip: skip || (process.platform !== "linux" && "PATH of one folder"),
}, async () => {
  const empty = mkdtempSync(join(tmpdir(), "bench-path-"));
  try {
    const { code, stdout, stderr } = await bench(peersArgs, "", {
      ...process.env,
      PATH: empty,
    });
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^Bun is not on PATH, so it has no rows here/m);
    assert.match(stdout, /^Node is not on PATH, so it has no rows here/m);
    assert.match(stdout, /^No C compiler \(cc\) is on PATH, so the bare /m);
    assert.doesNotMatch(stdout, /^\| \S.* (on Bun|on Node|in C) /m); // no rows
    // One round: the mode's replies/s over the bare loop's, as (b) shows.
    const bare = number(row(stdout, "(b) Ping-pong", "bare loop on Deno")[3]);
    const mode = number(
      row(stdout, "(b) Ping-pong", "thread-per-connection")[3],
    );
    const [, ratio] = row(stdout, "(b) Against", "thread-per-connection");
    assert.ok(Math.abs(Number(ratio) - mode / bare) < 0.01, ratio);
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

// The ratios from fixed rows: each against the bare loop of its own round
// and runtime, the median of the rounds and their range.
test("bench ratios: against the same round's bare loop", () => {
  const ping = (mode: string, runtime: string, round: number, rate: number) =>
    ({
      server: mode === "bare loop" ? `bare loop on ${runtime}` : mode,
      target: { mode, runtime },
      round,
      conns: 16,
      rate,
      p99: rate / 1000,
    }) as unknown as PingRow;
  const rows = [
    ping("bare loop", "deno", 1, 100),
    ping("serial", "deno", 1, 90),
    ping("bare loop", "deno", 2, 200),
    ping("serial", "deno", 2, 220),
    ping("bare loop", "deno", 3, 100),
    ping("serial", "deno", 3, 100),
  ];
  const lines = ratioTable(rows, { conns: [16], rounds: 3 }, []);
  const serial = lines.find((line) => line.startsWith("| serial "));
  assert.deepEqual(
    serial?.split("|").slice(1, -1).map((cell) => cell.trim()),
    ["serial", "1.00 (0.90-1.10)", "1.00 (0.90-1.10)"],
  );
  assert.ok(!lines.some((line) => line.startsWith("| bare loop")));
});

for (
  const args of [
    ["--bogus"],
    ["--modes", "serial,nope"],
    ["--conns", "16,0"],
    ["--seconds", "soon"],
    ["--idle", "-1"],
    ["--rounds", "0"],
  ]
) {
  test(`bench ${args.join(" ")}: one error line naming the flag, exit 2`, {
    skip,
  }, async () => {
    const { code, stdout, stderr } = await bench(args);
    const [error, ...hint] = stderr.trimEnd().split("\n");
    assert.match(error, /^error: /);
    assert.ok(error.includes(args[0]), `${error} does not name ${args[0]}`);
    assert.deepEqual(hint, ["run with --help for usage"]);
    assert.equal(stdout, "");
    assert.equal(code, 2);
  });
}

test("storm.ts alone storms its own small server", LONG, async () => {
  const { code, stdout: out, stderr } = await runScript(STORM, [
    ...["--clients", "30", "--seconds", "1"],
  ]);
  assert.equal(code, 0, stderr);
  assert.match(out, /^connected: +30 of 30, the last at \d+ ms$/m);
  assert.match(out, /^first reply: +30 within 1 s; the last at \d+ ms/m);
  assert.match(out, /^small server: +accepted 30, the last \d+ ms after/m);
  assert.match(out, /^ +first read from 30, the last at \d+ ms$/m);
});

test("storm.ts without a server there: one error line, exit 1", {
  skip,
}, async () => {
  const port = await unusedPort();
  const { code, stderr } = await runScript(STORM, [
    ...["--clients", "5", "--seconds", "1", "--port", `${port}`],
  ]);
  assert.equal(code, 1);
  assert.equal(
    stderr.trim(),
    `error: no client could connect to 127.0.0.1:${port}`,
  );
});

test("storm.ts without --allow-read says what it needs", { skip }, async () => {
  const args = ["run", "--allow-net=127.0.0.1", STORM]
    .concat(["--clients", "5", "--seconds", "1"]);
  const child = new Child(spawn(process.execPath, args, { cwd: ROOT }));
  const { code } = await child.exit();
  assert.equal(code, 1);
  assert.equal(
    child.stderr.trim(),
    "error: the client threads load bench/clients.ts: run with " +
      "--allow-read (or -A)",
  );
});

test("storm.ts: an ERROR line is no answer", LONG, async () => {
  // --max-line 5 refuses every 16-byte line with an ERROR line: connected,
  // replied to, but never answered.
  await withServer(
    "thread-per-connection",
    ["--max-line", "5"],
    async (server) => {
      const { code, stdout: out, stderr } = await runScript(STORM, [
        ...["--clients", "10", "--seconds", "1", "--port", `${server.port}`],
      ]);
      assert.equal(code, 0, stderr);
      assert.match(out, /^first reply: +0 within 1 s; 10 never did/m);
      assert.match(out, /; 10 wrong replies$/m);
    },
  );
});

test("storm.ts --clients 0: one error line, exit 2", { skip }, async () => {
  const { code, stderr } = await runScript(STORM, ["--clients", "0"]);
  assert.equal(code, 2);
  assert.equal(
    stderr.trim(),
    "error: --clients must be a whole number from 1 to 100000\n" +
      "run with --help for usage",
  );
});

test("bench --help prints usage and exits 0", { skip }, async () => {
  const { code, stdout, stderr } = await bench(["--help"]);
  assert.match(stdout, /^usage: deno task bench /);
  assert.equal(stderr, "");
  assert.equal(code, 0);
});

test("bench stops its servers on Ctrl+C and exits 130", {
  ...LONG,
  skip: skip || (process.platform !== "linux" && "finds servers in /proc"),
}, async () => {
  const child = start(["--modes", "thread-per-connection", "--idle", "0"]);
  try {
    await waitFor(() => child.stderr.includes("ping-pong"));
    const servers = childrenOf(child.pid);
    assert.equal(servers.length, 1, "one server runs during ping-pong");
    child.signal("SIGINT");
    assert.equal((await child.exit()).code, 130);
    assert.deepEqual(servers.filter(isAlive), []);
    assert.equal(child.stdoutLines.join(""), ""); // no tables: interrupted
  } finally {
    await child.kill();
  }
});

// The PIDs of a process's children, from /proc: each thread lists its own.
function childrenOf(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((task) => {
    const children = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8");
    return children.trim() ? children.trim().split(" ").map(Number) : [];
  });
}

async function waitFor(ready: () => boolean) {
  const deadline = Date.now() + 60_000;
  while (!ready()) {
    assert.ok(Date.now() < deadline, "timed out");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test(
  "bench hold --work: one event loop does the lines' work in turn",
  LONG,
  async () => {
    const args = ["--modes", "thread-per-connection", "--conns", "0", "--idle"]
      .concat(["0", "--framing-mib", "0", "--storm", "0", "--work", "100"]);
    const { code, stdout, stderr } = await bench(args);
    assert.equal(code, 0, stderr);
    const heading = "each line costs 100 ms of CPU";
    const [, replied, , max] = row(stdout, heading, "thread-per-connection");
    assert.equal(replied, "20 of 20");
    // 20 lines of 100 ms on one thread: the last reply cannot come sooner.
    assert.ok(ms(max) >= 2000, `last reply after ${max}`);
    assert.doesNotMatch(stdout, /## \(b\)/); // --conns 0: no ping-pong
  },
);
