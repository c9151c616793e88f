// Agent bootstrap against a real private dockerd: createAgentContainer and removeAgentContainer
// from @clawker/adminclient, and the `clawker run` / `clawker rm` commands on top of them.
import assert from "node:assert/strict";
import { X509Certificate, createHash, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import type Docker from "dockerode";
import { importJWK, jwtVerify } from "jose";
import {
  AgentBootstrapError,
  createAgentContainer,
  readUstar,
  removeAgentContainer,
  type AgentContainerOptions,
  type UstarRecord,
} from "@clawker/adminclient";
import {
  BOOTSTRAP_DIR,
  BOOTSTRAP_FILES,
  FIREWALL_CA_ENV,
  FIREWALL_CA_FILE,
  LABELS,
  type AgentBootstrapConfig,
} from "@clawker/proto";
import { ExitCode, run, type Io } from "../src/index.js";
import {
  busyboxImage,
  command,
  demux,
  requires,
  root,
  startPrivateDocker,
  useTestTrust,
  type TestTrust,
} from "../../../test/harness/index.js";

const NETWORK = "clawker-agents";
const SUBNET = "10.213.0.0/24";
const GATEWAY = "10.213.0.1";
const CP_ADDR = `${GATEWAY}:7444`;
const TOKEN_ENDPOINT = `https://${GATEWAY}:4444/oauth2/token`;
const BUSYBOX_ENTRYPOINT = ["/bin/busybox"];

interface Captured extends Io {
  out(): string;
  err(): string;
}

function cliIo(dockerHost: string): Captured {
  let out = "";
  let err = "";
  return {
    stdout: { write: (s) => void (out += s) },
    stderr: { write: (s) => void (err += s) },
    env: { PATH: process.env["PATH"] ?? "", DOCKER_HOST: dockerHost },
    out: () => out,
    err: () => err,
  };
}

async function readArchive(docker: Docker, id: string, path: string): Promise<Map<string, UstarRecord>> {
  const stream = await docker.getContainer(id).getArchive({ path });
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  return new Map(readUstar(Buffer.concat(chunks)).map((r) => [r.name, r]));
}

async function containerNames(docker: Docker): Promise<string[]> {
  const list = await docker.listContainers({ all: true });
  return list.flatMap((c) => c.Names.map((n) => n.replace(/^\//, ""))).sort();
}

function baseOptions(trust: TestTrust, image: string): AgentContainerOptions {
  return {
    agent: "dev",
    project: "proj",
    image,
    entrypoint: BUSYBOX_ENTRYPOINT,
    cmd: ["sleep", "300"],
    network: NETWORK,
    trust: trust.set,
    controlPlaneAddr: CP_ADDR,
    tokenEndpoint: TOKEN_ENDPOINT,
    serverName: "localhost",
  };
}

void test("agent bootstrap with a real dockerd", async (t: TestContext) => {
  if (!requires(t, root, command("dockerd"), command("nsenter"), command("ip"))) return;
  const daemon = await startPrivateDocker(t);
  const docker = daemon.docker;
  const image = await busyboxImage(docker);
  const trust = await useTestTrust(t);
  await docker.createNetwork({
    Name: NETWORK,
    Internal: true,
    IPAM: { Config: [{ Subnet: SUBNET, Gateway: GATEWAY }] },
  });

  await t.test(
    "created, not started: labels, host config, and the five files as clawkerd reads them",
    async () => {
      const created = await createAgentContainer(docker, {
        ...baseOptions(trust, image),
        cgroupParent: "/clawker-test-agents",
        start: false,
      });
      assert.equal(created.name, "clawker.proj.dev");
      assert.equal(created.fullName, "proj.dev");
      assert.equal(created.started, false);
      assert.match(created.containerId, /^[0-9a-f]{64}$/);

      const info = await docker.getContainer(created.containerId).inspect();
      assert.equal(info.Name, "/clawker.proj.dev");
      assert.equal(info.State.Status, "created");
      assert.deepEqual(
        Object.fromEntries(Object.entries(info.Config.Labels).filter(([k]) => k.startsWith("dev.clawker."))),
        {
          [LABELS.managed]: "true",
          [LABELS.purpose]: "agent",
          [LABELS.agent]: "dev",
          [LABELS.project]: "proj",
        },
      );
      assert.deepEqual(info.HostConfig.CapDrop, ["NET_RAW"]);
      assert.equal(info.HostConfig.Init, true);
      assert.equal(info.HostConfig.Privileged, false);
      assert.equal(info.HostConfig.CapAdd ?? null, null);
      assert.equal(info.HostConfig.NetworkMode, NETWORK);
      assert.equal(info.HostConfig.CgroupParent, "/clawker-test-agents");
      assert.deepEqual(info.Config.Entrypoint, BUSYBOX_ENTRYPOINT);
      assert.deepEqual(info.Config.Cmd, ["sleep", "300"]);

      const files = await readArchive(docker, created.containerId, BOOTSTRAP_DIR);
      const dir = files.get("bootstrap/");
      assert.ok(dir, [...files.keys()].join(","));
      assert.equal(dir.mode & 0o7777, 0o500);
      assert.deepEqual([dir.uid, dir.gid], [0, 0]);
      const names = Object.values(BOOTSTRAP_FILES);
      assert.deepEqual(
        [...files.keys()].filter((n) => n !== "bootstrap/").sort(),
        names.map((n) => `bootstrap/${n}`).sort(),
      );
      for (const name of names) {
        const f = files.get(`bootstrap/${name}`)!;
        assert.equal(f.kind, "file", name);
        assert.equal(f.mode & 0o7777, 0o400, name);
        assert.deepEqual([f.uid, f.gid], [0, 0], name);
      }
      const parent = (await readArchive(docker, created.containerId, "/run/clawker")).get("clawker/");
      assert.equal(parent!.mode & 0o7777, 0o500);
      const content = (name: string): string => files.get(`bootstrap/${name}`)!.content.toString("utf8");

      assert.equal(content(BOOTSTRAP_FILES.ca), trust.set.ca.certPem);
      const leaf = new X509Certificate(content(BOOTSTRAP_FILES.cert));
      assert.ok(leaf.verify(new X509Certificate(trust.set.ca.certPem).publicKey), "leaf chains to the CA");
      assert.match(leaf.subject, /CN=clawker-clawkerd/);
      const sans = (leaf.subjectAltName ?? "").split(", ").sort();
      assert.deepEqual(sans, [
        `URI:urn:clawker:agent:proj.dev`,
        `URI:urn:clawker:container:${created.containerId}`,
      ]);
      assert.ok(leaf.checkPrivateKey(createPrivateKey(content(BOOTSTRAP_FILES.key))), "key is the leaf's");
      assert.equal(created.thumbprint, createHash("sha256").update(leaf.raw).digest("hex"));
      assert.equal(created.certNotAfter, new Date(leaf.validTo).toISOString());

      const publicKey = await importJWK(trust.set.signingKey.publicJwk, "ES256");
      const { payload, protectedHeader } = await jwtVerify(content(BOOTSTRAP_FILES.assertion), publicKey, {
        audience: TOKEN_ENDPOINT,
        issuer: "clawker-agent",
        subject: "clawker-agent",
        algorithms: ["ES256"],
      });
      assert.equal(protectedHeader.kid, trust.set.signingKey.kid);
      assert.equal(payload.exp! - payload.iat!, 600);
      assert.match(String(payload.jti), /^[0-9a-f-]{36}$/);

      const config = JSON.parse(content(BOOTSTRAP_FILES.config)) as AgentBootstrapConfig;
      assert.deepEqual(config, {
        agentName: "dev",
        project: "proj",
        controlPlaneAddr: CP_ADDR,
        tokenEndpoint: TOKEN_ENDPOINT,
        serverName: "localhost",
      });
      await docker.getContainer(created.containerId).remove({ force: true });
    },
  );

  await t.test(
    "started: docker-init is PID 1, NET_RAW is gone, the files are there from the first instruction",
    async () => {
      const script =
        "cat /proc/1/comm; grep CapEff /proc/self/status; " +
        "stat -c '%a %u %g %n' /run/clawker /run/clawker/bootstrap /run/clawker/bootstrap/*";
      const created = await createAgentContainer(docker, {
        ...baseOptions(trust, image),
        agent: "probe",
        project: "",
        cmd: ["sh", "-c", script],
      });
      assert.equal(created.name, "clawker.probe");
      const container = docker.getContainer(created.containerId);
      const exit = (await container.wait()) as { StatusCode: number };
      const logs = demux(await container.logs({ stdout: true, stderr: true, follow: false }));
      await container.remove({ force: true });
      assert.equal(exit.StatusCode, 0, logs.stderr);
      const lines = logs.stdout.trim().split("\n");
      assert.equal(lines[0], "docker-init");
      const capEff = BigInt(`0x${lines[1]!.split(/\s+/)[1]}`);
      const CAP_NET_RAW = 13n;
      assert.equal((capEff >> CAP_NET_RAW) & 1n, 0n, `CapEff ${lines[1]}`);
      assert.ok(capEff !== 0n, "other default capabilities remain");
      assert.deepEqual(lines.slice(2), [
        "500 0 0 /run/clawker",
        "500 0 0 /run/clawker/bootstrap",
        ...Object.values(BOOTSTRAP_FILES)
          .sort()
          .map((f) => `400 0 0 /run/clawker/bootstrap/${f}`),
      ]);
    },
  );

  await t.test("a failure after the create (no such network at start) leaves no container", async () => {
    const before = await containerNames(docker);
    await assert.rejects(
      createAgentContainer(docker, {
        ...baseOptions(trust, image),
        agent: "orphan",
        network: "no-such-network",
      }),
      (err) =>
        err instanceof AgentBootstrapError &&
        err.reason === "start_failed" &&
        err.leftoverContainerId === undefined,
    );
    assert.deepEqual(await containerNames(docker), before);
    await assert.rejects(
      createAgentContainer(docker, { ...baseOptions(trust, image), image: "no-such-image:1" }),
      (err) => err instanceof AgentBootstrapError && err.reason === "image_not_found",
    );
    assert.deepEqual(await containerNames(docker), before);
  });

  await t.test(
    "rm: stops and removes a managed agent; refuses unmanaged and mislabelled containers",
    async () => {
      const created = await createAgentContainer(docker, { ...baseOptions(trust, image), agent: "gone" });
      assert.equal((await docker.getContainer(created.containerId).inspect()).State.Running, true);
      const removed = await removeAgentContainer(docker, { agent: "gone", project: "proj" });
      assert.deepEqual(removed, {
        containerId: created.containerId,
        name: "clawker.proj.gone",
        wasRunning: true,
      });
      assert.ok(!(await containerNames(docker)).includes("clawker.proj.gone"));
      await assert.rejects(
        removeAgentContainer(docker, { agent: "gone", project: "proj" }),
        (err) => err instanceof AgentBootstrapError && err.reason === "not_found",
      );

      // Same name, but not ours: no labels; and managed labels naming another agent.
      await docker.createContainer({
        name: "clawker.intruder",
        Image: image,
        Entrypoint: BUSYBOX_ENTRYPOINT,
        Cmd: ["true"],
      });
      await docker.createContainer({
        name: "clawker.proj.liar",
        Image: image,
        Entrypoint: BUSYBOX_ENTRYPOINT,
        Cmd: ["true"],
        Labels: {
          [LABELS.managed]: "true",
          [LABELS.purpose]: "agent",
          [LABELS.agent]: "other",
          [LABELS.project]: "proj",
        },
      });
      for (const [agent, project] of [
        ["intruder", ""],
        ["liar", "proj"],
      ] as const) {
        await assert.rejects(
          removeAgentContainer(docker, { agent, project, force: true }),
          (err) => err instanceof AgentBootstrapError && err.reason === "not_managed",
        );
      }
      const names = await containerNames(docker);
      assert.ok(names.includes("clawker.intruder") && names.includes("clawker.proj.liar"), names.join(","));

      const c = cliIo(daemon.dockerHost);
      assert.equal(await run(["rm", "--agent", "intruder"], c), ExitCode.error);
      assert.match(c.err(), /not_managed: refusing to remove clawker\.intruder/);
      assert.ok((await containerNames(docker)).includes("clawker.intruder"));
    },
  );

  await t.test(
    "clawker run / rm: defaults from the network's gateway, CMD verbatim, exit codes",
    async () => {
      const env = cliIo(daemon.dockerHost);
      const args = [
        "run",
        "--agent",
        "cli1",
        "--project",
        "web",
        "--trust-dir",
        trust.trustDir,
        "--entrypoint",
        JSON.stringify(BUSYBOX_ENTRYPOINT),
        "-e",
        "FOO=bar",
        "--format",
        "json",
        image,
        "sh",
        "-c",
        "sleep 300",
        "--agent",
        "--format",
      ];
      assert.equal(await run(args, env), ExitCode.ok, env.err());
      const result = JSON.parse(env.out()) as Record<string, unknown>;
      assert.equal(result["name"], "clawker.web.cli1");
      assert.equal(result["started"], true);
      assert.equal(result["controlPlaneAddr"], CP_ADDR);
      assert.equal(result["tokenEndpoint"], TOKEN_ENDPOINT);
      const id = String(result["containerId"]);
      const info = await docker.getContainer(id).inspect();
      assert.deepEqual(info.Config.Cmd, ["sh", "-c", "sleep 300", "--agent", "--format"]);
      assert.ok(info.Config.Env.includes("FOO=bar"));
      assert.equal(info.State.Running, true);
      const files = await readArchive(docker, id, `${BOOTSTRAP_DIR}/${BOOTSTRAP_FILES.config}`);
      const config = JSON.parse(
        files.get(BOOTSTRAP_FILES.config)!.content.toString(),
      ) as AgentBootstrapConfig;
      assert.equal(config.controlPlaneAddr, CP_ADDR);
      assert.equal(config.tokenEndpoint, TOKEN_ENDPOINT);
      const leaf = new X509Certificate(
        (await readArchive(docker, id, `${BOOTSTRAP_DIR}/${BOOTSTRAP_FILES.cert}`)).get(BOOTSTRAP_FILES.cert)!
          .content,
      );
      assert.equal(result["thumbprint"], createHash("sha256").update(leaf.raw).digest("hex"));
      // No control plane answers here: no firewall CA, said on stderr, no trust settings.
      assert.equal(result["firewallCaFingerprint"], null);
      assert.match(env.err(), /warning: no firewall CA copied into the agent/);
      assert.ok(!info.Config.Env.some((e) => e.startsWith("NODE_EXTRA_CA_CERTS=")));

      // --firewall-ca FILE: the CA at FIREWALL_CA_FILE (0444) and the trust settings; a key is refused.
      const withCa = cliIo(daemon.dockerHost);
      const caFile = join(trust.trustDir, "ca.crt");
      const caArgs = ["run", "--agent", "cli2", "--trust-dir", trust.trustDir, "--firewall-ca", caFile];
      const rest = [
        "--entrypoint",
        JSON.stringify(BUSYBOX_ENTRYPOINT),
        "--format",
        "json",
        image,
        "sleep",
        "300",
      ];
      assert.equal(await run([...caArgs, ...rest], withCa), ExitCode.ok, withCa.err());
      const made = JSON.parse(withCa.out()) as Record<string, unknown>;
      const caPem = readFileSync(caFile, "utf8");
      assert.equal(
        made["firewallCaFingerprint"],
        new X509Certificate(caPem).fingerprint256.replaceAll(":", "").toLowerCase(),
      );
      const madeInfo = await docker.getContainer(String(made["containerId"])).inspect();
      for (const [k, v] of Object.entries(FIREWALL_CA_ENV))
        assert.ok(madeInfo.Config.Env.includes(`${k}=${v}`));
      const copied = (await readArchive(docker, madeInfo.Id, FIREWALL_CA_FILE)).get("firewall-ca.crt")!;
      assert.equal(copied.content.toString(), `${caPem.trim()}\n`);
      assert.equal(copied.mode & 0o777, 0o444);
      const keyed = cliIo(daemon.dockerHost);
      const keyArgs = ["run", "--agent", "cli3", "--trust-dir", trust.trustDir, "--firewall-ca"];
      assert.equal(await run([...keyArgs, join(trust.trustDir, "ca.key"), ...rest], keyed), ExitCode.usage);
      assert.match(keyed.err(), /exactly one PEM certificate \(never a key\)/);
      assert.doesNotMatch(keyed.err(), /PRIVATE KEY/);

      const again = cliIo(daemon.dockerHost);
      assert.equal(await run(args, again), ExitCode.exists, again.err());
      assert.match(again.err(), /name_conflict/);

      const bad = cliIo(daemon.dockerHost);
      const before = await containerNames(docker);
      assert.equal(
        await run(["run", "--agent", "no.dots", "--trust-dir", trust.trustDir, image], bad),
        ExitCode.usage,
      );
      assert.match(bad.err(), /invalid_argument: agent name "no\.dots"/);
      const noNet = cliIo(daemon.dockerHost);
      assert.equal(
        await run(
          ["run", "--agent", "x", "--network", "no-such-network", "--trust-dir", trust.trustDir, image],
          noNet,
        ),
        ExitCode.usage,
      );
      assert.match(noNet.err(), /no Docker network named no-such-network/);
      const startFails = cliIo(daemon.dockerHost);
      assert.equal(
        await run(
          [
            "run",
            "--agent",
            "x",
            "--network",
            "no-such-network",
            "--cp-addr",
            CP_ADDR,
            "--token-endpoint",
            TOKEN_ENDPOINT,
            "--trust-dir",
            trust.trustDir,
            "--entrypoint",
            "/bin/busybox",
            image,
            "true",
          ],
          startFails,
        ),
        ExitCode.error,
      );
      assert.match(startFails.err(), /start_failed: .*\(container removed\)/);
      assert.deepEqual(await containerNames(docker), before);

      const rm = cliIo(daemon.dockerHost);
      assert.equal(
        await run(["rm", "--agent", "cli1", "--project", "web", "--timeout", "5s", "--format", "json"], rm),
        ExitCode.ok,
        rm.err(),
      );
      assert.deepEqual(JSON.parse(rm.out()), { containerId: id, name: "clawker.web.cli1", wasRunning: true });
      const rmAgain = cliIo(daemon.dockerHost);
      assert.equal(await run(["rm", "--agent", "cli1", "--project", "web"], rmAgain), ExitCode.error);
      assert.match(rmAgain.err(), /not_found: no container named clawker\.web\.cli1/);
    },
  );

  await t.test(
    "clawker run: the control-plane container's address on clawker-agents is the default when `up --container` made one; flags override",
    async () => {
      // A container labelled as `controlplane up --container` labels it, at the fixed address the
      // CLI connects it with: the agent must dial it there, not the gateway (nothing listens there).
      const cpAddress = "10.213.0.2";
      const cp = await docker.createContainer({
        name: "clawker-controlplane",
        Image: image,
        Entrypoint: BUSYBOX_ENTRYPOINT,
        Cmd: ["sleep", "300"],
        Labels: { [LABELS.managed]: "true", [LABELS.purpose]: "controlplane" },
        HostConfig: { NetworkMode: NETWORK },
        NetworkingConfig: { EndpointsConfig: { [NETWORK]: { IPAMConfig: { IPv4Address: cpAddress } } } },
      });
      const common = ["--trust-dir", trust.trustDir, "--entrypoint", JSON.stringify(BUSYBOX_ENTRYPOINT)];
      const rest = ["--no-start", "--format", "json", image, "sleep", "300"];
      const made = async (agent: string, flags: string[] = []): Promise<Record<string, unknown>> => {
        const io = cliIo(daemon.dockerHost);
        assert.equal(
          await run(["run", "--agent", agent, ...common, ...flags, ...rest], io),
          ExitCode.ok,
          io.err(),
        );
        const result = JSON.parse(io.out()) as Record<string, unknown>;
        const files = await readArchive(
          docker,
          String(result["containerId"]),
          `${BOOTSTRAP_DIR}/${BOOTSTRAP_FILES.config}`,
        );
        const config = JSON.parse(
          files.get(BOOTSTRAP_FILES.config)!.content.toString(),
        ) as AgentBootstrapConfig;
        // What the agent will dial is what the CLI reported.
        assert.equal(config.controlPlaneAddr, result["controlPlaneAddr"]);
        assert.equal(config.tokenEndpoint, result["tokenEndpoint"]);
        return result;
      };
      // Created, not started: the address it was connected with counts.
      const stopped = await made("incp1");
      assert.equal(stopped["controlPlaneAddr"], `${cpAddress}:7444`);
      assert.equal(stopped["tokenEndpoint"], `https://${cpAddress}:4444/oauth2/token`);
      await cp.start();
      assert.equal((await made("incp2"))["controlPlaneAddr"], `${cpAddress}:7444`);
      // The flags still win, each on its own.
      const flagged = await made("incp3", ["--cp-addr", "10.213.0.9:9000"]);
      assert.equal(flagged["controlPlaneAddr"], "10.213.0.9:9000");
      assert.equal(flagged["tokenEndpoint"], `https://${cpAddress}:4444/oauth2/token`);
      const tokenFlag = await made("incp4", ["--token-endpoint", TOKEN_ENDPOINT]);
      assert.equal(tokenFlag["controlPlaneAddr"], `${cpAddress}:7444`);
      assert.equal(tokenFlag["tokenEndpoint"], TOKEN_ENDPOINT);
      // A container that only took the name (no labels) is not the control plane: the gateway.
      await cp.remove({ force: true });
      await docker.createContainer({
        name: "clawker-controlplane",
        Image: image,
        Entrypoint: BUSYBOX_ENTRYPOINT,
        Cmd: ["sleep", "300"],
        HostConfig: { NetworkMode: NETWORK },
        NetworkingConfig: { EndpointsConfig: { [NETWORK]: { IPAMConfig: { IPv4Address: cpAddress } } } },
      });
      assert.equal((await made("incp5"))["controlPlaneAddr"], CP_ADDR);
    },
  );
});
