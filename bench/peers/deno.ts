/**
 * The bare loop on Deno: the least a server can do per message and still
 * speak the protocol. For each read, the replies to the lines it completed,
 * in one write; nothing else. The bench measures each mode against it
 * (`deno task bench --peers`). A yardstick, not a server to copy: it has no
 * line limit, no timeouts, no raw framing and no shutdown.
 *
 * Run:   deno run --allow-net bench/peers/deno.ts [PORT]   (8080; 0: any)
 */
const LF = 10, CR = 13;
const EMPTY = new Uint8Array();
const encoder = new TextEncoder();

async function serve(conn: Deno.Conn) {
  const input = new Uint8Array(1024);
  const replies = { bytes: EMPTY }; // reused from one read to the next
  let partial = EMPTY; // a line whose "\n" has not come yet
  try {
    for (let n; (n = await conn.read(input)) !== null;) {
      const data = join(partial, input.subarray(0, n));
      const { length, rest } = answer(data, replies);
      partial = rest;
      if (length) await writeAll(conn, replies.bytes.subarray(0, length));
    }
    if (partial.length) { // the last line, without its "\n"
      const { length } = answer(join(partial, new Uint8Array([LF])), replies);
      await writeAll(conn, replies.bytes.subarray(0, length));
    }
  } catch { /* reset by the client */ }
  conn.close();
}

// "[<time>] <line>\n" for each line that `data` ends, into `replies`; the
// rest, copied, since the read buffer is used again.
function answer(data: Uint8Array, replies: { bytes: Uint8Array }) {
  const time = stamp(Date.now());
  let length = 0, start = 0;
  for (let lf = data.indexOf(LF); lf !== -1; lf = data.indexOf(LF, start)) {
    const end = lf > start && data[lf - 1] === CR ? lf - 1 : lf;
    const needed = length + time.length + end - start + 1;
    if (needed > replies.bytes.length) {
      const grown = new Uint8Array(Math.max(needed, 2 * replies.bytes.length));
      grown.set(replies.bytes.subarray(0, length));
      replies.bytes = grown;
    }
    replies.bytes.set(time, length);
    replies.bytes.set(data.subarray(start, end), length + time.length);
    replies.bytes[needed - 1] = LF;
    length = needed;
    start = lf + 1;
  }
  return { length, rest: data.slice(start) };
}

function join(a: Uint8Array, b: Uint8Array) {
  if (!a.length) return b;
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array) {
  while (bytes.length) bytes = bytes.subarray(await conn.write(bytes));
}

// "[Sat Nov 28 06:26:46 2026] ", C's ctime() in local time, made once a
// second.
let stamped = { second: 0, bytes: EMPTY };
function stamp(now: number) {
  const second = Math.floor(now / 1000);
  if (second === stamped.second) return stamped.bytes;
  const date = new Date(second * 1000);
  const [weekday, month, day, year, time] = date.toString().split(" ");
  const text = `[${weekday} ${month} ${
    day.replace(/^0/, " ")
  } ${time} ${year}] `;
  stamped = { second, bytes: encoder.encode(text) };
  return stamped.bytes;
}

const port = Number(Deno.args[0] ?? 8080);
const listener = Deno.listen({ hostname: "127.0.0.1", port });
const { port: bound } = listener.addr as Deno.NetAddr;
console.log(`bare loop listening on 127.0.0.1:${bound}`);
for (;;) {
  try {
    serve(await listener.accept());
  } catch { // out of descriptors, say: wait a little, and accept again
    await new Promise((retry) => setTimeout(retry, 100));
  }
}
