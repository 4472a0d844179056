// The protocol every mode speaks: how bytes on the wire become lines, and
// what each reply looks like. Each behaviour is checked in every mode.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ctime as serialCtime } from "../modes/serial.ts";
import { ctime as fixedPoolCtime } from "../modes/fixed-pool.ts";
import { ctime as perConnectionCtime } from "../modes/thread-per-connection.ts";
import { ctime as workerPoolCtime } from "../modes/worker-pool.ts";
import {
  type Mode,
  MODE_NAMES,
  TestClient,
  unstamped,
  withClient,
  withServer,
} from "./helpers.ts";

// Half-closes: the server sees end of input, answers what is left, closes.
async function endInput(client: TestClient): Promise<void> {
  await new Promise<void>((resolve) => client.socket.end(resolve));
}

for (const mode of MODE_NAMES) {
  test(`${mode}: several lines in one write`, () =>
    withClient(mode, [], async (client) => {
      await client.write("a\nb\nc\n");
      assert.equal(unstamped(await client.nextLine()), "a");
      assert.equal(unstamped(await client.nextLine()), "b");
      assert.equal(unstamped(await client.nextLine()), "c");
    }));

  test(`${mode}: one line split over several writes`, () =>
    withClient(mode, [], async (client) => {
      await client.write("hel");
      assert.ok(await client.silentFor(300), "replied to half a line");
      await client.write("lo\n");
      assert.equal(unstamped(await client.nextLine()), "hello");
    }));

  test(`${mode}: a UTF-8 character split between writes`, () =>
    withClient(mode, [], async (client) => {
      // "é" is C3 A9: the line is "caf" + C3, then A9 + "\n".
      await client.write(Buffer.from([0x63, 0x61, 0x66, 0xc3]));
      assert.ok(await client.silentFor(300), "replied to half a line");
      await client.write(Buffer.from([0xa9, 0x0a]));
      assert.equal(unstamped(await client.nextLine()), "café");
    }));

  for (const framing of ["line", "raw"]) {
    test(`${mode} --framing ${framing}: a leading byte-order mark comes back`, () =>
      withClient(mode, ["--framing", framing], async (client) => {
        const bom = Buffer.from([0xef, 0xbb, 0xbf]);
        await client.write(Buffer.concat([bom, Buffer.from("hello\n")]));
        const line = Buffer.from(await client.nextLine(), "utf8");
        const text = line.subarray(line.indexOf("] ") + 2);
        assert.deepEqual([...text], [...bom, ...Buffer.from("hello")]);
      }));
  }

  test(`${mode}: CRLF line endings`, () =>
    withClient(mode, [], async (client) => {
      await client.write("abc\r\n");
      assert.equal(unstamped(await client.nextLine()), "abc");
    }));

  test(`${mode}: last line without newline at end of input`, () =>
    withServer(mode, [], async (server) => {
      for (const last of ["tail", "tail\r"]) {
        const client = await TestClient.connect(server.port);
        await client.write(last);
        await endInput(client);
        // nextLine needs the "\n": the server adds it to the last line too.
        assert.equal(unstamped(await client.nextLine()), "tail");
        assert.equal(await client.rest(), "", "then closes, nothing more");
      }
    }));

  test(`${mode}: the reply time is local ctime`, () =>
    // A zone far from UTC, with a 45-minute offset, so that a stamp in UTC
    // (a common slip) cannot pass by luck on a machine that runs in UTC.
    withServer(mode, [], async (server) => {
      const client = await TestClient.connect(server.port);
      try {
        const before = wallClock(new Date(), ZONE);
        await client.write("when\n");
        const reply = await client.nextLine();
        const after = wallClock(new Date(), ZONE);
        assert.equal(unstamped(reply), "when");
        const shown = stampWallClock(reply);
        assert.ok(
          before - 2000 <= shown && shown <= after + 2000,
          `${reply} is not the time in ${ZONE} now (${new Date()})`,
        );
      } finally {
        client.close();
      }
    }, { env: { TZ: ZONE } }));

  // --framing raw is the tutorial's protocol: each read is answered as is.
  test(`${mode}: raw framing answers each read`, () =>
    withClient(mode, ["--framing", "raw"], async (client) => {
      await client.write("hello");
      assert.equal(unstamped(await rawReply(client, "hello")), "hello");
      await client.write("again");
      // Had the server added a "\n", this reply would not start with "[".
      assert.equal(unstamped(await rawReply(client, "again")), "again");
      await endInput(client);
      assert.equal(await client.rest(), "", "nothing after the replies");
    }));

  // Raw framing is fragile: TCP is a byte stream, so a read can hold two
  // sends, or half of one. Two lines sent together come back as ONE reply
  // with one stamp; a client waiting for two replies would wait forever.
  test(`${mode}: raw framing merges pipelined lines`, () =>
    withClient(mode, ["--framing", "raw"], async (client) => {
      await client.write("one\ntwo\n");
      const reply = await rawReply(client, "one\ntwo\n");
      assert.equal(unstamped(reply), "one\ntwo\n");
      await endInput(client);
      assert.equal(await client.rest(), "", "no second reply");
    }));

  // Raw framing reads up to 1024 bytes at a time from the first read on,
  // as the tutorial's recv(1024) (line framing starts with a smaller
  // buffer, to keep idle connections small).
  test(`${mode}: raw framing answers a 1000-byte send in one reply`, () =>
    withClient(mode, ["--framing", "raw"], async (client) => {
      const sent = "r".repeat(999) + "\n";
      await client.write(sent);
      assert.equal(unstamped(await rawReply(client, sent)), sent);
      await endInput(client);
      assert.equal(await client.rest(), "", "the send came back split");
    }));

  // Each read is decoded on its own, so a character split between two reads
  // comes back as two replacement characters, one per reply.
  test(`${mode}: raw framing breaks a character split between reads`, () =>
    withClient(mode, ["--framing", "raw"], async (client) => {
      await client.write(Buffer.from([0x63, 0x61, 0x66, 0xc3])); // caf + half é
      const first = await client.nextBytes(STAMP_LENGTH + 6); // U+FFFD: 3 bytes
      assert.equal(unstamped(first.toString("utf8")), "caf\uFFFD");
      await client.write(Buffer.from([0xa9])); // the other half
      const second = await client.nextBytes(STAMP_LENGTH + 3);
      assert.equal(unstamped(second.toString("utf8")), "\uFFFD");
    }));
}

