/**
 * How the bench writes its tables: markdown, padded so that it reads well in
 * a terminal too, and the numbers in them.
 */

export function table(header: string[], rows: string[][]) {
  const widths = header.map((_, i) =>
    Math.max(3, ...[header, ...rows].map((row) => row[i].length))
  );
  const line = (cells: string[]) =>
    `| ${cells.map((cell, i) => cell.padEnd(widths[i])).join(" | ")} |`;
  const rule = line(widths.map((width) => "-".repeat(width)));
  return [line(header), rule, ...rows.map(line)];
}

// Words to lines of at most 78 characters.
export function paragraph(text: string) {
  const lines = [""];
  for (const word of text.split(" ")) {
    const last = lines.length - 1;
    if (lines[last] && lines[last].length + word.length >= 78) lines.push("");
    lines[lines.length - 1] += (lines[lines.length - 1] ? " " : "") + word;
  }
  return lines;
}

export function ms(value: number) {
  if (isNaN(value)) return "-";
  return `${value.toFixed(value < 1 ? 2 : value < 10 ? 1 : 0)} ms`;
}

// Whole milliseconds, "-" for none: storm.ts's summaries.
export function wholeMs(value: number | null) {
  return value === null ? "-" : `${Math.round(value)} ms`;
}

export function kib(value: number) {
  if (isNaN(value)) return "-";
  if (value < 10240) return `${value.toFixed(1)} KiB`;
  return `${(value / 1024).toFixed(1)} MiB`;
}

export function bytes(value: number) {
  return `${count(value)} B`;
}

export function count(value: number) {
  return isNaN(value) ? "-" : Math.round(value).toLocaleString("en-US");
}

export function percent(value: number | null) {
  return value === null || isNaN(value) ? "-" : `${Math.round(value)}%`;
}

export function plural(n: number, noun: string) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

// Nearest rank: the smallest value with a share `q` of them at or below it.
export function percentile(sorted: number[], q: number) {
  if (!sorted.length) return NaN;
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)];
}

// The middle value, or the mean of the two middle ones; NaN for none.
export function median(values: number[]) {
  const known = values.filter((value) => !isNaN(value)).sort((a, b) => a - b);
  const half = known.length / 2;
  if (!known.length) return NaN;
  return known.length % 2
    ? known[half - 0.5]
    : (known[half - 1] + known[half]) / 2;
}

// "42 s", "3 min 05 s": for the time a run has left.
export function duration(seconds: number) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
}
