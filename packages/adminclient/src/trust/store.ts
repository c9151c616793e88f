// Stores a trust set in a directory and loads it back, validated. Directory 0700, private keys
// 0600 from the moment they exist (open with the mode, never chmod after), certificates 0644;
// every file written to a temp name and renamed into place.
import { randomBytes } from "node:crypto";
import { constants, type Stats } from "node:fs";
import { mkdir, open, readFile, rename, stat, unlink, chmod } from "node:fs/promises";
import { join } from "node:path";
import type { JWK } from "jose";
import type { TrustSet } from "./bootstrap.js";
import { CLI_CN, CONTROLPLANE_CN } from "./bootstrap.js";
import type { CertifiedKey } from "./certificates.js";
import { TrustError } from "./errors.js";
import { checkSigningKey } from "./signing-key.js";
import { verifyCa, verifyLeaf } from "./verify.js";

/** The file names of a stored trust set (documented in the package README). */
export const TRUST_FILES = {
  caCert: "ca.crt",
  caKey: "ca.key",
  controlPlaneServerCert: "controlplane.crt",
  controlPlaneServerKey: "controlplane.key",
  controlPlaneClientCert: "controlplane-client.crt",
  controlPlaneClientKey: "controlplane-client.key",
  cliCert: "cli.crt",
  cliKey: "cli.key",
  signingKey: "cli-signing.jwk",
  signingPublicKey: "cli-signing.pub.jwk",
} as const;

/** One entry of TRUST_FILES by role. */
export type TrustFile = keyof typeof TRUST_FILES;
/** Absolute paths of a stored set, by role. */
export type TrustPaths = { readonly [K in TrustFile]: string };

const SECRET: ReadonlySet<TrustFile> = new Set([
  "caKey",
  "controlPlaneServerKey",
  "controlPlaneClientKey",
  "cliKey",
  "signingKey",
]);

/** The paths of a trust set stored in `dir`. */
export function trustPaths(dir: string): TrustPaths {
  return Object.fromEntries(Object.entries(TRUST_FILES).map(([k, f]) => [k, join(dir, f)])) as TrustPaths;
}

/** Options for writeTrustSet. */
export interface WriteOptions {
  /** Replace an existing set instead of failing with reason `exists`. */
  readonly force?: boolean;
}

/**
 * Writes `set` into `dir` (created 0700 if absent, tightened to 0700 if present). Fails with
 * TrustError("exists") when any file of a set is already there, unless `force`.
 */
export async function writeTrustSet(
  dir: string,
  set: TrustSet,
  options: WriteOptions = {},
): Promise<TrustPaths> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const paths = trustPaths(dir);
  if (options.force !== true) {
    for (const path of Object.values(paths)) {
      if (await exists(path)) {
        throw new TrustError("exists", `a trust set is already stored in ${dir} (use force to replace it)`, {
          file: path,
        });
      }
    }
  }
  const contents: Record<TrustFile, string> = {
    caCert: set.ca.certPem,
    caKey: set.ca.keyPem,
    controlPlaneServerCert: set.controlPlaneServer.certPem,
    controlPlaneServerKey: set.controlPlaneServer.keyPem,
    controlPlaneClientCert: set.controlPlaneClient.certPem,
    controlPlaneClientKey: set.controlPlaneClient.keyPem,
    cliCert: set.cli.certPem,
    cliKey: set.cli.keyPem,
    signingKey: JSON.stringify(set.signingKey.privateJwk, null, 2) + "\n",
    signingPublicKey: JSON.stringify(set.signingKey.publicJwk, null, 2) + "\n",
  };
  // Write every temp file first, then rename them all: a crash leaves at worst stray temp files,
  // never a half-written file under a real name.
  const staged: { tmp: string; path: string }[] = [];
  try {
    for (const [role, text] of Object.entries(contents) as [TrustFile, string][]) {
      const path = paths[role];
      const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
      staged.push({ tmp, path });
      await writeNew(tmp, text, SECRET.has(role) ? 0o600 : 0o644);
    }
    for (const { tmp, path } of staged) await rename(tmp, path);
  } catch (err) {
    await Promise.all(staged.map(({ tmp }) => unlink(tmp).catch(() => undefined)));
    throw err;
  }
  await syncDir(dir);
  return paths;
}

