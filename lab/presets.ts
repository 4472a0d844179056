// The README's experiments, each replayed by one button: the servers' flags
// (on top of DEFAULTS), what each client does, and how many clients join
// every panel at each step, STEP_MS apart, so that client 1 is first.
import type { ClientSettings, Mode, ServerSettings } from "./settings.ts";

export type Preset = {
  name: string;
  title: string;
  look: string; // what to look for
  servers: Partial<Record<Mode, ServerSettings>>;
  work: number;
  clients: ClientSettings;
  adds: number[];
};

export const STEP_MS = 400;

const everyPanel = (settings: ServerSettings) => ({
  serial: settings,
  "fixed-pool": settings,
  "thread-per-connection": settings,
  "worker-pool": settings,
});

export const PRESETS: Preset[] = [
  {
    name: "second-waits",
    title: "serial: the second client waits",
    look: "On serial, client 2 connects at once but waits (orange) until " +
      "client 1 closes; on thread-per-connection both are served at once.",
    servers: {},
    work: 0,
    clients: { hold: 3000, lines: 1, pause: 0 },
    adds: [1, 1],
  },
  {
    name: "pool-of-two",
    title: "fixed-pool: a pool of 2 and a third client",
    look: "fixed-pool --pool-size 2 serves clients 1 and 2; client 3 " +
      "waits until one of them closes, and the log names the worker that " +
      "took it.",
    servers: { "fixed-pool": { "pool-size": 2 } },
    work: 0,
    clients: { hold: 3000, lines: 1, pause: 0 },
    adds: [1, 1, 1],
  },
  {
    name: "backlog-one",
    title: "--backlog 1: the backlog fills",
    look: "With --backlog 1 the kernel queues two clients (backlog + 1): " +
      "on serial, clients 2 and 3 are connected and wait; client 4's " +
      "connect hangs (grey), since Linux drops its handshake rather than " +
      "refuse it, and gives up after 5 s (red).",
    servers: everyPanel({ backlog: 1 }),
    work: 0,
    clients: { hold: 7000, lines: 1, pause: 0 },
    adds: [1, 1, 1, 1],
  },
  {
    name: "slow-request",
    title: "one slow request on one event loop (--work 2000)",
    look: "Each reply costs 2 s of CPU. thread-per-connection serves both " +
      "clients on one event loop, so client 2 waits while client 1's work " +
      "runs. worker-pool answers them together when they land on " +
      "different workers (the log names them).",
    servers: {},
    work: 2000,
    clients: { hold: 1000, lines: 1, pause: 0 },
    adds: [1, 1],
  },
  {
    name: "who-waits",
    title: "the who-waits picture: 20 clients at once",
    look: "The README's picture, live: each client holds 200 ms after its " +
      "reply. serial serves the 20 in turn, fixed-pool with 10 workers in " +
      "two rounds, the other two all at once.",
    servers: { "fixed-pool": { "pool-size": 10 } },
    work: 0,
    clients: { hold: 200, lines: 1, pause: 0 },
    adds: [20],
  },
  {
    name: "who-waits-cpu",
    title: "20 clients, 50 ms of CPU a reply",
    look: "The same 20 clients, each reply costing 50 ms of CPU: now " +
      "thread-per-connection answers them one after another too, and " +
      "worker-pool one a worker at a time (the kernel picks each client's " +
      "worker; the log names it).",
    servers: { "fixed-pool": { "pool-size": 10 } },
    work: 50,
    clients: { hold: 200, lines: 1, pause: 0 },
    adds: [20],
  },
];
