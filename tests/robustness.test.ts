// Bad input and bad clients: each ends its own connection only, and none can
// make the server hold unbounded memory. Each behaviour is checked in every
// mode.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import {
  assertServes,
  expectReply,
  MiB,
  MODE_NAMES,
  PATIENCE_MS,
  pushWithoutReading,
  TestClient,
  unstamped,
  withClient,
  withServer,
} from "./helpers.ts";

const PUSH_TEST = { timeout: 60_000 };

for (const mode of MODE_NAMES) {
  test(`${mode}: a line over --max-line is refused`, () =>
    withClient(mode, ["--max-line", "10"], async (client, server) => {
      await client.write("0123456789\n0123456789\r\n");
      assert.equal(unstamped(await client.nextLine()), "0123456789");
      assert.equal(unstamped(await client.nextLine()), "0123456789");
      await client.write("0123456789A\n");
      assert.equal(await client.nextLine(), "ERROR line longer than 10 bytes");
      assert.equal(await client.rest(), "", "then closes");
      await assertServes(server);
    }));

  test(`${mode}: a long line is refused before its newline`, () =>
    withClient(mode, ["--max-line", "10"], async (client) => {
      // 10 bytes and a "\r" may still be a 10-byte line: the server waits.
      await client.write("x".repeat(10) + "\r");
      assert.ok(await client.silentFor(300), "refused a possible CRLF");
      await client.write("x"); // no longer a line of 10: refused at once
      assert.equal(await client.nextLine(), "ERROR line longer than 10 bytes");
      assert.equal(await client.rest(), "", "then closes");
    }));

  test(`${mode}: 11 bytes without "\r" are refused without waiting`, () =>
    withClient(mode, ["--max-line", "10"], async (client) => {
      await client.write("x".repeat(11)); // and never a "\n"
      assert.equal(await client.nextLine(), "ERROR line longer than 10 bytes");
      assert.equal(await client.rest(), "", "then closes");
    }));

  test(`${mode}: invalid UTF-8 becomes replacement characters`, () =>
    withClient(mode, [], async (client) => {
      await client.write(Buffer.from([0xff, 0xfe, 0x61, 0x0a]));
      assert.equal(unstamped(await client.nextLine()), "\uFFFD\uFFFDa");
      await client.write("next\n");
      assert.equal(unstamped(await client.nextLine()), "next");
    }));

  test(`${mode}: a client that resets mid-line`, () =>
    withClient(mode, [], async (client, server) => {
      await server.waitForLine(/^#1 .* opened/);
      await client.write("partial line without newline");
      client.socket.resetAndDestroy();
      await server.waitForLine(/^#1 .* closed/);
      await assertServes(server);
    }));

  // A server that kept reading while its replies could not be written would
  // have to hold them: 100 MiB in, 100 MiB of replies in its memory. Finishing
  // each write before the next read stops the push instead; what is left
  // waits in the kernel's socket buffers (about 10 MiB here).
  test(
    `${mode}: a client that never reads is stalled, not buffered`,
    PUSH_TEST,
    (t) =>
      withClient(mode, ["--idle-timeout", "300"], async (client, server) => {
        const measure = existsSync("/proc/self/status");
        await client.write("warm up\n");
        assert.equal(unstamped(await client.nextLine()), "warm up");
        const rssBefore = measure ? server.rssKiB() : 0;
        const push = await pushWithoutReading(client.socket);
        assert.ok(push.stalled, `push did not stall (${push.sent} bytes)`);
        assert.ok(push.sent < 64 * MiB, `stalled only at ${push.sent} bytes`);
        if (!measure) return t.skip("no /proc to read memory from");
        const grownMiB = (server.rssKiB() - rssBefore) / 1024;
        assert.ok(grownMiB < 32, `server memory grew ${grownMiB} MiB`);
      }),
  );

  test(`${mode}: an idle client is told and closed`, () =>
    withClient(mode, ["--idle-timeout", "1"], async (client, server) => {
      assert.equal(await client.nextLine(), "ERROR idle timeout");
      assert.equal(await client.rest(), "", "then closes");
      await server.waitForLine(/^#1 .* closed .*\(idle timeout\)$/);
    }));

  // 0 means never: the idle timer, which checks every second, must leave a
  // client that says nothing for 3 s alone, and serve its next line.
  test(`${mode}: --idle-timeout 0 never closes a silent client`, () =>
    withClient(mode, ["--idle-timeout", "0"], async (client, server) => {
      await client.write("before\n");
      await expectReply(client, "before");
      assert.ok(await client.silentFor(3000), "the server spoke unasked");
      await client.write("after\n");
      await expectReply(client, "after");
      const closed = server.stdoutLines.filter((line) => / closed /.test(line));
      assert.deepEqual(closed, []);
    }));

  // Without the timeout, a client that sends but never reads would pin its
  // connection (in serial and fixed-pool, a whole worker) forever.
  test(
    `${mode}: a client that sends but never reads is closed`,
    PUSH_TEST,
    () =>
      withClient(mode, ["--idle-timeout", "1"], async (client, server) => {
        // The push stalls, and the client waits on its stalled write: a paused
        // socket notices the close there (as an error or a reset: both fine).
        await pushWithoutReading(client.socket, PATIENCE_MS);
        await client.waitClosed();
        await server.waitForLine(/^#1 .* closed .*\(idle timeout\)$/);
      }),
  );
}

// Serial never holds more than one connection (see below); the others can
// run out of file descriptors when clients keep coming.
for (
  const [mode, args] of [
    ["thread-per-connection", []],
    ["fixed-pool", ["--pool-size", "200"]],
    ["worker-pool", []],
  ] as const
) {
  test(`${mode}: out of file descriptors: one log line, no spin, recovers`, {
    skip: !existsSync("/proc/self/stat") && "reads CPU time from /proc",
  }, (t) =>
    withServer(mode, [...args], async (server) => {
      const clients: TestClient[] = [];
      try {
        // The kernel completes connects past the limit; accept() then fails.
        for (let i = 0; i < 80; i++) {
          clients.push(await TestClient.connect(server.port));
        }
        await server.waitForLine(/^accept failing, retrying: /);
        const ticks = server.cpuTicks();
        await new Promise((resolve) => setTimeout(resolve, 1000));
        const busy = server.cpuTicks() - ticks;
        t.diagnostic(`CPU while accept fails: ${busy / 100} s in 1 s`);
        assert.ok(busy < 50, "busy while accept fails");
        // Each close lets one more in and the next accept fails again: a
        // burst of failures, logged once.
        for (const client of clients.splice(0, 20)) {
          client.close();
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        for (const client of clients.splice(0)) client.close();
        await assertServes(server);
        const trouble = server.stdoutLines.filter((line) =>
          line.startsWith("accept failing")
        );
        assert.equal(trouble.length, 1, trouble.join("\n"));
      } finally {
        for (const client of clients) client.close();
      }
    }, { fdLimit: 64 }));
}

// Serial holds one connection, however many clients come: with the same low
// limit it never runs out, and it serves every client in turn.
test("serial: 80 clients under ulimit -n 64 are served in turn", () =>
  withServer("serial", [], async (server) => {
    const clients: TestClient[] = [];
    try {
      for (let i = 0; i < 80; i++) {
        const client = await TestClient.connect(server.port);
        clients.push(client);
        await client.write(`client ${i}\n`);
      }
      for (const [i, client] of clients.entries()) {
        assert.equal(unstamped(await client.nextLine()), `client ${i}`);
        client.close();
      }
      await assertServes(server);
      const trouble = server.stdoutLines.filter((line) =>
        line.startsWith("accept failing")
      );
      assert.deepEqual(trouble, [], "accept failed");
    } finally {
      for (const client of clients) client.close();
    }
  }, { fdLimit: 64 }));
