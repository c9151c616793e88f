// Agent container start to registered: the real agent image with bundled clawkerd, the control
// plane in the private dockerd's netns, the identity chain end to end (Session, RegisterRequired,
// token exchange, Register behind the identity gate). Reported on top of Docker's own start time:
// from `container.start()` resolving to the daemon's `agent_registered` line arriving (the row is
// committed before that line is written, so ListAgents sees it from then on).
//
// Each run starts BENCH_AGENTS agents (default 10) one after another; the figures are over every
// agent of every run. Each agent's pieces are put on one clock (ms since `container.start()`
// resolved) from Docker's event, the control plane's lines and clawkerd's own start-up and
// registration timelines, printed per agent and as medians with their spread.
//
// Side by side: BENCH_AGENTS_BASELINE=<checkout> (built: its packages/controlplane/dist and its
// packages/clawkerd/.output/clawkerd.mjs) runs a second lane, its own private dockerd, control plane
// and agent image from that checkout, alternating agent by agent with this tree's lane.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type Docker from "dockerode";
import { createAgentContainer, mintTrustSet, writeTrustSet, type TrustSet } from "@clawker/adminclient";
import { LABELS } from "@clawker/proto";
import { agentImage, CLAWKERD_IN_IMAGE } from "../test/harness/agent-image.js";
import { demux } from "../test/harness/containers.js";
import { startControlPlane, type ControlPlane } from "../test/harness/controlplane.js";
import { PrivateDocker } from "../test/harness/docker.js";
import { NODE_BINARY, nodeImage, sharedLibraries } from "../test/harness/images.js";
import { command, root } from "../test/harness/preconditions.js";
import { waitFor } from "../test/harness/wait-for.js";
import { cpuMs } from "./proc-stat.js";
import { summarise, type Benchmark, type Figure } from "./lib.js";

const GATEWAY = "10.214.0.1";
const NETWORK = "clawker-agents";
const SETPRIV = "/usr/bin/setpriv";

/** The pieces of one agent's start, ms since `container.start()` resolved (one clock). */
const PIECES = [
  "dockerEvent", // Docker's own `start` event (timeNano)
  "cpSawEvent", // the control plane published container.started
  "cpIndexed", // inspected and indexed: the dial starts
  "clawkerdProcess", // clawkerd's process began (performance.timeOrigin)
  "clawkerdModules", // its bundle evaluated (main's first statement)
  "clawkerdBootstrap", // bootstrap files read and checked, state loaded
  "clawkerdTrust", // firewall CA step done
  "clawkerdJobs", // jobs loaded, spare gate probed and started
  "clawkerdListening", // bound
  "cpSessionOpened", // HelloAck received by the control plane
  "registerRequired", // the registrar started (RegisterRequired arrived)
  "tokenReceived", // the token exchange answered
  "registerAnswered", // Register answered at clawkerd
  "cpRegistered", // the control plane's agent_registered line
  "benchSaw", // the bench saw that line
] as const;
type Piece = (typeof PIECES)[number];

interface Lane {
  readonly name: string;
  readonly daemon: PrivateDocker;
  readonly docker: Docker;
  readonly cp: ControlPlane;
  readonly image: string;
  readonly trust: TrustSet;
  readonly registered: number[];
  readonly dockerStart: number[];
  /** CPU ms per agent start: the control plane process, and clawkerd up to registered. */
  readonly cpCpu: number[];
  readonly clawkerdCpu: number[];
  readonly pieces: Map<Piece, number[]>;
  /** Agents not registered within 30 s. */
  readonly failures: string[];
}

