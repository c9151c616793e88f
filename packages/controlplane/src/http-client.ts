// The daemon's HTTP(S) client for its helpers' endpoints (health, introspection, client
// registration): node:http/https with TLS 1.3 only and verification on, plain HTTP through a Unix
// socket for `http+unix:` URLs (the auth helpers' admin APIs), a bounded body, and one AbortSignal
// covering connect, headers and body. node's own client rather than undici keeps ~15 MiB of
// resident memory out of a daemon that makes a handful of these requests.
import type http from "node:http";
import type https from "node:https";

// node:http by process.getBuiltinModule, not by import: importing it as an ES module reads its lazy
// WebSocket getters and so loads Node's bundled undici (~90 ms of CPU at start, and its memory).
const { Agent: HttpAgent, request: plainRequest } = process.getBuiltinModule("node:http");

/**
 * node:https (and node:tls under it) at the first https request, not at import: the entry loads
 * this module before it forks the auth server (the supervisor's health wait), and the auth
 * helpers' admin APIs are Unix sockets, so the fork need not wait for TLS code to load (run.ts).
 */
function httpsModule(): typeof https {
  return process.getBuiltinModule("node:https");
}

/** Client TLS material: the CA to trust (the system's roots when absent) and an optional client leaf. */
export interface TlsClientOptions {
  readonly ca?: string | Buffer | undefined;
  readonly cert?: string | Buffer | undefined;
  readonly key?: string | Buffer | undefined;
  /** Name the server certificate must carry (and SNI); defaults to the host. */
  readonly servername?: string | undefined;
}

/**
 * Scheme of a URL that names a Unix socket: `http+unix://<percent-encoded socket path>/<path>`
 * (the convention of Docker's and requests' clients). The request is plain HTTP on that socket; the
 * file system's permissions are its boundary, so no TLS.
 */
export const UNIX_SOCKET_PROTOCOL = "http+unix:";

/** The base URL of an HTTP API served on the Unix socket `socketPath`. */
export function unixSocketUrl(socketPath: string): string {
  return `http+unix://${encodeURIComponent(socketPath)}`;
}

/** The socket path of an `http+unix:` URL, or undefined for any other URL. */
export function unixSocketPathOf(url: URL | string): string | undefined {
  const u = typeof url === "string" ? new URL(url) : url;
  if (u.protocol !== UNIX_SOCKET_PROTOCOL) return undefined;
  const path = decodeURIComponent(u.hostname);
  if (!path.startsWith("/")) throw new TypeError(`${u.href}: the socket path must be absolute`);
  return path;
}

/** One request. */
export interface HttpRequestOptions {
  readonly method?: "GET" | "POST" | "PUT" | "DELETE";
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string;
  /** Required for https URLs unless `agent` carries it; ignored for `http+unix:` URLs. */
  readonly tls?: TlsClientOptions | undefined;
  /** A pool from `agentFor`; without one the request uses its own connection, closed after. */
  readonly agent?: http.Agent;
  readonly signal: AbortSignal;
  /** Largest body read; more is a ResponseTooLargeError (default 64 KiB). */
  readonly maxBodyBytes?: number;
}

/** A whole response. */
export interface HttpResponse {
  readonly status: number;
  readonly body: string;
}

/** The body was larger than the caller's bound; nothing of it is returned. */
export class ResponseTooLargeError extends Error {
  override readonly name = "ResponseTooLargeError";
}

const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

/** TLS options for node:tls/https: TLS 1.3 only, certificate verification on. */
export function tlsClientOptions(tls: TlsClientOptions): https.AgentOptions {
  return {
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert }),
    ...(tls.key === undefined ? {} : { key: tls.key }),
    ...(tls.servername === undefined ? {} : { servername: tls.servername }),
    minVersion: "TLSv1.3",
    rejectUnauthorized: true,
  };
}

/** A keep-alive pool for repeated requests to one endpoint; `destroy()` it when done. */
export function httpsAgent(tls: TlsClientOptions): https.Agent {
  return new (httpsModule().Agent)({ ...tlsClientOptions(tls), keepAlive: true, maxSockets: 16 });
}

/**
 * A keep-alive pool suited to `url`: TLS for https, plain for an `http+unix:` socket (node pools
 * per socket path); undefined for plain http (each request its own connection).
 */
export function agentFor(url: URL | string, tls: TlsClientOptions): http.Agent | undefined {
  const protocol = (typeof url === "string" ? new URL(url) : url).protocol;
  if (protocol === "https:") return httpsAgent(tls);
  if (protocol === UNIX_SOCKET_PROTOCOL) return new HttpAgent({ keepAlive: true, maxSockets: 16 });
  return undefined;
}

/**
 * Sends one request and reads the whole body (bounded). Rejects with the socket's error, the
 * signal's abort error, or ResponseTooLargeError; an HTTP error status is an answer, not a failure.
 */
export function httpRequest(url: URL | string, options: HttpRequestOptions): Promise<HttpResponse> {
  const target = typeof url === "string" ? new URL(url) : url;
  const limit = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const headers: Record<string, string> = { ...options.headers };
  if (options.body !== undefined) headers["content-length"] = String(Buffer.byteLength(options.body));
  const common = { method: options.method ?? "GET", headers, signal: options.signal };
  const agent = options.agent ?? false;
  return new Promise<HttpResponse>((resolve, reject) => {
    let req: http.ClientRequest;
    switch (target.protocol) {
      case "https:":
        req = httpsModule().request(target, {
          ...common,
          ...(options.agent === undefined
            ? { agent: false, ...(options.tls === undefined ? {} : tlsClientOptions(options.tls)) }
            : { agent: options.agent }),
        });
        break;
      case UNIX_SOCKET_PROTOCOL:
        req = plainRequest({
          ...common,
          headers: { host: "localhost", ...headers },
          socketPath: unixSocketPathOf(target)!,
          path: `${target.pathname === "" ? "/" : target.pathname}${target.search}`,
          agent,
        });
        break;
      case "http:":
        req = plainRequest(target, { ...common, agent });
        break;
      default:
        throw new TypeError(`unsupported URL scheme ${target.protocol} in ${target.href}`);
    }
    req.on("error", reject);
    req.once("response", (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > limit) {
          req.destroy(new ResponseTooLargeError(`response body over ${limit} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on("error", reject);
      res.once("end", () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
      );
    });
    req.end(options.body);
  });
}
