// Shared plumbing of the FAKE Ory executables (fake-hydra.ts, fake-kratos.ts, fake-oathkeeper.ts):
// read `--config <file>` like the real binaries, listen where the config says the way ory/x does
// (`host: unix:<path>` is a Unix socket: net.Listen, then chmod to `socket.mode`, default 0755;
// a bind over an existing file fails), serve HTTPS (TLS 1.3) with the configured files or plain
// HTTP, answer Ory's health endpoints, stop on SIGTERM/SIGINT (a clean close removes the socket,
// as Go's listener does). Used only where the real Ory binaries cannot run (they cannot be
// installed here, HOST-NOTES).
import { chmodSync, readFileSync } from "node:fs";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer } from "node:https";
import { parse } from "yaml";

/** A handler returns false when it did not answer (the caller then sends 404). */
export type FakeHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  body: Buffer,
) => boolean | Promise<boolean>;

/** Parses `<sub commands...> --config <file>` and returns the YAML config; exits 2 on bad usage. */
export function readConfigFromArgv(name: string, subcommand: readonly string[]): Record<string, unknown> {
  const argv = process.argv.slice(2);
  const at = argv.indexOf("--config");
  const file = at >= 0 ? argv[at + 1] : undefined;
  const sub = argv.slice(0, subcommand.length);
  if (file === undefined || sub.join(" ") !== subcommand.join(" ")) {
    console.error(`FAKE ${name}: usage: ${name} ${subcommand.join(" ")} --config <file>`);
    process.exit(2);
  }
  return parse(readFileSync(file, "utf8")) as Record<string, unknown>;
}

/** Reads a nested key (`a.b.c`) of a parsed config. */
export function at(config: unknown, path: string): unknown {
  let cur: unknown = config;
  for (const key of path.split(".")) {
    if (typeof cur !== "object" || cur === null) return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

/** One listener: where (`host` may be `unix:<path>`), which TLS files (none: plain HTTP), its routes. */
export interface FakeListener {
  readonly host: string;
  readonly port: number;
  /** configx `socket.mode` for a `unix:` host. */
  readonly socketMode?: number;
  readonly tls: { readonly certFile: string; readonly keyFile: string } | undefined;
  readonly handler?: FakeHandler;
}

/** A listener's address and socket mode as configx reads them under `prefix` (e.g. `serve.admin`). */
export function addressOf(
  config: unknown,
  prefix: string,
  fallbackPort: number,
): { host: string; port: number; socketMode: number } {
  return {
    host: (at(config, `${prefix}.host`) as string | undefined) ?? "127.0.0.1",
    port: (at(config, `${prefix}.port`) as number | undefined) ?? fallbackPort,
    socketMode: (at(config, `${prefix}.socket.mode`) as number | undefined) ?? 0o755,
  };
}

/** True for a configx `unix:<path>` host. */
export function isUnixHost(host: string): boolean {
  return host.startsWith("unix:");
}

/** Starts the listeners (health endpoints built in) and wires SIGTERM/SIGINT to a clean exit. */
export async function serveFake(name: string, listeners: readonly FakeListener[]): Promise<Server[]> {
  const servers: Server[] = [];
  for (const l of listeners) {
    const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        void route(l, req, res, Buffer.concat(chunks)).catch((err: unknown) => {
          console.error(`FAKE ${name}: handler error`, err);
          if (!res.headersSent) sendJson(res, 500, { error: "server_error" });
        });
      });
    };
    const server =
      l.tls === undefined
        ? createHttpServer(onRequest)
        : createServer(
            { cert: readFileSync(l.tls.certFile), key: readFileSync(l.tls.keyFile), minVersion: "TLSv1.3" },
            onRequest,
          );
    const socket = isUnixHost(l.host) ? l.host.slice("unix:".length) : undefined;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      if (socket === undefined) server.listen(l.port, l.host, () => resolve());
      else server.listen(socket, () => resolve());
    });
    if (socket !== undefined) chmodSync(socket, l.socketMode ?? 0o755);
    servers.push(server);
  }
  const where = (l: FakeListener): string =>
    `${isUnixHost(l.host) ? l.host : `${l.host}:${l.port}`} (${l.tls === undefined ? "http" : "https"})`;
  console.error(`FAKE ${name}: serving on ${listeners.map(where).join(", ")}`);
  const stop = (): void => {
    for (const s of servers) {
      s.close();
      s.closeAllConnections();
    }
    process.exit(0);
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  return servers;
}

async function route(
  l: FakeListener,
  req: IncomingMessage,
  res: ServerResponse,
  body: Buffer,
): Promise<void> {
  const path = new URL(req.url ?? "/", "https://fake").pathname;
  if (req.method === "GET" && (path === "/health/alive" || path === "/health/ready")) {
    sendJson(res, 200, { status: "ok" });
    return;
  }
  if (l.handler !== undefined && (await l.handler(req, res, body))) return;
  sendJson(res, 404, { error: "Not Found", error_description: "The requested resource could not be found" });
}

/** Sends a JSON answer. */
export function sendJson(res: ServerResponse, statusCode: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(statusCode, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

/** The TLS files of a `{cert: {path}, key: {path}}` block; undefined when the block is absent. */
export function tlsOf(config: unknown, path: string): { certFile: string; keyFile: string } | undefined {
  if (at(config, path) === undefined) return undefined;
  const certFile = at(config, `${path}.cert.path`);
  const keyFile = at(config, `${path}.key.path`);
  if (typeof certFile !== "string" || typeof keyFile !== "string") {
    throw new Error(`FAKE: ${path}.cert.path / key.path missing in config`);
  }
  return { certFile, keyFile };
}
