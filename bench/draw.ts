/**
 * The bench's pictures, drawn by hand as SVG, no library: the chart of the
 * hold and ping-pong tables (--svg), and who waited in the hold test, a lane
 * a client (--timeline).
 */
import { count, plural } from "./format.ts";
import { HOLD_CLIENTS, HOLD_MS, type Lane } from "./hold.ts";
import { BARE, type Mode } from "./runner.ts";

const COLORS: Record<Mode | typeof BARE, string> = {
  serial: "#d95f02",
  "fixed-pool": "#7570b3",
  "thread-per-connection": "#1b9e77",
  "worker-pool": "#e7298a",
  [BARE]: "#999999",
};

type Bar = { mode: Mode | typeof BARE; value: number };
type Group = { label: string; bars: Bar[] };

// (a) the hold test's total time, (b) replies per second at each
// connection count; a colour a server.
export function chart(
  hold: Bar[],
  ping: (Bar & { conns: number })[],
  conns: number[],
): string {
  const holdGroup: Group = {
    label: `${HOLD_CLIENTS} clients, ${HOLD_MS} ms each`,
    bars: hold,
  };
  const pingGroups: Group[] = conns.map((c) => ({
    label: plural(c, "connection"),
    bars: ping.filter((bar) => bar.conns === c),
  }));
  // The legend: a swatch and a name for each server, side by side.
  const shown = [...new Set([...hold, ...ping].map((bar) => bar.mode))];
  let x = 20;
  const legend = shown.map((mode) => {
    const item = `<rect x="${x}" y="282" width="12" height="12" ` +
      `fill="${COLORS[mode]}"/><text x="${x + 18}" y="292">${mode}</text>`;
    x += 18 + 7 * mode.length + 16; // about 7 px a character
    return item;
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="760" height="310" ` +
    `font-family="sans-serif" font-size="12">`,
    `<rect width="760" height="310" fill="white"/>`,
    ...panel(20, 250, "(a) hold: total ms, lower is better", [holdGroup]),
    ...panel(
      310,
      430,
      "(b) ping-pong: replies/s, higher is better",
      pingGroups,
    ),
    ...legend,
    "</svg>",
    "",
  ].join("\n");
}

// A title, a baseline, and for each group its bars with their values.
function panel(x: number, width: number, title: string, groups: Group[]) {
  const base = 240, height = 190;
  const values = groups.flatMap((group) => group.bars.map((bar) => bar.value));
  const max = Math.max(1, ...values.filter((value) => !isNaN(value)));
  const slot = width / groups.length;
  const out = [
    `<text x="${x}" y="24" font-weight="bold">${title}</text>`,
    `<line x1="${x}" y1="${base}" x2="${x + width}" y2="${base}" ` +
    `stroke="black"/>`,
  ];
  groups.forEach((group, g) => {
    const barWidth = Math.min(50, (slot - 20) / group.bars.length);
    const left = x + g * slot + (slot - barWidth * group.bars.length) / 2;
    group.bars.forEach(({ mode, value }, b) => {
      const h = isNaN(value) ? 0 : (value / max) * height;
      const bx = left + b * barWidth;
      out.push(
        `<rect x="${bx.toFixed(1)}" y="${(base - h).toFixed(1)}" ` +
          `width="${barWidth - 4}" height="${h.toFixed(1)}" ` +
          `fill="${COLORS[mode]}"/>`,
        `<text x="${(bx + barWidth / 2 - 2).toFixed(1)}" ` +
          `y="${(base - h - 4).toFixed(1)}" text-anchor="middle" ` +
          `font-size="10">${count(value)}</text>`,
      );
    });
    out.push(
      `<text x="${(x + (g + 0.5) * slot).toFixed(1)}" y="${base + 16}" ` +
        `text-anchor="middle">${group.label}</text>`,
    );
  });
  return out;
}

// ---- The timeline: who waited in (a), a lane a client, one panel a mode.

const TIMELINE = { width: 760, lane: 5, gap: 1, left: 24, right: 24 };
const WAITING = "#f0a030", SERVED = "#2f8f4e";

type Panel = { title: string; lanes: Lane[] };

// Lanes in the order their clients were served (those never served last),
// on one time scale for all panels, so that the panels compare at a glance.
export function timelineSvg(panels: Panel[], work = 0): string {
  const { width, lane, gap, left, right } = TIMELINE;
  const end = Math.max(
    1,
    ...panels.flatMap((p) => p.lanes.map((l) => l.closed)),
  );
  const x = (ms: number) =>
    (left + (ms / end) * (width - left - right)).toFixed(1);
  const panelHeight = 28 + panels[0]?.lanes.length * (lane + gap);
  const bottom = 56 + panels.length * panelHeight; // the time axis
  const height = bottom + 24;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" ` +
    `height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" rx="6" fill="white"/>`,
    `<text x="20" y="22" font-weight="bold">Who waits: ${HOLD_CLIENTS} ` +
    `clients connect at once; each holds ${HOLD_MS} ms after its reply` +
    (work ? `; each line costs ${work} ms of CPU` : "") + "</text>",
    `<rect x="20" y="32" width="12" height="10" fill="${WAITING}"/>`,
    `<text x="38" y="41">connected, waiting for its reply</text>`,
    `<rect x="250" y="32" width="12" height="10" fill="${SERVED}"/>`,
    `<text x="268" y="41">served (holding)</text>`,
  ];
  for (let s = 0; s * 1000 <= end; s++) { // a line and a label each second
    out.push(
      `<line x1="${x(s * 1000)}" y1="50" x2="${x(s * 1000)}" y2="${bottom}" ` +
        `stroke="#ddd"/>`,
      `<text x="${x(s * 1000)}" y="${bottom + 14}" text-anchor="middle" ` +
        `font-size="10" fill="#555">${s} s</text>`,
    );
  }
  panels.forEach((panel, p) => {
    const top = 56 + p * panelHeight;
    out.push(
      `<text x="20" y="${top + 14}" font-weight="bold">` +
        `${panel.title}</text>`,
    );
    const served = (l: Lane) => l.replied ?? Infinity;
    const lanes = [...panel.lanes].sort((a, b) => served(a) - served(b));
    lanes.forEach((l, i) => {
      const y = top + 22 + i * (lane + gap);
      const reply = l.replied ?? l.closed;
      out.push(bar(x(l.connected), x(reply), y, lane, WAITING));
      if (l.replied !== null) {
        out.push(bar(x(l.replied), x(l.closed), y, lane, SERVED));
      }
    });
  });
  out.push("</svg>", "");
  return out.join("\n");
}

function bar(x1: string, x2: string, y: number, h: number, fill: string) {
  const w = Math.max(1, Number(x2) - Number(x1)).toFixed(1);
  return `<rect x="${x1}" y="${y}" width="${w}" height="${h}" fill="${fill}"/>`;
}
