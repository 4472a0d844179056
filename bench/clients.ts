/**
 * The load: ping-pong clients spread over worker threads, each thread an
 * event loop of its own with a share of the connections, so that the
 * clients are not one busy loop that sets the pace instead of the server.
 * Ping-pong opens its connections first and then starts the clock; the
 * connect storm starts the clock and then connects every client at once.
 */
import {
  closeAll,
  ClosedByServer,
  connectMany,
  epochMs,
  HOST,
  isEcho,
  LINE,
  readLine,
  request,
  sleep,
  writeAll,
  WrongReply,
} from "./wire.ts";

const DRAIN_MS = 300; // for the last replies of a row

// What one thread saw, and so, merged, all of them.
export type Tally = {
  connectedMs: number[]; // storm: when each client connected, since `at`
  connectError: string; // the first reason a connect failed
  firstReplyMs: number[]; // when each client had its first right reply
  roundTripsMs: number[]; // every round trip that ended in time
  wrong: number; // replies that were not the echo of their request
  closedByServer: number; // connections the server closed before the end
  failed: number; // connections that failed otherwise before the end
};

type Run = { at: number; until: number }; // epoch ms
type Job =
  | { kind: "connect"; port: number; count: number; firstId: number }
  | { kind: "run" } & Run
  | { kind: "storm"; port: number; count: number; firstId: number } & Run;

// Ping-pong: the connections of a row, open and waiting for the clock.
export class Clients {
  private constructor(
    readonly threads: Worker[],
    readonly connected: number,
    readonly error: string,
  ) {}

  // Opens `count` connections over `threads` threads, 128 handshakes at a
  // time in each.
  static async open(port: number, count: number, threads: number) {
    const started = await startThreads(Math.min(count, threads));
    const opened = await Promise.all(started.map((thread, i) => {
      const job = { port, ...share(count, started.length, i) };
      return ask<{ connected: number; error: string }>(thread, {
        kind: "connect",
        ...job,
      });
    }));
    const connected = opened.reduce((sum, o) => sum + o.connected, 0);
    const error = opened.map((o) => o.error).find(Boolean) ?? "";
    return new Clients(started, connected, error);
  }

  // Every connection sends a request, waits for the whole reply and sends
  // the next, until `until`.
  async run(at: number, until: number): Promise<Tally> {
    const tallies = this.threads.map((thread) =>
      ask<Tally>(thread, { kind: "run", at, until })
    );
    return merge(await Promise.all(tallies));
  }

  close() {
    for (const thread of this.threads) thread.terminate();
  }
}

// The storm: every client connects at `at` and ping-pongs until `until`.
// The clock starts once every thread is loaded and waiting.
export async function stormClients(
  port: number,
  count: number,
  threads: number,
  seconds: number,
): Promise<Tally> {
  const started = await startThreads(threads);
  const at = epochMs();
  const until = at + seconds * 1000;
  try {
    return merge(
      await Promise.all(started.map((thread, i) => {
        const job = { port, at, until, ...share(count, threads, i) };
        return ask<Tally>(thread, { kind: "storm", ...job });
      })),
    );
  } finally {
    for (const thread of started) thread.terminate();
  }
}

// Thread i's share of `count` clients, and the id of its first.
function share(count: number, threads: number, i: number) {
  const firstId = Array.from({ length: i }, (_, j) => j)
    .reduce((sum, j) => sum + Math.floor((count + j) / threads), 0);
  return { count: Math.floor((count + i) / threads), firstId };
}

// ---- The threads, seen from the main thread.

function startThreads(count: number): Promise<Worker[]> {
  const file = new URL(import.meta.url);
  const read = Deno.permissions.querySync({ name: "read", path: file });
  if (read.state !== "granted") {
    throw new Error(
      "the client threads load bench/clients.ts: run with --allow-read (or -A)",
    );
  }
  return Promise.all(Array.from({ length: count }, () => {
    const thread = new Worker(import.meta.url, { type: "module" });
    return answer<string>(thread).then(() => thread);
  }));
}

function ask<T>(thread: Worker, job: Job): Promise<T> {
  const answered = answer<T>(thread);
  thread.postMessage(job);
  return answered;
}

