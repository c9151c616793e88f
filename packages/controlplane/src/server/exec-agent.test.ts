// ExecAgent's pure parts: request checks (table), agent resolution against a real sqlite
// registry (in memory), and the relay's codec (decoded as the Dialer does, encoded as the admin
// listener does). The streaming handler runs against the real clawkerd in
// test/exec-agent.test.ts.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { ADMIN_ERRORS, clawkerd, deserializeClawkerdResponse, type admin } from "@clawker/proto";
import { Registry } from "../agents/registry.js";
import { AdminServiceRelay, ExecAgentError, checkExecRequest, resolveAgent } from "./exec-agent.js";

const stage = (...argv: string[]): clawkerd.PipeStage => ({ argv, uid: 0, gid: 0, cwd: "", env: {} });
const shell = (...stages: clawkerd.PipeStage[]): clawkerd.ShellCommand => ({
  stages,
  timeoutSeconds: 0,
  initialStdin: Buffer.alloc(0),
  printOutput: false,
  exitOnNonZero: false,
});
const request = (r: Partial<admin.ExecAgentRequest>): admin.ExecAgentRequest => ({
  containerId: "",
  agentName: "",
  project: "",
  command: shell(stage("true")),
  ...r,
});

describe("checkExecRequest", () => {
  const invalid: Array<[string, admin.ExecAgentRequest, RegExp]> = [
    ["neither identifier", request({}), /container_id or by agent_name/],
    ["both identifiers", request({ containerId: "abc", agentName: "dev" }), /not both/],
    ["project without a name", request({ containerId: "abc", project: "p" }), /project goes with/],
    ["a container id that is not hex", request({ containerId: "../etc" }), /hex/],
    ["no command", request({ agentName: "dev", command: undefined }), /no stages/],
    ["no stages", request({ agentName: "dev", command: shell() }), /no stages/],
    ["an empty argv", request({ agentName: "dev", command: shell(stage()) }), /stage 0 has no program/],
    ["an empty program", request({ agentName: "dev", command: shell(stage("ls"), stage("")) }), /stage 1/],
    [
      "exit_on_non_zero (would end clawkerd and the container)",
      request({ agentName: "dev", command: { ...shell(stage("false")), exitOnNonZero: true } }),
      /exit_on_non_zero/,
    ],
  ];
  for (const [name, req, message] of invalid) {
    test(`refuses ${name} with INVALID_ARGUMENT`, () => {
      assert.throws(
        () => checkExecRequest(req),
        (e: unknown) =>
          e instanceof ExecAgentError &&
          e.reason === "invalid_argument" &&
          ADMIN_ERRORS.codes[e.reason] === grpc.status.INVALID_ARGUMENT &&
          message.test(e.message),
      );
    });
  }

  test("accepts a container id, or a name with or without a project, and keeps the command", () => {
    const cmd = shell(stage("printf", "x"), stage("tr", "x", "y"));
    assert.deepEqual(checkExecRequest(request({ containerId: "0af3", command: cmd })), {
      target: { kind: "container", containerId: "0af3" },
      command: cmd,
    });
    assert.deepEqual(checkExecRequest(request({ agentName: "dev", project: "web" })).target, {
      kind: "name",
      agentName: "dev",
      project: "web",
    });
    assert.deepEqual(checkExecRequest(request({ agentName: "dev" })).target, {
      kind: "name",
      agentName: "dev",
      project: "",
    });
  });
});

