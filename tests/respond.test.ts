// respond() is the one place a learner changes what a server does: a copy of
// each mode file whose respond() upper-cases the line must answer so, in
// both framings, with nothing else changed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import {
  IS_BUN,
  MODE_NAMES,
  MODES,
  ROOT,
  TestClient,
  withServer,
} from "./helpers.ts";

const ECHO = "  return `[${now()}] ${line}`;";

for (const mode of MODE_NAMES) {
  test(`${mode}: a copy whose respond() upper-cases answers in capitals`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "respond-"));
    const file = join(dir, MODES[mode].split("/").at(-1)!);
    const code = readFileSync(join(ROOT, MODES[mode]), "utf8");
    assert.ok(code.includes(ECHO), "respond() echoes with a stamp");
    writeFileSync(file, code.replace(ECHO, "  return line.toUpperCase();"));
    try {
      for (const framing of ["line", "raw"]) {
        await withServer(mode, ["--framing", framing], async (server) => {
          const client = await TestClient.connect(server.port);
          try {
            await client.write("hello, café\n");
            // Raw framing answers the read, its "\n" included.
            const expected = framing === "line"
              ? "HELLO, CAFÉ"
              : "HELLO, CAFÉ\n";
            const reply = framing === "line"
              ? await client.nextLine()
              : (await client.nextBytes(Buffer.byteLength(expected)))
                .toString();
            assert.equal(reply, expected);
          } finally {
            client.close();
          }
        }, { file });
      }
      // Nothing else to touch: the linter finds nothing left over (such as
      // now(), which this respond() no longer calls). Deno's linter only.
      if (!IS_BUN) {
        const lint = spawnSync(process.execPath, ["lint", file], {
          encoding: "utf8",
        });
        assert.equal(lint.status, 0, lint.stderr);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
