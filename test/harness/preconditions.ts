// Preconditions for tests that need root, Docker, cgroup2, bpffs or a tool on PATH.
// On a developer laptop a missing precondition skips the test with a reason; when `CI` is set it
// fails it, because a skipped security test in CI is a failed security test.
import { accessSync, constants, readFileSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { findOnPath } from "@clawker/test-support";

/** True when running under CI (`CI` set to anything but "" or "false"). */
export const isCI = (process.env["CI"] ?? "") !== "" && process.env["CI"] !== "false";

/** A named requirement: `check()` returns undefined when met, or why it is not. */
export interface Requirement {
  readonly name: string;
  check(): string | undefined;
}

/** Root (uid 0). */
export const root: Requirement = {
  name: "root",
  check: () => (process.getuid?.() === 0 ? undefined : "needs root (uid 0)"),
};

/** A command on PATH. */
export function command(name: string): Requirement {
  return {
    name: `command ${name}`,
    check: () => (findOnPath(name) === undefined ? `needs ${name} on PATH` : undefined),
  };
}

/** The cgroup2 mount point from /proc/mounts, or undefined. */
export function cgroup2Mount(): string | undefined {
  return mountPointOf("cgroup2");
}

/** The bpffs mount point from /proc/mounts, or undefined. */
export function bpffsMount(): string | undefined {
  return mountPointOf("bpf");
}

/** A mounted cgroup2 hierarchy. */
export const cgroup2: Requirement = {
  name: "cgroup2",
  check: () => (cgroup2Mount() === undefined ? "needs a cgroup2 mount" : undefined),
};

/** A mounted bpffs. */
export const bpffs: Requirement = {
  name: "bpffs",
  check: () =>
    bpffsMount() === undefined ? "needs bpffs mounted (mount -t bpf bpf /sys/fs/bpf)" : undefined,
};

/**
 * Checks requirements for a test: returns true when all are met. Otherwise skips the test with
 * the reasons, or under CI throws so the test fails.
 */
export function requires(t: TestContext, ...reqs: Requirement[]): boolean {
  const missing = unmet(...reqs);
  if (missing.length === 0) return true;
  const reason = missing.join("; ");
  if (isCI) throw new Error(`precondition not met under CI: ${reason}`);
  t.skip(reason);
  return false;
}

/**
 * For `describe`/`suite` options: `{ skip: skipReason(...) }`. Under CI it throws at load time,
 * failing the file instead of skipping it.
 */
export function skipReason(...reqs: Requirement[]): string | false {
  const missing = unmet(...reqs);
  if (missing.length === 0) return false;
  const reason = missing.join("; ");
  if (isCI) throw new Error(`precondition not met under CI: ${reason}`);
  return reason;
}

function unmet(...reqs: Requirement[]): string[] {
  return reqs.map((r) => r.check()).filter((m): m is string => m !== undefined);
}

function mountPointOf(fsType: string): string | undefined {
  const mounts = readFileSync("/proc/mounts", "utf8").split("\n");
  for (const line of mounts) {
    const [, mountPoint, type] = line.split(" ");
    if (type === fsType && mountPoint !== undefined) return mountPoint;
  }
  return undefined;
}

/**
 * The upstream Ory config JSON Schemas (reference data of the tests, never read by the product):
 * `$CLAWKER_ORY_SCHEMAS`, else `../shared/ory-schemas` beside the checkout.
 */
export const ORY_SCHEMA_DIR = ((): string => {
  const fromEnv = process.env["CLAWKER_ORY_SCHEMAS"];
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  return join(import.meta.dirname, "../../../shared/ory-schemas");
})();

/** The upstream Ory schemas at ORY_SCHEMA_DIR. */
export const orySchemas: Requirement = {
  name: "Ory schemas",
  check: () => {
    try {
      accessSync(join(ORY_SCHEMA_DIR, "hydra", "config.json"), constants.R_OK);
      return undefined;
    } catch {
      return `needs the upstream Ory JSON Schemas at ${ORY_SCHEMA_DIR} (set CLAWKER_ORY_SCHEMAS)`;
    }
  },
};
