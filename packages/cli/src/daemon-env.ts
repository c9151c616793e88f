// What the daemon's environment carries beyond its settings: glibc malloc tunables (issue 15).
// glibc keeps up to 7 freed chunks per size per thread in its cache (tcache) and sends the rest
// through its bins. Under 64 calls in flight the daemon's main thread frees and reallocates far
// more chunks of a size than that (HTTP/2 streams and the buffers of each), and `_int_malloc`, the
// bins' slow path, was 4.1-4.6 % of the daemon's CPU samples against ~2 % in a bare grpc-js server
// under the same load. With 256 per size it is 2.4 %, and the daemon's CPU per authorized call
// moved with it (controlplane README, "Memory").
// glibc reads its tunables once, when the process is executed, so unlike the daemon's V8 flags
// (controlplane's heap-tuning.ts) they cannot be set from inside: every way the daemon is started
// sets the same value, `clawker controlplane up` (here), the systemd unit, the image, and the test
// harness; daemon-env.test.ts holds the files to it.

/** The tunables the daemon is started with (GLIBC_TUNABLES syntax). */
export const DAEMON_GLIBC_TUNABLES = "glibc.malloc.tcache_count=256";

/**
 * `env` with DAEMON_GLIBC_TUNABLES added to its GLIBC_TUNABLES, unless that already sets
 * `glibc.malloc.tcache_count` (an operator's own value is kept). Returns a new object.
 */
export function withDaemonTunables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const given = env["GLIBC_TUNABLES"] ?? "";
  if (given.split(":").some((t) => t.startsWith("glibc.malloc.tcache_count="))) return { ...env };
  return {
    ...env,
    GLIBC_TUNABLES: given === "" ? DAEMON_GLIBC_TUNABLES : `${given}:${DAEMON_GLIBC_TUNABLES}`,
  };
}
