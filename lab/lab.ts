/**
 * The lab: a page where you add real clients with a click and watch each
 * concurrency model queue them, live. It starts the four mode files,
 * unchanged, as child servers on free ports of this machine, connects real
 * TCP clients to them, and draws what each client sees.
 *
 * Run:   deno task lab                 (or: npx -y deno@2 task lab)
 *        then open the address it prints.
 *        deno task lab --runtime bun   runs the servers on Bun instead.
 * Stop:  Ctrl+C stops the lab, its servers and its clients.
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { handler, ownOrigins } from "./http.ts";
import { Hub } from "./hub.ts";
import { integer, type Runtime } from "./settings.ts";

const USAGE = `usage: deno task lab [flags]
  --port N        port of the page; 0 picks a free one (8000)
  --host H        address of the page: anyone who can reach it can start
                  clients here; one address, not 0.0.0.0 (127.0.0.1)
  --runtime R     run the servers with deno or bun (deno)
  --help          this text`;

function parseCommandLine() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string", default: "8000" },
      host: { type: "string", default: "127.0.0.1" },
      runtime: { type: "string", default: "deno" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const port = integer("--port", Number(values.port), 0, 65535);
  if (!["deno", "bun"].includes(values.runtime)) {
    throw new Error("--runtime must be deno or bun");
  }
  if (["0.0.0.0", "::", ""].includes(values.host)) {
    throw new Error(
      "--host must be one address, the one the page is opened at",
    );
  }
  return { port, host: values.host, runtime: values.runtime as Runtime };
}

async function main() {
  const { host, port, runtime } = commandLineOrExit();
  if (runtime === "bun") await checkBun();
  let hub: Hub | undefined;
  let route = (_: Request) =>
    Promise.resolve(new Response(null, { status: 503 }));
  const server = serveOrExit(host, port, (port) => {
    hub = new Hub(runtime);
    route = handler(hub, ownOrigins(host, port));
    const name = host.includes(":") ? `[${host}]` : host;
    console.log(`lab: open http://${name}:${port}/ (Ctrl+C stops it)`);
  }, (request) => route(request));
  stopOnSignals(server, () => hub);
}

function commandLineOrExit() {
  try {
    return parseCommandLine();
  } catch (err) {
    console.error(`error: ${(err as Error).message}\n${USAGE.split("\n")[0]}`);
    Deno.exit(2);
  }
}

function serveOrExit(
  host: string,
  port: number,
  listening: (port: number) => void,
  route: (request: Request) => Promise<Response>,
): Deno.HttpServer {
  try {
    return Deno.serve({
      hostname: host,
      port,
      onListen: (addr) => listening(addr.port),
    }, route);
  } catch (err) {
    const why = err instanceof Deno.errors.AddrInUse
      ? "is already in use; try --port 0"
      : `cannot be listened on: ${(err as Error).message}`;
    console.error(`error: ${host}:${port} ${why}`);
    Deno.exit(1);
  }
}

// Ctrl+C stops every process the lab started. A second one ends the lab
// at once, killing what is left. One Ctrl+C can come twice (from the
// terminal, and forwarded by `deno task`): the same signal within 100 ms is
// one press.
function stopOnSignals(server: Deno.HttpServer, hub: () => Hub | undefined) {
  let first = { signal: "", at: 0 };
  const stop = async (signal: Deno.Signal) => {
    if (first.signal) {
      if (signal === first.signal && performance.now() - first.at < 100) return;
      for (const pid of hub()?.pids ?? []) kill(pid);
      Deno.exit(130);
    }
    first = { signal, at: performance.now() };
    console.log("lab: stopping the servers");
    await hub()?.stop();
    await server.shutdown();
    console.log("lab: stopped");
    Deno.exit(0);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => stop(signal));
  }
}

function kill(pid: number) {
  try {
    process.kill(pid, "SIGKILL");
  } catch { /* gone already */ }
}

// --runtime bun runs the servers as `bun modes/...`: bun must be there.
async function checkBun() {
  try {
    await new Deno.Command("bun", { args: ["--version"], stdout: "null" })
      .output();
  } catch {
    console.error("error: --runtime bun needs bun (npm i -g bun@1)");
    Deno.exit(1);
  }
}

if (import.meta.main) await main();
