// Opens the admin client as the CLI from the stored trust set, with a clock corrected by the
// control plane's GetSystemTime so client assertions are never issued in the server's future.
import { loadTrustSet, openAdminClient, type AdminClient, type ClockSkew } from "@clawker/adminclient";

/** Where the CLI's credentials are and what to dial. */
export interface AdminConnectionOptions {
  readonly trustDir: string;
  readonly admin: string;
  readonly tokenEndpoint: string;
  readonly deadlineMs?: number;
}

/** An open admin connection and the clock skew measured on it. */
export interface AdminConnection {
  readonly client: AdminClient;
  readonly skew: ClockSkew;
}

/** Skew above which the CLI warns. */
export const SKEW_WARN_MS = 1_000;
/** Skew above which the CLI refuses to go on (tokens and certificates would misbehave). */
export const SKEW_FAIL_MS = 30_000;

/** Loads the trust set, dials, and measures the skew (GetSystemTime, no token). */
export async function connectAdmin(o: AdminConnectionOptions): Promise<AdminConnection> {
  const trust = await loadTrustSet(o.trustDir);
  let offsetMs = 0;
  const client = openAdminClient({
    trust,
    target: o.admin,
    tokenEndpoint: o.tokenEndpoint,
    now: () => Date.now() + offsetMs,
    ...(o.deadlineMs === undefined ? {} : { deadlineMs: o.deadlineMs }),
  });
  try {
    const skew = await client.clockSkew();
    offsetMs = Math.round(skew.skewMs);
    return { client, skew };
  } catch (err) {
    await client.close();
    throw err;
  }
}

/** What a measured skew means: fine, worth a warning, or too large to go on. */
export function skewVerdict(skewMs: number): "ok" | "warn" | "fail" {
  const abs = Math.abs(skewMs);
  return abs > SKEW_FAIL_MS ? "fail" : abs > SKEW_WARN_MS ? "warn" : "ok";
}

/** `+1.234s` style rendering of a skew. */
export function formatSkew(skewMs: number): string {
  return `${skewMs >= 0 ? "+" : "-"}${(Math.abs(skewMs) / 1000).toFixed(3)}s`;
}
