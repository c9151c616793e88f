import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { status } from "@grpc/grpc-js";
import { admin } from "@clawker/proto";
import Database from "better-sqlite3";
import { Registry } from "../agents/registry.js";
import {
  FirewallError,
  FloorRuleError,
  InvalidRuleError,
  InvalidSelectorError,
  firewallReasonStatus,
  firewallStatus,
} from "./errors.js";
import { type RuleInput, ruleToWire } from "./rule.js";
import { canonicalRules } from "./rule-validation.js";
import { type Actor, FLOOR_ACTOR, type RuleChange, RuleStore, type RuleStoreOptions } from "./rule-store.js";

const cli: Actor = { clientId: "clawker-cli", certCn: "alice" };
const other: Actor = { clientId: "clawker-cli", certCn: "bob" };

function tempPath(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "clawker-rules-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, "state", "controlplane.db");
}

/** A store on a fresh file, closed when the test ends; `now` counts up from 1000 ms (open takes one). */
function open(t: TestContext, path = tempPath(t), options: Partial<RuleStoreOptions> = {}): RuleStore {
  let clock = 1000;
  const store = new RuleStore({ db: path, now: () => clock++, ...options });
  t.after(() => store.close());
  return store;
}

/** Every row of every firewall table, read through a connection of its own. */
function dump(path: string): Record<string, unknown[]> {
  const db = new Database(path, { readonly: true });
  try {
    const out: Record<string, unknown[]> = {};
    for (const table of ["egress_rules", "route_identities", "rule_changes", "firewall_migrations"]) {
      out[table] = db
        .prepare(`SELECT * FROM ${table}`)
        .all()
        .map((row) => JSON.stringify(row))
        .sort();
    }
    return out;
  } finally {
    db.close();
  }
}

function keys(store: RuleStore): string[] {
  return store
    .list()
    .map(
      ({ rule, floor }) =>
        `${floor ? "F " : ""}${rule.scope.kind}:${rule.scope.name} ${rule.dst}:${rule.proto}:${rule.port}`,
    );
}

void test("add answers index-aligned statuses: added, then merged (modified) or unchanged", (t) => {
  const store = open(t);
  assert.deepEqual(store.add([{ dst: "a.test" }, { dst: "b.test", proto: "tcp", port: "22" }], cli), [
    "added",
    "added",
  ]);
  assert.deepEqual(
    store.add(
      [
        { dst: "c.test" },
        { dst: "A.TEST." }, // the same rule as a.test, spelt differently
        { dst: "b.test", proto: "tcp", port: "22", action: "deny" },
        { dst: "c.test", pathRules: [{ path: "/x" }] }, // merges onto the c.test added just before
        { dst: "c.test", pathRules: [{ path: "/x" }] },
      ],
      other,
    ),
    ["added", "unchanged", "modified", "modified", "unchanged"],
  );
  const c = store.list().find((l) => l.rule.dst === "c.test")!.rule;
  assert.deepEqual(c.pathRules, [{ path: "/x", action: "allow", methods: [] }]);
  assert.equal(store.list().find((l) => l.rule.dst === "b.test")!.rule.action, "deny");
});

void test("merge through the store: path_default kept when empty, path rules merged by path", (t) => {
  const store = open(t);
  store.add(
    [{ dst: "a.test", pathDefault: "deny", pathRules: [{ path: "/a" }, { path: "/b", action: "deny" }] }],
    cli,
  );
  assert.deepEqual(store.add([{ dst: "a.test", pathRules: [{ path: "/b", methods: ["GET"] }] }], cli), [
    "modified",
  ]);
  const rule = store.list()[0]!.rule;
  assert.equal(rule.pathDefault, "deny");
  assert.deepEqual(rule.pathRules, [
    { path: "/a", action: "allow", methods: [] },
    { path: "/b", action: "allow", methods: ["GET"] },
  ]);
});

