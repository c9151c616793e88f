// The manager's failure paths on the real kernel. Every stderr line is one valid JSON object,
// whatever a path or a libbpf message holds (quotes, backslashes, newlines). epoll_ctl failures,
// made on demand by the src/epoll-fault.c shim (a healthy kernel never fails them here), close the
// client they concern (ADD, MOD) or are logged (DEL), and the manager keeps serving the others.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { promisify } from "node:util";
import {
  bpffs,
  bpffsMount,
  cgroup2,
  cgroup2Mount,
  command,
  root,
  skipReason,
} from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { bin, buildOnce, ensureBpffs, Lab } from "./fixture.js";

ensureBpffs();
const run = promisify(execFile);

/** What used to break a log line: quotes, a backslash and a newline. */
const NASTY = `-"q"\\b\nnl`;

/** Every stderr line parsed as one JSON object; fails naming the first line that is not. Bytes
 * must be UTF-8 (RFC 8259 8.1), so they are decoded strictly. */
function logLines(output: string | Buffer): Record<string, unknown>[] {
  const stderr =
    typeof output === "string" ? output : new TextDecoder("utf-8", { fatal: true }).decode(output);
  return stderr
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => {
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        assert.fail(`stderr line is not JSON: ${JSON.stringify(line)}\nall of stderr: ${stderr}`);
      }
      assert.ok(typeof value === "object" && value !== null && !Array.isArray(value), line);
      return value as Record<string, unknown>;
    });
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "clawker-ebpf-fail-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs `ebpf-manager serve ...` that is expected to fail (through `sh -c script` when given, for
 * arguments that are not UTF-8); its exit code and whole stderr, as bytes. */
async function serveFailing(
  args: string[],
  script?: string,
): Promise<{ code: number | null; stderr: Buffer }> {
  await buildOnce();
  const [file, argv] =
    script === undefined ? [bin.manager, ["serve", ...args]] : ["sh", ["-c", script, bin.manager, ...args]];
  const child = spawn(file, argv, { stdio: ["ignore", "ignore", "pipe"] });
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const chunks: Buffer[] = [];
  child.stderr.on("data", (d: Buffer) => chunks.push(d));
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  clearTimeout(timer);
  return { code, stderr: Buffer.concat(chunks) };
}

/** Sends one request line on a fresh connection; resolves with what arrived once the manager
 * closed the connection, rejects if it is still open after `timeoutMs`. */
function untilClosed(socketPath: string, line: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(socketPath);
    let received = "";
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`the manager kept the connection open (received ${JSON.stringify(received)})`));
    }, timeoutMs);
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => (received += d));
    sock.once("error", (err: NodeJS.ErrnoException) => {
      // The manager closing first makes our write fail: that is the close we wait for.
      if (err.code === "EPIPE" || err.code === "ECONNRESET") return;
      clearTimeout(timer);
      reject(err);
    });
    sock.once("close", () => {
      clearTimeout(timer);
      resolve(received);
    });
    sock.once("connect", () => sock.write(line + "\n"));
  });
}

/** One request on a fresh connection, closed by us after the reply. */
function request(socketPath: string, line: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(socketPath);
    let received = "";
    sock.setEncoding("utf8");
    sock.once("error", reject);
    sock.on("data", (d: string) => {
      received += d;
      const nl = received.indexOf("\n");
      if (nl < 0) return;
      sock.end();
      resolve(JSON.parse(received.slice(0, nl)) as Record<string, unknown>);
    });
    sock.once("connect", () => sock.write(line + "\n"));
  });
}

const epollFailures = (stderr: string, op: string) =>
  logLines(stderr).filter((l) => l["msg"] === "epoll_ctl failed" && l["op"] === op);

