// The lab's page in a real browser: Debian's Chromium, headless, driven by
// puppeteer-core from the npm registry (deno.json names it, deno.lock pins
// it, and Deno fetches it).
// tests/lab-browser.test.ts loads this file only where both are there, so
// that the rest of the suite neither needs nor fetches them.
import puppeteer, { type Page } from "puppeteer-core";
import assert from "node:assert/strict";

export const CHROMIUM = "/usr/bin/chromium";
export type { Page };

// Opens `url` in a fresh headless Chromium, runs `body`, closes the browser.
// A script error on the page fails the test.
export async function withPage(
  url: string,
  body: (page: Page) => Promise<void>,
): Promise<void> {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // The tests run as root, where Chromium's sandbox cannot start.
    args: ["--no-sandbox"],
  });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(String(err)));
    await page.setViewport({ width: 1280, height: 1000 });
    await page.goto(url);
    await page.waitForFunction(
      `document.querySelectorAll("section.panel").length === 4`,
    );
    await body(page);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
}

// Each lane's state as the page shows it, from the words it gives screen
// readers for a panel's lanes: "client 1: served; client 2: waiting".
export async function laneStates(page: Page): Promise<Map<string, string[]>> {
  const labels = await page.evaluate(`
    [...document.querySelectorAll("section.panel")].map((panel) => [
      panel.dataset.mode,
      panel.querySelector("canvas").getAttribute("aria-label") ?? "",
    ])`) as [string, string][];
  return new Map(labels.map(([mode, label]) => [
    mode,
    [...label.matchAll(/client \d+: (\w+)/g)].map((m) => m[1]),
  ]));
}

// Samples the lanes every 100 ms until `done` holds or `ms` pass.
export async function watchLanes(
  page: Page,
  done: (states: Map<string, string[]>) => boolean,
  ms: number,
): Promise<Map<string, string[]>[]> {
  const samples = [];
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    const states = await laneStates(page);
    samples.push(states);
    if (done(states)) return samples;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(
    `lanes not done in ${ms} ms: ${JSON.stringify([...samples.at(-1)!])}`,
  );
}

// Frames the page drew per second over `ms`, and the longest gap between
// two of them: a page busy drawing draws fewer, and later.
export async function frames(page: Page, ms: number) {
  return await page.evaluate(`new Promise((resolve) => {
    let count = 0, longest = 0;
    const start = performance.now();
    let last = start;
    const tick = (now) => {
      count++;
      longest = Math.max(longest, now - last);
      last = now;
      const spent = now - start;
      if (spent < ${ms}) requestAnimationFrame(tick);
      else resolve({ perSecond: count * 1000 / spent, longest });
    };
    requestAnimationFrame(tick);
  })`) as { perSecond: number; longest: number };
}

// Lets the page's downloads ("Save picture") land in `folder`.
export async function downloadTo(page: Page, folder: string) {
  const session = await page.createCDPSession();
  await session.send("Browser.setDownloadBehavior", {
    behavior: "allow",
    downloadPath: folder,
  });
}

// ---- What the browser test checks, one function a test.

const PATIENCE_MS = 30_000;
const WAITING = ["connecting", "waiting"];

// Serial: client 2's lane stays waiting until client 1's lane closes.
// thread-per-connection: both lanes are served at once.
export function secondClientWaits(url: string) {
  return withPage(url, async (page) => {
    await page.click(`[data-preset="second-waits"]`);
    const samples = await watchLanes(
      page,
      (s) =>
        s.get("serial")?.join() === "closed,closed" &&
        s.get("thread-per-connection")?.join() === "closed,closed",
      PATIENCE_MS,
    );
    const serial = samples.map((s) => s.get("serial") ?? []);
    for (const [one, two] of serial) {
      if (one !== "closed" && two) {
        assert.ok(WAITING.includes(two), `${one} ${two}`);
      }
    }
    assert.ok(
      serial.some(([one, two]) => one === "served" && two === "waiting"),
    );
    assert.ok(
      serial.some(([one, two]) => one === "closed" && two === "served"),
    );
    const both = samples.map((s) => s.get("thread-per-connection")?.join());
    assert.ok(both.includes("served,served"), "both served at once");
  });
}

// With 2 s of CPU a reply, client 2 waits on thread-per-connection too.
export function cpuWorkMakesTheSecondWait(url: string) {
  return withPage(url, async (page) => {
    await page.click(`[data-preset="slow-request"]`);
    const samples = await watchLanes(
      page,
      (s) => s.get("thread-per-connection")?.join() === "closed,closed",
      PATIENCE_MS,
    );
    const lanes = samples.map((s) => s.get("thread-per-connection") ?? []);
    for (const [one, two] of lanes) {
      if (WAITING.includes(one)) assert.notEqual(two, "served");
    }
    assert.ok(
      lanes.some(([one, two]) => one === "served" && two === "waiting"),
    );
    const work = await page.$eval("#work", (input) => input.value);
    assert.equal(work, "2000");
  });
}

