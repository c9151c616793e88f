// Dialing the control plane's admin listener: mutual TLS 1.3 against the trust CA with the CLI's
// client leaf, the server's certificate pinned to CN clawker-controlplane, and a bearer token per
// call for every method that needs one.
import { isIP } from "node:net";
import tls, { checkServerIdentity, type PeerCertificate } from "node:tls";
import { credentials, Metadata, type ChannelCredentials, type ChannelOptions } from "@grpc/grpc-js";
import { admin, PUBLIC_SCOPE, requiredScope } from "@clawker/proto";
import { CONTROLPLANE_CN, CONTROLPLANE_DEFAULT_NAMES } from "./trust/bootstrap.js";
import type { TokenSource } from "./token-source.js";

/** The control plane's default admin listener. */
export const DEFAULT_ADMIN_TARGET = "127.0.0.1:7443";

/**
 * The HTTP/2 receive window of an admin channel (grpc-js defaults to 64 KiB). ExecAgent streams
 * command output in messages of up to 64 KiB: at a 64 KiB window the control plane waits for a
 * WINDOW_UPDATE every message or two, which doubled its CPU per MiB relayed (measured with 32 KiB).
 * Bounded: a reader that stops holds at most this much in its own process, and the control plane
 * stops sending.
 */
export const ADMIN_CHANNEL_WINDOW_BYTES = 4 << 20;

/** The PEM material of an mTLS client: the CA to trust and the client's leaf. */
export interface ClientTls {
  /** PEM CA certificate(s) the server must chain to. */
  readonly ca: string;
  /** PEM client certificate (the CLI's leaf). */
  readonly cert: string;
  /** PEM private key of `cert`. */
  readonly key: string;
}

/** Where and how to dial. */
export interface DialOptions {
  /** `host:port`; default 127.0.0.1:7443. */
  readonly target?: string;
  readonly tls: ClientTls;
  /**
   * The name the server's certificate is checked against (and sent as SNI/authority) when the
   * target's host is not among its SANs, e.g. `localhost` for a CP reached by a container IP.
   */
  readonly serverName?: string;
  /** Attaches `authorization: Bearer <token>` to every call except public ones. */
  readonly tokens?: TokenSource;
  readonly channelOptions?: ChannelOptions;
}

/**
 * Channel credentials: mTLS, TLS 1.3 only, and the server's leaf must be the control plane's and
 * valid for `expectedHost` (a DNS name or an IP literal among its SANs).
 */
export function adminChannelCredentials(clientTls: ClientTls, expectedHost: string): ChannelCredentials {
  // grpc-js has no minimum-version option; it reads the process-wide default (HOST-NOTES).
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
  return credentials.createSsl(
    Buffer.from(clientTls.ca),
    Buffer.from(clientTls.key),
    Buffer.from(clientTls.cert),
    { checkServerIdentity: (_host, cert) => checkControlPlaneIdentity(expectedHost, cert) },
  );
}

/**
 * Hostname check plus identity pin: a leaf from the same CA issued to someone else (an agent's
 * clawkerd, the CLI) must not pass for the control plane.
 */
export function checkControlPlaneIdentity(hostname: string, cert: PeerCertificate): Error | undefined {
  const hostError = checkServerIdentity(hostname, cert);
  if (hostError !== undefined) return nameMismatch(hostname, cert, hostError);
  const cn = cert.subject?.CN;
  if (cn !== CONTROLPLANE_CN) {
    return new Error(`server certificate CN is ${JSON.stringify(cn)}, expected ${CONTROLPLANE_CN}`);
  }
  return undefined;
}

/**
 * The refusal says how to get the name into the certificate: the SANs are fixed when `auth init`
 * mints the set, and trust sets minted before `clawker-controlplane` became a default name lack it.
 */
function nameMismatch(hostname: string, cert: PeerCertificate, cause: Error): Error {
  const remint = CONTROLPLANE_DEFAULT_NAMES.includes(hostname)
    ? "clawker auth init --force"
    : `clawker auth init --force --san ${hostname}`;
  return new Error(
    `server certificate is not valid for ${hostname} (it names ${cert.subjectaltname ?? "nothing"}); ` +
      `re-mint the trust set with ${remint}, then restart the control plane and recreate its agents`,
    { cause },
  );
}

/**
 * Call credentials that ask `tokens` for a token on every call and attach it as a bearer token;
 * methods whose scope is `public` (GetSystemTime) go without.
 */
export function bearerCallCredentials(tokens: TokenSource) {
  return credentials.createFromMetadataGenerator((options, callback) => {
    if (requiredScope(methodPath(options.service_url, options.method_name)) === PUBLIC_SCOPE) {
      callback(null, new Metadata());
      return;
    }
    tokens.token().then(
      (token) => {
        const md = new Metadata();
        md.set("authorization", `Bearer ${token}`);
        callback(null, md);
      },
      (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
    );
  });
}

/** Opens a generated AdminService client on a new channel (lazy: connects on the first call). */
export function dial(options: DialOptions): admin.AdminServiceClient {
  const target = options.target ?? DEFAULT_ADMIN_TARGET;
  const expectedHost = options.serverName ?? hostOf(target);
  let creds = adminChannelCredentials(options.tls, expectedHost);
  if (options.tokens !== undefined) {
    creds = credentials.combineChannelCredentials(creds, bearerCallCredentials(options.tokens));
  }
  // SNI must be a DNS name (RFC 6066 §3): an IP target would make grpc-js send the IP, which Node
  // deprecates. The certificate is still checked against `expectedHost` above.
  const sni = isIP(expectedHost) === 0 ? expectedHost : CONTROLPLANE_CN;
  const channelOptions: ChannelOptions = {
    "grpc-node.flow_control_window": ADMIN_CHANNEL_WINDOW_BYTES,
    ...options.channelOptions,
    "grpc.ssl_target_name_override": sni,
    ...(options.serverName === undefined ? {} : { "grpc.default_authority": options.serverName }),
  };
  return new admin.AdminServiceClient(target, creds, channelOptions);
}

/**
 * Opens a generated AdminService client on the control plane's admin Unix socket (lazy). No TLS:
 * the socket's file permissions are the transport boundary; a token still rides every call that
 * needs one (AdminClient attaches it).
 */
export function dialSocket(path: string, channelOptions: ChannelOptions = {}): admin.AdminServiceClient {
  if (!path.startsWith("/")) throw new Error(`the admin socket path must be absolute, got ${path}`);
  // The authority is not a host here; name it what the TCP listener's certificate names.
  return new admin.AdminServiceClient(`unix://${path}`, credentials.createInsecure(), {
    "grpc-node.flow_control_window": ADMIN_CHANNEL_WINDOW_BYTES,
    ...channelOptions,
    "grpc.default_authority": CONTROLPLANE_CN,
  });
}

/** The host part of `host:port`, `[v6]:port` or a bare host. */
function hostOf(target: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(target);
  if (bracketed !== null) return bracketed[1]!;
  const colons = target.split(":").length - 1;
  if (colons === 1) return target.slice(0, target.lastIndexOf(":"));
  return target;
}

/**
 * The full method path. grpc-js passes the full path as `method_name`; a bare method name is
 * joined with the service from `service_url` (`https://host/package.Service`).
 */
function methodPath(serviceUrl: string, methodName: string): string {
  if (methodName.startsWith("/")) return methodName;
  const slash = serviceUrl.lastIndexOf("/");
  return `/${serviceUrl.slice(slash + 1)}/${methodName}`;
}