function answer<T>(thread: Worker): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    thread.onmessage = (event) => resolve(event.data);
    thread.onerror = (event) => {
      event.preventDefault();
      thread.terminate();
      reject(new Error(event.message));
    };
  });
}

function emptyTally(): Tally {
  return {
    connectedMs: [],
    connectError: "",
    firstReplyMs: [],
    roundTripsMs: [],
    wrong: 0,
    closedByServer: 0,
    failed: 0,
  };
}

function merge(tallies: Tally[]): Tally {
  const all = emptyTally();
  for (const t of tallies) {
    all.connectedMs.push(...t.connectedMs);
    all.connectError ||= t.connectError;
    all.firstReplyMs.push(...t.firstReplyMs);
    for (const ms of t.roundTripsMs) all.roundTripsMs.push(ms);
    all.wrong += t.wrong;
    all.closedByServer += t.closedByServer;
    all.failed += t.failed;
  }
  return all;
}

// ---- In a thread.

// A connection's requests until `until`. A reply still awaited then is not
// coming in time: closing the connections (ours, afterwards) ends the wait.
// Times are read on this thread's clock, once before a request and once
// after its reply.
async function pingPong(conn: Deno.Conn, id: number, run: Run, t: Tally) {
  const line = new Uint8Array(LINE);
  const reply = new Uint8Array(256); // reused: no garbage per message
  const until = run.until - performance.timeOrigin;
  try {
    for (let seq = 0;; seq++) {
      request(id, seq, line);
      const sent = performance.now();
      await writeAll(conn, line);
      const length = await readLine(conn, reply);
      const now = performance.now();
      if (now >= until) return;
      // Anything but the echo (an ERROR line, say) is no answer.
      if (!isEcho(reply, length, line)) return void t.wrong++;
      if (seq === 0) t.firstReplyMs.push(performance.timeOrigin + now - run.at);
      t.roundTripsMs.push(now - sent);
    }
  } catch (err) {
    if (epochMs() >= run.until) return;
    if (err instanceof WrongReply) t.wrong++;
    else if (err instanceof ClosedByServer) t.closedByServer++;
    else t.failed++;
  }
}

// Runs the clients, then closes what is left once `until` has passed.
async function untilDone(
  clients: Promise<void>[],
  open: Deno.Conn[],
  run: Run,
) {
  const over = sleep(run.until - epochMs() + DRAIN_MS);
  await Promise.race([Promise.all(clients), over]);
  closeAll(open);
  await Promise.all(clients);
}

async function stormShare(job: Job & { kind: "storm" }): Promise<Tally> {
  const tally = emptyTally();
  const open: Deno.Conn[] = [];
  async function client(id: number) {
    let conn: Deno.Conn;
    try {
      const signal = AbortSignal.timeout(Math.max(1, job.until - epochMs()));
      conn = await Deno.connect({ hostname: HOST, port: job.port, signal });
    } catch (err) {
      if (epochMs() < job.until) tally.connectError ||= (err as Error).message;
      return;
    }
    tally.connectedMs.push(epochMs() - job.at);
    open.push(conn);
    await pingPong(conn, id, job, tally);
  }
  const ids = Array.from({ length: job.count }, (_, i) => job.firstId + i);
  await untilDone(ids.map(client), open, job);
  return tally;
}

if ("WorkerGlobalScope" in globalThis) {
  // Typed as a window here; in a worker it is a worker's global scope.
  const scope = self as unknown as Worker;
  let kept: { conns: Deno.Conn[]; firstId: number } = { conns: [], firstId: 0 };
  scope.onmessage = async ({ data: job }: MessageEvent<Job>) => {
    if (job.kind === "connect") {
      const { conns, error } = await connectMany(job.port, job.count);
      kept = { conns, firstId: job.firstId };
      scope.postMessage({ connected: conns.length, error });
    } else if (job.kind === "run") {
      const tally = emptyTally();
      const { conns, firstId } = kept;
      const clients = conns.map((c, i) => pingPong(c, firstId + i, job, tally));
      await untilDone(clients, conns, job);
      scope.postMessage(tally);
    } else {
      scope.postMessage(await stormShare(job));
    }
  };
  scope.postMessage("ready");
}
