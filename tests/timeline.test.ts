// The timeline of the bench's hold test (bench/draw.ts, for --timeline), drawn
// from fixed data: a panel per mode, a lane per client in the order they
// were served, waiting and served bars where the times say.
import { test } from "node:test";
import assert from "node:assert/strict";
import { timelineSvg } from "../bench/draw.ts";
import type { Lane } from "../bench/hold.ts";

const WAITING = 'fill="#f0a030"', SERVED = 'fill="#2f8f4e"';

// Each bar: its colour and its x, y and width, in drawing order.
function bars(svg: string) {
  return [
    ...svg.matchAll(
      /<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="\d+" (fill="#\w+")\/>/g,
    ),
  ]
    .map(([, x, y, width, fill]) => ({ fill, x: +x, y: +y, width: +width }))
    .filter((bar) => bar.fill === WAITING || bar.fill === SERVED)
    .slice(2); // the legend's two
}

const lane = (replied: number | null, closed: number): Lane => ({
  connected: 0,
  replied,
  closed,
});

test("timeline: a panel per mode, titled, in the order given", () => {
  const svg = timelineSvg([
    { title: "serial: one at a time", lanes: [lane(10, 210)] },
    { title: "thread-per-connection: all at once", lanes: [lane(5, 205)] },
  ]);
  assert.match(svg, /^<svg [^>]*width="760"/);
  assert.ok(svg.trimEnd().endsWith("</svg>"));
  const first = svg.indexOf(">serial: one at a time<");
  const second = svg.indexOf(">thread-per-connection: all at once<");
  assert.ok(first > 0 && second > first, "titles missing or out of order");
  assert.equal(bars(svg).length, 4); // two lanes, each waiting then served
});

test("timeline: lanes in the order served; an unserved client last, all waiting", () => {
  const svg = timelineSvg([{
    title: "serial",
    lanes: [lane(2000, 2200), lane(null, 3000), lane(0, 200), lane(1000, 1200)],
  }]);
  const drawn = bars(svg);
  const served = drawn.filter((bar) => bar.fill === SERVED);
  const waiting = drawn.filter((bar) => bar.fill === WAITING);
  assert.equal(served.length, 3);
  assert.equal(waiting.length, 4);
  // Top to bottom: served at 0, 1000, 2000 ms; then the one never served.
  const ys = served.map((bar) => bar.y);
  assert.deepEqual(ys, [...ys].sort((a, b) => a - b));
  const xs = served.map((bar) => bar.x);
  assert.ok(xs[0] < xs[1] && xs[1] < xs[2], "served later, further right");
  const unserved = waiting.at(-1)!;
  assert.ok(unserved.y > ys[2], "the unserved lane is not last");
  assert.ok(unserved.width > waiting[2].width, "it waited longest");
});

test("timeline: a labelled second on one time scale for every panel", () => {
  const svg = timelineSvg([
    { title: "slow", lanes: [lane(3500, 3700)] },
    { title: "fast", lanes: [lane(0, 200)] },
  ]);
  for (const second of ["0 s", "1 s", "2 s", "3 s"]) {
    assert.ok(svg.includes(`>${second}</text>`), `no label ${second}`);
  }
  // The same 200 ms hold is as wide in both panels.
  const served = bars(svg).filter((bar) => bar.fill === SERVED);
  assert.equal(served[0].width, served[1].width);
});

test("timeline: with --work, the title says what each line costs", () => {
  const lanes = [{ connected: 0, replied: 60, closed: 260 }];
  const svg = timelineSvg([{ title: "serial --work 50", lanes }], 50);
  assert.match(svg, /each line costs 50 ms of CPU/);
  assert.doesNotMatch(timelineSvg([{ title: "serial", lanes }]), /CPU/);
});
