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

void test("the daemon's module graph leaves out the interception CA's x509 stack, the DNS gate and jose", async () => {
  const { stdout } = await run(
    process.execPath,
    ["--import", "tsx", "--conditions=source", fixture, daemon],
    {
      maxBuffer: 16 * 1024 * 1024,
    },
  );
  const urls = JSON.parse(stdout) as string[];
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
