/**
 * Client for every mode: sends lines and prints each reply.
 *
 * Run:   deno run --allow-net client/client.ts     (or: deno task client)
 *        Type a line at the `> ` prompt and see the reply; an empty line or
 *        Ctrl+D quits, as in the tutorial's client.
 * Or:    deno task client -m hello -m world        send these, print replies
 *        printf 'a\nb\n' | deno task client        send every piped line
 */
import process from "node:process";
import { parseArgs } from "node:util";

const USAGE = `usage: deno run --allow-net client/client.ts [flags]
  --host H              server address (127.0.0.1)
  --port N              server port (8080)
  --framing F           line: a line each, one reply each; raw: as typed (line)
  -m, --message TEXT    send it, print the reply; repeatable (none: read stdin)
  --connect-timeout S   seconds to wait for the connection (5)
  --help                this text`;

type Options = ReturnType<typeof parseOptions>;

function parseOptions(args: string[]) {
  const { values: flag } = parseArgs({
    args,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "8080" },
      framing: { type: "string", default: "line" },
      message: { type: "string", short: "m", multiple: true },
      "connect-timeout": { type: "string", default: "5" },
      help: { type: "boolean", default: false },
    },
  });
  if (flag.framing !== "line" && flag.framing !== "raw") {
    throw new Error(`--framing must be line or raw`);
  }
  return {
    ...flag,
    port: int("port", flag.port, 1, 65535),
    connectTimeout: int("connect-timeout", flag["connect-timeout"], 1, 3600),
  };
}

// A message may start with "-" (-m -5, -m --help): the word after -m or
// --message is always the message, as getopt takes it. (parseArgs would
// refuse it, in case a forgotten value left the next flag in its place.)
function joinMessages(args: string[]): string[] {
  const joined: string[] = [];
  for (const arg of args) {
    const isMessage = ["-m", "--message"].includes(joined.at(-1) ?? "");
    if (isMessage) joined.pop();
    joined.push(isMessage ? `--message=${arg}` : arg);
  }
  return joined;
}

function int(name: string, text: string, min: number, max: number) {
  if (/^\d+$/.test(text) && +text >= min && +text <= max) return +text;
  throw new Error(`--${name} must be a whole number from ${min} to ${max}`);
}

function fail(message: string, exitCode = 1): never {
  console.error(`error: ${message}`);
  if (exitCode === 2) console.error("run with --help for usage");
  Deno.exit(exitCode);
}

// A full listen backlog makes Linux drop the handshake, so a connect can hang;
// a refused one fails at once and names the command that starts a server.
async function connect({ host, port, connectTimeout }: Options) {
  const where = `${host}:${port}`;
  const timedOut = Symbol("timed out");
  let timer;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut), connectTimeout * 1000);
  });
  try {
    return await Promise.race([
      Deno.connect({ hostname: host, port }),
      timeout,
    ]);
  } catch (err) {
    if (err instanceof Deno.errors.ConnectionRefused) {
      fail(
        `cannot connect to ${where} (connection refused); ` +
          `start a server first, e.g. ${startCommand()}`,
      );
    }
    if (err === timedOut) {
      fail(`connecting to ${where} timed out after ${connectTimeout} s`);
    }
    fail(`cannot connect to ${where} (${(err as Error).message})`);
  } finally {
    clearTimeout(timer);
  }
}

// How to start a server from here: with the project's commands when this
// file sits in the repository, else with a mode file copied beside it.
function startCommand(): string {
  const bun = navigator.userAgent.startsWith("Bun");
  if (import.meta.url.endsWith("/client/client.ts")) {
    return bun ? "bun modes/serial.ts" : "deno task serial";
  }
  return bun
    ? "bun --preload ./deno-shim.ts serial.ts (copies of both)"
    : "deno run --allow-net serial.ts (a copy of modes/serial.ts)";
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { ignoreBOM: true }); // keep U+FEFF

