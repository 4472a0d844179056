/**
 * The runtimes that run the servers: Deno always; with --peers also Bun and
 * Node if they are on PATH, and C, the bare loop built here, if a C
 * compiler is. Nothing requires any of them: a runtime that is missing has
 * no rows, and the report says so in one line.
 */
export type Runtime = "deno" | "bun" | "node" | "c";

const NAMES: Record<Runtime, string> = {
  deno: "Deno",
  bun: "Bun",
  node: "Node",
  c: "C",
};

export function runtimeName(runtime: Runtime) {
  return NAMES[runtime];
}

// The program that runs each runtime's servers (Deno: this one); for C,
// the bare loop itself. Set by findRuntimes().
export const programs: Record<Exclude<Runtime, "deno">, string> = {
  bun: "bun",
  node: "node",
  c: "",
};

// The runtimes found, with their versions, and a line for each one missing.
export async function findRuntimes() {
  const found = new Map<Runtime, string>([["deno", Deno.version.deno]]);
  const missing: string[] = [];
  for (const runtime of ["bun", "node"] as const) {
    const path = onPath(runtime);
    const version = path && await versionOf(path);
    if (!path || !version) {
      missing.push(
        `${NAMES[runtime]} is not on PATH, so it has no rows here ` +
          `(npm i -g ${runtime === "bun" ? "bun@1" : "node"} installs it).`,
      );
      continue;
    }
    found.set(runtime, version.replace(/^v/, ""));
    programs[runtime] = path;
  }
  const cc = onPath("cc");
  const built = cc && await buildC(cc);
  if (built) {
    found.set("c", (await versionOf(cc)).split("\n")[0]);
    programs.c = built;
  } else {
    missing.push(
      cc
        ? "The bare loop in C did not build, so it has no rows here."
        : "No C compiler (cc) is on PATH, so the bare loop in C has no " +
          "rows here.",
    );
  }
  return { found, missing };
}

async function versionOf(program: string) {
  const { success, stdout } = await new Deno.Command(program, {
    args: ["--version"],
  }).output();
  return success ? new TextDecoder().decode(stdout).trim() : "";
}

// Where a program is on PATH, or null. A "node" that is Deno in disguise
// does not count: Deno puts one first on its children's PATH when a script
// starts them through node:child_process (as the tests do).
function onPath(name: string): string | null {
  const deno = Deno.realPathSync(Deno.execPath());
  for (const folder of (Deno.env.get("PATH") ?? "").split(":")) {
    const path = `${folder || "."}/${name}`;
    try {
      const { isFile, mode } = Deno.statSync(path);
      const runs = isFile && mode !== null && (mode & 0o111) !== 0;
      if (runs && Deno.realPathSync(path) !== deno) return path;
    } catch { /* not there */ }
  }
  return null;
}

// bench/peers/c.c, built into a folder of its own that removeBuilt() takes
// away at the end.
let folder = "";
async function buildC(cc: string): Promise<string | null> {
  folder = Deno.makeTempDirSync({ prefix: "bench-" });
  const binary = `${folder}/bare-loop`;
  const source = new URL("peers/c.c", import.meta.url).pathname;
  const { success } = await new Deno.Command(cc, {
    args: ["-O2", "-o", binary, decodeURIComponent(source)],
    stderr: "null",
  }).output();
  return success ? binary : null;
}

export function removeBuilt() {
  if (folder) Deno.removeSync(folder, { recursive: true });
  folder = "";
}
