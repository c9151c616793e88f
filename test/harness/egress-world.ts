// A small world for egress firewall tests and benchmarks, all on loopback addresses the test
// owns: a test DNS server (the proxy's upstream resolver), HTTPS and HTTP upstreams on 127.0.0.2
// with certificates from a test CA, and "agents" as client sockets bound to 127.0.0.3. The daemon's
// proxy listens on 127.0.0.1; `firewallConfig` is the daemon config section that wires it up.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import {
  createServer as createHttpServer,
  request as httpRequest,
  type IncomingMessage,
  type Server as HttpServer,
} from "node:http";
import { createServer as createHttpsServer, request as httpsRequest } from "node:https";
import { createConnection, createServer as createTcpServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, createSecureContext, type TLSSocket } from "node:tls";
import { createCa, issueLeaf, type CertifiedKey } from "@clawker/adminclient";
import { freePort } from "@clawker/test-support";
import { startDnsServer, type TestDnsServer } from "../../packages/controlplane/test/fixtures/dns-server.js";

/** Where the proxy listens (the "host" side). */
export const PROXY_ADDRESS = "127.0.0.1";
/** Where the upstreams listen (every test name resolves here). */
export const UPSTREAM_ADDRESS = "127.0.0.2";
/** The agent's source address. */
export const AGENT_ADDRESS = "127.0.0.3";

/** A running world. */
export interface EgressWorld {
  readonly dir: string;
  readonly dns: TestDnsServer;
  readonly upstreamCa: CertifiedKey;
  /** The upstream CA as a file (the proxy verifies intercepted upstreams against it). */
  readonly upstreamCaFile: string;
  /** The proxy's TLS port; upstream HTTPS listens on the same port (what the agent "dialed"). */
  readonly tlsPort: number;
  /** The proxy's HTTP port; upstream HTTP listens on the same port. */
  readonly httpPort: number;
  /** The first of two route listener ports. */
  readonly routePort: number;
  /** Where the daemon's DNS gate listens (UDP and TCP on the proxy's address). */
  readonly dnsGatePort: number;
  /** Requests the upstreams saw: `<name> <method> <path>`. */
  readonly seen: string[];
  close(): Promise<void>;
}

/** A TLS handshake's outcome (the socket stays open when it succeeded). */
export interface TlsResult {
  readonly ok: boolean;
  readonly code?: string;
  readonly socket?: TLSSocket;
}

/** An HTTP answer through the proxy. */
export interface HttpResult {
  readonly status: number;
  readonly body: string;
}

/**
 * Starts the world: `names` resolve to the upstream address, which serves HTTPS (a leaf per name
 * from the world's CA) and HTTP on the proxy's own port numbers.
 */
