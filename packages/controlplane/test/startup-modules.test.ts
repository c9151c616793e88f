// What the daemon loads at start-up: importing run.ts's module graph (daemon.ts) in a real child
// process must not pull in code only a later, optional step needs, since every module loaded is
// start-up time and resident memory of every idle daemon.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const fixture = fileURLToPath(new URL("./fixtures/loaded-modules.ts", import.meta.url));
const daemon = new URL("../src/daemon.ts", import.meta.url).href;
const entry = new URL("../src/run.ts", import.meta.url).href;

/** The module URLs loaded by importing `module` with `args` as its command line (the fixture's last line). */
async function loadedBy(module: string, args: readonly string[] = []): Promise<string[]> {
  const { stdout } = await run(
    process.execPath,
    ["--import", "tsx", "--conditions=source", fixture, module, ...args],
    { maxBuffer: 16 * 1024 * 1024 },
  );
  return JSON.parse(stdout.trimEnd().split("\n").at(-1)!) as string[];
}

void test("the daemon's module graph leaves out the interception CA's x509 stack, the DNS gate and jose", async () => {
  const urls = await loadedBy(daemon);
  assert.ok(
    urls.some((u) => u.endsWith("/firewall/interception-ca.ts")),
    "the fixture saw the firewall's modules load",
  );
  for (const unwanted of [
    "/@peculiar/x509/",
    "/tsyringe/",
    "/dns-packet/",
    "/firewall/dns/gate.ts",
    "/jose/",
  ]) {
    assert.deepEqual(
      urls.filter((u) => u.includes(unwanted)),
      [],
      `${unwanted} is loaded only when needed`,
    );
  }
});

void test("the entry forks the auth server before it loads the daemon's own modules", async () => {
  // `--version` exits once run.ts's static imports are loaded: what runs before the first helper
  // is forked (auth-boot.ts), so all of it is on the start-up's critical path.
  const urls = await loadedBy(entry, ["--version"]);
  assert.ok(
    urls.some((u) => u.endsWith("/src/auth-boot.ts")),
    "the fixture saw the first start-up steps load",
  );
  for (const unwanted of [
    "/src/daemon.ts",
    "/@grpc/grpc-js/",
    "/dockerode/",
    "/proto/src/",
    "/firewall/firewall.ts",
    // TLS code: the auth helpers' admin APIs are Unix sockets; https is for later requests.
    "node:https",
    "node:tls",
  ]) {
    assert.deepEqual(
      urls.filter((u) => u.includes(unwanted)),
      [],
      `${unwanted} loads after the auth server is forked`,
    );
  }
});
