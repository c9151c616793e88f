// EXPERIMENT (issue 16, not a bench `npm run bench` runs): the product's egress proxy started the
// way bench/firewall-proxy.bench.ts starts it (EgressProxy, default threads, the bench's policy:
// small and big passthrough, one intercepted name), listening on PROXY_ADDR:18443 so that the
// upstreams of run.py (127.0.0.2 and 127.0.0.5, port 18443) are reached by name through a test DNS
// server. Prints one JSON line (worker and master pid, the proxy's directory, the DNS server) and
// runs until SIGTERM, then closes the proxy. Run by run.py: `tsx --conditions=source product.ts`.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCa, issueLeaf } from "@clawker/adminclient";
import { pino } from "pino";
import { EgressProxy, type ProxyEntry } from "../../../packages/controlplane/src/firewall/proxy/index.js";
import { ChildProcessHost } from "../../../packages/controlplane/test/fixtures/child-process-host.js";
import { startDnsServer } from "../../../packages/controlplane/test/fixtures/dns-server.js";

const PORT = 18443;
const ADDR = process.env["PROXY_ADDR"] ?? "127.0.0.4";
const dir = mkdtempSync(join(tmpdir(), "passgap-product-"));
const dns = await startDnsServer({
  "small.bench.test": "127.0.0.2",
  "mitm.bench.test": "127.0.0.2",
  "big.bench.test": "127.0.0.5",
});
const upstreamCa = await createCa({ commonName: "passgap upstream CA" });
const caFile = join(dir, "upstream-ca.pem");
writeFileSync(caFile, upstreamCa.certPem, { mode: 0o600 });
const host = new ChildProcessHost();
let decisions = 0;
const proxy = new EgressProxy({
  config: {
    dir: join(dir, "proxy"),
    listen: { address: ADDR, tlsPort: PORT, httpPort: PORT + 10 },
    clients: ["127.0.0.0/8"],
    resolvers: [{ address: dns.address, port: dns.port }],
    upstreamCaFile: caFile,
  },
  host,
  log: pino({ level: "silent" }),
  onDecision: () => void decisions++,
});
const lifetime = new AbortController();
await proxy.start(lifetime.signal);
const firewallCa = await createCa({ commonName: "passgap firewall CA" });
const leaf = await issueLeaf(firewallCa, {
  commonName: "mitm.bench.test",
  dnsNames: ["mitm.bench.test"],
  usage: "server",
});
await proxy.installCertificate("mitm.bench.test", leaf.certPem, leaf.keyPem);
const entry = (dst: string, extra: Partial<ProxyEntry> = {}): ProxyEntry => ({
  ruleId: `bench-${dst}`,
  scope: { kind: "global" },
  kind: "tls-passthrough",
  action: "allow",
  dst,
  port: PORT,
  ...extra,
});
await proxy.apply({
  entries: [
    entry("small.bench.test"),
    entry("big.bench.test"),
    entry("mitm.bench.test", {
      kind: "tls-intercept",
      pathRules: [
        { path: "/admin", action: "deny" },
        { path: "/", action: "allow", methods: ["GET", "HEAD"] },
      ],
      pathDefault: "deny",
    }),
  ],
  sources: [{ address: "127.0.0.1", agent: "bench", project: "bench" }],
  forbidden: [`${ADDR}/32`],
});
const { workerPid, masterPid } = await proxy.health();
console.log(
  JSON.stringify({ workerPid, masterPid, dir: join(dir, "proxy"), dns: `${dns.address}:${dns.port}` }),
);
await new Promise<void>((resolve) => {
  process.once("SIGTERM", () => resolve());
  process.once("SIGINT", () => resolve());
});
console.error(`decision lines received: ${decisions}`);
await proxy.close();
lifetime.abort();
await host.close();
await dns.close();
rmSync(dir, { recursive: true, force: true });
