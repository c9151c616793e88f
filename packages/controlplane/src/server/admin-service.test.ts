// ListAgents' codec memo (issue 15): the answer's bytes are encoded once per registry listing, so
// what must hold is that they are never stale. A real sqlite registry in a temporary file; the
// handler and the serializer as grpc-js calls them.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { admin } from "@clawker/proto";
import { Registry } from "../agents/registry.js";
import { adminService } from "./admin-service.js";
import { SosBoard } from "./sos-board.js";

const WIRE = admin.AdminServiceService.listAgents;

void test("ListAgents' bytes follow every registry write and decode to the listing; an empty request is one message", () => {
  const dir = mkdtempSync(join(tmpdir(), "clawker-admin-service-"));
  const registry = new Registry(join(dir, "registry.db"));
  try {
    const binding = adminService({ agents: registry, sos: new SosBoard() });
    const method = binding.definition["listAgents"]!;
    const handler = binding.implementation["listAgents"] as grpc.handleUnaryCall<
      unknown,
      admin.ListAgentsResult
    >;
    /** One call as grpc-js makes it: the handler's answer through the method's serializer. */
    const call = (): admin.ListAgentsResult => {
      let answer: admin.ListAgentsResult | undefined;
      handler({} as grpc.ServerUnaryCall<unknown, admin.ListAgentsResult>, (err, value) => {
        assert.equal(err, null);
        answer = value!;
      });
      return WIRE.responseDeserialize(method.responseSerialize(answer));
    };
    assert.deepEqual(call(), { agents: [] });
    assert.deepEqual(call(), { agents: [] }, "the memo's bytes");
    const agent = { containerId: "c".repeat(64), agentName: "dev", project: "p", certThumbprint: "t1" };
    assert.equal(registry.register(agent, 100), "created");
    assert.deepEqual(
      call().agents.map((a) => [a.containerId, a.agentName, a.lastSeenUnix]),
      [[agent.containerId, "dev", 100n]],
      "a registration is seen by the next call",
    );
    call();
    assert.equal(registry.touch(agent.containerId, 200), true);
    assert.equal(call().agents[0]?.lastSeenUnix, 200n, "a touch is seen by the next call");
    assert.equal(registry.remove(agent.containerId), true);
    assert.deepEqual(call(), { agents: [] }, "a removal is seen by the next call");
    // A value that is not the current answer is encoded for itself, never answered from the memo.
    const other: admin.ListAgentsResult = {
      agents: [{ ...agent, agentName: "x", registeredAtUnix: 1n, lastSeenUnix: 1n }],
    };
    assert.equal(WIRE.responseDeserialize(method.responseSerialize(other)).agents[0]?.agentName, "x");
    // The request: no message is built for the usual empty one, and it cannot be changed.
    const empty: unknown = method.requestDeserialize(Buffer.alloc(0));
    assert.equal(method.requestDeserialize(Buffer.alloc(0)), empty);
    assert.ok(Object.isFrozen(empty));
    assert.deepEqual(method.requestDeserialize(WIRE.requestSerialize({})), {});
    assert.throws(
      () => method.requestDeserialize(Buffer.from([0x0a, 0xff])),
      "bad bytes still fail to decode",
    );
  } finally {
    registry.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
