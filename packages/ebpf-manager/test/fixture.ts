// Test fixture for the eBPF manager: builds it once, mounts bpffs when missing, and sets up a lab
// of real cgroups, a private network namespace with listeners, and a manager process; all of it
// is torn down afterwards, also on failure.
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { EbpfClient, type ContainerConfig } from "@clawker/controlplane";
import { bpffsMount, cgroup2Mount } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";

const run = promisify(execFile);

/** The package directory and its build output. */
export const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const outDir = join(pkgDir, ".output");
export const bin = {
  manager: join(outDir, "ebpf-manager"),
  sockprobe: join(outDir, "sockprobe"),
  decideTest: join(outDir, "decide-test"),
  layout: join(outDir, "layout"),
  /** LD_PRELOAD shim: epoll_ctl fails while $EPOLL_FAULT_DIR/add|mod|del exists (src/epoll-fault.c). */
  epollFault: join(outDir, "epoll-fault.so"),
} as const;

let built: Promise<void> | undefined;

/**
 * Runs `make` once per process (a no-op when up to date). Test files run in parallel processes,
 * so builds are serialised with flock(1) on a lock file outside the tree.
 */
export function buildOnce(): Promise<void> {
  built ??= run("flock", [join(tmpdir(), "clawker-ebpf-build.lock"), "make", "-s", "-C", pkgDir], {
    timeout: 120_000,
  }).then(() => undefined);
  return built;
}

/** Mounts bpffs at /sys/fs/bpf when running as root and none is mounted. */
export function ensureBpffs(): void {
  if (process.getuid?.() !== 0 || bpffsMount() !== undefined) return;
  try {
    execFileSync("mount", ["-t", "bpf", "bpf", "/sys/fs/bpf"]);
  } catch {
    // left to the precondition check, which reports it
  }
}

/** The listeners every lab runs inside its network namespace (in the proxy's cgroup). */
export const ports = {
  catchall: 15001,
  route: 16001,
  dnsGate: 15353,
  udpProxy: 15003,
  v6loop: 15100,
  /** On the gateway (remote.dns): an exempt port (the control plane's) and a host service. */
  gatewayCp: 7444,
  gatewayHost: 8080,
} as const;
/** Addresses on the namespace's loopback device that the programs do not treat as loopback. */
export const remote = { web: "10.250.0.1", dns: "10.250.0.53" } as const;

/** The config the labs enroll the parent with. */
export const defaultConfig: ContainerConfig = {
  proxy: "127.0.0.1",
  dns: "127.0.0.1",
  dnsPort: ports.dnsGate,
  catchallPort: ports.catchall,
  udpPort: ports.udpProxy,
};

/** What sockprobe printed. */
export type Probe = Record<string, unknown> & { ok: boolean; errno?: number };

/** A running manager process. */
export interface ManagerProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  /** Everything it wrote to stderr so far (its JSON log lines). */
  readonly stderr: () => string;
}

/** Options of a Lab. */
export interface LabOptions {
  /** Appended to the pin directory's name (e.g. quotes, backslashes, a newline). */
  readonly pinSuffix?: string;
  /** Extra environment of the manager process (e.g. LD_PRELOAD). */
  readonly managerEnv?: Readonly<Record<string, string>>;
}

let labCounter = 0;

/** Cgroups, a network namespace, listeners and a manager, unique per lab. */
export class Lab {
  readonly id = `clawker-t${process.pid}-${labCounter++}-${randomBytes(3).toString("hex")}`;
  readonly cgroot: string;
  readonly parent: string;
  readonly proxyCgroup: string;
  readonly pinDir: string;
  readonly netns: string;
  readonly tmp: string;
  readonly socketPath: string;
  manager: ManagerProcess | undefined;
  client: EbpfClient;
  private listeners: ChildProcess | undefined;
  private readonly cgroups: string[] = [];
  private readonly children = new Set<ChildProcess>();

  private readonly managerEnv: Readonly<Record<string, string>>;

