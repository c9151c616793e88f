// Errors of the auth server, each with a stable `reason` that tests and callers match on.

/** Why the auth server failed; stable strings, never reworded. */
export type AuthServerReason =
  | "invalid_config"
  | "config_unreadable"
  | "signing_key_invalid"
  | "tls_material_unreadable"
  | "listen_failed"
  | "admin_socket_insecure"
  | "database_failed"
  | "closed";

/** An auth server failure with a stable `reason`. */
export class AuthServerError extends Error {
  override readonly name = "AuthServerError";
  readonly reason: AuthServerReason;

  constructor(reason: AuthServerReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/** The configuration was rejected; `problems` lists every problem found, one line each. */
export class ConfigError extends AuthServerError {
  readonly problems: readonly string[];

  constructor(problems: readonly string[], options?: ErrorOptions) {
    super("invalid_config", `invalid auth server config:\n  - ${problems.join("\n  - ")}`, options);
    this.problems = problems;
  }
}
