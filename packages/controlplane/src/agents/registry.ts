// The agent registry: one sqlite file (WAL), the control plane its only writer. A row binds a
// container id to the certificate thumbprint that registered it. An existing file is checked
// (read-only) before use and never replaced; every storage error names the file. See README.md.
import Database from "better-sqlite3";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  renameSync,
  statSync,
  unlinkSync,
} from "node:fs";
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

/** Why the registry cannot be used; stable strings. */
export type RegistryReason =
  "empty" | "corrupt" | "not_a_registry" | "newer_schema" | "storage_failed" | "closed";

/** A registry failure with a stable `reason`; the message names the database file. */
export class RegistryError extends Error {
  override readonly name = "RegistryError";
  /** The stable machine-readable cause. */
  readonly reason: RegistryReason;
  /** The database file. */
  readonly file: string;

  constructor(reason: RegistryReason, file: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
    this.file = file;
  }
}

/** The three files of a WAL database; all of them are the registry. */
function registryFiles(path: string): string[] {
  return [path, `${path}-wal`, `${path}-shm`];
}

/** What to do about a database that is refused (the README's "Recovery" says more). */
function recoveryHint(path: string): string {
  return (
    `the control plane will not replace an existing registry. Stop it, move ${path} and its -wal and ` +
    `-shm files aside (or restore them from a backup), then start again: a missing file starts an ` +
    `empty registry. To salvage the rows first see "Recovery" in packages/controlplane/src/agents/README.md`
  );
}

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
  readonly #file: string;
  readonly #stmts;
  #closed = false;
  /** The current listing, frozen; undefined after a write until the next `list()`. */
  #snapshot: readonly AgentRecord[] | undefined;

  /**
   * Opens the database at `path` and runs pending migrations. A missing file is created (complete,
   * 0600) under a temporary name and renamed into place; an existing one is first checked without
   * writing to it (`quick_check`, schema) and refused with a RegistryError naming the file and the
   * way out when it is empty, damaged or not a registry, leaving it exactly as it was.
   */
  constructor(path: string) {
    this.#file = path;
    if (path !== ":memory:") {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      if (!existsSync(path)) createRegistry(path);
      checkRegistry(path);
      // Older installs left these 0644; sqlite gives -wal and -shm the main file's mode.
      for (const file of registryFiles(path)) if (existsSync(file)) chmodSync(file, 0o600);
    }
    this.#db = storage(path, "open", () => {
      const db = new Database(path, { fileMustExist: path !== ":memory:" });
      try {
        configure(db);
        migrate(db, path);
      } catch (err) {
        db.close();
        throw err;
      }
      return db;
    });
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
    return this.#storage("register", () => this.#register(input, nowUnix));
  }

  #register(input: Omit<AgentRecord, "registeredAtUnix" | "lastSeenUnix">, nowUnix: number): RegisterOutcome {
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
    const row = this.#storage("get", () => this.#stmts.get.get(containerId));
    return row === undefined ? undefined : toRecord(row);
  }

  /**
   * Every registered agent, ordered by name: one frozen array, the same object until the next
   * write, so callers may memoise on its identity.
   */
  list(): readonly AgentRecord[] {
    this.#snapshot ??= Object.freeze(
      this.#storage("list", () => this.#stmts.list.all()).map((row) => Object.freeze(toRecord(row))),
    );
    return this.#snapshot;
  }

  /** Updates last_seen for a container; false when it has no row. */
  touch(containerId: string, nowUnix: number): boolean {
    this.#snapshot = undefined;
    return this.#storage("touch", () => this.#stmts.touch.run(nowUnix, containerId)).changes > 0;
  }

  /** Deletes a container's row; false when it had none. */
  remove(containerId: string): boolean {
    this.#snapshot = undefined;
    return this.#storage("remove", () => this.#stmts.remove.run(containerId)).changes > 0;
  }

  /** Closes the database (checkpointing the WAL). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    storage(this.#file, "close", () => this.#db.close());
  }

  #storage<T>(operation: string, fn: () => T): T {
    if (this.#closed)
      throw new RegistryError("closed", this.#file, `registry ${this.#file}: ${operation} after close`);
    return storage(this.#file, operation, fn);
  }
}

/** Runs a sqlite operation; a failure becomes a RegistryError that names the file. */
function storage<T>(file: string, operation: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof RegistryError) throw err;
    const code = (err as { code?: unknown }).code;
    const corrupt = code === "SQLITE_CORRUPT" || code === "SQLITE_NOTADB";
    throw new RegistryError(
      corrupt ? "corrupt" : "storage_failed",
      file,
      `registry ${file}: ${operation} failed: ${(err as Error).message}${corrupt ? `; ${recoveryHint(file)}` : ""}`,
      { cause: err },
    );
  }
}

