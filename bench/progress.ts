/**
 * Where a long run is: which step of how many, what it measures, and about
 * how long is left. On a terminal, one line that updates every second; in a
 * pipe or a file, one plain line a step. It goes to stderr, so that the
 * tables on stdout can be saved on their own.
 */
import { duration } from "./format.ts";

const encoder = new TextEncoder();

export class Progress {
  readonly #estimates: number[]; // seconds each step is expected to take
  readonly #terminal = Deno.stderr.isTerminal();
  #step = 0;
  #what = "";
  #stepStarted = 0;
  #ticker: ReturnType<typeof setInterval> | undefined;

  constructor(estimates: number[]) {
    this.#estimates = estimates;
  }

  // The next step begins.
  next(what: string) {
    this.#step++;
    this.#what = what;
    this.#stepStarted = performance.now();
    if (!this.#terminal) return this.#write(`${this.#line()}\n`);
    this.#write(`\r\x1b[K${this.#line()}`);
    if (!this.#ticker) {
      this.#ticker = setInterval(() => {
        this.#write(`\r\x1b[K${this.#line()}`);
      }, 1000);
      this.#ticker.unref(); // it must not keep the bench alive
    }
  }

  // The run is over (or interrupted): the terminal's line is cleared.
  end() {
    clearInterval(this.#ticker);
    if (this.#terminal && this.#step) this.#write("\r\x1b[K");
  }

  #line() {
    const spent = (performance.now() - this.#stepStarted) / 1000;
    const current = Math.max(0, this.#estimates[this.#step - 1] - spent);
    const rest = this.#estimates.slice(this.#step).reduce((a, b) => a + b, 0);
    return `[${this.#step}/${this.#estimates.length}] ${this.#what} ` +
      `(about ${duration(current + rest)} left)`;
  }

  #write(text: string) {
    Deno.stderr.writeSync(encoder.encode(text));
  }
}
