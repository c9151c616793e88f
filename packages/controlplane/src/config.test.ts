import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { authUrls } from "./auth-processes.js";
import { adminSocketPath, ConfigError, loadConfig } from "./config.js";

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
    adminSocket: { enabled: true, group: "clawker-admins" },
    limits: {
      handshakeTimeoutMs: 5_000,
      requestTimeoutMs: 10_000,
      idleTimeoutMs: 30_000,
      maxStreamsPerConnection: 100,
      maxConnectionsPerAgent: 8,
      introspectionsPerSecond: 10,
      introspectionBurst: 20,
      refusalsPerSecond: 20,
      tarpitMs: 1_000,
    },
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
  assert.equal(cfg.firewall.allowUnenforced, false, "deny by default: no stack without the eBPF enforcement");
  assert.equal(cfg.firewall.proxy.address, undefined, "default: the agents' network gateway, at bring-up");
  assert.deepEqual(
    [cfg.firewall.proxy.tlsPort, cfg.firewall.proxy.httpPort, cfg.firewall.proxy.routePorts],
    [15443, 15080, { first: 16000, count: 64 }],
  );
  assert.ok(
    cfg.firewall.forbidden.includes("127.0.0.0/8") && cfg.firewall.forbidden.includes("169.254.0.0/16"),
  );
  assert.equal(cfg.firewall.resolvers, undefined, "default: the host's resolv.conf, at bring-up");
  assert.deepEqual(cfg.firewall.dns, { port: 53 }, "no eBPF socket: the DNS gate records nothing");

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

test("ebpf.enabled: auto by default; true, false and auto from the file or CLAWKER_CP_EBPF; anything else listed", (t) => {
  assert.equal(loadConfig(undefined, { HOME: "/home/u" }).ebpf.enabled, "auto");
  for (const [env, want] of [
    ["true", true],
    ["false", false],
    ["auto", "auto"],
  ] as const) {
    assert.equal(loadConfig(undefined, { CLAWKER_CP_EBPF: env }).ebpf.enabled, want, env);
  }
  const file = tempFile(t, "ebpf.yaml", "ebpf:\n  enabled: false\n");
  assert.equal(loadConfig(file, {}).ebpf.enabled, false);
  assert.equal(loadConfig(file, { CLAWKER_CP_EBPF: "true" }).ebpf.enabled, true, "env wins over the file");
  assert.throws(
    () => loadConfig(undefined, { CLAWKER_CP_EBPF: "yes" }),
    (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.startsWith("ebpf.enabled:")),
  );
});

test("the audit section: defaults, and every bad field listed with its bound", (t) => {
  const cfg = loadConfig(undefined, { HOME: "/home/u" });
  assert.deepEqual(cfg.audit, {
    dir: "audit",
    maxFileBytes: 64 * 1024 * 1024,
    maxFiles: 8,
    maxBacklog: 65_536,
    syncIntervalMs: 1_000,
  });
  const file = tempFile(
    t,
    "audit.yaml",
    "audit:\n  maxFileBytes: 1000\n  maxFiles: 1\n  maxBacklog: 1.5\n  syncIntervalMs: -1\n  keep: 3\n",
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
    "audit.maxFileBytes: must be at least 65536 (64 KiB)",
    "audit.maxFiles: must be at least 2",
    "audit.maxBacklog:",
    "audit.syncIntervalMs:",
    "audit: Unrecognized key",
  ]) {
    assert.ok(problems.includes(expected), `missing ${expected} in:\n${problems}`);
  }
  const ok = tempFile(t, "ok.yaml", "audit:\n  dir: /var/log/clawker\n  maxFiles: 100\n");
  assert.equal(loadConfig(ok, {}).audit.maxFiles, 100);
});

test("auth.issuer: an https origin, embedded mode only, and the issuer authUrls reports", (t) => {
  const file = tempFile(
    t,
    "cp.json",
    JSON.stringify({ auth: { publicHost: "0.0.0.0", issuer: "https://127.0.0.1:4444" } }),
  );
  const cfg = loadConfig(file, {});
  assert.equal(cfg.auth.issuer, "https://127.0.0.1:4444");
  assert.equal(authUrls(cfg).publicUrl, "https://127.0.0.1:4444");
  // Without it the issuer is the listener's own address, as before.
  assert.equal(authUrls(loadConfig(undefined, { HOME: "/home/u" })).publicUrl, "https://127.0.0.1:4444");
  const bound = tempFile(
    t,
    "b.json",
    JSON.stringify({ auth: { publicHost: "10.213.0.2", publicPort: 4555 } }),
  );
  assert.equal(authUrls(loadConfig(bound, {})).publicUrl, "https://10.213.0.2:4555");
  for (const [issuer, why] of [
    ["http://127.0.0.1:4444", /auth\.issuer: must be an https URL/],
    ["https://127.0.0.1:4444/oauth2", /auth\.issuer: must be an https origin/],
    ["not a url", /auth\.issuer: must be an https URL/],
  ] as const) {
    const bad = tempFile(t, "bad.json", JSON.stringify({ auth: { issuer } }));
    assert.throws(() => loadConfig(bad, {}), why, issuer);
  }
  const ory = tempFile(
    t,
    "ory.json",
    JSON.stringify({ auth: { mode: "ory", issuer: "https://127.0.0.1:4444" } }),
  );
  assert.throws(() => loadConfig(ory, {}), /auth\.issuer: applies to the embedded auth server only/);
});

