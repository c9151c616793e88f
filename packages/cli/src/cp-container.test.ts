import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { publishedPorts } from "./commands/controlplane-up-container.js";
import { cgroup2MountPoint, containerCreateOptions, CP_TRUST_FILES } from "./cp-container.js";
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

void describe("containerCreateOptions", () => {
  test("two capabilities, no privilege, six trust files read-only, loopback ports, restart on-failure", () => {
    const o = containerCreateOptions({
      image: "clawker/controlplane:abc",
      trustDir: "/etc/clawker/trust",
      configFile: "/s/controlplane-container.json",
      dockerSocket: "/run/docker.sock",
      cgroup2: "/sys/fs/cgroup",
      ports: publishedPorts({}, {}),
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
      ports: publishedPorts({}, {}),
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
