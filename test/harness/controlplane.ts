// Runs the real control plane daemon (clawker-cp) as a child process for tests and benchmarks:
// fresh trust material, a temp data dir, free loopback ports, and a teardown that leaves nothing.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { Metadata } from "@grpc/grpc-js";
import { mintTrustSet, TokenSource, writeTrustSet, type TrustSet } from "@clawker/adminclient";
import { withDaemonTunables } from "@clawker/cli";
import { captureJsonLines, freePorts, waitFor, withFreePorts } from "@clawker/test-support";
import { runInNetns } from "./netns.js";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/** The ports one daemon uses. */
export interface ControlPlanePorts {
  readonly admin: number;
  readonly agent: number;
  readonly health: number;
  readonly authPublic: number;
}

/** Options for startControlPlane. */
export interface ControlPlaneOptions {
  /** Run `packages/controlplane/dist/main.js` (built) instead of the sources through tsx. */
  readonly built?: boolean;
  /** Run this `clawker-cp` entry with node instead (an install tree's, scripts/install-tree.ts). */
  readonly entry?: string;
  /** How often /healthz is polled while waiting for 200 (default 50 ms). */
  readonly healthPollMs?: number;
  /** Extra config merged into the generated config file (YAML/JSON object). */
  readonly config?: Record<string, unknown>;
  /** Raw config file content instead of the generated one (for bad-config tests). */
  readonly rawConfig?: string;
  /** Use this trust dir instead of minting one. */
  readonly trustDir?: string;
  /** Do not wait for /healthz 200 (tests of start-up failures). */
  readonly noWait?: boolean;
  readonly env?: Readonly<Record<string, string>>;
  /** Run the daemon inside this network namespace (nsenter); /healthz is polled from inside it. */
  readonly netns?: string;
  /** Reuse a data dir (a restarted control plane); it is not removed on close. */
  readonly dataDir?: string;
  /** The trust set stored in `trustDir`, when the caller minted it. */
  readonly trustSet?: TrustSet;
  /** Reuse these ports (a restarted control plane). */
  readonly ports?: ControlPlanePorts;
  /**
   * A command the daemon's command line is appended to, which must exec it (so `proc.pid` stays
   * the daemon's), e.g. `["prlimit", "--nofile=1024", "--"]`.
   */
  readonly launcher?: readonly string[];
}

/** A running daemon. */
export interface ControlPlane {
  readonly proc: ChildProcess;
  /** performance.now() right before the spawn. */
  readonly spawnedAt: number;
  /** performance.now() when /healthz first answered 200 (undefined with noWait). */
  readonly healthyAt: number | undefined;
  readonly dir: string;
  readonly dataDir: string;
  readonly trustDir: string;
  readonly trust: TrustSet | undefined;
  readonly ports: ControlPlanePorts;
  readonly healthUrl: string;
  readonly tokenEndpoint: string;
  /**
   * The auth helper's admin API (client registration, introspection): an `http+unix:` URL of its
   * socket in the data dir (the embedded server's, or Hydra's in Ory mode).
   */
  readonly authAdminUrl: string;
  /** Every stdout line, parsed as JSON where it is JSON. */
  readonly logs: Array<Record<string, unknown>>;
  readonly stderr: () => string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  /** SIGTERM, wait for exit (SIGKILL after 15 s), remove the temp dir. Idempotent. */
  close(): Promise<number | string>;
}

/** Call metadata with a fresh token of the daemon's CLI client (its signing key, the real token endpoint). */
export async function bearerMetadata(cp: ControlPlane): Promise<Metadata> {
  if (cp.trust === undefined) throw new Error("bearerMetadata needs the control plane's trust set");
  const tokens = new TokenSource({
    ca: cp.trust.ca.certPem,
    signingKey: cp.trust.signingKey.privateJwk,
    tokenEndpoint: cp.tokenEndpoint,
  });
  try {
    const metadata = new Metadata();
    metadata.set("authorization", `Bearer ${await tokens.token()}`);
    return metadata;
  } finally {
    await tokens.close();
  }
}

/** Re-exported for the tests that import it from here (see @clawker/test-support on the port range). */
export { freePorts };

/** How long a daemon may take to answer /healthz 200: beyond its own 30 s helper health budget. */
const HEALTHY_TIMEOUT_MS = 90_000;

/**
 * Starts clawker-cp and (unless noWait) waits until /healthz answers 200. With ports of its own
 * choosing, a start that fails because a port was taken meanwhile (EADDRINUSE in the daemon's or
 * a helper's output) starts again on fresh ports.
 */
export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  if (options.ports !== undefined) return startOnce(options, options.ports);
  return withFreePorts(4, ([admin, agent, health, authPublic]) =>
    startOnce(options, { admin: admin!, agent: agent!, health: health!, authPublic: authPublic! }),
  );
}