describe("resolveAgent", () => {
  const registry = new Registry(":memory:");
  after(() => registry.close());
  const id = (c: string): string => c.repeat(64);
  let tp = 0;
  const add = (containerId: string, agentName: string, project: string): void => {
    const certThumbprint = (++tp).toString(16).padStart(64, "0");
    assert.equal(registry.register({ containerId, agentName, project, certThumbprint }, 1000), "created");
  };
  add(id("a"), "dev", "web");
  add(`ab${"0".repeat(62)}`, "ops", "");
  add(id("c"), "twin", "p");
  add(id("d"), "twin", "p");
  add(id("e"), "pair", "p");
  add(id("f"), "pair", "p");
  /** Sessions are open for these containers (the dialer's view). */
  const open = new Set([id("d"), id("e"), id("f")]);
  const deps = {
    registry,
    dialer: { session: (c: string) => (open.has(c) ? ({} as never) : undefined) },
  };
  const reasonOf = (fn: () => unknown): string => {
    try {
      fn();
      return "resolved";
    } catch (e) {
      assert.ok(e instanceof ExecAgentError, String(e));
      return e.reason;
    }
  };

  test("by full container id and by a unique prefix", () => {
    assert.equal(resolveAgent(deps, { kind: "container", containerId: id("a") }).agentName, "dev");
    assert.equal(resolveAgent(deps, { kind: "container", containerId: "ab0" }).agentName, "ops");
    assert.equal(resolveAgent(deps, { kind: "container", containerId: "aaaa" }).agentName, "dev");
  });

  test("an ambiguous prefix and an unknown id are refused", () => {
    assert.equal(
      reasonOf(() => resolveAgent(deps, { kind: "container", containerId: "a" })),
      "agent_ambiguous",
    );
    assert.equal(
      reasonOf(() => resolveAgent(deps, { kind: "container", containerId: "9" })),
      "agent_not_found",
    );
  });

  test("by name and project; the project is part of the name", () => {
    assert.equal(resolveAgent(deps, { kind: "name", agentName: "dev", project: "web" }).containerId, id("a"));
    assert.equal(
      resolveAgent(deps, { kind: "name", agentName: "ops", project: "" }).containerId.slice(0, 2),
      "ab",
    );
    assert.equal(
      reasonOf(() => resolveAgent(deps, { kind: "name", agentName: "dev", project: "" })),
      "agent_not_found",
    );
    assert.equal(
      reasonOf(() => resolveAgent(deps, { kind: "name", agentName: "nobody", project: "web" })),
      "agent_not_found",
    );
  });

  test("a name registered twice picks the container with an open session; two open ones are ambiguous", () => {
    assert.equal(resolveAgent(deps, { kind: "name", agentName: "twin", project: "p" }).containerId, id("d"));
    assert.equal(
      reasonOf(() => resolveAgent(deps, { kind: "name", agentName: "pair", project: "p" })),
      "agent_ambiguous",
    );
  });

  test("every reason maps to a gRPC code, refusals never to INTERNAL", () => {
    const reasons: readonly ExecAgentError["reason"][] = [
      "invalid_argument",
      "agent_not_found",
      "agent_ambiguous",
      "agent_starting",
      "no_session",
      "session_closed",
    ];
    for (const reason of reasons) assert.notEqual(ADMIN_ERRORS.codes[reason], grpc.status.INTERNAL);
    assert.equal(ADMIN_ERRORS.codes.agent_not_found, grpc.status.NOT_FOUND);
    assert.equal(ADMIN_ERRORS.codes.no_session, grpc.status.FAILED_PRECONDITION);
  });
});

describe("the relay's codec", () => {
  // Raw protobuf pieces: a length-delimited field and a varint field.
  const bytesField = (field: number, value: Buffer): Buffer =>
    Buffer.concat([varint((field << 3) | 2), varint(value.length), value]);
  const varintField = (field: number, value: number): Buffer =>
    Buffer.concat([varint(field << 3), varint(value)]);
  function varint(n: number): Buffer {
    const out: number[] = [];
    while (n >= 0x80) {
      out.push((n & 0x7f) | 0x80);
      n = Math.floor(n / 128);
    }
    out.push(n);
    return Buffer.from(out);
  }
  const secret = Buffer.from("AGENT-SECRET-FIELD");
  // What the Dialer decodes (its client's deserializer) and what the admin listener then sends
  // the CLI (the relay's serializer).
  const relay = (wire: Buffer): Buffer =>
    AdminServiceRelay.execAgent.responseSerialize(deserializeClawkerdResponse(wire));

  test("an agent's unknown fields, in Response and in OutputChunk, never reach the CLI", () => {
    const chunk = Buffer.concat([
      bytesField(1, Buffer.from("out")),
      bytesField(2, secret),
      varintField(9, 7),
    ]);
    const wire = Buffer.concat([
      bytesField(1, Buffer.from("exec-1")),
      bytesField(4, chunk),
      bytesField(4000, secret),
      varintField(4001, 42),
    ]);
    const sent = relay(wire);
    assert.equal(sent.indexOf(secret), -1);
    const expected: clawkerd.Response = {
      commandId: "exec-1",
      payload: { $case: "output", value: { data: Buffer.from("out") } },
    };
    assert.ok(Buffer.from(sent).equals(Buffer.from(clawkerd.Response.encode(expected).finish())));
  });

  test("other Responses are re-encoded from their known fields too", () => {
    const done = Buffer.concat([varintField(1, 3), bytesField(2, secret)]);
    const wire = Buffer.concat([
      bytesField(1, Buffer.from("exec-2")),
      bytesField(7, done),
      bytesField(4000, secret),
    ]);
    const sent = relay(wire);
    assert.equal(sent.indexOf(secret), -1);
    assert.deepEqual(clawkerd.Response.decode(sent), {
      commandId: "exec-2",
      payload: { $case: "done", value: { finalExitCode: 3 } },
    });
  });
});
