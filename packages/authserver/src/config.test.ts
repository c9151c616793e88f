import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { loadConfigFile, parseConfig } from "./config.js";
import { ConfigError } from "./errors.js";

const minimal = {
  tls: { certFile: "/etc/cp/server.pem", keyFile: "/etc/cp/server.key" },
  databaseFile: "/var/lib/auth/auth.db",
  signingKeyFile: "/var/lib/auth/key.jwk",
};

function problemsOf(raw: unknown, env: NodeJS.ProcessEnv = {}): readonly string[] {
  try {
    parseConfig(raw, { env });
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.reason, "invalid_config");
    return err.problems;
  }
  assert.fail("config was accepted");
}

test("defaults: Hydra's public port on loopback, the admin socket beside the database, 1 h tokens, info logs", () => {
  const c = parseConfig(minimal, { env: {} });
  assert.deepEqual(c.public, { host: "127.0.0.1", port: 4444 });
  assert.deepEqual(c.admin, { socket: "/var/lib/auth/admin.sock" });
  assert.equal(c.accessTokenTtlSeconds, 3600);
  assert.equal(c.audience, "urn:clawker:controlplane");
  assert.equal(c.logLevel, "info");
  assert.equal(c.issuer, undefined);
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.tls));
});

test("every problem is listed in one error", () => {
  const problems = problemsOf({
    issuer: "http://127.0.0.1:4444",
    admin: { socket: "" },
    tls: { certFile: "" },
    accessTokenTtlSeconds: 0,
    surprise: true,
  });
  const text = problems.join("\n");
  for (const needle of [
    "issuer",
    "admin.socket",
    "tls.certFile",
    "tls.keyFile",
    "databaseFile",
    "signingKeyFile",
    "accessTokenTtlSeconds",
    "surprise",
  ]) {
    assert.match(text, new RegExp(needle.replace(".", "\\.")), `missing ${needle} in:\n${text}`);
  }
});

test("the admin API has no TCP listener: admin.host and admin.port are refused with the reason", () => {
  for (const admin of [{ host: "127.0.0.1" }, { port: 4445 }, { host: "::1", port: 0 }]) {
    const problems = problemsOf({ ...minimal, admin });
    for (const key of Object.keys(admin)) {
      assert.ok(
        problems.some((p) => p.startsWith(`admin.${key}: the admin API listens only on a Unix socket`)),
        `${JSON.stringify(admin)}: ${problems.join("; ")}`,
      );
    }
  }
});

test("admin.socket: relative to the config file's directory, and at most 107 bytes", () => {
  const c = parseConfig({ ...minimal, admin: { socket: "run/a.sock" } }, { env: {}, baseDir: "/etc/cp" });
  assert.equal(c.admin.socket, "/etc/cp/run/a.sock");
  const long = `/${"d".repeat(100)}/admin.sock`;
  const problems = problemsOf({ ...minimal, admin: { socket: long } });
  assert.match(
    problems.join("\n"),
    /^admin\.socket: .* is 112 bytes; a Unix socket path holds at most 107$/m,
  );
});

test("issuer must be an https origin; required with a wildcard public bind", () => {
  assert.ok(
    problemsOf({ ...minimal, issuer: "https://a.example/hydra" }).some((p) => p.startsWith("issuer:")),
  );
  assert.ok(
    problemsOf({ ...minimal, issuer: "https://a.example/?x=1" }).some((p) => p.startsWith("issuer:")),
  );
  assert.ok(problemsOf({ ...minimal, public: { host: "0.0.0.0" } }).some((p) => p.startsWith("issuer:")));
  const c = parseConfig(
    { ...minimal, issuer: "https://cp.example:4444/", public: { host: "0.0.0.0" } },
    { env: {} },
  );
  assert.equal(c.issuer, "https://cp.example:4444/");
});

test("env overrides the log level, and is validated like the file", () => {
  assert.equal(parseConfig(minimal, { env: { CLAWKER_AUTHSERVER_LOG_LEVEL: "debug" } }).logLevel, "debug");
  assert.ok(
    problemsOf(minimal, { CLAWKER_AUTHSERVER_LOG_LEVEL: "loud" }).some((p) => p.startsWith("logLevel:")),
  );
});

test("loadConfigFile resolves relative paths against the file's directory and reports bad JSON", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "authserver-config-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "auth.json");
  writeFileSync(
    file,
    JSON.stringify({
      ...minimal,
      tls: { certFile: "tls/cert.pem", keyFile: "tls/key.pem" },
      databaseFile: "db",
    }),
  );
  const c = loadConfigFile(file, {});
  assert.equal(c.tls.certFile, join(dir, "tls/cert.pem"));
  assert.equal(c.databaseFile, join(dir, "db"));
  assert.equal(c.signingKeyFile, "/var/lib/auth/key.jwk");

  writeFileSync(file, "{ not json");
  assert.throws(
    () => loadConfigFile(file, {}),
    (err: unknown) => err instanceof ConfigError && /JSON/.test(err.message),
  );
  assert.throws(() => loadConfigFile(join(dir, "missing.json"), {}), { reason: "config_unreadable" });
});

test("parsing the config compiles no code: zod's eval fast path pays off only for repeated parses", async () => {
  // In a process of its own: the fast path is compiled once per schema, so any earlier parse in
  // this process would hide it. The schemas are built (at import) before Function is watched.
  const script = [
    `const { parseConfig } = await import(${JSON.stringify(new URL("./config.ts", import.meta.url).href)});`,
    "const Real = globalThis.Function;",
    "let compiled = 0;",
    "globalThis.Function = new Proxy(Real, { construct: (t, a, n) => (compiled++, Reflect.construct(t, a, n)) });",
    `parseConfig(${JSON.stringify(minimal)}, { env: {} });`,
    "process.stdout.write(String(compiled));",
  ].join("\n");
  const { stdout } = await promisify(execFile)(process.execPath, [
    "--import",
    "tsx",
    "--conditions=source",
    "--input-type=module",
    "-e",
    script,
  ]);
  assert.equal(stdout, "0");
});
