// Fresh trust material per test run, minted with the CLI's own library into a temp dir, so tests
// exercise the same files `clawker auth init` writes.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  issueAgentLeaf,
  mintTrustSet,
  writeTrustSet,
  type CertifiedKey,
  type TrustPaths,
  type TrustSet,
  type TrustSetOptions,
} from "@clawker/adminclient";
import type { AfterHook } from "./docker.js";

/** A trust set stored in its own temp dir (`<dir>/trust`, 0700). */
export interface TestTrust {
  /** The temp dir; close() removes it. */
  readonly dir: string;
  /** Where the set is stored: pass to loadTrustSet or to a CP/CLI config. */
  readonly trustDir: string;
  readonly set: TrustSet;
  readonly paths: TrustPaths;
  /** Issues an agent leaf (24 h, CN clawker-clawkerd) from this set's CA. */
  issueAgent(agentName: string, containerId: string): Promise<CertifiedKey>;
  close(): Promise<void>;
}

/** Mints a trust set into a fresh temp dir. The caller closes it (or use useTestTrust). */
export async function mintTestTrust(options: TrustSetOptions = {}): Promise<TestTrust> {
  const dir = await mkdtemp(join(tmpdir(), "clawker-trust-"));
  try {
    const set = await mintTrustSet(options);
    const trustDir = join(dir, "trust");
    const paths = await writeTrustSet(trustDir, set);
    return {
      dir,
      trustDir,
      set,
      paths,
      issueAgent: (agentName, containerId) => issueAgentLeaf(set.ca, { agentName, containerId }),
      close: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** mintTestTrust with close() registered on `t.after`. */
export async function useTestTrust(t: AfterHook, options: TrustSetOptions = {}): Promise<TestTrust> {
  const trust = await mintTestTrust(options);
  t.after(() => trust.close());
  return trust;
}
