// Ory mode: generated configs checked against the upstream schemas (../shared/ory-schemas), the
// admin APIs on 0600 Unix sockets, the system secret's life cycle, and the Ory process path
// (spawn, health, client registration and replacement, token + introspection) against the FAKE
// Hydra/Kratos/Oathkeeper executables in test/fakes, because the real Ory binaries cannot be
// installed here.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { freePorts, waitFor } from "@clawker/test-support";
import { Ajv } from "ajv";
import { SignJWT, exportJWK, generateKeyPair } from "jose";
import { Agent, request } from "undici";
import { parse } from "yaml";
import {
  ClientRegistrationError,
  HttpIntrospector,
  OryConfigInvalidError,
  OrySchemaValidator,
  OrySchemasMissingError,
  OrySecretError,
  accessRules,
  buildOryConfigs,
  oryAdminSockets,
  clawkerClients,
  loadOrCreateSystemSecret,
  oryAssetsDir,
  oryCommands,
  oryUrls,
  parseOrySettings,
  registerClient,
  registerClients,
  writeOryConfigs,
  type OryConfigFiles,
  type OrySettings,
} from "../src/auth/index.js";
import { httpRequest, unixSocketUrl } from "../src/http-client.js";
import { ORY_SCHEMA_DIR, orySchemas, requires } from "../../../test/harness/preconditions.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";

const repoRoot = resolve(import.meta.dirname, "../../..");
let dir: string;
let pki: TestTrust;
let cachedValidator: OrySchemaValidator | undefined;

/** The upstream schemas' validator, or undefined after skipping `t` (failing it under CI) without them. */
function validatorFor(t: TestContext): OrySchemaValidator | undefined {
  if (!requires(t, orySchemas)) return undefined;
  return (cachedValidator ??= OrySchemaValidator.load(ORY_SCHEMA_DIR));
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "clawker-ory-"));
  pki = await mintTestTrust();
});
after(async () => {
  rmSync(dir, { recursive: true, force: true });
  await pki.close();
});

function settings(extra: Partial<Parameters<typeof parseOrySettings>[0]> = {}): OrySettings {
  return parseOrySettings({
    configDir: join(dir, "ory"),
    secretFile: join(dir, "secret"),
    tls: { certFile: pki.paths.controlPlaneServerCert, keyFile: pki.paths.controlPlaneServerKey },
    ...extra,
  });
}

