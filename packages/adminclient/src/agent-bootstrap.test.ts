import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { test } from "node:test";
import { BOOTSTRAP_FILES, FIREWALL_CA_FILE, type AgentBootstrapConfig } from "@clawker/proto";
import {
  AgentBootstrapError,
  agentContainerName,
  bootstrapArchive,
  checkAgentNames,
  checkBootstrapConfig,
  checkFirewallCa,
  createAgentContainer,
  dockerClient,
  dockerSocketPath,
  removeAgentContainer,
} from "./agent-bootstrap.js";
import { mintTrustSet } from "./trust/bootstrap.js";
import { readUstar } from "./ustar.js";

/** [agent, project, accepted] */
const NAME_TABLE: ReadonlyArray<readonly [string, string, boolean]> = [
  ["dev", "", true],
  ["dev", "myproject", true],
  ["a", "b", true],
  ["0", "", true],
  ["Dev_1-x", "Proj-2_y", true],
  ["a".repeat(64), "p".repeat(64), true],
  ["a".repeat(65), "", false],
  ["dev", "p".repeat(65), false],
  ["", "", false],
  ["", "proj", false],
  ["-dev", "", false],
  ["_dev", "", false],
  ["dev", "-proj", false],
  ["de.v", "", false],
  ["dev", "my.project", false],
  ["dev x", "", false],
  ["dev/x", "", false],
  ["dév", "", false],
  ["dev\n", "", false],
  ["dev", " ", false],
];

void test("agent and project names: the identity gate's rule", () => {
  for (const [agent, project, ok] of NAME_TABLE) {
    const run = (): void => checkAgentNames(agent, project);
    if (ok) assert.doesNotThrow(run, `${agent}/${project}`);
    else
      assert.throws(
        run,
        (err) => err instanceof AgentBootstrapError && err.reason === "invalid_argument",
        JSON.stringify([agent, project]),
      );
  }
});

void test("container names", () => {
  assert.equal(agentContainerName("", "dev"), "clawker.dev");
  assert.equal(agentContainerName("proj", "dev"), "clawker.proj.dev");
});

void test("bootstrap config: the address forms clawkerd accepts", () => {
  const base: AgentBootstrapConfig = {
    agentName: "dev",
    project: "",
    controlPlaneAddr: "10.213.0.1:7444",
    tokenEndpoint: "https://10.213.0.1:4444/oauth2/token",
    serverName: "localhost",
  };
  const cases: Array<[Partial<AgentBootstrapConfig>, boolean]> = [
    [{}, true],
    [{ controlPlaneAddr: "[fd00::1]:7444" }, true],
    [{ controlPlaneAddr: "cp.internal:7444" }, true],
    [{ serverName: "10.213.0.1" }, true],
    [{ controlPlaneAddr: "10.213.0.1" }, false],
    [{ controlPlaneAddr: "10.213.0.1:99999" }, false],
    [{ controlPlaneAddr: "fd00::1:7444" }, false],
    [{ tokenEndpoint: "http://10.213.0.1:4444/oauth2/token" }, false],
    [{ tokenEndpoint: "not a url" }, false],
    [{ serverName: "" }, false],
    [{ serverName: "bad name" }, false],
  ];
  for (const [change, ok] of cases) {
    const run = (): void => checkBootstrapConfig({ ...base, ...change });
    if (ok) assert.doesNotThrow(run, JSON.stringify(change));
    else assert.throws(run, AgentBootstrapError, JSON.stringify(change));
  }
});

void test("bootstrap archive: the five files under BOOTSTRAP_DIR, 0400 root, dirs closed below /run", () => {
  const config: AgentBootstrapConfig = {
    agentName: "dev",
    project: "p",
    controlPlaneAddr: "10.213.0.1:7444",
    tokenEndpoint: "https://10.213.0.1:4444/oauth2/token",
    serverName: "localhost",
  };
  const records = readUstar(
    bootstrapArchive({ ca: "CA", cert: "CERT", key: "KEY", assertion: "a.b.c", config }, 1234),
  );
  assert.deepEqual(
    records.map((r) => [r.kind, r.name, r.mode.toString(8), r.uid, r.gid, r.mtime]),
    [
      ["dir", "run/", "755", 0, 0, 1234],
      ["dir", "run/clawker/", "500", 0, 0, 1234],
      ["dir", "run/clawker/bootstrap/", "500", 0, 0, 1234],
      ["file", `run/clawker/bootstrap/${BOOTSTRAP_FILES.ca}`, "400", 0, 0, 1234],
      ["file", `run/clawker/bootstrap/${BOOTSTRAP_FILES.cert}`, "400", 0, 0, 1234],
      ["file", `run/clawker/bootstrap/${BOOTSTRAP_FILES.key}`, "400", 0, 0, 1234],
      ["file", `run/clawker/bootstrap/${BOOTSTRAP_FILES.assertion}`, "400", 0, 0, 1234],
      ["file", `run/clawker/bootstrap/${BOOTSTRAP_FILES.config}`, "400", 0, 0, 1234],
    ],
  );
  assert.deepEqual(
    records.slice(3).map((r) => r.content.toString()),
    ["CA", "CERT", "KEY", "a.b.c", JSON.stringify(config, null, 2) + "\n"],
  );
});

