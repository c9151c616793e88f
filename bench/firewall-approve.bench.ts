// Approval to the agent's next connection allowed (issue 11 figures: p50 <= 100 ms). The real
// daemon with the real HAProxy on the loopback egress world: the agent (127.0.0.3) is refused a
// name, the denial shows up in ListFirewallDenials (proxy decision -> EventHub -> EgressTriage),
// then ApproveEgress (global: on loopback the source is no agent container) is timed until the
// agent's next HTTPS request through the proxy answers 200. Beside it, in the same run, a plain
// FirewallAddRules of another name until its next request passes: the approval's overhead over
// the firewall's own add path is the ratio of the two.
import { performance } from "node:perf_hooks";
import { openAdminClient } from "@clawker/adminclient";
import { admin, egress } from "@clawker/proto";
import { startControlPlane } from "../test/harness/controlplane.js";
import { firewallConfig, httpsThrough, startEgressWorld, tlsThrough } from "../test/harness/egress-world.js";
import { command } from "../test/harness/preconditions.js";
import { waitFor } from "../test/harness/wait-for.js";
import { summarise, type Benchmark, type BenchContext, type Figure } from "./lib.js";

const WARMUP = 5;

async function run(ctx: BenchContext): Promise<Figure[]> {
  const cycles = WARMUP + Math.max(ctx.runs * 4, 20);
  const names = Array.from({ length: cycles }, (_, i) => `a${i}.example.test`);
  const plain = Array.from({ length: cycles }, (_, i) => `p${i}.example.test`);
  const world = await startEgressWorld([...names, ...plain]);
  const cp = await startControlPlane({ config: { firewall: firewallConfig(world) } });
  const client = openAdminClient({
    trust: cp.trust!,
    target: `127.0.0.1:${cp.ports.admin}`,
    tokenEndpoint: cp.tokenEndpoint,
  });
  const S = egress.EgressServiceService;
  const ca = world.upstreamCa.certPem;
  try {
    await client.firewallInit();
    const approveToAllowed: number[] = [];
    const approveCall: number[] = [];
    const addToAllowed: number[] = [];
    for (let i = 0; i < cycles; i++) {
      const name = names[i]!;
      if ((await tlsThrough(world, name, ca)).ok) throw new Error(`${name} admitted before approval`);
      const group = await waitFor(
        async () =>
          (
            await client.callMethod(S.listFirewallDenials, { agentName: "", project: "", sinceUnixNanos: 0n })
          ).groups.find((g) => g.dstName === name),
        { timeoutMs: 10_000, intervalMs: 20, what: `the denial of ${name} listed` },
      );
      const t0 = performance.now();
      await client.callMethod(S.approveEgress, {
        denialId: group.id,
        requestId: "",
        scope: egress.ApprovalScope.APPROVAL_SCOPE_GLOBAL,
        expiresAfterSeconds: 0,
      });
      const t1 = performance.now();
      if ((await httpsThrough(world, name, "/", ca)).status !== 200) throw new Error(`${name} not admitted`);
      const t2 = performance.now();

      const other = plain[i]!;
      const t3 = performance.now();
      await client.firewallAddRules([
        admin.EgressRule.fromPartial({ dst: other, port: String(world.tlsPort) }),
      ]);
      if ((await httpsThrough(world, other, "/", ca)).status !== 200)
        throw new Error(`${other} not admitted`);
      const t4 = performance.now();
      if (i >= WARMUP) {
        approveToAllowed.push(t2 - t0);
        approveCall.push(t1 - t0);
        addToAllowed.push(t4 - t3);
      }
    }
    ctx.log(
      `${approveToAllowed.length} approvals after ${WARMUP} warm-up, each followed by the agent's next request`,
    );
    return [
      summarise(
        "approval to the agent's next connection allowed",
        "ms",
        approveToAllowed,
        "lower",
        "p50 <= 100 ms",
      ),
      summarise("ApproveEgress call (answers once live)", "ms", approveCall, "lower"),
      summarise("same run: FirewallAddRules to the next connection allowed", "ms", addToAllowed, "lower"),
    ];
  } finally {
    await client.close();
    await cp.close();
    await world.close();
  }
}

const bench: Benchmark = {
  name: "firewall-approve",
  skip: () =>
    command("haproxy").check() ??
    (process.getuid?.() === 0 ? undefined : "needs root (HAProxy marks sessions)"),
  run,
};

export default bench;
