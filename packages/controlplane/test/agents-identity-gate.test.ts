// The identity gate and AgentService.Register on a real grpc-js server over real mTLS (TLS 1.3) on
// 127.0.0.1, with real certificates from the trust library and a real sqlite registry. The caller's
// address is 127.0.0.1, which each case maps to a container record injected into the index.
import assert from "node:assert/strict";
import { X509Certificate as X509 } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import tls from "node:tls";
import { after, before, beforeEach, describe, test } from "node:test";
import { Server, ServerCredentials, credentials, status, type ServiceError } from "@grpc/grpc-js";
import {
  issueAgentLeaf,
  issueLeaf,
  mintTrustSet,
  type CertifiedKey,
  type TrustSet,
} from "@clawker/adminclient";
import { Overseer, type AgentEvent } from "@clawker/overseer";
import { LABELS, agent } from "@clawker/proto";
import pino from "pino";
import { ContainerAddressIndex, type ContainerRecord } from "../src/agents/address-index.js";
import { agentService } from "../src/agents/agent-service.js";
import {
  GateError,
  IDENTITY_DENIED_MESSAGE,
  IdentityGate,
  MAX_NAME_LENGTH,
  parseSubjectAltName,
  thumbprintOf,
} from "../src/agents/identity-gate.js";
import { Registry } from "../src/agents/registry.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";

const ID_A = "a".repeat(60) + "0001";
const ID_B = "b".repeat(60) + "0002";
const agentLabels = (agentName: string, project = ""): Record<string, string> => ({
  [LABELS.managed]: "true",
  [LABELS.purpose]: "agent",
  [LABELS.agent]: agentName,
  [LABELS.project]: project,
});
const recordAt = (id: string, labels: Record<string, string>, address = "127.0.0.1"): ContainerRecord => ({
  id,
  labels,
  addresses: [address],
});

let trust: TrustSet;
let tmp: string;
let registry: Registry;
let index: ContainerAddressIndex;
let overseer: Overseer;
let server: Server;
let port: number;
const published: AgentEvent[] = [];
const logLines: Array<Record<string, unknown>> = [];
const log = pino(
  { level: "debug" },
  new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(JSON.parse(chunk.toString("utf8")) as Record<string, unknown>);
      cb();
    },
  }),
);

before(async () => {
  trust = await mintTrustSet();
  tmp = mkdtempSync(join(tmpdir(), "agents-gate-"));
  registry = new Registry(join(tmp, "registry.db"));
  index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });
  overseer = new Overseer();
  overseer.agents.subscribe((e) => void published.push(e));
  const gate = new IdentityGate({ index, registry, agents: overseer.agents, log });
  server = new Server();
  const binding = agentService({ gate, log });
  server.addService(binding.definition, binding.implementation);
  const creds = ServerCredentials.createSsl(
    Buffer.from(trust.ca.certPem),
    [
      {
        private_key: Buffer.from(trust.controlPlaneServer.keyPem),
        cert_chain: Buffer.from(trust.controlPlaneServer.certPem),
      },
    ],
    true,
  );
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
});

after(async () => {
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  await overseer.close();
  registry.close();
  rmSync(tmp, { recursive: true, force: true });
});

beforeEach(() => {
  for (const r of index.records()) index.remove(r.id);
  for (const r of registry.list()) registry.remove(r.containerId);
  logLines.length = 0;
});

/** Calls Register over mTLS with `leaf` as the client certificate. */
async function register(leaf: CertifiedKey, request: agent.RegisterRequest): Promise<ServiceError | null> {
  const client = new agent.AgentServiceClient(
    `127.0.0.1:${port}`,
    credentials.createSsl(Buffer.from(trust.ca.certPem), Buffer.from(leaf.keyPem), Buffer.from(leaf.certPem)),
  );
  try {
    return await new Promise<ServiceError | null>((resolve) =>
      client.register(request, (err) => resolve(err)),
    );
  } finally {
    client.close();
  }
}

function deniedReasons(): unknown[] {
  return logLines.filter((l) => l["event"] === "register_denied").map((l) => l["reason"]);
}

function derOf(leaf: CertifiedKey): Buffer {
  return new X509(leaf.certPem).raw;
}

