// The lab's page, end to end, in headless Chromium: what tests/lab-page.ts
// clicks and checks, against a real lab with real servers and clients.
import { test } from "node:test";
import { existsSync } from "node:fs";
import process from "node:process";
import { LAB_SKIP, withLab } from "./lab-harness.ts";

type Check = (url: string) => Promise<void>;
const CHROMIUM = "/usr/bin/chromium";

// Chromium comes from Debian (apt-get install chromium) and puppeteer-core
// from the npm registry, loaded here only when the tests run. CI installs
// both (.ci/run): there a missing one fails the tests rather than skip them.
let page: Record<string, Check> | undefined;
let missing = "";
if (!LAB_SKIP && !existsSync(CHROMIUM)) {
  missing = `no Chromium at ${CHROMIUM} (apt-get install chromium)`;
} else if (!LAB_SKIP) {
  const file = "./lab-page.ts"; // a name Deno does not load ahead
  try {
    page = await import(file);
  } catch (err) {
    missing = `puppeteer-core cannot be loaded: ${(err as Error).message}`;
  }
}
const skip = LAB_SKIP || (!process.env.CI && missing);
if (skip) console.log(`skipping the lab's browser tests: ${skip}`);

function inBrowser(check: string) {
  return () =>
    withLab((lab) => {
      if (!page) throw new Error(missing);
      return page[check](lab.url);
    });
}

const slow = { skip, timeout: 120_000 };

test(
  "lab page, serial preset: client 2's lane stays waiting until client 1's closes; on thread-per-connection both are served at once",
  slow,
  inBrowser("secondClientWaits"),
);

test(
  "lab page, --work preset: on thread-per-connection client 2 waits while client 1's work runs",
  slow,
  inBrowser("cpuWorkMakesTheSecondWait"),
);

test(
  "lab page: a page from another site cannot open the lab's WebSocket",
  slow,
  inBrowser("otherSitesRefused"),
);

test(
  "lab page: a value the lab refuses is explained, and its field shows the server's value again",
  slow,
  inBrowser("refusedValueUndone"),
);

test(
  "lab page, who-waits preset: Save picture writes an SVG in the who-waits style",
  slow,
  inBrowser("savePicture"),
);

test(
  "lab page: with 1,000 and then 2,000 clients it keeps drawing and answers a click",
  slow,
  inBrowser("thousandsOfClients"),
);
