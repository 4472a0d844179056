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
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

const USAGE = `usage: deno run --allow-net client/client.ts [--host 127.0.0.1]
  [--port 8080] [--framing line|raw] [-m TEXT]... [--connect-timeout 5]
  [--help]`;

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
      const start = navigator.userAgent.startsWith("Bun")
        ? "bun modes/serial.ts"
        : "deno task serial";
      fail(
        `cannot connect to ${where} (connection refused); ` +
          `start a server first, e.g. ${start}`,
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

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Reads replies: a line each (line framing), or whatever one read of up to
// 1024 bytes returns (raw framing, like the tutorial's client).
class Replies {
  #pending = new Uint8Array(0);
  #buffer = new Uint8Array(1024);

  constructor(readonly conn: Deno.Conn) {}

  async line(): Promise<string> {
    for (;;) {
      const lf = this.#pending.indexOf(10);
      if (lf !== -1) {
        const line = decoder.decode(this.#pending.subarray(0, lf));
        this.#pending = this.#pending.subarray(lf + 1);
        return line;
      }
      const chunk = await this.read();
      const joined = new Uint8Array(this.#pending.length + chunk.length);
      joined.set(this.#pending);
      joined.set(chunk, this.#pending.length);
      this.#pending = joined;
    }
  }

  async read(): Promise<Uint8Array> {
    let n: number | null;
    try {
      n = await this.conn.read(this.#buffer);
    } catch {
      fail("connection reset by server");
    }
    if (n === null) fail("server closed the connection");
    return this.#buffer.slice(0, n);
  }
}

// Sends each message and prints its reply before sending the next. In raw
// framing an empty message is skipped: zero bytes get no reply.
async function converse(
  conn: Deno.Conn,
  framing: string,
  messages: AsyncIterable<string> | Iterable<string>,
) {
  const replies = new Replies(conn);
  for await (const message of messages) {
    if (framing === "raw" && message === "") continue;
    await send(conn, framing === "raw" ? message : message + "\n");
    const reply = framing === "raw"
      ? decoder.decode(await replies.read())
      : await replies.line();
    console.log(reply);
    // The server says why it ends a connection, then closes it.
    if (reply.startsWith("ERROR ")) fail("server closed the connection");
  }
}

// A write may take only part of the bytes; loop until all are written.
async function send(conn: Deno.Conn, text: string) {
  let bytes = encoder.encode(text);
  try {
    while (bytes.length) bytes = bytes.subarray(await conn.write(bytes));
  } catch {
    fail("connection reset by server");
  }
}

// Lines typed at a `> ` prompt until an empty line or end of input.
async function* typedLines(lines: AsyncIterator<string>) {
  for (;;) {
    process.stdout.write("> ");
    const { value, done } = await lines.next();
    if (done) process.stdout.write("\n"); // Ctrl+D leaves the cursor after "> "
    if (done || value === "") return;
    yield value;
  }
}

if (import.meta.main) {
  let options: Options;
  try {
    options = parseOptions(Deno.args);
  } catch (err) {
    fail((err as Error).message.split(". ")[0], 2); // parseArgs says more
  }
  if (options.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const conn = await connect(options);
  if (options.message) {
    await converse(conn, options.framing, options.message);
  } else {
    const input = createInterface({ input: process.stdin, terminal: false });
    const lines = input[Symbol.asyncIterator]();
    const messages = process.stdin.isTTY ? typedLines(lines) : input;
    await converse(conn, options.framing, messages);
    input.close();
  }
  conn.close();
  Deno.exit(0);
}