describe("Register: accepted", () => {
  test("a matching agent registers; the same certificate again is idempotent", async () => {
    index.put(recordAt(ID_A, agentLabels("dev", "demo")));
    const leaf = await issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A });
    const before = published.length;
    assert.equal(await register(leaf, { agentName: "dev", project: "demo" }), null);
    const row = registry.get(ID_A);
    assert.ok(row);
    assert.equal(row.certThumbprint, thumbprintOf(derOf(leaf)));
    assert.equal(row.agentName, "dev");
    assert.equal(row.project, "demo");
    assert.equal(await register(leaf, { agentName: "dev", project: "demo" }), null);
    assert.equal(registry.list().length, 1);
    const outcomes = logLines.filter((l) => l["event"] === "agent_registered").map((l) => l["outcome"]);
    assert.deepEqual(outcomes, ["created", "unchanged"]);
    const events = published.slice(before).filter((e) => e.type === "agent.registered");
    assert.equal(events.length, 2);
    assert.deepEqual(
      { ...events[0], time: 0 },
      {
        type: "agent.registered",
        containerId: ID_A,
        agentName: "demo.dev",
        project: "demo",
        thumbprint: row.certThumbprint,
        time: 0,
      },
    );
  });

  test("an agent without a project registers under its short name", async () => {
    index.put(recordAt(ID_A, agentLabels("solo")));
    const leaf = await issueAgentLeaf(trust.ca, { agentName: "solo", containerId: ID_A });
    assert.equal(await register(leaf, { agentName: "solo", project: "" }), null);
    assert.equal(registry.get(ID_A)?.agentName, "solo");
  });

  test("a caller reaching the listener over ::ffff:127.0.0.1 maps to the IPv4 record", () => {
    // grpc-js reports IPv4 callers of a dual-stack socket as ::ffff:a.b.c.d.
    index.put(recordAt(ID_A, agentLabels("dev")));
    const found = index.lookup("[::ffff:127.0.0.1]:51000");
    assert.equal(found.kind, "found");
  });
});

interface DenyCase {
  readonly name: string;
  readonly reason: string;
  readonly records: readonly ContainerRecord[];
  readonly leaf: () => Promise<CertifiedKey>;
  readonly request: agent.RegisterRequest;
  readonly setup?: () => Promise<void>;
}