  constructor(options: LabOptions = {}) {
    const cg = cgroup2Mount();
    const bpf = bpffsMount();
    if (cg === undefined || bpf === undefined) throw new Error("lab needs cgroup2 and bpffs");
    this.cgroot = cg;
    this.parent = join(cg, this.id);
    this.proxyCgroup = join(cg, `${this.id}-proxy`);
    this.pinDir = join(bpf, this.id + (options.pinSuffix ?? ""));
    this.managerEnv = options.managerEnv ?? {};
    this.netns = this.id;
    this.tmp = mkdtempSync(join(tmpdir(), "clawker-ebpf-"));
    this.socketPath = join(this.tmp, "manager.sock");
    this.client = new EbpfClient({ socketPath: this.socketPath, timeoutMs: 10_000 });
  }

  /** Builds, creates the namespace and cgroups, starts listeners and the manager, enrolls the parent. */
  async setUp(options: { enroll?: boolean } = {}): Promise<void> {
    await buildOnce();
    await run("ip", ["netns", "add", this.netns]);
    await run("ip", ["-n", this.netns, "link", "set", "lo", "up"]);
    for (const a of Object.values(remote))
      await run("ip", ["-n", this.netns, "addr", "add", `${a}/32`, "dev", "lo"]);
    // ping sockets for everyone, as Docker sets it in containers
    await run("ip", [
      "netns",
      "exec",
      this.netns,
      "sysctl",
      "-q",
      "-w",
      "net.ipv4.ping_group_range=0 2147483647",
    ]);
    this.mkCgroup(this.proxyCgroup);
    this.listeners = await this.startListeners();
    await this.startManager();
    if (options.enroll !== false) await this.client.enroll({ cgroup: this.parent }, defaultConfig);
  }

