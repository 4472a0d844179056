// The lab (deno task lab), driven over its WebSocket as its page drives it:
// what its clients see on each model, how settings restart a server, how it
// takes bad input and a server that dies, and its limit on clients.
// tests/lab-process.test.ts covers the program itself, and
// tests/lab-browser.test.ts drives the page in Chromium.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";
import { MODE_NAMES } from "./helpers.ts";
import { LAB_SKIP, type LabSocket, withLab } from "./lab-harness.ts";

const skip = LAB_SKIP;
if (skip) console.log(`skipping the lab tests: ${skip}`);
const MODES = MODE_NAMES;

// The events of client `id` on `mode`, by state: the lab's time of each.
function times(socket: LabSocket, mode: string, id: number) {
  const seen = new Map<string, number>();
  for (const e of socket.events) {
    if (e.kind === "client" && e.mode === mode && e.id === id) {
      if (!seen.has(e.state!)) seen.set(e.state!, e.t);
    }
  }
  return seen;
}

test(
  "lab: on serial the second client waits until the first closes; on thread-per-connection both are served at once",
  {
    skip,
  },
  () =>
    withLab(async (_lab, socket) => {
      socket.send({ type: "preset", name: "second-waits" });
      for (const mode of MODES) await socket.seen(mode, 2, "closed");
      const [one, two] = [1, 2].map((id) => times(socket, "serial", id));
      assert.ok(two.get("waiting")! < one.get("served")! + 1000);
      assert.ok(
        two.get("waiting")! < one.get("closed")!,
        "2 connected while 1 open",
      );
      assert.ok(
        two.get("served")! > one.get("closed")!,
        "2 served after 1 closed",
      );
      const [a, b] = [1, 2].map((id) =>
        times(socket, "thread-per-connection", id)
      );
      assert.ok(b.get("served")! < a.get("closed")!, "both served at once");
      // The server's own log line names each client's connection.
      const links = socket.events.filter((e) => e.kind === "link");
      assert.ok(
        links.some((e) => e.mode === "serial" && e.id === 2 && e.conn === 2),
      );
      assert.ok(links.some((e) => e.mode === "fixed-pool" && e.worker));
    }),
);

test(
  "lab: with --work 2000 the second client waits on thread-per-connection too",
  {
    skip,
  },
  () =>
    withLab(async (_lab, socket) => {
      socket.send({ type: "preset", name: "slow-request" });
      await socket.seen("thread-per-connection", 2, "closed");
      const [one, two] = [1, 2].map((id) =>
        times(socket, "thread-per-connection", id)
      );
      // 2 sent its line while 1's work ran, and was served only after 1.
      assert.ok(
        two.get("waiting")! < one.get("served")!,
        "2 waiting during 1's work",
      );
      assert.ok(two.get("served")! > one.get("served")!, "2 served after 1");
      const panel = socket.panels()[2];
      assert.ok(panel.argv.join(" ").endsWith("--work 2000"));
    }),
);

test(
  "lab: a setting restarts that server with the new flag, and the panel says so",
  {
    skip,
  },
  () =>
    withLab(async (lab, socket) => {
      const old = lab.pids[1];
      const from = socket.events.length;
      socket.send({
        type: "setting",
        mode: "fixed-pool",
        flag: "pool-size",
        value: 2,
      });
      await socket.until(() =>
        socket.events.slice(from).find((e) =>
          e.kind === "log" && e.mode === "fixed-pool" &&
          /restarting/.test(e.text)
        )
      );
      const listening = await socket.until(() =>
        socket.events.slice(from).find((e) =>
          e.kind === "server" && e.mode === "fixed-pool" &&
          e.state === "listening"
        )
      );
      assert.ok(listening.argv.join(" ").endsWith("--pool-size 2"));
      assert.notEqual(listening.pid, old);
      lab.pids.push(listening.pid);
      assert.ok(!lab.leftovers().includes(old), "the old server is gone");
    }),
);

