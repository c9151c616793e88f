// The egress rule store: the control plane's sqlite database (its own tables and migrations beside
// the registry's), one transaction per call, every change appended to `rule_changes` with the
// caller's identity, sticky route identities per destination, and the floor file's rules on top.
import { chmodSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { FirewallError, FloorRuleError, InvalidRuleError, InvalidSelectorError } from "./errors.js";
import { type Rule, type RuleInput, type Scope, describeKey, ruleKey, scopeKey } from "./rule.js";
import { compareRules, mergeRule, rulesEqual } from "./rule-merge.js";
import {
  canonicalIdentity,
  canonicalRemovePath,
  canonicalRules,
  canonicalScopeOf,
} from "./rule-validation.js";

/** Who made a change: the token's OAuth2 client id and the caller's certificate CN. */
export interface Actor {
  readonly clientId: string;
  readonly certCn: string;
}

/** The actor recorded when the floor file replaces a stored rule at open. */
export const FLOOR_ACTOR: Actor = Object.freeze({ clientId: "floor-file", certCn: "" });

/** What an add did to one rule (index-aligned with the request). */
export type AddStatus = "added" | "modified" | "unchanged";

/** What a remove did. */
export type RemoveStatus = "removed" | "path_removed" | "not_found";

/**
 * A remove request (the wire's FirewallRemoveRuleRequest is assignable). `all` removes every
 * stored rule of one scope (global when `project` and `agentName` are empty) and is exclusive
 * with `dst`, `proto`, `port` and `path`.
 */
export interface RemoveSelector {
  readonly dst?: string | undefined;
  readonly proto?: string | undefined;
  readonly port?: string | undefined;
  readonly path?: string | undefined;
  readonly all?: boolean | undefined;
  readonly project?: string | undefined;
  readonly agentName?: string | undefined;
}

/** The outcome of a remove: its status and how many rules (or path rules) went. */
export interface RemoveResult {
  readonly status: RemoveStatus;
  readonly count: number;
}

/** One rule in a listing: floor rules are marked; `identity` is its destination's route identity. */
export interface ListedRule {
  readonly rule: Rule;
  readonly floor: boolean;
  readonly identity: number;
}

/** What a `rule_changes` row records. */
export type ChangeOp = "add" | "modify" | "remove" | "remove_path" | "floor_replace";

/** One appended change: when, who, what (the rule before and after; absent on add / remove). */
export interface RuleChange {
  readonly seq: number;
  readonly atUnixMs: number;
  readonly actor: Actor;
  readonly op: ChangeOp;
  /** The rule's dedup key (`ruleKey`). */
  readonly key: string;
  readonly before: Rule | undefined;
  readonly after: Rule | undefined;
}

/** A `changes()` filter; newest first, at most `limit` (default 100, at most 10,000). */
export interface ChangeQuery {
  readonly dst?: string;
  readonly scope?: Scope;
  /** Only changes with a larger sequence number (for paging backwards use `beforeSeq`). */
  readonly afterSeq?: number;
  readonly beforeSeq?: number;
  readonly limit?: number;
}

/** How the store is opened. */
export interface RuleStoreOptions {
  /** The database file (created with its directory, 0600/0700), or an open handle it does not own. */
  readonly db: string | Database.Database;
  /** The floor file's rules (`loadFloorFile`); always listed, never changed or removed by callers. */
  readonly floor?: readonly Rule[];
  /** Clock for `rule_changes` (ms since the epoch). */
  readonly now?: () => number;
  /**
   * Told every `rule_changes` row once its transaction committed (never for a rolled-back one),
   * oldest first: the audit log's rule_change records. Must not throw.
   */
  readonly onChange?: (change: RuleChange) => void;
  /**
   * At most this many rules, floor rules included (the proxy's `maxRules`: each rule is at most one
   * rule version there). An add that would grow the count past it is refused as a whole.
   */
  readonly maxRules?: number;
}

/** Ordered migrations of the firewall's own tables; `firewall_migrations` records which ran. Append only. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE egress_rules (
     scope_kind   TEXT NOT NULL CHECK (scope_kind IN ('global', 'project', 'agent')),
     scope_name   TEXT NOT NULL,
     dst          TEXT NOT NULL,
     proto        TEXT NOT NULL,
     port         TEXT NOT NULL,
     action       TEXT NOT NULL CHECK (action IN ('allow', 'deny')),
     path_default TEXT NOT NULL CHECK (path_default IN ('', 'allow', 'deny')),
     insecure_skip_tls_verify INTEGER NOT NULL CHECK (insecure_skip_tls_verify IN (0, 1)),
     path_rules   TEXT NOT NULL,
     created_at_unix_ms INTEGER NOT NULL,
     updated_at_unix_ms INTEGER NOT NULL,
     PRIMARY KEY (scope_kind, scope_name, dst, proto, port)
   ) STRICT, WITHOUT ROWID;
   CREATE TABLE route_identities (
     dst      TEXT PRIMARY KEY,
     identity INTEGER NOT NULL UNIQUE CHECK (identity BETWEEN 1 AND 4294967295),
     assigned_at_unix_ms INTEGER NOT NULL
   ) STRICT;
   CREATE TABLE rule_changes (
     seq        INTEGER PRIMARY KEY,
     at_unix_ms INTEGER NOT NULL,
     client_id  TEXT NOT NULL,
     cert_cn    TEXT NOT NULL,
     op         TEXT NOT NULL CHECK (op IN ('add', 'modify', 'remove', 'remove_path', 'floor_replace')),
     rule_key   TEXT NOT NULL,
     scope_kind TEXT NOT NULL,
     scope_name TEXT NOT NULL,
     dst        TEXT NOT NULL,
     before_json TEXT,
     after_json  TEXT
   ) STRICT;
   CREATE INDEX rule_changes_by_dst ON rule_changes (dst, seq);
   -- Append-only: the answer to "who allowed this?" must not be editable through the store. With
   -- no row ever deleted, seq (the rowid) only grows, so AUTOINCREMENT's extra write is not needed.
   CREATE TRIGGER rule_changes_no_update BEFORE UPDATE ON rule_changes
     BEGIN SELECT RAISE(ABORT, 'rule_changes is append-only'); END;
   CREATE TRIGGER rule_changes_no_delete BEFORE DELETE ON rule_changes
     BEGIN SELECT RAISE(ABORT, 'rule_changes is append-only'); END;
   -- Identities are never renumbered or reused (README.md, "Route identities").
   CREATE TRIGGER route_identities_no_update BEFORE UPDATE ON route_identities
     BEGIN SELECT RAISE(ABORT, 'route identities are never renumbered'); END;
   CREATE TRIGGER route_identities_no_delete BEFORE DELETE ON route_identities
     BEGIN SELECT RAISE(ABORT, 'route identities are never freed'); END;`,
  // Egress triage (triage/README.md): agents' pending requests, and approved rules that expire
  // (their end is stored, so an expiry survives a restart).
  `CREATE TABLE egress_requests (
     id           TEXT PRIMARY KEY,
     container_id TEXT NOT NULL,
     agent_name   TEXT NOT NULL,
     project      TEXT NOT NULL,
     dst          TEXT NOT NULL,
     proto        TEXT NOT NULL,
     port         TEXT NOT NULL,
     reason       TEXT NOT NULL,
     requested_at_unix_ms INTEGER NOT NULL
   ) STRICT;
   CREATE INDEX egress_requests_by_agent ON egress_requests (project, agent_name, requested_at_unix_ms);
   CREATE TABLE egress_expiring_rules (
     scope_kind TEXT NOT NULL CHECK (scope_kind IN ('global', 'project', 'agent')),
     scope_name TEXT NOT NULL,
     dst        TEXT NOT NULL,
     proto      TEXT NOT NULL,
     port       TEXT NOT NULL,
     expires_at_unix_ms INTEGER NOT NULL,
     PRIMARY KEY (scope_kind, scope_name, dst, proto, port)
   ) STRICT, WITHOUT ROWID;`,
];

interface RuleRow {
  scope_kind: Scope["kind"];
  scope_name: string;
  dst: string;
  proto: string;
  port: string;
  action: Rule["action"];
  path_default: Rule["pathDefault"];
  insecure_skip_tls_verify: number;
  path_rules: string;
}

interface ChangeRow {
  seq: number;
  at_unix_ms: number;
  client_id: string;
  cert_cn: string;
  op: ChangeOp;
  rule_key: string;
  before_json: string | null;
  after_json: string | null;
}

type KeyParams = [kind: string, name: string, dst: string, proto: string, port: string];

/**
 * The rule store. Synchronous (better-sqlite3); each add or remove is one transaction, so an
 * invalid rule or a failure anywhere leaves the database as it was. The daemon is its only writer,
 * so the listing is kept in memory between writes.
 */
export class RuleStore {
  readonly #db: Database.Database;
  readonly #ownsDb: boolean;
  readonly #now: () => number;
  readonly #floor: readonly Rule[];
  readonly #floorByKey: ReadonlyMap<string, Rule>;
  readonly #stmts;
  #snapshot: readonly ListedRule[] | undefined;
  #closed = false;
  readonly #onChange: ((change: RuleChange) => void) | undefined;
  readonly #maxRules: number | undefined;
  /** Rows appended by the transaction running now; handed to onChange once it committed. */
  #uncommitted: RuleChange[] = [];

  /** Opens the store: runs pending migrations, then applies the floor (see README.md). */
  constructor(options: RuleStoreOptions) {
    this.#now = options.now ?? Date.now;
    this.#onChange = options.onChange;
    this.#maxRules = options.maxRules;
    if (typeof options.db === "string") {
      this.#db = openDatabase(options.db);
      this.#ownsDb = true;
    } else {
      this.#db = options.db;
      this.#ownsDb = false;
    }
    try {
      migrate(this.#db);
      this.#floor = Object.freeze([...(options.floor ?? [])].sort(compareRules));
      this.#floorByKey = new Map(this.#floor.map((r) => [ruleKey(r), r]));
      this.#stmts = prepare(this.#db);
      this.#applyFloor();
    } catch (err) {
      if (this.#ownsDb) this.#db.close();
      throw err;
    }
  }

  /** The floor file's rules, in canonical order. */
  get floor(): readonly Rule[] {
    return this.#floor;
  }

  /**
   * Validates, canonicalises and merges `inputs` in one transaction; the statuses are
   * index-aligned with `inputs` (a later input with the key of an earlier one merges onto it).
   * Throws InvalidRuleError (every problem, nothing written) or FloorRuleError (an input would
   * change a floor rule; nothing written).
   */
  add(inputs: readonly RuleInput[], actor: Actor): AddStatus[] {
    this.#assertOpen();
    const rules = canonicalRules(inputs);
    rules.forEach((rule, index) => {
      const floor = this.#floorByKey.get(ruleKey(rule));
      if (floor !== undefined && !rulesEqual(mergeRule(floor, rule), floor)) {
        throw new FloorRuleError(
          ruleKey(rule),
          `rules[${index}]: ${describeKey(rule)} is a floor rule (from the floor file) and cannot be changed`,
        );
      }
    });
    const now = this.#now();
    const statuses = this.#transaction((): AddStatus[] => {
      const statuses = rules.map((rule): AddStatus => {
        if (this.#floorByKey.has(ruleKey(rule))) return "unchanged";
        // Insert first: in a bulk add most rules are new, and a conflict costs one index probe.
        if (this.#stmts.insert.run(ruleParams(rule, now)).changes === 1) {
          this.#stmts.assignIdentity.run({ dst: rule.dst, now });
          this.#appendChange(now, actor, "add", rule, undefined, rule);
          return "added";
        }
        const existing = fromRow(this.#stmts.get.get(...keyParams(rule))!);
        const merged = mergeRule(existing, rule);
        if (rulesEqual(merged, existing)) return "unchanged";
        this.#stmts.update.run(ruleParams(merged, now));
        this.#appendChange(now, actor, "modify", merged, existing, merged);
        return "modified";
      });
      this.#checkLimit(statuses);
      return statuses;
    })();
    if (statuses.some((s) => s !== "unchanged")) this.#snapshot = undefined;
    return statuses;
  }

  /**
   * Removes one rule, one path rule of a rule, or (`all`) every stored rule of one scope, in one
   * transaction. Floor rules are never removed: naming one throws FloorRuleError, and `all` leaves
   * them. Throws InvalidSelectorError / InvalidRuleError for a malformed selector.
   */
  remove(selector: RemoveSelector, actor: Actor): RemoveResult {
    this.#assertOpen();
    if (selector.all === true) return this.#removeAll(selector, actor);
    const identity = canonicalIdentity(selector);
    const path = (selector.path ?? "") === "" ? undefined : canonicalRemovePath(selector.path!);
    const key = ruleKey(identity);
    if (this.#floorByKey.has(key)) {
      throw new FloorRuleError(
        key,
        `${describeKey(identity)} is a floor rule (from the floor file) and cannot be ${path === undefined ? "removed" : "narrowed"}`,
      );
    }
    const now = this.#now();
    const result = this.#transaction((): RemoveResult => {
      const row = this.#stmts.get.get(...keyParams(identity));
      if (row === undefined) return { status: "not_found", count: 0 };
      const existing = fromRow(row);
      if (path === undefined) {
        this.#stmts.remove.run(...keyParams(identity));
        this.#appendChange(now, actor, "remove", existing, existing, undefined);
        return { status: "removed", count: 1 };
      }
      const kept = existing.pathRules.filter((p) => p.path !== path);
      if (kept.length === existing.pathRules.length) return { status: "not_found", count: 0 };
      const narrowed: Rule = { ...existing, pathRules: kept };
      this.#stmts.update.run(ruleParams(narrowed, now));
      this.#appendChange(now, actor, "remove_path", narrowed, existing, narrowed);
      return { status: "path_removed", count: 1 };
    })();
    if (result.count > 0) this.#snapshot = undefined;
    return result;
  }

  #removeAll(selector: RemoveSelector, actor: Actor): RemoveResult {
    const extra = (["dst", "proto", "port", "path"] as const).filter((f) => (selector[f] ?? "") !== "");
    if (extra.length > 0) {
      throw new InvalidSelectorError(
        `all removes every rule of a scope and takes no ${extra.join(", ")} (only project and agent_name)`,
      );
    }
    const scope = canonicalScopeOf(selector);
    const now = this.#now();
    const count = this.#transaction((): number => {
      const rows = this.#stmts.listScope.all(scope.kind, scope.name);
      for (const row of rows) {
        const existing = fromRow(row);
        this.#appendChange(now, actor, "remove", existing, existing, undefined);
      }
      this.#stmts.removeScope.run(scope.kind, scope.name);
      return rows.length;
    })();
    if (count > 0) this.#snapshot = undefined;
    return { status: count > 0 ? "removed" : "not_found", count };
  }

  /**
   * Every rule, floor rules included (marked), in canonical order; with `scope`, only that scope's
   * rules. One frozen array, the same object until the next write.
   */
  list(filter?: { readonly scope?: Scope }): readonly ListedRule[] {
    this.#assertOpen();
    this.#snapshot ??= this.#buildListing();
    const scope = filter?.scope;
    if (scope === undefined) return this.#snapshot;
    return Object.freeze(
      this.#snapshot.filter((l) => l.rule.scope.kind === scope.kind && l.rule.scope.name === scope.name),
    );
  }

  #buildListing(): readonly ListedRule[] {
    const listed = [
      ...this.#floor.map((rule) => ({ rule, floor: true })),
      ...this.#stmts.list.all().map((row) => ({ rule: fromRow(row), floor: false })),
    ].sort((a, b) => compareRules(a.rule, b.rule));
    const identities = this.#identitiesOf(listed.map(({ rule }) => rule.dst));
    return Object.freeze(
      listed.map(({ rule, floor }) =>
        Object.freeze({ rule, floor, identity: identities.get(rule.dst) ?? 0 }),
      ),
    );
  }

  /** The route identity of a destination (canonical `dst`), or undefined if it never had one. */
  identityOf(dst: string): number | undefined {
    this.#assertOpen();
    return this.#stmts.identity.get(dst)?.identity;
  }

  /** Destination -> route identity for every destination a current rule (or floor rule) names. */
  routeIdentities(): ReadonlyMap<string, number> {
    const out = new Map<string, number>();
    for (const { rule, identity } of this.list()) out.set(rule.dst, identity);
    return out;
  }

  /** Appended changes, newest first (see ChangeQuery). */
  changes(query: ChangeQuery = {}): RuleChange[] {
    this.#assertOpen();
    const limit = Math.min(Math.max(Math.trunc(query.limit ?? 100), 1), 10_000);
    const rows = this.#stmts.changes.all({
      dst: query.dst ?? null,
      kind: query.scope?.kind ?? null,
      name: query.scope?.name ?? null,
      after: query.afterSeq ?? null,
      before: query.beforeSeq ?? null,
      limit,
    });
    return rows.map((row) => ({
      seq: row.seq,
      atUnixMs: row.at_unix_ms,
      actor: { clientId: row.client_id, certCn: row.cert_cn },
      op: row.op,
      key: row.rule_key,
      before: row.before_json === null ? undefined : fromJson(row.before_json),
      after: row.after_json === null ? undefined : fromJson(row.after_json),
    }));
  }

  /** Closes the database when the store opened it. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsDb) this.#db.close();
  }

  /**
   * The floor file owns its keys: a stored rule with a floor rule's key (added before the floor
   * file named it) is replaced, and the replacement is recorded. Every floor destination gets its
   * route identity. One transaction.
   */
  #applyFloor(): void {
    const now = this.#now();
    this.#transaction(() => {
      for (const rule of this.#floor) {
        const row = this.#stmts.get.get(...keyParams(rule));
        if (row !== undefined) {
          this.#stmts.remove.run(...keyParams(rule));
          this.#appendChange(now, FLOOR_ACTOR, "floor_replace", rule, fromRow(row), rule);
        }
        this.#stmts.assignIdentity.run({ dst: rule.dst, now });
      }
    })();
  }

  /**
   * Inside the add's transaction: refuses (the throw rolls the whole call back) when new rules took
   * the count past maxRules. Only growth is refused, so rules stored under a higher limit can still
   * be modified or removed after the limit was lowered. Otherwise the proxy would refuse the policy
   * at every reconcile and the call would end "saved; will apply on the next reload".
   */
  #checkLimit(statuses: readonly AddStatus[]): void {
    const added = statuses.filter((s) => s === "added").length;
    if (this.#maxRules === undefined || added === 0) return;
    const total = this.#stmts.count.get()!.n + this.#floor.length;
    if (total <= this.#maxRules) return;
    throw new InvalidRuleError([
      {
        index: statuses.indexOf("added"),
        field: "dst",
        message: `the firewall holds at most ${this.#maxRules} rules (floor rules included) and this call would make ${total}; remove rules first`,
      },
    ]);
  }

  /**
   * One transaction: `body` runs inside it; the rule_changes rows it appended go to onChange only
   * after the commit, so nothing rolled back is ever reported.
   */
  #transaction<T>(body: () => T): () => T {
    return () => {
      this.#uncommitted = [];
      try {
        const result = this.#db.transaction(body)();
        const committed = this.#uncommitted;
        this.#uncommitted = [];
        for (const change of committed) this.#onChange?.(change);
        return result;
      } catch (err) {
        this.#uncommitted = [];
        throw err;
      }
    };
  }

  #appendChange(
    now: number,
    actor: Actor,
    op: ChangeOp,
    rule: Rule,
    before: Rule | undefined,
    after: Rule | undefined,
  ): void {
    const { lastInsertRowid } = this.#stmts.appendChange.run({
      now,
      clientId: actor.clientId,
      certCn: actor.certCn,
      op,
      key: ruleKey(rule),
      kind: rule.scope.kind,
      name: rule.scope.name,
      dst: rule.dst,
      before: before === undefined ? null : toJson(before),
      after: after === undefined ? null : toJson(after),
    });
    if (this.#onChange !== undefined) {
      const seq = Number(lastInsertRowid);
      this.#uncommitted.push({ seq, atUnixMs: now, actor, op, key: ruleKey(rule), before, after });
    }
  }

  /**
   * The identities of the listed destinations only: identities are never freed, so the table holds
   * every destination ever named and reading all of it grew every listing with history.
   */
  #identitiesOf(dsts: readonly string[]): Map<string, number> {
    const out = new Map<string, number>();
    for (const dst of dsts) {
      if (out.has(dst)) continue;
      const identity = this.#stmts.identity.get(dst)?.identity;
      if (identity !== undefined) out.set(dst, identity);
    }
    return out;
  }

  #assertOpen(): void {
    if (this.#closed) throw new FirewallError("internal", "rule store is closed");
  }
}

