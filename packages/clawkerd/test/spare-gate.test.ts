// The spare gate: the line it evaluates carries any argv, cwd and environment exactly (real
// /bin/sh), requests the shell cannot carry get a gate of their own, the target runs as the jobs'
// user with no supplementary groups, another user cannot write to a waiting spare, and close()
// leaves no process behind.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { command, requires, root } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import type { Job } from "../src/job.js";
import { createLogger } from "../src/log.js";
import { gateLine, SpareGate, type DropTo } from "../src/spare-gate.js";

const log = createLogger("silent");
const own: DropTo = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
const NOBODY: DropTo = { uid: 65534, gid: 65534 };

function spareGate(t: TestContext, runAs: DropTo, selfDrop = true): SpareGate {
  const g = new SpareGate({
    log,
    baseEnv: { PATH: "/usr/bin:/bin", PERL5OPT: "-Mnonexistent::module" },
    runAs,
    refillDelayMs: 1,
    selfDrop,
  });
  t.after(() => g.close());
  g.start();
  return g;
}

/** Opens the taken spare's gate with its line; resolves with its output and exit code. */
async function run(taken: { job: Job; line: Buffer }): Promise<{ out: string; code: number }> {
  const chunks: Buffer[] = [];
  const reading = (async () => {
    for await (const ev of taken.job.output.watch()) if (ev.type === "data") chunks.push(ev.data);
  })();
  taken.job.writeStdin(taken.line);
  taken.job.closeStdin();
  const result = await taken.job.finished;
  await reading;
  return { out: Buffer.concat(chunks).toString(), code: result.kind === "done" ? result.exitCode : -2 };
}

