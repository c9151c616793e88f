// Health probes: an HTTP GET that must answer 200 and a TLS 1.3 handshake (optionally proving an
// HTTP/2 server such as grpc-js answers behind it). Used by waitHealthy and by /healthz.
import type { TLSSocket } from "node:tls";
import { httpRequest, tlsClientOptions, type HttpResponse, type TlsClientOptions } from "../http-client.js";

export type { TlsClientOptions } from "../http-client.js";

/** A named health check: resolves when healthy, rejects (ideally with a ProbeError) otherwise. */
export type Probe = (signal: AbortSignal) => Promise<void>;

/** Why a probe failed. */
export type ProbeReason = "unexpected_status" | "handshake_failed" | "not_http2" | "aborted" | "not_ours";

/** A probe failure with a stable `reason`; `cause` holds the underlying network error, if any. */
export class ProbeError extends Error {
  override readonly name = "ProbeError";
  /** The stable machine-readable cause. */
  readonly reason: ProbeReason;

  constructor(reason: ProbeReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/**
 * One GET on a fresh connection (no pooled socket outlives the call); resolves with the status and
 * the (bounded) body. Network errors reject as node:http reports them; an abort with an AbortError.
 */
export function httpGet(
  url: string,
  options: { readonly tls?: TlsClientOptions | undefined; readonly signal: AbortSignal },
): Promise<HttpResponse> {
  return httpRequest(url, { tls: options.tls, signal: options.signal });
}

/** True when a health answer's body is a JSON object whose `instance` is `instance`. */
export function answersInstance(body: string, instance: string): boolean {
  try {
    const parsed: unknown = JSON.parse(body);
    return (
      typeof parsed === "object" &&
      parsed !== null &&
      (parsed as { instance?: unknown }).instance === instance
    );
  } catch {
    return false;
  }
}

/**
 * A probe that GETs `url` (https when `tls` is given) and expects 200; with `instance`, a 200 must
 * also carry that instance nonce (see WaitHealthyOptions), or the probe fails `not_ours`.
 */
export function httpProbe(
  url: string,
  tls?: TlsClientOptions,
  options: { readonly instance?: string } = {},
): Probe {
  return async (signal) => {
    const { status, body } = await httpGet(url, { tls, signal });
    if (status !== 200) throw new ProbeError("unexpected_status", `GET ${url} answered ${status}`);
    if (options.instance !== undefined && !answersInstance(body, options.instance)) {
      throw new ProbeError("not_ours", `GET ${url} answered 200 without our instance nonce`);
    }
  };
}

/** Options of tlsHandshakeProbe: TLS material plus whether an HTTP/2 server must answer. */
export interface TlsHandshakeProbeOptions extends TlsClientOptions {
  /**
   * Also require ALPN `h2` and the server's HTTP/2 SETTINGS frame. With TLS 1.3 the server checks
   * the client certificate only after the client's handshake completes, so this is what proves an
   * mTLS gRPC listener actually accepted us and is serving.
   */
  readonly expectHttp2?: boolean;
}

/** The HTTP/2 client connection preface followed by an empty SETTINGS frame (RFC 9113 §3.4). */
const H2_CLIENT_PREFACE = Buffer.concat([
  Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"),
  Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0]),
]);

/** A probe that completes a verified TLS 1.3 handshake with host:port (and, optionally, HTTP/2). */
export function tlsHandshakeProbe(host: string, port: number, tls: TlsHandshakeProbeOptions): Probe {
  const where = `${host}:${port}`;
  return (signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal.aborted) {
        reject(new ProbeError("aborted", `probe of ${where} aborted`, { cause: signal.reason }));
        return;
      }
      // eslint-disable-next-line prefer-const -- assigned after `finish`, which closes over it
      let socket: TLSSocket | undefined;
      const finish = (err?: Error): void => {
        signal.removeEventListener("abort", onAbort);
        socket?.destroy();
        if (err === undefined) resolve();
        else reject(err);
      };
      const onAbort = (): void =>
        finish(new ProbeError("aborted", `probe of ${where} aborted`, { cause: signal.reason }));
      signal.addEventListener("abort", onAbort, { once: true });
      // node:tls when a probe first runs (after ready): the entry loads this module before it forks
      // the auth server, and loading tls there would delay the fork (run.ts).
      socket = process.getBuiltinModule("node:tls").connect({
        host,
        port,
        ...tlsClientOptions(tls),
        ...(tls.expectHttp2 === true ? { ALPNProtocols: ["h2"] } : {}),
      });
      socket.once("error", (err: Error) =>
        finish(
          new ProbeError("handshake_failed", `TLS with ${where} failed: ${err.message}`, { cause: err }),
        ),
      );
      socket.once("close", () =>
        finish(new ProbeError("handshake_failed", `${where} closed the connection during the probe`)),
      );
      socket.once("secureConnect", () => {
        if (tls.expectHttp2 !== true) return finish();
        if (socket?.alpnProtocol !== "h2") {
          return finish(new ProbeError("not_http2", `${where} did not negotiate h2`));
        }
        let seen = Buffer.alloc(0);
        socket.on("data", (chunk: Buffer) => {
          seen = Buffer.concat([seen, chunk]);
          // A frame header is 9 bytes; the server's first frame must be SETTINGS (type 0x4).
          if (seen.length < 9) return;
          if (seen[3] === 0x4) finish();
          else finish(new ProbeError("not_http2", `${where} did not send HTTP/2 SETTINGS first`));
        });
        socket.write(H2_CLIENT_PREFACE);
      });
    });
}
