// What each concurrency mode looks like from the outside: who gets a reply,
// and who waits. The tests assert the order of events (B got no reply while
// A was connected; B got its reply after A closed), not how long things take.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import {
  expectReply,
  type Mode,
  PATIENCE_MS,
  type Server,
  TestClient,
  withServer,
} from "./helpers.ts";

// A connect in progress: `connected` settles when the handshake completes
// (or rejects if it is refused).
type PendingConnect = { socket: net.Socket; connected: Promise<TestClient> };

type Session = {
  server: Server;
  // Connects a client; fails, rather than hangs, if the connect never completes.
  connect(): Promise<TestClient>;
  // Starts a connect without waiting for it.
  startConnect(): PendingConnect;
};

// Starts `mode`, runs `body`, then closes every socket the body opened and
// stops the server, whether the body passed or failed.
function withMode(
  mode: Mode,
  args: string[],
  body: (session: Session) => Promise<void>,
): Promise<void> {
  return withServer(mode, args, async (server) => {
    const sockets: net.Socket[] = [];
    const startConnect = (): PendingConnect => {
      const socket = net.connect({ host: "127.0.0.1", port: server.port });
      sockets.push(socket);
      const connected = new Promise<TestClient>((resolve, reject) => {
        socket.once("connect", () => resolve(new TestClient(socket)));
        socket.once("error", reject);
      });
      return { socket, connected };
    };
    const connect = async () => {
      const { connected } = startConnect();
      assert.ok(await settlesWithin(connected, PATIENCE_MS), "connect hangs");
      return connected;
    };
    try {
      await body({ server, connect, startConnect });
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  });
}

// True if `promise` resolves within `ms`, false if it is still pending then;
// rejects if `promise` rejects.
async function settlesWithin(
  promise: Promise<unknown>,
  ms: number,
): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// Sends one line and waits for its echo.
async function exchange(client: TestClient, text: string): Promise<void> {
  await client.write(`${text}\n`);
  await expectReply(client, text);
}

// The server's log line about the client on local port `port`, waited for:
// its position in the log, and the worker named in it (fixed-pool only).
async function logEntry(
  server: Server,
  port: number,
  event: "opened" | "closed",
): Promise<{ index: number; worker?: string }> {
  const pattern = new RegExp(
    `^#\\d+ 127\\.0\\.0\\.1:${port}( worker (\\d+))? ${event}( after |$)`,
  );
  const line = await server.waitForLine(pattern);
  return {
    index: server.stdoutLines.indexOf(line),
    worker: pattern.exec(line)![2],
  };
}

// The server opened `waiter`'s connection only after `first`'s had closed.
async function assertServedAfter(
  server: Server,
  waiter: number,
  first: number,
) {
  const firstClosed = await logEntry(server, first, "closed");
  const waiterOpened = await logEntry(server, waiter, "opened");
  assert.ok(
    waiterOpened.index > firstClosed.index,
    `expected the log to show the first client closed before the waiting one opened:\n${server.output()}`,
  );
}

test("serial: a second client gets no reply until the first closes", () =>
  withMode("serial", [], async ({ server, connect }) => {
    const a = await connect();
    const aPort = a.socket.localPort!;
    await exchange(a, "hello from A");

    const b = await connect();
    const bPort = b.socket.localPort!;
    await b.write("hello from B\n");
    assert.ok(await b.silentFor(300), "B got a reply while A was connected");

    a.close();
    await expectReply(b, "hello from B");
    await assertServedAfter(server, bPort, aPort);
  }));

test(
  "serial --backlog 1: past a full accept queue, a connect hangs until there is room",
  {
    skip: process.platform !== "linux" &&
      "drops a SYN when the accept queue is full: Linux behaviour",
  },
  () =>
    withMode("serial", ["--backlog", "1"], async (session) => {
      const a = await session.connect();
      await exchange(a, "A is served");

      // B and C wait in the kernel's accept queue, which holds backlog+1 = 2.
      await session.connect();
      await session.connect();

      // The queue is full: Linux drops D's SYN, so D's connect neither
      // completes nor is refused.
      const d = session.startConnect();
      assert.equal(
        await settlesWithin(d.connected, 1000),
        false,
        "D connected although the accept queue was full",
      );

      // A leaves, the server accepts B, and D's retried SYN finds room
      // (Linux retries after about 1 s, then 3 s). A refusal would reject.
      a.close();
      assert.ok(
        await settlesWithin(d.connected, PATIENCE_MS),
        "D never connected after the queue had room",
      );
    }),
);

test("fixed-pool --pool-size 2: two served at once, the third waits for a worker", () =>
  withMode("fixed-pool", ["--pool-size", "2"], async ({ server, connect }) => {
    const a = await connect();
    const b = await connect();
    const [aPort, bPort] = [a.socket.localPort!, b.socket.localPort!];
    await exchange(a, "A");
    await exchange(b, "B");

    const c = await connect();
    const cPort = c.socket.localPort!;
    await c.write("C\n");
    assert.ok(
      await c.silentFor(300),
      "C got a reply while both workers were busy",
    );

    a.close();
    await expectReply(c, "C");
    await assertServedAfter(server, cPort, aPort);

    // Each worker serves one connection at a time; A's worker took C.
    const aOpened = await logEntry(server, aPort, "opened");
    const bOpened = await logEntry(server, bPort, "opened");
    const cOpened = await logEntry(server, cPort, "opened");
    assert.deepEqual([aOpened.worker, bOpened.worker].sort(), ["1", "2"]);
    assert.equal(cOpened.worker, aOpened.worker);
  }));

// Deno's accept() takes one caller at a time and fails the others with
// Busy: workers that did not take turns would log "accept failing" at once.
test("fixed-pool --pool-size 3: the workers take turns at accept, no accept fails", () =>
  withMode("fixed-pool", ["--pool-size", "3"], async ({ server, connect }) => {
    const clients = [await connect(), await connect(), await connect()];
    for (const [i, client] of clients.entries()) {
      await exchange(client, `client ${i}`);
    }
    const trouble = server.stdoutLines.filter((line) =>
      line.startsWith("accept failing")
    );
    assert.deepEqual(trouble, []);
  }));

test("thread-per-connection: 50 clients are all served at once", () =>
  withMode("thread-per-connection", [], async ({ connect }) => {
    const clients: TestClient[] = [];
    for (let i = 0; i < 50; i++) clients.push(await connect());

    await Promise.all(
      clients.map((client, i) => client.write(`client ${i}\n`)),
    );
    await Promise.all(
      clients.map((client, i) => expectReply(client, `client ${i}`)),
    );
    assert.equal(clients.filter((client) => client.isClosed).length, 0);
  }));

test("thread-per-connection --max-connections 2: the third client waits, never refused", () =>
  withMode(
    "thread-per-connection",
    ["--max-connections", "2"],
    async ({ server, connect }) => {
      const a = await connect();
      const aPort = a.socket.localPort!;
      await exchange(a, "A");
      const b = await connect();
      await exchange(b, "B");

      const c = await connect(); // the kernel completes it: not refused
      const cPort = c.socket.localPort!;
      await c.write("C\n");
      assert.ok(await c.silentFor(300), "C got a reply beyond the cap");

      a.close();
      await expectReply(c, "C");
      await assertServedAfter(server, cPort, aPort);
    },
  ));
