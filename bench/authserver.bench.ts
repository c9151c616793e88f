// The embedded auth server (packages/authserver) as the CP runs it: the built process
// (node dist/main.js) with real TLS 1.3 on the public port, the admin API on its Unix socket, and
// a sqlite file. Figures: token issue latency (client_credentials + ES256 assertion, HTTPS round
// trip, sequential), introspection latency over the admin socket (sequential), and cold start
// from exec to /health/ready answering 200 on the admin socket.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "@clawker/test-support";
import {
  ADMIN,
  clientBody,
  makeAssertion,
  makeClientKey,
  TestHttp,
} from "../packages/authserver/test/fixtures/oauth.js";
import { repoRoot } from "../packages/authserver/test/fixtures/process.js";
import { makeTls, type TlsFiles } from "../packages/authserver/test/fixtures/tls.js";
import { summarise, type Benchmark, type BenchContext, type Figure } from "./lib.js";
import { cpuMs } from "./proc-stat.js";

const TOKENS = 300;
const INTROSPECTIONS = 1000;
const mainJs = join(repoRoot, "packages/authserver/dist/main.js");

interface Proc {
  readonly publicUrl: string;
  /** Plain HTTP through the admin socket; URLs start with ADMIN. */
  readonly admin: TestHttp;
  stop(): Promise<void>;
}

/** Spawns the built process on a free port; resolves once /health/ready is 200, with the time it took. */
async function startProcess(
  dir: string,
  tls: TlsFiles,
): Promise<{ proc: Proc; readyMs: number; cpuMs: number }> {
  const pub = await freePort();
  const file = join(dir, `auth-${pub}.json`);
  const admin = new TestHttp({ socketPath: join(dir, `admin-${pub}.sock`) });
  writeFileSync(
    file,
    JSON.stringify({
      public: { host: "127.0.0.1", port: pub },
      admin: { socket: join(dir, `admin-${pub}.sock`) },
      tls: { certFile: tls.certFile, keyFile: tls.keyFile },
      databaseFile: join(dir, `auth-${pub}.db`),
      signingKeyFile: join(dir, `key-${pub}.jwk`),
      logLevel: "warn",
    }),
  );
  const t0 = performance.now();
  const child = spawn(process.execPath, [mainJs, "--config", file], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  for (;;) {
    if (child.exitCode !== null) throw new Error(`auth server exited ${child.exitCode}`);
    try {
      if ((await admin.call(`${ADMIN}/health/ready`, "GET")).status === 200) break;
    } catch {
      // not listening yet
    }
    if (performance.now() - t0 > 30_000) throw new Error("auth server not ready within 30 s");
    await sleep(5);
  }
  const readyMs = performance.now() - t0;
  return {
    readyMs,
    cpuMs: cpuMs(child.pid!),
    proc: {
      publicUrl: `https://127.0.0.1:${pub}`,
      admin,
      async stop() {
        child.kill("SIGTERM");
        await exited;
        await admin.close();
      },
    },
  };
}

const bench: Benchmark = {
  name: "authserver",
  async run(ctx: BenchContext): Promise<Figure[]> {
    ctx.log("building packages/authserver (tsc -b)");
    execFileSync(join(repoRoot, "node_modules/.bin/tsc"), ["-b", "packages/authserver"], { cwd: repoRoot });
    const dir = mkdtempSync(join(tmpdir(), "authserver-bench-"));
    const tls = await makeTls(dir);
    const http = new TestHttp(tls.caPem);
    try {
      const coldStarts: number[] = [];
      const coldCpu: number[] = [];
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const { proc, readyMs, cpuMs } = await startProcess(dir, tls);
        await proc.stop();
        if (i >= ctx.warmup) {
          coldStarts.push(readyMs);
          coldCpu.push(cpuMs);
        }
      }
      ctx.log(`cold starts: ${coldStarts.map((x) => x.toFixed(0)).join(", ")} ms`);

      const { proc } = await startProcess(dir, tls);
      try {
        const key = await makeClientKey();
        const reg = await proc.admin.call(`${ADMIN}/admin/clients`, "POST", {
          json: clientBody("clawker-cli", "admin", key),
        });
        if (reg.status !== 201) throw new Error(`register: HTTP ${reg.status}`);
        const tokenUrl = `${proc.publicUrl}/oauth2/token`;
        // Assertions are signed up front so the figure is the server's work plus the round trip.
        const assertions = await Promise.all(
          Array.from({ length: TOKENS + 20 }, () =>
            makeAssertion({ clientId: "clawker-cli", key, aud: tokenUrl }),
          ),
        );
        const tokenMs: number[] = [];
        let token = "";
        for (let i = 0; i < assertions.length; i++) {
          const t0 = performance.now();
          const r = await http.token(tokenUrl, assertions[i]!, "admin");
          const dt = performance.now() - t0;
          if (r.status !== 200) throw new Error(`token: HTTP ${r.status}`);
          token = String(r.body?.["access_token"]);
          if (i >= 20) tokenMs.push(dt);
        }
        const introspectMs: number[] = [];
        for (let i = 0; i < INTROSPECTIONS + 50; i++) {
          const t0 = performance.now();
          const r = await proc.admin.introspect(ADMIN, token, "admin");
          const dt = performance.now() - t0;
          if (r.body?.["active"] !== true) throw new Error("introspection: token inactive");
          if (i >= 50) introspectMs.push(dt);
        }
        return [
          summarise("token issue (HTTP, sequential)", "ms", tokenMs, "lower"),
          summarise("introspection (HTTP over the admin socket, sequential)", "ms", introspectMs, "lower"),
          summarise("cold start: exec to /health/ready 200", "ms", coldStarts, "lower"),
          summarise("cold start: process CPU (user+sys) until ready", "ms", coldCpu, "lower"),
        ];
      } finally {
        await proc.stop();
      }
    } finally {
      await http.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

export default bench;
