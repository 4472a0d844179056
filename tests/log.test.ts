// A log reader who stops reading (`deno task conn | less`, left unscrolled)
// must not stop the server: it keeps serving, drops the lines it cannot
// write and counts them, and still stops on a signal.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  Child,
  expectReply,
  MODE_NAMES,
  MODES,
  PATIENCE_MS,
  ROOT,
  scriptArgs,
  TestClient,
  unusedPort,
} from "./helpers.ts";

// Each client is two log lines (opened, closed): 8,000 clients write far more
// than a pipe and the test's reading buffer hold.
const CLIENTS = 8000;

// A server whose stdout is a pipe that nobody reads, until `read()`.
async function startUnread(mode: keyof typeof MODES, flags: string[] = []) {
  const port = await unusedPort();
  const args = scriptArgs(MODES[mode], ["--port", String(port), ...flags]);
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  for (const deadline = Date.now() + PATIENCE_MS; Date.now() < deadline;) {
    try {
      (await TestClient.connect(port)).close(); // it is listening
      return { port, child, exited, read: () => new Child(child) };
    } catch {
      await new Promise((retry) => setTimeout(retry, 50));
    }
  }
  child.kill("SIGKILL");
  throw new Error(`${mode} did not listen on ${port}`);
}

async function serveClients(port: number) {
  for (let i = 0; i < CLIENTS; i++) {
    const client = await TestClient.connect(port);
    try {
      await client.write("hi\n");
      await expectReply(client, "hi");
    } finally {
      client.close();
    }
  }
}

for (const mode of MODE_NAMES) {
  test(`${mode}: a log nobody reads: every client served, SIGTERM stops it`, async () => {
    const { port, child, exited } = await startUnread(mode);
    try {
      await serveClients(port);
      process.kill(child.pid!, "SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), PATIENCE_MS);
      assert.equal(await exited, 0);
      clearTimeout(timer);
    } finally {
      child.kill("SIGKILL");
    }
  });
}

test("thread-per-connection: the lines a stalled reader missed are counted", async () => {
  const { port, child, read } = await startUnread("thread-per-connection");
  try {
    await serveClients(port);
    const log = read(); // reading again
    const dropped = await log.waitForLine(/^\(\d+ log lines dropped\)$/);
    process.kill(child.pid!, "SIGTERM");
    await log.waitForLine(/^stopped: 8001 connections, 8000 messages$/);
    // Every line but those dropped came, the first client's (a probe) too.
    const lines = log.stdoutLines.filter((line) => /^#\d+ /.test(line));
    assert.equal(lines.length + parseInt(dropped.slice(1)), 2 * CLIENTS + 2);
  } finally {
    child.kill("SIGKILL");
  }
});

// Two workers write to one stdout. A write that the pipe takes only in part
// leaves the rest of a line for later, and another thread's line can land in
// between: "#1573 … work#1794 … closed …" and "er 1 closed …". Each line must
// come whole, every line must come or be counted as dropped, and the summary
// comes last, even when the reader is still stalled as the server stops.
test("worker-pool: two workers' log lines come whole, never cut into each other", async () => {
  const { port, child, read } = await startUnread("worker-pool", [
    "--workers",
    "2",
  ]);
  try {
    await Promise.all([serveClients(port), serveClients(port)]);
    const ended = new Promise((resolve) => child.stdout!.on("close", resolve));
    process.kill(child.pid!, "SIGTERM");
    const log = read(); // reading again, as the server stops
    const timer = setTimeout(() => child.kill("SIGKILL"), PATIENCE_MS);
    assert.deepEqual(await log.exited, { code: 0, signal: null });
    await ended;
    clearTimeout(timer);
    const whole = new RegExp(
      String.raw`^(#\d+ 127\.0\.0\.1:\d+ worker [12] ` +
        String.raw`(opened|closed after \d+\.\d s, [01] messages?)` +
        String.raw`|\(\d+ log lines? dropped\)` +
        String.raw`|worker-pool listening on 127\.0\.0\.1:\d+` +
        String.raw`|stopping: 2 workers, waiting up to \d+ s` +
        String.raw`|stopped: 16001 connections, 16000 messages)$`,
    );
    const cut = log.stdoutLines.filter((line) => !whole.test(line));
    assert.deepEqual(cut, []);
    // Every line is written or counted as dropped: two a connection (the
    // probe's too), "stopping" and "stopped"...
    const isDropped = /^\((\d+) log lines? dropped\)$/;
    const lines = log.stdoutLines.filter((line) =>
      !isDropped.test(line) && !line.includes("listening on")
    );
    const dropped = log.stdoutLines.map((line) => line.match(isDropped))
      .reduce((sum, match) => sum + (match ? parseInt(match[1]) : 0), 0);
    assert.equal(lines.length + dropped, 2 * (2 * CLIENTS + 1) + 2);
    // ...and no connection's line comes after the summary.
    const summary = lines.findIndex((line) => line.startsWith("stopped: "));
    if (summary !== -1) assert.equal(summary, lines.length - 1);
  } finally {
    child.kill("SIGKILL");
  }
});
