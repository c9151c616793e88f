// The agent registry: one sqlite file (WAL), the control plane its only writer. A row binds a
// container id to the certificate thumbprint that registered it.
import Database from "better-sqlite3";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";

/** A registered agent, as stored. Times are unix seconds. */
export interface AgentRecord {
  readonly containerId: string;
  readonly agentName: string;
  readonly project: string;
  readonly certThumbprint: string;
  readonly registeredAtUnix: number;
  readonly lastSeenUnix: number;
}

/** What `register` did: a new row, the same registration again, or a different certificate. */
export type RegisterOutcome = "created" | "unchanged" | "thumbprint_mismatch";

/** Ordered schema migrations; `PRAGMA user_version` records how many ran. Append only. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE agents (
     container_id       TEXT PRIMARY KEY,
     agent_name         TEXT NOT NULL,
     project            TEXT NOT NULL DEFAULT '',
     cert_thumbprint    TEXT NOT NULL UNIQUE,
     registered_at_unix INTEGER NOT NULL,
     last_seen_unix     INTEGER NOT NULL
   ) STRICT`,
];

interface Row {
  container_id: string;
  agent_name: string;
  project: string;
  cert_thumbprint: string;
  registered_at_unix: number;
  last_seen_unix: number;
}

/**
 * The registry store. Synchronous (better-sqlite3); every write is one transaction. Being the
 * only writer, it keeps the listing (read on every ListAgents) in memory between writes.
 */
export class Registry {
  readonly #db: Database.Database;
  readonly #stmts;
  #closed = false;
  /** The current listing, frozen; undefined after a write until the next `list()`. */
  #snapshot: readonly AgentRecord[] | undefined;

  /** Opens (creating if needed) the database at `path` and runs pending migrations. */
  constructor(path: string) {
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.#db = new Database(path);
    this.#db.pragma("journal_mode = WAL");
    this.#db.pragma("synchronous = NORMAL");
    this.#db.pragma("foreign_keys = ON");
    this.#db.pragma("busy_timeout = 5000");
    migrate(this.#db);
    this.#stmts = {
      get: this.#db.prepare<[string], Row>("SELECT * FROM agents WHERE container_id = ?"),
      list: this.#db.prepare<[], Row>("SELECT * FROM agents ORDER BY agent_name, container_id"),
      insert: this.#db.prepare(
        `INSERT INTO agents (container_id, agent_name, project, cert_thumbprint, registered_at_unix, last_seen_unix)
         VALUES (@containerId, @agentName, @project, @certThumbprint, @now, @now)`,
      ),
      touch: this.#db.prepare("UPDATE agents SET last_seen_unix = ? WHERE container_id = ?"),
      remove: this.#db.prepare("DELETE FROM agents WHERE container_id = ?"),
    };
  }

  /**
   * Records a registration. The same container with the same thumbprint is idempotent (and
   * refreshes last_seen); a different thumbprint for a known container, or a thumbprint already
   * bound to another container, is a mismatch and changes nothing.
   */
  register(input: Omit<AgentRecord, "registeredAtUnix" | "lastSeenUnix">, nowUnix: number): RegisterOutcome {
    this.#snapshot = undefined;
    return this.#db.transaction((): RegisterOutcome => {
      const existing = this.#stmts.get.get(input.containerId);
      if (existing !== undefined) {
        if (existing.cert_thumbprint !== input.certThumbprint) return "thumbprint_mismatch";
        this.#stmts.touch.run(nowUnix, input.containerId);
        return "unchanged";
      }
      try {
        this.#stmts.insert.run({ ...input, now: nowUnix });
      } catch (err) {
        if (isUniqueViolation(err)) return "thumbprint_mismatch";
        throw err;
      }
      return "created";
    })();
  }

  /** The row for a container, or undefined. */
  get(containerId: string): AgentRecord | undefined {
    const row = this.#stmts.get.get(containerId);
    return row === undefined ? undefined : toRecord(row);
  }

  /**
   * Every registered agent, ordered by name: one frozen array, the same object until the next
   * write, so callers may memoise on its identity.
   */
  list(): readonly AgentRecord[] {
    this.#snapshot ??= Object.freeze(this.#stmts.list.all().map((row) => Object.freeze(toRecord(row))));
    return this.#snapshot;
  }

  /** Updates last_seen for a container; false when it has no row. */
  touch(containerId: string, nowUnix: number): boolean {
    this.#snapshot = undefined;
    return this.#stmts.touch.run(nowUnix, containerId).changes > 0;
  }

  /** Deletes a container's row; false when it had none. */
  remove(containerId: string): boolean {
    this.#snapshot = undefined;
    return this.#stmts.remove.run(containerId).changes > 0;
  }

  /** Closes the database. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }
}

function migrate(db: Database.Database): void {
  const version = db.pragma("user_version", { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    throw new Error(
      `registry schema version ${version} is newer than this control plane knows (${MIGRATIONS.length})`,
    );
  }
  db.transaction(() => {
    for (let i = version; i < MIGRATIONS.length; i++) db.exec(MIGRATIONS[i]!);
    db.pragma(`user_version = ${MIGRATIONS.length}`);
  })();
}

function isUniqueViolation(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === "SQLITE_CONSTRAINT_UNIQUE";
}

function toRecord(row: Row): AgentRecord {
  return {
    containerId: row.container_id,
    agentName: row.agent_name,
    project: row.project,
    certThumbprint: row.cert_thumbprint,
    registeredAtUnix: row.registered_at_unix,
    lastSeenUnix: row.last_seen_unix,
  };
}