describe("Register: every identity failure is the same PERMISSION_DENIED", () => {
  const dev = agentLabels("dev", "demo");
  const cases: DenyCase[] = [
    {
      name: "common name is not clawker-clawkerd",
      reason: "wrong_common_name",
      records: [recordAt(ID_A, dev)],
      leaf: () =>
        issueLeaf(trust.ca, {
          commonName: "clawker-cli",
          uris: ["urn:clawker:agent:demo.dev", `urn:clawker:container:${ID_A}`],
          usage: "both",
        }),
      request: { agentName: "dev", project: "demo" },
    },
    {
      name: "two agent SANs",
      reason: "agent_san_count",
      records: [recordAt(ID_A, dev)],
      leaf: () =>
        issueLeaf(trust.ca, {
          commonName: "clawker-clawkerd",
          uris: [
            "urn:clawker:agent:demo.dev",
            "urn:clawker:agent:demo.other",
            `urn:clawker:container:${ID_A}`,
          ],
          usage: "both",
        }),
      request: { agentName: "dev", project: "demo" },
    },
    {
      name: "no agent SAN",
      reason: "agent_san_count",
      records: [recordAt(ID_A, dev)],
      leaf: () =>
        issueLeaf(trust.ca, {
          commonName: "clawker-clawkerd",
          uris: [`urn:clawker:container:${ID_A}`],
          usage: "both",
        }),
      request: { agentName: "dev", project: "demo" },
    },
    {
      name: "two container SANs",
      reason: "container_san_count",
      records: [recordAt(ID_A, dev)],
      leaf: () =>
        issueLeaf(trust.ca, {
          commonName: "clawker-clawkerd",
          uris: [
            "urn:clawker:agent:demo.dev",
            `urn:clawker:container:${ID_A}`,
            `urn:clawker:container:${ID_B}`,
          ],
          usage: "both",
        }),
      request: { agentName: "dev", project: "demo" },
    },
    {
      name: "caller address belongs to no container",
      reason: "unknown_address",
      records: [recordAt(ID_A, dev, "10.213.0.5")],
      leaf: () => issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A }),
      request: { agentName: "dev", project: "demo" },
    },
    {
      name: "caller address belongs to two containers",
      reason: "ambiguous_address",
      records: [recordAt(ID_A, dev), recordAt(ID_B, agentLabels("other", "demo"))],
      leaf: () => issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A }),
      request: { agentName: "dev", project: "demo" },
    },
    {
      name: "container at the address is not an agent",
      reason: "not_agent_container",
      records: [recordAt(ID_A, { ...dev, [LABELS.purpose]: "controlplane" })],
      leaf: () => issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A }),
      request: { agentName: "dev", project: "demo" },
    },
    {
      name: "labels name another agent than the certificate",
      reason: "agent_name_mismatch",
      records: [recordAt(ID_A, agentLabels("other", "demo"))],
      leaf: () => issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A }),
      request: { agentName: "other", project: "demo" },
    },
    {
      name: "labels name the agent in another project",
      reason: "agent_name_mismatch",
      records: [recordAt(ID_A, agentLabels("dev", "elsewhere"))],
      leaf: () => issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A }),
      request: { agentName: "dev", project: "elsewhere" },
    },
    {
      name: "certificate names another container",
      reason: "container_id_mismatch",
      records: [recordAt(ID_A, dev)],
      leaf: () => issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_B }),
      request: { agentName: "dev", project: "demo" },
    },
    {
      name: "certificate names the container by its short id",
      reason: "container_id_mismatch",
      records: [recordAt(ID_A, dev)],
      leaf: () => issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A.slice(0, 12) }),
      request: { agentName: "dev", project: "demo" },
    },
    {
      name: "request names another agent than the labels",
      reason: "request_mismatch",
      records: [recordAt(ID_A, dev)],
      leaf: () => issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A }),
      request: { agentName: "other", project: "demo" },
    },
    {
      name: "request omits the project the labels carry",
      reason: "request_mismatch",
      records: [recordAt(ID_A, dev)],
      leaf: () => issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A }),
      request: { agentName: "dev", project: "" },
    },
    {
      name: "replay: another certificate for a registered container",
      reason: "thumbprint_mismatch",
      records: [recordAt(ID_A, dev)],
      setup: async () => {
        const first = await issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A });
        assert.equal(await register(first, { agentName: "dev", project: "demo" }), null);
      },
      leaf: () => issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A }),
      request: { agentName: "dev", project: "demo" },
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      for (const r of c.records) index.put(r);
      await c.setup?.();
      const rowBefore = registry.get(ID_A);
      logLines.length = 0;
      const err = await register(await c.leaf(), c.request);
      assert.ok(err, "expected a refusal");
      assert.equal(err.code, status.PERMISSION_DENIED);
      assert.equal(err.details, IDENTITY_DENIED_MESSAGE);
      assert.deepEqual(deniedReasons(), [c.reason]);
      assert.deepEqual(registry.get(ID_A), rowBefore, "a refusal changes no row");
    });
  }
});

describe("Register: malformed fields are INVALID_ARGUMENT with a precise message", () => {
  const cases: Array<[string, agent.RegisterRequest, RegExp]> = [
    ["empty agent name", { agentName: "", project: "demo" }, /^agent_name is empty$/],
    [
      "bad characters in the agent name",
      { agentName: "dev/../x", project: "demo" },
      /^agent_name must start/,
    ],
    ["a dot in the agent name", { agentName: "a.b", project: "" }, /^agent_name must start/],
    [
      "agent name too long",
      { agentName: "x".repeat(MAX_NAME_LENGTH + 1), project: "" },
      /^agent_name is longer than 64/,
    ],
    ["bad characters in the project", { agentName: "dev", project: "de mo" }, /^project must start/],
    [
      "project too long",
      { agentName: "dev", project: "p".repeat(MAX_NAME_LENGTH + 1) },
      /^project is longer than 64/,
    ],
  ];
  for (const [name, request, message] of cases) {
    test(name, async () => {
      index.put(recordAt(ID_A, agentLabels("dev", "demo")));
      const leaf = await issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A });
      const err = await register(leaf, request);
      assert.ok(err);
      assert.equal(err.code, status.INVALID_ARGUMENT);
      assert.match(err.details, message);
      assert.equal(registry.get(ID_A), undefined);
    });
  }
});