void describe("Ory configs against the upstream schemas", () => {
  void test("every generated config validates: defaults, and postgres DSNs with other ports and levels", (t) => {
    const validator = validatorFor(t);
    if (validator === undefined) return;
    const variants = [
      settings(),
      settings({
        logLevel: "warn",
        hydra: { dsn: "postgres://hydra:pw@127.0.0.1:5432/hydra?sslmode=disable", publicPort: 14444 },
        kratos: { dsn: "postgresql://kratos@db/kratos", publicPort: 14433 },
        oathkeeper: { apiPort: 14456, proxyPort: 14457 },
      }),
      settings({ logLevel: "debug", hydra: { issuer: "https://auth.example.test/" } }),
    ];
    for (const s of variants) {
      const c = buildOryConfigs(s, "s".repeat(43));
      assert.deepEqual(validator.check("hydra", c.hydra), []);
      assert.deepEqual(validator.check("kratos", c.kratos), []);
      assert.deepEqual(validator.check("oathkeeper", c.oathkeeper), []);
      assert.deepEqual(validator.checkAccessRules(c.accessRules, c.oathkeeper), []);
    }
  });

  void test("a broken config is rejected with the path in the message", (t) => {
    const validator = validatorFor(t);
    if (validator === undefined) return;
    const c = buildOryConfigs(settings(), "s".repeat(43));
    const hydra = structuredClone(c.hydra) as { serve: { public: { port: unknown } } };
    hydra.serve.public.port = "4444";
    assert.throws(
      () => validator.validate("hydra", hydra),
      (e: unknown) =>
        e instanceof OryConfigInvalidError && /\/serve\/public\/port must be integer/.test(e.message),
    );
    const kratos = { ...c.kratos, bogus_key: true };
    assert.throws(
      () => validator.validate("kratos", kratos),
      (e: unknown) =>
        e instanceof OryConfigInvalidError &&
        e.message.includes("must NOT have additional properties (bogus_key)"),
    );
    const oathkeeper = structuredClone(c.oathkeeper) as { log: { level: string } };
    oathkeeper.log.level = "loud";
    assert.ok(validator.check("oathkeeper", oathkeeper).some((p) => p.startsWith("/log/level")));
  });

  void test("access rules are checked against Oathkeeper's pipeline schemas and enabled handlers", (t) => {
    const validator = validatorFor(t);
    if (validator === undefined) return;
    const c = buildOryConfigs(settings(), "s".repeat(43));
    assert.deepEqual(c.accessRules, [], "no rule: what one could protect is only on sockets now");
    assert.deepEqual(validator.checkAccessRules(c.accessRules, c.oathkeeper), []);
    // A rule as an operator might add one, against a config that enables its handlers.
    const oathkeeper = {
      ...c.oathkeeper,
      authenticators: {
        oauth2_introspection: {
          enabled: true,
          config: { introspection_url: "https://127.0.0.1:9/admin/oauth2/introspect" },
        },
      },
      authorizers: { allow: { enabled: true } },
      mutators: { noop: { enabled: true } },
    };
    const rule = {
      id: "example",
      match: { url: "https://127.0.0.1:4457/x/<**>", methods: ["GET"] },
      authenticators: [{ handler: "oauth2_introspection", config: { required_scope: ["admin"] } }],
      authorizer: { handler: "allow" },
      mutators: [{ handler: "noop" }],
      errors: [{ handler: "json" }],
    };
    assert.deepEqual(validator.checkAccessRules([rule], oathkeeper), []);
    const problems = validator.checkAccessRules(
      [
        {
          ...rule,
          authenticators: [{ handler: "oauth2_introspection", config: { required_scope: "admin" } }],
          mutators: [{ handler: "header" }],
        },
      ],
      oathkeeper,
    );
    assert.ok(
      problems.includes("/0/authenticators/0/config/required_scope must be array"),
      problems.join("\n"),
    );
    assert.ok(
      problems.includes("/0/mutators/0/handler header is not enabled in the config"),
      problems.join("\n"),
    );
    const withoutUrl = structuredClone(oathkeeper) as {
      authenticators: { oauth2_introspection: { config?: unknown } };
    };
    delete withoutUrl.authenticators.oauth2_introspection.config;
    assert.throws(
      () => validator.validateAccessRules([rule], withoutUrl),
      (e: unknown) => e instanceof OryConfigInvalidError && e.message.includes("introspection_url"),
    );
  });

  void test("Hydra's and Kratos' admin APIs are 0600 Unix sockets in the config dir, without TLS or a port; Oathkeeper stays on TCP", () => {
    const s = settings();
    const c = buildOryConfigs(s, "s".repeat(43)) as unknown as {
      hydra: { serve: Record<string, Record<string, unknown>> };
      kratos: { serve: Record<string, Record<string, unknown>> };
      oathkeeper: { serve: Record<string, Record<string, unknown>> };
    };
    const sockets = oryAdminSockets(s);
    assert.deepEqual(sockets, {
      hydra: join(s.configDir, "hydra-admin.sock"),
      kratos: join(s.configDir, "kratos-admin.sock"),
    });
    assert.deepEqual(c.hydra.serve["admin"], { host: `unix:${sockets.hydra}`, socket: { mode: 0o600 } });
    assert.deepEqual(c.kratos.serve["admin"], {
      host: `unix:${sockets.kratos}`,
      socket: { mode: 0o600 },
      base_url: "http://localhost/",
    });
    assert.equal(c.hydra.serve["public"]?.["host"], "127.0.0.1");
    assert.equal(c.kratos.serve["public"]?.["host"], "127.0.0.1");
    assert.equal(c.oathkeeper.serve["api"]?.["host"], "127.0.0.1");
    assert.equal(oryUrls(s).hydraAdmin, unixSocketUrl(sockets.hydra));
    assert.equal(oryUrls(s).kratosAdmin, unixSocketUrl(sockets.kratos));
    assert.doesNotMatch(JSON.stringify(c), /4445|4434/, "no admin port anywhere");
  });

  void test("settings naming an admin port are refused", () => {
    for (const extra of [{ hydra: { adminPort: 4445 } }, { kratos: { adminPort: 4434 } }]) {
      assert.throws(() => settings(extra as Parameters<typeof settings>[0]), /adminPort/);
    }
  });

  void test("an absent schema folder fails clearly, naming the path", () => {
    const missing = join(dir, "no-schemas-here");
    assert.throws(
      () => OrySchemaValidator.load(missing),
      (e: unknown) => e instanceof OrySchemasMissingError && e.message.includes(missing),
    );
  });

  void test("settings: a non-postgres DSN and a string port are listed together", () => {
    assert.throws(
      () =>
        parseOrySettings({
          configDir: dir,
          secretFile: join(dir, "s"),
          tls: { certFile: "c", keyFile: "k" },
          hydra: { dsn: "mysql://x", publicPort: "4444" as unknown as number },
        }),
      (e: unknown) => e instanceof Error && /memory/.test(e.message) && /publicPort/.test(e.message),
    );
  });

  void test("the written files are 0600 YAML equal to the validated objects", () => {
    const s = settings();
    const c = buildOryConfigs(s, "s".repeat(43));
    const files = writeOryConfigs(s, c);
    for (const f of [files.hydra, files.kratos, files.oathkeeper, files.accessRules]) {
      assert.equal(statSync(f).mode & 0o777, 0o600, f);
    }
    assert.deepEqual(parse(readFileSync(files.hydra, "utf8")), c.hydra);
    assert.deepEqual(parse(readFileSync(files.oathkeeper, "utf8")), c.oathkeeper);
    assert.deepEqual(JSON.parse(readFileSync(files.accessRules, "utf8")), c.accessRules);
  });

  void test("ory/access-rules.json is the generated rule set (none)", () => {
    const committed: unknown = JSON.parse(readFileSync(join(repoRoot, "ory/access-rules.json"), "utf8"));
    assert.deepEqual(committed, accessRules());
  });

  void test("ory/identity.schema.json is a draft-07 schema that accepts an operator and refuses junk", () => {
    const schema = JSON.parse(readFileSync(join(oryAssetsDir(), "identity.schema.json"), "utf8")) as object;
    const validate = new Ajv({ strict: false }).compile(schema);
    assert.equal(validate({ traits: { email: "op@example.test" } }), true);
    assert.equal(validate({ traits: { email: 5 } }), false);
    assert.equal(validate({ traits: {} }), false);
  });
});

