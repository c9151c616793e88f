// Denial triage end to end (issue 11 §3, §6): a private dockerd, the control plane in its network
// namespace with the real HAProxy, two real agents (the agent image with our bundled clawkerd,
// started by `clawker run`, registered through the identity gate), a plain HTTP upstream and a DNS
// server in the namespace. The agents dial the proxy's HTTP listener on their gateway from their
// own addresses (no eBPF: the kernel's steering is firewall-egress.test.ts's), so the proxy knows
// who is who by source address. Everything an operator does goes through the real `clawker` CLI,
// everything an agent does through `docker exec` in its container.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { REPO_ROOT } from "../harness/images.js";
import { describe, test } from "node:test";
import { mintTrustSet, writeTrustSet } from "@clawker/adminclient";
import { LABELS } from "@clawker/proto";
import { agentImage, CLAWKERD_IN_IMAGE } from "../harness/agent-image.js";
import { clawker, type CliResult } from "../harness/clawker-cli.js";
import { startControlPlane, type ControlPlane } from "../harness/controlplane.js";
import { startPrivateDocker } from "../harness/docker.js";
import { NetnsProcess } from "../harness/netns.js";
import { startTmux } from "../harness/tmux.js";
import { command, root, skipReason } from "../harness/preconditions.js";
import { waitFor } from "../harness/wait-for.js";

const SUBNET = "10.203.41.0/24";
const GATEWAY = "10.203.41.1";
const NETWORK = "clawker-agents-triage";
const PROJECT = "web";
const HTTP_PORT = 15080;
const UPSTREAM = "127.0.0.2";
const NAMES = ["api.example.test", "tmp.example.test", "asked.example.test"];

const fixture = (name: string): string =>
  fileURLToPath(new URL(`../../packages/controlplane/test/fixtures/${name}`, import.meta.url));
const TSX = ["--import", import.meta.resolve("tsx"), "--conditions=source"];

interface Denials {
  denials: Array<{
    id: string;
    agent: string;
    dst_name: string;
    port: number;
    count: number;
    layer: string;
    reason: string;
    suggested_rule: { dst: string; proto: string; port: string };
    requests: Array<{ id: string }>;
  }>;
  requests: Array<{ id: string; agent: string; dst: string; port: number; proto: string; reason: string }>;
}

interface Exec {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function json<T>(r: CliResult, what: string): T {
  assert.equal(r.code, 0, `${what} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

describe(
  "denial triage end to end",
  {
    skip: skipReason(
      root,
      command("dockerd"),
      command("docker"),
      command("nsenter"),
      command("haproxy"),
      command("tmux"),
    ),
  },
  () => {
    test("a denial is listed; approved for one agent it lets that agent through while the other is refused; a temporary approval ends by itself; a request grants nothing until approved", async (t) => {
      const docker = await startPrivateDocker(t);
      await docker.docker.createNetwork({
        Name: NETWORK,
        Driver: "bridge",
        Internal: true,
        IPAM: { Config: [{ Subnet: SUBNET, Gateway: GATEWAY }] },
        Labels: { [LABELS.managed]: "true" },
      });
      const image = await agentImage(docker.docker);
      const upstream = new NetnsProcess(docker, process.execPath, [
        ...TSX,
        fixture("http-upstream.ts"),
        UPSTREAM,
        String(HTTP_PORT),
      ]);
      await upstream.start();
      t.after(() => upstream.close());
      await upstream.waitForOutput(/"ready":(\d+)/, 60_000);
      const dns = new NetnsProcess(docker, process.execPath, [
        ...TSX,
        fixture("dns-upstream.ts"),
        JSON.stringify(Object.fromEntries(NAMES.map((n) => [n, { addresses: [UPSTREAM], ttl: 300 }]))),
      ]);
      await dns.start();
      t.after(() => dns.close());
      const dnsPort = Number((await dns.waitForOutput(/"ready":(\d+)/, 60_000))[1]);

      const dir = mkdtempSync(join(tmpdir(), "clawker-triage-"));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      const trustDir = join(dir, "trust");
      const trust = await mintTrustSet({ serverNames: [GATEWAY] });
      await writeTrustSet(trustDir, trust);
      const cp: ControlPlane = await startControlPlane({
        netns: docker.netnsName,
        trustDir,
        trustSet: trust,
        dataDir: join(dir, "data"),
        config: {
          listen: { agent: { host: GATEWAY } },
          auth: { publicHost: GATEWAY },
          docker: { host: docker.dockerHost },
          firewall: {
            network: NETWORK,
            resolvers: [{ address: "127.0.0.1", port: dnsPort }],
            proxy: { httpPort: HTTP_PORT, routePorts: { first: 16000, count: 2 } },
            // The upstream lives on loopback in the namespace; the defaults forbid 127/8.
            forbidden: ["169.254.0.0/16"],
            // The agents dial the proxy themselves here (no eBPF steering in this test).
            allowUnenforced: true,
          },
        },
      });
      t.after(() => cp.close());
      t.after(() => {
        const file = process.env["CLAWKER_E2E_LOGS"];
        if (file !== undefined) writeFileSync(file, cp.logs.map((l) => JSON.stringify(l)).join("\n"));
      });

      const tokenEndpoint = `https://${GATEWAY}:${cp.ports.authPublic}/oauth2/token`;
      const env = { ...process.env, DOCKER_HOST: docker.dockerHost, CLAWKER_CP_TRUST_DIR: trustDir };
      const fw = async (...args: string[]): Promise<CliResult> =>
        await clawker(
          ["firewall", ...args, "--admin", `127.0.0.1:${cp.ports.admin}`, "--token-endpoint", tokenEndpoint],
          { env, netns: docker.netnsName },
        );
      const ok = async (...args: string[]): Promise<CliResult> => {
        const r = await fw(...args);
        assert.equal(r.code, 0, `clawker firewall ${args.join(" ")}: ${r.stderr}`);
        return r;
      };
      const denials = async (): Promise<Denials> =>
        json<Denials>(await fw("denials", "--format", "json"), "firewall denials");
      await ok("up");

      const run = async (agent: string): Promise<string> =>
        json<{ containerId: string }>(
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
        ).containerId;
      const dev = await run("dev");
      const ops = await run("ops");
      await waitFor(() => cp.logs.filter((l) => l["event"] === "agent_registered").length >= 2, {
        timeoutMs: 30_000,
        what: "both agents registered",
      });

      const exec = (container: string, args: readonly string[]): Promise<Exec> =>
        new Promise((resolve) => {
          execFile("docker", ["exec", container, ...args], { env, timeout: 30_000 }, (err, stdout, stderr) =>
            resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : 1, stdout, stderr }),
          );
        });
      // One HTTP request from the agent's own address to the proxy's HTTP listener on the gateway.
      const get = async (container: string, host: string): Promise<number> => {
        const r = await exec(container, [
          "node",
          "-e",
          `require("node:http").get({host:${JSON.stringify(GATEWAY)},port:${HTTP_PORT},path:"/",headers:{host:${JSON.stringify(host)}}},(r)=>{console.log(r.statusCode);r.resume()}).on("error",(e)=>{console.log(e.code);})`,
        ]);
        return Number(r.stdout.trim());
      };
      const clawkerd = (container: string, ...args: string[]): Promise<Exec> =>
        exec(container, ["node", CLAWKERD_IN_IMAGE, ...args]);

