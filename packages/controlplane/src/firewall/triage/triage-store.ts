// The triage's durable state in the control plane's database (tables of the firewall's migration 2,
// rule-store.ts): agents' pending requests, and approved rules that expire. One transaction per
// call; the connection is the triage's own (the daemon is still the only writer).
import Database from "better-sqlite3";
import { FirewallError } from "../errors.js";
import type { Scope } from "../rule.js";

/** A pending request, as stored. Times are unix milliseconds. */
export interface StoredRequest {
  readonly id: string;
  readonly containerId: string;
  /** The agent's short name and project (its full name is `<project>.<agent>`). */
  readonly agentName: string;
  readonly project: string;
  readonly dst: string;
  readonly proto: string;
  readonly port: string;
  readonly reason: string;
  readonly requestedAtUnixMs: number;
}

/** An approved rule that is removed by itself at `expiresAtUnixMs`. */
export interface ExpiringRule {
  readonly scope: Scope;
  readonly dst: string;
  readonly proto: string;
  readonly port: string;
  readonly expiresAtUnixMs: number;
}

interface RequestRow {
  id: string;
  container_id: string;
  agent_name: string;
  project: string;
  dst: string;
  proto: string;
  port: string;
  reason: string;
  requested_at_unix_ms: number;
}

interface ExpiringRow {
  scope_kind: Scope["kind"];
  scope_name: string;
  dst: string;
  proto: string;
  port: string;
  expires_at_unix_ms: number;
}

/** The triage's tables. Open it after the RuleStore ran its migrations on the same file. */
export class TriageStore {
  readonly #db: Database.Database;
  readonly #stmts;
  #closed = false;

