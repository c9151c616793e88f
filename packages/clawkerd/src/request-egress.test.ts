// `clawkerd request-egress`: usage errors (exit 2) before anything is read or sent, and an
// unusable bootstrap or a missing token named. The call itself, from a real agent container to
// the real control plane, is test/e2e/firewall-triage.test.ts.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { requestEgressCommand } from "./request-egress.js";

async function run(args: string[], dir: string): Promise<{ code: number; out: string; err: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = "";
  let e = "";
  out.on("data", (d: Buffer) => (o += d.toString()));
  err.on("data", (d: Buffer) => (e += d.toString()));
  const code = await requestEgressCommand(
    args,
    { bootstrapDir: join(dir, "b"), stateDir: join(dir, "s") },
    out,
    err,
  );
  return { code, out: o, err: e };
}

test("usage errors exit 2 with what to fix; nothing is read", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "request-egress-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cases: Array<[string[], RegExp]> = [
    [[], /usage: clawkerd request-egress NAME/],
    [["a.example", "b.example", "--reason", "x"], /usage: /],
    [["a.example"], /--reason is required/],
    [["a.example", "--reason", "  "], /--reason is required/],
    [["a.example", "--reason", "x", "--port", "0"], /--port must be 1-65535, got "0"/],
    [["a.example", "--reason", "x", "--port", "99999"], /--port must be 1-65535/],
    [["a.example", "--reason", "x", "--bogus"], /Unknown option '--bogus'/],
  ];
  for (const [args, message] of cases) {
    const r = await run(args, dir);
    assert.equal(r.code, 2, args.join(" "));
    assert.match(r.err, message, args.join(" "));
    assert.equal(r.out, "");
  }
  // Well formed, but no bootstrap files here: named, exit 2 (the container is unusable).
  const r = await run(["a.example", "--reason", "x"], dir);
  assert.equal(r.code, 2);
  assert.match(r.err, /bootstrap file missing: /);
});
