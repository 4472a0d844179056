// The client, as a user runs it: -m, piped stdin, raw framing, the prompt,
// and the errors a user can cause.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import process from "node:process";
import { converse } from "../client/client.ts";
import {
  Child,
  CLIENT,
  IS_BUN,
  ROOT,
  runScript,
  scriptArgs,
  type Server,
  STAMP,
  TestClient,
  unstamped,
  unusedPort,
  withServer,
} from "./helpers.ts";

// Reply lines with their time stamps checked and removed.
function replyTexts(stdout: string): string[] {
  return stdout.split("\n").filter((line) => line !== "").map(unstamped);
}

test("client -m sends each message and prints each reply", async () => {
  await withServer("thread-per-connection", [], async (server) => {
    const args = ["--port", `${server.port}`, "-m", "hello", "-m", "wörld"];
    const run = await runScript(CLIENT, args, "not read\n");
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(replyTexts(run.stdout), ["hello", "wörld"]);
  });
});

test("client sends every piped line, empty ones too, in order", async () => {
  await withServer("thread-per-connection", [], async (server) => {
    const run = await runScript(
      CLIENT,
      ["--port", `${server.port}`],
      "a\n\nb\n",
    );
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(replyTexts(run.stdout), ["a", "", "b"]);
  });
});

test("client -m with a newline sends each line, prints every reply", async () => {
  await withServer("thread-per-connection", [], async (server) => {
    const args = ["--port", `${server.port}`, "-m", "a\nb", "-m", "c"];
    const run = await runScript(CLIENT, args);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(replyTexts(run.stdout), ["a", "b", "c"]);
  });
});

// node:readline would end a line at a lone "\r"; the servers do not.
test("client frames piped lines as the servers do: only \\n ends a line", async () => {
  await withServer("thread-per-connection", [], async (server) => {
    const input = "one\rtwo\nthree\r\n\ufefffour";
    const run = await runScript(CLIENT, ["--port", `${server.port}`], input);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(replyTexts(run.stdout), [
      "one\rtwo",
      "three",
      "\ufefffour",
    ]);
  });
});

