// One run of the lab, from one "clear" to the next: its clock, its client
// numbers, and what happened in it, kept for a page that opens later.
import type { Seen } from "./clients.ts";
import type { Mode, ServerSettings } from "./settings.ts";

// One thing that happened, at `t` ms on the run's clock. A `link` ties a
// client to the server's connection number and worker, as the server's own
// "opened" log line names them.
export type LabEvent =
  | ({ kind: "client"; mode: Mode; id: number; t: number } & Seen)
  | { kind: "link"; mode: Mode; id: number; conn: number; worker?: number }
  | { kind: "log"; mode: Mode; t: number; text: string; stream: string }
  | ({ kind: "server"; mode: Mode } & ServerInfo);

export type ServerInfo = {
  state: string;
  detail: string;
  argv: string[];
  port: number;
  pid: number;
  settings: ServerSettings;
};

// Log lines per panel kept for a page that opens later.
const LOG_KEPT = 300;
const OPENED = /^#(\d+) 127\.0\.0\.1:(\d+) (?:worker (\d+) )?opened$/;

export class Run {
  readonly start = performance.now();
  lanes = 0; // clients started in this run, on all panels
  #ids = new Map<Mode, number>(); // the last client number of each panel
  #clients = new Map<string, number>(); // "mode port": client number
  #opened = new Map<string, RegExpExecArray>(); // lines not yet matched
  #history: LabEvent[] = [];
  #logs = new Map<Mode, LabEvent[]>();

  // Milliseconds since the run began, to a tenth.
  now(): number {
    return Math.round((performance.now() - this.start) * 10) / 10;
  }

  nextClient(mode: Mode): number {
    const id = (this.#ids.get(mode) ?? 0) + 1;
    this.#ids.set(mode, id);
    this.lanes++;
    return id;
  }

  record(event: LabEvent) {
    if (event.kind !== "log") return this.#history.push(event);
    const kept = this.#logs.get(event.mode) ?? [];
    kept.push(event);
    if (kept.length > LOG_KEPT) kept.shift();
    this.#logs.set(event.mode, kept);
  }

  recorded(): LabEvent[] {
    return [...this.#history, ...[...this.#logs.values()].flat()];
  }

  // A client's own port, and the server's "opened" line that names it, may
  // come in either order; once both are here, they make a link.
  clientPort(mode: Mode, port: number, id: number): LabEvent | null {
    this.#clients.set(`${mode} ${port}`, id);
    return this.#link(mode, port);
  }

  serverLine(mode: Mode, text: string): LabEvent | null {
    const opened = OPENED.exec(text);
    if (!opened) return null;
    this.#opened.set(`${mode} ${opened[2]}`, opened);
    return this.#link(mode, Number(opened[2]));
  }

  #link(mode: Mode, port: number): LabEvent | null {
    const key = `${mode} ${port}`;
    const id = this.#clients.get(key), opened = this.#opened.get(key);
    if (id === undefined || !opened) return null;
    this.#opened.delete(key);
    const [, conn, , worker] = opened;
    const link = { kind: "link" as const, mode, id, conn: Number(conn) };
    return worker ? { ...link, worker: Number(worker) } : link;
  }
}