async function startOnce(options: ControlPlaneOptions, ports: ControlPlanePorts): Promise<ControlPlane> {
  const dir = mkdtempSync(join(tmpdir(), "clawker-cp-"));
  const dataDir = options.dataDir ?? join(dir, "data");
  let trustDir = options.trustDir;
  let trust: TrustSet | undefined = options.trustSet;
  if (trustDir === undefined) {
    trustDir = join(dir, "trust");
    trust = await mintTrustSet();
    await writeTrustSet(trustDir, trust);
  }
  const { admin, agent, health, authPublic } = ports;
  const configFile = join(dir, "cp.json");
  writeFileSync(
    configFile,
    options.rawConfig ??
      JSON.stringify(
        deepMerge(
          {
            listen: { admin: { port: admin }, agent: { port: agent }, health: { port: health } },
            auth: { publicPort: authPublic },
            shutdownGraceMs: 5000,
            // Tests opt in (ebpf.enabled defaults to auto): on a root machine with ebpf-manager on
            // PATH every test's agents would otherwise be enforced, and refused.
            ebpf: { enabled: false },
          },
          options.config ?? {},
        ),
      ),
  );
  const entry =
    options.entry !== undefined
      ? [options.entry]
      : options.built
        ? [join(repoRoot, "packages/controlplane/dist/main.js")]
        : [
            "--import",
            import.meta.resolve("tsx"),
            "--conditions=source",
            join(repoRoot, "packages/controlplane/src/main.ts"),
          ];
  const argv = [...(options.launcher ?? []), process.execPath, ...entry, "--config", configFile];
  const [file, ...args] =
    options.netns === undefined ? argv : ["nsenter", `--net=/run/netns/${options.netns}`, ...argv];
  const spawnedAt = performance.now();
  const proc = spawn(file!, args, {
    // Started as `clawker controlplane up`, the unit and the image start it (daemon-env.ts).
    env: withDaemonTunables({
      ...process.env,
      CLAWKER_CP_DATA_DIR: dataDir,
      CLAWKER_CP_TRUST_DIR: trustDir,
      ...options.env,
    }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs = captureJsonLines(proc.stdout).lines;
  let stderr = "";
  proc.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | string>((resolve) =>
    proc.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown")),
  );
  let closing: Promise<number | string> | undefined;
  let healthyAt: number | undefined;
  const cp: ControlPlane = {
    proc,
    spawnedAt,
    get healthyAt() {
      return healthyAt;
    },
    dir,
    dataDir,
    trustDir,
    trust,
    ports,
    healthUrl: `http://127.0.0.1:${health}/healthz`,
    tokenEndpoint: `https://127.0.0.1:${authPublic}/oauth2/token`,
    authAdminUrl: `http+unix://${encodeURIComponent(
      (options.config?.["auth"] as { mode?: string } | undefined)?.mode === "ory"
        ? join(dataDir, "ory", "hydra-admin.sock")
        : join(dataDir, "authserver", "admin.sock"),
    )}`,
    logs,
    stderr: () => stderr,
    exited,
    close: () =>
      (closing ??= (async () => {
        if (proc.exitCode === null && proc.signalCode === null) {
          proc.kill("SIGTERM");
          const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
          const code = await exited;
          clearTimeout(timer);
          rmSync(dir, { recursive: true, force: true });
          return code;
        }
        rmSync(dir, { recursive: true, force: true });
        return await exited;
      })()),
  };
  if (options.noWait !== true) {
    try {
      const healthy = waitFor(
        async () => {
          if (options.netns !== undefined)
            return (await healthStatusInNetns(options.netns, cp.healthUrl)) === 200;
          const res = await fetch(cp.healthUrl).catch(() => undefined);
          if (res?.status !== 200) return false;
          healthyAt = performance.now();
          return true;
        },
        {
          timeoutMs: HEALTHY_TIMEOUT_MS,
          intervalMs: options.healthPollMs ?? 50,
          what: "clawker-cp /healthz 200",
        },
      );
      const died = exited.then((code) => {
        throw new Error(`clawker-cp exited ${code} before it was healthy: ${stderr}`);
      });
      died.catch(() => undefined); // once healthy, a later exit is the test's business
      await Promise.race([healthy, died]);
    } catch (err) {
      await cp.close();
      throw new Error(
        `control plane did not become healthy; logs:\n${logs.map((l) => JSON.stringify(l)).join("\n")}`,
        {
          cause: err,
        },
      );
    }
  }
  return cp;
}

/**
 * The pid of a helper the daemon started, from its last "helper started" log line (a helper
 * started again, the egress proxy after FirewallRemove and FirewallInit, has a new pid); throws if absent.
 */
export function helperPid(cp: ControlPlane, name: string): number {
  const line = cp.logs.findLast((l) => l["msg"] === "helper started" && l["helper"] === name);
  if (line === undefined) throw new Error(`the daemon logged no "helper started" line for ${name}`);
  return line["pid"] as number;
}

/** GETs `url` from inside a network namespace; the HTTP status, or 0 when nothing answered. */
export async function healthStatusInNetns(netns: string, url: string): Promise<number> {
  const probe = `fetch(${JSON.stringify(url)}).then((r) => process.stdout.write(String(r.status)), () => process.stdout.write("0"))`;
  try {
    const { stdout } = await runInNetns(netns, process.execPath, ["-e", probe], { timeoutMs: 5000 });
    return Number(stdout.trim() || "0");
  } catch {
    return 0;
  }
}

/** Merges plain objects recursively; `over` wins on every other value. */
export function deepMerge(
  base: Record<string, unknown>,
  over: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? deepMerge(b, v) : v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Live pids in process group `pgid` (a helper started in a group of its own, and its children). */
export async function processGroup(pgid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = await readFile(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    // Fields after the command name (which may hold spaces): state, ppid, pgrp, ...
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === pgid && state !== "Z") pids.push(Number(entry));
  }
  return pids;
}
