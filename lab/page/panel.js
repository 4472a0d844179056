// @ts-check
// One panel: a model's server (its exact command, its state, its settings),
// its clients' lanes, its counters, and the server's own log beside them.
import { drawLanes, Lanes } from "./lanes.js";

const LOG_SHOWN = 200; // log lines a panel shows; older ones scroll away
const PLACEHOLDERS = { backlog: "default", "max-connections": "no cap" };

/**
 * @typedef {{ mode: string, flags: string[], state: string, detail: string,
 *   argv: string[], port: number, pid: number,
 *   settings: Record<string, number | null> }} ServerInfo
 * @typedef {{ kind: string, mode: string, t: number, text: string,
 *   stream: string }} LogEvent
 */

export class Panel {
  lanes = new Lanes();
  /** @type {string[]} */
  argv = [];
  /** @type {LogEvent[]} */
  #newLines = [];
  #dirty = true;
  #origin = 0; // the lab's time at the left of the lanes
  /** @type {Record<string, number | null>} */
  #settings = {}; // the server's, as the lab last reported them

  /**
   * @param {ServerInfo} info
   * @param {(request: object) => void} send
   */
  constructor(info, send) {
    this.mode = info.mode;
    this.element = element("section", "panel");
    this.element.dataset.mode = info.mode;
    const head = element("header");
    head.append(element("h2", "", info.mode));
    this.state = element("span", "state");
    head.append(this.state);
    this.command = element("code", "command");
    this.settings = element("div", "settings");
    /** @type {Map<string, HTMLInputElement>} */
    this.inputs = new Map();
    for (const flag of info.flags) this.#addInput(flag, send);
    this.counters = element("p", "counters");
    this.canvas = /** @type {HTMLCanvasElement} */ (element("canvas"));
    this.canvas.setAttribute("role", "img");
    this.log = element("ol", "log");
    this.log.setAttribute("aria-label", `${info.mode}'s log`);
    const body = element("div", "body");
    body.append(this.canvas, this.log);
    this.element.append(head, this.command, this.settings, this.counters, body);
    this.server(info);
  }

  /** @param {any} event  one thing the lab reports, for this panel */
  apply(event) {
    if (event.kind === "client") this.lanes.see(event);
    else if (event.kind === "link") this.lanes.link(event);
    else if (event.kind === "log") this.#newLines.push(event);
    else if (event.kind === "server") this.server(event);
    this.#dirty = true;
  }

  clear() {
    this.lanes = new Lanes();
    this.#newLines = [];
    this.log.textContent = "";
    this.#dirty = true;
  }

  /** @param {ServerInfo} info */
  server(info) {
    this.argv = info.argv;
    this.command.textContent = info.argv.join(" ");
    const failed = info.state === "exited";
    this.state.textContent = failed
      ? `${info.detail || "the server exited"}: see its log; change a ` +
        "setting or pick an experiment to start it again"
      : info.state === "listening"
      ? `${info.detail}, pid ${info.pid}`
      : `${info.state}…`;
    this.element.classList.toggle("failed", failed);
    this.#settings = info.settings;
    for (const [flag, input] of this.inputs) {
      if (document.activeElement !== input) this.#show(flag, input);
    }
  }

  // After the lab refused a value: every field shows what the server runs
  // with again, the one just typed in too.
  undo() {
    for (const [flag, input] of this.inputs) this.#show(flag, input);
  }

  /**
   * @param {string} flag
   * @param {HTMLInputElement} input
   */
  #show(flag, input) {
    input.value = String(this.#settings[flag] ?? "");
  }

  // Redraws what changed; the lanes grow with the lab's clock.
  /**
   * @param {import("./lanes.js").Scale} scale
   * @param {number} now
   * @param {boolean} moved  whether the time scale changed
   */
  draw(scale, now, moved) {
    if (!this.#dirty && !moved) return;
    this.#dirty = false;
    const { canvas } = this;
    const ratio = globalThis.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx =
      /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    drawLanes(ctx, this.lanes, scale, now, width, height);
    canvas.setAttribute("aria-label", this.lanes.describe() || "no clients");
    this.counters.textContent = counters(this.lanes);
    if (scale.from !== this.#origin) this.#retime(scale.from);
    this.#showLog();
  }

  // Log times count from the same moment as the lanes' time axis.
  /** @param {number} origin */
  #retime(origin) {
    this.#origin = origin;
    for (const time of this.log.querySelectorAll("time")) {
      time.textContent = seconds(Number(time.dataset.t) - origin);
    }
  }

  #showLog() {
    const lines = this.#newLines.slice(-LOG_SHOWN);
    this.#newLines = [];
    if (!lines.length) return;
    const atEnd =
      this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 4;
    const items = lines.map((line) => {
      const item = element("li", line.stream);
      const time = element("time", "", seconds(line.t - this.#origin));
      time.dataset.t = String(line.t);
      item.append(time);
      item.append(` ${line.text}`);
      return item;
    });
    this.log.append(...items);
    while (this.log.childElementCount > LOG_SHOWN) {
      this.log.firstElementChild?.remove();
    }
    if (atEnd) this.log.scrollTop = this.log.scrollHeight;
  }

  /**
   * @param {string} flag
   * @param {(request: object) => void} send
   */
  #addInput(flag, send) {
    const input = /** @type {HTMLInputElement} */ (element("input"));
    input.type = "number";
    input.placeholder = PLACEHOLDERS[/** @type {"backlog"} */ (flag)] ?? "";
    input.addEventListener("change", () => {
      const value = input.value === "" ? null : Number(input.value);
      send({ type: "setting", mode: this.mode, flag, value });
    });
    const label = element("label", "", `--${flag} `);
    label.append(input);
    this.settings.append(label);
    this.inputs.set(flag, input);
  }
}

/** @param {number} ms */
function seconds(ms) {
  const text = (ms / 1000).toFixed(2);
  return `${text === "-0.00" ? "0.00" : text} s`;
}

/** @param {Lanes} lanes */
function counters(lanes) {
  const c = lanes.counts();
  const replies = lanes.firstReplies();
  const at = (/** @type {number} */ q) =>
    replies.length ? `${Math.round(percentile(replies, q))} ms` : "–";
  return `waiting ${c.connecting + c.waiting}` +
    (c.connecting ? ` (${c.connecting} connecting)` : "") +
    ` · being served ${c.served} · done ${c.closed} · failed ${c.failed}` +
    ` · first reply p50 ${at(0.5)}, p99 ${at(0.99)}, max ${at(1)}`;
}

// Nearest rank: the smallest value with at least q of them at or below it.
/**
 * @param {number[]} sorted
 * @param {number} q
 */
export function percentile(sorted, q) {
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)];
}

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 */
function element(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}