function openDatabase(path: string): Database.Database {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const db = new Database(path);
  try {
    // Before WAL mode creates the -wal and -shm files: sqlite gives them the database's mode.
    if (path !== ":memory:") chmodSync(path, 0o600);
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
    db.pragma("busy_timeout = 5000");
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

function migrate(db: Database.Database): void {
  db.exec(`CREATE TABLE IF NOT EXISTS firewall_migrations (
             version INTEGER PRIMARY KEY,
             applied_at_unix_ms INTEGER NOT NULL
           ) STRICT`);
  const version =
    (db.prepare("SELECT MAX(version) AS v FROM firewall_migrations").get() as { v: number | null }).v ?? 0;
  if (version > MIGRATIONS.length) {
    throw new FirewallError(
      "store_schema",
      `firewall schema version ${version} is newer than this control plane knows (${MIGRATIONS.length})`,
    );
  }
  db.transaction(() => {
    const record = db.prepare("INSERT INTO firewall_migrations (version, applied_at_unix_ms) VALUES (?, ?)");
    for (let i = version; i < MIGRATIONS.length; i++) {
      db.exec(MIGRATIONS[i]!);
      record.run(i + 1, Date.now());
    }
  })();
}

function prepare(db: Database.Database) {
  const where = "scope_kind = ? AND scope_name = ? AND dst = ? AND proto = ? AND port = ?";
  return {
    get: db.prepare<KeyParams, RuleRow>(`SELECT * FROM egress_rules WHERE ${where}`),
    list: db.prepare<[], RuleRow>("SELECT * FROM egress_rules"),
    count: db.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM egress_rules"),
    listScope: db.prepare<[string, string], RuleRow>(
      "SELECT * FROM egress_rules WHERE scope_kind = ? AND scope_name = ?",
    ),
    insert: db.prepare(
      `INSERT INTO egress_rules (scope_kind, scope_name, dst, proto, port, action, path_default,
         insecure_skip_tls_verify, path_rules, created_at_unix_ms, updated_at_unix_ms)
       VALUES (@kind, @name, @dst, @proto, @port, @action, @pathDefault, @insecure, @pathRules, @now, @now)
       ON CONFLICT DO NOTHING`,
    ),
    update: db.prepare(
      `UPDATE egress_rules SET action = @action, path_default = @pathDefault,
         insecure_skip_tls_verify = @insecure, path_rules = @pathRules, updated_at_unix_ms = @now
       WHERE scope_kind = @kind AND scope_name = @name AND dst = @dst AND proto = @proto AND port = @port`,
    ),
    remove: db.prepare<KeyParams>(`DELETE FROM egress_rules WHERE ${where}`),
    removeScope: db.prepare<[string, string]>(
      "DELETE FROM egress_rules WHERE scope_kind = ? AND scope_name = ?",
    ),
    // The next identity is one past the largest ever given: rows are never deleted, so an
    // identity is never handed out twice.
    assignIdentity: db.prepare<{ dst: string; now: number }>(
      `INSERT INTO route_identities (dst, identity, assigned_at_unix_ms)
       SELECT @dst, (SELECT COALESCE(MAX(identity), 0) + 1 FROM route_identities), @now
       WHERE NOT EXISTS (SELECT 1 FROM route_identities WHERE dst = @dst)`,
    ),
    identity: db.prepare<[string], { identity: number }>(
      "SELECT identity FROM route_identities WHERE dst = ?",
    ),
    appendChange: db.prepare(
      `INSERT INTO rule_changes (at_unix_ms, client_id, cert_cn, op, rule_key, scope_kind, scope_name, dst,
         before_json, after_json)
       VALUES (@now, @clientId, @certCn, @op, @key, @kind, @name, @dst, @before, @after)`,
    ),
    changes: db.prepare<
      {
        dst: string | null;
        kind: string | null;
        name: string | null;
        after: number | null;
        before: number | null;
        limit: number;
      },
      ChangeRow
    >(
      `SELECT seq, at_unix_ms, client_id, cert_cn, op, rule_key, before_json, after_json FROM rule_changes
       WHERE (@dst IS NULL OR dst = @dst)
         AND (@kind IS NULL OR (scope_kind = @kind AND scope_name = @name))
         AND (@after IS NULL OR seq > @after)
         AND (@before IS NULL OR seq < @before)
       ORDER BY seq DESC LIMIT @limit`,
    ),
  };
}

function keyParams(rule: Pick<Rule, "scope" | "dst" | "proto" | "port">): KeyParams {
  return [rule.scope.kind, rule.scope.name, rule.dst, rule.proto, rule.port];
}

function ruleParams(rule: Rule, now: number) {
  return {
    kind: rule.scope.kind,
    name: rule.scope.name,
    dst: rule.dst,
    proto: rule.proto,
    port: rule.port,
    action: rule.action,
    pathDefault: rule.pathDefault,
    insecure: rule.insecureSkipTlsVerify ? 1 : 0,
    pathRules: JSON.stringify(rule.pathRules),
    now,
  };
}

function fromRow(row: RuleRow): Rule {
  return {
    scope: { kind: row.scope_kind, name: row.scope_name },
    dst: row.dst,
    proto: row.proto,
    port: row.port,
    action: row.action,
    pathRules: JSON.parse(row.path_rules) as Rule["pathRules"],
    pathDefault: row.path_default,
    insecureSkipTlsVerify: row.insecure_skip_tls_verify === 1,
  };
}

/** The JSON a change row keeps: the rule in wire (snake_case) names, readable with sqlite3 alone. */
function toJson(rule: Rule): string {
  return JSON.stringify({
    scope: scopeKey(rule.scope),
    dst: rule.dst,
    proto: rule.proto,
    port: rule.port,
    action: rule.action,
    path_rules: rule.pathRules,
    path_default: rule.pathDefault,
    insecure_skip_tls_verify: rule.insecureSkipTlsVerify,
  });
}

function fromJson(text: string): Rule {
  const j = JSON.parse(text) as {
    scope: string;
    dst: string;
    proto: string;
    port: string;
    action: Rule["action"];
    path_rules: Rule["pathRules"];
    path_default: Rule["pathDefault"];
    insecure_skip_tls_verify: boolean;
  };
  const colon = j.scope.indexOf(":");
  const scope: Scope =
    colon < 0
      ? { kind: "global", name: "" }
      : { kind: j.scope.slice(0, colon) as Scope["kind"], name: j.scope.slice(colon + 1) };
  return {
    scope,
    dst: j.dst,
    proto: j.proto,
    port: j.port,
    action: j.action,
    pathRules: j.path_rules,
    pathDefault: j.path_default,
    insecureSkipTlsVerify: j.insecure_skip_tls_verify,
  };
}
