// The manager's lifecycle on the real kernel: upgrades without a gap, crashes that fail closed,
// garbage collection of dead cgroups, flush-all, and a protocol that rejects malformed requests.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, rmdirSync, statSync, unlinkSync } from "node:fs";
import { createConnection } from "node:net";
import { createInterface } from "node:readline";
import { describe, test, type TestContext } from "node:test";
import { bpffs, cgroup2, root, skipReason } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { EbpfError } from "@clawker/controlplane";
import { ensureBpffs, Lab, ports, remote } from "./fixture.js";

ensureBpffs();

async function newLab(t: TestContext, options?: { enroll?: boolean }): Promise<Lab> {
  const lab = new Lab();
  t.after(() => lab.tearDown());
  await lab.setUp(options);
  return lab;
}

function listener(r: Record<string, unknown>): string | undefined {
  return (r["reply"] as { listener?: string } | null | undefined)?.listener;
}

/** Sends raw lines on a fresh connection and returns one parsed reply per line. */
async function rawRequests(socketPath: string, lines: string[]): Promise<Record<string, unknown>[]> {
  const sock = createConnection(socketPath);
  await new Promise<void>((res, rej) => sock.once("connect", res).once("error", rej));
  const rl = createInterface({ input: sock });
  const it = rl[Symbol.asyncIterator]();
  const out: Record<string, unknown>[] = [];
  try {
    for (const l of lines) {
      sock.write(l + "\n");
      const next = await it.next();
      out.push(JSON.parse(next.value as string) as Record<string, unknown>);
    }
  } finally {
    rl.close();
    sock.destroy();
  }
  return out;
}

