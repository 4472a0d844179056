/**
 * The bare loop on Bun: the least a server can do per message on Bun, with
 * Bun's own API (Bun.listen) and still speaking the protocol. Bun calls back
 * with the bytes it read; the replies to the lines they completed go out at
 * once. The bench measures the modes on Bun against it
 * (`deno task bench --peers`). A yardstick, not a server to copy: it has no
 * line limit, no timeouts, no raw framing and no shutdown.
 *
 * Run:   bun bench/peers/bun.ts [PORT]   (8080; 0: any)
 */
const LF = 10, CR = 13;
const EMPTY = new Uint8Array();
const encoder = new TextEncoder();

// The few Bun APIs used here (Bun's own type package is not installed).
type Socket = {
  data: State;
  // Unbuffered: it returns how many bytes the kernel took.
  write(bytes: Uint8Array, offset: number, length: number): number;
  end(): void;
};
type State = { partial: Uint8Array; unsent: Uint8Array };
declare const Bun: {
  argv: string[];
  listen(options: {
    hostname: string;
    port: number;
    socket: Record<string, (socket: Socket, data: Uint8Array) => void>;
  }): { port: number };
};

const replies = { bytes: EMPTY }; // one thread: one buffer serves all

const server = Bun.listen({
  hostname: "127.0.0.1",
  port: Number(Bun.argv[2] ?? 8080),
  socket: {
    open(socket) {
      socket.data = { partial: EMPTY, unsent: EMPTY };
    },
    data(socket, chunk) {
      const state = socket.data;
      const { length, rest } = answer(join(state.partial, chunk));
      state.partial = rest;
      send(socket, replies.bytes, length);
    },
    drain(socket) {
      const { unsent } = socket.data;
      socket.data.unsent = EMPTY;
      send(socket, unsent, unsent.length);
    },
    end(socket) { // the last line, without its "\n"
      const { partial } = socket.data;
      if (partial.length) {
        const { length } = answer(join(partial, new Uint8Array([LF])));
        send(socket, replies.bytes, length);
      }
      socket.end();
    },
    error() {}, // a reset concerns that client only
  },
});
console.log(`bare loop listening on 127.0.0.1:${server.port}`);

// What the kernel does not take now waits, in order, for Bun's drain.
function send(socket: Socket, bytes: Uint8Array, length: number) {
  const state = socket.data;
  if (!length) return;
  if (state.unsent.length) {
    state.unsent = join(state.unsent, bytes.slice(0, length));
    return;
  }
  const written = Math.max(0, socket.write(bytes, 0, length));
  if (written < length) state.unsent = bytes.slice(written, length);
}

// "[<time>] <line>\n" for each line that `data` ends, into `replies`; the
// rest, copied, since Bun reuses its chunk (and a Buffer's slice() would
// not copy).
function answer(data: Uint8Array) {
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
  return { length, rest: new Uint8Array(data.subarray(start)) };
}

function join(a: Uint8Array, b: Uint8Array) {
  if (!a.length) return b;
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
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