void test("one invalid rule among 50 fails the call with its index and field, and writes nothing", (t) => {
  const path = tempPath(t);
  const store = open(t, path);
  store.add([{ dst: "before.test" }], cli);
  const before = dump(path);
  const inputs: RuleInput[] = Array.from({ length: 50 }, (_, i) => ({ dst: `host${i}.test` }));
  inputs[37] = { dst: "host37.test", proto: "tcp", port: "80-70" };
  assert.throws(
    () => store.add(inputs, cli),
    (err: unknown) => {
      assert.ok(err instanceof InvalidRuleError);
      assert.deepEqual(err.problems, [
        { index: 37, field: "port", message: "range 80-70 is reversed (write 70-80)" },
      ]);
      assert.equal(firewallStatus(err).code, status.INVALID_ARGUMENT);
      assert.match(firewallStatus(err).details, /rules\[37\]\.port: range 80-70 is reversed/);
      return true;
    },
  );
  assert.deepEqual(dump(path), before);
  assert.deepEqual(keys(store), ["global: before.test:https:443"]);
});

void test("a wildcard deeper than the layers' 8 labels fails the whole call up front, and writes nothing", (t) => {
  // Both layers refuse it at apply time: saved, it would turn every later reconcile into "rules
  // saved; will apply on the next reload".
  const path = tempPath(t);
  const store = open(t, path);
  store.add([{ dst: "before.test" }], cli);
  const before = dump(path);
  const inputs: RuleInput[] = [
    { dst: "ok.test" },
    { dst: "*.a.b.c.d.e.f.g.h.i" },
    { dst: "*.a.b.c.d.e.f.g.h" },
  ];
  assert.throws(
    () => store.add(inputs, cli),
    (err: unknown) => {
      assert.ok(err instanceof InvalidRuleError);
      assert.equal(err.problems.length, 1);
      assert.deepEqual({ ...err.problems[0], message: "" }, { index: 1, field: "dst", message: "" });
      assert.equal(firewallStatus(err).code, status.INVALID_ARGUMENT);
      assert.match(
        firewallStatus(err).details,
        /rules\[1\]\.dst: "\*\.a\.b\.c\.d\.e\.f\.g\.h\.i" is a wildcard over 9 labels; at most 8/,
      );
      return true;
    },
  );
  assert.deepEqual(dump(path), before);
  assert.deepEqual(keys(store), ["global: before.test:https:443"]);
});

void test("a failure inside the transaction rolls back every rule of the call", (t) => {
  const path = tempPath(t);
  const store = open(t, path);
  store.add([{ dst: "before.test" }], cli);
  // A real sqlite failure on the third insert, after two rules, identities and change rows went in.
  const db = new Database(path);
  db.exec(`CREATE TRIGGER boom BEFORE INSERT ON egress_rules WHEN NEW.dst = 'boom.test'
           BEGIN SELECT RAISE(ABORT, 'boom'); END`);
  db.close();
  const before = dump(path);
  assert.throws(
    () => store.add([{ dst: "one.test" }, { dst: "two.test" }, { dst: "boom.test" }], cli),
    /boom/,
  );
  assert.deepEqual(dump(path), before);
  assert.deepEqual(keys(store), ["global: before.test:https:443"]);
  assert.equal(store.identityOf("one.test"), undefined);
});

void test("onChange hears every committed rule_changes row, oldest first, and nothing rolled back", (t) => {
  const path = tempPath(t);
  const heard: RuleChange[] = [];
  const store = open(t, path, { onChange: (c) => heard.push(c) });
  store.add([{ dst: "a.test" }, { dst: "b.test" }], cli);
  store.add([{ dst: "a.test", pathRules: [{ path: "/x", action: "allow" }] }], other);
  store.remove({ dst: "b.test" }, other);
  assert.deepEqual(
    heard.map((c) => [c.op, c.actor.certCn, c.before?.dst ?? null, c.after?.dst ?? null]),
    [
      ["add", "alice", null, "a.test"],
      ["add", "alice", null, "b.test"],
      ["modify", "bob", "a.test", "a.test"],
      ["remove", "bob", "b.test", null],
    ],
  );
  assert.deepEqual(
    heard[2]!.after?.pathRules.map((p) => p.path),
    ["/x"],
  );
  // The same rows rule_changes holds, seq for seq.
  assert.deepEqual(
    heard.map((c) => c.seq),
    store
      .changes()
      .map((c) => c.seq)
      .reverse(),
  );
  const db = new Database(path);
  db.exec(`CREATE TRIGGER boom BEFORE INSERT ON egress_rules WHEN NEW.dst = 'boom.test'
           BEGIN SELECT RAISE(ABORT, 'boom'); END`);
  db.close();
  assert.throws(() => store.add([{ dst: "one.test" }, { dst: "boom.test" }], cli), /boom/);
  assert.equal(heard.length, 4, "the rolled-back add of one.test was not reported");
});

