import assert from "node:assert/strict";
import { test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { CLAWKER_ERROR_DOMAIN, FIREWALL_ERROR_DOMAIN, statusDetailsMetadata } from "@clawker/proto";
import { AdminError, STATUS_REASONS, toAdminError } from "./errors.js";

const METHOD = "/clawker.admin.v1.AdminService/ListAgents";

function serviceError(
  code: status,
  details: string,
): Error & { code: status; details: string; metadata: Metadata } {
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), {
    code,
    details,
    metadata: new Metadata(),
  });
}

test("every gRPC status maps to its documented reason, keeping the server's message", () => {
  const table: Array<[status, string]> = [
    [status.CANCELLED, "cancelled"],
    [status.UNKNOWN, "internal"],
    [status.INVALID_ARGUMENT, "invalid_argument"],
    [status.DEADLINE_EXCEEDED, "deadline_exceeded"],
    [status.NOT_FOUND, "not_found"],
    [status.ALREADY_EXISTS, "already_exists"],
    [status.PERMISSION_DENIED, "permission_denied"],
    [status.RESOURCE_EXHAUSTED, "resource_exhausted"],
    [status.FAILED_PRECONDITION, "failed_precondition"],
    [status.ABORTED, "aborted"],
    [status.OUT_OF_RANGE, "invalid_argument"],
    [status.UNIMPLEMENTED, "unimplemented"],
    [status.INTERNAL, "internal"],
    [status.UNAVAILABLE, "unavailable"],
    [status.DATA_LOSS, "internal"],
    [status.UNAUTHENTICATED, "unauthenticated"],
  ];
  assert.equal(table.length, Object.keys(STATUS_REASONS).length, "the table covers every code");
  for (const [code, reason] of table) {
    const err = toAdminError(serviceError(code, `message for ${code}`), METHOD);
    assert.ok(err instanceof AdminError);
    assert.equal(err.reason, reason, `code ${code}`);
    assert.equal(err.code, code);
    assert.equal(err.method, METHOD);
    assert.equal(err.message, `message for ${code}`);
  }
});

/** A ServiceError whose trailers carry the detail a control plane of ours sends. */
function withDetail(code: status, details: string, reason: string, domain = CLAWKER_ERROR_DOMAIN) {
  const err = serviceError(code, details);
  err.metadata = statusDetailsMetadata(code, details, { reason, domain, metadata: { field: "f" } });
  return err;
}

test("the ErrorInfo reason decides, whatever the message says", () => {
  const gate = toAdminError(withDetail(status.FAILED_PRECONDITION, "please wait", "starting_up"), METHOD);
  assert.deepEqual(
    [gate.reason, gate.domain, gate.code, gate.message, gate.metadata],
    ["starting_up", CLAWKER_ERROR_DOMAIN, status.FAILED_PRECONDITION, "please wait", { field: "f" }],
  );
  // The ready gate's very text with another reason is that other reason.
  const agent = toAdminError(
    withDetail(status.FAILED_PRECONDITION, "control plane is starting up", "agent_starting"),
    METHOD,
  );
  assert.equal(agent.reason, "agent_starting");
  const firewall = toAdminError(
    withDetail(status.INVALID_ARGUMENT, "rules[0].port: bad", "invalid_rule", FIREWALL_ERROR_DOMAIN),
    METHOD,
  );
  assert.deepEqual([firewall.reason, firewall.domain], ["invalid_rule", FIREWALL_ERROR_DOMAIN]);
});

test("without ErrorInfo the code decides, never the text: the ready gate's text alone is failed_precondition", () => {
  const bare = toAdminError(serviceError(status.FAILED_PRECONDITION, "control plane is starting up"), METHOD);
  assert.deepEqual([bare.reason, bare.domain], ["failed_precondition", undefined]);
});

test("a detail that contradicts the status code, or is not a google.rpc.Status, is not believed", () => {
  const err = serviceError(status.PERMISSION_DENIED, "permission denied");
  err.metadata = statusDetailsMetadata(status.OK, "permission denied", {
    reason: "starting_up",
    domain: CLAWKER_ERROR_DOMAIN,
    metadata: {},
  });
  assert.equal(toAdminError(err, METHOD).reason, "permission_denied");
  const junk = serviceError(status.UNAVAILABLE, "down");
  junk.metadata.set("grpc-status-details-bin", Buffer.from([0xff, 0x01, 0x02]));
  assert.equal(toAdminError(junk, METHOD).reason, "unavailable");
});

test("anything that is not a gRPC status error becomes internal", () => {
  for (const thrown of [new Error("boom"), "text", { code: 99 }, { code: "ECONNRESET" }, null]) {
    const err = toAdminError(thrown, METHOD);
    assert.equal(err.reason, "internal");
    assert.equal(err.code, status.INTERNAL);
  }
});

test("an AdminError passes through unchanged", () => {
  const original = new AdminError("unavailable", status.UNAVAILABLE, METHOD, "down");
  assert.equal(toAdminError(original, "/other"), original);
});