// Sends each message, then waits until its replies are printed. A line goes
// out with its "\n" in one write. A "\n" sent alone would wait about 40 ms:
// Nagle's algorithm holds it back until the bytes before it are
// acknowledged, and the server delays that, hoping to send it with a reply.
// (A whole line never waits: the reply to the last one acknowledged it all.)
// Each "\n" in a message ends one more line, so one more reply is awaited.
// In raw framing an empty message is skipped: zero bytes get no reply.
export async function converse(
  conn: Deno.Conn,
  framing: string,
  messages: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
) {
  const replies = new Replies(conn, framing);
  let asked = 0;
  for await (const message of messages) {
    if (framing === "raw" && message.length === 0) continue;
    await send(conn, framing === "raw" ? message : join([message, NEWLINE]));
    asked += framing === "raw" ? 1 : count(message, LF) + 1;
    await replies.printed(asked);
  }
}

// Reads the replies and prints each as it comes, for as long as the
// connection lasts: a line each (line framing), or whatever one read of up
// to 1024 bytes returns (raw framing, like the tutorial's client). It reads
// even while the client waits for the user to type: a server that ends the
// connection (an idle timeout, say) says why in a last line, `ERROR <why>`,
// and the user sees it at once, not after typing a line that meets a reset.
class Replies {
  #printed = 0; // replies printed so far
  #ended = ""; // how the connection ended, once it has
  #wake = () => {};
  #buffer = new Uint8Array(1024);
  #start = 0; // where the next line starts
  #end = 0; // where the bytes read end
  #searched = 0; // where the search for "\n" goes on

  constructor(readonly conn: Deno.Conn, readonly framing: string) {
    this.#printAll();
  }