export async function startEgressWorld(names: readonly string[]): Promise<EgressWorld> {
  const dir = await mkdtemp(join(tmpdir(), "egress-world-"));
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const track = (s: Socket): void => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  };
  const dns = await startDnsServer(Object.fromEntries(names.map((n) => [n, UPSTREAM_ADDRESS])));
  try {
    const upstreamCa = await createCa({ commonName: "egress world upstream CA" });
    const upstreamCaFile = join(dir, "upstream-ca.pem");
    await writeFile(upstreamCaFile, upstreamCa.certPem);
    const contexts = new Map<string, ReturnType<typeof createSecureContext>>();
    let first: CertifiedKey | undefined;
    for (const name of names) {
      const leaf = await issueLeaf(upstreamCa, { commonName: name, dnsNames: [name], usage: "server" });
      first ??= leaf;
      contexts.set(name, createSecureContext({ cert: leaf.certPem, key: leaf.keyPem }));
    }
    const seen: string[] = [];
    const port = await freePortBlock(4);
    const dnsGatePort = await freePort({ hosts: [PROXY_ADDRESS], protocols: ["udp", "tcp"] });
    const https = createHttpsServer(
      {
        cert: first?.certPem,
        key: first?.keyPem,
        SNICallback: (name, cb) => cb(null, contexts.get(name)),
      },
      (req, res) => {
        seen.push(`${(req.socket as TLSSocket).servername || "-"} ${req.method} ${req.url}`);
        res.end(`https ${req.method} ${req.url}\n`);
      },
    );
    const http = createHttpServer((req, res) => {
      seen.push(`${req.headers.host ?? "-"} ${req.method} ${req.url}`);
      res.end(`http ${req.method} ${req.url}\n`);
    });
    for (const [server, p] of [
      [https, port],
      [http, port + 1],
    ] as const) {
      server.on("connection", track);
      await listen(server, p, UPSTREAM_ADDRESS);
      servers.push(server);
    }
    return {
      dir,
      dns,
      upstreamCa,
      upstreamCaFile,
      tlsPort: port,
      httpPort: port + 1,
      routePort: port + 2,
      dnsGatePort,
      seen,
      close: async () => {
        for (const s of sockets) s.destroy();
        await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
        await dns.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    await dns.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * The daemon's `firewall` config section for this world: the proxy and the DNS gate on 127.0.0.1
 * at the world's ports, the agent address as the only client, the world's DNS as the resolver,
 * only the proxy's own address forbidden (the upstreams live on loopback), and no eBPF
 * enforcement (`allowUnenforced`: the test's sockets dial the proxy directly).
 */
export function firewallConfig(
  world: EgressWorld,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    network: "clawker-test-no-such-network",
    clients: [`${AGENT_ADDRESS}/32`],
    proxy: {
      address: PROXY_ADDRESS,
      tlsPort: world.tlsPort,
      httpPort: world.httpPort,
      routePorts: { first: world.routePort, count: 2 },
      upstreamCaFile: world.upstreamCaFile,
    },
    dns: { port: world.dnsGatePort },
    resolvers: [{ address: world.dns.address, port: world.dns.port }],
    forbidden: [`${PROXY_ADDRESS}/32`],
    // The proxy alone, on loopback: no eBPF steers this "agent", it dials the proxy itself.
    allowUnenforced: true,
    ...extra,
  };
}

/** A TLS handshake as the agent through the proxy's TLS listener; `ca` decides what is trusted. */
export function tlsThrough(world: EgressWorld, servername: string, ca: string): Promise<TlsResult> {
  return new Promise((resolve) => {
    const raw = createConnection({
      host: PROXY_ADDRESS,
      port: world.tlsPort,
      localAddress: AGENT_ADDRESS,
      timeout: 5_000,
    });
    const socket = tlsConnect({ socket: raw, servername, ca });
    raw.once("timeout", () => socket.destroy(new Error("TIMEOUT")));
    socket.once("secureConnect", () => resolve({ ok: true, socket }));
    socket.once("error", (err: NodeJS.ErrnoException) => {
      raw.destroy();
      resolve({ ok: false, code: err.code ?? err.message });
    });
  });
}

/** An HTTPS request as the agent through the proxy (passthrough or interception). */
export function httpsThrough(
  world: EgressWorld,
  servername: string,
  path: string,
  ca: string,
  method = "GET",
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: PROXY_ADDRESS,
        port: world.tlsPort,
        servername,
        path,
        method,
        ca,
        localAddress: AGENT_ADDRESS,
        headers: { host: servername },
        agent: false,
        timeout: 5_000,
      },
      (res) => collect(res, resolve),
    );
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end();
  });
}

/** A plain HTTP request as the agent through the proxy's HTTP listener. */
export function httpThrough(world: EgressWorld, host: string, path: string): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: PROXY_ADDRESS,
        port: world.httpPort,
        path,
        localAddress: AGENT_ADDRESS,
        headers: { host },
        agent: false,
        timeout: 5_000,
      },
      (res) => collect(res, resolve),
    );
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end();
  });
}

function collect(res: IncomingMessage, resolve: (r: HttpResult) => void): void {
  let body = "";
  res.setEncoding("utf8");
  res.on("data", (d: string) => (body += d));
  res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
}

function listen(server: HttpServer | Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
}

/** `count` consecutive ports free on both the proxy's and the upstreams' address. */
async function freePortBlock(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = 20_000 + Math.floor(Math.random() * 30_000);
    const held: Server[] = [];
    try {
      for (let p = first; p < first + count; p++) {
        for (const host of [PROXY_ADDRESS, UPSTREAM_ADDRESS]) {
          const s = createTcpServer();
          await listen(s, p, host);
          held.push(s);
        }
      }
      return first;
    } catch {
      // Taken: another block.
    } finally {
      await Promise.all(held.map((s) => new Promise((r) => s.close(r))));
    }
  }
  throw new Error("no free port block on 127.0.0.1 and 127.0.0.2");
}
