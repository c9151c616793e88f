import assert from "node:assert/strict";
import { test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { ADMIN_ERRORS, AGENT_ERRORS, CLAWKERD_ERRORS, LISTENER_ERROR_CODES } from "./error-reasons.js";
import { ClawkerError, ErrorTable } from "./errors.js";
import { ErrorInfo } from "./gen/google/rpc/error_details.js";
import { Status } from "./gen/google/rpc/status.js";
import {
  CLAWKER_ERROR_DOMAIN,
  ERROR_INFO_TYPE_URL,
  FIREWALL_ERROR_DOMAIN,
  STATUS_DETAILS_KEY,
  codeName,
  decodeStatusDetails,
  encodeStatusDetails,
  errorDetailOf,
} from "./status-details.js";

/** Every reason each boundary answers, written out from proto/README.md (not read from the tables). */
const LISTENER = [
  "unmapped_method",
  "missing_or_malformed_token",
  "token_inactive",
  "token_unverified",
  "permission_denied",
  "undecodable_request",
  "request_timeout",
  "internal",
];
const EXPECTED = {
  admin: [
    ...LISTENER,
    "starting_up",
    "unimplemented",
    "invalid_argument",
    "agent_not_found",
    "agent_ambiguous",
    "agent_starting",
    "no_session",
    "session_closed",
  ],
  agent: [...LISTENER, "identity_denied", "invalid_argument"],
  clawkerd: ["no_client_certificate", "not_control_plane", "hello_required", "internal"],
};
const TABLES = { admin: ADMIN_ERRORS, agent: AGENT_ERRORS, clawkerd: CLAWKERD_ERRORS };

test("every reason of every boundary has a non-OK gRPC code, in clawker.dev", () => {
  for (const [name, table] of Object.entries(TABLES) as [keyof typeof TABLES, ErrorTable<string>][]) {
    assert.deepEqual([...table.reasons].sort(), [...EXPECTED[name]].sort(), `${name} reasons`);
    assert.equal(table.domain, CLAWKER_ERROR_DOMAIN);
    for (const reason of table.reasons) {
      const code = (table.codes as Record<string, status>)[reason];
      assert.ok(typeof code === "number" && code > status.OK && code <= status.UNAUTHENTICATED, reason);
    }
  }
});

test("the listener reasons mean the same on both listeners", () => {
  for (const [reason, code] of Object.entries(LISTENER_ERROR_CODES)) {
    assert.equal(ADMIN_ERRORS.codes[reason as keyof typeof LISTENER_ERROR_CODES], code, reason);
    assert.equal(AGENT_ERRORS.codes[reason as keyof typeof LISTENER_ERROR_CODES], code, reason);
  }
});

test("no reason means two things: starting_up is the control plane's, agent_starting an agent's", () => {
  assert.equal(ADMIN_ERRORS.codes.starting_up, status.FAILED_PRECONDITION);
  assert.equal(ADMIN_ERRORS.codes.agent_starting, status.FAILED_PRECONDITION);
  for (const table of Object.values(TABLES)) assert.ok(!table.reasons.includes("not_ready" as never));
});

test("a status carries a google.rpc.Status that the generated code decodes to the same code, text and ErrorInfo", () => {
  const st = ADMIN_ERRORS.status("agent_not_found", "no registered agent dev", { agent: "dev" });
  assert.equal(st.code, status.NOT_FOUND);
  assert.equal(st.details, "no registered agent dev");
  const [bytes] = st.metadata.get(STATUS_DETAILS_KEY);
  assert.ok(Buffer.isBuffer(bytes));
  const decoded = Status.decode(bytes);
  assert.equal(decoded.code, status.NOT_FOUND);
  assert.equal(decoded.message, "no registered agent dev");
  assert.equal(decoded.details.length, 1);
  assert.equal(decoded.details[0]!.typeUrl, ERROR_INFO_TYPE_URL);
  assert.deepEqual(ErrorInfo.decode(decoded.details[0]!.value), {
    reason: "agent_not_found",
    domain: CLAWKER_ERROR_DOMAIN,
    metadata: { agent: "dev" },
  });
});

test("fixed() answers what status() answers, with fresh trailers each time", () => {
  const make = AGENT_ERRORS.fixed("permission_denied", "permission denied");
  const a = make();
  const b = make();
  assert.notEqual(a.metadata, b.metadata);
  assert.deepEqual(
    a.metadata.getMap(),
    AGENT_ERRORS.status("permission_denied", "permission denied").metadata.getMap(),
  );
  assert.equal(a.code, status.PERMISSION_DENIED);
});

test("the domain is the table's: a firewall table answers in firewall.clawker.dev", () => {
  const firewall = new ErrorTable<"invalid_rule">(FIREWALL_ERROR_DOMAIN, {
    invalid_rule: status.INVALID_ARGUMENT,
  });
  const err = new ClawkerError("invalid_rule", "rules[0].port: bad", {
    metadata: { field: "rules[0].port" },
  });
  const st = firewall.statusOf(err);
  assert.deepEqual(errorDetailOf(st), {
    reason: "invalid_rule",
    domain: FIREWALL_ERROR_DOMAIN,
    metadata: { field: "rules[0].port" },
  });
});

test("a detail is read only when it is a Status of the call's own code with an ErrorInfo", () => {
  const good = encodeStatusDetails(status.UNAVAILABLE, "x", { reason: "r", domain: "d", metadata: {} });
  assert.equal(decodeStatusDetails(good, status.UNAVAILABLE)?.reason, "r");
  assert.equal(decodeStatusDetails(good, status.INTERNAL), undefined, "another code");
  assert.equal(
    decodeStatusDetails(Buffer.from([0xff, 0xff, 0xff]), status.UNAVAILABLE),
    undefined,
    "garbage",
  );
  const other = Status.encode({
    code: status.UNAVAILABLE,
    message: "x",
    details: [{ typeUrl: "type.googleapis.com/google.rpc.RetryInfo", value: Buffer.alloc(0) }],
  }).finish();
  assert.equal(decodeStatusDetails(other, status.UNAVAILABLE), undefined, "no ErrorInfo");
  const md = new Metadata();
  md.set(STATUS_DETAILS_KEY, good);
  assert.equal(errorDetailOf({ code: status.UNAVAILABLE, metadata: md })?.reason, "r");
  assert.equal(errorDetailOf({ code: status.UNAVAILABLE, metadata: new Metadata() }), undefined);
  assert.equal(errorDetailOf(new Error("plain")), undefined);
});

test("ClawkerError keeps reason, message, cause and metadata", () => {
  const cause = new Error("low");
  const err = new ClawkerError("io", "it broke", { cause, metadata: { k: "v" } });
  assert.equal(err.reason, "io");
  assert.equal(err.message, "it broke");
  assert.equal(err.cause, cause);
  assert.deepEqual(err.metadata, { k: "v" });
  assert.deepEqual(new ClawkerError("x", "y").metadata, {});
  assert.ok(err instanceof Error);
});

test("codeName is the lowercase status name", () => {
  assert.equal(codeName(status.NOT_FOUND), "not_found");
  assert.equal(codeName(status.FAILED_PRECONDITION), "failed_precondition");
  assert.equal(codeName(99 as status), "unknown");
});