function configure(db: Database.Database): void {
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.pragma("foreign_keys = ON");
  db.pragma("busy_timeout = 5000");
}

/**
 * Creates a complete, migrated registry at `path` without ever leaving a half-made one there: built
 * under a temporary name (0600; sqlite gives -wal and -shm the same mode), closed (which folds the
 * WAL in), then renamed into place.
 */
function createRegistry(path: string): void {
  const tmp = `${path}.new-${randomBytes(4).toString("hex")}`;
  closeSync(openSync(tmp, "wx", 0o600));
  try {
    storage(path, "create", () => {
      const db = new Database(tmp, { fileMustExist: true });
      try {
        configure(db);
        migrate(db, path);
      } finally {
        db.close();
      }
    });
    renameSync(tmp, path);
    const dir = openSync(dirname(path), "r");
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  } catch (err) {
    for (const file of registryFiles(tmp)) if (existsSync(file)) unlinkSync(file);
    throw err;
  }
}

/**
 * Checks an existing registry without changing it: a read-only connection (no checkpoint, no WAL
 * reset on close) runs `quick_check` and reads the schema. The -wal and -shm files such a
 * connection may create are removed again when they did not exist before. Throws RegistryError.
 */
function checkRegistry(path: string): void {
  if (statSync(path).size === 0) {
    throw new RegistryError(
      "empty",
      path,
      `registry ${path} is empty (0 bytes): its rows are lost; ${recoveryHint(path)}`,
    );
  }
  const sideFiles = registryFiles(path).slice(1);
  const existed = sideFiles.map((f) => existsSync(f));
  try {
    const db = storage(
      path,
      "integrity check",
      () => new Database(path, { readonly: true, fileMustExist: true }),
    );
    try {
      const problems = storage(path, "integrity check", () =>
        (db.pragma("quick_check") as Array<{ quick_check: string }>).map((r) => r.quick_check),
      );
      if (problems.length !== 1 || problems[0] !== "ok") {
        throw new RegistryError(
          "corrupt",
          path,
          `registry ${path} is damaged (quick_check: ${problems.slice(0, 3).join("; ").replace(/\n/g, " ")}); ${recoveryHint(path)}`,
        );
      }
      const version = storage(
        path,
        "integrity check",
        () => db.pragma("user_version", { simple: true }) as number,
      );
      const hasAgents = storage(
        path,
        "integrity check",
        () =>
          db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'agents'").get() !==
          undefined,
      );
      if (version > MIGRATIONS.length) throw newerSchema(path, version);
      if (version === 0 || !hasAgents) {
        throw new RegistryError(
          "not_a_registry",
          path,
          `registry ${path} is a sqlite database but not an agent registry (schema version ${version}, ${hasAgents ? "" : "no "}agents table); ${recoveryHint(path)}`,
        );
      }
    } finally {
      db.close();
    }
  } finally {
    sideFiles.forEach((file, i) => {
      if (!existed[i] && existsSync(file)) unlinkSync(file);
    });
  }
}

function newerSchema(file: string, version: number): RegistryError {
  return new RegistryError(
    "newer_schema",
    file,
    `registry ${file}: schema version ${version} is newer than this control plane knows (${MIGRATIONS.length}); run a newer control plane`,
  );
}

function migrate(db: Database.Database, file: string): void {
  const version = db.pragma("user_version", { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    throw newerSchema(file, version);
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
