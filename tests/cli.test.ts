// The command line of every script, and how every mode shuts down.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { once } from "node:events";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CLIENT,
  expectReply,
  IS_BUN,
  MODE_NAMES,
  MODES,
  PATIENCE_MS,
  pushWithoutReading,
  ROOT,
  runScript,
  type Server,
  TestClient,
  unstamped,
  unusedPort,
  withClient,
  withServer,
} from "./helpers.ts";

// The server exits 0, and its last line is the summary.
async function expectStopped(server: Server, summary: string): Promise<void> {
  assert.deepEqual(await server.exit(), { code: 0, signal: null });
  assert.equal(server.stdoutLines.at(-1), summary);
}

const stopping = /^stopping: /;

// True if a connect to `port` is refused: nothing listens there.
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => (socket.destroy(), resolve(false)));
    socket.once("error", (err: Error & { code?: string }) => {
      resolve(err.code === "ECONNREFUSED");
    });
  });
}

// Checks `ready` every 50 ms until it holds; false after PATIENCE_MS.
async function pollUntil(ready: () => Promise<boolean>): Promise<boolean> {
  for (const deadline = Date.now() + PATIENCE_MS; Date.now() < deadline;) {
    if (await ready()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

// Every flag a script takes, with its default as --help must show it.
const FLAGS: Record<string, string[]> = {
  [CLIENT]: ["--host H (127.0.0.1)", "--port N (8080)", "--framing F (line)"]
    .concat(["--message TEXT", "--connect-timeout S (5)", "--help"]),
};
const SERVER_FLAGS = ["--host H (127.0.0.1)", "--port N (8080)"]
  .concat(["--backlog N (511)", "--framing F (line)", "--max-line N (65536)"])
  .concat(["--idle-timeout S (300)", "--grace S (5)", "--quiet (off)"])
  .concat(["--work MS (0)", "--help"]);
const MODE_FLAGS: Record<string, string> = {
  "fixed-pool": "--pool-size N (10)",
  "thread-per-connection": "--max-connections N (0)",
  "worker-pool": "--workers N (",
};
for (const mode of MODE_NAMES) {
  FLAGS[MODES[mode]] = [...SERVER_FLAGS, ...[MODE_FLAGS[mode] ?? []].flat()];
}

// The Deno tools (Bun skips them: see the README).
if (!IS_BUN) {
  FLAGS["bench/bench.ts"] = ["--modes LIST", "--conns LIST (1,16,256)"]
    .concat(["--seconds S (3)", "--idle N (4000)", "--framing-mib N (16)"])
    .concat(["--svg FILE (none)", "--workers N (", "--storm N", "--help"])
    .concat(["--rounds N (1)", "--peers (off)", "--work MS (0)"]);
  FLAGS["bench/storm.ts"] = ["--clients N (1024)", "--seconds S (3)"]
    .concat(["--port N", "--serve", "--help"]);
  FLAGS["deploy/cluster.ts"] = ["--port N (8080)", "--mode M", "--help"];
  FLAGS["tests/soak.ts"] = ["--connections N (10000)", "--seed N (1)"]
    .concat(["--messages N (1000000)", "--warm-up N (10000)", "--help"])
    .concat(["--concurrency N (100)", "--pool-size N (200)", "--modes LIST"]);
}

for (const script of Object.keys(FLAGS)) {
  test(`${script} --help: a line per flag, saying its default`, async () => {
    const { code, stdout, stderr } = await runScript(script, ["--help"]);
    assert.match(stdout, /^usage: /);
    const lines = stdout.split("\n");
    for (const flag of FLAGS[script]) {
      const [name, value, defaultValue = ""] = flag.split(" ");
      const line = lines.find((line) => line.includes(`${name} `));
      assert.ok(line, `no line for ${name}:\n${stdout}`);
      if (value && !value.startsWith("(")) assert.ok(line.includes(value));
      const shown = value?.startsWith("(") ? value : defaultValue;
      assert.ok(line.includes(shown), `${name}: no "${shown}" in ${line}`);
    }
    assert.equal(stderr, "");
    assert.equal(code, 0);
  });
}

for (const mode of MODE_NAMES) {
  const badCommandLines = [
    ["--bogus"],
    ["--port", "70000"],
    ["--port", "abc"],
    ["--port", "-1"], // parseArgs alone would call it "ambiguous"
    ["--backlog", "-5"],
    ["--grace", "-1"],
    ["--framing", "xml"],
    ["--work", "60001"],
    ["--work", "-1"],
    ...(mode === "fixed-pool" ? [["--pool-size", "0"]] : []),
    ...(mode === "worker-pool" ? [["--workers", "0"]] : []),
  ];
  for (const args of badCommandLines) {
    test(`${mode} ${args.join(" ")}: one error line naming the flag, exit 2`, async () => {
      const { code, stdout, stderr } = await runScript(MODES[mode], args);
      const [error, ...hint] = stderr.trimEnd().split("\n");
      assert.match(error, /^error: /);
      assert.ok(error.includes(args[0]), `${error} does not name ${args[0]}`);
      if (/^-?\d+$/.test(args[1])) {
        assert.match(error, /must be a whole number/);
      }
      assert.ok(hint.length <= 1, `more than an error and a hint:\n${stderr}`);
      assert.doesNotMatch(hint.join("\n"), /^error:/);
      assert.doesNotMatch(stderr, /^\s+at /m); // no stack trace
      assert.equal(stdout, "");
      assert.equal(code, 2);
    });
  }

  test(`${mode}: a port in use is one error line, exit 1`, () =>
    withServer(mode, [], async (server) => {
      const port = String(server.port);
      const second = await runScript(MODES[mode], ["--port", port]);
      assert.equal(
        second.stderr,
        `error: 127.0.0.1:${port} is already in use\n`,
      );
      assert.equal(second.code, 1);
    }));

  test(`${mode}: an IPv6 address is written in brackets: [::1]:port`, () =>
    withServer(mode, ["--host", "::1"], async (server) => {
      const address = `[::1]:${server.port}`;
      assert.equal(server.stdoutLines[0], `${mode} listening on ${address}`);
      const socket = net.connect({ host: "::1", port: server.port });
      try {
        await once(socket, "connect");
        const peer = `\\[::1\\]:${socket.localPort}`;
        await server.waitForLine(
          new RegExp(`^#1 ${peer} (worker \\d+ )?opened`),
        );
      } finally {
        socket.destroy();
      }
      const again = ["--host", "::1", "--port", String(server.port)];
      const second = await runScript(MODES[mode], again);
      assert.equal(second.stderr, `error: ${address} is already in use\n`);
    }));

  test(`${mode}: the first line names the mode and the real port`, () =>
    withServer(mode, [], async (server) => {
      assert.notEqual(server.port, 0);
      assert.equal(
        server.stdoutLines[0],
        `${mode} listening on 127.0.0.1:${server.port}`,
      );
      // The port it names is the one it serves on.
      const client = await TestClient.connect(server.port);
      try {
        await client.write("hi\n");
        await expectReply(client, "hi");
      } finally {
        client.close();
      }
    }));

  test(`${mode}: SIGTERM lets an open connection finish, then exits 0 without waiting out --grace`, () =>
    withClient(mode, ["--grace", "30"], async (client, server) => {
      await client.write("one\ntwo\n");
      server.signal("SIGTERM");
      await expectReply(client, "one");
      await expectReply(client, "two");
      // Stopping, the server leaves the connection open: no goodbye yet.
      await server.waitForLine(stopping);
      assert.ok(await client.silentFor(300), "the server cut the client off");
      client.close();
      assert.equal(await client.rest(), "");
      // server.exit() kills the server after 15 s, half the grace: a server
      // that waits out the grace fails here.
      await expectStopped(server, "stopped: 1 connection, 2 messages");
    }));

  for (const grace of ["1", "0"]) {
    test(`${mode} --grace ${grace}: SIGTERM ends a connection still open after the grace`, () =>
      withClient(mode, ["--grace", grace], async (client, server) => {
        server.signal("SIGTERM");
        assert.equal(await client.nextLine(), "ERROR server shutting down");
        assert.equal(await client.rest(), ""); // then the connection closes
        await expectStopped(server, "stopped: 1 connection, 0 messages");
      }));
  }

  // A reply that is being written when the signal comes is finished first,
  // and the goodbye follows it. Here the client stops reading until the
  // server is stuck mid-reply (the client's own writes stall), then reads.
  test(
    `${mode} --grace 0: a reply in flight is finished, then the goodbye`,
    { timeout: 60_000 },
    () =>
      withClient(mode, ["--grace", "0"], async (client, server) => {
        const push = await pushWithoutReading(client.socket);
        assert.ok(push.stalled, "the server never got stuck writing");
        server.signal("SIGTERM");
        await server.waitForLine(stopping);
        client.socket.resume();
        const lines = (await client.rest()).split("\n");
        assert.equal(lines.pop(), "", "ends with a whole line");
        assert.equal(lines.pop(), "ERROR server shutting down");
        assert.equal(unstamped(lines.pop()!), "x".repeat(1023));
        assert.equal((await server.exit()).code, 0);
      }),
  );

  test(`${mode}: after SIGTERM, new clients are refused while the open one is served`, () =>
    withClient(mode, ["--grace", "30"], async (served, server) => {
      server.signal("SIGTERM");
      await server.waitForLine(stopping);
      // Refused once the listener is closed; a handshake may complete until
      // the kernel has dropped the listening socket, with no one to accept.
      assert.ok(await pollUntil(() => refused(server.port)), "still accepting");
      await served.write("still served\n");
      await expectReply(served, "still served");
      served.close();
      await expectStopped(server, "stopped: 1 connection, 1 message");
    }));

  // 128 + the signal's number, as a shell reports a process it killed.
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    test(`${mode}: a second ${signal} exits at once with status ${code}`, () =>
      withClient(mode, ["--grace", "30"], async (_client, server) => {
        server.signal(signal);
        await server.waitForLine(stopping);
        // A second press comes later than the doubled Ctrl+C of the next test.
        await new Promise((resolve) => setTimeout(resolve, 300));
        server.signal(signal);
        assert.deepEqual(await server.exit(), { code, signal: null });
        assert.ok(
          !server.stdoutLines.some((line) => line.startsWith("stopped:")),
        );
      }));
  }

  // In a terminal, Ctrl+C reaches both `deno task` and the server, and the
  // task forwards it again: the server sees one press as two signals.
  test(`${mode}: one Ctrl+C delivered twice still shuts down gracefully`, () =>
    withClient(mode, ["--grace", "1"], async (client, server) => {
      server.signal("SIGINT");
      server.signal("SIGINT");
      assert.equal(await client.nextLine(), "ERROR server shutting down");
      await expectStopped(server, "stopped: 1 connection, 0 messages");
    }));
}

test("serial: on SIGTERM a client waiting in the backlog is dropped, the served one finishes", () =>
  withClient("serial", ["--grace", "30"], async (served, server) => {
    const waiting = await TestClient.connect(server.port);
    try {
      await waiting.write("waiting\n");
      server.signal("SIGTERM");
      await server.waitForLine(stopping);

      await waiting.waitClosed(); // closed or reset
      assert.equal(
        waiting.received.length,
        0,
        "the waiting client got a reply",
      );

      assert.equal(served.isClosed, false);
      await served.write("still served\n");
      await expectReply(served, "still served");
      served.close();
      await expectStopped(server, "stopped: 1 connection, 1 message");
    } finally {
      waiting.close();
    }
  }));

// A file copied out of the repository, run with the runtime of the tests
// from a folder of its own (so Bun finds no bunfig.toml, and no shim).
function runAlone(script: string, args: string[], preloadShim = false) {
  const dir = mkdtempSync(join(tmpdir(), "alone-"));
  try {
    const file = join(dir, script.split("/").at(-1)!);
    copyFileSync(join(ROOT, script), file);
    const shim = ["--preload", join(ROOT, "bun/deno-shim.ts")];
    const runtime = IS_BUN
      ? [...(preloadShim ? shim : []), file]
      : ["run", "--allow-net", file];
    return spawnSync(process.execPath, [...runtime, ...args], {
      cwd: dir,
      encoding: "utf8",
      timeout: 60_000,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const script of [MODES.serial, MODES["worker-pool"], CLIENT]) {
  test(`${script} copied alone, on Bun without the shim: one line, exit 1`, {
    skip: !IS_BUN && "Deno needs no shim",
  }, () => {
    const { status, stderr } = runAlone(script, ["--port", "0"]);
    assert.equal(status, 1);
    const name = script.split("/").at(-1);
    assert.match(stderr, new RegExp(`^error: ${name} needs Deno, or Bun `));
    assert.ok(stderr.includes(`bun --preload ./deno-shim.ts ${name}`));
    assert.equal(stderr.trimEnd().split("\n").length, 1, stderr);
  });
}

test("the client copied alone suggests a server command for a copied file", async () => {
  const port = await unusedPort();
  const { status, stderr } = runAlone(CLIENT, ["--port", `${port}`], true);
  assert.equal(status, 1);
  const start = IS_BUN
    ? "bun --preload ./deno-shim.ts serial.ts (copies of both)"
    : "deno run --allow-net serial.ts (a copy of modes/serial.ts)";
  assert.equal(
    stderr,
    `error: cannot connect to 127.0.0.1:${port} (connection refused); ` +
      `start a server first, e.g. ${start}\n`,
  );
});
