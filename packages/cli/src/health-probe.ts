// GET /healthz on the daemon's plain-HTTP health listener.

/** What one probe saw. `reachable` is false when no HTTP answer came. */
export interface HealthProbe {
  readonly url: string;
  readonly reachable: boolean;
  readonly httpStatus?: number;
  /** The parsed JSON body (e.g. `{"status":"healthy"}`), or the raw text when not JSON. */
  readonly body?: unknown;
  readonly error?: string;
}

/** The health URL of a `host:port` address. */
export function healthUrl(addr: { host: string; port: number }): string {
  const host = addr.host.includes(":") ? `[${addr.host}]` : addr.host;
  return `http://${host}:${addr.port}/healthz`;
}

/** One probe with a short timeout; never throws. */
export async function probeHealth(url: string, timeoutMs = 1000): Promise<HealthProbe> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: "manual" });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { url, reachable: true, httpStatus: res.status, body };
  } catch (err) {
    const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
    const code = (cause as NodeJS.ErrnoException | undefined)?.code;
    return { url, reachable: false, error: code ?? (cause instanceof Error ? cause.message : String(cause)) };
  }
}

/** A short human description of a probe: `200 healthy`, `503 not_ready`, `unreachable (ECONNREFUSED)`. */
export function describeProbe(p: HealthProbe): string {
  if (!p.reachable) return `unreachable (${p.error ?? "no answer"})`;
  const b = p.body;
  const statusText =
    typeof b === "object" && b !== null && "status" in b && typeof b.status === "string"
      ? b.status +
        ("failed_probe" in b && typeof b.failed_probe === "string"
          ? ` (failed probe: ${b.failed_probe})`
          : "")
      : "";
  return `${p.httpStatus ?? "?"}${statusText === "" ? "" : ` ${statusText}`}`;
}
