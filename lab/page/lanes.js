// @ts-check
// One panel's clients, as the lab saw them, and their lanes drawn on a
// canvas: a lane a client, time across, coloured by state, as in
// docs/who-waits.svg. A lane shows only states the lab reported: an open
// client's last state reaches to the lab's latest report, no further.

export const COLORS = {
  connecting: "#9aaab9",
  waiting: "#f0a030",
  served: "#2f8f4e",
  closed: "#333333",
  failed: "#d0392b",
};
export const MEANING = {
  connecting: "connecting",
  waiting: "connected, waiting for its reply",
  served: "served",
  closed: "closed",
  failed: "timed out, refused or cut off",
};

/**
 * @typedef {{ state: keyof COLORS, t: number }} Segment
 * @typedef {{ id: number, start: number, segments: Segment[],
 *   state: keyof COLORS, end: number | null, reason: string,
 *   firstReply: number | null, conn: number | null,
 *   worker: number | null }} Lane
 * @typedef {{ from: number, to: number }} Scale  the lab's ms across a canvas
 */

export class Lanes {
  /** @type {Lane[]} */
  list = [];
  /** @type {Map<number, Lane>} */
  #byId = new Map();

  /** @param {{ id: number, t: number, state: keyof COLORS, reason?: string }} e */
  see(e) {
    let lane = this.#byId.get(e.id);
    if (!lane) {
      lane = {
        id: e.id,
        start: e.t,
        segments: [],
        state: e.state,
        end: null,
        reason: "",
        firstReply: null,
        conn: null,
        worker: null,
      };
      this.#byId.set(e.id, lane);
      this.list.push(lane);
    }
    lane.state = e.state;
    if (e.state === "closed" || e.state === "failed") {
      lane.end = e.t;
      lane.reason = e.reason ?? "";
      return;
    }
    lane.segments.push({ state: e.state, t: e.t });
    if (e.state === "served" && lane.firstReply === null) {
      lane.firstReply = e.t - lane.start;
    }
  }

  /** @param {{ id: number, conn: number, worker?: number }} e */
  link(e) {
    const lane = this.#byId.get(e.id);
    if (!lane) return;
    lane.conn = e.conn;
    lane.worker = e.worker ?? null;
  }

  counts() {
    const counts = {
      connecting: 0,
      waiting: 0,
      served: 0,
      closed: 0,
      failed: 0,
    };
    for (const lane of this.list) counts[lane.state]++;
    return counts;
  }

  // Time to first reply, from the start of the connect, in ms, sorted.
  firstReplies() {
    return this.list.flatMap((l) => l.firstReply ?? []).sort((a, b) => a - b);
  }

  // The lanes in words, for screen readers (and the browser test).
  describe() {
    if (this.list.length > 20) {
      const c = this.counts();
      return `${this.list.length} clients: ` +
        Object.entries(c).map(([state, n]) => `${n} ${state}`).join(", ");
    }
    return this.list.map((l) => `client ${l.id}: ${l.state}`).join("; ");
  }
}

export const GUTTER = 84; // room for a lane's label, left of the time
const AXIS = 16; // room for the seconds, below the lanes

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {Lanes} lanes
 * @param {Scale} scale
 * @param {number} now  the lab's latest report
 * @param {number} width
 * @param {number} height
 */
export function drawLanes(ctx, lanes, scale, now, width, height) {
  ctx.clearRect(0, 0, width, height);
  const span = Math.max(1, scale.to - scale.from);
  const x = (/** @type {number} */ t) =>
    GUTTER + ((t - scale.from) / span) * (width - GUTTER - 8);
  drawAxis(ctx, scale, x, height);
  const n = lanes.list.length;
  const pitch = Math.min(14, (height - AXIS - 4) / Math.max(n, 1));
  const tall = pitch >= 3 ? pitch - 1 : pitch;
  ctx.font = "10px sans-serif";
  lanes.list.forEach((lane, i) => {
    const y = 2 + i * pitch;
    lane.segments.forEach((segment, j) => {
      const next = lane.segments[j + 1]?.t ?? lane.end ?? now;
      ctx.fillStyle = COLORS[segment.state];
      ctx.fillRect(x(segment.t), y, Math.max(1, x(next) - x(segment.t)), tall);
    });
    if (lane.end !== null) {
      ctx.fillStyle = COLORS[lane.state];
      ctx.fillRect(x(lane.end), y, lane.state === "failed" ? 6 : 2, tall);
    }
    if (pitch >= 11) {
      ctx.fillStyle = "#333";
      ctx.fillText(label(lane), 4, y + tall - 1);
    }
  });
}

/** @param {Lane} lane */
function label(lane) {
  const by = lane.conn === null ? "" : ` → #${lane.conn}`;
  return `client ${lane.id}${by}${lane.worker ? ` w${lane.worker}` : ""}`;
}

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {Scale} scale
 * @param {(t: number) => number} x
 * @param {number} height
 */
function drawAxis(ctx, scale, x, height) {
  const step = tickStep(scale.to - scale.from);
  ctx.font = "10px sans-serif";
  ctx.textAlign = "center";
  for (let s = 0; scale.from + s <= scale.to; s += step) {
    ctx.fillStyle = "#ddd";
    ctx.fillRect(Math.round(x(scale.from + s)), 0, 1, height - AXIS);
    ctx.fillStyle = "#555";
    ctx.fillText(`${s / 1000} s`, x(scale.from + s), height - 4);
  }
  ctx.textAlign = "start";
}

// A line each second, or fewer when the run is long.
/** @param {number} span */
export function tickStep(span) {
  const steps = [1, 2, 5, 10, 30, 60, 120, 300];
  return (steps.find((s) => span / (s * 1000) <= 12) ?? 600) * 1000;
}