void test("scopes: global, project and agent rules with one dst:proto:port are three rules, isolated", (t) => {
  const store = open(t);
  const rule = { dst: "registry.test" };
  assert.deepEqual(
    store.add([rule, { ...rule, project: "web" }, { ...rule, project: "web", agentName: "dev" }], cli),
    ["added", "added", "added"],
  );
  assert.deepEqual(keys(store), [
    "global: registry.test:https:443",
    "project:web registry.test:https:443",
    "agent:web.dev registry.test:https:443",
  ]);
  // A deny in one project leaves the global and agent rules alone.
  assert.deepEqual(store.add([{ ...rule, project: "web", action: "deny" }], cli), ["modified"]);
  assert.deepEqual(
    store.list().map((l) => l.rule.action),
    ["allow", "deny", "allow"],
  );
  assert.deepEqual(store.list({ scope: { kind: "project", name: "web" } }).length, 1);
  // Another project's name finds nothing.
  assert.deepEqual(store.remove({ ...rule, project: "api" }, cli), { status: "not_found", count: 0 });
  // `all` without a scope removes only global rules.
  store.add([{ dst: "other.test" }], cli);
  assert.deepEqual(store.remove({ all: true }, cli), { status: "removed", count: 2 });
  assert.deepEqual(keys(store), [
    "project:web registry.test:https:443",
    "agent:web.dev registry.test:https:443",
  ]);
  assert.deepEqual(store.remove({ all: true }, cli), { status: "not_found", count: 0 });
  // `all` with the agent's scope removes only that agent's rules.
  assert.deepEqual(store.remove({ all: true, project: "web", agentName: "dev" }, cli), {
    status: "removed",
    count: 1,
  });
  assert.deepEqual(keys(store), ["project:web registry.test:https:443"]);
});

void test("remove: one rule, one path rule, not found; any spelling of the key finds the rule", (t) => {
  const store = open(t);
  store.add([{ dst: "a.test", pathRules: [{ path: "/x" }, { path: "~/y/.*" }] }, { dst: "b.test" }], cli);
  assert.deepEqual(store.remove({ dst: "A.test", path: "/nope" }, cli), { status: "not_found", count: 0 });
  assert.deepEqual(store.remove({ dst: "a.test", proto: "HTTPS", port: "443", path: "~/y/.*" }, cli), {
    status: "path_removed",
    count: 1,
  });
  assert.deepEqual(
    store.list()[0]!.rule.pathRules.map((p) => p.path),
    ["/x"],
  );
  assert.deepEqual(store.remove({ dst: "b.test." }, cli), { status: "removed", count: 1 });
  assert.deepEqual(store.remove({ dst: "b.test" }, cli), { status: "not_found", count: 0 });
  assert.deepEqual(store.remove({ dst: "a.test", proto: "http" }, cli), { status: "not_found", count: 0 });
  assert.deepEqual(keys(store), ["global: a.test:https:443"]);
});

void test("malformed remove requests are INVALID_ARGUMENT and change nothing", (t) => {
  const path = tempPath(t);
  const store = open(t, path);
  store.add([{ dst: "a.test" }], cli);
  const before = dump(path);
  for (const [selector, error, message] of [
    [{ all: true, dst: "a.test" }, InvalidSelectorError, /takes no dst/],
    [{ all: true, path: "/x", port: "443" }, InvalidSelectorError, /takes no port, path/],
    [{}, InvalidRuleError, /dst: is required/],
    [{ dst: "a.test", path: "x" }, InvalidRuleError, /path: "x" must start with/],
    [{ all: true, project: "a.b" }, InvalidRuleError, /project: "a\.b" is not a name/],
  ] as const) {
    assert.throws(
      () => store.remove(selector, cli),
      (err: unknown) => {
        assert.ok(err instanceof error, JSON.stringify(selector));
        assert.match((err as Error).message, message);
        assert.equal(firewallStatus(err).code, status.INVALID_ARGUMENT);
        return true;
      },
    );
  }
  assert.deepEqual(dump(path), before);
});

