// The host deployment's gateway, end to end: the control plane listens for agents on their
// network's gateway (listen.agent.host and auth.publicHost), as a daemon on the host does. Agents
// must reach exactly those two ports of the gateway (registration) and nothing else of the host:
// a service bound to 0.0.0.0 on another port of the gateway is refused by the kernel's steering,
// TCP and UDP, before FirewallInit, while the stack is up and after FirewallRemove. Real daemon in
// a private dockerd's network namespace, real eBPF manager, real HAProxy, agents with the real
// clawkerd made as `clawker run` makes them. Needs root, cgroup2, bpffs, dockerd and haproxy:
// skipped with the reason on a laptop, failed under CI.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { X509Certificate, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import {
  agentCgroupParent,
  createAgentContainer,
  createCa,
  mintTrustSet,
  writeTrustSet,
} from "@clawker/adminclient";
import { FIREWALL_CA_FILE } from "@clawker/proto";
import { bin, buildOnce, ensureBpffs } from "../../packages/ebpf-manager/test/fixture.js";
import { CLAWKERD_IN_IMAGE } from "../harness/agent-image.js";
import { removeCgroupParent } from "../harness/cgroups.js";
import { clawker, type CliResult } from "../harness/clawker-cli.js";
import { demux } from "../harness/containers.js";
import { startControlPlane, type ControlPlane } from "../harness/controlplane.js";
import { PrivateDocker } from "../harness/docker.js";
import { nodeImage, REPO_ROOT } from "../harness/images.js";
import { NetnsProcess } from "../harness/netns.js";
import { bpffs, cgroup2, cgroup2Mount, command, requires, root } from "../harness/preconditions.js";
import { waitFor } from "../harness/wait-for.js";

const run = promisify(execFile);

const NETWORK = "clawker-agents";
const SUBNET = "10.203.70.0/24";
const GATEWAY = "10.203.70.1";
/** The host service: bound to 0.0.0.0 in the dockerd's namespace, so it answers on the gateway. */
const HOST_PORT = 9099;
const FIXTURES = join(REPO_ROOT, "test/e2e/fixtures");

type Answer = Record<string, unknown>;

/** One probe in an agent (`fixtures/egress-probe.js`); its first JSON line. */
async function probe(docker: PrivateDocker, id: string, args: string[]): Promise<Answer> {
  const exec = await docker.docker.getContainer(id).exec({
    Cmd: ["node", "/opt/egress/probe.js", ...args],
    AttachStdout: true,
    AttachStderr: true,
  });
  const stream = await exec.start({ hijack: true, stdin: false });
  const chunks: Buffer[] = [];
  stream.on("data", (d: Buffer) => chunks.push(d));
  await new Promise((resolve) => stream.on("end", resolve));
  const { stdout, stderr } = demux(Buffer.concat(chunks));
  const line = stdout.split("\n").find((l) => l.startsWith("{"));
  assert.ok(line !== undefined, `probe ${args.join(" ")} answered nothing: ${stdout} ${stderr}`);
  return JSON.parse(line) as Answer;
}

/** Refused by an answer (a reset, a close, EPERM), not by running out of time. */
const refusedPromptly = (a: Answer): boolean =>
  a["echo"] !== true && a["status"] === undefined && a["error"] !== "TIMEOUT";

// A TCP and UDP echo on 0.0.0.0 that logs every connection and datagram it gets.
const HOST_SERVICE = `
const net = require("node:net"), dgram = require("node:dgram");
net.createServer((s) => { console.log("tcp"); s.pipe(s); }).listen(${HOST_PORT}, "0.0.0.0", () => {
  const u = dgram.createSocket("udp4");
  u.on("message", (m, r) => { console.log("udp"); u.send(m, r.port, r.address); });
  u.bind(${HOST_PORT}, "0.0.0.0", () => console.log("ready"));
});`;

