// hostResolvers: which of the host's nameservers become the firewall's default upstreams.
import assert from "node:assert/strict";
import { test } from "node:test";
import { hostResolvers } from "./host-resolvers.js";

const cases: Array<[string, string, string[]]> = [
  ["two servers in order", "nameserver 192.168.1.1\nnameserver 10.0.0.53\n", ["192.168.1.1", "10.0.0.53"]],
  ["systemd-resolved's stub only", "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n", []],
  ["Docker's embedded DNS and a real one", "nameserver 127.0.0.11\nnameserver 172.16.0.1\n", ["172.16.0.1"]],
  ["IPv6 and 0.0.0.0 left out", "nameserver ::1\nnameserver fe80::1%eth0\nnameserver 0.0.0.0\n", []],
  [
    "comments, tabs, duplicates",
    "# nameserver 9.9.9.9\n\tnameserver\t10.1.1.1  \nnameserver 10.1.1.1\n",
    ["10.1.1.1"],
  ],
  ["not an address", "nameserver dns.example\nnameserver 10.1.1.256\nnameservers 10.2.2.2\n", []],
  [
    "at most four",
    [1, 2, 3, 4, 5].map((i) => `nameserver 10.0.0.${i}`).join("\n"),
    ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"],
  ],
  ["empty", "", []],
];

for (const [name, text, expected] of cases) {
  void test(`hostResolvers: ${name}`, () => {
    assert.deepEqual(
      hostResolvers(text),
      expected.map((address) => ({ address, port: 53 })),
    );
  });
}
