// The harness refuses a test's `controlplane up --container` that would serve the system's admin
// socket, which every other test's CLI beside it would dial first.
import assert from "node:assert/strict";
import { test } from "node:test";
import { assertPrivateAdminSocket, clawker } from "./clawker-cli.js";

test("up --container needs an admin socket of the test's own; other commands do not", () => {
  const up = ["controlplane", "up", "--container", "--image", "x"];
  assert.throws(() => assertPrivateAdminSocket(up, {}), /CLAWKER_ADMIN_SOCKET .*\/run\/clawker\/admin\.sock/);
  assert.throws(() => assertPrivateAdminSocket(up, { CLAWKER_ADMIN_SOCKET: "" }), /CLAWKER_ADMIN_SOCKET/);
  assertPrivateAdminSocket(up, { CLAWKER_ADMIN_SOCKET: "/tmp/t/run/admin.sock" });
  assertPrivateAdminSocket([...up, "--admin-socket", "/tmp/t/run/admin.sock"], {});
  assertPrivateAdminSocket(["controlplane", "up"], {});
  assertPrivateAdminSocket(["controlplane", "agents"], {});
  // clawker() checks before it starts anything.
  assert.throws(() => clawker(up, { env: {} }), /CLAWKER_ADMIN_SOCKET/);
});
