// Line framing, tested on each mode file's own connection handler with a
// stand-in socket, so that every way TCP can cut a stream is tried: the
// input split in two at every byte, and one byte per read. The expected
// replies are computed from the bytes sent, never with a TextDecoder. And
// the work is linear: a long line is not copied again on every read.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Connection as SerialConnection } from "../modes/serial.ts";
import { Connection as FixedPoolConnection } from "../modes/fixed-pool.ts";
import { Connection as PerConnectionConnection } from "../modes/thread-per-connection.ts";
import { Connection as WorkerPoolConnection } from "../modes/worker-pool.ts";
import { type Mode, MODE_NAMES, STAMP } from "./helpers.ts";

const CONNECTIONS = {
  serial: SerialConnection,
  "fixed-pool": FixedPoolConnection,
  "thread-per-connection": PerConnectionConnection,
  "worker-pool": WorkerPoolConnection,
} satisfies Record<Mode, unknown>;

const READ_SIZE = 1024; // what one read of the handler can return at most

// A Deno.Conn that returns `reads` one by one, then end of input, and keeps
// every byte written to it. As a socket, it fills at most the buffer it is
// given, and keeps the rest of a read for the next; a write takes at most
// `writeSize` bytes, as a socket whose buffer is nearly full, and fails after
// closeWrite() or close(), which it notes in `ends`. With `late`, a write
// takes its bytes only when it completes, a turn later, as Deno's write does
// when the kernel's buffer is full: the array must not change until then.
class FakeConn {
  readonly remoteAddr = { transport: "tcp", hostname: "127.0.0.1", port: 1 };
  readonly written: Buffer[] = [];
  readonly ends: string[] = [];
  constructor(
    readonly reads: Uint8Array[],
    readonly writeSize = Infinity,
    readonly late = false,
  ) {}
  read(buffer: Uint8Array): Promise<number | null> {
    const next = this.reads.shift();
    if (!next) return Promise.resolve(null);
    if (next.length > buffer.length) {
      this.reads.unshift(next.subarray(buffer.length));
    }
    buffer.set(next.subarray(0, buffer.length));
    return Promise.resolve(Math.min(next.length, buffer.length));
  }
  write(bytes: Uint8Array): Promise<number> {
    if (this.ends.length) {
      return Promise.reject(new Error(`write after ${this.ends}`));
    }
    const take = () => {
      const taken = bytes.subarray(0, this.writeSize);
      this.written.push(Buffer.from(taken));
      return taken.length;
    };
    if (!this.late) return Promise.resolve(take());
    return new Promise((resolve) => setTimeout(() => resolve(take())));
  }
  closeWrite(): Promise<void> {
    this.ends.push("closeWrite");
    return Promise.resolve();
  }
  close() {
    this.ends.push("close");
  }
}

const OPTIONS = {
  framing: "line",
  maxLine: 65536,
  idleTimeout: 0,
  quiet: true,
};

// `mode`'s handler for `conn`, not yet serving.
function handler(mode: Mode, conn: FakeConn, options = OPTIONS) {
  // deno-lint-ignore no-explicit-any
  const Connection = CONNECTIONS[mode] as any; // fixed-pool adds a worker id
  return new Connection(conn, options, 1) as InstanceType<
    typeof SerialConnection
  >;
}

// Serves `conn` with `mode`'s handler.
function serveOn(mode: Mode, conn: FakeConn, options = OPTIONS): Promise<void> {
  return handler(mode, conn, options).serve();
}

// Serves `reads` with `mode`'s handler; returns what it wrote.
async function serve(
  mode: Mode,
  reads: Uint8Array[],
  writeSize?: number,
  late?: boolean,
): Promise<Buffer> {
  const conn = new FakeConn(reads, writeSize, late);
  await serveOn(mode, conn);
  return Buffer.concat(conn.written);
}

// The replies, each without its stamp and "\n", as bytes.
function replies(output: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  for (let start = 0; start < output.length;) {
    const lf = output.indexOf(10, start);
    assert.notEqual(lf, -1, "a reply without its \\n");
    const line = output.subarray(start, lf);
    const stamp = STAMP.exec(line.toString("latin1"));
    assert.ok(stamp, `no stamp: ${line.toString("latin1")}`);
    lines.push(line.subarray(stamp[0].length));
    start = lf + 1;
  }
  return lines;
}

// What the protocol says comes back: each line's bytes, one "\r" before its
// end dropped; a last line without "\n" too.
function expected(input: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  for (let start = 0; start < input.length;) {
    let lf = input.indexOf(10, start);
    if (lf === -1) lf = input.length;
    let line = input.subarray(start, lf);
    if (line.at(-1) === 13) line = line.subarray(0, -1);
    lines.push(line);
    start = lf + 1;
  }
  return lines;
}

// `bytes` as reads of at most READ_SIZE bytes.
function reads(bytes: Buffer, size = READ_SIZE): Uint8Array[] {
  const pieces = [];
  for (let at = 0; at < bytes.length; at += size) {
    pieces.push(bytes.subarray(at, at + size));
  }
  return pieces;
}

// A byte-order mark first, CRLF and CR alone, multi-byte characters, an
// empty line, a line longer than two reads, and a last line without "\n".
const INPUT = Buffer.concat([
  Buffer.from([0xef, 0xbb, 0xbf]),
  Buffer.from("hello\r\ncafé 中 🙂\n\none\rtwo\r\n"),
  Buffer.from("long:" + "0123456789".repeat(250) + "\n"),
  Buffer.from([0xff, 0xc3, 0x0a]), // invalid UTF-8, echoed as U+FFFD
  Buffer.from("tail\r"),
]);