  constructor(path: string) {
    this.#db = new Database(path, { fileMustExist: path !== ":memory:" });
    try {
      this.#db.pragma("busy_timeout = 5000");
      const tables = this.#db
        .prepare(
          "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('egress_requests', 'egress_expiring_rules')",
        )
        .all();
      if (tables.length !== 2) {
        throw new FirewallError(
          "store_schema",
          `${path} has no triage tables (the firewall's migrations did not run)`,
        );
      }
      this.#stmts = {
        insertRequest: this.#db.prepare(
          `INSERT INTO egress_requests (id, container_id, agent_name, project, dst, proto, port, reason, requested_at_unix_ms)
           VALUES (@id, @containerId, @agentName, @project, @dst, @proto, @port, @reason, @requestedAtUnixMs)`,
        ),
        refreshRequest: this.#db.prepare<[string, number, string]>(
          "UPDATE egress_requests SET reason = ?, requested_at_unix_ms = ? WHERE id = ?",
        ),
        sameRequest: this.#db.prepare<[string, string, string, string, string], RequestRow>(
          `SELECT * FROM egress_requests
           WHERE project = ? AND agent_name = ? AND dst = ? AND proto = ? AND port = ?`,
        ),
        countOf: this.#db.prepare<[string, string], { n: number }>(
          "SELECT COUNT(*) AS n FROM egress_requests WHERE project = ? AND agent_name = ?",
        ),
        request: this.#db.prepare<[string], RequestRow>("SELECT * FROM egress_requests WHERE id = ?"),
        requests: this.#db.prepare<[], RequestRow>(
          "SELECT * FROM egress_requests ORDER BY requested_at_unix_ms DESC, id",
        ),
        deleteRequest: this.#db.prepare<[string]>("DELETE FROM egress_requests WHERE id = ?"),
        expiring: this.#db.prepare<[], ExpiringRow>(
          "SELECT * FROM egress_expiring_rules ORDER BY expires_at_unix_ms",
        ),
        expiringOf: this.#db.prepare<[string, string, string, string, string], ExpiringRow>(
          `SELECT * FROM egress_expiring_rules
           WHERE scope_kind = ? AND scope_name = ? AND dst = ? AND proto = ? AND port = ?`,
        ),
        putExpiring: this.#db.prepare(
          `INSERT INTO egress_expiring_rules (scope_kind, scope_name, dst, proto, port, expires_at_unix_ms)
           VALUES (@kind, @name, @dst, @proto, @port, @expiresAt)
           ON CONFLICT DO UPDATE SET expires_at_unix_ms = excluded.expires_at_unix_ms`,
        ),
        deleteExpiring: this.#db.prepare<[string, string, string, string, string]>(
          `DELETE FROM egress_expiring_rules
           WHERE scope_kind = ? AND scope_name = ? AND dst = ? AND proto = ? AND port = ?`,
        ),
      };
    } catch (err) {
      this.#db.close();
      throw err;
    }
  }

  /**
   * Stores a request, or refreshes the agent's pending request for the same destination (same id,
   * new reason and time). `cap` bounds the agent's pending requests: over it, nothing is written
   * and undefined is returned.
   */
  putRequest(request: StoredRequest, cap: number): StoredRequest | undefined {
    this.#assertOpen();
    return this.#db.transaction((): StoredRequest | undefined => {
      const same = this.#stmts.sameRequest.get(
        request.project,
        request.agentName,
        request.dst,
        request.proto,
        request.port,
      );
      if (same !== undefined) {
        this.#stmts.refreshRequest.run(request.reason, request.requestedAtUnixMs, same.id);
        return {
          ...fromRequestRow(same),
          reason: request.reason,
          requestedAtUnixMs: request.requestedAtUnixMs,
        };
      }
      if (this.#stmts.countOf.get(request.project, request.agentName)!.n >= cap) return undefined;
      this.#stmts.insertRequest.run(request);
      return request;
    })();
  }

  /** The pending request with this id. */
  request(id: string): StoredRequest | undefined {
    this.#assertOpen();
    const row = this.#stmts.request.get(id);
    return row === undefined ? undefined : fromRequestRow(row);
  }

  /** Every pending request, newest first. */
  requests(): StoredRequest[] {
    this.#assertOpen();
    return this.#stmts.requests.all().map(fromRequestRow);
  }

  /** Forgets a request (approved or dismissed); true when it was pending. */
  deleteRequest(id: string): boolean {
    this.#assertOpen();
    return this.#stmts.deleteRequest.run(id).changes > 0;
  }

  /** Every expiring rule, soonest first. */
  expiring(): ExpiringRule[] {
    this.#assertOpen();
    return this.#stmts.expiring.all().map(fromExpiringRow);
  }

  /** The expiry stored for a rule key, if it has one. */
  expiringOf(key: Omit<ExpiringRule, "expiresAtUnixMs">): ExpiringRule | undefined {
    this.#assertOpen();
    const row = this.#stmts.expiringOf.get(...keyOf(key));
    return row === undefined ? undefined : fromExpiringRow(row);
  }

  /** Records (or moves) a rule's end. */
  putExpiring(rule: ExpiringRule): void {
    this.#assertOpen();
    this.#stmts.putExpiring.run({
      kind: rule.scope.kind,
      name: rule.scope.name,
      dst: rule.dst,
      proto: rule.proto,
      port: rule.port,
      expiresAt: rule.expiresAtUnixMs,
    });
  }

  /** Forgets a rule's end (it expired, or was approved permanently). */
  deleteExpiring(key: Omit<ExpiringRule, "expiresAtUnixMs">): void {
    this.#assertOpen();
    this.#stmts.deleteExpiring.run(...keyOf(key));
  }

  /** Closes the connection. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new FirewallError("internal", "triage store is closed");
  }
}

function keyOf(key: Omit<ExpiringRule, "expiresAtUnixMs">): [string, string, string, string, string] {
  return [key.scope.kind, key.scope.name, key.dst, key.proto, key.port];
}

function fromRequestRow(row: RequestRow): StoredRequest {
  return {
    id: row.id,
    containerId: row.container_id,
    agentName: row.agent_name,
    project: row.project,
    dst: row.dst,
    proto: row.proto,
    port: row.port,
    reason: row.reason,
    requestedAtUnixMs: row.requested_at_unix_ms,
  };
}

function fromExpiringRow(row: ExpiringRow): ExpiringRule {
  return {
    scope: { kind: row.scope_kind, name: row.scope_name },
    dst: row.dst,
    proto: row.proto,
    port: row.port,
    expiresAtUnixMs: row.expires_at_unix_ms,
  };
}
