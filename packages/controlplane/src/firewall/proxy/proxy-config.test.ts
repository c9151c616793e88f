import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ProxyError } from "./errors.js";
import { parseProxyConfig, routePortsOf, type ProxyConfigInput } from "./proxy-config.js";

const base: ProxyConfigInput = {
  dir: "/var/lib/clawker/proxy",
  listen: { address: "172.20.0.1", tlsPort: 15443, httpPort: 15080 },
  clients: ["172.20.0.0/24"],
  resolvers: [{ address: "1.1.1.1" }],
};

describe("parseProxyConfig", () => {
  test("fills the defaults", () => {
    const c = parseProxyConfig(base);
    assert.equal(c.haproxy, "haproxy");
    assert.equal(c.upstreamCaFile, "/etc/ssl/certs/ca-certificates.crt");
    assert.equal(c.resolvers[0]?.port, 53);
    assert.equal(c.maxConnections, 4_096);
    // One: a second thread costs every passthrough request ~11% more proxy CPU (proxy README).
    assert.equal(c.threads, 2);
    assert.deepEqual(routePortsOf(c), []);
    assert.deepEqual(
      routePortsOf(
        parseProxyConfig({ ...base, listen: { ...base.listen, routePorts: { first: 16000, count: 3 } } }),
      ),
      [16000, 16001, 16002],
    );
  });

  const rejected: [string, ProxyConfigInput, RegExp][] = [
    ["a relative dir", { ...base, dir: "proxy" }, /dir: must be an absolute path/],
    [
      "a dir with a space (rendered unquoted)",
      { ...base, dir: "/var/lib/my proxy" },
      /dir: must not hold whitespace/,
    ],
    [
      "listening on every address",
      { ...base, listen: { ...base.listen, address: "0.0.0.0" } },
      /listen\.address/,
    ],
    [
      "overlapping listener ports",
      { ...base, listen: { ...base.listen, httpPort: 15443 } },
      /listener ports overlap/,
    ],
    [
      "route ports that overlap a listener",
      { ...base, listen: { ...base.listen, routePorts: { first: 15440, count: 10 } } },
      /overlap/,
    ],
    [
      "route ports past 65535",
      { ...base, listen: { ...base.listen, routePorts: { first: 65530, count: 10 } } },
      /beyond 65535/,
    ],
    ["a client that is no CIDR", { ...base, clients: ["172.20.0.1/24"] }, /clients\.0/],
    ["no resolver", { ...base, resolvers: [] }, /resolvers/],
    ["an unknown field", { ...base, extra: 1 } as ProxyConfigInput, /extra/],
  ];
  for (const [name, input, want] of rejected) {
    test(`rejects ${name}`, () =>
      assert.throws(
        () => parseProxyConfig(input),
        (err: unknown) =>
          err instanceof ProxyError && err.reason === "invalid_config" && want.test(err.message),
      ));
  }
});
