// The real daemon on a damaged registry (issue 10 §3): it refuses to start, naming the file and
// what to do, binds and spawns nothing, and leaves the file exactly as it was.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { startControlPlane } from "../../../test/harness/controlplane.js";
import { Registry } from "../src/agents/registry.js";

const sha = (path: string): string => createHash("sha256").update(readFileSync(path)).digest("hex");

function junkPage(path: string): void {
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, 4096 * 2);
  } finally {
    closeSync(fd);
  }
}

const DAMAGE: ReadonlyArray<[string, (path: string) => void]> = [
  ["a 0-byte registry", (p) => truncateSync(p, 0)],
  ["a truncated registry", (p) => truncateSync(p, Math.floor(statSync(p).size / 2))],
  ["a registry with a page of junk", junkPage],
];

describe("clawker-cp on a damaged registry", () => {
  for (const [what, damage] of DAMAGE) {
    test(`${what}: refuses to start naming the file and the way out; the file is untouched`, async (t) => {
      const dataDir = mkdtempSync(join(tmpdir(), "clawker-registry-damage-"));
      t.after(() => rmSync(dataDir, { recursive: true, force: true }));
      const file = join(dataDir, "registry.db");
      const reg = new Registry(file);
      for (let i = 0; i < 200; i++) {
        reg.register(
          {
            containerId: `c${i}`,
            agentName: `p.a${i}`,
            project: "p",
            certThumbprint: `${i}`.padStart(64, "0"),
          },
          i,
        );
      }
      reg.close();
      damage(file);
      const before = sha(file);

      const cp = await startControlPlane({ dataDir, noWait: true });
      t.after(() => cp.close());
      assert.equal(await cp.exited, 1);
      const drain = cp.logs.find((l) => l["event"] === "drain");
      assert.equal(drain?.["cause"], "startup_failed");
      const message = String((drain?.["err"] as { message?: string } | undefined)?.message);
      assert.ok(message.startsWith(`registry ${file}`), message);
      assert.match(message, new RegExp(`move ${file} and its -wal and -shm files aside`));
      assert.equal(sha(file), before, "the registry file was changed");
      assert.deepEqual(
        readdirSync(dataDir).filter((f) => f.startsWith("registry.db")),
        ["registry.db"],
        "no -wal, -shm or replacement beside it",
      );
      assert.equal(cp.logs.filter((l) => l["event"] === "listener_serving").length, 0, "nothing bound");
      assert.equal(cp.logs.filter((l) => l["msg"] === "helper started").length, 0, "nothing spawned");
    });
  }
});