describe("ebpf manager failure paths", { skip: skipReason(root, cgroup2, bpffs, command("bpftool")) }, () => {
  test("a cgroup parent with quotes, a backslash and a newline is refused in one valid JSON line", async (t) => {
    const tmp = tempDir(t);
    const parent = `clawker-t${process.pid}-parent${NASTY}`;
    const pinDir = join(bpffsMount()!, `clawker-t${process.pid}-unused`);
    const { code, stderr } = await serveFailing([
      "--socket",
      join(tmp, "m.sock"),
      "--pin-dir",
      pinDir,
      "--cgroup-parent",
      parent,
    ]);
    assert.equal(code, 1);
    const line = logLines(stderr).find((l) => l["msg"] === "cgroup parent unusable");
    assert.deepEqual([line?.["parent"], line?.["error"]], [parent, "Invalid argument"]);
    assert.equal(existsSync(pinDir), false, "nothing was created");
  });

  test("a byte that is not UTF-8 in a logged path becomes U+FFFD, so the line stays UTF-8", async (t) => {
    const tmp = tempDir(t);
    const pinDir = join(bpffsMount()!, `clawker-t${process.pid}-unused`);
    // argv from node is always UTF-8: the shell's printf puts the raw 0xff byte in
    const { code, stderr } = await serveFailing(
      [join(tmp, "m.sock"), pinDir],
      'exec "$0" serve --socket "$1" --pin-dir "$2" --cgroup-parent "$(printf \'p\\377\\nq\')"',
    );
    assert.equal(code, 1);
    const line = logLines(stderr).find((l) => l["msg"] === "cgroup parent unusable");
    assert.equal(line?.["parent"], "p\uFFFD\nq");
  });

  test("dump --json on a missing pin dir with such a name answers one valid JSON error", async () => {
    await buildOnce();
    const pinDir = join(bpffsMount()!, `clawker-t${process.pid}-missing${NASTY}`);
    const failed = await run(bin.manager, ["dump", "--json", "--pin-dir", pinDir]).then(
      () => assert.fail("dump of nothing pinned must exit 1"),
      (err: { code?: number; stdout?: string }) => err,
    );
    assert.equal(failed.code, 1);
    const answer = JSON.parse(failed.stdout ?? "") as {
      ok: boolean;
      error: { reason: string; message: string };
    };
    assert.deepEqual([answer.ok, answer.error.reason], [false, "not_loaded"]);
    assert.ok(answer.error.message.startsWith(`${pinDir}: `), answer.error.message);
  });

  test("libbpf's messages naming such a pin dir arrive whole, each one valid JSON line", async (t) => {
    const tmp = tempDir(t);
    const pinDir = join(bpffsMount()!, `clawker-t${process.pid}-libbpf${NASTY}`);
    const parent = `clawker-t${process.pid}-libbpf`;
    t.after(() => {
      rmSync(pinDir, { recursive: true, force: true });
      if (existsSync(join(cgroup2Mount()!, parent))) rmdirSync(join(cgroup2Mount()!, parent));
    });
    // A pinned `containers` map of another shape: libbpf refuses to reuse it and says where it is.
    mkdirSync(join(pinDir, "maps"), { recursive: true });
    await run("bpftool", [
      "map",
      "create",
      join(pinDir, "maps", "containers"),
      ...["type", "array", "key", "4", "value", "4", "entries", "1", "name", "containers"],
    ]);
    const { code, stderr } = await serveFailing([
      "--socket",
      join(tmp, "m.sock"),
      "--pin-dir",
      pinDir,
      "--cgroup-parent",
      parent,
    ]);
    assert.equal(code, 1);
    const lines = logLines(stderr);
    const libbpf = lines.filter((l) => l["source"] === "libbpf").map((l) => String(l["msg"]));
    assert.ok(
      libbpf.some((m) => m.includes(`'${join(pinDir, "maps", "containers")}'`)),
      `a libbpf line names the whole path: ${JSON.stringify(libbpf)}`,
    );
    assert.equal(lines.find((l) => l["msg"] === "load failed")?.["pinDir"], pinDir);
    assert.deepEqual(readdirSync(join(pinDir, "maps")), ["containers"], "the pinned state is untouched");
  });

  test("a manager on such a pin dir logs loaded and stopped as valid JSON lines", async (t) => {
    const lab = new Lab({ pinSuffix: NASTY });
    t.after(() => lab.tearDown());
    await lab.setUp({ enroll: false });
    const manager = lab.manager!;
    assert.equal(await lab.stopManager("SIGTERM"), 0);
    const lines = logLines(manager.stderr());
    const loaded = lines.find((l) => l["msg"] === "loaded");
    assert.equal(loaded?.["pinDir"], lab.pinDir);
    assert.equal(loaded?.["parentCgroupId"], Lab.cgroupId(lab.parent));
    assert.equal(loaded?.["upgradedLinks"], 0);
    assert.ok(lines.some((l) => l["msg"] === "stopped"));
  });

  test("epoll_ctl failures: ADD and MOD close that client, DEL is logged, the rest keeps working", async (t) => {
    const faults = tempDir(t);
    const lab = new Lab({ managerEnv: { LD_PRELOAD: bin.epollFault, EPOLL_FAULT_DIR: faults } });
    t.after(() => lab.tearDown());
    await lab.setUp({ enroll: false });
    const manager = lab.manager!;
    const status = '{"id":1,"op":"status"}';
    // The lab's client connected before, but only a round trip proves the manager accepted it:
    // otherwise its ADD could fall in the fault window below.
    await lab.client.status();

    // ADD fails: the accepted client is closed at once, never left accepted but unpolled.
    writeFileSync(join(faults, "add"), "");
    assert.equal(await untilClosed(lab.socketPath, status), "", "no reply, and closed");
    rmSync(join(faults, "add"));
    await waitFor(() => epollFailures(manager.stderr(), "add").length === 1, { what: "add logged" });
    assert.equal(epollFailures(manager.stderr(), "add")[0]?.["what"], "client");
    assert.equal((await request(lab.socketPath, status))["ok"], true, "the next client is served");

    // MOD fails after a reply: that client is dropped (its reply already sent), not left stale.
    writeFileSync(join(faults, "mod"), "");
    const reply = await untilClosed(lab.socketPath, status);
    rmSync(join(faults, "mod"));
    assert.equal((JSON.parse(reply) as { ok: boolean }).ok, true);
    await waitFor(() => epollFailures(manager.stderr(), "mod").length >= 1, { what: "mod logged" });

    // DEL fails when a client leaves: logged, and the fd is closed anyway.
    writeFileSync(join(faults, "del"), "");
    assert.equal((await request(lab.socketPath, status))["ok"], true);
    await waitFor(() => epollFailures(manager.stderr(), "del").length >= 1, { what: "del logged" });
    rmSync(join(faults, "del"));

    assert.equal(manager.child.exitCode, null, "the manager is still serving");
    assert.equal((await lab.client.status()).parentCgroupId, Lab.cgroupId(lab.parent));
    assert.equal(await lab.stopManager("SIGTERM"), 0);
    logLines(manager.stderr());
  });
});
