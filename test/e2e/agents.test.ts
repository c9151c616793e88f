// End to end with real agents: a private dockerd, the agent image with our bundled clawkerd, the
// control plane inside the dockerd's network namespace, and the real `clawker` CLI. Two agents
// start, attest themselves and appear in `clawker controlplane agents`; a pipeline runs in one
// through the control plane's Session; impostors are refused; a restarted control plane keeps the
// registrations; and once the last agent stops the control plane drains itself and exits 0.
import assert from "node:assert/strict";
import { X509Certificate, createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import type Docker from "dockerode";
import { createAgentContainer, issueAgentLeaf, mintTrustSet, writeTrustSet } from "@clawker/adminclient";
import { BOOTSTRAP_DIR, BOOTSTRAP_FILES, LABELS } from "@clawker/proto";
import { agentImage } from "../harness/agent-image.js";
import { clawker, clawkerUntil, type CliResult } from "../harness/clawker-cli.js";
import { startControlPlane, type ControlPlane } from "../harness/controlplane.js";
import { startPrivateDocker } from "../harness/docker.js";
import { command, root, skipReason } from "../harness/preconditions.js";
import { waitFor } from "../harness/wait-for.js";

const SUBNET = "10.213.0.0/24";
const GATEWAY = "10.213.0.1";
const NETWORK = "clawker-agents";
const PROJECT = "e2e";
/** The names of the processes running in an agent, one per line (its image has no procps). */
const PS_COMMS = "cat /proc/[0-9]*/comm 2>/dev/null";

interface RunResult {
  readonly containerId: string;
  readonly thumbprint: string;
}

interface ListedAgent {
  readonly agentName?: string;
  readonly name?: string;
  readonly containerId: string;
  readonly certThumbprint?: string;
  readonly thumbprint?: string;
}

function json<T>(r: CliResult, what: string): T {
  assert.equal(r.code, 0, `${what} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

describe("agents end to end", { skip: skipReason(root, command("dockerd"), command("nsenter")) }, () => {
  test("attest, list, exec, refuse impostors, survive a restart, drain to zero", async (t) => {
    const docker = await startPrivateDocker(t);
    await docker.docker.createNetwork({
      Name: NETWORK,
      Driver: "bridge",
      Internal: true,
      CheckDuplicate: true,
      IPAM: { Config: [{ Subnet: SUBNET, Gateway: GATEWAY }] },
      Labels: { [LABELS.managed]: "true" },
    });
    const image = await agentImage(docker.docker);

    const dir = mkdtempSync(join(tmpdir(), "clawker-e2e-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const trustDir = join(dir, "trust");
    const trust = await mintTrustSet({ serverNames: [GATEWAY] });
    await writeTrustSet(trustDir, trust);
    const dataDir = join(dir, "data");
    const config = {
      listen: { agent: { host: GATEWAY } },
      auth: { publicHost: GATEWAY },
      docker: { host: docker.dockerHost },
      agents: { gracePeriodMs: 15_000 },
    };
    const startCp = (ports?: ControlPlane["ports"]) =>
      startControlPlane({
        netns: docker.netnsName,
        trustDir,
        trustSet: trust,
        dataDir,
        config,
        ...(ports === undefined ? {} : { ports }),
      });
    let cp = await startCp();
    t.after(() => cp.close());
    const first = cp;
    t.after(() => {
      // CLAWKER_E2E_LOGS=file keeps both daemons' logs for a post-mortem.
      const file = process.env["CLAWKER_E2E_LOGS"];
      const logs = cp === first ? first.logs : [...first.logs, ...cp.logs];
      if (file !== undefined) writeFileSync(file, logs.map((l) => JSON.stringify(l)).join("\n"));
    });

    const tokenEndpoint = `https://${GATEWAY}:${cp.ports.authPublic}/oauth2/token`;
    const env = { ...process.env, DOCKER_HOST: docker.dockerHost, CLAWKER_CP_TRUST_DIR: trustDir };
    const inNetns = { env, netns: docker.netnsName };
    const adminFlags = () => ["--admin", `127.0.0.1:${cp.ports.admin}`, "--token-endpoint", tokenEndpoint];
    const listAgents = async (): Promise<ListedAgent[]> => {
      const out = json<{ agents: ListedAgent[] } | ListedAgent[]>(
        await clawker(["controlplane", "agents", ...adminFlags(), "--format", "json"], inNetns),
        "controlplane agents",
      );
      return Array.isArray(out) ? out : out.agents;
    };
    const run = async (agent: string): Promise<RunResult> =>
      json<RunResult>(
        await clawker(
          [
            "run",
            "--agent",
            agent,
            "--project",
            PROJECT,
            "--network",
            NETWORK,
            "--cp-addr",
            `${GATEWAY}:${cp.ports.agent}`,
            "--token-endpoint",
            tokenEndpoint,
            "--format",
            "json",
            image,
            "sleep",
            "600",
          ],
          { env },
        ),
        `run ${agent}`,
      );

    // Two agents start and attest themselves; their rows carry their certificates' thumbprints.
    const alpha = await run("alpha");
    const beta = await run("beta");
    const listed = await waitFor(
      async () => {
        const agents = await listAgents();
        return agents.length === 2 ? agents : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: "both agents registered" },
    );
    const byContainer = new Map(listed.map((a) => [a.containerId, a]));
    for (const started of [alpha, beta]) {
      const row = byContainer.get(started.containerId);
      assert.ok(row, `container ${started.containerId} is registered`);
      assert.equal(row.certThumbprint ?? row.thumbprint, started.thumbprint);
    }
    await assertThumbprintInContainer(docker.docker, alpha);

    // A pipeline runs in alpha through the control plane's Session; its output streams back.
    await waitFor(
      async () => {
        const r = await clawker(
          ["exec", ...adminFlags(), "--agent", "alpha", "--project", PROJECT, "--sh", "seq 1 5 | tr 3 X"],
          inNetns,
        );
        return r.code === 0 && r.stdout === "1\n2\nX\n4\n5\n" ? r : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 500, what: "a pipeline through the Session" },
    );

    // A reader that goes away (`clawker exec ... | head`): clawker exits 141 without a stack trace,
    // and the endless command in the agent ends with the call (the next exec finds no `yes`).
    const headed = await clawkerUntil(
      ["exec", ...adminFlags(), "--agent", "alpha", "--project", PROJECT, "--", "yes", "clawker"],
      64 << 10,
      inNetns,
    );
    assert.equal(headed.code, 141, `exit ${headed.code}; stderr: ${headed.stderr}`);
    assert.ok(headed.stdout.startsWith("clawker\nclawker\n"));
    assert.doesNotMatch(headed.stderr, /EPIPE|\n\s+at /);
    await waitFor(
      async () => {
        const ps = await clawker(
          ["exec", ...adminFlags(), "--agent", "alpha", "--project", PROJECT, "--sh", PS_COMMS],
          inNetns,
        );
        const names = ps.stdout.split("\n");
        // The listing names itself (cat), so an empty one cannot pass for "no yes".
        return ps.code === 0 && names.includes("cat") && !names.includes("yes") ? ps : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 250, what: "`yes` gone from the agent after its reader went away" },
    );

    // Impostors: labels that do not match the certificate, and a replayed (used) assertion.
    const mislabeled = await createAgentContainer(docker.docker, {
      image,
      agent: "gamma",
      project: PROJECT,
      network: NETWORK,
      trust,
      controlPlaneAddr: `${GATEWAY}:${cp.ports.agent}`,
      tokenEndpoint,
      serverName: "localhost",
      cmd: ["sleep", "600"],
      start: false,
    });
    const foreign = await issueAgentLeaf(trust.ca, {
      agentName: `${PROJECT}.alpha`,
      containerId: mislabeled.containerId,
    });
    await replaceBootstrapFiles(docker.docker, mislabeled.containerId, {
      [BOOTSTRAP_FILES.cert]: foreign.certPem,
      [BOOTSTRAP_FILES.key]: foreign.keyPem,
    });
    await docker.docker.getContainer(mislabeled.containerId).start();
    const replayed = await createAgentContainer(docker.docker, {
      image,
      agent: "delta",
      project: PROJECT,
      network: NETWORK,
      trust,
      controlPlaneAddr: `${GATEWAY}:${cp.ports.agent}`,
      tokenEndpoint,
      serverName: "localhost",
      cmd: ["sleep", "600"],
      start: false,
    });
    await replaceBootstrapFiles(docker.docker, replayed.containerId, {
      [BOOTSTRAP_FILES.assertion]: await readBootstrapFile(
        docker.docker,
        alpha.containerId,
        BOOTSTRAP_FILES.assertion,
      ),
    });
    await docker.docker.getContainer(replayed.containerId).start();
    // The gate refuses the mislabeled one (its labels name gamma, its certificate alpha); the
    // replayed assertion never yields a token, so that agent reports a failed registration.
    const denied = await waitFor(() => cp.logs.find((l) => l["event"] === "register_denied"), {
      timeoutMs: 30_000,
      intervalMs: 250,
      what: "the identity gate to refuse the mislabeled agent",
    });
    assert.equal(denied["reason"], "agent_name_mismatch", JSON.stringify(denied));
    await waitFor(
      () =>
        cp.logs.some((l) => l["event"] === "register_failed" && l["containerId"] === replayed.containerId),
      { timeoutMs: 30_000, intervalMs: 250, what: "the replayed assertion to fail registration" },
    );
    const afterImpostors = await listAgents();
    assert.deepEqual(
      afterImpostors.map((a) => a.containerId).sort(),
      [alpha.containerId, beta.containerId].sort(),
      "neither impostor is registered",
    );
    await docker.docker.getContainer(mislabeled.containerId).remove({ force: true });
    await docker.docker.getContainer(replayed.containerId).remove({ force: true });

    // A restarted control plane finds the registrations and re-dials the agents.
    const ports = cp.ports;
    assert.equal(await cp.close(), 0);
    cp = await startCp(ports);
    assert.deepEqual(
      (await listAgents()).map((a) => a.containerId).sort(),
      [alpha.containerId, beta.containerId].sort(),
      "nothing lost across a restart",
    );
    await waitFor(
      async () => {
        const r = await clawker(
          ["exec", ...adminFlags(), "--agent", "beta", "--project", PROJECT, "--", "echo", "again"],
          inNetns,
        );
        return r.code === 0 && r.stdout === "again\n" ? r : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 500, what: "a command after the re-dial" },
    );

    // The last agent stops: the control plane drains itself and exits 0.
    for (const name of ["alpha", "beta"]) {
      const r = await clawker(["rm", "--agent", name, "--project", PROJECT, "--force"], { env });
      assert.equal(r.code, 0, r.stderr);
    }
    assert.equal(await cp.exited, 0);
    assert.ok(cp.logs.some((l) => l["event"] === "drain" && l["cause"] === "drained_to_zero"));
  });
});