describe("IdentityGate without the network", () => {
  test("no peer certificate is denied like any identity failure", async () => {
    const gate = new IdentityGate({ index, registry, log });
    await assert.rejects(gate.admit("127.0.0.1:1", undefined, { agentName: "dev", project: "" }), (err) => {
      assert.ok(err instanceof GateError);
      assert.equal(err.reason, "no_peer_certificate");
      assert.equal(err.message, IDENTITY_DENIED_MESSAGE);
      return true;
    });
  });

  test("a Register that races the started event's inspect waits for it instead of failing", async () => {
    let release!: () => void;
    const inspected = new Promise<void>((r) => (release = r));
    const racing = new ContainerAddressIndex({
      inspect: async (id) => {
        await inspected;
        return { id, labels: agentLabels("dev"), addresses: ["127.0.0.1"], isRunning: true };
      },
      log,
    });
    const gate = new IdentityGate({ index: racing, registry, log });
    racing.handle({
      type: "container.started",
      id: ID_A,
      name: "dev",
      labels: agentLabels("dev"),
      time: 0,
      source: "event",
    });
    const leaf = await issueAgentLeaf(trust.ca, { agentName: "dev", containerId: ID_A });
    const x = new X509(leaf.certPem);
    const cert = {
      raw: x.raw,
      subject: { CN: "clawker-clawkerd" } as tls.Certificate,
      subjectaltname: x.subjectAltName ?? "",
    };
    const admitted = gate.admit("127.0.0.1:5000", cert, { agentName: "dev", project: "" });
    release();
    assert.equal((await admitted).outcome, "created");
  });

  test("subjectAltName parsing keeps quoted values whole", () => {
    assert.deepEqual(parseSubjectAltName('URI:urn:clawker:agent:a, URI:"urn:x:a, b", DNS:h'), [
      ["URI", "urn:clawker:agent:a"],
      ["URI", "urn:x:a, b"],
      ["DNS", "h"],
    ]);
  });
});

describe("identify: an agent's later calls (RequestEgress) are the registered agent at its address", () => {
  const peerCert = (leaf: CertifiedKey) => {
    const x = new X509(leaf.certPem);
    return {
      raw: x.raw,
      subject: { CN: "clawker-clawkerd" } as tls.Certificate,
      subjectaltname: x.subjectAltName ?? "",
    };
  };
  const gate = (): IdentityGate => new IdentityGate({ index, registry, log });

  test("the registered agent is identified from its certificate and address, nothing else", async () => {
    index.put(recordAt(ID_A, agentLabels("dev", "demo")));
    const leaf = await issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A });
    assert.equal(await register(leaf, { agentName: "dev", project: "demo" }), null);
    const who = await gate().identify("127.0.0.1:50000", peerCert(leaf));
    assert.deepEqual(
      [who.containerId, who.agentName, who.project, who.fullName],
      [ID_A, "dev", "demo", "demo.dev"],
    );
  });

  const refusals: Array<[string, string, () => Promise<CertifiedKey>]> = [
    [
      "not registered",
      "not_registered",
      () => issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A }),
    ],
    [
      "another certificate than the one that registered",
      "thumbprint_mismatch",
      async () => {
        const first = await issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A });
        assert.equal(await register(first, { agentName: "dev", project: "demo" }), null);
        return issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A });
      },
    ],
    [
      "a certificate naming another agent than the container at the address",
      "agent_name_mismatch",
      () => issueAgentLeaf(trust.ca, { agentName: "demo.ops", containerId: ID_A }),
    ],
  ];
  for (const [name, reason, leaf] of refusals) {
    test(`refused, one message: ${name}`, async () => {
      index.put(recordAt(ID_A, agentLabels("dev", "demo")));
      const cert = peerCert(await leaf());
      logLines.length = 0;
      await assert.rejects(
        gate().identify("127.0.0.1:50000", cert, "egress_request_denied"),
        (err: unknown) => {
          assert.ok(err instanceof GateError);
          assert.deepEqual([err.reason, err.message], [reason, IDENTITY_DENIED_MESSAGE]);
          return true;
        },
      );
      assert.deepEqual(
        logLines.filter((l) => l["event"] === "egress_request_denied").map((l) => l["reason"]),
        [reason],
      );
    });
  }

  test("refused: an address no running agent container owns", async () => {
    const leaf = await issueAgentLeaf(trust.ca, { agentName: "demo.dev", containerId: ID_A });
    await assert.rejects(gate().identify("127.0.0.9:50000", peerCert(leaf)), (err: unknown) => {
      assert.ok(err instanceof GateError);
      assert.equal(err.reason, "unknown_address");
      return true;
    });
  });
});