void test("rule_changes records when, who and what; newest first; filtered by dst or scope; append-only", (t) => {
  const path = tempPath(t);
  const store = open(t, path);
  store.add([{ dst: "a.test" }, { dst: "a.test", proto: "tcp", port: "22", project: "web" }], cli);
  store.add([{ dst: "a.test", action: "deny" }, { dst: "b.test" }], other);
  store.add([{ dst: "a.test", action: "deny" }], other); // unchanged: no row
  store.remove({ dst: "a.test" }, cli);
  const all = store.changes();
  assert.deepEqual(
    all.map((c) => [c.op, c.key, c.actor.certCn, c.atUnixMs]),
    [
      ["remove", "global a.test:https:443", "alice", 1004],
      ["add", "global b.test:https:443", "bob", 1002],
      ["modify", "global a.test:https:443", "bob", 1002],
      ["add", "project:web a.test:tcp:22", "alice", 1001],
      ["add", "global a.test:https:443", "alice", 1001],
    ],
  );
  const [removed, , modified, , added] = all;
  assert.equal(added!.before, undefined);
  assert.equal(added!.after?.action, "allow");
  assert.equal(modified!.before?.action, "allow");
  assert.equal(modified!.after?.action, "deny");
  assert.deepEqual(modified!.actor, other);
  assert.equal(removed!.before?.action, "deny");
  assert.equal(removed!.after, undefined);
  // "Who allowed a.test?"
  assert.deepEqual(
    store.changes({ dst: "a.test", scope: { kind: "global", name: "" } }).map((c) => c.op),
    ["remove", "modify", "add"],
  );
  assert.deepEqual(
    store.changes({ scope: { kind: "project", name: "web" } }).map((c) => c.key),
    ["project:web a.test:tcp:22"],
  );
  assert.equal(store.changes({ limit: 2 }).length, 2);
  assert.deepEqual(
    store.changes({ beforeSeq: all[1]!.seq, afterSeq: all[3]!.seq }).map((c) => c.seq),
    [all[2]!.seq],
  );
  // The log is not editable through sqlite either.
  const db = new Database(path);
  t.after(() => db.close());
  assert.throws(() => db.prepare("DELETE FROM rule_changes").run(), /append-only/);
  assert.throws(() => db.prepare("UPDATE rule_changes SET cert_cn = 'mallory'").run(), /append-only/);
});

void test("route identities are sticky: across reopen, across remove + add, never reused", (t) => {
  const path = tempPath(t);
  const first = new RuleStore({ db: path });
  first.add([{ dst: "a.test" }, { dst: "b.test" }, { dst: "a.test", proto: "tcp", port: "22" }], cli);
  const a = first.identityOf("a.test")!;
  const b = first.identityOf("b.test")!;
  assert.ok(a >= 1 && b >= 1 && a !== b);
  first.close();
  first.close(); // idempotent

  const store = open(t, path);
  assert.equal(store.identityOf("a.test"), a);
  assert.deepEqual(
    [...store.routeIdentities()],
    [
      ["a.test", a],
      ["b.test", b],
    ],
  );
  // Remove every a.test rule, then add another rule for a.test: the same identity.
  store.remove({ dst: "a.test" }, cli);
  store.remove({ dst: "a.test", proto: "tcp", port: "22" }, cli);
  assert.equal(store.routeIdentities().has("a.test"), false);
  store.add([{ dst: "a.test", proto: "http" }], cli);
  assert.equal(store.identityOf("a.test"), a);
  // A new destination never gets an identity another destination had.
  store.remove({ dst: "b.test" }, cli);
  store.add([{ dst: "c.test" }], cli);
  const c = store.identityOf("c.test")!;
  assert.ok(c > Math.max(a, b));
  assert.equal(store.list().find((l) => l.rule.dst === "c.test")!.identity, c);
  const db = new Database(path);
  t.after(() => db.close());
  assert.throws(() => db.prepare("UPDATE route_identities SET identity = 99").run(), /never renumbered/);
  assert.throws(() => db.prepare("DELETE FROM route_identities").run(), /never freed/);
});

