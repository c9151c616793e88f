// The CLI as a real tool: the npm package (scripts/pack-cli.sh) installed with `npm install -g`
// into a prefix of its own puts clawker and clawker-cp on PATH; `controlplane up` finds the
// clawker-cp installed beside it (no clawker-cp on PATH), serves an authorized call and goes down
// again; under the system's Node 20 both print one line naming Node 24 and exit 2; bash completion
// offers commands and flags; and in the checkout `npx clawker` runs the same CLI.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { promisify } from "node:util";
import { freePorts } from "../harness/controlplane.js";
import { REPO_ROOT } from "../harness/images.js";
import { isAlive } from "../harness/leftovers.js";
import { command, isCI, skipReason } from "../harness/preconditions.js";
import { waitFor } from "../harness/wait-for.js";
import { NODE24_DIR, installCli, packCli } from "./cli-install-package.js";

const execFileP = promisify(execFile);
// The system Node (HOST-NOTES: Node 20 is the system Node here); the gate must refuse it.
const SYSTEM_NODE = "/usr/bin/node";

/** What a command printed and how it exited. */
interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function runProcess(
  file: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  cwd = REPO_ROOT,
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, [...args], { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** A fresh HOME and loopback ports, with `controlplane up` pointed at them through flags and env. */
async function sandbox(t: TestContext) {
  const dir = mkdtempSync(join(tmpdir(), "clawker-install-"));
  const [admin, agent, health, authPublic] = (await freePorts(4)) as [number, number, number, number];
  const config = join(dir, "cp.json");
  writeFileSync(
    config,
    JSON.stringify({
      listen: { agent: { port: agent } },
      auth: { publicPort: authPublic },
      shutdownGraceMs: 5000,
    }),
  );
  const home = join(dir, "home");
  const pidFile = join(home, ".local/state/clawker/controlplane/controlplane.pid");
  t.after(async () => {
    // Whatever happened, leave no daemon (nor its auth server: same process group) behind.
    const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8")) : undefined;
    if (pid !== undefined && isAlive(pid)) {
      process.kill(-pid, "SIGTERM");
      await waitFor(() => !isAlive(pid), { timeoutMs: 15_000, what: "daemon exit" }).catch(() =>
        process.kill(-pid, "SIGKILL"),
      );
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const env = (path: string): NodeJS.ProcessEnv => ({
    HOME: home,
    PATH: path,
    CLAWKER_CP_ADMIN_ADDR: `127.0.0.1:${admin}`,
    CLAWKER_CP_HEALTH_ADDR: `127.0.0.1:${health}`,
    CLAWKER_TOKEN_ENDPOINT: `https://127.0.0.1:${authPublic}/oauth2/token`,
  });
  return { dir, config, pidFile, env };
}

/** init, up (JSON summary), an authorized agents call, down: the README's flow from one `clawker`. */
async function upAndDown(clawker: (args: string[]) => Promise<Run>, config: string, pidFile: string) {
  const init = await clawker(["auth", "init"]);
  assert.equal(init.code, 0, init.stderr);
  const up = await clawker([
    "controlplane",
    "up",
    "--config",
    config,
    "--timeout",
    "60s",
    "--format",
    "json",
  ]);
  assert.equal(up.code, 0, `up: ${up.stderr}`);
  const summary = JSON.parse(up.stdout) as { pid: number; daemon: string; healthStatus: unknown };
  assert.deepEqual(summary.healthStatus, { status: "healthy" });
  const agents = await clawker(["controlplane", "agents"]);
  assert.equal(agents.code, 0, `agents: ${agents.stderr}`);
  assert.match(agents.stdout, /no agents registered/);
  const down = await clawker(["controlplane", "down"]);
  assert.equal(down.code, 0, `down: ${down.stderr}`);
  assert.equal(isAlive(summary.pid), false);
  assert.equal(existsSync(pidFile), false);
  return summary;
}

describe("the CLI as an installed tool", { skip: skipReason(command("npm"), command("bash")) }, () => {
  test("npm install -g of the packed CLI: clawker and clawker-cp on PATH, up/agents/down, completion", async (t) => {
    const work = mkdtempSync(join(tmpdir(), "clawker-pack-"));
    t.after(() => rmSync(work, { recursive: true, force: true }));
    const tarball = await packCli(work);
    const prefix = join(work, "prefix");
    await installCli(tarball, prefix);
    const bin = join(prefix, "bin");
    const installed = realpathSync(join(prefix, "lib/node_modules/@clawker/cli"));
    assert.equal(realpathSync(join(bin, "clawker")), join(installed, "packages/cli/dist/main.js"));
    assert.equal(
      realpathSync(join(bin, "clawker-cp")),
      join(installed, "packages/controlplane/dist/main.js"),
    );

    const { config, pidFile, env } = await sandbox(t);
    // PATH has Node 24 and the system, not the prefix: `clawker` is called by its path, so `up`
    // can only have found clawker-cp beside itself.
    const path = `${NODE24_DIR}:/usr/bin:/bin`;
    const clawker = (args: string[]) => runProcess(join(bin, "clawker"), args, env(path));
    const help = await clawker(["--help"]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^usage: clawker <command>/);
    const cpHelp = await runProcess(join(bin, "clawker-cp"), ["--version"], env(path));
    assert.match(cpHelp.stdout, /^clawker-cp \d+\.\d+\.\d+\n$/);
    const summary = await upAndDown(clawker, config, pidFile);
    assert.equal(summary.daemon, join(installed, "packages/controlplane/dist/main.js"));

    // Completion from the installed CLI, sourced into bash and asked as bash itself would.
    const script = join(work, "clawker.bash");
    writeFileSync(script, (await clawker(["completion", "bash"])).stdout);
    const complete = async (...words: string[]): Promise<string[]> => {
      const { stdout } = await execFileP("bash", [
        "-c",
        `source "$0"; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _clawker; printf '%s\\n' "\${COMPREPLY[@]}"`,
        script,
        "clawker",
        ...words,
      ]);
      return stdout.split("\n").filter((l) => l !== "");
    };
    assert.deepEqual(await complete(""), [
      "auth",
      "controlplane",
      "run",
      "rm",
      "exec",
      "job",
      "firewall",
      "completion",
      "--help",
    ]);
    assert.deepEqual(await complete("controlplane", ""), ["up", "down", "status", "agents"]);
    assert.deepEqual(await complete("controlplane", "up", "--t"), [
      "--trust-dir",
      "--token-endpoint",
      "--timeout",
    ]);
    assert.deepEqual(await complete("controlplane", "status", "--format", ""), ["text", "json"]);
    assert.deepEqual(await complete("completion", ""), ["bash", "zsh"]);
    assert.ok((await complete("exec", "--")).includes("--sh"));
  });

  test("under Node 20, clawker and clawker-cp print one line naming Node 24 and exit 2", async (t) => {
    const version = existsSync(SYSTEM_NODE)
      ? (await execFileP(SYSTEM_NODE, ["-p", "process.versions.node"])).stdout.trim()
      : undefined;
    if (version === undefined || version.startsWith("24.")) {
      const why = `needs a system Node other than 24 at ${SYSTEM_NODE} (found ${version ?? "none"})`;
      if (isCI) assert.fail(`precondition not met under CI: ${why}`);
      t.skip(why);
      return;
    }
    const work = mkdtempSync(join(tmpdir(), "clawker-pack-"));
    t.after(() => rmSync(work, { recursive: true, force: true }));
    const prefix = join(work, "prefix");
    await installCli(await packCli(work), prefix);
    // Node 20 first on PATH, as on a machine whose only Node is the distribution's: the bins'
    // `#!/usr/bin/env node` picks it.
    const env = { HOME: work, PATH: `/usr/bin:/bin` };
    for (const name of ["clawker", "clawker-cp"]) {
      for (const args of [["--help"], ["controlplane", "up"]]) {
        const r = await runProcess(join(prefix, "bin", name), args, env);
        assert.equal(r.code, 2, `${name} ${args.join(" ")}: ${r.stderr}`);
        assert.equal(r.stdout, "");
        assert.equal(r.stderr, `${name}: needs Node.js 24 (found v${version})\n`);
      }
    }
    // The checkout's own entries (what `npx clawker` and the workspace bins run), under Node 20.
    for (const [name, entry, needs] of [
      ["clawker", "packages/cli/bin/clawker.js", "packages/cli/dist/main.js"],
      ["clawker", "packages/cli/dist/main.js", "packages/cli/dist/main.js"],
      ["clawker-cp", "packages/controlplane/dist/main.js", "packages/controlplane/dist/main.js"],
    ] as const) {
      if (!existsSync(join(REPO_ROOT, needs))) {
        if (isCI) assert.fail(`precondition not met under CI: ${needs} is not built`);
        t.diagnostic(`${entry} not checked: ${needs} is not built (npm run build)`);
        continue;
      }
      const r = await runProcess(SYSTEM_NODE, [join(REPO_ROOT, entry), "--help"], env);
      assert.deepEqual([r.code, r.stderr], [2, `${name}: needs Node.js 24 (found v${version})\n`], entry);
    }
  });

  test("in the checkout, npx clawker runs the built CLI and its up finds the built clawker-cp", async (t) => {
    const linked = join(REPO_ROOT, "node_modules/.bin/clawker");
    const built = join(REPO_ROOT, "packages/cli/dist/main.js");
    const missing = !existsSync(linked)
      ? "node_modules/.bin/clawker is not linked (run npm install)"
      : !existsSync(built) || !existsSync(join(REPO_ROOT, "packages/controlplane/dist/main.js"))
        ? "the checkout is not built (npm run build)"
        : undefined;
    if (missing !== undefined) {
      if (isCI) assert.fail(`precondition not met under CI: ${missing}`);
      t.skip(missing);
      return;
    }
    assert.equal(realpathSync(linked), join(REPO_ROOT, "packages/cli/bin/clawker.js"));
    const { config, pidFile, env } = await sandbox(t);
    // --no-install: a missing bin must fail here, never fetch a registry package of that name.
    const clawker = (args: string[]) =>
      runProcess("npx", ["--no-install", "clawker", ...args], {
        ...env(process.env["PATH"] ?? ""),
        npm_config_update_notifier: "false",
      });
    const summary = await upAndDown(clawker, config, pidFile);
    assert.equal(summary.daemon, join(REPO_ROOT, "packages/controlplane/dist/main.js"));
  });
});
