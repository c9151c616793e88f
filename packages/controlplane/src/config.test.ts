import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ConfigError, loadConfig } from "./config.js";

function tempFile(t: { after(fn: () => void): void }, name: string, content: string): string {
  const dir = mkdtempSync(join(tmpdir(), "clawker-config-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

test("defaults bind every listener to loopback on the documented ports", () => {
  const cfg = loadConfig(undefined, { HOME: "/home/u" });
  assert.deepEqual(cfg.listen, {
    admin: { host: "127.0.0.1", port: 7443 },
    agent: { host: "127.0.0.1", port: 7444 },
    health: { host: "127.0.0.1", port: 7080 },
  });
  assert.equal(cfg.auth.mode, "embedded");
  assert.equal(cfg.auth.publicPort, 4444);
  assert.equal("adminPort" in cfg.auth, false, "the auth admin API has no port: it is a Unix socket");
  assert.ok(Object.isFrozen(cfg) && Object.isFrozen(cfg.listen.admin));
});

test("a YAML file and env overrides combine, env winning", (t) => {
  const file = tempFile(
    t,
    "cp.yaml",
    "dataDir: /tmp/x\nlisten:\n  admin: { port: 9000 }\nlog: { level: debug }\n",
  );
  const cfg = loadConfig(file, { CLAWKER_CP_ADMIN_ADDR: "127.0.0.2:9100", CLAWKER_CP_LOG_LEVEL: "warn" });
  assert.equal(cfg.dataDir, "/tmp/x");
  assert.deepEqual(cfg.listen.admin, { host: "127.0.0.2", port: 9100 });
  assert.equal(cfg.log.level, "warn");
});

test("every problem is listed in one error", (t) => {
  const file = tempFile(
    t,
    "cp.json",
    JSON.stringify({
      listen: { admin: { port: "7443" }, agent: { port: 70000 } },
      auth: { mode: "hydra" },
      bogus: 1,
    }),
  );
  let problems = "";
  assert.throws(
    () => loadConfig(file, { CLAWKER_CP_HEALTH_ADDR: "nonsense" }),
    (e: unknown) => {
      problems = e instanceof ConfigError ? e.problems.join("\n") : "";
      return e instanceof ConfigError;
    },
  );
  for (const expected of [
    "CLAWKER_CP_HEALTH_ADDR",
    "listen.admin.port",
    "listen.agent.port",
    "auth.mode",
    "bogus",
  ]) {
    assert.match(problems, new RegExp(expected.replace(".", "\\.")), `missing ${expected} in:\n${problems}`);
  }
});

test("an unreadable or malformed file is a ConfigError naming the file", (t) => {
  const bad = tempFile(t, "cp.json", "{ not json");
  assert.throws(
    () => loadConfig(bad, {}),
    (e: unknown) => e instanceof ConfigError && e.message.includes(bad),
  );
  assert.throws(() => loadConfig("/nonexistent/cp.yaml", {}), /nonexistent\/cp\.yaml/);
  const list = tempFile(t, "cp.yaml", "- a\n- b\n");
  assert.throws(() => loadConfig(list, {}), /top level must be a mapping/);
});

test("the Ory DSN must be memory or postgres", (t) => {
  const file = tempFile(t, "cp.json", JSON.stringify({ auth: { ory: { dsn: "mysql://x" } } }));
  assert.throws(() => loadConfig(file, {}), /auth\.ory\.dsn/);
  const ok = tempFile(t, "ok.json", JSON.stringify({ auth: { ory: { dsn: "postgres://u@db/hydra" } } }));
  assert.equal(loadConfig(ok, {}).auth.ory.dsn, "postgres://u@db/hydra");
});

test("auth.adminPort and auth.ory.kratosAdminPort are refused, saying the admin API is a Unix socket now", (t) => {
  const file = tempFile(t, "cp.yaml", "auth:\n  adminPort: 4445\n  ory: { kratosAdminPort: 4434 }\n");
  let problems: readonly string[] = [];
  assert.throws(
    () => loadConfig(file, {}),
    (e: unknown) => {
      problems = e instanceof ConfigError ? e.problems : [];
      return e instanceof ConfigError;
    },
  );
  for (const key of ["auth.adminPort", "auth.ory.kratosAdminPort"]) {
    assert.ok(
      problems.some((p) => p.startsWith(`${key}: the auth admin API listens only on a Unix socket`)),
      `${key} in:\n${problems.join("\n")}`,
    );
  }
});

test("the firewall section: off by default, defaults filled, every bad field listed", (t) => {
  const cfg = loadConfig(undefined, { HOME: "/home/u" });
  assert.equal(cfg.firewall.enabled, false);
  assert.equal(cfg.firewall.dir, "firewall");
  assert.equal(cfg.firewall.network, "clawker-agents");
  assert.equal(cfg.firewall.floorFile, undefined);
  assert.equal(cfg.firewall.proxy.address, undefined, "default: the agents' network gateway, at bring-up");
  assert.deepEqual(
    [cfg.firewall.proxy.tlsPort, cfg.firewall.proxy.httpPort, cfg.firewall.proxy.routePorts],
    [15443, 15080, { first: 16000, count: 64 }],
  );
  assert.ok(
    cfg.firewall.forbidden.includes("127.0.0.0/8") && cfg.firewall.forbidden.includes("169.254.0.0/16"),
  );
  assert.equal(cfg.firewall.resolvers.length, 2);

  const file = tempFile(
    t,
    "cp.yaml",
    [
      "firewall:",
      "  floorFile: /etc/clawker/floor.yaml",
      "  clients: [172.20.0.0/16, 10.0.0.1/8]",
      "  proxy: { address: 0.0.0.0, tlsPort: 0, tlsPorts: 1 }",
      "  resolvers: [{ address: dns.example }]",
      "  forbidden: [not-an-address]",
      "",
    ].join("\n"),
  );
  let problems = "";
  assert.throws(
    () => loadConfig(file, {}),
    (e: unknown) => {
      problems = e instanceof ConfigError ? e.problems.join("\n") : "";
      return e instanceof ConfigError;
    },
  );
  for (const expected of [
    "firewall.clients.1: must be an IPv4 CIDR",
    "firewall.proxy.address: must be a specific address",
    "firewall.proxy.tlsPort",
    "firewall.proxy: Unrecognized key",
    "firewall.resolvers.0.address: must be a dotted IPv4 address",
    "firewall.forbidden.0: must be an IPv4 address or CIDR",
  ]) {
    assert.ok(problems.includes(expected), `missing ${expected} in:\n${problems}`);
  }
  const ok = tempFile(t, "ok.yaml", "firewall:\n  enabled: true\n  floorFile: /etc/clawker/floor.yaml\n");
  assert.equal(loadConfig(ok, {}).firewall.floorFile, "/etc/clawker/floor.yaml");
});
