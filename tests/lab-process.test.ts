// The lab as a program (deno task lab): its command line, the one address it
// prints, what it serves and to whom, the servers it starts, and that Ctrl+C
// leaves nothing running. tests/lab.test.ts drives it as its page does.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readlinkSync } from "node:fs";
import net from "node:net";
import { MODE_NAMES, PATIENCE_MS, ROOT } from "./helpers.ts";
import { Lab, LAB_SKIP, spawnLab, withLab } from "./lab-harness.ts";

const skip = LAB_SKIP;
if (skip) console.log(`skipping the lab tests: ${skip}`);
const MODES = MODE_NAMES;

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

// The lab exits with `code`, and none of its servers is left running.
async function exitsLeavingNothing(lab: Lab, code: number) {
  assert.deepEqual(await lab.child.exit(), { code, signal: null });
  const deadline = performance.now() + PATIENCE_MS;
  while (lab.leftovers().length && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.deepEqual(lab.leftovers(), []);
}

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
      await exitsLeavingNothing(lab, 0);
    } finally {
      await lab.stop();
    }
  },
);

test(
  "lab: a second Ctrl+C while a server will not stop kills them all and exits 130",
  { skip },
  async () => {
    const lab = await Lab.start();
    try {
      await lab.connect();
      process.kill(lab.pids[0], "SIGSTOP"); // it cannot take its SIGTERM
      lab.child.signal("SIGINT");
      await lab.child.waitForLine(/^lab: stopping the servers$/);
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(lab.child.hasExited, false, "the first stop waits");
      lab.child.signal("SIGINT");
      await exitsLeavingNothing(lab, 130);
    } finally {
      await lab.stop();
    }
  },
);

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