void test("floor rules: listed with a marker, never changed or removed, left by remove --all", (t) => {
  const path = tempPath(t);
  const floor = canonicalRules([
    { dst: "registry.npmjs.org" },
    { dst: "deb.debian.org", proto: "http", pathRules: [{ path: "/debian/" }] },
  ]);
  const store = open(t, path, { floor });
  store.add([{ dst: "a.test" }], cli);
  assert.deepEqual(keys(store), [
    "global: a.test:https:443",
    "F global: deb.debian.org:http:80",
    "F global: registry.npmjs.org:https:443",
  ]);
  assert.ok(store.identityOf("registry.npmjs.org")! >= 1);
  const before = dump(path);
  // Restating a floor rule is fine (the Go CLI may send the same registry rule).
  assert.deepEqual(
    store.add([{ dst: "Registry.npmjs.org" }, { dst: "deb.debian.org", proto: "http" }], cli),
    ["unchanged", "unchanged"],
  );
  // Changing one fails the whole call and writes nothing.
  assert.throws(
    () => store.add([{ dst: "b.test" }, { dst: "registry.npmjs.org", action: "deny" }], cli),
    (err: unknown) => {
      assert.ok(err instanceof FloorRuleError);
      assert.equal(err.reason, "floor_rule");
      assert.match(
        err.message,
        /^rules\[1\]: registry\.npmjs\.org:https:443 is a floor rule .* cannot be changed/,
      );
      assert.equal(firewallStatus(err).code, status.FAILED_PRECONDITION);
      return true;
    },
  );
  assert.throws(
    () => store.remove({ dst: "registry.npmjs.org" }, cli),
    /is a floor rule .* cannot be removed/,
  );
  assert.throws(
    () => store.remove({ dst: "deb.debian.org", proto: "http", path: "/debian/" }, cli),
    /cannot be narrowed/,
  );
  assert.deepEqual(dump(path), before);
  assert.deepEqual(store.remove({ all: true }, cli), { status: "removed", count: 1 });
  assert.deepEqual(
    store.list().map((l) => l.floor),
    [true, true],
  );
  // The same key in a project scope is the project's own rule, not the floor's.
  assert.deepEqual(store.add([{ dst: "registry.npmjs.org", action: "deny", project: "web" }], cli), [
    "added",
  ]);
});

void test("a floor rule replaces a stored rule with its key at open, and that is recorded", (t) => {
  const path = tempPath(t);
  const first = new RuleStore({ db: path });
  first.add([{ dst: "registry.npmjs.org", action: "deny" }, { dst: "a.test" }], cli);
  const identity = first.identityOf("registry.npmjs.org");
  first.close();
  const store = open(t, path, { floor: canonicalRules([{ dst: "registry.npmjs.org" }]) });
  assert.deepEqual(keys(store), ["global: a.test:https:443", "F global: registry.npmjs.org:https:443"]);
  assert.equal(store.identityOf("registry.npmjs.org"), identity);
  const [change] = store.changes({ dst: "registry.npmjs.org", limit: 1 });
  assert.equal(change?.op, "floor_replace");
  assert.deepEqual(change?.actor, FLOOR_ACTOR);
  assert.equal(change?.before?.action, "deny");
  assert.equal(change?.after?.action, "allow");
});

void test("the listing is one frozen object between writes and follows every write", (t) => {
  const store = open(t);
  const empty = store.list();
  assert.equal(store.list(), empty);
  assert.ok(Object.isFrozen(empty));
  store.add([{ dst: "a.test" }], cli);
  const one = store.list();
  assert.notEqual(one, empty);
  assert.ok(Object.isFrozen(one[0]));
  store.add([{ dst: "a.test" }], cli); // unchanged
  assert.equal(store.list(), one);
  store.remove({ dst: "a.test" }, cli);
  assert.deepEqual(store.list(), []);
});

void test("the store shares the control plane's database file with the registry", (t) => {
  const path = tempPath(t);
  const registry = new Registry(path);
  t.after(() => registry.close());
  registry.register({ containerId: "c1", agentName: "dev", project: "web", certThumbprint: "aa" }, 1);
  const store = open(t, path);
  store.add([{ dst: "a.test", project: "web", agentName: "dev" }], cli);
  assert.equal(registry.get("c1")?.agentName, "dev");
  const db = new Database(path, { readonly: true });
  t.after(() => db.close());
  assert.equal(db.pragma("user_version", { simple: true }), 1, "the registry's migration counter is its own");
  assert.deepEqual(db.prepare("SELECT version FROM firewall_migrations").all(), [
    { version: 1 },
    { version: 2 },
  ]);
  assert.equal(db.pragma("journal_mode", { simple: true }), "wal");

  // On a handle it does not own, close() leaves the handle open.
  const handle = new Database(path);
  const onHandle = new RuleStore({ db: handle });
  assert.equal(onHandle.list().length, 1);
  onHandle.close();
  assert.equal(handle.open, true);
  handle.close();
});

