// Hostile input and many clients at once, every mode. Random byte streams
// from a fixed seed (binary, NULs, long lines, CR without LF, a character cut
// off at the end): the server must answer exactly what the protocol says,
// computed here from the bytes sent. And under many concurrent clients, no
// reply may carry another connection's bytes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { MODE_NAMES, type Server, STAMP, withServer } from "./helpers.ts";
import { between, echoed, Peer, random, sleep } from "./load.ts";

const SEED = 20261128;
const CONNECTIONS = 1_000;
const PARALLEL = 16;
const MAX_LINE = 256; // small, so that long lines are cheap to send
// What the protocol says: invalid UTF-8 becomes U+FFFD, and every other byte
// comes back as sent, a leading byte-order mark included (which a default
// TextDecoder would drop).
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

// ---- 5. Fuzz.

const pick = <T>(rng: () => number, items: T[]): T =>
  items[between(rng, 0, items.length - 1)];
// `count` bytes from `low` to `high`: printable ASCII unless told.
const printable = (rng: () => number, count: number, low = 32, high = 126) =>
  Array.from({ length: count }, () => between(rng, low, high));

// What a stream is made of, each part with its weight: the inputs a line
// parser gets wrong.
const PARTS: [number, (rng: () => number) => number[]][] = [
  [6, (rng) => printable(rng, between(rng, 0, 60))],
  [4, () => [10]], // "\n"
  [1, () => [13, 10]], // "\r\n"
  [1, () => [13]], // "\r" without "\n"
  [1, (rng) => Array(between(rng, 1, 8)).fill(0)], // NULs
  [2, (rng) => printable(rng, between(rng, 1, 40), 0, 255)], // any byte
  [2, (rng) => [...Buffer.from(pick(rng, ["é", "中", "🙂", "\u2028"]))]],
  [1, () => [0xef, 0xbb, 0xbf]], // a byte-order mark, often at a line's start
  [1, (rng) => pick(rng, [[0xc0, 0xaf], [0x80], [0xff], [0xed, 0xa0, 0x80]])],
  [0.4, (rng) => printable(rng, between(rng, MAX_LINE - 2, MAX_LINE + 2))],
  [0.1, (rng) => printable(rng, between(rng, MAX_LINE + 1, 4 * MAX_LINE))],
];
const WEIGHTS = PARTS.reduce((sum, [weight]) => sum + weight, 0);

// One random stream: up to 24 parts, and sometimes a character cut off by
// the end of input.
function stream(rng: () => number): Uint8Array {
  const bytes: number[] = [];
  for (let part = between(rng, 0, 24); part > 0; part--) {
    let choice = rng() * WEIGHTS;
    const [, make] = PARTS.find(([weight]) => (choice -= weight) < 0) ??
      PARTS[0];
    bytes.push(...make(rng));
  }
  if (rng() < 0.3) {
    bytes.push(...Buffer.from("🙂").subarray(0, between(rng, 1, 3)));
  }
  return Uint8Array.from(bytes);
}

// What the server must send for `input`, by the protocol: for each line (a
// last one without "\n" too), one "\r" before its end dropped, the reply;
// a line longer than MAX_LINE gets the ERROR line instead, and nothing after
// it is answered.
function expected(input: Uint8Array): string[] {
  const replies: string[] = [];
  for (let start = 0; start < input.length;) {
    const lf = input.indexOf(10, start);
    let line = input.subarray(start, lf === -1 ? input.length : lf);
    if (line.at(-1) === 13) line = line.subarray(0, -1);
    if (line.length > MAX_LINE) {
      return [...replies, `ERROR line longer than ${MAX_LINE} bytes`];
    }
    replies.push(decoder.decode(line));
    if (lf === -1) break;
    start = lf + 1;
  }
  return replies;
}

// Sends `input` in random pieces, half-closes, and collects every reply
// until the server closes. Returns what went wrong, or "".
async function fuzzOne(
  port: number,
  input: Uint8Array,
  rng: () => number,
): Promise<string> {
  const peer = await Peer.connect(port);
  try {
    for (let at = 0; at < input.length;) {
      const size = between(rng, 1, 300);
      await peer.write(input.subarray(at, at + size)).catch(() => {});
      at += size;
    }
    peer.socket.end();
    if (!await peer.waitEnded()) return "the server did not close";
    const want = expected(input);
    const got = peer.lines.map((line) =>
      line.startsWith("ERROR ") ? line : echoed(line) ?? `no stamp: ${line}`
    );
    if (peer.partial.length) got.push(`unfinished: ${peer.partial}`);
    if (JSON.stringify(got) === JSON.stringify(want)) return "";
    return `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`;
  } finally {
    peer.socket.destroy();
  }
}

type Counts = { bytes: number; replies: number; refused: number };

