// Typed Docker failures: callers switch on `reason`, never on the message. "unreachable" means the
// daemon could not be asked at all (its state is unknown); "api_error" means it answered with an
// error status; "bad_response" means its answer could not be read (not JSON, the wrong shape, too
// large); "invalid_host" means DOCKER_HOST names something we do not dial.

/** Every reason a Docker operation can fail with. */
export type DockerErrorReason = "invalid_host" | "unreachable" | "api_error" | "bad_response" | "timeout";

/** A Docker failure with a stable `reason`; `statusCode` is set for "api_error". */
export class DockerError extends Error {
  override readonly name = "DockerError";
  /** The stable machine-readable cause. */
  readonly reason: DockerErrorReason;
  /** The operation that failed, e.g. "listContainers". */
  readonly operation: string;
  /** The HTTP status the daemon answered with (api_error only). */
  readonly statusCode: number | undefined;

  constructor(
    reason: DockerErrorReason,
    operation: string,
    message: string,
    options?: ErrorOptions & { statusCode?: number },
  ) {
    super(message, options);
    this.reason = reason;
    this.operation = operation;
    this.statusCode = options?.statusCode;
  }
}

// Socket-level failures: nothing answered, so nothing is known about the daemon's state.
const UNREACHABLE_CODES = new Set([
  "ECONNREFUSED",
  "ENOENT",
  "ECONNRESET",
  "EPIPE",
  "EACCES",
  "ENOTSOCK",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ECONNABORTED",
]);

/**
 * Wraps a failure of a Docker call into a DockerError (returned as is when it already is one):
 * a numeric `statusCode` is an HTTP refusal, an errno code or anything else below HTTP means the
 * daemon did not answer.
 */
export function toDockerError(err: unknown, operation: string): DockerError {
  if (err instanceof DockerError) return err;
  const e = err as { statusCode?: unknown; code?: unknown; name?: unknown; message?: unknown } | null;
  const text = typeof e?.message === "string" ? e.message : String(err);
  if (typeof e?.statusCode === "number") {
    return new DockerError("api_error", operation, `docker ${operation}: HTTP ${e.statusCode}`, {
      cause: err,
      statusCode: e.statusCode,
    });
  }
  if (e?.name === "TimeoutError") {
    return new DockerError("timeout", operation, `docker ${operation}: timed out`, { cause: err });
  }
  const code = typeof e?.code === "string" ? e.code : undefined;
  if (code !== undefined && UNREACHABLE_CODES.has(code)) {
    return new DockerError("unreachable", operation, `docker ${operation}: daemon unreachable (${code})`, {
      cause: err,
    });
  }
  // "socket hang up", aborted streams, anything else below HTTP: the daemon did not answer.
  return new DockerError("unreachable", operation, `docker ${operation}: ${text}`, { cause: err });
}
