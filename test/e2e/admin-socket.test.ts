// The admin Unix socket gated by a group (issue 12 §3), with real users: a temporary group and a
// member made with groupadd/useradd (removed afterwards), `nobody` as the outsider. The member
// lists agents through the real `clawker` CLI over the socket, with a group copy of the CA and the
// CLI signing key; the outsider gets "permission denied on <socket>" and exit 4; a token without
// the admin scope over the socket is still PERMISSION_DENIED; modes and owners are as documented.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, copyFileSync, lstatSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, test } from "node:test";
import { dialSocket, TokenSource } from "@clawker/adminclient";
import { AGENT_CLIENT } from "@clawker/proto";
import { Metadata, status } from "@grpc/grpc-js";
import type { CliResult } from "../harness/clawker-cli.js";
import { startControlPlane } from "../harness/controlplane.js";
import { REPO_ROOT } from "../harness/images.js";
import { command, root, skipReason } from "../harness/preconditions.js";
import { SECOND_USER } from "../harness/second-user.js";
import { waitFor } from "../harness/wait-for.js";

const run = promisify(execFile);

/** Runs the `clawker` CLI from source as `user` (runuser), with only PATH and HOME set. */
function clawkerAs(user: string, args: readonly string[], home: string): Promise<CliResult> {
  const argv = [
    "-u",
    user,
    "--",
    process.execPath,
    "--import",
    import.meta.resolve("tsx"),
    "--conditions=source",
    join(REPO_ROOT, "packages/cli/src/main.ts"),
    ...args,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn("runuser", argv, {
      cwd: "/",
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: home },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe(
  "admin socket gated by a group",
  {
    skip: skipReason(root, command("runuser"), command("groupadd"), command("useradd"), command("getent")),
  },
  () => {
    test("a member lists agents over the socket, an outsider is denied by the kernel, tokens still decide", async (t) => {
      const suffix = randomBytes(4).toString("hex");
      const group = `clawker-t${suffix}`;
      const member = `clawker-m${suffix}`;
      await run("groupadd", [group]);
      t.after(() => run("groupdel", [group]).catch(() => undefined));
      await run("useradd", [
        "-M",
        "-N",
        "-G",
        group,
        "-d",
        "/nonexistent",
        "-s",
        "/usr/sbin/nologin",
        member,
      ]);
      t.after(() => run("userdel", [member]).catch(() => undefined));
      const gid = Number((await run("getent", ["group", group])).stdout.split(":")[2]);

      // A world-traversable base (mkdtemp makes 0700), so only the socket's own directory gates.
      const base = mkdtempSync(join(tmpdir(), "clawker-gsock-"));
      t.after(() => rmSync(base, { recursive: true, force: true }));
      chmodSync(base, 0o755);
      const socketDir = join(base, "run");
      const socketPath = join(socketDir, "admin.sock");
      const cp = await startControlPlane({
        config: { listen: { adminSocket: { path: socketPath, group } } },
      });
      t.after(() => cp.close());

      // Modes and owners as documented: directory root:group 0750, socket root:group 0660.
      const dir = lstatSync(socketDir);
      assert.deepEqual([dir.uid, dir.gid, (dir.mode & 0o7777).toString(8)], [0, gid, "750"]);
      const sock = lstatSync(socketPath);
      assert.ok(sock.isSocket());
      assert.deepEqual([sock.uid, sock.gid, (sock.mode & 0o7777).toString(8)], [0, gid, "660"]);
      const serving = cp.logs.find((l) => l["event"] === "admin_socket_serving");
      assert.deepEqual([serving?.["path"], serving?.["gid"], serving?.["mode"]], [socketPath, gid, "660"]);

      // The group's copy of what a token needs (operations.md): the CA and the signing key 0640.
      const creds = join(base, "creds");
      mkdirSync(creds, { mode: 0o750 });
      chownSync(creds, 0, gid);
      chmodSync(creds, 0o750);
      copyFileSync(join(cp.trustDir, "ca.crt"), join(creds, "ca.crt"));
      chmodSync(join(creds, "ca.crt"), 0o644);
      copyFileSync(join(cp.trustDir, "cli-signing.jwk"), join(creds, "cli-signing.jwk"));
      chownSync(join(creds, "cli-signing.jwk"), 0, gid);
      chmodSync(join(creds, "cli-signing.jwk"), 0o640);

      const args = [
        "controlplane",
        "agents",
        "--admin-socket",
        socketPath,
        "--trust-dir",
        creds,
        "--token-endpoint",
        cp.tokenEndpoint,
        "--format",
        "json",
      ];
      // The member: over the socket (explicit, so no fallback to TCP, for which it has no leaf).
      const listed = await clawkerAs(member, args, base);
      assert.equal(listed.code, 0, listed.stderr);
      assert.deepEqual(JSON.parse(listed.stdout), { agents: [] });

      // The outsider: the kernel refuses the connect; the CLI names the socket and the group.
      const denied = await clawkerAs(SECOND_USER, args, base);
      assert.equal(denied.code, 4, denied.stderr);
      assert.equal(
        denied.stderr.trim(),
        `clawker: error: permission denied on ${socketPath}: add yourself to group ${group} (sudo usermod -aG ${group} $USER, then log in again)`,
      );

      // Over the socket the token still decides: no token, or one without the admin scope.
      const agentTokens = new TokenSource({
        ca: cp.trust!.ca.certPem,
        signingKey: cp.trust!.signingKey.privateJwk,
        tokenEndpoint: cp.tokenEndpoint,
        clientId: AGENT_CLIENT.clientId,
        scope: AGENT_CLIENT.scope,
      });
      t.after(() => agentTokens.close());
      const raw = dialSocket(socketPath);
      t.after(() => raw.close());
      const callWith = (authorization: string | undefined) =>
        new Promise<number>((resolve) => {
          const md = new Metadata();
          if (authorization !== undefined) md.set("authorization", authorization);
          raw.listAgents({}, md, (err) => resolve(err === null ? status.OK : err.code));
        });
      assert.equal(await callWith(`Bearer ${await agentTokens.token()}`), status.PERMISSION_DENIED);
      assert.equal(await callWith(undefined), status.UNAUTHENTICATED);
      // The daemon's log arrives over its stdout pipe, which may trail the refused call's status.
      await waitFor(
        () =>
          cp.logs.some(
            (l) => l["event"] === "auth_refused" && String(l["peer"]).startsWith(`unix:${socketPath}#`),
          ),
        { what: "refusals on the socket logged with the socket as the peer" },
      );

      // Drained: the socket file is gone.
      const code = await cp.close();
      assert.equal(
        code,
        0,
        JSON.stringify(cp.logs.filter((l) => ["drain_step", "stopped"].includes(String(l["event"])))),
      );
      assert.throws(() => lstatSync(socketPath), /ENOENT/);
    });
  },
);
