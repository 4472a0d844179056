// The pages open on the lab: each gets everything so far when it opens,
// then what happens, in batches, so that a thousand clients cost a page ten
// updates a second, not thousands.
import type { LabEvent } from "./run.ts";

const BATCH_MS = 100;

export type Reply = (message: unknown) => void;

export class Pages {
  #open = new Set<WebSocket>();
  #pending: LabEvent[] = [];
  #timer: ReturnType<typeof setInterval>;

  // `now` is the lab's clock; while `busy`, lanes grow, so batches go out
  // even with no news.
  constructor(readonly now: () => number, readonly busy: () => boolean) {
    this.#timer = setInterval(() => this.#flush(), BATCH_MS);
  }

  // A new page: `hello` is what it must know first, and `receive` hears
  // what it asks, with a way to answer it alone.
  join(
    socket: WebSocket,
    hello: () => unknown,
    receive: (data: unknown, reply: Reply) => void,
  ) {
    const reply = (message: unknown) => send(socket, message);
    socket.onopen = () => {
      this.#flush(); // so that the page gets nothing twice
      this.#open.add(socket);
      reply(hello());
    };
    socket.onclose = () => this.#open.delete(socket);
    socket.onmessage = (e) => receive(e.data, reply);
  }

  queue(event: LabEvent) {
    this.#pending.push(event);
  }

  // Drops the news that `keep` does not keep (what a clear makes old).
  drop(keep: (event: LabEvent) => boolean) {
    this.#pending = this.#pending.filter(keep);
  }

  broadcast(message: unknown) {
    const text = JSON.stringify(message);
    for (const socket of this.#open) send(socket, text);
  }

  close() {
    clearInterval(this.#timer);
    for (const socket of this.#open) socket.close(1001, "the lab stopped");
  }

  #flush() {
    if (!this.#pending.length && !this.busy()) return;
    const events = this.#pending;
    this.#pending = [];
    this.broadcast({ type: "batch", now: this.now(), events });
  }
}

function send(socket: WebSocket, message: unknown) {
  if (socket.readyState !== WebSocket.OPEN) return;
  socket.send(typeof message === "string" ? message : JSON.stringify(message));
}
