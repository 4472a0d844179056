// What the lab serves: the page's few files, by name, and the WebSocket
// that drives the lab. The socket starts processes and opens connections,
// so it takes only the lab's own page: a browser names the page that opens a
// WebSocket in its Origin header, and a page from any other site is refused.
import type { Hub } from "./hub.ts";

const PAGE: Record<string, [file: string, type: string]> = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/lab.css": ["lab.css", "text/css; charset=utf-8"],
  "/main.js": ["main.js", "text/javascript; charset=utf-8"],
  "/panel.js": ["panel.js", "text/javascript; charset=utf-8"],
  "/lanes.js": ["lanes.js", "text/javascript; charset=utf-8"],
  "/picture.js": ["picture.js", "text/javascript; charset=utf-8"],
};

// The page runs only its own files, and talks only to the lab.
const POLICY = "default-src 'self'; img-src 'self' blob: data:";

export function handler(hub: Hub, origins: string[]) {
  return async (request: Request): Promise<Response> => {
    const { pathname } = new URL(request.url);
    if (pathname === "/socket") return socket(request, hub, origins);
    const page = PAGE[pathname];
    if (!page || request.method !== "GET") {
      return new Response("not found\n", { status: 404 });
    }
    const [file, type] = page;
    const body = await Deno.readFile(new URL(`page/${file}`, import.meta.url));
    return new Response(body, {
      headers: {
        "content-type": type,
        "content-security-policy": POLICY,
        "cache-control": "no-store",
      },
    });
  };
}

function socket(request: Request, hub: Hub, origins: string[]) {
  if (!origins.includes(request.headers.get("origin") ?? "")) {
    return new Response("the lab takes WebSockets from its own page only\n", {
      status: 403,
    });
  }
  if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return new Response("expected a WebSocket\n", { status: 426 });
  }
  const { socket, response } = Deno.upgradeWebSocket(request);
  hub.join(socket);
  return response;
}

// The origins of the lab's own page: the address it was opened at.
export function ownOrigins(host: string, port: number): string[] {
  const name = host.includes(":") ? `[${host}]` : host;
  const origins = [`http://${name}:${port}`];
  if (host === "127.0.0.1") origins.push(`http://localhost:${port}`);
  return origins;
}
