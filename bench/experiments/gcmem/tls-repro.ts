// EXPERIMENT (issue 15): does a bare node TLS 1.3 server that asks for client certificates keep
// native memory per closed connection? The server runs in a child (ROLE=server, gc exposed) and on
// a line from stdin collects twice and prints RSS; the parent makes connections (8 at a time, one
// client certificate each) up to each of STAGES. With MALLOC_STATS_FILE glibc's malloc_stats()
// (read through gdb) goes to that file after each stage: its "in use bytes" are what the process
// holds, free of the allocator's slack that RSS carries. SERVER_OPTS (JSON) is merged into
// tls.createServer's options. Run: `npx tsx bench/experiments/gcmem/tls-repro.ts`, and with
// another node binary: `/path/to/node --import tsx bench/experiments/gcmem/tls-repro.ts`.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import tls from "node:tls";
import { createInterface } from "node:readline";
import { mintTrustSet } from "@clawker/adminclient";

if (process.env["ROLE"] === "server") {
  const set = JSON.parse(readFileSync(process.env["SET_FILE"]!, "utf8")) as {
    ca: string;
    cert: string;
    key: string;
  };
  const extra = JSON.parse(process.env["SERVER_OPTS"] ?? "{}") as tls.TlsOptions;
  const server = tls.createServer(
    {
      ca: set.ca,
      cert: set.cert,
      key: set.key,
      minVersion: "TLSv1.3",
      requestCert: true,
      rejectUnauthorized: true,
      ...extra,
    },
    (s) => {
      if (process.env["PEER"] === "1") s.getPeerCertificate();
      s.end("x");
    },
  );
  server.listen(0, "127.0.0.1", () => console.log(`port ${(server.address() as { port: number }).port}`));
  createInterface({ input: process.stdin }).on("line", () => {
    (globalThis as { gc?: () => void }).gc!();
    setTimeout(() => {
      (globalThis as { gc?: () => void }).gc!();
      console.log(
        `rss ${(process.memoryUsage.rss() / 1048576).toFixed(1)} heap ${(process.memoryUsage().heapUsed / 1048576).toFixed(1)}`,
      );
    }, 300);
  });
} else {
  const { writeFileSync } = await import("node:fs");
  const set = await mintTrustSet();
  const file = "/tmp/gcmem-tls-set.json";
  writeFileSync(
    file,
    JSON.stringify({
      ca: set.ca.certPem,
      cert: set.controlPlaneServer.certPem,
      key: set.controlPlaneServer.keyPem,
    }),
    { mode: 0o600 },
  );
  const child = spawn(
    process.execPath,
    ["--expose-gc", "--import", import.meta.resolve("tsx"), new URL(import.meta.url).pathname],
    {
      env: { ...process.env, ROLE: "server", SET_FILE: file },
      stdio: [
        "pipe",
        "pipe",
        process.env["MALLOC_STATS_FILE"] === undefined
          ? "inherit"
          : (await import("node:fs")).openSync(process.env["MALLOC_STATS_FILE"], "w"),
      ],
    },
  );
  const lines = createInterface({ input: child.stdout! });
  const next = () => new Promise<string>((r) => lines.once("line", r));
  const port = Number((await next()).split(" ")[1]);
  // STRANGER=1: the client certificate comes from another CA, so the server refuses the handshake.
  const client = process.env["STRANGER"] === "1" ? (await mintTrustSet()).cli : set.cli;
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const s = tls.connect({
        host: "127.0.0.1",
        port,
        ca: set.ca.certPem,
        cert: client.certPem,
        key: client.keyPem,
        servername: "localhost",
        checkServerIdentity: () => undefined,
      });
      s.on("error", process.env["STRANGER"] === "1" ? () => undefined : reject);
      s.on("data", () => {});
      s.on("secureConnect", () => secured++);
      s.on("close", () => resolve());
    });
  let done = 0;
  let secured = 0;
  for (const stage of (process.env["STAGES"] ?? "0,1000,4000,8000").split(",").map(Number)) {
    while (done < stage) {
      await Promise.all(Array.from({ length: 8 }, one));
      done += 8;
    }
    child.stdin!.write("m\n");
    const line = await next();
    // glibc's own count of bytes in use (all arenas), read with gdb: unlike RSS, fragmentation
    // and pages kept for reuse do not count.
    const { execFileSync } = await import("node:child_process");
    execFileSync("gdb", ["-p", String(child.pid), "-batch", "-ex", "call (void)malloc_stats()"], {
      stdio: "ignore",
    });
    console.log(`${done} ${line} (client saw ${secured} handshakes complete)`);
  }
  child.kill();
}
