// The lab's clients: real TCP connections from this process to a panel's
// server on 127.0.0.1. Each one says what it saw and when: connecting,
// waiting (connected, or a line sent, and no reply yet), served (the reply
// came), closed (by the lab, after its hold), or failed (why).
import type { ClientSettings } from "./settings.ts";

export type ClientState =
  | "connecting"
  | "waiting"
  | "served"
  | "closed"
  | "failed";

// What a client saw; `port` is its own, which the server's log names.
export type Seen = { state: ClientState; port?: number; reason?: string };

// At most this many lab clients at once, over all panels.
export const MAX_CLIENTS = 2000;
// As the project's client: a connect that hangs (a full backlog drops the
// handshake on Linux) gives up after 5 s.
const CONNECT_TIMEOUT_MS = 5_000;
// A reply can take long (serial serves everyone before in turn), not forever.
const REPLY_TIMEOUT_MS = 120_000;

export class Clients {
  active = 0;
  #stop = new AbortController();

  // Starts one client; `say` hears each thing it sees, until clear().
  start(
    id: number,
    port: number,
    settings: ClientSettings,
    say: (seen: Seen) => void,
  ) {
    this.active++;
    const { signal } = this.#stop;
    const heard = (seen: Seen) => signal.aborted || say(seen);
    runClient(id, port, settings, signal, heard)
      .catch((err) => heard({ state: "failed", reason: String(err) }))
      .finally(() => this.active--);
  }

  // Closes every client; what they see from now on is not reported.
  clear() {
    this.#stop.abort();
    this.#stop = new AbortController();
  }
}

async function runClient(
  id: number,
  port: number,
  settings: ClientSettings,
  stop: AbortSignal,
  say: (seen: Seen) => void,
) {
  say({ state: "connecting" });
  let conn: Deno.TcpConn;
  try {
    const timeout = AbortSignal.timeout(CONNECT_TIMEOUT_MS);
    const signal = AbortSignal.any([stop, timeout]);
    conn = await Deno.connect({ hostname: "127.0.0.1", port, signal });
  } catch (err) {
    return say({ state: "failed", reason: connectFailure(err) });
  }
  const close = () => conn.close();
  stop.addEventListener("abort", close);
  try {
    say({ state: "waiting", port: (conn.localAddr as Deno.NetAddr).port });
    for (let line = 1; line <= settings.lines; line++) {
      if (line > 1) {
        await sleep(settings.pause, stop);
        say({ state: "waiting" });
      }
      await write(conn, `client ${id} line ${line}\n`);
      const reply = await readReply(conn);
      if (reply.startsWith("ERROR")) {
        return say({ state: "failed", reason: `server: ${reply}` });
      }
      say({ state: "served" });
    }
    await sleep(settings.hold, stop);
    say({ state: "closed" });
  } catch (err) {
    say({ state: "failed", reason: failure(err) });
  } finally {
    stop.removeEventListener("abort", close);
    try {
      conn.close();
    } catch { /* closed by clear() */ }
  }
}

function connectFailure(err: unknown): string {
  if (err instanceof DOMException && err.name === "TimeoutError") {
    return `connect timed out after ${CONNECT_TIMEOUT_MS / 1000} s`;
  }
  if (err instanceof Deno.errors.ConnectionRefused) return "connect refused";
  return `connect failed: ${(err as Error).message}`;
}

function failure(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionReset) return "reset by the server";
  return (err as Error).message;
}

const encoder = new TextEncoder();

async function write(conn: Deno.Conn, text: string) {
  const bytes = encoder.encode(text);
  for (let done = 0; done < bytes.length;) {
    done += await conn.write(bytes.subarray(done));
  }
}

// The next reply line, without its "\n".
async function readReply(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(1024);
  const decoder = new TextDecoder();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, REPLY_TIMEOUT_MS);
  let text = "";
  try {
    while (!text.includes("\n")) {
      const n = await conn.read(buffer);
      if (n === null) throw new Error("the server closed the connection");
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
    }
  } catch (err) {
    if (!timedOut) throw err;
    throw new Error(`no reply within ${REPLY_TIMEOUT_MS / 1000} s`);
  } finally {
    clearTimeout(timer);
  }
  return text.slice(0, text.indexOf("\n"));
}

function sleep(ms: number, stop: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      stop.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    stop.addEventListener("abort", done);
  });
}