// -m and --message take the next word whatever it is, as getopt does.
test("client -m takes a message that starts with -, as --message does", async () => {
  await withServer("thread-per-connection", [], async (server) => {
    const messages = ["-m", "-5", "--message", "-5", "-m", "--help"];
    const run = await runScript(CLIENT, [
      "--port",
      `${server.port}`,
      ...messages,
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(replyTexts(run.stdout), ["-5", "-5", "--help"]);
  });
});

// One error line, as the servers print, and a hint; parseArgs says more, in
// sentences on lines of their own for --host -x.
const BAD_COMMAND_LINES = [
  [["--host", "-x"], "Option '--host' argument is ambiguous"],
  [["-m"], "Option '-m, --message <value>' argument missing"],
  [["--port", "-1"], "--port must be a whole number from 1 to 65535"],
] as const;
for (const [args, error] of BAD_COMMAND_LINES) {
  test(`client ${args.join(" ")}: one error line and the hint, exit 2`, async () => {
    const run = await runScript(CLIENT, [...args]);
    assert.equal(run.stderr, `error: ${error}\nrun with --help for usage\n`);
    assert.equal(run.stdout, "");
    assert.equal(run.code, 2);
  });
}

test("client --framing raw sends messages as typed, prints each read", async () => {
  await withServer("serial", ["--framing", "raw"], async (server) => {
    const args = ["--port", `${server.port}`, "--framing", "raw", "-m", "hi"];
    const run = await runScript(CLIENT, [...args, "-m", "there"]);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(replyTexts(run.stdout), ["hi", "there"]);
  });
});

test("client: a refused connection gives one clear line and exit 1", async () => {
  const port = await unusedPort();
  const run = await runScript(CLIENT, ["--port", `${port}`, "-m", "x"]);
  assert.equal(run.code, 1);
  // The hint names the command that starts a server in the runtime in use.
  const start = IS_BUN ? "bun modes/serial.ts" : "deno task serial";
  assert.equal(
    run.stderr,
    `error: cannot connect to 127.0.0.1:${port} (connection refused); ` +
      `start a server first, e.g. ${start}\n`,
  );
});

test("client: a connect to a full backlog times out", {
  skip: process.platform !== "linux" && "a full backlog refuses off Linux",
}, async () => {
  await withServer("serial", ["--backlog", "1"], async (server) => {
    // One client served, two more fill the queue (backlog + 1 on Linux).
    const served = await TestClient.connect(server.port);
    await served.write("x\n");
    await served.nextLine();
    const queued = [
      await TestClient.connect(server.port),
      await TestClient.connect(server.port),
    ];
    try {
      const args = ["--port", `${server.port}`, "--connect-timeout", "1"];
      const started = performance.now();
      const run = await runScript(CLIENT, [...args, "-m", "x"]);
      // Seconds, not milliseconds: it waited (a slow machine waits longer).
      assert.ok(performance.now() - started >= 900, "gave up before 1 s");
      assert.equal(run.code, 1);
      assert.equal(
        run.stderr,
        `error: connecting to 127.0.0.1:${server.port} timed out after 1 s\n`,
      );
    } finally {
      for (const client of [served, ...queued]) client.close();
    }
  });
});

test("client: an ERROR reply is shown, then reported as the close, exit 1", async () => {
  await withServer("serial", ["--max-line", "4"], async (server) => {
    const args = ["--port", `${server.port}`, "-m", "too long"];
    const run = await runScript(CLIENT, args);
    assert.equal(run.code, 1);
    assert.equal(run.stdout, "ERROR line longer than 4 bytes");
    assert.equal(
      run.stderr,
      "error: server closed the connection: line longer than 4 bytes\n",
    );
  });
});

// The server reads on, and drops, what comes after a line too long, so that
// its ERROR line is not lost in a reset; the client must show it, not what
// it was sending.
test("client: a piped line over --max-line gets the server's reason", async () => {
  await withServer("serial", ["--max-line", "1024"], async (server) => {
    const input = `ok\n${"x".repeat(1024 * 1024)}\nnever answered\n`;
    const run = await runScript(CLIENT, ["--port", `${server.port}`], input);
    assert.equal(run.code, 1);
    const [ok, ...rest] = run.stdout.split("\n");
    assert.equal(unstamped(ok), "ok");
    assert.deepEqual(rest, ["ERROR line longer than 1024 bytes"]);
    assert.equal(
      run.stderr,
      "error: server closed the connection: line longer than 1024 bytes\n",
    );
  });
});

// A client left waiting for input while the server ends the connection
// shows the server's last line at once and exits 1 naming it. A line typed
// late, once the server has closed, must not turn that into "connection reset
// by server" (the reason unread), as it did when the client read only after
// sending.
const LAST_WORDS = [
  { why: "idle timeout", args: ["--idle-timeout", "1"], end: () => {} },
  {
    why: "server shutting down",
    args: ["--grace", "0"],
    end: (server: Server) => server.signal("SIGTERM"),
  },
];
for (const { why, args, end } of LAST_WORDS) {
  test(`client waiting for input shows the server's last line at once: ${why}`, async () => {
    await withServer("serial", args, async (server) => {
      const client = Child.start(CLIENT, ["--port", `${server.port}`], "pipe");
      client.process.stdin!.on("error", () => {}); // the client may be gone
      try {
        await server.waitForLine(/ opened$/);
        end(server);
        await server.waitForLine(/ closed after /);
        client.process.stdin!.end("hello\n");
        const exit = await client.exit();
        assert.deepEqual(client.stdoutLines, [`ERROR ${why}`]);
        assert.equal(
          client.stderr,
          `error: server closed the connection: ${why}\n`,
        );
        assert.equal(exit.code, 1);
      } finally {
        await client.kill();
      }
    });
  });
}

test("client --framing raw skips an empty line: zero bytes get no reply", async () => {
  await withServer("serial", ["--framing", "raw"], async (server) => {
    const args = ["--port", `${server.port}`, "--framing", "raw"];
    const run = await runScript(CLIENT, args, "a\n\nb\n");
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(replyTexts(run.stdout), ["a", "b"]);
  });
});

// Runs `body` with the port of a stand-in server that serves each
// connection with `serve`.
async function withStandIn<T>(
  serve: (socket: net.Socket) => void,
  body: (port: number) => Promise<T>,
): Promise<T> {
  const server = net.createServer(serve);
  await new Promise<void>((ready) => server.listen(0, "127.0.0.1", ready));
  try {
    return await body((server.address() as net.AddressInfo).port);
  } finally {
    server.close();
  }
}

// One write can take only part of a big message (the socket buffer fills),
// so the client must loop. A stand-in peer counts the bytes of the line.
test("client sends a line bigger than one write in full", async () => {
  const size = 8 * 1024 * 1024;
  let received = 0;
  await withStandIn((socket) => {
    socket.on("data", (data) => {
      received += data.length;
      if (data.at(-1) === 10) socket.end(`got ${received} bytes\n`);
    });
  }, async (port) => {
    const run = await runScript(
      CLIENT,
      ["--port", `${port}`],
      "y".repeat(size) + "\n",
    );
    assert.equal(run.stdout, `got ${size + 1} bytes`);
    assert.equal(run.code, 0, run.stderr);
  });
});

// A stand-in server that reads the first line, then closes or resets.
function runAgainstRudeServer(rudeness: "close" | "reset") {
  return withStandIn((socket) => {
    socket.once("data", () => {
      if (rudeness === "close") socket.end();
      else socket.resetAndDestroy();
    });
  }, (port) => runScript(CLIENT, ["--port", `${port}`, "-m", "hello"]));
}

test("client: a server that closes without a reply is reported, exit 1", async () => {
  const run = await runAgainstRudeServer("close");
  assert.equal(run.code, 1);
  assert.equal(run.stderr, "error: server closed the connection\n");
});

test("client: a server that resets is reported, exit 1", async () => {
  const run = await runAgainstRudeServer("reset");
  assert.equal(run.code, 1);
  assert.equal(run.stderr, "error: connection reset by server\n");
});

// `client | head -1`: once the reader of stdout has gone, the client stops
// at the first reply it cannot print. Here stdout is closed before the first.
test("client stops sending at the first broken pipe on stdout", async () => {
  let lines = 0;
  await withStandIn((socket) => {
    socket.on("data", (data) => {
      for (const byte of data) if (byte === 10) socket.write(`${++lines}\n`);
    });
  }, async (port) => {
    const client = new Child(spawn(
      process.execPath,
      scriptArgs(CLIENT, ["--port", `${port}`]),
      { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] },
    ));
    client.process.stdout!.destroy();
    client.process.stdin!.end("a\nb\nc\n");
    const exit = await client.exit();
    assert.equal(lines, 1);
    assert.equal(exit.code, 141); // as a program that SIGPIPE ends
    assert.equal(client.stderr, "");
  });
});

// A stand-in for the client's connection, to call converse() on: it keeps
// each write, and answers each line it gets with `reply` and a "\n", handed
// out at most `readSize` bytes a read, as a slow network would.
class StandInConn {
  readonly writes: string[] = [];
  #unread = Buffer.alloc(0);
  #wake = () => {};
  constructor(readonly reply = "ok", readonly readSize = Infinity) {}

  write(bytes: Uint8Array): Promise<number> {
    const text = Buffer.from(bytes).toString();
    this.writes.push(text);
    const replies = `${this.reply}\n`.repeat(text.split("\n").length - 1);
    this.#unread = Buffer.concat([this.#unread, Buffer.from(replies)]);
    this.#wake();
    return Promise.resolve(bytes.length);
  }

  async read(buffer: Uint8Array): Promise<number> {
    while (!this.#unread.length) {
      await new Promise<void>((wake) => this.#wake = wake);
    }
    const n = Math.min(buffer.length, this.readSize, this.#unread.length);
    buffer.set(this.#unread.subarray(0, n));
    this.#unread = this.#unread.subarray(n);
    return n;
  }

  // What converse() prints while it talks to this connection.
  async converse(messages: string[]): Promise<string> {
    const { write } = process.stdout;
    let printed = "";
    process.stdout.write = ((text: string, written?: () => void) => {
      printed += text;
      written?.();
      return true;
    }) as typeof write;
    try {
      const bytes = messages.map((text) => Buffer.from(text));
      await converse(this as unknown as Deno.Conn, "line", bytes);
    } finally {
      process.stdout.write = write;
    }
    return printed;
  }
}

// A line in two writes, the text and then its "\n", waits for the server's
// delayed acknowledgement of the text: 9 s for 200 lines instead of 0.3 s.
test("client sends each line, its \\n included, in one write", async () => {
  const conn = new StandInConn();
  const printed = await conn.converse(["hello", "a\nb"]);
  assert.deepEqual(conn.writes, ["hello\n", "a\nb\n"]);
  assert.equal(printed, "ok\nok\nok\n");
});

// Counts the bytes that Uint8Array's set() copies and indexOf() searches
// while `body` runs: the client's work on a reply line it reads in pieces.
async function bytesTouched(body: () => Promise<unknown>): Promise<number> {
  const { set, indexOf } = Uint8Array.prototype;
  let touched = 0;
  Uint8Array.prototype.set = function (source, offset) {
    touched += (source as ArrayLike<number>).length;
    return set.call(this, source as ArrayLike<number>, offset);
  };
  Uint8Array.prototype.indexOf = function (value, from = 0) {
    touched += this.length - from;
    return indexOf.call(this, value, from);
  };
  try {
    await body();
  } finally {
    Object.assign(Uint8Array.prototype, { set, indexOf });
  }
  return touched;
}

test("client reads a long reply line in pieces without copying it again each time", async () => {
  const long = "x".repeat(256 * 1024);
  const conn = new StandInConn(long, 1024);
  let printed = "";
  const touched = await bytesTouched(async () => {
    printed = await conn.converse(["hi"]);
  });
  assert.equal(printed, `${long}\n`);
  // Copying and searching the unfinished line again on each 1 KiB read is
  // 256 times 128 KiB on average, twice: 64 MiB. Growing one buffer by
  // doubling and searching only new bytes, a few times the line.
  assert.ok(touched < 8 * long.length, `${touched} bytes for ${long.length}`);
});

// `script` (util-linux) runs the client on a pseudo-terminal, so its stdin is
// a TTY and it prompts; a test types into script's stdin. The terminal ends
// each line in \r\n, and shows stderr too.
const NO_SCRIPT = !existsSync("/usr/bin/script") && "needs util-linux script";
function clientAtTerminal(port: number): Child {
  const command = [process.execPath, ...scriptArgs(CLIENT, [])]
    .map((word) => `'${word}'`).join(" ");
  return new Child(spawn(
    "script",
    ["-qec", `${command} --port ${port}`, "/dev/null"],
    { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] },
  ));
}

test("client at a terminal prompts, replies, and quits on an empty line", {
  skip: NO_SCRIPT,
}, async () => {
  await withServer("serial", [], async (server) => {
    const terminal = clientAtTerminal(server.port);
    try {
      terminal.process.stdin!.write("hi there\n");
      // The terminal shows the prompt, then the reply.
      const reply = await terminal.waitForLine(/\] hi there\r$/);
      assert.match(reply.replace(/^> /, ""), STAMP);
      assert.ok(reply.startsWith("> "), reply);
      terminal.process.stdin!.write("\n");
      const exit = await terminal.exit();
      assert.equal(exit.code, 0, terminal.output());
      await server.waitForLine(/#1 .* closed after .* 1 message$/);
    } finally {
      await terminal.kill();
    }
  });
});

// A close with no last line, while the prompt waits, is shown at once too.
test("client at a terminal reports a close at once", {
  skip: NO_SCRIPT,
}, async () => {
  let close = () => {};
  await withStandIn((socket) => {
    socket.on("data", () => socket.write("ok\n"));
    close = () => socket.end();
  }, async (port) => {
    const terminal = clientAtTerminal(port);
    try {
      terminal.process.stdin!.write("hi\n");
      await terminal.waitForLine(/ok\r$/);
      close(); // once the reply is shown, and so the next prompt
      const exit = await terminal.exit();
      assert.equal(exit.code, 1, terminal.output());
      assert.match(terminal.output(), /> \r\n\S*error: server closed the/);
    } finally {
      await terminal.kill();
    }
  });
});

// The server's last line comes while the prompt waits: it starts a line of
// its own, so that it does not look typed after the "> ".
test("client at a terminal shows the server's idle timeout on its own line", {
  skip: NO_SCRIPT,
}, async () => {
  await withServer("serial", ["--idle-timeout", "1"], async (server) => {
    const terminal = clientAtTerminal(server.port);
    try {
      await terminal.waitForLine(/^ERROR idle timeout\r$/);
      const exit = await terminal.exit();
      assert.equal(exit.code, 1, terminal.output());
      // (Bun colours the error line on a terminal.)
      assert.match(
        terminal.stdoutLines.at(-1)!,
        /error: server closed the connection: idle timeout/,
      );
    } finally {
      await terminal.kill();
    }
  });
});
