// The egress firewall end to end, adversarially: the real daemon (inside a private dockerd's
// network namespace), the real eBPF manager on the real kernel, the real HAProxy and DNS gate,
// agent containers created the way `clawker run` creates them (adminclient's createAgentContainer,
// under the control plane's cgroup parent, NET_RAW dropped; one by the real `clawker run` process,
// with clawkerd and the firewall CA), and upstream servers (HTTPS with a test CA, HTTP, TCP and
// UDP echoes, and a trap DNS server on 53 that the agents must never reach) in a netns of their
// own that an agent's direct connection would reach. Every attempt is made from inside an agent,
// as root unless said otherwise, and must end in an answer, never a hang.
// DNS: the kernel steers every port-53 packet to the DNS gate, which forwards allowed names to a
// dnsmasq in the dockerd's netns (every *.example.test is the upstream; HAProxy resolves through
// it too). TLS and HTTP tries dial the upstream's address with the name as SNI/Host (the
// catch-all listeners decide by name); opaque TCP and UDP resolve through the gate first, since
// the kernel routes them by the address -> rule identity the gate recorded. Needs root, cgroup2,
// bpffs, dockerd, haproxy and dnsmasq: skipped with the reason on a laptop, failed under CI.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import {
  agentCgroupParent,
  createAgentContainer,
  createCa,
  issueLeaf,
  openAdminClient,
  type AdminClient,
} from "@clawker/adminclient";
import { admin, FIREWALL_CA_FILE, CA_BUNDLE_FILE } from "@clawker/proto";
import { bin, buildOnce, ensureBpffs } from "../../packages/ebpf-manager/test/fixture.js";
import { agentImage } from "../harness/agent-image.js";
import { clawker } from "../harness/clawker-cli.js";
import { helperPid, processGroup, startControlPlane, type ControlPlane } from "../harness/controlplane.js";
import { removeCgroupParent } from "../harness/cgroups.js";
import { demux } from "../harness/containers.js";
import { PrivateDocker } from "../harness/docker.js";
import { REPO_ROOT } from "../harness/images.js";
import { addNetns, deleteNetns, NetnsProcess } from "../harness/netns.js";
import { forwardIntoNetns } from "../harness/netns-forward.js";
import { bpffs, cgroup2, cgroup2Mount, command, requires, root } from "../harness/preconditions.js";
import { waitFor } from "../harness/wait-for.js";

const run = promisify(execFile);

const NETWORK = "clawker-agents";
const SUBNET = "10.203.50.0/24";
const GATEWAY = "10.203.50.1";
/** The upstream netns's address, and the dockerd netns's end of the veth to it. */
const UPSTREAM = "10.203.60.10";
const UPSTREAM_GATEWAY = "10.203.60.1";
/** dnsmasq inside the netns: every *.example.test is the upstream. */
const DNS_PORT = 5353;
/** A public-looking resolver address, routed to the upstream netns (where the trap DNS answers). */
const PUBLIC_DNS = "198.51.100.53";
/** What the trap DNS server (fixtures/egress-upstream.js) answers for every name. */
const DNS_TRAP = "198.51.100.99";
const NAMES = [
  "api.example.test",
  "other.example.test",
  "scoped.example.test",
  "paths.example.test",
  "tcp.example.test",
  "udp.example.test",
];
const INTERCEPTION_CA_CN = "clawker firewall interception CA";
const UPSTREAM_CA_CN = "firewall e2e upstream CA";
const FIXTURES = join(REPO_ROOT, "test/e2e/fixtures");

type Answer = Record<string, unknown>;