/** Options for loadTrustSet. */
export interface LoadOptions {
  /** The instant to check validity at; default now. */
  readonly now?: Date;
}

/**
 * Reads a trust set from `dir` and validates it: files present, keys private to the owner, every
 * key matches its certificate, leaves chain to the CA with the right CN and usages, nothing
 * expired or not yet valid, the signing key's halves and `kid` agree. Throws TrustError.
 */
export async function loadTrustSet(dir: string, options: LoadOptions = {}): Promise<TrustSet> {
  const now = options.now ?? new Date();
  const paths = trustPaths(dir);
  const dirStat = await statOrMissing(dir);
  if (!dirStat.isDirectory()) throw new TrustError("malformed", `${dir} is not a directory`, { file: dir });
  if ((dirStat.mode & 0o077) !== 0) {
    throw new TrustError("insecure_permissions", `${dir} is accessible to others (want 0700)`, { file: dir });
  }
  const text = {} as Record<TrustFile, string>;
  for (const role of Object.keys(paths) as TrustFile[]) {
    const path = paths[role];
    const st = await statOrMissing(path);
    if (SECRET.has(role) && (st.mode & 0o077) !== 0) {
      throw new TrustError("insecure_permissions", `${path} is readable by others (want 0600)`, {
        file: path,
      });
    }
    text[role] = await readFile(path, "utf8");
  }
  const pair = (cert: TrustFile, key: TrustFile): CertifiedKey => ({
    certPem: text[cert],
    keyPem: text[key],
  });
  const ca = pair("caCert", "caKey");
  const controlPlaneServer = pair("controlPlaneServerCert", "controlPlaneServerKey");
  const controlPlaneClient = pair("controlPlaneClientCert", "controlPlaneClientKey");
  const cli = pair("cliCert", "cliKey");

  const caCert = verifyCa(ca, now, { cert: paths.caCert, key: paths.caKey });
  verifyLeaf(caCert, controlPlaneServer, { commonName: CONTROLPLANE_CN, usage: "server" }, now, {
    cert: paths.controlPlaneServerCert,
    key: paths.controlPlaneServerKey,
  });
  verifyLeaf(caCert, controlPlaneClient, { commonName: CONTROLPLANE_CN, usage: "client" }, now, {
    cert: paths.controlPlaneClientCert,
    key: paths.controlPlaneClientKey,
  });
  verifyLeaf(caCert, cli, { commonName: CLI_CN, usage: "client" }, now, {
    cert: paths.cliCert,
    key: paths.cliKey,
  });

  const privateJwk = parseJwk(text.signingKey, paths.signingKey);
  const publicJwk = parseJwk(text.signingPublicKey, paths.signingPublicKey);
  const signingKey = { kid: publicJwk.kid ?? "", privateJwk, publicJwk };
  await checkSigningKey(signingKey, { priv: paths.signingKey, pub: paths.signingPublicKey });
  return { ca, controlPlaneServer, controlPlaneClient, cli, signingKey };
}

async function writeNew(path: string, text: string, mode: number): Promise<void> {
  // O_EXCL: never write through a file (or symlink) someone else put there.
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    // The umask may have narrowed a certificate's mode; widen it back to exactly 0644.
    if (mode === 0o644) await fh.chmod(mode);
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

async function statOrMissing(path: string): Promise<Stats> {
  try {
    return await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new TrustError("missing", `${path} does not exist`, { file: path, cause: err });
    }
    throw err;
  }
}

function parseJwk(text: string, file: string): JWK {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== "object" || value === null || Array.isArray(value))
      throw new Error("not a JSON object");
    return value;
  } catch (err) {
    throw new TrustError("malformed", "not a JWK (JSON object)", { file, cause: err });
  }
}
