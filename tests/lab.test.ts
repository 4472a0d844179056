// The lab (deno task lab), driven over its WebSocket as its page drives it:
// what it serves, whom it lets in, the servers it starts, what its clients
// see, how it takes bad input, and that Ctrl+C leaves nothing running.
// tests/lab-browser.test.ts drives the page itself in Chromium.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, readlinkSync } from "node:fs";
import net from "node:net";
import process from "node:process";
import { PATIENCE_MS, ROOT } from "./helpers.ts";
import {
  Lab,
  LAB_SKIP,
  type LabSocket,
  spawnLab,
  withLab,
} from "./lab-harness.ts";

const skip = LAB_SKIP;
if (skip) console.log(`skipping the lab tests: ${skip}`);
const MODES = ["serial", "fixed-pool", "thread-per-connection", "worker-pool"];

test(
  "lab: prints one address on 127.0.0.1 and serves its page's files, nothing else",
  {
    skip,
  },
  () =>
    withLab(async (lab) => {
      assert.equal(lab.child.stdoutLines.length, 1);
      const page = await fetch(lab.url);
      assert.equal(page.status, 200);
      assert.match(page.headers.get("content-type")!, /^text\/html/);
      assert.match(await page.text(), /<main id="panels">/);
      for (const file of ["main.js", "panel.js", "lanes.js", "picture.js"]) {
        const script = await fetch(lab.url + file);
        assert.match(script.headers.get("content-type")!, /^text\/javascript/);
        await script.body?.cancel();
      }
      for (
        const path of [
          "deno.json",
          "lab.ts",
          "page/index.html",
          "%2e%2e/README.md",
        ]
      ) {
        const response = await fetch(lab.url + path);
        assert.equal(response.status, 404, path);
        await response.body?.cancel();
      }
    }),
);

// The upgrade request a browser sends, by hand, so the Origin is ours to set.
function upgrade(port: number, origin: string | null): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.on("error", reject);
    socket.write(
      "GET /socket HTTP/1.1\r\n" +
        `Host: 127.0.0.1:${port}\r\n` +
        (origin ? `Origin: ${origin}\r\n` : "") +
        "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
        "Sec-WebSocket-Version: 13\r\n\r\n",
    );
    socket.once("data", (data) => {
      resolve(data.toString().split("\r\n")[0]);
      socket.destroy();
    });
  });
}

test("lab: a WebSocket from another site's page, or from no page, is refused", {
  skip,
}, () =>
  withLab(async (lab) => {
    const own = `http://127.0.0.1:${lab.port}`;
    assert.match(await upgrade(lab.port, own), / 101 /);
    for (
      const origin of [
        "http://evil.example",
        `http://127.0.0.1:${lab.port + 1}`,
        `https://127.0.0.1:${lab.port}`,
        "null",
        null,
      ]
    ) {
      assert.match(await upgrade(lab.port, origin), / 403 /, String(origin));
    }
  }));

test(
  "lab: each panel runs its mode file, unchanged, with the command it shows, on 127.0.0.1",
  {
    skip,
  },
  () =>
    withLab((_lab, socket) => {
      const panels = socket.panels();
      assert.deepEqual(panels.map((p) => p.mode), MODES);
      for (const panel of panels) {
        assert.equal(panel.state, "listening");
        assert.ok(panel.argv.includes(`modes/${panel.mode}.ts`));
        assert.ok(panel.argv.join(" ").includes("--host 127.0.0.1 --port 0"));
        // The process runs exactly what the panel shows, from the repository.
        const running = readFileSync(`/proc/${panel.pid}/cmdline`, "utf8")
          .split("\0").slice(0, -1);
        assert.deepEqual(running.slice(1), panel.argv.slice(1));
        assert.equal(readlinkSync(`/proc/${panel.pid}/cwd`) + "/", ROOT);
        assert.match(panel.detail, /^listening on 127\.0\.0\.1:\d+$/);
      }
    }),
);

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

test(
  "lab: Ctrl+C stops the lab and every server it started",
  { skip },
  async () => {
    const lab = await Lab.start();
    try {
      const socket = await lab.connect();
      socket.send({ type: "add", count: 5, hold: 30_000, lines: 1, pause: 0 });
      await socket.seen("serial", 1, "served");
      assert.equal(lab.leftovers().length, 4);
      lab.child.signal("SIGINT");
      const exit = await lab.child.exit();
      assert.deepEqual(exit, { code: 0, signal: null });
      const deadline = performance.now() + PATIENCE_MS;
      while (lab.leftovers().length && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.deepEqual(lab.leftovers(), []);
    } finally {
      await lab.stop();
    }
  },
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

test(
  "lab: a bad command line gets one error line and exit 2; a port in use, exit 1",
  {
    skip,
  },
  async () => {
    for (
      const args of [
        ["--runtime", "node"],
        ["--port", "70000"],
        ["--host", "0.0.0.0"],
        ["--nope"],
      ]
    ) {
      const child = spawnLab(args);
      assert.deepEqual(await child.exit(), { code: 2, signal: null });
      assert.match(
        child.stderr,
        /^error: .*\nusage: deno task lab/,
        args.join(" "),
      );
    }
    const help = spawnLab(["--help"]);
    assert.deepEqual(await help.exit(), { code: 0, signal: null });
    assert.match(help.stdoutLines.join("\n"), /--runtime R/);
    const blocker = net.createServer().listen(0, "127.0.0.1");
    await new Promise((resolve) => blocker.once("listening", resolve));
    try {
      const { port } = blocker.address() as net.AddressInfo;
      const child = spawnLab(["--port", String(port)]);
      assert.deepEqual(await child.exit(), { code: 1, signal: null });
      assert.equal(
        child.stderr,
        `error: 127.0.0.1:${port} is already in use; try --port 0\n`,
      );
    } finally {
      blocker.close();
    }
  },
);
