// The README's experiments say `deno task ...`; the line it gives for a
// machine with only Node and npm must make those commands work as written.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { ROOT } from "./helpers.ts";

test("README: the alias line makes `deno task client --help` run through npx", () => {
  const readme = readFileSync(`${ROOT}README.md`, "utf8");
  const alias = readme.split("\n").find((line) =>
    line.startsWith("alias deno=")
  );
  assert.equal(alias, "alias deno='npx -y deno@2'");
  // Aliases work in a script once enabled, from the line after their own.
  const script =
    `shopt -s expand_aliases\n${alias}\ntype deno\ndeno task client --help`;
  const { status, stdout, stderr } = spawnSync("bash", ["-c", script], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(status, 0, stderr);
  assert.match(stdout, /deno is aliased to `npx -y deno@2'/);
  assert.match(stdout, /^usage: .*client\.ts/m);
});
