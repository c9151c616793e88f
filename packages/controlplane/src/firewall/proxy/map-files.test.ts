import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { compileMaps, renderMap, ruleVersions, writeFileAtomic } from "./map-files.js";
import { checkPolicy, type ProxyEntry, type ProxyPolicy } from "./policy.js";

const limits = { routePorts: new Set([16000]) };
const e = (x: Partial<ProxyEntry> & Pick<ProxyEntry, "ruleId" | "dst">): ProxyEntry => ({
  scope: { kind: "global" },
  kind: "tls-passthrough",
  action: "allow",
  port: 443,
  ...x,
});
const checked = (entries: ProxyEntry[], extra: Partial<ProxyPolicy> = {}) =>
  checkPolicy({ entries, sources: [], forbidden: [], ...extra }, limits);

describe("compileMaps", () => {
  test("verdict keys are <scope>/<port>/<name> (tcp: <scope>/l<listener>/<port>), values carry the rule version's session tag", () => {
    const maps = compileMaps(
      checked(
        [
          e({ ruleId: "a", dst: "api.example.com" }),
          e({
            ruleId: "b",
            dst: "*.example.com",
            scope: { kind: "project", project: "p" },
            kind: "tls-intercept",
            insecureSkipTlsVerify: true,
          }),
          e({ ruleId: "c", dst: "x.example.com", scope: { kind: "agent", agent: "ag" }, action: "deny" }),
          e({ ruleId: "d", dst: "git.example.com", kind: "tcp", port: 22, listener: 16000 }),
          e({ ruleId: "f", dst: "10.0.0.0/8", kind: "tcp", port: 5432, listener: 16000 }),
          e({ ruleId: "u", dst: "ntp.example.com", kind: "udp", port: 123 }),
        ],
        {
          sources: [
            { address: "10.9.0.3", agent: "ag", project: "p" },
            { address: "10.9.0.4", project: "p" },
          ],
          forbidden: ["127.0.0.0/8"],
        },
      ),
      (id) => ({ a: 1, b: 2, d: 4, f: 0xffffff })[id] ?? 99,
    );
    assert.deepEqual(maps.tls, [
      { key: "g/443/api.example.com", value: "pass|1|a|-|-|-" },
      { key: "p:p/443/*.example.com", value: "mitm|2|b|-|allow|k" },
      { key: "a:ag/443/x.example.com", value: "deny|-|c|-|-|-" },
    ]);
    assert.deepEqual(maps.tcp, [
      { key: "g/l16000/22", value: "tcp|4|d|-|-|git.example.com" },
      { key: "g/l16000/5432", value: "tcp|16777215|f|-|-|@dst" },
    ]);
    assert.deepEqual(maps.agents, [{ key: "10.9.0.3", value: "ag" }]);
    assert.deepEqual(maps.projects, [
      { key: "10.9.0.3", value: "p" },
      { key: "10.9.0.4", value: "p" },
    ]);
    assert.deepEqual(maps.forbidden, [{ key: "127.0.0.0/8", value: "forbidden" }]);
    assert.ok(maps.methods.some((m) => m.key === "GET"));
  });

  test("path rules: prefixes expanded per method (+ '*' for every method), regexes anchored with the method set", () => {
    const maps = compileMaps(
      checked([
        e({
          ruleId: "h",
          dst: "h.example.com",
          kind: "http",
          port: 80,
          pathRules: [
            { path: "/ro/", action: "allow", methods: ["GET"] },
            { path: "/all", action: "deny" },
            { path: "~/repos/(a|b)/?", action: "allow", methods: ["GET", "HEAD"] },
            { path: "~/any", action: "deny" },
            { path: "/dav", action: "allow", methods: ["PROPFIND"] },
          ],
          pathDefault: "deny",
        }),
      ]),
      () => 7,
    );
    const [http] = maps.http;
    assert.ok(http !== undefined);
    const pk = http.value.split("|")[3]!;
    assert.match(pk, /^k[0-9a-f]{12}$/);
    assert.equal(http.value, `http|7|h|${pk}|deny|-`);
    const prefix = maps["paths-prefix"].map((x) => `${x.key} ${x.value}`);
    assert.ok(prefix.includes(`${pk}:GET:/ro/ allow`));
    assert.ok(!prefix.includes(`${pk}:POST:/ro/ allow`));
    assert.ok(prefix.includes(`${pk}:POST:/all deny`));
    assert.ok(prefix.includes(`${pk}:*:/all deny`), "unknown methods still meet a rule without methods");
    assert.ok(prefix.includes(`${pk}:PROPFIND:/all deny`), "a method a rule names becomes known");
    assert.deepEqual(maps["paths-regex"], [
      { key: `^${pk}:(?:GET|HEAD):(?:/repos/(a|b)/?)$`, value: "allow" },
      { key: `^${pk}:[^:]+:(?:/any)$`, value: "deny" },
    ]);
    assert.ok(maps.methods.some((m) => m.key === "PROPFIND"));
  });

  test("entries with the same path rules share one path key", () => {
    const rules = {
      kind: "http" as const,
      port: 80,
      pathRules: [{ path: "/x", action: "allow" as const }],
      pathDefault: "deny" as const,
    };
    const maps = compileMaps(
      checked([
        e({ ruleId: "a", dst: "a.example.com", ...rules }),
        e({ ruleId: "b", dst: "b.example.com", ...rules }),
      ]),
      () => 1,
    );
    const pks = new Set(maps.http.map((x) => x.value.split("|")[3]));
    assert.equal(pks.size, 1);
    assert.equal(maps["paths-prefix"].filter((x) => x.key.endsWith(":GET:/x")).length, 1);
  });
});

describe("ruleVersions", () => {
  test("the digest changes with any entry of the rule, not with other rules", () => {
    const one = ruleVersions(
      checked([e({ ruleId: "a", dst: "a.example.com" }), e({ ruleId: "b", dst: "b.example.com" })]),
    );
    const two = ruleVersions(
      checked([
        e({ ruleId: "a", dst: "a.example.com" }),
        e({ ruleId: "b", dst: "b.example.com", port: 8443 }),
      ]),
    );
    assert.equal(one.get("a")?.digest, two.get("a")?.digest);
    assert.notEqual(one.get("b")?.digest, two.get("b")?.digest);
  });

  test("only allowing rules have a version (a tag); deny-only and udp rules have none", () => {
    const v = ruleVersions(
      checked([
        e({ ruleId: "p", dst: "a.example.com" }),
        e({ ruleId: "p", dst: "a.example.com", kind: "tcp", port: 22, listener: 16000 }),
        e({ ruleId: "m", dst: "m.example.com", kind: "tls-intercept" }),
        e({ ruleId: "h", dst: "h.example.com", kind: "http", port: 80 }),
        e({ ruleId: "d", dst: "d.example.com", action: "deny" }),
        e({ ruleId: "u", dst: "u.example.com", kind: "udp", port: 53 }),
      ]),
    );
    assert.deepEqual([...v.keys()].sort(), ["h", "m", "p"]);
  });
});

describe("writeFileAtomic", () => {
  test("writes 0600 and leaves no temp file", async (t) => {
    const dir = await mkdtemp(join(tmpdir(), "mapfiles-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, "x.map");
    await writeFileAtomic(path, renderMap([{ key: "k", value: "v" }]));
    await writeFileAtomic(path, renderMap([{ key: "k2", value: "v 2" }]));
    assert.equal(await readFile(path, "utf8"), "k2 v 2\n");
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.deepEqual(await readdir(dir), ["x.map"]);
  });
});
