import assert from "node:assert/strict";
import { test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
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

test("FAILED_PRECONDITION is starting_up only with the ready gate's text", () => {
  const gate = toAdminError(serviceError(status.FAILED_PRECONDITION, "control plane is starting up"), METHOD);
  assert.equal(gate.reason, "starting_up");
  const other = toAdminError(
    serviceError(status.FAILED_PRECONDITION, "the agent has no open session"),
    METHOD,
  );
  assert.equal(other.reason, "failed_precondition");
  assert.equal(other.code, status.FAILED_PRECONDITION);
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