// Runs `count` connections, PARALLEL at a time; connection i gets the
// stream from seed SEED + i. Returns a line per connection that failed.
async function fuzz(
  server: Server,
  count: number,
  one: typeof fuzzOne,
  counts: Counts,
): Promise<string[]> {
  const failures: string[] = [];
  let next = 0;
  const lane = async () => {
    while (next < count) {
      const i = next++;
      const rng = random(SEED + i);
      const input = stream(rng);
      counts.bytes += input.length;
      const replies = expected(input);
      counts.replies += replies.length;
      if (replies.at(-1)?.startsWith("ERROR ")) counts.refused++;
      const why = await one(server.port, input, rng).catch(String);
      if (why) {
        const hex = Buffer.from(input.subarray(0, 60)).toString("hex");
        failures.push(`stream ${i} (seed ${SEED + i}, ${hex}...): ${why}`);
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, lane));
  return failures;
}

const FUZZ_ARGS = ["--max-line", `${MAX_LINE}`, "--quiet"];

for (const mode of MODE_NAMES) {
  test(`${mode}: ${CONNECTIONS} random streams, exactly their replies`, {
    timeout: 120_000,
  }, (t) =>
    withServer(mode, FUZZ_ARGS, async (server) => {
      const counts = { bytes: 0, replies: 0, refused: 0 };
      const failures = await fuzz(server, CONNECTIONS, fuzzOne, counts);
      t.diagnostic(
        `${CONNECTIONS} streams, ${counts.bytes} bytes, ` +
          `${counts.replies} replies checked; ${counts.refused} ended ` +
          `by a line over ${MAX_LINE} bytes`,
      );
      assert.deepEqual(failures.slice(0, 3), []);
      assert.ok(!server.hasExited, "server exited");
    }));
}

// Raw framing answers each read, so replies depend on how TCP cuts the
// stream. But decoding never swallows or moves an ASCII byte (an invalid
// sequence becomes U+FFFD, and the next byte starts afresh), so the ASCII in
// the replies, stamps taken out, must be exactly the ASCII sent.
const STAMPS = new RegExp(STAMP.source.slice(1), "g");
const asciiOf = (text: string) =>
  [...text].filter((char) => char.charCodeAt(0) < 128).join("");

async function fuzzRaw(port: number, input: Uint8Array, rng: () => number) {
  const peer = await Peer.connect(port);
  try {
    for (let at = 0; at < input.length;) {
      const size = between(rng, 1, 300);
      await peer.write(input.subarray(at, at + size));
      at += size;
    }
    peer.socket.end();
    if (!await peer.waitEnded()) return "the server did not close";
    const received = [...peer.lines.map((line) => line + "\n"), peer.partial]
      .join("");
    if (input.length && !STAMP.test(received)) return "no stamp first";
    const got = asciiOf(received.replace(STAMPS, ""));
    const want = asciiOf(decoder.decode(input));
    return got === want ? "" : `got ${JSON.stringify(got)}`;
  } finally {
    peer.socket.destroy();
  }
}

for (const mode of MODE_NAMES) {
  test(`${mode}: raw framing: random streams come back, byte for byte`, {
    timeout: 120_000,
  }, () =>
    withServer(mode, ["--framing", "raw", "--quiet"], async (server) => {
      const counts = { bytes: 0, replies: 0, refused: 0 };
      const failures = await fuzz(server, 200, fuzzRaw, counts);
      assert.deepEqual(failures.slice(0, 3), []);
      assert.ok(!server.hasExited, "server exited");
    }));
}

// ---- 7. Isolation: many clients at once, each with its own content,
// each line sent in pieces so that the server holds many unfinished lines
// at the same time. Every reply must be the client's own line, exactly.

const CLIENTS = 100;
const LINES_EACH = 30;

// Line `seq` of client `id`: its name, then 0 to 3,000 bytes (so some span
// several of the server's 1 KiB reads) of text drawn from the client's rng.
function isolationLine(id: number, seq: number, rng: () => number): string {
  let text = `client ${id} line ${seq}:`;
  for (let i = between(rng, 0, 3000); i > 0; i--) {
    text += String.fromCharCode(between(rng, 33, 126));
  }
  return text;
}

async function isolatedClient(port: number, id: number): Promise<string> {
  const rng = random(SEED * 7 + id);
  const peer = await Peer.connect(port);
  try {
    const lines = [];
    for (let seq = 0; seq < LINES_EACH; seq++) {
      const line = isolationLine(id, seq, rng) + "\n";
      lines.push(line.slice(0, -1));
      const cut = between(rng, 1, line.length - 1);
      await peer.write(line.slice(0, cut)); // half a line, then others' turn
      await sleep(between(rng, 0, 5));
      await peer.write(line.slice(cut));
    }
    peer.socket.end();
    if (!await peer.waitEnded()) return `client ${id}: server did not close`;
    const foreign = peer.lines.filter((line) =>
      !echoed(line)?.startsWith(`client ${id} line `)
    );
    if (foreign.length) {
      return `client ${id} got ${JSON.stringify(foreign[0].slice(0, 80))}`;
    }
    const got = peer.lines.map(echoed);
    return JSON.stringify(got) === JSON.stringify(lines)
      ? ""
      : `client ${id}: ${got.length} replies, not its ${lines.length} lines`;
  } finally {
    peer.socket.destroy();
  }
}

// Enough workers for every client, so that all are served at once.
const ISOLATION_ARGS: Record<string, string[]> = {
  "fixed-pool": ["--pool-size", `${CLIENTS}`],
};

for (const mode of MODE_NAMES) {
  test(
    `${mode}: ${CLIENTS} clients at once each get only their own bytes`,
    {
      timeout: 120_000,
    },
    () =>
      withServer(
        mode,
        ["--quiet", ...ISOLATION_ARGS[mode] ?? []],
        async (server) => {
          const results = await Promise.all(
            Array.from(
              { length: CLIENTS },
              (_, id) => isolatedClient(server.port, id).catch(String),
            ),
          );
          assert.deepEqual(results.filter(Boolean).slice(0, 3), []);
        },
      ),
  );
}