void describe("system secret", () => {
  void test("generated once with mode 0600 and at least 32 random bytes, then reused", () => {
    const file = join(dir, "secret-a");
    const first = loadOrCreateSystemSecret(file);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.ok(Buffer.from(first, "base64url").length >= 32);
    assert.equal(loadOrCreateSystemSecret(file), first);
    assert.notEqual(loadOrCreateSystemSecret(join(dir, "secret-b")), first);
  });

  void test("a secret readable by others is refused, not used", () => {
    const file = join(dir, "secret-c");
    writeFileSync(file, "x".repeat(64), { mode: 0o644 });
    chmodSync(file, 0o644);
    assert.throws(
      () => loadOrCreateSystemSecret(file),
      (e: unknown) => e instanceof OrySecretError && e.reason === "insecure_permissions",
    );
  });

  void test("the secret reaches the configs only in derived form", () => {
    const secret = loadOrCreateSystemSecret(join(dir, "secret-d"));
    const c = buildOryConfigs(settings(), secret);
    const text = JSON.stringify(c);
    assert.ok(!text.includes(secret));
    const hydraSecrets = (c.hydra["secrets"] as { system: string[] }).system;
    assert.ok(hydraSecrets[0] !== undefined && hydraSecrets[0].length >= 32);
  });
});

