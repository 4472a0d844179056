/**
 * The bare loop on Node: the least a server can do per message with
 * node:net and still speak the protocol. Node calls back with the bytes it
 * read; the replies to the lines they completed go out in one write. The
 * bench shows it beside the others (`deno task bench --peers`). A
 * yardstick, not a server to copy: it has no line limit, no timeouts, no
 * raw framing and no shutdown.
 *
 * Run:   node bench/peers/node.mjs [PORT]   (8080; 0: any)
 */
import net from "node:net";

const LF = 10, CR = 13;

const server = net.createServer((socket) => {
  let partial = Buffer.alloc(0); // a line whose "\n" has not come yet
  socket.on("data", (chunk) => {
    const data = partial.length ? Buffer.concat([partial, chunk]) : chunk;
    const { replies, rest } = answer(data);
    partial = rest;
    // Node keeps what the kernel does not take: stop reading until it has.
    if (replies.length && !socket.write(replies)) {
      socket.pause();
      socket.once("drain", () => socket.resume());
    }
  });
  socket.on("end", () => { // the last line, without its "\n"
    if (partial.length) {
      socket.write(answer(Buffer.concat([partial, Buffer.from([LF])])).replies);
    }
    socket.end();
  });
  socket.on("error", () => {}); // a reset concerns that client only
});
server.listen(Number(process.argv[2] ?? 8080), "127.0.0.1", () => {
  console.log(`bare loop listening on 127.0.0.1:${server.address().port}`);
});

// "[<time>] <line>\n" for each line that `data` ends, in one new buffer
// (Node may hold it until the kernel takes it); the rest, copied.
function answer(data) {
  const time = stamp(Date.now());
  const lines = [];
  let length = 0, start = 0;
  for (let lf = data.indexOf(LF); lf !== -1; lf = data.indexOf(LF, start)) {
    const end = lf > start && data[lf - 1] === CR ? lf - 1 : lf;
    lines.push([start, end]);
    length += time.length + end - start + 1;
    start = lf + 1;
  }
  const replies = Buffer.allocUnsafe(length);
  let at = 0;
  for (const [from, to] of lines) {
    at += time.copy(replies, at);
    at += data.copy(replies, at, from, to);
    replies[at++] = LF;
  }
  return { replies, rest: Buffer.from(data.subarray(start)) };
}

// "[Sat Nov 28 06:26:46 2026] ", C's ctime() in local time, made once a
// second.
let stamped = { second: 0, bytes: Buffer.alloc(0) };
function stamp(now) {
  const second = Math.floor(now / 1000);
  if (second === stamped.second) return stamped.bytes;
  const date = new Date(second * 1000);
  const [weekday, month, day, year, time] = date.toString().split(" ");
  const text = `[${weekday} ${month} ${
    day.replace(/^0/, " ")
  } ${time} ${year}] `;
  stamped = { second, bytes: Buffer.from(text) };
  return stamped.bytes;
}