/** One probe in an agent (`fixtures/egress-probe.js`); its first JSON line. */
async function probe(
  docker: PrivateDocker,
  id: string,
  args: string[],
  user?: string,
  nodeArgs: readonly string[] = [],
): Promise<Answer> {
  const exec = await docker.docker.getContainer(id).exec({
    Cmd: ["node", ...nodeArgs, "/opt/egress/probe.js", ...args],
    AttachStdout: true,
    AttachStderr: true,
    ...(user === undefined ? {} : { User: user }),
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

/** A probe left running in an agent; `lines` grows as it reports (e.g. `{open}`, then `{closed}`). */
async function streamProbe(docker: PrivateDocker, id: string, args: string[]): Promise<{ lines: Answer[] }> {
  const exec = await docker.docker.getContainer(id).exec({
    Cmd: ["node", "/opt/egress/probe.js", ...args],
    AttachStdout: true,
    AttachStderr: true,
    Tty: true,
  });
  const stream = await exec.start({ hijack: true, stdin: false, Tty: true });
  const held = { lines: [] as Answer[] };
  let text = "";
  stream.on("data", (d: Buffer) => {
    text += d.toString("utf8");
    held.lines = text
      .split(/\r?\n/)
      .filter((l) => l.startsWith("{") && l.endsWith("}"))
      .map((l) => JSON.parse(l) as Answer);
  });
  return held;
}

/** The proxy's TLS denial: an `unrecognized_name` alert (TLS alert 112). */
const refusedTls = (a: Answer): void =>
  assert.match(String(a["message"]), /unrecognized name/, JSON.stringify(a));
/** Refused by an answer (an alert, a reset, a close), not by running out of time. */
const refusedPromptly = (a: Answer): boolean =>
  a["echo"] !== true && a["status"] === undefined && a["error"] !== "TIMEOUT";
/** The proxy's readable denial: 403 with the JSON body, for `reason`. */
const denied = (a: Answer, reason: string): void => {
  assert.equal(a["status"], 403, JSON.stringify(a));
  const json = a["json"] as Record<string, unknown> | undefined;
  assert.equal(json?.["error"], "egress_denied", JSON.stringify(a));
  assert.equal(json?.["reason"], reason, JSON.stringify(a));
};

void test(
  "egress firewall end to end: agents steered by the kernel to the proxy",
  { timeout: 300_000 },
  async (t) => {
    ensureBpffs();
    if (
      !requires(
        t,
        root,
        cgroup2,
        bpffs,
        command("dockerd"),
        command("nsenter"),
        command("ip"),
        command("haproxy"),
        command("dnsmasq"),
      )
    )
      return;
    await buildOnce();
    const name = `clawker-f${process.pid}-${randomBytes(3).toString("hex")}`;
    const pinDir = `/sys/fs/bpf/${name}`;
    // The daemon (and HAProxy, its child) run in a cgroup of their own: the manager answers
    // SO_ORIGINAL_DST there, and nowhere else on the machine.
    const cpCgroup = join(cgroup2Mount()!, `${name}-cp`);
    mkdirSync(cpCgroup);
    const dir = mkdtempSync(join(tmpdir(), "fw-e2e-"));
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
    // Not internal: Docker would drop an agent's direct connections itself, and the test must see
    // the firewall (not Docker) stop them.
    await docker.docker.createNetwork({
      Name: NETWORK,
      Driver: "bridge",
      IPAM: { Config: [{ Subnet: SUBNET, Gateway: GATEWAY }] },
    });

    // The upstream world: servers in a netns of their own behind a veth from the dockerd's netns,
    // so an agent's direct connection would be routed there (the agents' network is not internal):
    // only the firewall keeps it from arriving.
    const ca = await createCa({ commonName: "firewall e2e upstream CA" });
    const certs = join(dir, "certs");
    mkdirSync(certs);
    for (const n of NAMES) {
      const leaf = await issueLeaf(ca, { commonName: n, dnsNames: [n], usage: "server" });
      writeFileSync(join(certs, `${n}.crt`), leaf.certPem);
      writeFileSync(join(certs, `${n}.key`), leaf.keyPem);
    }
    const upNetns = `${docker.netnsName}-up`;
    await addNetns(upNetns);
    deferred.unshift(() => deleteNetns(upNetns));
    for (const args of [
      [
        "-n",
        docker.netnsName,
        "link",
        "add",
        "fwe2e0",
        "type",
        "veth",
        "peer",
        "name",
        "fwe2e1",
        "netns",
        upNetns,
      ],
      ["-n", docker.netnsName, "addr", "add", `${UPSTREAM_GATEWAY}/24`, "dev", "fwe2e0"],
      ["-n", docker.netnsName, "link", "set", "fwe2e0", "up"],
      ["-n", upNetns, "addr", "add", `${UPSTREAM}/24`, "dev", "fwe2e1"],
      ["-n", upNetns, "link", "set", "fwe2e1", "up"],
      ["-n", upNetns, "route", "add", "default", "via", UPSTREAM_GATEWAY],
      // The public-looking resolver lives in the upstream netns too: a query the kernel failed to
      // steer would reach the trap there.
      ["-n", upNetns, "addr", "add", `${PUBLIC_DNS}/32`, "dev", "fwe2e1"],
      ["-n", docker.netnsName, "route", "add", `${PUBLIC_DNS}/32`, "via", UPSTREAM],
    ]) {
      await run("ip", args);
    }
    const upstream = new NetnsProcess(upNetns, process.execPath, [
      join(FIXTURES, "egress-upstream.js"),
      certs,
      UPSTREAM,
      PUBLIC_DNS,
    ]);
    await upstream.start();
    deferred.push(() => upstream.close());
    await upstream.waitForOutput(/ready/);
    // Node 24 and clawkerd (the entrypoint `clawker run` gives), plus the probe.
    const image = await agentImage(docker.docker, {
      repo: "clawker-test/egress",
      extra: [
        { kind: "file", path: "/opt/egress/probe.js", source: join(FIXTURES, "egress-probe.js") },
        { kind: "file", path: "/opt/egress/ca.crt", content: ca.certPem },
      ],
    });
    // HAProxy's upstream resolver: every *.example.test is the upstream.
    const dns = new NetnsProcess(docker, "dnsmasq", [
      "--keep-in-foreground",
      "--no-resolv",
      "--no-hosts",
      "--bind-interfaces",
      "--listen-address=127.0.0.1",
      `--port=${DNS_PORT}`,
      `--address=/example.test/${UPSTREAM}`,
      "--user=root",
      "--pid-file",
    ]);
    await dns.start();
    deferred.push(() => dns.close());
    const upstreamCaFile = join(dir, "upstream-ca.pem");
    writeFileSync(upstreamCaFile, ca.certPem);

    // The control plane inside the netns, in its own cgroup; the eBPF enforcement on.
    const cp: ControlPlane = await startControlPlane({
      netns: docker.netnsName,
      launcher: ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cpCgroup],
      config: {
        docker: { host: docker.dockerHost },
        agents: { drainToZero: false },
        // Bound on every address, so only the kernel's steering keeps agents from reaching them.
        listen: { admin: { host: "0.0.0.0" }, health: { host: "0.0.0.0" } },
        ebpf: { enabled: true, manager: bin.manager, pinDir, proxyCgroup: cpCgroup, cgroupParent: name },
        firewall: {
          network: NETWORK,
          resolvers: [{ address: "127.0.0.1", port: DNS_PORT }],
          proxy: { upstreamCaFile },
        },
      },
    });
    deferred.push(() => cp.close());
    // CLAWKER_E2E_LOGS=file keeps the daemon's log (HAProxy's decisions included) for a post-mortem.
    deferred.push(() => {
      const file = process.env["CLAWKER_E2E_LOGS"];
      if (file !== undefined) writeFileSync(file, cp.logs.map((l) => JSON.stringify(l)).join("\n"));
    });
    const forward = await forwardIntoNetns(docker, [cp.ports.admin, cp.ports.authPublic], dir);
    deferred.push(() => forward.close());
    const client: AdminClient = openAdminClient({
      trust: cp.trust!,
      target: `127.0.0.1:${cp.ports.admin}`,
      tokenEndpoint: cp.tokenEndpoint,
    });
    deferred.push(() => client.close());

    // Agents as `clawker run` makes them; their command is a sleep (no clawkerd: egress is the test).
    const cgroupParent = await agentCgroupParent(docker.docker, name);
    const agent = async (agentName: string, project: string): Promise<string> =>
      (
        await createAgentContainer(docker.docker, {
          image,
          agent: agentName,
          project,
          network: NETWORK,
          trust: cp.trust!,
          controlPlaneAddr: `${GATEWAY}:${cp.ports.agent}`,
          tokenEndpoint: `https://${GATEWAY}:${cp.ports.authPublic}/oauth2/token`,
          serverName: "localhost",
          entrypoint: ["sleep"],
          cmd: ["3600"],
          cgroupParent,
        })
      ).containerId;
    const a1 = await agent("one", "p1");
    const a2 = await agent("two", "p2");
    const https = (id: string, servername: string, user?: string): Promise<Answer> =>
      probe(docker, id, ["https", UPSTREAM, "443", servername, "/x"], user);

    await t.test("before FirewallInit every agent is refused (closed targets)", async () => {
      const before = await probe(docker, a1, ["echo", UPSTREAM, "7000"]);
      assert.ok(refusedPromptly(before), JSON.stringify(before));
    });

    // A bring-up starts HAProxy and the DNS gate and waits for both: on a loaded CI machine that
    // outlasts the client's 10 s default deadline, so the calls that do it get a minute.
    const BRING_UP = { deadlineMs: 60_000 };
    assert.deepEqual(await client.firewallInit(BRING_UP), {
      envoyIp: GATEWAY,
      corednsIp: GATEWAY,
      networkId: (await docker.docker.getNetwork(NETWORK).inspect()).Id,
    });
    const rule = (dst: string, extra: Partial<admin.EgressRule> = {}): admin.EgressRule =>
      admin.EgressRule.fromPartial({ dst, ...extra });
    await client.firewallAddRules([rule("api.example.test")]);

    // An agent made by the real `clawker run` (the CLI as a process, clawkerd its entrypoint): the
    // CLI asks the control plane for the firewall CA and copies it in; clawkerd trusts it at start.
    const ran = await clawker(
      [
        "run",
        "--agent",
        "three",
        "--project",
        "p3",
        "--network",
        NETWORK,
        "--cgroup-parent",
        cgroupParent,
        "--cp-addr",
        `${GATEWAY}:${cp.ports.agent}`,
        "--token-endpoint",
        `https://${GATEWAY}:${cp.ports.authPublic}/oauth2/token`,
        "--admin",
        `127.0.0.1:${cp.ports.admin}`,
        "--format",
        "json",
        image,
        "sleep",
        "3600",
      ],
      {
        env: {
          ...process.env,
          DOCKER_HOST: docker.dockerHost,
          CLAWKER_CP_TRUST_DIR: cp.trustDir,
          CLAWKER_TOKEN_ENDPOINT: cp.tokenEndpoint,
        },
      },
    );
    assert.equal(ran.code, 0, ran.stderr);
    const made = JSON.parse(ran.stdout) as { containerId: string; firewallCaFingerprint: string | null };
    const a3 = made.containerId;

    await t.test("an allowed name passes through to the upstream (root and uid 1000)", async () => {
      for (const user of [undefined, "1000:1000"]) {
        assert.deepEqual(await https(a1, "api.example.test", user), {
          status: 200,
          body: "https api.example.test GET /x\n",
        });
      }
    });

    await t.test("an IP literal is refused with an answer, not a hang (root and uid 1000)", async () => {
      for (const user of [undefined, "1000:1000"]) {
        const tls = await https(a1, "-", user);
        assert.ok(refusedPromptly(tls), JSON.stringify(tls));
        const tcp = await probe(docker, a1, ["echo", UPSTREAM, "7000"], user);
        assert.ok(refusedPromptly(tcp), JSON.stringify(tcp));
        const http = await probe(docker, a1, ["http", UPSTREAM, "80", UPSTREAM, "/x"], user);
        assert.ok(refusedPromptly(http), JSON.stringify(http));
      }
    });

    await t.test("a name without a rule is refused; so is the allowed name on another protocol", async () => {
      refusedTls(await https(a1, "other.example.test"));
      refusedTls(await https(a1, "other.example.test", "1000:1000"));
      const http = await probe(docker, a1, ["http", UPSTREAM, "80", "api.example.test", "/x"]);
      assert.ok(refusedPromptly(http), JSON.stringify(http));
    });

    await t.test("UDP elsewhere, native IPv6 and raw/ICMP sockets are refused", async () => {
      const udp = await probe(docker, a1, ["udp", UPSTREAM, "7001"]);
      assert.equal(udp["error"], "EPERM", JSON.stringify(udp));
      const v6 = await probe(docker, a1, ["echo", "fd00:dead::1", "7000"]);
      assert.equal(v6["error"], "EPERM", JSON.stringify(v6));
      const ping = await docker.docker.getContainer(a1).exec({
        Cmd: ["sh", "-c", `ping -c 1 -W 2 ${UPSTREAM}; echo "rc=$?"`],
        AttachStdout: true,
        AttachStderr: true,
      });
      const stream = await ping.start({ hijack: true, stdin: false });
      const chunks: Buffer[] = [];
      stream.on("data", (d: Buffer) => chunks.push(d));
      await new Promise((resolve) => stream.on("end", resolve));
      const { stdout, stderr } = demux(Buffer.concat(chunks));
      assert.match(stdout, /rc=[1-9]/, `${stdout} ${stderr}`);
    });

    await t.test("the gateway and the control plane's ports are refused", async () => {
      // The admin listener binds every address: the TLS handshake meets the proxy's denial, not it.
      refusedTls(await probe(docker, a1, ["https", GATEWAY, String(cp.ports.admin), "localhost", "/"]));
      const health = await probe(docker, a1, ["http", GATEWAY, String(cp.ports.health), GATEWAY, "/healthz"]);
      assert.ok(refusedPromptly(health), JSON.stringify(health));
      const agentPort = await probe(docker, a1, ["echo", GATEWAY, String(cp.ports.agent)]);
      assert.ok(refusedPromptly(agentPort), JSON.stringify(agentPort));
    });

    await t.test(
      "DNS to any resolver other than the gate is answered by the gate (UDP and TCP 53)",
      async () => {
        for (const server of [UPSTREAM, PUBLIC_DNS]) {
          for (const transport of ["udp", "tcp"]) {
            const allowed = await probe(docker, a1, ["dns", transport, server, "api.example.test"]);
            assert.deepEqual(allowed, { rcode: 0, answers: [UPSTREAM] }, `${transport} to ${server}`);
            // NXDOMAIN: the gate's word for a name without a rule (the trap answers everything).
            const other = await probe(docker, a1, ["dns", transport, server, "other.example.test"]);
            assert.deepEqual(other, { rcode: 3, answers: [] }, `${transport} to ${server}`);
          }
        }
        const asUser = await probe(docker, a1, ["dns", "udp", PUBLIC_DNS, "api.example.test"], "1000:1000");
        assert.deepEqual(asUser, { rcode: 0, answers: [UPSTREAM] });
        // The control that the trap answers: "disable lets one agent out" asks it from a2.
        assert.doesNotMatch(upstream.stdout, /dns-query/, "no query reached a resolver of the test's");
      },
    );

    await t.test("TCP rules: an allowed port reaches the echo, another port is refused", async () => {
      await client.firewallAddRules([rule("tcp.example.test", { proto: "tcp", port: "7002" })]);
      assert.deepEqual(await probe(docker, a1, ["echo-name", "tcp.example.test", "7002"]), {
        address: UPSTREAM,
        echo: true,
      });
      const other = await probe(docker, a1, ["echo-name", "tcp.example.test", "7000"]);
      assert.ok(refusedPromptly(other), JSON.stringify(other));
    });

    await t.test("a removed TCP rule cuts its open connection; the next one is refused", async () => {
      const held = await streamProbe(docker, a1, ["hold-tcp", "tcp.example.test", "7002"]);
      await waitFor(() => held.lines.some((l) => l["open"] === true), { what: "TCP connection open" });
      await client.firewallRemoveRule(
        admin.FirewallRemoveRuleRequest.fromPartial({ dst: "tcp.example.test", proto: "tcp", port: "7002" }),
      );
      await waitFor(() => held.lines.some((l) => l["closed"] === true), { what: "TCP connection cut" });
      const after = await probe(docker, a1, ["echo", UPSTREAM, "7002"]);
      assert.ok(refusedPromptly(after), JSON.stringify(after));
    });

    await t.test("UDP rules: another port than the rule's is refused", async () => {
      // A first UDP rule takes the first relay port, so udp.example.test's is another one: the kernel
      // must steer to the route's own relay port, not to one proxy UDP port for every route.
      await client.firewallAddRules([rule("api.example.test", { proto: "udp", port: "7009" })]);
      await client.firewallAddRules([rule("udp.example.test", { proto: "udp", port: "7003" })]);
      const other = await probe(docker, a1, ["udp-name", "udp.example.test", "7001"]);
      assert.deepEqual([other["address"], other["error"]], [UPSTREAM, "EPERM"], JSON.stringify(other));
    });

    await t.test(
      "UDP rules: an allowed port reaches the upstream's UDP echo and the reply comes back",
      async () => {
        // Through the UDP relay (udp-relay.ts): the reply appears to come from the address asked.
        assert.deepEqual(await probe(docker, a1, ["udp-name", "udp.example.test", "7003"]), {
          address: UPSTREAM,
          echo: true,
          from: `${UPSTREAM}:7003`,
        });
      },
    );

    await t.test("UDP rules: a removed rule stops the next datagram", async () => {
      await client.firewallRemoveRule(
        admin.FirewallRemoveRuleRequest.fromPartial({ dst: "udp.example.test", proto: "udp", port: "7003" }),
      );
      await client.firewallRemoveRule(
        admin.FirewallRemoveRuleRequest.fromPartial({ dst: "api.example.test", proto: "udp", port: "7009" }),
      );
      // By the address it had resolved (the gate now answers NXDOMAIN for the name): the UDP route
      // is gone, so the kernel refuses the datagram before it leaves.
      const after = await probe(docker, a1, ["udp", UPSTREAM, "7003"]);
      assert.equal(after["error"], "EPERM", JSON.stringify(after));
    });

    // Intercepted: only GET under /allowed; everything else falls to the default, deny.
    await client.firewallAddRules([
      rule("paths.example.test", {
        pathRules: [{ path: "/allowed", action: "allow", methods: ["GET"] }],
        pathDefault: "deny",
      }),
    ]);
    const request = (
      id: string,
      method: string,
      path: string,
      extra: string[] = [],
      user?: string,
      nodeArgs?: string[],
    ) =>
      probe(
        docker,
        id,
        ["request", UPSTREAM, "443", "paths.example.test", method, path, ...extra],
        user,
        nodeArgs,
      );

    await t.test(
      "an agent made by `clawker run` trusts the firewall CA for intercepted names, by default",
      async () => {
        const status = await client.firewallStatus();
        const ca = new X509Certificate(status.interceptionCaPem);
        assert.equal(made.firewallCaFingerprint, ca.fingerprint256.replaceAll(":", "").toLowerCase());
        // clawkerd writes the bundle (SSL_CERT_FILE) at its start.
        await waitFor(async () => (await probe(docker, a3, ["exists", CA_BUNDLE_FILE]))["exists"] === true, {
          what: "clawkerd's CA bundle",
          timeoutMs: 30_000,
        });
        const ok = { status: 200, body: "https paths.example.test GET /allowed/x\n" };
        // Node's roots plus NODE_EXTRA_CA_CERTS; and OpenSSL's store (SSL_CERT_FILE), as curl has it.
        for (const nodeArgs of [[], ["--use-openssl-ca"]]) {
          for (const user of [undefined, "1000:1000"]) {
            assert.deepEqual(
              await request(a3, "GET", "/allowed/x", [], user, nodeArgs),
              ok,
              `${nodeArgs.join(" ")} ${user ?? "root"}`,
            );
          }
        }
        assert.deepEqual(await probe(docker, a3, ["issuer", UPSTREAM, "443", "paths.example.test"]), {
          issuer: INTERCEPTION_CA_CN,
        });
        // A passthrough name never sees the firewall CA: the upstream's own certificate.
        assert.deepEqual(await probe(docker, a3, ["issuer", UPSTREAM, "443", "api.example.test"]), {
          issuer: UPSTREAM_CA_CN,
        });
        // An agent made without the CA fails verification (never a silent downgrade).
        const without = await request(a1, "GET", "/allowed/x");
        assert.equal(without["status"], undefined, JSON.stringify(without));
        assert.match(String(without["error"]), /CERT|SELF_SIGNED|ISSUER|VERIFY/, JSON.stringify(without));
        assert.deepEqual(await probe(docker, a1, ["exists", FIREWALL_CA_FILE]), { exists: false });
      },
    );

    await t.test("an intercepted name obeys its path and method rules; the tricks are refused", async () => {
      const tries: Array<[method: string, path: string, host: string[], reason: string]> = [
        ["GET", "/secret", [], "path_denied"],
        ["GET", "/allowed/../secret", [], "path_denied"],
        ["GET", "/allowed/%2e%2e/secret", [], "path_denied"],
        ["GET", "/allowed/%2E%2E/secret", [], "path_denied"],
        ["GET", "//secret", [], "path_denied"],
        ["GET", "/allowed//../secret", [], "path_denied"],
        ["POST", "/allowed/x", [], "path_denied"],
        ["GET", "/allowed/x", ["api.example.test"], "host_mismatch"],
      ];
      // Every try is made and every wrong answer listed, so one run shows which trick got through.
      const wrong: string[] = [];
      for (const [method, path, host, reason] of tries) {
        const answer = await request(a3, method, path, host);
        try {
          denied(answer, reason);
        } catch {
          wrong.push(`${method} ${path} ${host.join("")}: ${JSON.stringify(answer)}`);
        }
      }
      assert.deepEqual(wrong, [], "every trick refused with the readable 403");
      // Normalised before matching, and the upstream gets the normalised path.
      assert.deepEqual(await request(a3, "GET", "/other/../allowed/./y"), {
        status: 200,
        body: "https paths.example.test GET /allowed/y\n",
      });
    });

    await t.test("a rule added while the agent runs works on its next connection", async () => {
      await client.firewallAddRules([rule("other.example.test")]);
      assert.equal((await https(a1, "other.example.test"))["status"], 200);
    });

    await t.test("a removed rule cuts its open tunnel; the next connection is refused", async () => {
      const held = await streamProbe(docker, a1, ["hold", UPSTREAM, "443", "api.example.test"]);
      await waitFor(() => held.lines.some((l) => l["open"] === true), { what: "tunnel open" });
      await client.firewallRemoveRule(
        admin.FirewallRemoveRuleRequest.fromPartial({ dst: "api.example.test", proto: "https", port: "443" }),
      );
      await waitFor(() => held.lines.some((l) => l["closed"] === true), { what: "tunnel cut" });
      refusedTls(await https(a1, "api.example.test"));
    });

    await t.test("a project-scoped rule does not leak to another project", async () => {
      await client.firewallAddRules([rule("scoped.example.test", { project: "p1" })]);
      // The proxy knows agents by source address once the address index has seen them.
      await waitFor(async () => (await https(a1, "scoped.example.test"))["status"] === 200, {
        what: "p1's agent admitted",
        timeoutMs: 20_000,
      });
      refusedTls(await https(a2, "scoped.example.test"));
    });

    await t.test("disable lets one agent out until enable; the kernel holds the mode", async () => {
      await client.firewallDisable(a2);
      assert.deepEqual(await probe(docker, a2, ["echo", UPSTREAM, "7000"]), { echo: true });
      // Unsteered, DNS reaches the trap: the control for the DNS subtest's "no query reached it".
      for (const server of [UPSTREAM, PUBLIC_DNS]) {
        for (const transport of ["udp", "tcp"]) {
          const trapped = await probe(docker, a2, ["dns", transport, server, "api.example.test"]);
          assert.deepEqual(trapped, { rcode: 0, answers: [DNS_TRAP] }, `${transport} to ${server}`);
        }
      }
      assert.match(upstream.stdout, /dns-query udp/);
      assert.match(upstream.stdout, /dns-query tcp/);
      assert.ok(refusedPromptly(await probe(docker, a1, ["echo", UPSTREAM, "7000"])), "only that agent");
      const mode = (await client.firewallStatus()).containers.find((c) => c.containerId === a2);
      assert.deepEqual([mode?.mode, mode?.enforced], ["disabled", true]);
      await client.firewallEnable(a2);
      assert.ok(refusedPromptly(await probe(docker, a2, ["echo", UPSTREAM, "7000"])));
    });

    await t.test("a bypass opens and closes by itself", async () => {
      // One probe tries again and again, so nothing depends on how fast a probe starts.
      const loop = await streamProbe(docker, a2, ["echo-loop", UPSTREAM, "7000", "150"]);
      await waitFor(() => loop.lines.length > 0, { what: "the first attempt", timeoutMs: 20_000 });
      assert.ok(refusedPromptly(loop.lines[0]!), JSON.stringify(loop.lines[0]));
      await client.firewallBypass(a2, 3);
      const opened = await waitFor(() => loop.lines.findIndex((l) => l["echo"] === true) + 1 || undefined, {
        what: "an attempt let out during the bypass",
        timeoutMs: 20_000,
      });
      await waitFor(() => loop.lines.slice(opened).some(refusedPromptly), {
        what: "the bypass to end by itself",
        timeoutMs: 20_000,
      });
    });

    await t.test("FirewallRemove refuses agents: nothing is steered anywhere", async () => {
      await client.firewallRemove();
      const after = await https(a1, "other.example.test");
      assert.ok(refusedPromptly(after), JSON.stringify(after));
      assert.ok(refusedPromptly(await probe(docker, a1, ["echo", UPSTREAM, "7000"])));
      const health = await probe(docker, a1, ["http", GATEWAY, String(cp.ports.health), GATEWAY, "/healthz"]);
      assert.ok(refusedPromptly(health), `the gateway stays refused: ${JSON.stringify(health)}`);
    });

    await t.test(
      "kill -9 of the control plane and its manager during traffic lets nothing out; a bypass still ends",
      async () => {
        await client.firewallInit(BRING_UP);
        assert.equal((await https(a1, "other.example.test"))["status"], 200, "steered to the proxy again");
        const loop = await streamProbe(docker, a1, ["echo-loop", UPSTREAM, "7000", "150"]);
        const bypassed = await streamProbe(docker, a2, ["echo-loop", UPSTREAM, "7000", "150"]);
        await waitFor(() => loop.lines.length >= 2 && bypassed.lines.length >= 1, {
          what: "attempts before the kill",
          timeoutMs: 20_000,
        });
        const manager = helperPid(cp, "ebpf-manager");
        const proxy = helperPid(cp, "egress-proxy");
        assert.ok((await processGroup(proxy)).length >= 2, "HAProxy's master and a worker run");
        // The bypass outlives its control plane: only the kernel can end it (issue 16 §4).
        const logged = cp.logs.length;
        await client.firewallBypass(a2, 6);
        cp.proc.kill("SIGKILL");
        await cp.exited;
        process.kill(manager, "SIGKILL");
        // HAProxy dies with its daemon (not left serving, its log forwarder spinning on a dead socket).
        await waitFor(async () => (await processGroup(proxy)).length === 0 || undefined, {
          what: "HAProxy's master and workers to die with the control plane",
          timeoutMs: 10_000,
        });
        const opened = await waitFor(
          () => bypassed.lines.findIndex((l) => l["echo"] === true) + 1 || undefined,
          {
            what: "the bypassed agent let out",
            timeoutMs: 20_000,
          },
        );
        await waitFor(() => bypassed.lines.slice(opened).some(refusedPromptly), {
          what: "the kernel to end the bypass with no control plane",
          timeoutMs: 30_000,
        });
        assert.ok(
          !cp.logs.slice(logged).some((l) => l["event"] === "bypass_expired"),
          "the control plane's timer never fired",
        );
        const seen = loop.lines.length;
        await waitFor(() => loop.lines.length >= seen + 3, {
          what: "attempts after the kill",
          timeoutMs: 30_000,
        });
        const out = loop.lines.filter((l) => !refusedPromptly(l));
        assert.deepEqual(out, [], "every attempt of the enforced agent refused, before and after the kill");
        const noRule = await https(a1, "api.example.test");
        assert.ok(refusedPromptly(noRule), JSON.stringify(noRule));
      },
    );
  },
);