void test("state files are 0600 in a 0700 directory", (t) => {
  const path = tempPath(t);
  const store = open(t, path);
  store.add([{ dst: "a.test" }], cli);
  assert.equal(statSync(join(path, "..")).mode & 0o777, 0o700);
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    assert.equal(statSync(file).mode & 0o777, 0o600, file);
  }
});

void test("a database from a newer firewall schema is refused, not used", (t) => {
  const path = tempPath(t);
  new RuleStore({ db: path }).close();
  const db = new Database(path);
  db.prepare("INSERT INTO firewall_migrations (version, applied_at_unix_ms) VALUES (99, 0)").run();
  db.close();
  assert.throws(
    () => new RuleStore({ db: path }),
    (err: unknown) =>
      err instanceof FirewallError &&
      err.reason === "store_schema" &&
      /version 99 is newer/.test(err.message),
  );
  assert.equal(firewallReasonStatus.store_schema, status.INTERNAL);
});

void test("a closed store refuses calls", (t) => {
  const store = open(t);
  store.close();
  assert.throws(() => store.add([{ dst: "a.test" }], cli), /closed/);
  assert.throws(() => store.list(), /closed/);
});

void test("the generated wire messages are accepted as they are", (t) => {
  const store = open(t);
  const rule = admin.EgressRule.create({ dst: "a.test", project: "web", agentName: "dev" });
  assert.deepEqual(store.add([rule], cli), ["added"]);
  assert.deepEqual(ruleToWire(store.list()[0]!.rule), {
    ...rule,
    port: "443",
    proto: "https",
    action: "allow",
  });
  const remove = admin.FirewallRemoveRuleRequest.create({ dst: "a.test", project: "web", agentName: "dev" });
  assert.deepEqual(store.remove(remove, cli), { status: "removed", count: 1 });
});

void test("an add past maxRules (floor rules counted) is refused whole with INVALID_ARGUMENT, and writes nothing", (t) => {
  // Before, the add was stored and every reconcile then failed at the proxy's limit: "rules saved;
  // will apply on the next reload".
  const path = tempPath(t);
  const store = open(t, path, { floor: canonicalRules([{ dst: "registry.npmjs.org" }]), maxRules: 3 });
  assert.deepEqual(store.add([{ dst: "a.test" }], cli), ["added"]);
  const before = dump(path);
  assert.throws(
    () => store.add([{ dst: "a.test", action: "deny" }, { dst: "b.test" }, { dst: "c.test" }], cli),
    (err: unknown) => {
      assert.ok(err instanceof InvalidRuleError);
      assert.deepEqual({ ...err.problems[0], message: "" }, { index: 1, field: "dst", message: "" });
      assert.equal(firewallStatus(err).code, status.INVALID_ARGUMENT);
      assert.match(
        firewallStatus(err).details,
        /rules\[1\]\.dst: the firewall holds at most 3 rules \(floor rules included\) and this call would make 4/,
      );
      return true;
    },
  );
  assert.deepEqual(dump(path), before);
  // Up to the limit is fine, and so is changing a rule once there (the count does not grow).
  assert.deepEqual(store.add([{ dst: "b.test" }], cli), ["added"]);
  assert.deepEqual(store.add([{ dst: "b.test", action: "deny" }], cli), ["modified"]);
  assert.throws(() => store.add([{ dst: "c.test" }], cli), InvalidRuleError);
  assert.deepEqual(keys(store).sort(), [
    "F global: registry.npmjs.org:https:443",
    "global: a.test:https:443",
    "global: b.test:https:443",
  ]);
});

void test("rules stored under a higher limit stay changeable after maxRules was lowered", (t) => {
  const path = tempPath(t);
  const first = new RuleStore({ db: path });
  first.add([{ dst: "a.test" }, { dst: "b.test" }, { dst: "c.test" }], cli);
  first.close();
  const store = open(t, path, { maxRules: 2 });
  assert.deepEqual(store.add([{ dst: "a.test", action: "deny" }], cli), ["modified"]);
  assert.throws(() => store.add([{ dst: "d.test" }], cli), InvalidRuleError);
  assert.equal(store.remove({ dst: "c.test" }, cli).status, "removed");
});
