// The triage's RPCs on the real daemon (clawker-cp from source, embedded auth server) over real
// mTLS with real tokens: the agent client is granted agent:self:request; RequestEgress refuses a
// token without it, and a caller the identity gate does not know as a running, registered agent
// container (this test process on loopback) whatever it sends; the operator's triage RPCs answer
// precise refusals in the firewall's domain. The end-to-end flow with real agents and HAProxy is
// test/e2e/firewall-triage.test.ts.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import {
  AdminError,
  issueAgentLeaf,
  openAdminClient,
  TokenSource,
  type AdminClient,
} from "@clawker/adminclient";
import { AGENT_CLIENT, egress } from "@clawker/proto";
import { startControlPlane, type ControlPlane } from "../../../test/harness/controlplane.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { wireError } from "../../../test/harness/wire-error.js";

const CONTAINER = "ab".repeat(32);

describe("triage RPCs on the real daemon", () => {
  let cp: ControlPlane;
  let admin: AdminClient;
  let agentClient: egress.AgentEgressServiceClient;
  const sources: TokenSource[] = [];

  const agentToken = (scope: string): Promise<string> => {
    const tokens = new TokenSource({
      ca: cp.trust!.ca.certPem,
      signingKey: cp.trust!.signingKey.privateJwk,
      tokenEndpoint: cp.tokenEndpoint,
      clientId: AGENT_CLIENT.clientId,
      scope,
    });
    sources.push(tokens);
    return tokens.token();
  };
  const requestEgress = (
    token: string,
    request: Partial<egress.RequestEgressRequest>,
  ): Promise<ServiceError | egress.RequestEgressResponse> => {
    const md = new Metadata();
    md.set("authorization", `Bearer ${token}`);
    return new Promise((resolve) => {
      agentClient.requestEgress(egress.RequestEgressRequest.fromPartial(request), md, (err, res) =>
        resolve(err ?? res),
      );
    });
  };

  before(async () => {
    cp = await startControlPlane();
    admin = openAdminClient({
      trust: cp.trust!,
      target: `127.0.0.1:${cp.ports.admin}`,
      tokenEndpoint: cp.tokenEndpoint,
    });
    // A genuine agent leaf (CN clawker-clawkerd, SANs naming an agent and a container) from the CA.
    const leaf = await issueAgentLeaf(cp.trust!.ca, { agentName: "web.dev", containerId: CONTAINER });
    agentClient = new egress.AgentEgressServiceClient(
      `127.0.0.1:${cp.ports.agent}`,
      credentials.createSsl(
        Buffer.from(cp.trust!.ca.certPem),
        Buffer.from(leaf.keyPem),
        Buffer.from(leaf.certPem),
      ),
      { "grpc.ssl_target_name_override": "localhost" },
    );
  });
  after(async () => {
    agentClient?.close();
    await Promise.all(sources.map((s) => s.close()));
    await admin?.close();
    await cp?.close();
  });

  test("RequestEgress: a token without agent:self:request is refused; with it, a caller that is no registered agent container is refused whatever it names", async () => {
    const registerOnly = await requestEgress(await agentToken("agent:self:register"), {
      dst: "api.example.test",
      reason: "x",
    });
    assert.ok(registerOnly instanceof Error);
    assert.equal(registerOnly.code, status.PERMISSION_DENIED);
    assert.equal(wireError(registerOnly).reason, "permission_denied");

    // The agent client is granted the new scope (a token for it is issued at all).
    const full = await agentToken("agent:self:register agent:self:request");
    const stranger = await requestEgress(full, { dst: "api.example.test", reason: "I am web.dev" });
    assert.ok(stranger instanceof Error);
    assert.equal(stranger.code, status.PERMISSION_DENIED);
    const e = wireError(stranger);
    assert.deepEqual([e.reason, e.message], ["identity_denied", "agent identity not accepted"]);
    // The daemon's log arrives through its stdout, possibly after the answer.
    const denied = await waitFor(() => cp.logs.find((l) => l["event"] === "egress_request_denied"), {
      what: "the gate's refusal in the log",
    });
    assert.equal(denied?.["reason"], "unknown_address", "the gate refused the caller's address");
    // Nothing was queued.
    const listed = await admin.callMethod(egress.EgressServiceService.listFirewallDenials, {
      agentName: "",
      project: "",
      sinceUnixNanos: 0n,
    });
    assert.deepEqual(listed, { groups: [], requests: [] });
  });

  test("ApproveEgress and DismissEgress refuse precisely, in the firewall's domain", async () => {
    const S = egress.EgressServiceService;
    const refused = async (p: Promise<unknown>): Promise<AdminError> => {
      try {
        await p;
      } catch (err) {
        assert.ok(err instanceof AdminError, String(err));
        assert.equal(err.domain, "firewall.clawker.dev", `${err.reason}: ${err.message}`);
        return err;
      }
      assert.fail("not refused");
    };
    const both = await refused(
      admin.callMethod(S.approveEgress, {
        denialId: "d-1",
        requestId: "r-1",
        scope: egress.ApprovalScope.APPROVAL_SCOPE_AGENT,
        expiresAfterSeconds: 0,
      }),
    );
    assert.deepEqual([both.code, both.reason], [status.INVALID_ARGUMENT, "invalid_request"]);
    assert.match(both.message, /exactly one of denial_id and request_id/);
    const unknown = await refused(
      admin.callMethod(S.approveEgress, {
        denialId: "d-nope",
        requestId: "",
        scope: egress.ApprovalScope.APPROVAL_SCOPE_GLOBAL,
        expiresAfterSeconds: 0,
      }),
    );
    assert.deepEqual([unknown.code, unknown.reason], [status.NOT_FOUND, "unknown_triage_item"]);
    const dismissed = await refused(admin.callMethod(S.dismissEgress, { denialId: "", requestId: "r-nope" }));
    assert.deepEqual([dismissed.code, dismissed.reason], [status.NOT_FOUND, "unknown_triage_item"]);
    const negative = await refused(
      admin.callMethod(S.listFirewallDenials, { agentName: "", project: "", sinceUnixNanos: -1n }),
    );
    assert.equal(negative.code, status.INVALID_ARGUMENT);
  });
});