void test(
  "the gateway passes only the control plane's agent-facing ports (host deployment)",
  { timeout: 420_000 },
  async (t) => {
    ensureBpffs();
    if (!requires(t, root, cgroup2, bpffs, command("dockerd"), command("nsenter"), command("haproxy")))
      return;
    await buildOnce();
    const name = `clawker-g${process.pid}-${randomBytes(3).toString("hex")}`;
    const pinDir = `/sys/fs/bpf/${name}`;
    const cpCgroup = join(cgroup2Mount()!, `${name}-cp`);
    mkdirSync(cpCgroup);
    const dir = mkdtempSync(join(tmpdir(), "fw-gw-e2e-"));
    const docker = new PrivateDocker();
    const deferred: Array<() => unknown> = [];
    t.after(async () => {
      for (const fn of deferred.reverse()) await Promise.resolve(fn()).catch(() => undefined);
      await docker.close();
      if (existsSync(pinDir))
        await run(bin.manager, ["flush-all", "--pin-dir", pinDir]).catch(() => undefined);
      await waitFor(() => removeCgroupParent(name), { what: "agent cgroups removed", timeoutMs: 10_000 });
      await waitFor(() => (rmdirSync(cpCgroup), true), { what: "daemon cgroup removed", timeoutMs: 10_000 });
      rmSync(dir, { recursive: true, force: true });
    });
    await docker.start();
    // Not internal: the gateway is a host address either way; the test must see the firewall stop it.
    await docker.docker.createNetwork({
      Name: NETWORK,
      Driver: "bridge",
      IPAM: { Config: [{ Subnet: SUBNET, Gateway: GATEWAY }] },
    });
    const hostService = new NetnsProcess(docker, process.execPath, ["-e", HOST_SERVICE]);
    await hostService.start();
    deferred.push(() => hostService.close());
    await hostService.waitForOutput(/ready/);

    await run("npm", ["run", "--silent", "bundle", "-w", "@clawker/clawkerd"], { cwd: REPO_ROOT });
    const image = await nodeImage(docker.docker, {
      repo: "clawker-test/agent-egress",
      extra: [
        {
          kind: "file",
          path: CLAWKERD_IN_IMAGE,
          source: join(REPO_ROOT, "packages/clawkerd/.output/clawkerd.mjs"),
          mode: 0o644,
        },
        { kind: "file", path: "/opt/egress/probe.js", source: join(FIXTURES, "egress-probe.js") },
        // The probe reads a CA for its TLS ops; this test makes none.
        {
          kind: "file",
          path: "/opt/egress/ca.crt",
          content: (await createCa({ commonName: "unused" })).certPem,
        },
      ],
    });

    const trustDir = join(dir, "trust");
    const trust = await mintTrustSet({ serverNames: [GATEWAY] });
    await writeTrustSet(trustDir, trust);
    const cp: ControlPlane = await startControlPlane({
      netns: docker.netnsName,
      launcher: ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cpCgroup],
      trustDir,
      trustSet: trust,
      config: {
        docker: { host: docker.dockerHost },
        agents: { drainToZero: false },
        // What a host deployment does: agents reach the control plane on their gateway.
        listen: { agent: { host: GATEWAY } },
        auth: { publicHost: GATEWAY },
        ebpf: { enabled: true, manager: bin.manager, pinDir, proxyCgroup: cpCgroup, cgroupParent: name },
        firewall: { network: NETWORK, resolvers: [{ address: "127.0.0.1", port: 53 }] },
      },
    });
    deferred.push(() => cp.close());
    deferred.push(() => {
      const file = process.env["CLAWKER_E2E_LOGS"];
      if (file !== undefined) writeFileSync(file, cp.logs.map((l) => JSON.stringify(l)).join("\n"));
    });
    // The CLI runs inside the dockerd's netns: the token endpoint is on the gateway there.
    const tokenEndpoint = `https://${GATEWAY}:${cp.ports.authPublic}/oauth2/token`;
    const cli = async (...args: string[]): Promise<CliResult> => {
      const r = await clawker(
        [...args, "--admin", `127.0.0.1:${cp.ports.admin}`, "--token-endpoint", tokenEndpoint],
        { env: { ...process.env, CLAWKER_CP_TRUST_DIR: trustDir }, netns: docker.netnsName },
      );
      assert.equal(r.code, 0, `clawker ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
      return r;
    };
    const listed = async (): Promise<string[]> => {
      const out = JSON.parse((await cli("controlplane", "agents", "--format", "json")).stdout) as
        { agents: { containerId: string }[] } | { containerId: string }[];
      return (Array.isArray(out) ? out : out.agents).map((a) => a.containerId);
    };

    const cgroupParent = await agentCgroupParent(docker.docker, name);
    const agent = async (agentName: string): Promise<string> =>
      (
        await createAgentContainer(docker.docker, {
          image,
          agent: agentName,
          project: "gw",
          network: NETWORK,
          trust,
          controlPlaneAddr: `${GATEWAY}:${cp.ports.agent}`,
          tokenEndpoint,
          serverName: "localhost",
          cmd: ["sleep", "600"],
          cgroupParent,
        })
      ).containerId;
    const registered = (id: string, what: string): Promise<unknown> =>
      waitFor(async () => (await listed()).includes(id), {
        what,
        timeoutMs: 60_000,
        intervalMs: 250,
      });
    /** The host service is refused over TCP and UDP, and never saw a connection or a datagram. */
    const hostRefused = async (id: string): Promise<void> => {
      const tcp = await probe(docker, id, ["echo", GATEWAY, String(HOST_PORT)]);
      assert.ok(refusedPromptly(tcp), `TCP to the gateway's ${HOST_PORT}: ${JSON.stringify(tcp)}`);
      const udp = await probe(docker, id, ["udp", GATEWAY, String(HOST_PORT)]);
      assert.equal(udp["error"], "EPERM", `UDP to the gateway's ${HOST_PORT}: ${JSON.stringify(udp)}`);
      assert.doesNotMatch(hostService.stdout, /tcp|udp/, "the host service was never reached");
    };

    const early = await agent("early");
    await t.test(
      "before FirewallInit: an agent registers on the gateway, the host service is refused",
      async () => {
        await registered(early, "the agent started before FirewallInit registered");
        await hostRefused(early);
      },
    );

    await cli("firewall", "up");
    await t.test("with the stack up: a new agent registers, the host service is refused", async () => {
      const late = await agent("late");
      await registered(late, "the agent started after FirewallInit registered");
      await hostRefused(late);
      await hostRefused(early);
      const up = cp.logs.find((l) => l["event"] === "gateway_ports_pass");
      assert.deepEqual(
        up?.["ports"],
        [cp.ports.agent, cp.ports.authPublic].sort((a, b) => a - b),
      );
    });

    await t.test(
      "a rotated interception CA reaches a running agent: a process started after the rotation verifies an intercepted name",
      async () => {
        // A path rule: the name is intercepted, the proxy presents a leaf of the interception CA.
        await cli("firewall", "add", "paths.example.test", "--path", "/x", "--action", "allow");
        // Made by `clawker run`, which copies the CA in and tells the agent's clients to trust it.
        const ran = await clawker(
          [
            "run",
            "--agent",
            "trusting",
            "--project",
            "gw",
            "--network",
            NETWORK,
            "--cgroup-parent",
            cgroupParent,
            "--cp-addr",
            `${GATEWAY}:${cp.ports.agent}`,
            "--token-endpoint",
            tokenEndpoint,
            "--admin",
            `127.0.0.1:${cp.ports.admin}`,
            "--format",
            "json",
            image,
            "sleep",
            "600",
          ],
          {
            env: {
              ...process.env,
              DOCKER_HOST: docker.dockerHost,
              CLAWKER_CP_TRUST_DIR: trustDir,
              CLAWKER_TOKEN_ENDPOINT: tokenEndpoint,
            },
            netns: docker.netnsName,
          },
        );
        assert.equal(ran.code, 0, ran.stderr);
        const made = JSON.parse(ran.stdout) as { containerId: string; firewallCaFingerprint: string | null };
        const id = made.containerId;
        assert.notEqual(made.firewallCaFingerprint, null);
        await registered(id, "the trusting agent registered");
        const pushes = (event: string): string[][] =>
          cp.logs
            .filter((l) => l["event"] === event && l["containerId"] === id)
            .map((l) => l["fingerprints"] as string[]);
        // Its link is ready (its Session booted): the control plane checked the CA it holds.
        await waitFor(() => pushes("ca_held").length > 0, {
          what: "the agent's ready link",
          timeoutMs: 30_000,
        });
        // Any address: the kernel steers port 443 to the proxy, which intercepts by SNI.
        const verify = (): Promise<Answer> =>
          probe(docker, id, ["verify", "198.51.100.7", "443", "paths.example.test"]);
        const trusted = { authorized: true, issuer: "clawker firewall interception CA" };
        assert.deepEqual(await verify(), trusted, "before the rotation");
        const held = async (): Promise<string[]> => {
          const text = String((await probe(docker, id, ["read", FIREWALL_CA_FILE]))["text"]);
          return (text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []).map((pem) =>
            new X509Certificate(pem).fingerprint256.replaceAll(":", "").toLowerCase(),
          );
        };
        assert.deepEqual(await held(), [made.firewallCaFingerprint]);

        await cli("firewall", "rotate-ca");
        // The new CA alone once the proxy presents its certificates (the old one is dropped then).
        const after = await waitFor(
          async () => {
            const now = await held();
            return now.length === 1 && now[0] !== made.firewallCaFingerprint ? now : undefined;
          },
          { what: "the agent's firewall CA file to hold the new CA alone", timeoutMs: 30_000 },
        );
        assert.equal(after.length, 1);
        assert.deepEqual(await verify(), trusted, "a process started after the rotation");
        // Over the control plane's Session channel: both CAs while the proxy still presented the
        // old one's certificates, then the new one alone.
        assert.deepEqual(pushes("ca_installed"), [[after[0], made.firewallCaFingerprint], after]);
      },
    );

    await t.test("after FirewallRemove the gateway's other ports stay refused", async () => {
      await cli("firewall", "down");
      await hostRefused(early);
    });
  },
);