test(
  "lab: bad input gets an error message on the page, and the lab carries on",
  {
    skip,
  },
  () =>
    withLab(async (lab, socket) => {
      const bad = [
        "not json",
        "[1, 2]",
        "null",
        JSON.stringify({ type: "rm -rf" }),
        JSON.stringify({
          type: "add",
          count: 1000,
          hold: 1,
          lines: 1,
          pause: 0,
        }),
        JSON.stringify({ type: "add", count: 1, hold: -1, lines: 1, pause: 0 }),
        JSON.stringify({
          type: "add",
          count: 1,
          hold: "1",
          lines: 1,
          pause: 0,
        }),
        JSON.stringify({
          type: "add",
          count: 1,
          hold: 1,
          lines: 1e9,
          pause: 0,
        }),
        JSON.stringify({
          type: "setting",
          mode: "../x",
          flag: "backlog",
          value: 1,
        }),
        JSON.stringify({
          type: "setting",
          mode: "serial",
          flag: "pool-size",
          value: 2,
        }),
        JSON.stringify({
          type: "setting",
          mode: "serial",
          flag: "backlog",
          value: 0,
        }),
        JSON.stringify({
          type: "setting",
          mode: "serial",
          flag: "backlog",
          value: 1.5,
        }),
        JSON.stringify({
          type: "setting",
          mode: "fixed-pool",
          flag: "pool-size",
          value: null,
        }),
        JSON.stringify({ type: "work", value: 60_001 }),
        JSON.stringify({ type: "preset", name: "__proto__" }),
        "x".repeat(100_000),
      ];
      for (const request of bad) {
        const error = socket.next((m) => m.type === "error");
        socket.send(request);
        assert.match((await error).message, /\w/, request.slice(0, 80));
      }
      assert.equal(lab.child.hasExited, false);
      socket.send({ type: "add", count: 1, hold: 0, lines: 1, pause: 0 });
      for (const mode of MODES) await socket.seen(mode, 1, "closed");
      // After a refusal the lab says what it runs with, so that the page's
      // fields go back to it: the last clients' settings it took.
      const settings = socket.next((m) => m.type === "settings");
      socket.send({ type: "add", count: 1, hold: -5, lines: 1, pause: 0 });
      assert.deepEqual((await settings).clients, {
        hold: 0,
        lines: 1,
        pause: 0,
      });
    }),
);

test(
  "lab: a server that exits is shown in its panel, and a setting starts it again",
  {
    skip,
  },
  () =>
    withLab(async (lab, socket) => {
      const from = socket.events.length;
      process.kill(lab.pids[0], "SIGKILL");
      const exited = await socket.until(() =>
        socket.events.find((e) => e.kind === "server" && e.state === "exited")
      );
      assert.equal(exited.mode, "serial");
      const note = await socket.until(() =>
        socket.events.find((e) => e.kind === "log" && /exited/.test(e.text))
      );
      assert.match(note.text, /killed by SIGKILL/);
      socket.send({ type: "add", count: 1, hold: 0, lines: 1, pause: 0 });
      await socket.seen("worker-pool", 1, "closed");
      assert.ok(
        !socket.events.some((e) => e.kind === "client" && e.mode === "serial"),
      );
      assert.ok(socket.events.some((e) =>
        e.mode === "serial" && e.text === "no client added: the server is " +
            "not listening"
      ));
      socket.send({
        type: "setting",
        mode: "serial",
        flag: "backlog",
        value: 8,
      });
      const back = await socket.until(() =>
        socket.events.slice(from).find((e) =>
          e.kind === "server" && e.mode === "serial" && e.state === "listening"
        )
      );
      lab.pids.push(back.pid);
      assert.ok(back.argv.join(" ").endsWith("--backlog 8"));
    }),
);

test(
  "lab: at most 2,000 lab clients at once",
  { skip, timeout: 120_000 },
  () =>
    withLab(async (_lab, socket) => {
      // 25 clicks of +20 on four panels make 2,000; each holds a minute.
      const add = { type: "add", count: 20, hold: 60_000, lines: 1, pause: 0 };
      for (let i = 0; i < 25; i++) socket.send(add);
      const refused = socket.next((m) => m.type === "error");
      socket.send(add);
      assert.match((await refused).message, /at most 2000 lab clients at once/);
      const errors = socket.messages.filter((m) => m.type === "error");
      assert.equal(errors.length, 1, "the first 2,000 were taken");
      socket.send({ type: "clear" });
      await socket.next((m) => m.type === "clear");
    }),
);

const noBun = Boolean(spawnSync("bun", ["--version"]).error);
test("lab --runtime bun: the same page, the servers on Bun", {
  skip: skip || (noBun && "bun is not installed"),
}, () =>
  withLab(async (lab, socket) => {
    for (const pid of lab.pids) {
      const running = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      assert.match(running[0], /bun$/);
    }
    socket.send({ type: "preset", name: "second-waits" });
    await socket.seen("serial", 2, "closed");
    const [one, two] = [1, 2].map((id) => times(socket, "serial", id));
    assert.ok(
      two.get("served")! > one.get("closed")!,
      "2 served after 1 closed",
    );
  }, ["--runtime", "bun"]));
