// Reads the trust material `clawker auth init` wrote (the CLI is the root of trust): the CA that
// client certificates must chain to, the control plane's server and client leaves, and the CLI's
// public signing JWK that the OAuth2 clients are registered with.
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";

/** File names inside the trust directory (the same names the CLI writes). */
export const TRUST_FILE_NAMES = {
  ca: "ca.crt",
  serverCert: "controlplane.crt",
  serverKey: "controlplane.key",
  clientCert: "controlplane-client.crt",
  clientKey: "controlplane-client.key",
  cliPublicJwk: "cli-signing.pub.jwk",
} as const;

/** The control plane's view of the trust material. */
export interface TrustMaterial {
  readonly dir: string;
  readonly ca: Buffer;
  readonly serverCert: Buffer;
  readonly serverKey: Buffer;
  readonly clientCert: Buffer;
  readonly clientKey: Buffer;
  /** The CLI's ES256 public key, registered for both OAuth2 clients. */
  readonly cliPublicJwk: Readonly<Record<string, unknown>>;
  /** Paths, for helpers that take files (the auth server, Hydra). */
  readonly paths: { readonly [K in keyof typeof TRUST_FILE_NAMES]: string };
}

/** The trust directory is missing files, has loose key permissions or holds malformed material. */
export class TrustDirError extends Error {
  readonly reason = "invalid_trust_material";
  constructor(
    readonly problems: readonly string[],
    options?: ErrorOptions,
  ) {
    super(`trust material unusable:\n  - ${problems.join("\n  - ")}`, options);
    this.name = "TrustDirError";
  }
}

const KEYS: ReadonlySet<string> = new Set(["serverKey", "clientKey"]);

/** Loads and checks the trust directory; every problem is listed in one TrustDirError. */
export function loadTrustDir(dir: string): TrustMaterial {
  const problems: string[] = [];
  const paths = Object.fromEntries(
    Object.entries(TRUST_FILE_NAMES).map(([k, f]) => [k, join(dir, f)]),
  ) as TrustMaterial["paths"];
  const files: Partial<Record<keyof typeof TRUST_FILE_NAMES, Buffer>> = {};
  for (const [role, path] of Object.entries(paths) as Array<[keyof typeof TRUST_FILE_NAMES, string]>) {
    try {
      if (KEYS.has(role) && (statSync(path).mode & 0o077) !== 0) {
        problems.push(`${path}: private key is readable by group or others (chmod 600)`);
        continue;
      }
      files[role] = readFileSync(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      problems.push(
        code === "ENOENT" ? `${path}: missing (run \`clawker auth init\`)` : `${path}: ${String(err)}`,
      );
    }
  }
  for (const role of ["ca", "serverCert", "clientCert"] as const) {
    const pem = files[role];
    if (pem === undefined) continue;
    try {
      new X509Certificate(pem);
    } catch {
      problems.push(`${paths[role]}: not a PEM certificate`);
    }
  }
  let cliPublicJwk: Record<string, unknown> = {};
  if (files.cliPublicJwk !== undefined) {
    try {
      const jwk = JSON.parse(files.cliPublicJwk.toString("utf8")) as unknown;
      if (typeof jwk !== "object" || jwk === null || (jwk as { kty?: unknown }).kty !== "EC") {
        problems.push(`${paths.cliPublicJwk}: not an EC public JWK`);
      } else if ("d" in jwk) {
        problems.push(`${paths.cliPublicJwk}: holds a private key; only the public JWK belongs here`);
      } else {
        cliPublicJwk = jwk as Record<string, unknown>;
      }
    } catch {
      problems.push(`${paths.cliPublicJwk}: not valid JSON`);
    }
  }
  if (problems.length > 0) throw new TrustDirError(problems);
  return {
    dir,
    ca: files.ca!,
    serverCert: files.serverCert!,
    serverKey: files.serverKey!,
    clientCert: files.clientCert!,
    clientKey: files.clientKey!,
    cliPublicJwk,
    paths,
  };
}