const bench: Benchmark = {
  name: "agents",
  skip: () => root.check() ?? command("dockerd").check() ?? command("nsenter").check(),
  async run(ctx) {
    const perRun = Number(process.env["BENCH_AGENTS"] ?? 10);
    const baseline = process.env["BENCH_AGENTS_BASELINE"];
    const dir = mkdtempSync(join(tmpdir(), "clawker-bench-agents-"));
    const lanes: Lane[] = [];
    try {
      lanes.push(await startLane("this", dir, undefined));
      if (baseline !== undefined && baseline !== "") lanes.push(await startLane("baseline", dir, baseline));
      let n = 0;
      const total = ctx.warmup + ctx.runs * perRun;
      for (let i = 0; i < total; i++) {
        for (const lane of lanes) {
          const measured = i >= ctx.warmup;
          try {
            const t = await startAgent(lane, `bench${n++}`, measured);
            ctx.log(`${lane.name} agent ${i}${measured ? "" : " (warm-up)"}: ${describe(t)}`);
          } catch (err) {
            ctx.log(`${lane.name} agent ${i}: NOT REGISTERED: ${String(err)}`);
          }
        }
      }
      const figures: Figure[] = [];
      for (const lane of lanes) {
        const suffix = lanes.length > 1 ? ` [${lane.name}]` : "";
        ctx.log(
          `${lane.name}: ${lane.failures.length} agent(s) not registered in 30 s ${lane.failures.join(" ")}`,
        );
        ctx.log(
          `${lane.name}: pieces, ms since docker start returned (median [p25..p75] over ${lane.registered.length}):`,
        );
        for (const p of PIECES) {
          const xs = lane.pieces.get(p) ?? [];
          if (xs.length > 0) ctx.log(`  ${p.padEnd(18)} ${quartiles(xs)}`);
        }
        figures.push(
          summarise(`docker start of the agent container${suffix}`, "ms", lane.dockerStart, "lower"),
          summarise(
            `started -> registered (on top of docker start)${suffix}`,
            "ms",
            lane.registered,
            "lower",
            "median <= 400",
          ),
          summarise(`control plane CPU per agent start${suffix}`, "ms", lane.cpCpu, "lower"),
          summarise(`clawkerd CPU to registered${suffix}`, "ms", lane.clawkerdCpu, "lower"),
        );
      }
      if (lanes.length === 2) {
        const [a, b] = lanes as [Lane, Lane];
        const ratio = (x: number[], y: number[]): string => (median(x) / median(y)).toFixed(3);
        // CPU is read in 10 ms ticks (USER_HZ): per agent that is coarse, so means, not medians.
        const mean = (x: number[]): number => x.reduce((p, v) => p + v, 0) / Math.max(1, x.length);
        const cpu = (x: number[], y: number[]): string =>
          `${mean(x).toFixed(1)}/${mean(y).toFixed(1)} ms = ${(mean(x) / mean(y)).toFixed(3)}`;
        ctx.log(
          `this/baseline: registered median ${ratio(a.registered, b.registered)}; mean CPU per agent start: control plane ${cpu(a.cpCpu, b.cpCpu)}, clawkerd to registered ${cpu(a.clawkerdCpu, b.clawkerdCpu)}`,
        );
      }
      return figures;
    } finally {
      for (const lane of lanes.reverse()) {
        await lane.cp.close().catch(() => undefined);
        await lane.daemon.close().catch(() => undefined);
      }
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
export default bench;

async function startLane(name: string, dir: string, checkout: string | undefined): Promise<Lane> {
  const daemon = new PrivateDocker();
  await daemon.start();
  try {
    const docker = daemon.docker;
    await docker.createNetwork({
      Name: NETWORK,
      Driver: "bridge",
      Internal: true,
      IPAM: { Config: [{ Subnet: "10.214.0.0/24", Gateway: GATEWAY }] },
      Labels: { [LABELS.managed]: "true" },
    });
    const image = checkout === undefined ? await agentImage(docker) : await baselineImage(docker, checkout);
    const trust = await mintTrustSet({ serverNames: [GATEWAY] });
    const trustDir = join(dir, `trust-${name}`);
    await writeTrustSet(trustDir, trust);
    const cp = await startControlPlane({
      ...(checkout === undefined
        ? { built: true }
        : { entry: join(checkout, "packages/controlplane/dist/main.js") }),
      netns: daemon.netnsName,
      trustDir,
      trustSet: trust,
      config: {
        listen: { agent: { host: GATEWAY } },
        auth: { publicHost: GATEWAY },
        docker: { host: daemon.dockerHost },
        agents: { drainToZero: false },
      },
    });
    return {
      name,
      daemon,
      docker,
      cp,
      image,
      trust,
      registered: [],
      dockerStart: [],
      cpCpu: [],
      clawkerdCpu: [],
      pieces: new Map(),
      failures: [],
    };
  } catch (err) {
    await daemon.close().catch(() => undefined);
    throw err;
  }
}

/** The agent image with another checkout's clawkerd bundle (the baseline lane). */
async function baselineImage(docker: Docker, checkout: string): Promise<string> {
  const nodeLibs = new Set(await sharedLibraries(NODE_BINARY));
  const setprivLibs = (await sharedLibraries(SETPRIV)).filter((lib) => !nodeLibs.has(lib));
  return nodeImage(docker, {
    repo: "clawker-test/agent-baseline",
    extra: [
      {
        kind: "file",
        path: CLAWKERD_IN_IMAGE,
        source: join(checkout, "packages/clawkerd/.output/clawkerd.mjs"),
        mode: 0o644,
      },
      { kind: "file", path: SETPRIV, source: SETPRIV, mode: 0o755 },
      ...setprivLibs.map((lib) => ({ kind: "file" as const, path: lib, source: lib })),
    ],
  });
}

async function startAgent(
  lane: Lane,
  name: string,
  measured: boolean,
): Promise<Partial<Record<Piece, number>>> {
  const { docker, cp } = lane;
  const agent = await createAgentContainer(docker, {
    image: lane.image,
    agent: name,
    project: "bench",
    network: NETWORK,
    trust: lane.trust,
    controlPlaneAddr: `${GATEWAY}:${cp.ports.agent}`,
    tokenEndpoint: `https://${GATEWAY}:${cp.ports.authPublic}/oauth2/token`,
    serverName: "localhost",
    cmd: ["sleep", "600"],
    start: false,
  });
  const container = docker.getContainer(agent.containerId);
  try {
    const seen = cp.logs.length;
    const cpPid = cp.proc.pid!;
    const cpCpuBefore = cpuMs(cpPid);
    const t0 = performance.now();
    await container.start();
    const started = performance.now();
    const line = (event: string): Record<string, unknown> | undefined =>
      cp.logs.slice(seen).find((l) => l["event"] === event && l["containerId"] === agent.containerId);
    try {
      await waitFor(() => line("agent_registered") !== undefined, {
        timeoutMs: 30_000,
        intervalMs: 2,
        what: `agent ${name} registered`,
      });
    } catch (err) {
      // Counted and shown, not fatal: one lost agent must not throw away every other sample.
      if (measured) lane.failures.push(name);
      const cpLines = cp.logs.slice(seen).filter((l) => l["containerId"] === agent.containerId);
      const own = demux(await container.logs({ stdout: true, stderr: true, follow: false }));
      throw new Error(
        `${String(err)}\ncontrol plane: ${cpLines.map((l) => JSON.stringify(l)).join("\n")}\nclawkerd: ${own.stdout}${own.stderr}`,
        { cause: err },
      );
    }
    const done = performance.now();
    const cpCpu = cpuMs(cpPid) - cpCpuBefore;
    const clawkerdCpu = clawkerdCpuMs((await container.inspect()).State.Pid);
    // One clock: the Unix time at which container.start() resolved.
    const startedUnix = performance.timeOrigin + started;
    // pino's isoTime and clawkerd's lines carry ISO strings; the timelines carry Unix ms.
    const at = (unixMs: unknown): number | undefined => {
      const ms = typeof unixMs === "string" ? Date.parse(unixMs) : unixMs;
      return typeof ms === "number" && Number.isFinite(ms) ? ms - startedUnix : undefined;
    };
    const t: Partial<Record<Piece, number>> = {};
    const set = (p: Piece, v: number | undefined): void => {
      if (v !== undefined) t[p] = v;
    };
    set("dockerEvent", at(await startEventUnixMs(docker, agent.containerId, startedUnix)));
    const indexed = line("agent_indexed");
    set("cpSawEvent", at(indexed?.["seenAt"]));
    set("cpIndexed", at(indexed?.["time"]));
    set("cpSessionOpened", at(line("session_opened")?.["time"]));
    set("cpRegistered", at(line("agent_registered")?.["time"]));
    set("benchSaw", done - started);
    const logs = demux(await container.logs({ stdout: true, stderr: true, follow: false })).stdout;
    for (const raw of logs.split("\n")) {
      if (!raw.startsWith("{")) continue;
      const l = JSON.parse(raw) as Record<string, unknown>;
      if (l["event"] === "listening") {
        const origin = l["processStartUnixMs"];
        const tl = (l["timeline"] ?? {}) as Record<string, number>;
        if (typeof origin === "number") {
          set("clawkerdProcess", at(origin));
          set("clawkerdModules", at(origin + (tl["modulesLoaded"] ?? NaN)));
          set("clawkerdBootstrap", at(origin + (tl["bootstrapLoaded"] ?? NaN)));
          set("clawkerdTrust", at(origin + (tl["trustInstalled"] ?? NaN)));
          set("clawkerdJobs", at(origin + (tl["jobsLoaded"] ?? NaN)));
          set("clawkerdListening", at(origin + (tl["listening"] ?? NaN)));
        } else set("clawkerdListening", at(l["time"]));
      } else if (l["event"] === "registered") {
        const origin = l["t0UnixMs"];
        const tl = (l["timeline"] ?? {}) as Record<string, number>;
        if (typeof origin === "number") {
          set("registerRequired", at(origin));
          set("tokenReceived", at(origin + (tl["tokenReceived"] ?? NaN)));
          set("registerAnswered", at(origin + (tl["registerAnswered"] ?? NaN)));
        }
      }
    }
    if (measured) {
      lane.dockerStart.push(started - t0);
      lane.registered.push(done - started);
      lane.cpCpu.push(cpCpu);
      if (clawkerdCpu !== undefined) lane.clawkerdCpu.push(clawkerdCpu);
      for (const p of PIECES) {
        const v = t[p];
        if (v === undefined) continue;
        let xs = lane.pieces.get(p);
        if (xs === undefined) lane.pieces.set(p, (xs = []));
        xs.push(v);
      }
    }
    return { ...t, dockerStart: started - t0 } as Partial<Record<Piece, number>>;
  } finally {
    await container.remove({ force: true });
  }
}

/** Docker's own `start` event time for a container, Unix ms (from the engine's event log). */
async function startEventUnixMs(
  docker: Docker,
  id: string,
  aroundUnixMs: number,
): Promise<number | undefined> {
  const stream = await docker.getEvents({
    since: Math.floor(aroundUnixMs / 1000) - 5,
    until: Math.ceil(Date.now() / 1000) + 1,
    filters: JSON.stringify({ type: ["container"], event: ["start"], container: [id] }),
  });
  let text = "";
  for await (const chunk of stream) text += String(chunk);
  for (const raw of text.split("\n")) {
    if (!raw.trim()) continue;
    const e = JSON.parse(raw) as { timeNano?: number };
    if (typeof e.timeNano === "number") return e.timeNano / 1e6;
  }
  return undefined;
}

/** clawkerd's CPU so far (it is docker-init's child in the container; Init: true). */
function clawkerdCpuMs(initPid: number): number | undefined {
  try {
    const children = readFileSync(`/proc/${initPid}/task/${initPid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    return children.length === 0 ? undefined : cpuMs(Number(children[0]));
  } catch {
    return undefined;
  }
}

function describe(t: Partial<Record<Piece | "dockerStart", number>>): string {
  const parts = [`docker start ${fmt(t.dockerStart)}`];
  for (const p of PIECES) if (t[p] !== undefined) parts.push(`${p} ${fmt(t[p])}`);
  return parts.join(", ");
}

function fmt(n: number | undefined): string {
  return n === undefined ? "-" : n.toFixed(0);
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length / 2;
  return s.length % 2 === 1 ? s[Math.floor(m)]! : (s[m - 1]! + s[m]!) / 2;
}

function quartiles(xs: readonly number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const q = (f: number): number => s[Math.min(s.length - 1, Math.floor(f * (s.length - 1)))]!;
  return `${median(s).toFixed(0).padStart(5)} [${q(0.25).toFixed(0)}..${q(0.75).toFixed(0)}]`;
}