// The invalid line comes back as two replacement characters; all else as sent.
const REPLACED = Buffer.from("\ufffd\ufffd");
const wanted = (input: Buffer) =>
  expected(input).map((line) =>
    line.equals(Buffer.from([0xff, 0xc3])) ? REPLACED : line
  );
const WANT = wanted(INPUT);

for (const mode of MODE_NAMES) {
  test(`${mode}: framing: the input split in two at every byte`, async () => {
    for (let cut = 0; cut <= INPUT.length; cut++) {
      const split = [
        ...reads(INPUT.subarray(0, cut)),
        ...reads(INPUT.subarray(cut)),
      ];
      const got = replies(await serve(mode, split));
      assert.deepEqual(got, WANT, `cut at byte ${cut}`);
    }
  });

  test(`${mode}: framing: one byte per read`, async () => {
    const got = replies(await serve(mode, reads(INPUT, 1)));
    assert.deepEqual(got, WANT);
  });

  test(`${mode}: framing: replies written 7 bytes at a time arrive whole`, async () => {
    const got = replies(await serve(mode, reads(INPUT), 7));
    assert.deepEqual(got, WANT);
  });

  // Each read's replies go out in one array that the next read's replies
  // reuse, grown as replies grow; the 5,000-byte line's reply goes out in
  // an array used once.
  test(`${mode}: framing: replies taken late arrive whole`, async () => {
    const long = "\n" + "x".repeat(5000) + "\nend\n";
    const input = Buffer.concat([INPUT, Buffer.from(long)]);
    const got = replies(await serve(mode, reads(input, 100), 100, true));
    assert.deepEqual(got, wanted(input));
  });

  // One read brings two lines and one too long, with or without its \n
  // yet: the ERROR line must wait for the replies, which the socket takes 7
  // bytes at a time, and come whole before the FIN, then the close.
  for (const end of ["\n", ""]) {
    test(`${mode}: framing: the ERROR line follows whole replies, then FIN (${JSON.stringify(end)})`, async () => {
      const read = Buffer.from(`one\ntwo\n${"x".repeat(20)}${end}`);
      const conn = new FakeConn([read], 7);
      await serveOn(mode, conn, { ...OPTIONS, maxLine: 10 });
      const output = Buffer.concat(conn.written);
      const error = Buffer.from("ERROR line longer than 10 bytes\n");
      assert.deepEqual(output.subarray(-error.length), error);
      const got = replies(output.subarray(0, -error.length));
      assert.deepEqual(got, [Buffer.from("one"), Buffer.from("two")]);
      assert.deepEqual(conn.ends, ["closeWrite", "close"]);
    });
  }

  // The idle rule counts reply bytes the socket takes as progress, so a
  // slow reader of a long reply is not idle while it reads. Here a 5,000-
  // byte line's reply goes out 1,000 bytes at a time, each piece taken 5 ms
  // after it was offered: at each write, the connection's last progress
  // must be later than at the one before, not still when the reply was made.
  test(`${mode}: framing: each piece of a reply the socket takes is progress`, async () => {
    const conn = new FakeConn([Buffer.from("x".repeat(5000) + "\n")], 1000);
    const connection = handler(mode, conn);
    const progress: number[] = [];
    const write = conn.write.bind(conn);
    conn.write = async (bytes: Uint8Array) => {
      progress.push(connection.lastProgress);
      await new Promise((taken) => setTimeout(taken, 5));
      return write(bytes);
    };
    await connection.serve();
    assert.equal(progress.length, 6, "5,028 bytes, 1,000 at a time");
    for (let i = 1; i < progress.length; i++) {
      assert.ok(progress[i] > progress[i - 1], `no progress after piece ${i}`);
    }
  });

  test(`${mode}: framing: a byte-order mark comes back`, async () => {
    const bom = Buffer.from([0xef, 0xbb, 0xbf, ...Buffer.from("hello\n")]);
    const [reply] = replies(await serve(mode, [bom]));
    assert.deepEqual([...reply], [...bom.subarray(0, -1)]);
  });
}

// Counts the bytes that Uint8Array's set() and slice() copy while `body`
// runs: how a handler copies a line it keeps across reads.
async function bytesCopied(body: () => Promise<unknown>): Promise<number> {
  const { set, slice } = Uint8Array.prototype;
  let copied = 0;
  Uint8Array.prototype.set = function (source, offset) {
    copied += (source as ArrayLike<number>).length;
    return set.call(this, source as ArrayLike<number>, offset);
  };
  Uint8Array.prototype.slice = function (start, end) {
    const copy = slice.call(this, start, end);
    copied += copy.length;
    return copy;
  };
  try {
    await body();
  } finally {
    Object.assign(Uint8Array.prototype, { set, slice });
  }
  return copied;
}

const LONG = 256 * 1024;

for (const mode of MODE_NAMES) {
  test(`${mode}: framing: a ${LONG / 1024} KiB line is copied a few times, not once per read`, async () => {
    const line = Buffer.alloc(LONG + 1, "x");
    line[LONG] = 10;
    const conn = new FakeConn(reads(line));
    conn.write = (bytes: Uint8Array) => Promise.resolve(bytes.length);
    const options = { ...OPTIONS, maxLine: LONG };
    const copied = await bytesCopied(() => serveOn(mode, conn, options));
    // Copying the unfinished line on each 1 KiB read would be 256 times
    // 128 KiB on average, 32 MiB; growing a buffer by doubling, about 3 x.
    assert.ok(copied < 8 * LONG, `${copied} bytes copied for ${LONG}`);
  });
}
