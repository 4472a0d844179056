// @ts-check
// The lab's page: one WebSocket to the lab, a panel a server, and controls
// that act on every panel at once. The page draws only what the lab reports;
// updates arrive in batches and are drawn once per animation frame.
import { COLORS, MEANING } from "./lanes.js";
import { Panel } from "./panel.js";
import { download, pictureSvg } from "./picture.js";

/** @type {Map<string, Panel>} */
const panels = new Map();
let now = 0; // the lab's clock at its latest report, in ms
let runtime = "deno";
let lastScale = { from: 0, to: 0 };
let drawing = false;

const socket = new WebSocket(`ws://${location.host}/socket`);
socket.onmessage = (/** @type {MessageEvent} */ e) =>
  receive(JSON.parse(e.data));
socket.onclose = () => {
  status("The lab has stopped: start it again (deno task lab) and reload.");
  document.body.classList.add("offline");
};

/** @param {object} request */
function send(request) {
  if (socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify(request));
  }
}

/** @param {any} message */
function receive(message) {
  if (message.type === "hello") setUp(message);
  if (message.type === "batch") now = message.now;
  if (message.type === "hello" || message.type === "batch") {
    for (const event of message.events) panels.get(event.mode)?.apply(event);
  }
  if (message.type === "clear") { for (const p of panels.values()) p.clear(); }
  if (message.type === "settings" || message.type === "hello") {
    showSettings(message);
  }
  if (message.type === "error") {
    // The lab refused a value: the panels' fields show what their servers
    // run with again (the lab's settings message that follows does the
    // same for the fields on top).
    showError(message.message);
    for (const panel of panels.values()) panel.undo();
  }
  if (!drawing) {
    drawing = true;
    requestAnimationFrame(draw);
  }
}

function draw() {
  drawing = false;
  const scale = timeScale();
  const moved = scale.from !== lastScale.from || scale.to !== lastScale.to;
  lastScale = scale;
  for (const panel of panels.values()) panel.draw(scale, now, moved);
}

// One time scale for every panel, from the first client's connect, so the
// panels compare at a glance.
function timeScale() {
  const starts = [...panels.values()].flatMap((p) =>
    p.lanes.list[0]?.start ?? []
  );
  const from = starts.length ? Math.min(...starts) : 0;
  return { from, to: Math.max(now, from + 3000) };
}

/** @param {any} hello */
function setUp(hello) {
  runtime = hello.runtime;
  now = hello.now;
  status(
    `${hello.panels.length} servers on ${runtime}, on this machine ` +
      `only; at most ${hello.maxClients} lab clients at once.`,
  );
  const main = /** @type {HTMLElement} */ (document.getElementById("panels"));
  main.textContent = "";
  panels.clear();
  for (const info of hello.panels) {
    const panel = new Panel(info, send);
    panels.set(info.mode, panel);
    main.append(panel.element);
  }
  const presets = byId("presets");
  presets.querySelectorAll("button").forEach((b) => b.remove());
  for (const preset of hello.presets) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = preset.title;
    button.title = preset.look;
    button.dataset.preset = preset.name;
    button.onclick = () => {
      byId("look").textContent = preset.look;
      send({ type: "preset", name: preset.name });
    };
    presets.append(button);
  }
}

/** @param {{ clients: Record<string, number>, work: number }} settings */
function showSettings({ clients, work }) {
  for (const [name, value] of Object.entries({ ...clients, work })) {
    input(name).value = String(value);
  }
}

function clientSettings() {
  const value = (/** @type {string} */ name) => Number(input(name).value);
  return { hold: value("hold"), lines: value("lines"), pause: value("pause") };
}

/** @param {string} text */
function status(text) {
  byId("status").textContent = text;
}

let errorTimer = 0;
/** @param {string} text */
function showError(text) {
  const error = byId("error");
  error.textContent = text;
  error.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => (error.hidden = true), 8000);
}

/** @param {string} id */
function byId(id) {
  return /** @type {HTMLElement} */ (document.getElementById(id));
}

/** @param {string} id */
function input(id) {
  return /** @type {HTMLInputElement} */ (document.getElementById(id));
}

function title() {
  const counts = [...panels.values()].map((p) => p.lanes.list.length);
  const { hold, lines } = clientSettings();
  return `Who waits: ${Math.max(...counts)} clients on each server, ` +
    `${lines} line${lines === 1 ? "" : "s"} each, holding ${hold} ms ` +
    `(the lab, on ${runtime})`;
}

for (const button of document.querySelectorAll("[data-add]")) {
  const count = Number(/** @type {HTMLElement} */ (button).dataset.add);
  button.addEventListener("click", () => {
    send({ type: "add", count, ...clientSettings() });
  });
}
input("work").addEventListener("change", () => {
  send({ type: "work", value: Number(input("work").value) });
});
byId("clear").onclick = () => {
  byId("look").textContent = "";
  send({ type: "clear" });
};
byId("save").onclick = () => {
  // Each panel titled by its mode and the flags the lab chose for it.
  const picture = [...panels.values()].map((p) => ({
    title: p.mode + p.argv.join(" ").split("--grace 0")[1],
    lanes: p.lanes,
  }));
  download(pictureSvg(picture, timeScale(), now, title()));
};
globalThis.addEventListener("resize", () => {
  lastScale = { from: 0, to: 0 }; // redraw every canvas at its new size
  receive({});
});

for (const [state, meaning] of Object.entries(MEANING)) {
  const item = document.createElement("li");
  const swatch = document.createElement("span");
  swatch.style.background = COLORS[/** @type {keyof COLORS} */ (state)];
  item.append(swatch, meaning);
  byId("legend").append(item);
}