  // Waits until `count` replies in all are printed. If the connection ends
  // first, so does the client.
  async printed(count: number) {
    while (this.#printed < count) {
      if (this.#ended) fail(this.#ended);
      await new Promise<void>((wake) => this.#wake = wake);
    }
  }

  async #printAll() {
    try {
      for (;;) {
        const reply = this.framing === "raw"
          ? await this.#raw()
          : await this.#line();
        if (prompting) await print("\n"); // not after the prompt's "> "
        await print(`${reply}\n`);
        if (reply.startsWith("ERROR ")) {
          fail(`server closed the connection: ${reply.slice(6).trimEnd()}`);
        }
        this.#printed++;
        this.#wake();
      }
    } catch (err) {
      this.#ended = (err as Error).message;
      this.#wake();
      // At the prompt the user learns it at once; with -m or a pipe, when the
      // next line is sent, since the input may have ended too.
      if (prompting) {
        await print("\n");
        fail(this.#ended);
      }
    }
  }

  // A reply line can be long (a server's --max-line can be a megabyte): it
  // is read into one buffer that doubles when full, and only new bytes are
  // searched for its "\n", so a long line costs no more per byte than a
  // short one.
  async #line(): Promise<string> {
    for (;;) {
      const read = this.#buffer.subarray(0, this.#end);
      const lf = read.indexOf(LF, this.#searched);
      if (lf !== -1) {
        const line = decoder.decode(this.#buffer.subarray(this.#start, lf));
        this.#start = this.#searched = lf + 1;
        return line;
      }
      this.#searched = this.#end;
      if (this.#end === this.#buffer.length) this.#makeRoom();
      this.#end += await this.#read(this.#buffer.subarray(this.#end));
    }
  }

  async #raw(): Promise<string> {
    const n = await this.#read(this.#buffer);
    return decoder.decode(this.#buffer.subarray(0, n));
  }

  // Moves the unfinished line to the front, into a buffer twice as big if
  // it fills more than half of this one. Each move leaves at least half the
  // buffer free, so the bytes moved add up to at most twice the bytes read.
  #makeRoom() {
    const unfinished = this.#buffer.subarray(this.#start, this.#end);
    const size = this.#buffer.length;
    const buffer = unfinished.length > size / 2
      ? new Uint8Array(size * 2)
      : this.#buffer;
    buffer.set(unfinished);
    this.#buffer = buffer;
    this.#searched -= this.#start;
    this.#end -= this.#start;
    this.#start = 0;
  }

  // Reads into `into`; fails, saying how, once the connection has ended.
  async #read(into: Uint8Array): Promise<number> {
    const n = await this.conn.read(into).catch(() => {
      throw new Error("connection reset by server");
    });
    if (n === null) throw new Error("server closed the connection");
    return n;
  }
}

// Writes to stdout, and waits until it is written: when stdout is a pipe
// whose reader has gone (`client | head -1`), nobody will see another reply,
// so the client stops at once instead of sending on. It stops quietly, with
// the status of a program that SIGPIPE ends (128 + 13), as `seq` would.
function print(text: string): Promise<void> {
  return new Promise((written) => {
    process.stdout.write(text, (err) => err ? Deno.exit(141) : written());
  });
}

const LF = 10;
const NEWLINE = new Uint8Array([LF]);
const count = (bytes: Uint8Array, byte: number) =>
  bytes.reduce((n, b) => b === byte ? n + 1 : n, 0);

// A write may take only part of the bytes; loop until all are written.
async function send(conn: Deno.Conn, bytes: Uint8Array) {
  try {
    while (bytes.length) bytes = bytes.subarray(await conn.write(bytes));
  } catch {
    // The server has closed or reset the connection. Replies says how, after
    // the server's last line, which may still be unread.
  }
}

// The lines of `input`, split as the servers split them: only "\n" ends a
// line (a "\r" stays in it, and the server drops one before the "\n"); a
// last line without "\n" counts too.
async function* linesOf(input: AsyncIterable<Uint8Array>) {
  let pieces: Uint8Array[] = [];
  for await (const chunk of input) {
    let start = 0;
    for (let lf = chunk.indexOf(LF); lf !== -1; lf = chunk.indexOf(LF, start)) {
      yield join([...pieces, chunk.subarray(start, lf)]);
      pieces = [];
      start = lf + 1;
    }
    if (start < chunk.length) pieces.push(chunk.subarray(start));
  }
  if (pieces.length) yield join(pieces);
}

function join(pieces: Uint8Array[]): Uint8Array {
  const joined = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const piece of pieces) {
    joined.set(piece, at);
    at += piece.length;
  }
  return joined;
}

// Lines typed at a `> ` prompt until an empty line or end of input.
let prompting = false; // "> " is shown, and the line typed after it unended
async function* typedLines(lines: AsyncIterator<Uint8Array>) {
  for (;;) {
    prompting = true; // before the write of "> " is even under way
    await print("> ");
    const { value, done } = await lines.next();
    prompting = false;
    if (done) await print("\n"); // Ctrl+D leaves the cursor after "> "
    if (done || value.length === 0) return;
    yield value;
  }
}

// parseArgs reads "--port -1" as two flags; "--port=-1" gets a range error.
export function joinNegativeValues(args: string[]): string[] {
  const joined: string[] = [];
  for (const arg of args) {
    const isValue = /^-\d/.test(arg) && joined.at(-1)?.startsWith("--");
    joined.push(isValue ? `${joined.pop()}=${arg}` : arg);
  }
  return joined;
}

if (import.meta.main) {
  if (!("Deno" in globalThis)) { // Bun, without bun/deno-shim.ts preloaded
    console.error(
      "error: client.ts needs Deno, or Bun with deno-shim.ts: run bun in " +
        "the repository's top folder, or bun --preload ./deno-shim.ts " +
        "client.ts",
    );
    process.exit(1);
  }
  let options: Options;
  try {
    options = parseOptions(joinMessages(joinNegativeValues(Deno.args)));
  } catch (err) {
    fail((err as Error).message.split(/\.\s/)[0], 2); // parseArgs says more
  }
  if (options.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const conn = await connect(options);
  // A line goes out as soon as it is typed, not held back until more comes
  // or the server's acknowledgement arrives (Nagle's algorithm).
  conn.setNoDelay(true);
  const lines = linesOf(process.stdin); // read only if used
  const messages = options.message?.map((text) => encoder.encode(text)) ??
    (process.stdin.isTTY ? typedLines(lines) : lines);
  await converse(conn, options.framing, messages);
  conn.close();
  Deno.exit(0);
}