async function assertThumbprintInContainer(docker: Docker, agent: RunResult): Promise<void> {
  const pem = await readBootstrapFile(docker, agent.containerId, BOOTSTRAP_FILES.cert);
  const der = new X509Certificate(pem).raw;
  assert.equal(createHash("sha256").update(der).digest("hex"), agent.thumbprint);
}

async function readBootstrapFile(docker: Docker, containerId: string, name: string): Promise<string> {
  const { readUstar } = await import("@clawker/adminclient");
  const stream = await docker.getContainer(containerId).getArchive({ path: `${BOOTSTRAP_DIR}/${name}` });
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  const entries = readUstar(Buffer.concat(chunks));
  const file = entries.find((e) => e.name.endsWith(name));
  assert.ok(file, `${name} in the archive`);
  return file.content.toString("utf8");
}

async function replaceBootstrapFiles(
  docker: Docker,
  containerId: string,
  files: Record<string, string>,
): Promise<void> {
  const { writeUstar } = await import("@clawker/adminclient");
  const tar = writeUstar(
    Object.entries(files).map(([name, content]) => ({
      kind: "file" as const,
      name,
      content,
      mode: 0o400,
      uid: 0,
      gid: 0,
    })),
  );
  await docker.getContainer(containerId).putArchive(tar, { path: BOOTSTRAP_DIR });
}