describe("ebpf manager lifecycle", { skip: skipReason(root, cgroup2, bpffs) }, () => {
  test("an upgrade swaps the programs with bpf_link_update while connections run, with no gap", async (t) => {
    const lab = await newLab(t);
    const agent = lab.cgroup("agent");
    const before = await lab.client.dump();
    const loop = lab.spawnProbe(agent, "tcp-loop", remote.web, "443", "2500");
    await waitFor(async () => listener(await lab.probe(agent, "tcp", remote.web, "443")) === "catchall");
    assert.equal(await lab.stopManager("SIGTERM"), 0);
    await lab.startManager();
    const result = await loop;
    const after = await lab.client.dump();

    assert.equal(result.ok, true);
    assert.ok((result["total"] as number) > 0, "the loop made connections");
    assert.equal(result["errors"], 0);
    assert.deepEqual(result["byListener"], { catchall: result["total"] });
    // same links, new programs; state (the enrolment) survived
    const ids = (d: typeof before): string[] => d.links.map((l) => `${l.program}:${l.linkId}`).sort();
    assert.deepEqual(ids(after), ids(before));
    for (const l of after.links) {
      const old = before.links.find((b) => b.linkId === l.linkId);
      assert.notEqual(l.programId, old?.programId, `${l.program} was swapped`);
    }
    assert.deepEqual(after.containers, before.containers);
  });

  test("an upgrade over pins without the gateway_ports map (an older build) keeps state and enforcing, no flush", async (t) => {
    const lab = await newLab(t, { enroll: false });
    const agent = lab.cgroup("agent");
    const config = { ...lab.defaultConfig(), subnet: "10.250.0.0/24", gateway: remote.dns };
    await lab.client.enroll({ cgroup: lab.parent }, config);
    assert.equal(await lab.stopManager("SIGTERM"), 0);
    // What an older build left: every map pinned but this one.
    unlinkSync(`${lab.pinDir}/maps/gateway_ports`);
    const oneShot = await lab.cli("dump", "--json", "--pin-dir", lab.pinDir);
    assert.equal(oneShot.code, 0, oneShot.stderr);
    assert.deepEqual(
      (JSON.parse(oneShot.stdout) as { result: { gatewayPorts: unknown } }).result.gatewayPorts,
      [],
    );
    // Still enforced with nobody serving; the gateway's host service is refused.
    assert.equal(listener(await lab.probe(agent, "tcp", remote.dns, String(ports.gatewayHost))), "catchall");

    await lab.startManager();
    assert.ok(existsSync(`${lab.pinDir}/maps/gateway_ports`), "the new map is pinned beside the old ones");
    const dump = await lab.client.dump();
    assert.equal(dump.containers.length, 1, "the enrolment survived");
    assert.deepEqual(dump.containers[0]?.config, { ...config, dnsPort: config.dnsPort });
    await lab.client.gatewayPorts([{ address: remote.dns, port: ports.gatewayCp, protocol: "tcp" }]);
    assert.equal(listener(await lab.probe(agent, "tcp", remote.dns, String(ports.gatewayCp))), "gatewaycp");
    assert.equal(listener(await lab.probe(agent, "tcp", remote.dns, String(ports.gatewayHost))), "catchall");
  });

  test("a killed manager leaves the pinned programs enforcing the last state (fail closed)", async (t) => {
    const lab = await newLab(t);
    const agent = lab.cgroup("agent");
    await lab.stopManager("SIGKILL");
    assert.equal(listener(await lab.probe(agent, "tcp", remote.web, "443")), "catchall");
    assert.equal((await lab.probe(agent, "raw")).ok, false);
  });

  test("a vanished cgroup's links are collected by gc", async (t) => {
    const lab = await newLab(t);
    const direct = lab.cgroup("", `${lab.parent}-direct`);
    const res = await lab.client.enroll({ cgroup: direct }, lab.defaultConfig());
    assert.equal(res.attached, true);
    assert.equal(listener(await lab.probe(direct, "tcp", remote.web, "443")), "catchall");
    const mine = async (): Promise<{ defunct: boolean }[]> =>
      (await lab.client.dump()).links.filter((l) => l.cgroupId === res.cgroupId);
    assert.equal((await mine()).length, 10);

    rmdirSync(direct);
    await waitFor(async () => (await mine()).every((l) => l.defunct), {
      what: "links defunct",
      timeoutMs: 20_000,
    });
    const gc = await lab.client.gc();
    assert.equal(gc.links, 10);
    assert.equal(gc.containers, 1);
    assert.deepEqual(await mine(), []);
    assert.equal(existsSync(`${lab.pinDir}/links/${res.cgroupId}`), false);
    // the parent's ten and the proxy's getsockopt link are untouched
    assert.equal((await lab.client.dump()).links.length, 11);
  });

  test("a restart over links whose cgroup vanished (a killed container's) loads, skips them and still enforces", async (t) => {
    const lab = await newLab(t);
    const agent = lab.cgroup("agent");
    const direct = lab.cgroup("", `${lab.parent}-gone`);
    const res = await lab.client.enroll({ cgroup: direct }, lab.defaultConfig());
    assert.equal(res.attached, true);
    // Killed with its links pinned, then the cgroup goes (what `docker kill` of the control plane
    // container does to the proxy's cgroup): bpf_link_update on those links is ENOLINK.
    assert.equal(await lab.stopManager("SIGKILL"), null);
    rmdirSync(direct);
    // The kernel severs the links once the cgroup is released: wait for it, or the update would
    // still succeed and this would test nothing.
    await waitFor(
      async () => {
        const r = await lab.cli("dump", "--json", "--pin-dir", lab.pinDir);
        const links = (
          JSON.parse(r.stdout) as { result: { links: { cgroupId: string; defunct: boolean }[] } }
        ).result.links;
        const severed = links.filter((l) => l.cgroupId === res.cgroupId);
        return severed.length > 0 && severed.every((l) => l.defunct);
      },
      { what: "links severed", timeoutMs: 20_000 },
    );
    await lab.startManager();
    assert.equal(listener(await lab.probe(agent, "tcp", remote.web, "443")), "catchall");
    const mine = (await lab.client.dump()).links.filter((l) => l.cgroupId === res.cgroupId);
    assert.ok(mine.length > 0 && mine.every((l) => l.defunct), "the severed links are left for gc");
    assert.equal((await lab.client.gc()).links, mine.length);
  });

  test("unenrolling the parent keeps its programs attached, so enrolling it again enforces at once", async (t) => {
    const lab = await newLab(t);
    const agent = lab.cgroup("agent");
    await lab.client.unenroll({ cgroup: lab.parent });
    assert.equal(listener(await lab.probe(agent, "tcp", remote.web, "443")), "direct");
    assert.equal((await lab.client.dump()).links.length, 11);
    await lab.client.enroll({ cgroup: lab.parent }, lab.defaultConfig());
    assert.equal(listener(await lab.probe(agent, "tcp", remote.web, "443")), "catchall");
  });

  test("flush-all detaches everything and leaves nothing pinned", async (t) => {
    const lab = await newLab(t);
    const agent = lab.cgroup("agent");
    const direct = lab.cgroup("", `${lab.parent}-direct2`);
    await lab.client.enroll({ cgroup: direct }, lab.defaultConfig());
    assert.equal(listener(await lab.probe(agent, "tcp", remote.web, "443")), "catchall");
    const exited = lab.manager?.exited;
    await lab.client.flushAll();
    assert.equal(await exited, 0);
    lab.manager = undefined;
    assert.equal(existsSync(lab.pinDir), false);
    for (const cg of [lab.parent, direct, lab.proxyCgroup]) {
      const shown = execFileSync("bpftool", ["cgroup", "show", cg, "-j"], { encoding: "utf8" }).trim();
      assert.deepEqual(JSON.parse(shown === "" ? "[]" : shown), [], `nothing attached to ${cg}`);
    }
    assert.equal(listener(await lab.probe(agent, "tcp", remote.web, "443")), "direct");
  });

  test("malformed requests get an error reply and change nothing", async (t) => {
    const lab = await newLab(t);
    await lab.client.syncRoutes([{ identity: 1, port: 443, protocol: "tcp", listener: 16001 }]);
    await lab.client.gatewayPorts([{ address: remote.dns, port: 7444, protocol: "tcp" }]);
    const before = await lab.client.dump();
    const replies = await rawRequests(lab.socketPath, [
      "not json",
      "[1,2]",
      '{"id":1}',
      '{"id":2,"op":"nope"}',
      '{"id":3,"op":"enroll","cgroup":"' + lab.parent + '","config":{"proxy":"127.0.0.1","dns":"1.2.3"}}',
      '{"id":4,"op":"enroll","cgroup":"' +
        lab.parent +
        '","config":{"proxy":"127.0.0.1","dns":"127.0.0.1","catchallPort":1,"extra":1}}',
      '{"id":5,"op":"sync-routes","routes":[{"identity":1,"port":80,"protocol":"tcp","listener":1},{"identity":1,"port":80,"protocol":"tcp","listener":2}]}',
      '{"id":6,"op":"sync-routes","routes":[{"identity":1,"port":80,"protocol":"sctp","listener":1}]}',
      '{"id":7,"op":"dns-update","entries":[{"address":"10.0.0.1","identity":1,"ttl":60},{"address":"127.0.0.1","identity":1,"ttl":60}]}',
      '{"id":8,"op":"enroll","cgroup":"../../etc","config":{}}',
      '{"id":9,"op":"bypass","cgroupId":"123456789012"}',
      '{"id":10,"op":"gc","extra":true}',
      '{"id":11,"op":"enroll","cgroup":"' +
        lab.parent +
        '","config":{"proxy":"127.0.0.1","dns":"127.0.0.1","catchallPort":1,"subnet":"10.0.0.1/8"}}',
      '{"id":12,"op":"gateway-ports","ports":[{"address":"10.0.0.1","port":80,"protocol":"tcp"},{"address":"127.0.0.1","port":80,"protocol":"tcp"}]}',
      '{"id":13,"op":"gateway-ports","ports":[{"address":"10.0.0.1","port":80,"protocol":"icmp"}]}',
      '{"id":14,"op":"gateway-ports","ports":[' +
        Array.from({ length: 65 }, (_, i) => `{"address":"10.0.0.1","port":${i + 1},"protocol":"tcp"}`).join(
          ",",
        ) +
        "]}",
      '{"id":15,"op":"gateway-ports","ports":[{"address":"10.0.0.1","port":80,"protocol":"tcp","extra":1}]}',
    ]);
    assert.deepEqual(
      replies.map((r) => [r["id"], r["ok"], (r["error"] as { reason: string }).reason]),
      [
        [null, false, "bad_request"],
        [null, false, "bad_request"],
        [1, false, "bad_request"],
        [2, false, "unknown_op"],
        [3, false, "bad_request"],
        [4, false, "bad_request"],
        [5, false, "bad_request"],
        [6, false, "bad_request"],
        [7, false, "bad_request"],
        [8, false, "bad_request"],
        [9, false, "not_found"],
        [10, false, "bad_request"],
        [11, false, "bad_request"],
        [12, false, "bad_request"],
        [13, false, "bad_request"],
        [14, false, "too_large"],
        [15, false, "bad_request"],
      ],
    );
    assert.deepEqual(await lab.client.dump(), before);
    // still serving
    assert.equal((await lab.client.status()).parent, lab.parent);
  });

  test("the control socket is 0600, one manager per pin dir, and errors carry their reason", async (t) => {
    const lab = await newLab(t);
    assert.equal(statSync(lab.socketPath).mode & 0o777, 0o600);
    const second = await lab.cli(
      "serve",
      "--socket",
      `${lab.socketPath}-2`,
      "--pin-dir",
      lab.pinDir,
      "--cgroup-parent",
      lab.parent,
    );
    assert.equal(second.code, 1);
    assert.match(second.stderr, /another manager serves this pin dir/);
    assert.equal((await lab.client.status()).pinDir, lab.pinDir);
    await assert.rejects(lab.client.bypass({ cgroupId: "999999999" }), (err: unknown) => {
      assert.ok(err instanceof EbpfError);
      assert.equal(err.reason, "not_found");
      return true;
    });
  });

  test("sync-routes replaces the table atomically and dns-update shares an address between names", async (t) => {
    const lab = await newLab(t);
    const routes = Array.from({ length: 10_000 }, (_, i) => ({
      identity: 1 + (i % 5000),
      port: 1000 + Math.floor(i / 5000),
      protocol: "tcp" as const,
      listener: 20000,
    }));
    assert.deepEqual(await lab.client.syncRoutes(routes), { routes: 10_000 });
    assert.equal((await lab.client.dump()).routes.length, 10_000);
    await lab.client.syncRoutes([{ identity: 3, port: 443, protocol: "udp", listener: 15003 }]);
    assert.deepEqual((await lab.client.dump()).routes, [
      { identity: 3, port: 443, protocol: "udp", listener: 15003 },
    ]);
    // the map holds exactly the active generation
    const entries = JSON.parse(
      execFileSync("bpftool", ["map", "dump", "pinned", `${lab.pinDir}/maps/routes`, "-j"], {
        encoding: "utf8",
      }),
    ) as unknown[];
    assert.equal(entries.length, 1);

    await lab.client.dnsUpdate([
      { address: "10.9.0.1", identity: 1, ttl: 60 },
      { address: "10.9.0.1", identity: 2, ttl: 1 },
    ]);
    const dns = (await lab.client.dump()).dns.find((d) => d.address === "10.9.0.1");
    assert.deepEqual(dns?.identities.map((i) => i.identity).sort(), [1, 2]);
    await waitFor(async () => (await lab.client.gc()).dnsExpired === 1, {
      timeoutMs: 5_000,
      what: "ttl 1 expiry",
    });
    const left = (await lab.client.dump()).dns.find((d) => d.address === "10.9.0.1");
    assert.deepEqual(
      left?.identities.map((i) => i.identity),
      [1],
    );
  });

  test("one-shot subcommands: --help, dump --json, and an error for unknown commands", async (t) => {
    const lab = await newLab(t);
    const help = await lab.cli("--help");
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: ebpf-manager/);
    const dump = await lab.cli("dump", "--json", "--pin-dir", lab.pinDir);
    assert.equal(dump.code, 0);
    const parsed = JSON.parse(dump.stdout) as { ok: boolean; result: { containers: unknown[] } };
    assert.deepEqual(parsed.result.containers, (await lab.client.dump()).containers);
    const links = await lab.cli("dump-links", "--json", "--pin-dir", lab.pinDir);
    assert.equal((JSON.parse(links.stdout) as unknown[]).length, 11);
    const table = await lab.cli("dump-containers", "--pin-dir", lab.pinDir);
    assert.match(table.stdout, new RegExp(`path=${lab.parent}`));
    const unknown = await lab.cli("frobnicate");
    assert.equal(unknown.code, 2);
    const nothing = await lab.cli("dump", "--json", "--pin-dir", `${lab.pinDir}-missing`);
    assert.equal(nothing.code, 1);
    assert.equal((JSON.parse(nothing.stdout) as { ok: boolean }).ok, false);
  });
});