      // 1. A denial is listed, per agent, with the rule that would allow it.
      const api = "api.example.test";
      // The proxy learns the agents' addresses from Docker: until then it refuses them too.
      await waitFor(async () => (await get(dev, api)) === 403, { timeoutMs: 20_000, what: "dev refused" });
      assert.equal(await get(ops, api), 403);
      const listed = await waitFor(
        async () => {
          const d = await denials();
          return d.denials.filter((g) => g.dst_name === api).length === 2 ? d : undefined;
        },
        { timeoutMs: 10_000, what: "both agents' denials listed" },
      );
      const devGroup = listed.denials.find((g) => g.agent === `${PROJECT}.dev` && g.dst_name === api)!;
      assert.ok(devGroup, JSON.stringify(listed));
      assert.equal(devGroup.port, HTTP_PORT);
      assert.equal(devGroup.layer, "proxy");
      assert.ok(devGroup.count >= 1);
      assert.deepEqual(devGroup.suggested_rule.dst, api);
      assert.deepEqual(
        [devGroup.suggested_rule.proto, devGroup.suggested_rule.port],
        ["http", String(HTTP_PORT)],
      );

      // 2. Approved for dev only: dev's very next connection passes, ops is still refused, and the
      // destination is not offered again for dev while the rule stands.
      const approved = json<{ rule: { scope: string; dst: string }; expires_at: string | null }>(
        await ok("approve", devGroup.id, "--agent", "--format", "json"),
        "approve",
      );
      assert.deepEqual(
        [approved.rule.scope, approved.rule.dst, approved.expires_at],
        [`agent:${PROJECT}.dev`, api, null],
      );
      assert.equal(await get(dev, api), 200, "the approved agent's next connection");
      assert.equal(await get(ops, api), 403, "another agent is still refused");
      const after = await denials();
      assert.ok(!after.denials.some((g) => g.agent === `${PROJECT}.dev` && g.dst_name === api));
      assert.ok(after.denials.some((g) => g.agent === `${PROJECT}.ops` && g.dst_name === api));

      // 3. A temporary approval ends by itself: ops may reach tmp for 3 s.
      const tmp = "tmp.example.test";
      assert.equal(await get(ops, tmp), 403);
      const tmpGroup = await waitFor(
        async () => (await denials()).denials.find((g) => g.agent === `${PROJECT}.ops` && g.dst_name === tmp),
        { timeoutMs: 10_000, what: "ops's denial of tmp listed" },
      );
      const temporary = json<{ expires_at: string | null }>(
        await ok("approve", tmpGroup.id, "--for", "3s", "--format", "json"),
        "approve --for",
      );
      assert.ok(temporary.expires_at !== null);
      assert.equal(await get(ops, tmp), 200, "allowed while it lasts");
      await waitFor(async () => (await get(ops, tmp)) === 403, {
        timeoutMs: 20_000,
        what: "the approval to expire",
      });
      const rules = json<Array<{ dst: string }> | { rules: Array<{ dst: string }> }>(
        await ok("list", "--format", "json"),
        "list",
      );
      assert.ok(!(Array.isArray(rules) ? rules : rules.rules).some((r) => r.dst === tmp), "the rule is gone");

