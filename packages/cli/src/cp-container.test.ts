import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  containerCgroupParent,
  containerResolvers,
  publishedPorts,
} from "./commands/controlplane-up-container.js";
import {
  cgroup2MountPoint,
  cgroupParentDir,
  containerCreateOptions,
  CP_TRUST_FILES,
  hostResolvers,
  resolversOf,
  subnetHost,
} from "./cp-container.js";
import { CliError, ExitCode } from "./exit-codes.js";

const usage = (re: RegExp) => (e: unknown) =>
  e instanceof CliError && e.exitCode === ExitCode.usage && re.test(e.message);

void describe("publishedPorts", () => {
  test("defaults: 127.0.0.1 7443/7080/4444, the issuer is the token endpoint's origin", () => {
    const p = publishedPorts({}, {});
    assert.deepEqual(p, {
      admin: { host: "127.0.0.1", port: 7443 },
      health: { host: "127.0.0.1", port: 7080 },
      token: { host: "127.0.0.1", port: 4444 },
      issuer: "https://127.0.0.1:4444",
    });
    const moved = publishedPorts({ "token-endpoint": "https://127.0.0.1:5555/oauth2/token" }, {});
    assert.deepEqual([moved.token.port, moved.issuer], [5555, "https://127.0.0.1:5555"]);
  });

  test("anything but 127.0.0.1 is refused (exit 2): ports are never published beyond loopback", () => {
    assert.throws(
      () => publishedPorts({ admin: "0.0.0.0:7443" }, {}),
      usage(/--admin must be on 127\.0\.0\.1/),
    );
    assert.throws(() => publishedPorts({}, { CLAWKER_CP_HEALTH_ADDR: "10.0.0.1:7080" }), usage(/--health/));
    assert.throws(
      () => publishedPorts({ "token-endpoint": "https://10.213.0.2:4444/oauth2/token" }, {}),
      usage(/--token-endpoint must be on 127\.0\.0\.1/),
    );
    for (const bad of [
      "http://127.0.0.1:4444/oauth2/token",
      "https://127.0.0.1/oauth2/token",
      "https://127.0.0.1:4444/x",
      "nope",
    ]) {
      assert.throws(
        () => publishedPorts({ "token-endpoint": bad }, {}),
        usage(/--token-endpoint must be/),
        bad,
      );
    }
  });
});

const NETS = {
  publish: { name: "clawker-cp", subnet: "10.214.0.0/24", address: "10.214.0.2" },
  agents: { name: "clawker-agents", subnet: "10.213.0.0/24", address: "10.213.0.2" },
};

void describe("containerCreateOptions", () => {
  test("two capabilities, no privilege, six trust files read-only, loopback ports, restart on-failure", () => {
    const o = containerCreateOptions({
      image: "clawker/controlplane:abc",
      trustDir: "/etc/clawker/trust",
      configFile: "/s/controlplane-container.json",
      dockerSocket: "/run/docker.sock",
      cgroup2: "/sys/fs/cgroup",
      cgroupParentDir: "clawker",
      ports: publishedPorts({}, {}),
      publish: NETS.publish,
      agents: NETS.agents,
    });
    const h = o.HostConfig!;
    assert.deepEqual([h.CapDrop, h.CapAdd, h.Privileged], [["ALL"], ["SYS_ADMIN", "NET_ADMIN"], undefined]);
    assert.deepEqual([h.Init, h.ReadonlyRootfs, h.SecurityOpt], [true, true, ["no-new-privileges"]]);
    assert.deepEqual(h.RestartPolicy, { Name: "on-failure" });
    const trust = h.Binds!.filter((b) => b.startsWith("/etc/clawker/trust/"));
    assert.deepEqual(
      trust,
      CP_TRUST_FILES.map((f) => `/etc/clawker/trust/${f}:/etc/clawker/trust/${f}:ro`),
    );
    assert.ok(!h.Binds!.some((b) => b.includes("ca.key") || b.includes("cli.key")));
    assert.ok(h.Binds!.includes("/sys/fs/cgroup:/sys/fs/cgroup:ro"));
    // The parent bound read-only too: binding makes Docker create it, and the tree stays read-only.
    assert.ok(h.Binds!.includes("/sys/fs/cgroup/clawker:/sys/fs/cgroup/clawker:ro"));
    assert.ok(
      !h.Binds!.some((b) => b.includes("cgroup") && !b.endsWith(":ro")),
      "no cgroup bind is writable",
    );
    assert.equal((h as { CgroupnsMode?: string }).CgroupnsMode, "host");
    // Admin and /healthz on the publishing network's address only; the agent listener on the agents'.
    assert.ok(o.Env!.includes("CLAWKER_CP_ADMIN_ADDR=10.214.0.2:7443"));
    assert.ok(o.Env!.includes("CLAWKER_CP_HEALTH_ADDR=10.214.0.2:7080"));
    assert.ok(o.Env!.includes("CLAWKER_CP_AGENT_ADDR=10.213.0.2:7444"));
    assert.ok(o.Env!.includes("CLAWKER_CP_EBPF=true"));
    assert.ok(!o.Env!.some((e) => e.includes("0.0.0.0")), "no listener on every address by env");
    assert.equal(h.NetworkMode, "clawker-cp");
    assert.deepEqual(o.NetworkingConfig, {
      EndpointsConfig: { "clawker-cp": { IPAMConfig: { IPv4Address: "10.214.0.2" } } },
    });
    assert.ok(h.Binds!.includes("/run/docker.sock:/var/run/docker.sock"));
    for (const b of Object.values(h.PortBindings as Record<string, Array<{ HostIp: string }>>).flat()) {
      assert.equal(b.HostIp, "127.0.0.1");
    }
    assert.equal(o.Labels!["dev.clawker.purpose"], "controlplane");
    assert.equal(h.GroupAdd, undefined, "no admin socket: no extra group");
    assert.ok(!h.Binds!.some((b) => b.endsWith(":/run/clawker")));
  });

  test("the admin socket: its host directory bound at /run/clawker and the group's gid added", () => {
    const base = {
      image: "clawker/controlplane:abc",
      trustDir: "/etc/clawker/trust",
      configFile: "/s/controlplane-container.json",
      dockerSocket: "/run/docker.sock",
      cgroup2: "/sys/fs/cgroup",
      cgroupParentDir: "clawker",
      ports: publishedPorts({}, {}),
      publish: NETS.publish,
      agents: NETS.agents,
    };
    const h = containerCreateOptions({
      ...base,
      adminSocket: { hostDir: "/run/clawker", gid: 1234, group: "clawker-admins" },
    }).HostConfig!;
    assert.ok(h.Binds!.includes("/run/clawker:/run/clawker"));
    assert.deepEqual(h.GroupAdd, ["1234"]);
    const none = containerCreateOptions({
      ...base,
      adminSocket: { hostDir: "/tmp/x/run", gid: undefined, group: "clawker-admins" },
    }).HostConfig!;
    assert.ok(none.Binds!.includes("/tmp/x/run:/run/clawker"));
    assert.equal(none.GroupAdd, undefined, "a group that does not exist is not added");
  });
});

