// The auth server's sqlite store (better-sqlite3, WAL): registered clients and every oidc-provider
// model (tokens, replay records). Nothing live is ever evicted; expired rows are deleted by gc().
// better-sqlite3 is synchronous, so each method below is atomic with respect to the event loop.
import { chmodSync, closeSync, constants, lstatSync, openSync } from "node:fs";
import Database from "better-sqlite3";
import type { Adapter, AdapterPayload } from "oidc-provider";
import { AuthServerError } from "./errors.js";

/** A stored client: the Hydra-shaped JSON served by the admin API and the oidc-provider metadata. */
export interface StoredClient {
  readonly id: string;
  readonly hydra: Record<string, unknown>;
  readonly oidc: Record<string, unknown>;
}

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE clients (
     id TEXT PRIMARY KEY,
     hydra TEXT NOT NULL,
     oidc TEXT NOT NULL
   ) STRICT;
   CREATE TABLE entries (
     model TEXT NOT NULL,
     id TEXT NOT NULL,
     payload TEXT NOT NULL,
     expires_at INTEGER,
     grant_id TEXT,
     uid TEXT,
     user_code TEXT,
     client_id TEXT,
     PRIMARY KEY (model, id)
   ) STRICT, WITHOUT ROWID;
   CREATE INDEX entries_expires ON entries (expires_at) WHERE expires_at IS NOT NULL;
   CREATE INDEX entries_grant ON entries (grant_id) WHERE grant_id IS NOT NULL;
   CREATE INDEX entries_client ON entries (model, client_id) WHERE client_id IS NOT NULL;`,
];

/** Model name of the assertion `jti` records this server keeps itself (atomic replay check). */
const ASSERTION_JTI_MODEL = "AssertionJti";

/** Owns the sqlite handle; `close()` is idempotent. */
export class AuthStore {
  readonly #db: Database.Database;
  #closed = false;

  readonly #stmt: {
    insertClient: Database.Statement<[string, string, string]>;
    updateClient: Database.Statement<[string, string, string]>;
    getClient: Database.Statement<[string], { hydra: string; oidc: string }>;
    deleteClient: Database.Statement<[string]>;
    deleteClientTokens: Database.Statement<[string]>;
    find: Database.Statement<[string, string, number], { payload: string }>;
    findByUid: Database.Statement<[string, string, number], { payload: string }>;
    findByUserCode: Database.Statement<[string, string, number], { payload: string }>;
    upsert: Database.Statement<
      [string, string, string, number | null, string | null, string | null, string | null, string | null]
    >;
    destroy: Database.Statement<[string, string]>;
    revokeByGrant: Database.Statement<[string]>;
    claimJti: Database.Statement<[{ model: string; id: string; expiresAt: number; now: number }]>;
    gc: Database.Statement<[number]>;
  };

  /** Files whose mode was tightened to 0600 when the store opened (an older install's leftovers). */
  readonly tightened: readonly string[];

  /**
   * Opens (creating if needed) the database at `file` and applies migrations. The database and its
   * -wal/-shm files are 0600: they hold live access tokens.
   */
  constructor(file: string) {
    try {
      this.tightened = restrictFiles(file);
      this.#db = new Database(file);
      this.#db.pragma("journal_mode = WAL");
      this.#db.pragma("synchronous = NORMAL");
      this.#db.pragma("busy_timeout = 5000");
      this.#migrate();
    } catch (err) {
      throw new AuthServerError("database_failed", `cannot open database ${file}`, { cause: err });
    }
    const db = this.#db;
    this.#stmt = {
      insertClient: db.prepare(
        "INSERT INTO clients (id, hydra, oidc) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
      ),
      updateClient: db.prepare("UPDATE clients SET hydra = ?, oidc = ? WHERE id = ?"),
      getClient: db.prepare("SELECT hydra, oidc FROM clients WHERE id = ?"),
      deleteClient: db.prepare("DELETE FROM clients WHERE id = ?"),
      deleteClientTokens: db.prepare("DELETE FROM entries WHERE client_id = ?"),
      find: db.prepare(
        "SELECT payload FROM entries WHERE model = ? AND id = ? AND (expires_at IS NULL OR expires_at > ?)",
      ),
      findByUid: db.prepare(
        "SELECT payload FROM entries WHERE model = ? AND uid = ? AND (expires_at IS NULL OR expires_at > ?) LIMIT 1",
      ),
      findByUserCode: db.prepare(
        "SELECT payload FROM entries WHERE model = ? AND user_code = ? AND (expires_at IS NULL OR expires_at > ?) LIMIT 1",
      ),
      upsert: db.prepare(
        `INSERT INTO entries (model, id, payload, expires_at, grant_id, uid, user_code, client_id)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, expires_at = excluded.expires_at,
           grant_id = excluded.grant_id, uid = excluded.uid, user_code = excluded.user_code,
           client_id = excluded.client_id`,
      ),
      destroy: db.prepare("DELETE FROM entries WHERE model = ? AND id = ?"),
      revokeByGrant: db.prepare("DELETE FROM entries WHERE grant_id = ?"),
      // Takes the jti unless a live record holds it; an expired leftover is overwritten.
      claimJti: db.prepare(
        `INSERT INTO entries (model, id, payload, expires_at) VALUES (@model, @id, '{}', @expiresAt)
         ON CONFLICT (model, id) DO UPDATE SET expires_at = excluded.expires_at WHERE entries.expires_at <= @now`,
      ),
      gc: db.prepare("DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ?"),
    };
  }

  #migrate(): void {
    const version = this.#db.pragma("user_version", { simple: true }) as number;
    if (version > MIGRATIONS.length) {
      throw new Error(`database schema version ${version} is newer than this server (${MIGRATIONS.length})`);
    }
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.#db.transaction(() => {
        this.#db.exec(MIGRATIONS[v]!);
        this.#db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  /** Inserts a client; false when the id already exists (nothing written). */
  insertClient(client: StoredClient): boolean {
    return (
      this.#stmt.insertClient.run(client.id, JSON.stringify(client.hydra), JSON.stringify(client.oidc))
        .changes === 1
    );
  }

  /**
   * Replaces the client with `client.id` as a whole, keeping its `created_at` (Hydra's
   * setOAuth2Client); returns the stored client, or undefined when no client has that id.
   */
  replaceClient(client: StoredClient): StoredClient | undefined {
    return this.#db.transaction(() => {
      const previous = this.getClient(client.id);
      if (previous === undefined) return undefined;
      const hydra = { ...client.hydra, created_at: previous.hydra["created_at"] };
      this.#stmt.updateClient.run(JSON.stringify(hydra), JSON.stringify(client.oidc), client.id);
      return { id: client.id, hydra, oidc: client.oidc };
    })();
  }

  /** Deletes every token issued to client `id` (Hydra's deleteOAuth2Token); returns how many. */
  deleteClientTokens(id: string): number {
    return this.#stmt.deleteClientTokens.run(id).changes;
  }

  /** The client with `id`, or undefined. */
  getClient(id: string): StoredClient | undefined {
    const row = this.#stmt.getClient.get(id);
    if (row === undefined) return undefined;
    return {
      id,
      hydra: JSON.parse(row.hydra) as Record<string, unknown>,
      oidc: JSON.parse(row.oidc) as Record<string, unknown>,
    };
  }

  /** Deletes a client and every token issued to it (as Hydra's foreign keys do); false when absent. */
  deleteClient(id: string): boolean {
    return this.#db.transaction(() => {
      const gone = this.#stmt.deleteClient.run(id).changes === 1;
      if (gone) this.#stmt.deleteClientTokens.run(id);
      return gone;
    })();
  }

  /**
   * Records a client assertion's `jti` for `iss` until `expiresAtMs`; false when a live record
   * already holds it (a replay). Atomic: two concurrent uses of one assertion cannot both win.
   */
  claimAssertionJti(key: string, expiresAtMs: number): boolean {
    return (
      this.#stmt.claimJti.run({
        model: ASSERTION_JTI_MODEL,
        id: key,
        expiresAt: expiresAtMs,
        now: Date.now(),
      }).changes === 1
    );
  }

  /** Deletes every expired row; returns how many. */
  gc(now = Date.now()): number {
    return this.#stmt.gc.run(now).changes;
  }

  /** The oidc-provider adapter factory over this store. */
  adapterFor = (model: string): Adapter =>
    model === "Client" ? new ClientAdapter(this) : new EntryAdapter(this, model);

  /** @internal Model rows, for the adapters below. */
  findEntry(model: string, id: string): AdapterPayload | undefined {
    const row = this.#stmt.find.get(model, id, Date.now());
    return row === undefined ? undefined : (JSON.parse(row.payload) as AdapterPayload);
  }

  /** @internal */
  findEntryBy(model: string, column: "uid" | "user_code", value: string): AdapterPayload | undefined {
    const stmt = column === "uid" ? this.#stmt.findByUid : this.#stmt.findByUserCode;
    const row = stmt.get(model, value, Date.now());
    return row === undefined ? undefined : (JSON.parse(row.payload) as AdapterPayload);
  }

  /** @internal */
  upsertEntry(model: string, id: string, payload: AdapterPayload, expiresIn: number | undefined): void {
    const expiresAt = typeof expiresIn === "number" ? Date.now() + expiresIn * 1000 : null;
    this.#stmt.upsert.run(
      model,
      id,
      JSON.stringify(payload),
      expiresAt,
      payload.grantId ?? null,
      payload.uid ?? null,
      payload.userCode ?? null,
      payload.clientId ?? null,
    );
  }

  /** @internal */
  destroyEntry(model: string, id: string): void {
    this.#stmt.destroy.run(model, id);
  }

  /** @internal */
  revokeGrant(grantId: string): void {
    this.#stmt.revokeByGrant.run(grantId);
  }

  /** Closes the database (checkpointing the WAL); idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }
}

/**
 * Creates `file` with mode 0600 when absent (SQLite then gives its -wal and -shm files the
 * database's mode) and tightens an existing database, -wal or -shm to 0600. Returns what it changed.
 */
function restrictFiles(file: string): string[] {
  try {
    closeSync(openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  const changed: string[] = [];
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    let st;
    try {
      st = lstatSync(f);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw err;
    }
    if (!st.isFile()) throw new Error(`${f} is not a regular file`);
    if ((st.mode & 0o777) !== 0o600) {
      chmodSync(f, 0o600);
      changed.push(f);
    }
  }
  return changed;
}

/** oidc-provider's Client model, read from the clients table (registration goes through the admin API). */
class ClientAdapter implements Adapter {
  readonly #store: AuthStore;
  constructor(store: AuthStore) {
    this.#store = store;
  }
  find(id: string): Promise<AdapterPayload | undefined> {
    return Promise.resolve(this.#store.getClient(id)?.oidc as AdapterPayload | undefined);
  }
  upsert(): Promise<void> {
    return Promise.reject(new Error("clients are registered through the admin API only"));
  }
  destroy(): Promise<void> {
    return Promise.reject(new Error("clients are deleted through the admin API only"));
  }
  findByUid(): Promise<undefined> {
    return Promise.resolve(undefined);
  }
  findByUserCode(): Promise<undefined> {
    return Promise.resolve(undefined);
  }
  consume(): Promise<void> {
    return Promise.resolve();
  }
  revokeByGrantId(): Promise<void> {
    return Promise.resolve();
  }
}

/** Every other oidc-provider model, stored as JSON rows with an expiry. */
class EntryAdapter implements Adapter {
  readonly #store: AuthStore;
  readonly #model: string;
  constructor(store: AuthStore, model: string) {
    this.#store = store;
    this.#model = model;
  }
  upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
    this.#store.upsertEntry(this.#model, id, payload, expiresIn);
    return Promise.resolve();
  }
  find(id: string): Promise<AdapterPayload | undefined> {
    return Promise.resolve(this.#store.findEntry(this.#model, id));
  }
  findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return Promise.resolve(this.#store.findEntryBy(this.#model, "uid", uid));
  }
  findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return Promise.resolve(this.#store.findEntryBy(this.#model, "user_code", userCode));
  }
  consume(id: string): Promise<void> {
    const payload = this.#store.findEntry(this.#model, id);
    if (payload !== undefined) {
      // Keep the row's expiry: re-derive the remaining lifetime from its exp claim.
      const left = typeof payload.exp === "number" ? payload.exp - Math.floor(Date.now() / 1000) : undefined;
      this.#store.upsertEntry(this.#model, id, { ...payload, consumed: Math.floor(Date.now() / 1000) }, left);
    }
    return Promise.resolve();
  }
  destroy(id: string): Promise<void> {
    this.#store.destroyEntry(this.#model, id);
    return Promise.resolve();
  }
  revokeByGrantId(grantId: string): Promise<void> {
    this.#store.revokeGrant(grantId);
    return Promise.resolve();
  }
}