void test("the firewall CA: exactly one CA certificate, 0444 at FIREWALL_CA_FILE beside the bootstrap files", async () => {
  const { ca, cli } = await mintTrustSet();
  assert.equal(checkFirewallCa(ca.certPem), `${ca.certPem.trim()}\n`);
  // A key (alone or after the certificate), a leaf, two certificates, garbage: refused, naming why.
  for (const bad of [ca.keyPem, ca.certPem + ca.keyPem, cli.certPem, ca.certPem + ca.certPem, "nonsense"]) {
    assert.throws(
      () => checkFirewallCa(bad),
      (err: unknown) => {
        assert.ok(err instanceof AgentBootstrapError);
        assert.equal(err.reason, "invalid_argument");
        assert.doesNotMatch(err.message, /PRIVATE KEY/);
        return true;
      },
    );
  }
  const config: AgentBootstrapConfig = {
    agentName: "dev",
    project: "",
    controlPlaneAddr: "10.213.0.1:7444",
    tokenEndpoint: "https://10.213.0.1:4444/oauth2/token",
    serverName: "localhost",
  };
  const records = readUstar(
    bootstrapArchive({ ca: "CA", cert: "C", key: "K", assertion: "a", config, firewallCa: "FWCA" }, 1),
  );
  assert.deepEqual(
    records.slice(0, 3).map((r) => [r.kind, r.name, r.mode.toString(8), r.uid, r.gid, r.content.toString()]),
    [
      ["dir", "etc/", "755", 0, 0, ""],
      ["dir", "etc/clawker/", "755", 0, 0, ""],
      ["file", FIREWALL_CA_FILE.slice(1), "444", 0, 0, "FWCA"],
    ],
  );
  assert.equal(records.length, 11);
});

void test("DOCKER_HOST forms", () => {
  assert.equal(dockerSocketPath(undefined), "/var/run/docker.sock");
  assert.equal(dockerSocketPath(""), "/var/run/docker.sock");
  assert.equal(dockerSocketPath("unix:///tmp/d.sock"), "/tmp/d.sock");
  assert.equal(dockerSocketPath("/tmp/d.sock"), "/tmp/d.sock");
  for (const bad of ["tcp://127.0.0.1:2375", "ssh://host", "relative.sock"]) {
    assert.throws(() => dockerSocketPath(bad), AgentBootstrapError, bad);
  }
});

void test("bad input is refused before Docker is asked; an absent socket is docker_unavailable", async () => {
  // A real client on a socket that does not exist: any Docker call fails with docker_unavailable,
  // so invalid_argument proves the check ran first.
  const docker = dockerClient("unix:///nonexistent/clawker-test/docker.sock");
  const trust = await mintTrustSet();
  const base = {
    agent: "dev",
    image: "busybox",
    trust,
    controlPlaneAddr: "10.213.0.1:7444",
    tokenEndpoint: "https://10.213.0.1:4444/oauth2/token",
    serverName: "localhost",
  };
  const reason = async (p: Promise<unknown>): Promise<string> =>
    p.then(
      () => "resolved",
      (err: unknown) => (err instanceof AgentBootstrapError ? err.reason : String(err)),
    );
  assert.equal(
    await reason(createAgentContainer(docker, { ...base, agent: "bad.name" })),
    "invalid_argument",
  );
  assert.equal(await reason(createAgentContainer(docker, { ...base, project: "-x" })), "invalid_argument");
  assert.equal(await reason(createAgentContainer(docker, { ...base, image: "" })), "invalid_argument");
  assert.equal(await reason(createAgentContainer(docker, { ...base, entrypoint: [] })), "invalid_argument");
  assert.equal(
    await reason(createAgentContainer(docker, { ...base, env: ["NOEQUALS"] })),
    "invalid_argument",
  );
  assert.equal(
    await reason(createAgentContainer(docker, { ...base, tokenEndpoint: "http://x/token" })),
    "invalid_argument",
  );
  assert.equal(
    await reason(
      createAgentContainer(docker, {
        ...base,
        trust: { ...trust, signingKey: { ...trust.signingKey, privateJwk: { kty: "oct" } } },
      }),
    ),
    "invalid_trust",
  );
  assert.equal(await reason(removeAgentContainer(docker, { agent: "a.b" })), "invalid_argument");
  assert.equal(await reason(createAgentContainer(docker, base)), "docker_unavailable");
  assert.equal(await reason(removeAgentContainer(docker, { agent: "dev" })), "docker_unavailable");
  // The CA in the trust set is a real one (used by the Docker integration test for the leaf).
  assert.ok(new X509Certificate(trust.ca.certPem).ca);
});
