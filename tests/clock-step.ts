// Preloaded into a server by tests/clock.test.ts: the wall clock steps by
// CLOCK_STEP_MS milliseconds at every reading of Date.now(), as if NTP, a
// resumed VM or `date -s` moved it again and again. A server that measures
// durations on a monotonic clock must not notice.
import process from "node:process";

const step = Number(process.env.CLOCK_STEP_MS);
const wallClock = Date.now;
let offset = 0;
Date.now = () => wallClock() + (offset += step);
