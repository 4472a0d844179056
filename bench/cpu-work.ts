/**
 * What CPU work does to one event loop, and what each way out costs.
 *
 * Run:   deno run -A bench/cpu-work.ts        (a few seconds)
 *
 * For each way of doing the work, a server starts as a child process, and
 * this script connects two clients: A asks for a reply that costs --work
 * milliseconds of CPU, and B, a moment later, for one that costs nothing.
 * It prints how long each waited. "inline" computes in one go, as the mode
 * files' --work does; "await per slice" cuts the work into slices with an
 * `await` of a resolved promise between them; "timer per slice" waits for a
 * timer between slices, so that the event loop runs, and "setImmediate per
 * slice" for the loop's next turn; "worker" sends the work to a Web Worker
 * and awaits its answer (a reply that needs no work does not go there).
 */
import { parseArgs } from "node:util";
import { setImmediate } from "node:timers";

const WAYS = [
  "inline",
  "await per slice",
  "timer per slice",
  "setImmediate per slice",
  "worker",
];
const SLICE_MS = 10;

function busy(ms: number) {
  const until = performance.now() + ms;
  while (performance.now() < until); // busy, on purpose
}

// The work, done each way; resolves when it is done. The worker answers
// in the order it was asked.
const asked: (() => void)[] = [];
async function work(way: string, ms: number, worker?: Worker) {
  if (way === "inline" || ms === 0) return busy(ms);
  if (way === "worker") {
    return new Promise<void>((done) => {
      asked.push(done);
      worker!.postMessage(ms);
    });
  }
  for (let left = ms; left > 0; left -= SLICE_MS) {
    busy(Math.min(SLICE_MS, left));
    if (way === "await per slice") await Promise.resolve();
    else if (way === "timer per slice") {
      await new Promise((next) => setTimeout(next, 0));
    } else await new Promise((next) => setImmediate(next));
  }
}

// A server: a line "N" costs N ms of work, then is echoed.
async function serve(way: string) {
  const worker = way === "worker"
    ? new Worker(new URL("?worker", import.meta.url), { type: "module" })
    : undefined;
  if (worker) worker.onmessage = () => asked.shift()!();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log((listener.addr as Deno.NetAddr).port);
  for await (const conn of listener) {
    (async () => {
      const buffer = new Uint8Array(64);
      for (let n; (n = await conn.read(buffer)) !== null;) {
        const line = new TextDecoder().decode(buffer.subarray(0, n));
        await work(way, Number(line), worker);
        await conn.write(buffer.subarray(0, n));
      }
    })().catch(() => {});
  }
}

// One client's round trip: the time from `start` until its reply came.
async function ask(port: number, line: string, start: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(line));
  await conn.read(new Uint8Array(64));
  conn.close();
  return performance.now() - start;
}

async function measure(way: string, workMs: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "--serve", way],
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  const port = Number(new TextDecoder().decode((await reader.read()).value));
  try {
    const start = performance.now();
    const a = ask(port, `${workMs}\n`, start);
    await new Promise((later) => setTimeout(later, 20)); // A's work has begun
    const b = ask(port, "0\n", start);
    const [tA, tB] = await Promise.all([a, b]);
    return `${way.padEnd(22)} A ${tA.toFixed(0).padStart(5)} ms   B ${
      (tB - 20).toFixed(0).padStart(5)
    } ms`;
  } finally {
    child.kill();
    await child.status;
  }
}

if (new URL(import.meta.url).search === "?worker") {
  const parent = self as unknown as Worker; // the same calls, seen from here
  parent.onmessage = ({ data }) => {
    busy(data);
    parent.postMessage("done");
  };
} else if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { serve: { type: "string" }, work: { type: "string" } },
  });
  if (values.serve) await serve(values.serve);
  else {
    const workMs = Number(values.work ?? 500);
    console.log(`A asks for ${workMs} ms of work; B, 20 ms later, for none.`);
    console.log("How long each waited for its reply:");
    for (const way of WAYS) console.log(await measure(way, workMs));
  }
}