// A page from another site (another port is another origin) cannot open
// the lab's WebSocket; the lab's own page can.
export async function otherSitesRefused(url: string) {
  const socket = url.replace("http:", "ws:") + "socket";
  const other = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () =>
      new Response(
        `<script type="module">
        const socket = new WebSocket(${JSON.stringify(socket)});
        socket.onopen = () => (document.title = "opened");
        socket.onerror = () => (document.title = "refused");
      </script>`,
        { headers: { "content-type": "text/html" } },
      ),
  );
  try {
    await withPage(url, async (page) => {
      await page.goto(`http://127.0.0.1:${other.addr.port}/`);
      await page.waitForFunction(`document.title !== ""`);
      assert.equal(await page.title(), "refused");
      await page.goto(url);
      await page.waitForFunction(`document.querySelector("canvas")`);
      const status = await page.$eval("#status", (p) => p.textContent);
      assert.match(status ?? "", /4 servers on deno/);
    });
  } finally {
    await other.shutdown();
  }
}

// A value the lab refuses: the page says why, and the field shows what the
// server runs with again, the field still focused too.
export function refusedValueUndone(url: string) {
  return withPage(url, async (page) => {
    const poolSize = `section.panel[data-mode="fixed-pool"] .settings input`;
    await page.locator(poolSize).fill("0");
    await page.keyboard.press("Enter"); // a change, the field still focused
    await page.waitForFunction(
      `!document.querySelector("#error").hidden`,
      { timeout: PATIENCE_MS },
    );
    const error = await page.$eval("#error", (p) => p.textContent);
    assert.equal(error, "--pool-size must be from 1 to 100");
    await page.waitForFunction(
      `document.querySelector('${poolSize}').value === "3"`,
      { timeout: PATIENCE_MS },
    );
    await page.locator("#hold").fill("-5");
    await page.click(`[data-add="1"]`);
    await page.waitForFunction(
      `document.querySelector("#hold").value === "3000"`,
      { timeout: PATIENCE_MS },
    );
  });
}

// The who-waits preset live, then "Save picture": an SVG in who-waits style
// with the four panels and every lane. LAB_SCREENSHOT=docs/lab.png also
// saves a screenshot of the page (the README's).
export function savePicture(url: string) {
  return withPage(url, async (page) => {
    const folder = Deno.makeTempDirSync();
    try {
      await downloadTo(page, folder);
      await page.click(`[data-preset="who-waits"]`);
      await watchLanes(
        page,
        (s) =>
          [...s.values()].every((lanes) =>
            lanes.length === 20 && lanes.every((state) => state === "closed")
          ),
        PATIENCE_MS,
      );
      const path = Deno.env.get("LAB_SCREENSHOT");
      if (path) {
        await page.screenshot({
          path: path as `${string}.png`,
          fullPage: true,
        });
      }
      await page.click("#save");
      const svg = await fileIn(folder);
      assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
      for (
        const title of [
          "serial",
          "fixed-pool --pool-size 10",
          "thread-per-connection",
          "worker-pool --workers 2",
        ]
      ) {
        assert.ok(svg.includes(`font-weight="bold">${title}</text>`), title);
      }
      const served = svg.match(/fill="#2f8f4e"/g)?.length ?? 0;
      assert.equal(served, 1 + 80, "the legend, and a served bar a client");
    } finally {
      Deno.removeSync(folder, { recursive: true });
    }
  });
}

// The one file that appears in `folder`, once it is complete.
async function fileIn(folder: string): Promise<string> {
  const deadline = performance.now() + PATIENCE_MS;
  while (performance.now() < deadline) {
    const files = [...Deno.readDirSync(folder)].map((f) => f.name);
    const svg = files.find((name) => name.endsWith(".svg"));
    if (svg) return Deno.readTextFileSync(`${folder}/${svg}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error("no picture was saved");
}

// 1,000 clients on the page (250 a panel), then 2,000 (the most the lab
// takes): the page keeps drawing, and answers a click. Prints the frames
// per second it drew.
export function thousandsOfClients(url: string) {
  return withPage(url, async (page) => {
    await page.locator("#hold").fill("20000");
    for (const total of [1000, 2000]) {
      // Counted while the clients join (the busiest moment), and after.
      const joining = frames(page, 4000);
      for (let i = 0; i < 12; i++) await page.click(`[data-add="20"]`);
      for (let i = 0; i < 2; i++) await page.click(`[data-add="5"]`);
      await page.waitForFunction(
        `[...document.querySelectorAll("canvas")].every((c) =>
          c.getAttribute("aria-label").startsWith("${total / 4} clients"))`,
        { timeout: PATIENCE_MS },
      );
      for (
        const [when, measured] of [["joining", await joining], [
          "then",
          await frames(page, 3000),
        ]] as const
      ) {
        const { perSecond, longest } = measured;
        console.log(
          `lab page, ${total} clients ${when}: ${perSecond.toFixed(1)} ` +
            `frames/s, longest frame ${longest.toFixed(0)} ms`,
        );
        assert.ok(perSecond > 2, `the page is stuck: ${perSecond} frames/s`);
      }
    }
    const error = await page.$eval("#error", (p) => p.hidden);
    assert.equal(error, true, "no error shown");
    await page.click("#clear");
    await page.waitForFunction(
      `[...document.querySelectorAll("canvas")]
      .every((c) => c.getAttribute("aria-label") === "no clients")`,
      { timeout: PATIENCE_MS },
    );
  });
}