test("auth.aliases: https origins, embedded mode only, none by default", (t) => {
  assert.deepEqual(loadConfig(undefined, { HOME: "/home/u" }).auth.aliases, []);
  const file = tempFile(t, "a.json", JSON.stringify({ auth: { aliases: ["https://10.213.0.2:4444"] } }));
  assert.deepEqual(loadConfig(file, {}).auth.aliases, ["https://10.213.0.2:4444"]);
  for (const [alias, why] of [
    ["http://10.213.0.2:4444", /auth\.aliases\.0: must be an https URL/],
    ["https://10.213.0.2:4444/oauth2/token", /auth\.aliases\.0: must be an https origin/],
  ] as const) {
    const bad = tempFile(t, "bad.json", JSON.stringify({ auth: { aliases: [alias] } }));
    assert.throws(() => loadConfig(bad, {}), why, alias);
  }
  const ory = tempFile(
    t,
    "ory.json",
    JSON.stringify({ auth: { mode: "ory", aliases: ["https://10.213.0.2:4444"] } }),
  );
  assert.throws(() => loadConfig(ory, {}), /auth\.aliases: applies to the embedded auth server only/);
});

test("memoryRelief: on by default (10 s quiet, 24 MiB margin); a sub-100 ms window or a negative margin is refused", (t) => {
  assert.deepEqual(loadConfig(undefined, { HOME: "/home/u" }).memoryRelief, {
    enabled: true,
    idleMs: 10_000,
    marginMiB: 24,
  });
  const file = tempFile(
    t,
    "cp.json",
    JSON.stringify({ memoryRelief: { idleMs: 10, marginMiB: -1, every: 1 } }),
  );
  let problems = "";
  assert.throws(
    () => loadConfig(file, {}),
    (e: unknown) => {
      problems = e instanceof ConfigError ? e.problems.join("\n") : "";
      return e instanceof ConfigError;
    },
  );
  for (const key of ["memoryRelief.idleMs", "memoryRelief.marginMiB", "memoryRelief"]) {
    assert.ok(problems.includes(`${key}:`), `${key} in:\n${problems}`);
  }
  assert.match(problems, /every/);
});

test("the admin socket: beside the data dir by default, a path or a gid when set, and at most 107 bytes", (t) => {
  const cfg = loadConfig(undefined, { CLAWKER_CP_DATA_DIR: "/var/lib/cp" });
  assert.equal(adminSocketPath(cfg), "/var/lib/cp/run/admin.sock");
  const env = loadConfig(undefined, { CLAWKER_CP_ADMIN_SOCKET: "/run/clawker/admin.sock" });
  assert.equal(adminSocketPath(env), "/run/clawker/admin.sock");
  const gid = loadConfig(tempFile(t, "g.json", JSON.stringify({ listen: { adminSocket: { group: 1234 } } })));
  assert.equal(gid.listen.adminSocket.group, 1234);
  const long = `/${"d".repeat(100)}`;
  assert.throws(
    () => loadConfig(undefined, { CLAWKER_CP_DATA_DIR: long }),
    (e: unknown) =>
      e instanceof ConfigError && e.problems.some((p) => p.startsWith("listen.adminSocket.path: ")),
  );
  const off = loadConfig(
    tempFile(t, "off.json", JSON.stringify({ listen: { adminSocket: { enabled: false } } })),
    { CLAWKER_CP_DATA_DIR: long },
  );
  assert.equal(off.listen.adminSocket.enabled, false, "a long data dir is fine with the socket off");
  assert.throws(
    () => loadConfig(undefined, { CLAWKER_CP_ADMIN_SOCKET: `${long}/admin.sock` }),
    /listen\.adminSocket\.path: a Unix socket path holds at most 107 bytes/,
  );
});

test("agentLimits default to the seed's; a memory max under Docker's 6 MiB is refused by name", (t) => {
  assert.deepEqual(loadConfig(undefined, { HOME: "/home/u" }).agentLimits, {
    cpus: 0.1,
    memoryBytes: 512 << 20,
    pidsLimit: 0,
    deviceReadBps: 10 << 20,
    deviceWriteBps: 5 << 20,
    deviceReadIops: 1000,
    deviceWriteIops: 1000,
  });
  const file = tempFile(t, "cp.yaml", "agentLimits:\n  memoryBytes: 1024\n");
  assert.throws(() => loadConfig(file, {}), /agentLimits\.memoryBytes.*at least 6 MiB/s);
});

test("parsing the config compiles no code: zod's eval fast path pays off only for repeated parses", async () => {
  // In a process of its own: the fast path is compiled once per schema, so any earlier parse in
  // this process would hide it. The schemas are built (at import) before Function is watched.
  const script = [
    `const { loadConfig } = await import(${JSON.stringify(new URL("./config.ts", import.meta.url).href)});`,
    "const Real = globalThis.Function;",
    "let compiled = 0;",
    "globalThis.Function = new Proxy(Real, { construct: (t, a, n) => (compiled++, Reflect.construct(t, a, n)) });",
    "loadConfig(undefined, {});",
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
