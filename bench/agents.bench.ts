// Agent container start to registered: the real agent image with bundled clawkerd, the control
// plane in the private dockerd's netns, the identity chain end to end (Session, RegisterRequired,
// token exchange, Register behind the identity gate). Reported on top of Docker's own start time:
// from `container.start()` resolving to the daemon's `agent_registered` line arriving (the row is
// committed before that line is written, so ListAgents sees it from then on).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createAgentContainer, mintTrustSet, writeTrustSet } from "@clawker/adminclient";
import { LABELS } from "@clawker/proto";
import { agentImage } from "../test/harness/agent-image.js";
import { startControlPlane } from "../test/harness/controlplane.js";
import { PrivateDocker } from "../test/harness/docker.js";
import { command, root } from "../test/harness/preconditions.js";
import { waitFor } from "../test/harness/wait-for.js";
import { summarise, type Benchmark } from "./lib.js";

const GATEWAY = "10.214.0.1";
const NETWORK = "clawker-agents";

const bench: Benchmark = {
  name: "agents",
  skip: () => root.check() ?? command("dockerd").check() ?? command("nsenter").check(),
  async run(ctx) {
    const daemon = new PrivateDocker();
    const dir = mkdtempSync(join(tmpdir(), "clawker-bench-agents-"));
    try {
      await daemon.start();
      const docker = daemon.docker;
      await docker.createNetwork({
        Name: NETWORK,
        Driver: "bridge",
        Internal: true,
        IPAM: { Config: [{ Subnet: "10.214.0.0/24", Gateway: GATEWAY }] },
        Labels: { [LABELS.managed]: "true" },
      });
      const image = await agentImage(docker);
      const trust = await mintTrustSet({ serverNames: [GATEWAY] });
      const trustDir = join(dir, "trust");
      await writeTrustSet(trustDir, trust);
      const cp = await startControlPlane({
        built: true,
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
      try {
        const dockerStart: number[] = [];
        const registered: number[] = [];
        for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
          const agent = await createAgentContainer(docker, {
            image,
            agent: `bench${i}`,
            project: "bench",
            network: NETWORK,
            trust,
            controlPlaneAddr: `${GATEWAY}:${cp.ports.agent}`,
            tokenEndpoint: `https://${GATEWAY}:${cp.ports.authPublic}/oauth2/token`,
            serverName: "localhost",
            cmd: ["sleep", "600"],
            start: false,
          });
          const seen = cp.logs.length;
          const t0 = performance.now();
          await docker.getContainer(agent.containerId).start();
          const started = performance.now();
          await waitFor(
            () =>
              cp.logs
                .slice(seen)
                .some((l) => l["event"] === "agent_registered" && l["containerId"] === agent.containerId),
            { timeoutMs: 30_000, intervalMs: 2, what: `agent ${i} registered` },
          );
          const done = performance.now();
          if (i >= ctx.warmup) {
            dockerStart.push(started - t0);
            registered.push(done - started);
          }
          ctx.log(
            `run ${i}: docker start ${(started - t0).toFixed(0)} ms, then registered ${(done - started).toFixed(0)} ms`,
          );
          await docker.getContainer(agent.containerId).remove({ force: true });
        }
        return [
          summarise("docker start of the agent container", "ms", dockerStart, "lower"),
          summarise(
            "started -> registered (on top of docker start)",
            "ms",
            registered,
            "lower",
            "median <= 1500",
          ),
        ];
      } finally {
        await cp.close();
      }
    } finally {
      await daemon.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
export default bench;
