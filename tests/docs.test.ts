// README.md and the pages under docs/ run from a fresh clone: they name no
// path outside the repository, and every link between them leads somewhere.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { ROOT } from "./helpers.ts";

// README.md and every page under docs/, notes included.
function pages(folder = "docs"): string[] {
  return readdirSync(join(ROOT, folder), { withFileTypes: true }).flatMap(
    (entry) => {
      const path = `${folder}/${entry.name}`;
      if (entry.isDirectory()) return pages(path);
      return entry.name.endsWith(".md") ? [path] : [];
    },
  );
}
const PAGES = ["README.md", ...pages()];

const LINK = /\]\(([^)\s]+)\)/g; // [text](target)

// Absolute paths that are the system's, not a machine's folders: what a
// command reads (/proc, /dev), a scratch file it makes (/tmp), and the
// placeholder for wherever the reader cloned the repository.
const SYSTEM = /^\/(proc|dev|sys|usr|bin|etc|tmp)(\/|$)|^\/path\/to\/repo\b/;

function isInside(path: string) {
  const rel = relative(ROOT, path);
  return rel !== "" && !rel.startsWith("..") && !rel.startsWith("/");
}

// What the text of `page` names outside the repository. A link resolves
// from the page's folder; a path in the text or a command, from the top
// folder, where the pages say to run every command.
function outside(page: string, text: string): string[] {
  const found = [];
  for (const [, target] of text.matchAll(LINK)) {
    if (/^[a-z]+:|^#/.test(target)) continue; // a web address, an anchor
    const path = resolve(dirname(join(ROOT, page)), target.split("#")[0]);
    if (!isInside(path)) found.push(target);
  }
  const prose = text.replace(LINK, "]()");
  const climbs = /(?<![\w./~-])(?:\.\.\/)+[\w./-]*/g; // ../shared/bench
  found.push(...[...prose.matchAll(climbs)].map(([path]) => path));
  // After a name, a variable or a tag it is relative: $RIG/x, ${dir}/x, </a>.
  const absolute = /(?<![\w./~<>})-])\/[a-z][\w.-]*(?:\/[\w.{}-]*)*/gi;
  for (const [match] of prose.matchAll(absolute)) {
    const path = match.replace(/\.+$/, ""); // a sentence's full stop
    if (!SYSTEM.test(path)) found.push(path);
  }
  return found;
}

test("docs name no path outside the repository", () => {
  for (const page of PAGES) {
    const text = readFileSync(join(ROOT, page), "utf8");
    assert.deepEqual(outside(page, text), [], page);
  }
});

test("docs: what the check counts as outside, and what not", () => {
  const page = "docs/performance.md";
  assert.deepEqual(
    outside(page, "Run `../shared/bench/bench.sh`, see /work/shared/x.md."),
    ["../shared/bench/bench.sh", "/work/shared/x.md"],
  );
  assert.deepEqual(outside(page, "[rig](../../shared/README.md)"), [
    "../../shared/README.md",
  ]);
  const fine = "[Back](../README.md), [notes](notes/a.md), `/proc/PID/stat`" +
    ", `gcc -o /tmp/x`, 3/4 of replies/s, </details>, /path/to/repo/modes" +
    ", $RIG/bench.sh, ${Deno.cwd()}/bench/wire.ts, $(pwd)/modes";
  assert.deepEqual(outside(page, fine), []);
});

// A heading's anchor as GitHub makes it: lower case, punctuation dropped,
// spaces as hyphens.
function anchors(page: string): Set<string> {
  const text = readFileSync(join(ROOT, page), "utf8");
  const headings = text.match(/^#+ .*$/gm) ?? [];
  return new Set(
    headings.map((heading) =>
      heading.replace(/^#+ /, "").toLowerCase().replace(/[^\w\- ]/g, "")
        .replace(/ /g, "-")
    ),
  );
}

test("docs: every link to a page leads to it, and to its heading", () => {
  for (const page of PAGES) {
    const text = readFileSync(join(ROOT, page), "utf8");
    for (const [, target] of text.matchAll(LINK)) {
      if (/^[a-z]+:/.test(target)) continue;
      const [file, anchor] = target.split("#");
      const path = file
        ? relative(ROOT, resolve(dirname(join(ROOT, page)), file))
        : page;
      assert.ok(existsSync(join(ROOT, path)), `${page}: ${target}`);
      if (anchor && path.endsWith(".md")) {
        assert.ok(anchors(path).has(anchor), `${page}: ${target}`);
      }
    }
  }
});