// Every ctime stamp is as long as this one.
const STAMP_LENGTH = "[Sat Nov 28 06:26:46 2026] ".length;

// A raw-framing reply to `sent`: exactly the stamp and the bytes sent.
async function rawReply(client: TestClient, sent: string): Promise<string> {
  const length = STAMP_LENGTH + Buffer.byteLength(sent);
  return (await client.nextBytes(length)).toString("utf8");
}

const CTIMES = {
  serial: serialCtime,
  "fixed-pool": fixedPoolCtime,
  "thread-per-connection": perConnectionCtime,
  "worker-pool": workerPoolCtime,
} satisfies Record<Mode, (date: Date) => string>;

// What Python's time.ctime() prints for these local times. A one-digit day
// is padded with a space, as C and Python print it; a two-digit day is
// printed as it is, its 0 included (10, 20, 30).
const FIXED_DATES: [Date, string][] = [
  [new Date(2026, 0, 1, 0, 0, 0), "Thu Jan  1 00:00:00 2026"],
  [new Date(2026, 10, 8, 6, 5, 4), "Sun Nov  8 06:05:04 2026"],
  [new Date(2026, 8, 9, 9, 9, 9), "Wed Sep  9 09:09:09 2026"],
  [new Date(2026, 9, 10, 10, 10, 10), "Sat Oct 10 10:10:10 2026"],
  [new Date(2026, 11, 20, 20, 20, 20), "Sun Dec 20 20:20:20 2026"],
  [new Date(2026, 10, 28, 23, 59, 59), "Sat Nov 28 23:59:59 2026"],
  [new Date(2026, 3, 30, 13, 30, 30), "Thu Apr 30 13:30:30 2026"],
];

for (const mode of MODE_NAMES) {
  test(`${mode}: ctime formats fixed dates`, () => {
    for (const [date, printed] of FIXED_DATES) {
      assert.equal(CTIMES[mode](date), printed);
    }
  });
}

const ZONE = "Asia/Kathmandu"; // UTC+05:45, no daylight saving

const MONTHS = "JanFebMarAprMayJunJulAugSepOctNovDec";
const WEEKDAYS = "SunMonTueWedThuFriSat";

// The wall-clock time a stamp shows, as milliseconds of a UTC date with the
// same fields (so it compares with wallClock). Checks the weekday too.
function stampWallClock(reply: string): number {
  const [, weekday, month, day, hour, minute, second, year] =
    /^\[(\w{3}) (\w{3}) +(\d+) (\d\d):(\d\d):(\d\d) (\d{4})\]/.exec(reply)!;
  const shown = new Date(
    Date.UTC(+year, MONTHS.indexOf(month) / 3, +day, +hour, +minute, +second),
  );
  assert.equal(WEEKDAYS.indexOf(weekday) / 3, shown.getUTCDay(), reply);
  return shown.getTime();
}

// The wall-clock time in `zone` at `date`, in the same form.
function wallClock(date: Date, zone: string): number {
  const fields = Object.fromEntries(
    new Intl.DateTimeFormat("en-US", {
      timeZone: zone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    }).formatToParts(date).map((part) => [part.type, Number(part.value)]),
  );
  const { year, month, day, hour, minute, second } = fields;
  return Date.UTC(year, month - 1, day, hour, minute, second);
}
