// The Firewall's upstream resolvers when `firewall.resolvers` is not set: the host's resolv.conf
// (a real file), and a clear refusal naming the setting when it names only loopback stubs. Real
// sqlite file; HAProxy is never reached (the resolvers are settled before anything starts).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { pino } from "pino";
import { ConfigSchema } from "../config.js";
import { FirewallError } from "./errors.js";
import { Firewall } from "./firewall.js";

void test("no firewall.resolvers and a resolv.conf with only loopback stubs: Init refuses, naming the setting", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "fw-resolvers-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const resolvConf = join(dir, "resolv.conf");
  writeFileSync(resolvConf, "nameserver 127.0.0.53\noptions edns0\n");
  const settings = ConfigSchema.parse({
    firewall: { proxy: { address: "127.0.0.1" }, clients: ["127.0.0.3/32"], allowUnenforced: true },
  }).firewall;
  const spawned: string[] = [];
  const firewall = new Firewall({
    settings,
    dataDir: dir,
    database: join(dir, "registry.db"),
    host: {
      spawn: (name) => {
        spawned.push(name);
        return Promise.reject(new Error("not in this test"));
      },
      stop: () => Promise.resolve(),
    },
    containers: { records: () => [], onChange: () => () => undefined },
    agents: { list: () => [] },
    network: () => Promise.resolve(undefined),
    log: pino({ level: "silent" }),
    resolvConf,
  });
  t.after(() => firewall.close());
  await firewall.start(AbortSignal.timeout(10_000));
  await assert.rejects(firewall.init(), (err: unknown) => {
    assert.ok(err instanceof FirewallError);
    assert.equal(err.reason, "not_configured");
    assert.equal(
      err.message,
      `no upstream DNS resolver: ${resolvConf} names no IPv4 nameserver that is not loopback; set firewall.resolvers`,
    );
    return true;
  });
  assert.deepEqual(spawned, [], "nothing started");
  assert.equal((await firewall.status()).running, false);
});
