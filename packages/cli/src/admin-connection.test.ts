import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { adminSocketChoice, connectAdmin, SYSTEM_ADMIN_SOCKET, withAdmin } from "./admin-connection.js";
import { CliError, ExitCode } from "./exit-codes.js";

void describe("adminSocketChoice", () => {
  test("explicit flag or env; --admin or $CLAWKER_CP_ADMIN_ADDR means TCP; else the data dir's socket, then the system one", () => {
    assert.deepEqual(
      adminSocketChoice({ "admin-socket": "/s/a.sock" }, { CLAWKER_ADMIN_SOCKET: "/e.sock" }),
      {
        explicit: "/s/a.sock",
      },
    );
    assert.deepEqual(adminSocketChoice({ admin: "127.0.0.1:7443" }, { CLAWKER_ADMIN_SOCKET: "/e.sock" }), {
      explicit: "/e.sock",
    });
    assert.equal(adminSocketChoice({ admin: "127.0.0.1:7443" }, {}), undefined);
    assert.equal(adminSocketChoice({}, { CLAWKER_CP_ADMIN_ADDR: "127.0.0.1:9443" }), undefined);
    assert.deepEqual(
      adminSocketChoice({}, { CLAWKER_CP_ADMIN_ADDR: "127.0.0.1:9443", CLAWKER_ADMIN_SOCKET: "/e.sock" }),
      {
        explicit: "/e.sock",
      },
    );
    assert.deepEqual(adminSocketChoice({}, { CLAWKER_CP_ADMIN_ADDR: "", CLAWKER_CP_DATA_DIR: "/d" }), {
      candidates: ["/d/run/admin.sock", SYSTEM_ADMIN_SOCKET],
    });
    assert.deepEqual(adminSocketChoice({}, { CLAWKER_CP_DATA_DIR: "/d" }), {
      candidates: ["/d/run/admin.sock", SYSTEM_ADMIN_SOCKET],
    });
    const relative = adminSocketChoice({ "admin-socket": "rel.sock" }, {});
    assert.ok(relative !== undefined && "explicit" in relative && relative.explicit.startsWith("/"));
  });
});

void describe("connectAdmin on a socket", () => {
  test("an explicit socket nobody answers on is exit 3 naming it, never TCP instead", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "clawker-sock-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, "admin.sock");
    await assert.rejects(
      connectAdmin({
        trustDir: dir,
        admin: "127.0.0.1:1",
        tokenEndpoint: "https://127.0.0.1:1/oauth2/token",
        socket: { explicit: path },
      }),
      (e: unknown) =>
        e instanceof CliError &&
        e.exitCode === ExitCode.notRunning &&
        e.message.includes(`admin socket ${path}`),
    );
  });

  test("candidates that do not answer fall through to TCP; one that answers is used", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "clawker-sock-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const live = join(dir, "live.sock");
    const server = createServer((s) => s.destroy());
    await new Promise<void>((resolve) => server.listen(live, resolve));
    t.after(() => server.close());
    // No trust files: which loader fails says which way the CLI went (TCP reads ca.crt first, the
    // socket's loader the signing key).
    await assert.rejects(
      connectAdmin({
        trustDir: dir,
        admin: "127.0.0.1:1",
        tokenEndpoint: "https://127.0.0.1:1/oauth2/token",
        socket: { candidates: [join(dir, "absent.sock")] },
      }),
      (e: unknown) => e instanceof Error && e.message.endsWith("ca.crt does not exist"),
    );
    await assert.rejects(
      connectAdmin({
        trustDir: dir,
        admin: "127.0.0.1:1",
        tokenEndpoint: "https://127.0.0.1:1/oauth2/token",
        socket: { candidates: [join(dir, "absent.sock"), live] },
      }),
      (e: unknown) => e instanceof Error && e.message.includes("cli-signing.jwk does not exist"),
    );
  });
});

void describe("withAdmin", () => {
  test("dials as the command's options say and runs nothing when it cannot connect", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "clawker-sock-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, "admin.sock");
    const values = { "trust-dir": dir, admin: "127.0.0.1:1", "admin-socket": path };
    const io = { stdout: { write: () => undefined }, stderr: { write: () => undefined }, env: {} };
    let ran = false;
    const fn = (): Promise<void> => {
      ran = true;
      return Promise.resolve();
    };
    // By default the command's --admin-socket is used, never TCP instead.
    await assert.rejects(
      withAdmin(values, io, fn),
      (e: unknown) => e instanceof CliError && e.exitCode === ExitCode.notRunning,
    );
    // A command without the flag (socket: false) goes to TCP: the TCP loader wants ca.crt.
    await assert.rejects(
      withAdmin(values, io, fn, { socket: false }),
      (e: unknown) => e instanceof Error && e.message.endsWith("ca.crt does not exist"),
    );
    // --timeout is read (and checked) only by commands that have it.
    await assert.rejects(
      withAdmin({ ...values, timeout: "soon" }, io, fn, { socket: false, timeoutDefault: "30s" }),
      (e: unknown) => e instanceof CliError && e.exitCode === ExitCode.usage && e.message.includes("timeout"),
    );
    assert.equal(ran, false);
  });
});
