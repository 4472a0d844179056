// @ts-check
// "Save picture": the current run as an SVG in the style of
// docs/who-waits.svg: a panel a server, a lane a client, one time scale.
import { COLORS, MEANING, tickStep } from "./lanes.js";

const WIDTH = 760, LEFT = 24, RIGHT = 24;

/**
 * @typedef {{ title: string, lanes: import("./lanes.js").Lanes }} PicturePanel
 * @param {PicturePanel[]} panels
 * @param {import("./lanes.js").Scale} scale
 * @param {number} now
 * @param {string} title
 */
export function pictureSvg(panels, scale, now, title) {
  const most = Math.max(1, ...panels.map((p) => p.lanes.list.length));
  const pitch = Math.max(0.5, Math.min(6, 600 / most)); // 5 + 1, as there
  const tall = pitch >= 3 ? pitch - 1 : pitch;
  const panelHeight = 28 + most * pitch;
  const bottom = 56 + panels.length * panelHeight;
  const height = bottom + 24;
  const span = Math.max(1, scale.to - scale.from);
  const x = (/** @type {number} */ t) =>
    (LEFT + ((t - scale.from) / span) * (WIDTH - LEFT - RIGHT)).toFixed(1);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" ` +
    `height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${height}" rx="6" fill="white"/>`,
    `<text x="20" y="22" font-weight="bold">${escape(title)}</text>`,
    ...legend(),
  ];
  const step = tickStep(span);
  for (let s = 0; scale.from + s <= scale.to; s += step) {
    const at = x(scale.from + s);
    out.push(
      `<line x1="${at}" y1="50" x2="${at}" y2="${bottom}" stroke="#ddd"/>`,
      `<text x="${at}" y="${bottom + 14}" text-anchor="middle" ` +
        `font-size="10" fill="#555">${s / 1000} s</text>`,
    );
  }
  panels.forEach((panel, p) => {
    const top = 56 + p * panelHeight;
    out.push(
      `<text x="20" y="${top + 14}" font-weight="bold">` +
        `${escape(panel.title)}</text>`,
    );
    panel.lanes.list.forEach((lane, i) => {
      const y = top + 22 + i * pitch;
      lane.segments.forEach((segment, j) => {
        const next = lane.segments[j + 1]?.t ?? lane.end ?? now;
        out.push(bar(x(segment.t), x(next), y, tall, COLORS[segment.state]));
      });
      if (lane.end !== null) {
        const mark = lane.state === "failed" ? 4 : 1.5;
        const end = Number(x(lane.end));
        out.push(
          bar(
            x(lane.end),
            (end + mark).toFixed(1),
            y,
            tall,
            COLORS[lane.state],
          ),
        );
      }
    });
  });
  out.push("</svg>", "");
  return out.join("\n");
}

// A swatch and its meaning for each state, in a row, each after the last
// (about 5.5 px a character at this size).
function legend() {
  let at = 20;
  return Object.entries(MEANING).flatMap(([state, meaning]) => {
    const fill = COLORS[/** @type {keyof COLORS} */ (state)];
    const swatch = [
      `<rect x="${at}" y="32" width="12" height="10" fill="${fill}"/>`,
      `<text x="${at + 16}" y="41" font-size="10">${meaning}</text>`,
    ];
    at += 16 + Math.ceil(meaning.length * 5.5) + 14;
    return swatch;
  });
}

/**
 * @param {string} x1
 * @param {string} x2
 * @param {number} y
 * @param {number} h
 * @param {string} fill
 */
function bar(x1, x2, y, h, fill) {
  const w = Math.max(1, Number(x2) - Number(x1)).toFixed(1);
  return `<rect x="${x1}" y="${y}" width="${w}" height="${h}" fill="${fill}"/>`;
}

/** @param {string} text */
function escape(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;");
}

// Hands the picture to the browser as a download.
/** @param {string} svg */
export function download(svg) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" }));
  link.download = `lab-${new Date().toISOString().slice(0, 19)}.svg`
    .replaceAll(":", "-");
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}
