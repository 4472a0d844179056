// The hub between the pages and the real things: it does what a page asks
// (once parseRequest has checked it), and tells every page what the servers
// print and what the clients see, stamped with the run's clock.
import { Clients, MAX_CLIENTS } from "./clients.ts";
import { type Preset, PRESETS, STEP_MS } from "./presets.ts";
import { Pages, type Reply } from "./pages.ts";
import { parseRequest, type Request } from "./requests.ts";
import { type LabEvent, Run, type ServerInfo } from "./run.ts";
import { ModeServer, type ServerReport } from "./servers.ts";
import {
  CLIENT_DEFAULTS,
  type ClientSettings,
  DEFAULTS,
  InputError,
  type Mode,
  MODES,
  PANEL_FLAGS,
  type Runtime,
  type ServerSettings,
} from "./settings.ts";

// A run keeps every lane until cleared; this many at most.
const MAX_LANES = 5000;

export class Hub {
  #servers = new Map<Mode, ModeServer>();
  #restarts = new Map<Mode, Promise<unknown>>(); // one at a time per panel
  #clients = new Clients();
  #run = new Run();
  #pages = new Pages(() => this.#run.now(), () => this.#clients.active > 0);
  #clientSettings = CLIENT_DEFAULTS;
  #work = 0;

  constructor(readonly runtime: Runtime) {
    for (const mode of MODES) {
      const settings = { ...DEFAULTS[mode] };
      const report = (r: ServerReport) => this.#fromServer(mode, r);
      const server = new ModeServer(mode, runtime, settings, report);
      this.#servers.set(mode, server);
      server.start();
    }
  }

  join(socket: WebSocket) {
    this.#pages.join(socket, () => this.#hello(), (data, reply) => {
      try {
        this.#do(parseRequest(data)).catch((err) => this.#fail(reply, err));
      } catch (err) {
        this.#fail(reply, err);
      }
    });
  }

  // Stops every client and every server the lab started.
  async stop() {
    this.#run = new Run(); // a preset still adding clients stops
    this.#clients.clear();
    this.#pages.close();
    await Promise.all([...this.#servers.values()].map((s) => s.stop()));
  }

  get pids(): number[] {
    return [...this.#servers.values()].map((s) => s.pid);
  }

  async #do(request: Request) {
    switch (request.type) {
      case "add":
        this.#clientSettings = request.clients;
        return this.#add(request.count, request.clients);
      case "setting": {
        const { settings } = this.#servers.get(request.mode)!;
        const changed = { ...settings, [request.flag]: request.value };
        return await this.#configure(request.mode, changed);
      }
      case "work":
        this.#work = request.value;
        this.#pages.broadcast(this.#settings());
        return await Promise.all(MODES.map((mode) => this.#configure(mode)));
      case "preset":
        return await this.#preset(request.preset);
      case "clear":
        return this.#clear();
    }
  }

  #fail(reply: Reply, err: unknown) {
    if (!(err instanceof InputError)) console.error(`lab: ${err}`);
    reply({ type: "error", message: (err as Error).message });
    reply(this.#settings()); // so that the page's fields go back to them
  }

  // `count` new clients on every panel whose server listens.
  #add(count: number, clients: ClientSettings) {
    const ready = MODES.filter((m) =>
      this.#servers.get(m)!.state === "listening"
    );
    const wanted = count * ready.length;
    if (this.#clients.active + wanted > MAX_CLIENTS) {
      throw new InputError(
        `at most ${MAX_CLIENTS} lab clients at once, and ` +
          `${this.#clients.active} are open: wait, or clear`,
      );
    }
    if (this.#run.lanes + wanted > MAX_LANES) {
      throw new InputError(`a run holds ${MAX_LANES} clients: clear first`);
    }
    for (const mode of MODES.filter((m) => !ready.includes(m))) {
      this.#note(mode, "no client added: the server is not listening");
    }
    for (const mode of ready) {
      for (let i = 0; i < count; i++) this.#startClient(mode, clients);
    }
  }

  #startClient(mode: Mode, clients: ClientSettings) {
    const run = this.#run;
    const id = run.nextClient(mode);
    const { port } = this.#servers.get(mode)!;
    this.#clients.start(id, port, clients, (seen) => {
      this.#emit({ kind: "client", mode, id, t: run.now(), ...seen });
      if (seen.port) this.#emit(run.clientPort(mode, seen.port, id));
    });
  }

  // Restarts a panel's server with new settings, if they differ.
  #configure(mode: Mode, wanted?: ServerSettings): Promise<boolean> {
    const server = this.#servers.get(mode)!;
    const settings = {
      ...(wanted ?? server.settings),
      work: this.#work || null,
    };
    const flags = [...PANEL_FLAGS[mode], "work"] as (keyof ServerSettings)[];
    const same = flags.every((f) => settings[f] === server.settings[f]);
    if (same && server.port) return Promise.resolve(true);
    const last = this.#restarts.get(mode) ?? Promise.resolve();
    const next = last.then(() => {
      this.#note(mode, "restarting the server with new settings");
      return server.restart(settings);
    });
    this.#restarts.set(mode, next);
    return next;
  }

  async #preset(preset: Preset) {
    this.#clear();
    const run = this.#run;
    this.#clientSettings = preset.clients;
    this.#work = preset.work;
    this.#pages.broadcast({ ...this.#settings(), preset: preset.name });
    await Promise.all(
      MODES.map((mode) =>
        this.#configure(mode, { ...DEFAULTS[mode], ...preset.servers[mode] })
      ),
    );
    for (const [step, count] of preset.adds.entries()) {
      if (step > 0) await new Promise((r) => setTimeout(r, STEP_MS));
      if (run !== this.#run) return; // cleared, or another preset began
      this.#add(count, preset.clients);
    }
  }

  #clear() {
    this.#clients.clear();
    this.#run = new Run();
    // What the clients saw goes; what the servers did is still news.
    this.#pages.drop((e) => e.kind === "server");
    this.#pages.broadcast({ type: "clear" });
  }

  #fromServer(mode: Mode, report: ServerReport) {
    if (report.kind === "line") {
      const { text, stream } = report;
      this.#emit({ kind: "log", mode, t: this.#run.now(), text, stream });
      return this.#emit(this.#run.serverLine(mode, text));
    }
    this.#emit({ kind: "server", mode, ...this.#info(mode) });
    // The server says itself that it listens; the lab says the rest.
    if (report.state !== "listening") this.#note(mode, report.detail);
  }

  #note(mode: Mode, text: string) {
    this.#emit({ kind: "log", mode, t: this.#run.now(), text, stream: "lab" });
  }

  #info(mode: Mode): ServerInfo {
    const { state, argv, port, pid, settings } = this.#servers.get(mode)!;
    const detail = state === "listening"
      ? `listening on 127.0.0.1:${port}`
      : "";
    return { state, detail, argv, port, pid, settings };
  }

  #emit(event: LabEvent | null) {
    if (!event) return;
    this.#pages.queue(event);
    this.#run.record(event);
  }

  #hello() {
    return {
      ...this.#settings(),
      type: "hello",
      runtime: this.runtime,
      now: this.#run.now(),
      maxClients: MAX_CLIENTS,
      presets: PRESETS.map(({ name, title, look }) => ({ name, title, look })),
      panels: MODES.map((mode) => ({
        mode,
        flags: PANEL_FLAGS[mode],
        ...this.#info(mode),
      })),
      events: this.#run.recorded(),
    };
  }

  #settings() {
    return {
      type: "settings",
      clients: this.#clientSettings,
      work: this.#work,
    };
  }
}