test("cgroup2MountPoint: unified, hybrid, none", () => {
  assert.equal(cgroup2MountPoint("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"), "/sys/fs/cgroup");
  assert.equal(
    cgroup2MountPoint("tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"),
    "/sys/fs/cgroup/unified",
  );
  assert.throws(() => cgroup2MountPoint("proc /proc proc rw 0 0\n"), /no cgroup2 mount/);
});

test("cgroupParentDir: the name with cgroupfs, nested slices with systemd", () => {
  assert.equal(cgroupParentDir("clawker", "cgroupfs"), "clawker");
  assert.equal(cgroupParentDir("clawker", "systemd"), "clawker.slice");
  assert.equal(cgroupParentDir("a-b", "systemd"), "a.slice/a-b.slice");
});

test("--cgroup-parent: one cgroup name, never a path (exit 2)", () => {
  assert.equal(containerCgroupParent({}), "clawker");
  assert.equal(containerCgroupParent({ "cgroup-parent": "clawker-t1" }), "clawker-t1");
  for (const bad of ["/clawker", "a/b", "..", "clawker.slice", ""]) {
    assert.throws(() => containerCgroupParent({ "cgroup-parent": bad }), usage(/--cgroup-parent/), bad);
  }
});

test("resolvers: --resolver wins; else the host's non-loopback IPv4 nameservers", () => {
  assert.deepEqual(containerResolvers({ resolver: ["10.0.0.53", "10.0.0.54:5353"] }), [
    { address: "10.0.0.53", port: 53 },
    { address: "10.0.0.54", port: 5353 },
  ]);
  for (const bad of ["dns.example", "10.0.0.256", "10.0.0.1:0", "::1"]) {
    assert.throws(() => containerResolvers({ resolver: [bad] }), usage(/--resolver/), bad);
  }
  assert.deepEqual(
    resolversOf("nameserver 127.0.0.53\nnameserver 192.0.2.1\nnameserver ::1\nnameserver 192.0.2.1\n"),
    [{ address: "192.0.2.1", port: 53 }],
  );
  // systemd-resolved's stub alone: its upstream list instead.
  const files: Record<string, string> = {
    "/etc/resolv.conf": "nameserver 127.0.0.53\n",
    "/run/systemd/resolve/resolv.conf": "nameserver 198.51.100.7\n",
  };
  assert.deepEqual(
    hostResolvers((p) => files[p] ?? ""),
    [{ address: "198.51.100.7", port: 53 }],
  );
});

test("subnetHost: .2 of a subnet; none for a /30 or narrower or a non-IPv4 subnet", () => {
  assert.equal(subnetHost("10.213.0.0/24", 2), "10.213.0.2");
  assert.equal(subnetHost("172.18.0.0/16", 2), "172.18.0.2");
  assert.equal(subnetHost("10.0.0.8/29", 2), "10.0.0.10");
  assert.equal(subnetHost("10.0.0.0/30", 2), undefined);
  assert.equal(subnetHost("fd00::/64", 2), undefined);
});