  /** Starts `ebpf-manager serve` and waits for its ready line; (re)starts the client. */
  async startManager(): Promise<ManagerProcess> {
    const child = spawn(
      bin.manager,
      [
        "serve",
        "--socket",
        this.socketPath,
        "--pin-dir",
        this.pinDir,
        "--cgroup-parent",
        this.parent,
        "--proxy-cgroup",
        this.proxyCgroup,
      ],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...this.managerEnv } },
    );
    const exited = new Promise<number | null>((res) => child.once("exit", (code) => res(code)));
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const lines = createInterface({ input: child.stdout });
    const ready = new Promise<void>((res, rej) => {
      lines.on("line", (l) => {
        if (l.includes('"ready"')) res();
      });
      void exited.then((code) => rej(new Error(`manager exited ${code}: ${stderr}`)));
    });
    await ready;
    if (!this.cgroups.includes(this.parent)) this.cgroups.unshift(this.parent);
    this.manager = { child, exited, stderr: () => stderr };
    await this.client.close();
    this.client = new EbpfClient({ socketPath: this.socketPath, timeoutMs: 10_000 });
    await this.client.start(AbortSignal.timeout(600_000));
    return this.manager;
  }

  /** Stops the manager (SIGTERM leaves the pins; SIGKILL simulates a crash). */
  async stopManager(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    const m = this.manager;
    if (m === undefined) return null;
    this.manager = undefined;
    await this.client.close();
    m.child.kill(signal);
    return m.exited;
  }

  /** The default config (a fresh copy). */
  defaultConfig(): ContainerConfig {
    return { ...defaultConfig };
  }

  /** Creates a cgroup under the parent (or at `absolute`) and returns its path. */
  cgroup(name: string, absolute?: string): string {
    const path = absolute ?? join(this.parent, name);
    this.mkCgroup(path);
    return path;
  }

  /** The cgroup id (kernfs inode number) of a cgroup directory. */
  static cgroupId(path: string): string {
    return execFileSync("stat", ["-c", "%i", path], { encoding: "utf8" }).trim();
  }

  /** Runs sockprobe inside the namespace (and cgroup, if given) and returns its JSON line. */
  async probe(cgroup: string | undefined, ...args: string[]): Promise<Probe> {
    const argv = [
      "--netns",
      `/run/netns/${this.netns}`,
      ...(cgroup === undefined ? [] : ["--cgroup", cgroup]),
      ...args,
    ];
    const { stdout } = await run(bin.sockprobe, argv, { timeout: 30_000 });
    const last = stdout.trim().split("\n").pop() ?? "";
    return JSON.parse(last) as Probe;
  }

  /** Starts a long-running sockprobe (e.g. tcp-loop); resolves with its JSON when it exits. */
  spawnProbe(cgroup: string | undefined, ...args: string[]): Promise<Probe> {
    const argv = [
      "--netns",
      `/run/netns/${this.netns}`,
      ...(cgroup === undefined ? [] : ["--cgroup", cgroup]),
      ...args,
    ];
    const child = spawn(bin.sockprobe, argv, { stdio: ["ignore", "pipe", "inherit"] });
    this.children.add(child);
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    return new Promise((res, rej) => {
      child.once("exit", () => {
        this.children.delete(child);
        try {
          res(JSON.parse(out.trim().split("\n").pop() ?? "") as Probe);
        } catch (err) {
          rej(new Error(`sockprobe printed ${JSON.stringify(out)}`, { cause: err }));
        }
      });
    });
  }

  /** Runs the manager binary as a one-shot command. */
  async cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const { stdout, stderr } = await run(bin.manager, args, { timeout: 30_000 });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return {
        code: typeof e.code === "number" ? e.code : -1,
        stdout: e.stdout ?? "",
        stderr: e.stderr ?? "",
      };
    }
  }

  /** Removes everything the lab made: processes, pins (detaching programs), cgroups, namespace, temp dir. */
  async tearDown(): Promise<void> {
    for (const c of this.children) c.kill("SIGKILL");
    if (this.listeners) {
      const l = this.listeners;
      const gone = new Promise((res) => l.once("exit", res));
      if (l.exitCode === null) l.kill("SIGKILL");
      await gone;
    }
    await this.stopManager("SIGTERM").catch(() => undefined);
    if (existsSync(this.pinDir)) await this.cli("flush-all", "--pin-dir", this.pinDir);
    rmSync(this.pinDir, { recursive: true, force: true });
    for (const cg of [...this.cgroups].reverse()) {
      await waitFor(
        () => {
          if (!existsSync(cg)) return true;
          rmdirSync(cg);
          return true;
        },
        { timeoutMs: 5_000, what: `rmdir ${cg}` },
      ).catch(() => undefined);
    }
    await run("ip", ["netns", "del", this.netns]).catch(() => undefined);
    rmSync(this.tmp, { recursive: true, force: true });
  }

  private mkCgroup(path: string): void {
    mkdirSync(path, { recursive: true });
    // children before parents when removing: keep creation order, remove in reverse
    const parts: string[] = [];
    for (let p = path; p.length > this.cgroot.length; p = dirname(p)) parts.unshift(p);
    for (const p of parts) if (!this.cgroups.includes(p)) this.cgroups.push(p);
  }

  private async startListeners(): Promise<ChildProcess> {
    const specs = [
      `tcp:127.0.0.1:${ports.catchall}:catchall`,
      `tcp:127.0.0.1:${ports.route}:route`,
      `udp:127.0.0.1:${ports.dnsGate}:dnsgate`,
      `udp:127.0.0.1:${ports.udpProxy}:udpproxy`,
      `tcp:::1:${ports.v6loop}:v6loop`,
      `tcp:${remote.web}:443:direct`,
      `tcp:${remote.web}:80:direct`,
      `udp:${remote.web}:5000:directudp`,
      `udp:${remote.dns}:53:realdns`,
      `tcp:${remote.dns}:${ports.gatewayCp}:gatewaycp`,
      `tcp:${remote.dns}:${ports.gatewayHost}:gatewayhost`,
      `udp:${remote.dns}:${ports.gatewayCp}:gatewaycpudp`,
    ];
    const child = spawn(
      bin.sockprobe,
      ["--netns", `/run/netns/${this.netns}`, "--cgroup", this.proxyCgroup, "serve", ...specs],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const lines = createInterface({ input: child.stdout });
    await new Promise<void>((res, rej) => {
      lines.on("line", (l) => (l.includes('"ready"') ? res() : rej(new Error(`listeners: ${l}`))));
      child.once("exit", (code) => rej(new Error(`listeners exited ${code}`)));
    });
    return child;
  }
}

/** Reads a sysctl under /proc/sys. */
export function readSysctl(name: string): string {
  return readFileSync(join("/proc/sys", ...name.split(".")), "utf8").trim();
}
