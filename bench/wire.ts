/**
 * The client's side of the protocol, as every experiment speaks it: open
 * connections, send a request, read its reply, check that it is the echo.
 * Deno.connect, reads into a small reused buffer, one awaited write per
 * request: Web streams would cost the client far more CPU.
 */

export const HOST = "127.0.0.1"; // the only place the bench sends anything
export const LINE = 16; // bytes per request: 15 characters and "\n"
export const CONNECT_MS = 3000; // past a full backlog, Linux lets a handshake hang

// Request `seq` of connection `id`, e.g. "00007 000000042\n": every request
// differs, so a reply to the wrong one is caught. Digits go straight into
// the bytes: a string per request would cost the client more than a reply
// costs a bare server.
export function request(id: number, seq: number, into: Uint8Array) {
  digits(id, into, 0, 5);
  into[5] = 0x20; // " "
  digits(seq, into, 6, 9);
  into[15] = 0x0a; // "\n"
}

function digits(n: number, into: Uint8Array, at: number, width: number) {
  for (let i = at + width - 1; i >= at; i--) {
    into[i] = 0x30 + n % 10;
    n = Math.floor(n / 10);
  }
}

// The reply must be "[<time>] <request>", or the request alone (the storm's
// small server echoes without the time).
export function isEcho(reply: Uint8Array, length: number, sent: Uint8Array) {
  const at = length - sent.length;
  if (at < 0) return false;
  if (at > 0) { // "[" ... "] "
    if (reply[0] !== 0x5b || reply[at - 2] !== 0x5d) return false;
    if (reply[at - 1] !== 0x20) return false;
  }
  for (let i = 0; i < sent.length; i++) {
    if (reply[at + i] !== sent[i]) return false;
  }
  return true;
}

// A write may take only part of the bytes (rarely: a request is 16).
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array) {
  let written = await conn.write(bytes);
  while (written < bytes.length) {
    written += await conn.write(bytes.subarray(written));
  }
}

// Reads one reply line into `buffer`; returns its length with the "\n".
export async function readLine(conn: Deno.Conn, buffer: Uint8Array) {
  let filled = 0;
  for (;;) {
    const n = await conn.read(filled ? buffer.subarray(filled) : buffer);
    if (n === null) throw new ClosedByServer("server closed the connection");
    const end = filled + n;
    let lf = filled;
    while (lf < end && buffer[lf] !== 0x0a) lf++;
    filled = end;
    if (lf === end - 1) return end;
    if (lf < end || end === buffer.length) throw new WrongReply();
  }
}

export class WrongReply extends Error {}
export class ClosedByServer extends Error {}

// Opens up to `count` connections within CONNECT_MS, `lanes` handshakes at
// a time; past a full backlog, a handshake hangs rather than fails.
export async function connectMany(port: number, count: number, lanes = 128) {
  const signal = AbortSignal.timeout(CONNECT_MS);
  const conns: Deno.Conn[] = [];
  let started = 0;
  let error = "";
  async function lane() {
    while (started < count && !signal.aborted) {
      started++;
      try {
        conns.push(await Deno.connect({ hostname: HOST, port, signal }));
      } catch (err) {
        if (!signal.aborted) error ||= (err as Error).message;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(count, lanes) }, lane));
  return { conns, error };
}

export function closeAll(conns: Iterable<Deno.Conn>) {
  for (const conn of conns) {
    try {
      conn.close();
    } catch { /* closed already */ }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Milliseconds on one clock for the main thread and the client threads.
export function epochMs() {
  return performance.timeOrigin + performance.now();
}