void test("a spare carries argv, cwd and environment exactly, whatever they hold", async (t) => {
  const g = spareGate(t, own);
  const dir = mkdtempSync(join(tmpdir(), "spare gate 'dir'\n"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const tricky = ["it's", "a\nb", "$(echo injected)", "`id`", "\\", '"', " spaced ", "", "*", "; exit 3"];
  await waitFor(() => g.pid !== undefined, { what: "the first spare" });
  const taken = g.take({
    argv: ["/bin/sh", "-c", 'printf "%s|" "$@"; printf "%s|" "$X" "$(pwd)"', "job", ...tricky],
    cwd: dir,
    env: { X: "x'y\nz $HOME" },
  });
  assert.ok(taken !== undefined, "a spare was ready");
  const { out, code } = await run(taken);
  assert.equal(code, 0);
  assert.equal(out, [...tricky, "x'y\nz $HOME", dir].map((s) => `${s}|`).join(""));
});

void test("requests the shell cannot carry get a gate of their own; a missing cwd ends like a missing program", async (t) => {
  assert.equal(gateLine({ argv: ["true"], cwd: "", env: { "A-B": "1" } }, undefined), undefined);
  assert.equal(gateLine({ argv: ["true"], cwd: "", env: { A: "1\0" } }, undefined), undefined);
  assert.equal(gateLine({ argv: ["true"], cwd: "", env: { __clawker_nl: "x" } }, undefined), undefined);
  assert.equal(gateLine({ argv: ["true\0"], cwd: "", env: {} }, undefined), undefined);
  const g = spareGate(t, own);
  await waitFor(() => g.pid !== undefined, { what: "the first spare" });
  assert.equal(g.take({ argv: ["true"], cwd: "", env: { "A-B": "1" } }), undefined);
  const taken = g.take({ argv: ["/bin/true"], cwd: "/nonexistent/dir", env: {} });
  assert.ok(taken !== undefined);
  assert.equal((await run(taken)).code, 127, "the gate's spawn_failed code");
  await waitFor(() => g.pid !== undefined, { what: "the next spare" });
});

void test("an environment that would steer setpriv while it is root gets a gate of its own", () => {
  const job = (env: Record<string, string>) => ({ argv: ["true"], cwd: "", env });
  for (const env of [
    { LD_PRELOAD: "/home/agent/evil.so" },
    { LD_LIBRARY_PATH: "/tmp" },
    { GCONV_PATH: "/tmp" },
    { GLIBC_TUNABLES: "glibc.malloc.check=3" },
    { MALLOC_ARENA_MAX: "1" },
    { LOCPATH: "/tmp" },
    { LANG: "/home/agent/locale" },
    { LC_ALL: "../../tmp/x" },
    { TZ: ":/home/agent/zone" },
  ]) {
    assert.equal(gateLine(job(env), NOBODY), undefined, JSON.stringify(env));
    assert.notEqual(gateLine(job(env), undefined), undefined, `${JSON.stringify(env)} with no drop`);
  }
  assert.notEqual(gateLine(job({ LANG: "C.UTF-8", TZ: "UTC", PATH: "/bin" }), NOBODY), undefined);
});

for (const by of ["perl", "setpriv"] as const) {
  void test(`as root, the target runs as the jobs' user with no supplementary groups (${by})`, async (t) => {
    if (!requires(t, root, command(by))) return;
    const g = spareGate(t, NOBODY, by === "perl");
    await waitFor(() => g.pid !== undefined, { what: "the first spare" });
    assert.equal(g.dropBy, by);
    const spare = g.pid!;
    const taken = g.take({
      argv: ["/bin/sh", "-c", "id -u; id -g; id -G; grep -E '^(Uid|Gid|CapPrm|CapEff):' /proc/self/status"],
      cwd: "",
      env: {},
    });
    assert.ok(taken !== undefined);
    assert.equal(taken.job.pids[0], spare, "the job's first process is the spare");
    const { out, code } = await run(taken);
    assert.equal(code, 0);
    assert.equal(
      out.replaceAll("\t", " "),
      "65534\n65534\n65534\n" +
        "Uid: 65534 65534 65534 65534\nGid: 65534 65534 65534 65534\n" +
        "CapPrm: 0000000000000000\nCapEff: 0000000000000000\n",
    );
  });
}

void test("as root, the self-dropping spare carries argv, cwd and environment exactly; EOF runs nothing", async (t) => {
  if (!requires(t, root, command("perl"))) return;
  const g = spareGate(t, NOBODY);
  const dir = mkdtempSync(join(tmpdir(), "spare gate 'dir'\n"));
  chmodSync(dir, 0o755);
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const tricky = [
    "it's",
    "a\nb",
    "$(echo injected)",
    "`id`",
    "\\",
    '"',
    " spaced ",
    "",
    "*",
    "; exit 3",
    "é",
  ];
  await waitFor(() => g.pid !== undefined, { what: "the first spare" });
  assert.equal(g.dropBy, "perl");
  const taken = g.take({
    argv: ["sh", "-c", 'printf "%s|" "$@"; printf "%s|" "$X" "$(pwd)" "$PERL5OPT"', "job", ...tricky],
    cwd: dir,
    env: { X: "x'y\nz $HOME", PATH: "/bin" },
  });
  assert.ok(taken !== undefined, "a spare was ready");
  const { out, code } = await run(taken);
  assert.equal(code, 0);
  assert.equal(out, [...tricky, "x'y\nz $HOME", dir, ""].map((s) => `${s}|`).join(""));

  const missing = await waitFor(() => g.take({ argv: ["/bin/true"], cwd: "/nonexistent/dir", env: {} }), {
    what: "the next spare",
  });
  assert.equal((await run(missing)).code, 127, "a missing cwd: the gate's spawn_failed code");
  const noProgram = await waitFor(() => g.take({ argv: ["no-such-program"], cwd: "", env: {} }), {
    what: "the next spare",
  });
  assert.equal((await run(noProgram)).code, 127, "a missing program: spawn_failed");
  // The gate closed without its line (placement failed, or never answered): 125, nothing ran.
  const closed = await waitFor(() => g.take({ argv: ["/bin/sh", "-c", "echo ran"], cwd: "", env: {} }), {
    what: "the next spare",
  });
  closed.job.closeStdin();
  const ended = await closed.job.finished;
  assert.deepEqual(ended, { kind: "done", exitCode: 125 });
});

for (const by of ["perl", "setpriv"] as const)
  void test(`another user cannot write to a waiting spare's stdin; close() ends it, running nothing (${by})`, async (t) => {
    if (!requires(t, root, command("runuser"), command(by))) return;
    // The jobs' user is nobody. setpriv's spare waits as clawkerd's (root); perl's waits as nobody,
    // undumpable because it changed its ids without an exec: nobody cannot reach either.
    const g = spareGate(t, NOBODY, by === "perl");
    await waitFor(() => g.pid !== undefined, { what: "the first spare" });
    assert.equal(g.dropBy, by);
    const pid = g.pid!;
    // perl starts as root and drops as its first statement: the wait is in the dropped state.
    const uid = (): string | undefined =>
      /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    const waitsAs = by === "perl" ? "65534" : "0";
    await waitFor(() => uid() === waitsAs, { what: `the spare as uid ${waitsAs}` });
    const marker = join(tmpdir(), `spare-gate-${process.pid}-${Date.now()}`);
    const attempt = spawnSync("runuser", [
      "-u",
      "nobody",
      "--",
      "/bin/sh",
      "-c",
      `printf 'touch ${marker}\\n' > /proc/${pid}/fd/0`,
    ]);
    assert.notEqual(attempt.status, 0, "nobody opened the spare's stdin");
    assert.match(attempt.stderr.toString(), /Permission denied/);
    assert.equal(g.pid, pid, "the spare still waits");
    await g.close();
    assert.equal(g.pid, undefined);
    assert.throws(() => process.kill(pid, 0), { code: "ESRCH" }, "no process is left");
    assert.equal(spawnSync("test", ["-e", marker]).status, 1, "nothing ran");
  });

void test("close() while the start's checks still run ends them: no process is left", async (t) => {
  if (!requires(t, root)) return;
  // As root for nobody, start() checks perl's (or setpriv's) drop in a child before any spare.
  const g = spareGate(t, NOBODY);
  await g.close();
  assert.equal(g.pid, undefined);
  const children = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, "utf8").trim();
  assert.equal(children, "", "no check or spare outlives close()");
});

void test("a spare killed while it waits is not handed out, and another takes its place", async (t) => {
  const g = spareGate(t, own);
  await waitFor(() => g.pid !== undefined, { what: "the first spare" });
  const first = g.pid!;
  process.kill(first, "SIGKILL");
  await waitFor(() => g.pid === undefined, { what: "the dead spare noticed" });
  assert.equal(g.take({ argv: ["/bin/true"], cwd: "", env: {} }), undefined, "a dead spare is not taken");
  const next = await waitFor(() => (g.pid !== undefined && g.pid !== first ? g.pid : undefined), {
    what: "a new spare",
  });
  const taken = g.take({ argv: ["/bin/echo", "ran"], cwd: "", env: {} });
  assert.equal(taken?.job.pids[0], next);
  assert.deepEqual(await run(taken), { out: "ran\n", code: 0 });
});