void describe("Ory process path with the FAKE Hydra, Kratos and Oathkeeper executables", () => {
  const children: ChildProcess[] = [];
  let s: OrySettings;
  let files: OryConfigFiles;
  let http: Agent;
  const ca = (): string => pki.set.ca.certPem;
  /** A request to Hydra's admin socket. */
  const hydraAdmin = (method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: unknown) =>
    httpRequest(new URL(path, oryUrls(s).hydraAdmin), {
      method,
      signal: AbortSignal.timeout(5000),
      ...(body === undefined
        ? {}
        : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
    });

  before(async () => {
    const [hp, kp, oa, op] = await freePorts(4);
    s = settings({
      configDir: join(dir, "ory-run"),
      hydra: { publicPort: hp! },
      kratos: { publicPort: kp! },
      oathkeeper: { apiPort: oa!, proxyPort: op! },
    });
    const configs = buildOryConfigs(s, loadOrCreateSystemSecret(join(dir, "secret-run")));
    // Schema validity is the first describe's business; this one runs the fakes on the same configs.
    files = writeOryConfigs(s, configs);
    http = new Agent({ connect: { ca: ca() } });
    const fakes = { hydra: "fake-hydra.ts", kratos: "fake-kratos.ts", oathkeeper: "fake-oathkeeper.ts" };
    for (const cmd of oryCommands(s, files)) {
      // The real binaries' argv, handed to the fake of the same name.
      const child = spawn(
        process.execPath,
        ["--import", "tsx", join(repoRoot, "test/fakes", fakes[cmd.name]), ...cmd.args],
        {
          cwd: repoRoot,
          stdio: ["ignore", "inherit", "pipe"],
        },
      );
      let stderr = "";
      child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
      children.push(child);
      await waitFor(
        async () => {
          if (child.exitCode !== null) throw new Error(`${cmd.name} exited: ${stderr}`);
          const res = await httpRequest(cmd.healthUrl, {
            tls: { ca: ca() },
            signal: AbortSignal.timeout(2000),
          });
          return res.status === 200;
        },
        { timeoutMs: 20_000, intervalMs: 100, what: `${cmd.name} healthy` },
      );
      assert.match(stderr, /FAKE/);
    }
  });

  after(async () => {
    for (const c of children.reverse()) {
      if (c.exitCode === null) {
        const exited = new Promise((r) => c.once("exit", r));
        c.kill("SIGTERM");
        await exited;
      }
    }
    await http.close();
  });

  void test("the admin sockets exist with mode 0600 in the 0700 config dir", () => {
    assert.equal(statSync(s.configDir).mode & 0o777, 0o700);
    for (const socket of Object.values(oryAdminSockets(s))) {
      const st = lstatSync(socket);
      assert.ok(st.isSocket(), socket);
      assert.equal(st.mode & 0o777, 0o600, socket);
    }
  });

  void test("clients are created (201), then found equal (409 + GET); a foreign clawker-cli is replaced", async () => {
    const { publicKey } = await generateKeyPair("ES256");
    const jwk = { ...(await exportJWK(publicKey)), alg: "ES256", use: "sig", kid: "k1" };
    const opts = { adminUrl: oryUrls(s).hydraAdmin };
    const first = await registerClients(clawkerClients({ keys: [jwk] }), opts);
    assert.deepEqual(
      [...first.entries()].map(([id, r]) => [id, r.outcome]),
      [
        ["clawker-cli", "created"],
        ["clawker-agent", "created"],
      ],
    );
    const second = await registerClients(clawkerClients({ keys: [jwk] }), opts);
    assert.deepEqual(
      [...second.values()].map((r) => r.outcome),
      ["exists", "exists"],
    );
    const res = await hydraAdmin("GET", "/admin/clients/clawker-agent");
    const body = JSON.parse(res.body) as Record<string, unknown>;
    assert.equal(res.status, 200);
    assert.equal(body["scope"], "agent:self:register agent:self:request");
    assert.equal(body["token_endpoint_auth_method"], "private_key_jwt");
    assert.equal(body["token_endpoint_auth_signing_alg"], "ES256");
    assert.deepEqual(body["grant_types"], ["client_credentials"]);
    assert.equal((await hydraAdmin("GET", "/admin/clients/no-such-client")).status, 404);

    // A squatter's registration: their key, a jwks_uri, a broader scope, another auth method.
    const other = await generateKeyPair("ES256");
    assert.equal((await hydraAdmin("DELETE", "/admin/clients/clawker-cli")).status, 204);
    const squat = await hydraAdmin("POST", "/admin/clients", {
      client_id: "clawker-cli",
      grant_types: ["client_credentials", "authorization_code"],
      scope: "admin agent:self:register",
      token_endpoint_auth_method: "private_key_jwt",
      jwks: { keys: [await exportJWK(other.publicKey)] },
      jwks_uri: "https://squatter.example/jwks.json",
      audience: ["https://squatter.example"],
    });
    assert.equal(squat.status, 201);
    const third = await registerClients(clawkerClients({ keys: [jwk] }), opts);
    assert.deepEqual(third.get("clawker-cli"), {
      outcome: "replaced",
      differences: [
        "jwks",
        "jwks_uri",
        "grant_types",
        "scope",
        "token_endpoint_auth_signing_alg",
        "audience",
      ],
    });
    const restored = JSON.parse((await hydraAdmin("GET", "/admin/clients/clawker-cli")).body) as Record<
      string,
      unknown
    >;
    assert.equal(restored["scope"], "admin");
    assert.equal(restored["jwks_uri"], undefined, "PUT replaced the whole client");
    assert.deepEqual(
      [...(await registerClients(clawkerClients({ keys: [jwk] }), opts)).values()].map((r) => r.outcome),
      ["exists", "exists"],
    );
  });

  void test("a rejected client (400) is a typed error with the status, not retried", async () => {
    const started = Date.now();
    await assert.rejects(
      registerClient(
        { clientId: "broken", scope: "admin", jwks: { keys: "not-a-key-list" } as unknown as { keys: [] } },
        { adminUrl: oryUrls(s).hydraAdmin, budgetMs: 5000 },
      ),
      (e: unknown) =>
        e instanceof ClientRegistrationError && e.reason === "http_status" && e.httpStatus === 400,
    );
    assert.ok(Date.now() - started < 4000, "gave up at once instead of spending the budget");
  });

  void test("an unreachable admin socket exhausts the budget with a typed error", async () => {
    await assert.rejects(
      registerClient(clawkerClients({ keys: [] })[0]!, {
        adminUrl: unixSocketUrl(join(dir, "nobody-listens.sock")),
        budgetMs: 400,
        initialBackoffMs: 50,
      }),
      (e: unknown) => e instanceof ClientRegistrationError && e.reason === "budget_exhausted",
    );
  });

  void test("a registered client gets a token whose introspection the Introspector reads", async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const jwk = { ...(await exportJWK(publicKey)), alg: "ES256", use: "sig", kid: "k2" };
    const spec = { clientId: "clawker-test-client", scope: "admin", jwks: { keys: [jwk] } };
    assert.deepEqual(await registerClient(spec, { adminUrl: oryUrls(s).hydraAdmin }), {
      outcome: "created",
      differences: [],
    });
    const tokenUrl = `${oryUrls(s).hydraPublic}/oauth2/token`;
    const assertion = await new SignJWT({})
      .setProtectedHeader({ alg: "ES256", kid: "k2" })
      .setIssuer(spec.clientId)
      .setSubject(spec.clientId)
      .setAudience(tokenUrl)
      .setJti(crypto.randomUUID())
      .setIssuedAt()
      .setExpirationTime("30s")
      .sign(privateKey);
    const res = await request(tokenUrl, {
      dispatcher: http,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "client_credentials",
        scope: "admin",
        client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion: assertion,
      }).toString(),
    });
    const token = (await res.body.json()) as { access_token: string };
    assert.equal(res.statusCode, 200);
    const introspector = new HttpIntrospector({ adminUrl: oryUrls(s).hydraAdmin });
    try {
      const r = await introspector.introspect(token.access_token);
      assert.deepEqual(
        [r.active, r.scope, r.clientId, r.tokenUse],
        [true, "admin", spec.clientId, "access_token"],
      );
      assert.equal((await introspector.introspect(token.access_token + "x")).active, false);
    } finally {
      await introspector.close();
    }
  });

  void test("SIGTERM stops each FAKE with exit 0, frees its ports and removes its sockets (last: runs after the others)", async () => {
    // Declared last so the other tests of this suite have run; node:test runs them in order.
    const ports = [s.hydra.publicPort, s.kratos.publicPort, s.oathkeeper.apiPort, s.oathkeeper.proxyPort];
    for (const c of children) {
      const exited = new Promise<number | null>((r) => c.once("exit", (code) => r(code)));
      c.kill("SIGTERM");
      assert.equal(await exited, 0);
    }
    for (const port of ports) {
      const refused = await new Promise<boolean>((resolve) => {
        const sock = createConnection({ host: "127.0.0.1", port });
        sock.once("connect", () => {
          sock.destroy();
          resolve(false);
        });
        sock.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
      });
      assert.ok(refused, `port ${port} still open`);
    }
    for (const socket of Object.values(oryAdminSockets(s))) {
      assert.throws(() => lstatSync(socket), { code: "ENOENT" }, socket);
    }
  });
});