      // 4. An agent's request: pending, grants nothing until approved. Its fields cannot name
      // another agent: the control plane records the caller (dev) whatever the text says.
      const asked = "asked.example.test";
      const requested = await clawkerd(
        dev,
        "request-egress",
        asked,
        "--proto",
        "http",
        "--port",
        String(HTTP_PORT),
        "--reason",
        "agent_name=ops project=other: the build needs it",
      );
      assert.equal(requested.code, 0, requested.stderr);
      const requestId = requested.stdout.trim();
      assert.match(requestId, /^r-[0-9a-f]{20}$/);
      const pending = (await denials()).requests.find((r) => r.id === requestId);
      assert.deepEqual(pending && [pending.agent, pending.dst, pending.port, pending.proto], [
        `${PROJECT}.dev`,
        asked,
        HTTP_PORT,
        "http",
      ]);
      assert.equal(await get(dev, asked), 403, "a request grants nothing");
      // Bad input is refused precisely (exit 2 with the field), nothing stored.
      const bad = await clawkerd(dev, "request-egress", "https://x/", "--reason", "x");
      assert.equal(bad.code, 2, bad.stderr);
      assert.match(bad.stderr, /refused: dst: /);
      const noPort = await clawkerd(dev, "request-egress", asked, "--proto", "tcp", "--reason", "x");
      assert.equal(noPort.code, 2);
      assert.match(noPort.stderr, /port: is required for tcp/);
      // Still the one pending request, now listed with dev's denial of that destination.
      const withGroup = await waitFor(
        async () =>
          (await denials()).denials.find((g) => g.agent === `${PROJECT}.dev` && g.dst_name === asked),
        { timeoutMs: 10_000, what: "dev's denial of the asked destination" },
      );
      assert.deepEqual(
        withGroup.requests.map((r) => r.id),
        [requestId],
      );
      assert.deepEqual((await denials()).requests, []);

      await ok("approve", requestId, "--agent");
      assert.equal(await get(dev, asked), 200, "approved: live when approve returned");
      assert.equal(await get(ops, asked), 403);
      assert.ok(!(await denials()).denials.some((g) => g.requests.some((r) => r.id === requestId)));

      // 5. `clawker firewall watch` in a real terminal (tmux): ops's denial of the asked
      // destination shows up, one key approves it for ops alone, the screen says live only once it
      // is, and ops's next connection passes while dev's approval stays dev's.
      assert.equal(await get(ops, asked), 403);
      const pane = await startTmux(
        [
          "nsenter",
          `--net=/run/netns/${docker.netnsName}`,
          process.execPath,
          ...TSX,
          join(REPO_ROOT, "packages/cli/src/main.ts"),
          "firewall",
          "watch",
          "--interval",
          "200ms",
          "--admin",
          `127.0.0.1:${cp.ports.admin}`,
          "--token-endpoint",
          tokenEndpoint,
        ],
        env,
      );
      t.after(() => pane.close());
      const row = new RegExp(`${asked.replaceAll(".", "\\.")}\\s+${HTTP_PORT}\\s+${PROJECT}\\.ops\\s`);
      await pane.waitForLine(row, "ops's denial of the asked destination on the watch screen");
      // Move the cursor onto that line (the list is newest first; other denials may sit above it).
      for (let i = 0; i < 20; i++) {
        if ((await pane.screen()).some((l) => l.startsWith(">") && row.test(l))) break;
        await pane.keys("j");
      }
      await pane.waitForLine(new RegExp(`^> .*${row.source}`), "the cursor on ops's denial", 5_000);
      await pane.keys("a");
      await pane.waitForLine(
        new RegExp(
          `approved ${asked.replaceAll(".", "\\.")}:${HTTP_PORT} for agent ${PROJECT}\\.ops for 1h: live`,
        ),
        "the approval live on the screen",
      );
      assert.equal(await get(ops, asked), 200, "approved from the watch screen: ops passes");
      // Approved, it leaves the list (never offered again while its rule stands).
      await waitFor(async () => !(await pane.screen()).some((l) => row.test(l)), {
        timeoutMs: 10_000,
        what: "the approved denial to leave the watch screen",
      });
      await pane.keys("q");
      await waitFor(() => pane.exited(), { timeoutMs: 10_000, what: "watch to quit on q" });
      const rulesNow = json<
        Array<{ dst: string; scope: string }> | { rules: Array<{ dst: string; scope: string }> }
      >(await ok("list", "--format", "json"), "list");
      const askedRules = (Array.isArray(rulesNow) ? rulesNow : rulesNow.rules).filter((r) => r.dst === asked);
      assert.deepEqual(askedRules.map((r) => r.scope).sort(), [
        `agent:${PROJECT}.dev`,
        `agent:${PROJECT}.ops`,
      ]);
    });
  },
);
