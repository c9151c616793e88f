// What the image and compose tests (and bench/images.bench.ts) share: building the real images
// with docker/build.sh into a private dockerd, the control plane's documented container settings,
// and looking inside a running control-plane container (its capabilities and mounts).
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { REPO_ROOT } from "../harness/images.js";
import { command, type Requirement } from "../harness/preconditions.js";

const execFileP = promisify(execFile);

/** What building the images needs on the machine, besides root and the harness's dockerd. */
export const BUILD_TOOLS: readonly Requirement[] = [
  "docker",
  "debootstrap",
  "make",
  "clang",
  "bpftool",
  "flock",
].map((name) => command(name));

/** One image docker/build.sh built (its JSON line). */
export interface BuiltImage {
  readonly image: "controlplane" | "agent";
  readonly ref: string;
  readonly cached: boolean;
  readonly seconds: number;
  readonly sizeBytes: number;
}

/** The environment the docker CLI and the build scripts get: this engine, Node 24 first on PATH. */
export function dockerEnv(dockerHost: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PATH: `${join(REPO_ROOT, "node_modules/.bin")}:${process.env["PATH"] ?? ""}`,
    DOCKER_HOST: dockerHost,
    ...extra,
  };
}

/**
 * Runs docker/build.sh for `which` against the engine at `dockerHost`, in a build folder of its
 * own (concurrent test files never share one); the Debian base comes from its content-keyed cache.
 */
export async function buildImages(
  dockerHost: string,
  which: "controlplane" | "agent" | "all",
): Promise<Record<string, BuiltImage>> {
  // A fresh clone has no .output yet (it is gitignored build output).
  await mkdir(join(REPO_ROOT, ".output"), { recursive: true });
  const buildDir = await mkdtemp(join(REPO_ROOT, ".output", "docker-test-"));
  try {
    const { stdout } = await execFileP("bash", [join(REPO_ROOT, "docker/build.sh"), which], {
      cwd: REPO_ROOT,
      env: dockerEnv(dockerHost, { CLAWKER_BUILD_DIR: buildDir }),
      maxBuffer: 16 * 1024 * 1024,
      timeout: 15 * 60_000,
    });
    const images = stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as BuiltImage);
    return Object.fromEntries(images.map((i) => [i.image, i]));
  } finally {
    await rm(buildDir, { recursive: true, force: true });
  }
}

/** Runs the docker CLI against `dockerHost`; rejects with its stderr on a non-zero exit. */
export async function dockerCli(
  dockerHost: string,
  args: readonly string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  const { stdout } = await execFileP("docker", [...args], {
    env: dockerEnv(dockerHost, options.env),
    maxBuffer: 16 * 1024 * 1024,
    timeout: options.timeoutMs ?? 120_000,
  });
  return stdout;
}

/** The trust files the control plane reads (packages/controlplane/src/trust-dir.ts), and only those. */
export const CP_TRUST_FILES = [
  "ca.crt",
  "controlplane.crt",
  "controlplane.key",
  "controlplane-client.crt",
  "controlplane-client.key",
  "cli-signing.pub.jwk",
] as const;

/** Where the documented `docker run` flags point: the host's mounts, the trust dir, the state volume. */
export interface RunFlagsOptions {
  readonly cgroupMount: string;
  readonly dockerSocket: string;
  readonly trustDir: string;
  readonly stateVolume: string;
}

/** The flags docker/README.md documents for running the control-plane image, nothing more. */
export function documentedRunFlags(o: RunFlagsOptions): string[] {
  return [
    "--init",
    "--cap-drop",
    "ALL",
    "--cap-add",
    "SYS_ADMIN",
    "--cap-add",
    "NET_ADMIN",
    "--security-opt",
    "no-new-privileges",
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--volume",
    "/sys/fs/bpf:/sys/fs/bpf",
    "--volume",
    `${o.cgroupMount}:${o.cgroupMount}:ro`,
    "--volume",
    `${o.dockerSocket}:/var/run/docker.sock`,
    ...CP_TRUST_FILES.flatMap((f) => ["--volume", `${join(o.trustDir, f)}:/etc/clawker/trust/${f}:ro`]),
    "--volume",
    `${o.stateVolume}:/var/lib/clawker`,
    "--env",
    "CLAWKER_CP_ADMIN_ADDR=0.0.0.0:7443",
    "--env",
    "CLAWKER_CP_HEALTH_ADDR=0.0.0.0:7080",
    "--publish",
    "127.0.0.1:7443:7443",
    "--publish",
    "127.0.0.1:7080:7080",
  ];
}

/** CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21): the only capabilities the CP container gets. */
export const CP_CAPABILITIES = (1n << 12n) | (1n << 21n);

/** One process inside a container, as /proc says. */
export interface ContainerProcess {
  readonly pid: number;
  readonly cmdline: string;
  readonly capEff: bigint;
  readonly noNewPrivs: boolean;
}

// Runs in the container (node is its only interpreter): every process with its capabilities.
const LIST_PROCESSES = `
const fs = require("fs");
const out = [];
for (const pid of fs.readdirSync("/proc").filter((p) => /^\\d+$/.test(p))) {
  try {
    const status = fs.readFileSync("/proc/" + pid + "/status", "utf8");
    out.push({
      pid: Number(pid),
      cmdline: fs.readFileSync("/proc/" + pid + "/cmdline", "utf8").split("\\0").join(" ").trim(),
      capEff: /CapEff:\\s*(\\S+)/.exec(status)[1],
      noNewPrivs: /NoNewPrivs:\\s*1/.test(status),
    });
  } catch {}
}
process.stdout.write(JSON.stringify(out));
`;

/** The processes running in `container` (through `docker exec ... node`). */
export async function containerProcesses(dockerHost: string, container: string): Promise<ContainerProcess[]> {
  const raw = JSON.parse(
    await dockerCli(dockerHost, ["exec", container, "node", "-e", LIST_PROCESSES]),
  ) as Array<Omit<ContainerProcess, "capEff"> & { capEff: string }>;
  return raw.map((p) => ({ ...p, capEff: BigInt(`0x${p.capEff}`) }));
}

/** A mount inside a container: where, and whether it is read-only. */
export interface ContainerMount {
  readonly target: string;
  readonly readOnly: boolean;
  readonly fsType: string;
}

const LIST_MOUNTS = `
const lines = require("fs").readFileSync("/proc/self/mountinfo", "utf8").trim().split("\\n");
process.stdout.write(JSON.stringify(lines.map((l) => {
  const [left, right] = l.split(" - ");
  const f = left.split(" ");
  return { target: f[4], readOnly: f[5].split(",").includes("ro"), fsType: right.split(" ")[0] };
})));
`;

/** The mounts `container` sees (the last mount on a target wins, as the kernel shows them). */
export async function containerMounts(
  dockerHost: string,
  container: string,
): Promise<Map<string, ContainerMount>> {
  const list = JSON.parse(
    await dockerCli(dockerHost, ["exec", container, "node", "-e", LIST_MOUNTS]),
  ) as ContainerMount[];
  return new Map(list.map((m) => [m.target, m]));
}

// Runs in the container: serve (load, pin, attach to the cgroup parent) until ready, stop it,
// then list the pinned links and flush them all, printing one JSON object.
const BPF_ROUND_TRIP = `
const { spawn, execFileSync } = require("child_process");
const [pinDir, parent] = process.argv.slice(1);
const child = spawn("ebpf-manager", ["serve", "--socket", "/tmp/ebpf-check.sock", "--pin-dir", pinDir, "--cgroup-parent", parent], { stdio: ["ignore", "pipe", "pipe"] });
let ready = "", stderr = "";
child.stdout.on("data", (d) => { ready += d; child.kill("SIGTERM"); });
child.stderr.on("data", (d) => (stderr += d));
child.on("exit", (code) => {
  const run = (args) => { try { return execFileSync("ebpf-manager", args, { encoding: "utf8" }); } catch (e) { return "failed: " + e.message; } };
  const links = run(["dump-links", "--json", "--pin-dir", pinDir]);
  const flushed = run(["flush-all", "--pin-dir", pinDir]);
  process.stdout.write(JSON.stringify({ code, ready, stderr, links, flushed }));
});
`;

/** What a BPF round trip inside the container did. */
export interface BpfRoundTrip {
  readonly code: number | null;
  readonly ready: string;
  readonly stderr: string;
  readonly links: string;
  readonly flushed: string;
}

/**
 * Has the image's ebpf-manager load and pin its programs under `pinDir` and attach them to the
 * cgroup `parent` (relative to the cgroup2 mount; it must exist: the mount is read-only inside),
 * then flush everything again.
 */
export async function bpfRoundTrip(
  dockerHost: string,
  container: string,
  pinDir: string,
  parent: string,
): Promise<BpfRoundTrip> {
  const out = await dockerCli(dockerHost, ["exec", container, "node", "-e", BPF_ROUND_TRIP, pinDir, parent]);
  return JSON.parse(out) as BpfRoundTrip;
}
