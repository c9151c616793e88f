// The TypeScript decoders against the compiler's layout of include/clawker.h, and against real
// bytes: a sample encoded in C, and the pinned maps as bpftool dumps them.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { bpffs, cgroup2, root, skipReason } from "../../../test/harness/preconditions.js";
import { bin, buildOnce, ensureBpffs, Lab, remote } from "./fixture.js";
import { bytesOf, decode, layouts, widthOf, type Layout } from "./layout.js";

const run = promisify(execFile);
ensureBpffs();

interface CLayout {
  size: number;
  fields: Record<string, [number, number]>;
}

describe("shared struct layouts", { skip: skipReason(root) }, () => {
  test("every struct's size and field offsets match what the compiler laid out", async () => {
    await buildOnce();
    const { stdout } = await run(bin.layout);
    const c = JSON.parse(stdout) as Record<string, CLayout>;
    assert.deepEqual(Object.keys(c).sort(), Object.keys(layouts).sort());
    for (const [name, layout] of Object.entries(layouts) as [string, Layout][]) {
      const fromC = c[name];
      assert.ok(fromC, name);
      assert.equal(layout.size, fromC.size, `${name} size`);
      const ts = Object.fromEntries(layout.fields.map((f) => [f.name, [f.offset, widthOf(f.kind)]]));
      assert.deepEqual(ts, fromC.fields, `${name} fields`);
    }
  });

  test("decodes bytes the C compiler produced for known values", async () => {
    await buildOnce();
    const { stdout } = await run(bin.layout, ["--sample"]);
    const hex = JSON.parse(stdout) as Record<"clawker_event" | "cg_config" | "cg_counters", string>;
    assert.deepEqual(decode(layouts.clawker_event, Buffer.from(hex.clawker_event, "hex")), {
      ts_ns: 0x0102030405060708n,
      cgroup_id: 4242n,
      orig_addr: ["10.250.0.1", "0.0.0.0", "0.0.0.0", "0.0.0.0"],
      new_addr: "127.0.0.1",
      identity: 77,
      orig_port: 443,
      new_port: 15001,
      hook: 1,
      verdict: 6,
      proto: 6,
      family: 4,
    });
    assert.deepEqual(decode(layouts.cg_config, Buffer.from(hex.cg_config, "hex")), {
      proxy_addr: "127.0.0.1",
      dns_addr: "127.0.0.2",
      gateway_addr: "172.20.0.1",
      subnet_addr: "172.20.0.0",
      subnet_mask: "255.255.0.0",
      mark: 0x77,
      dns_port: 53,
      catchall_port: 15001,
      udp_port: 15003,
      flags: 0,
    });
    const counters = decode(layouts.cg_counters, Buffer.from(hex.cg_counters, "hex"));
    assert.deepEqual(
      [counters["allowed"], counters["redirected"], counters["denied"], counters["dns"], counters["events"]],
      [1n, 2n, 3n, 4n, 5n],
    );
  });
});

describe(
  "pinned map bytes decode to what the manager reports",
  { skip: skipReason(root, cgroup2, bpffs) },
  () => {
    let lab: Lab;
    before(async () => {
      lab = new Lab();
      try {
        await lab.setUp({ enroll: false });
      } catch (err) {
        await lab.tearDown();
        throw err;
      }
    });
    after(() => lab.tearDown());

    async function mapDump(name: string): Promise<{ key: Buffer; value: Buffer }[]> {
      const { stdout } = await run("bpftool", ["map", "dump", "pinned", `${lab.pinDir}/maps/${name}`, "-j"]);
      return (JSON.parse(stdout) as { key: string[]; value: string[] }[]).map((e) => ({
        key: bytesOf(e.key),
        value: bytesOf(e.value),
      }));
    }

    test("containers, routes, dns_cache and counters", async () => {
      const agent = lab.cgroup("agent");
      await lab.client.enroll(
        { cgroup: lab.parent },
        { ...lab.defaultConfig(), gateway: "172.20.0.1", subnet: "172.20.0.0/16", mark: 9 },
      );
      await lab.client.syncRoutes([{ identity: 5, port: 8443, protocol: "udp", listener: 15003 }]);
      await lab.client.dnsUpdate([{ address: "10.77.0.1", identity: 5, ttl: 60 }]);
      await lab.probe(agent, "tcp", remote.web, "443");
      const dump = await lab.client.dump();

      const [container] = await mapDump("containers");
      assert.ok(container);
      assert.equal(container.key.readBigUInt64LE(0).toString(), dump.containers[0]?.cgroupId);
      const cfg = decode(layouts.cg_config, container.value);
      assert.deepEqual(
        {
          proxy: cfg["proxy_addr"],
          dns: cfg["dns_addr"],
          dnsPort: cfg["dns_port"],
          gateway: cfg["gateway_addr"],
          subnet: `${String(cfg["subnet_addr"])}/16`,
          mark: cfg["mark"],
          catchallPort: cfg["catchall_port"],
          udpPort: cfg["udp_port"],
        },
        dump.containers[0]?.config,
      );

      const routes = await mapDump("routes");
      assert.equal(routes.length, 1);
      const rk = decode(layouts.route_key, routes[0]!.key);
      const rv = decode(layouts.route_val, routes[0]!.value);
      assert.deepEqual(
        {
          identity: rk["identity"],
          port: rk["port"],
          protocol: rk["proto"] === 17 ? "udp" : "tcp",
          listener: rv["listener_port"],
        },
        dump.routes[0],
      );

      const [dns] = await mapDump("dns_cache");
      assert.ok(dns);
      assert.equal(`${dns.key[0]}.${dns.key[1]}.${dns.key[2]}.${dns.key[3]}`, "10.77.0.1");
      assert.deepEqual(decode(layouts.dns_entry, dns.value)["identity"], [5, 0, 0, 0]);

      const counters = await mapDump("counters");
      const id = Lab.cgroupId(agent);
      const mine = counters.find((c) => c.key.readBigUInt64LE(0).toString() === id);
      assert.ok(mine);
      const decoded = decode(layouts.cg_counters, mine.value);
      const reported = dump.counters.find((c) => c.cgroupId === id);
      assert.equal(Number(decoded["redirected"]), reported?.redirected);
      assert.equal(Number(decoded["redirected"]), 1);
    });
  },
);
