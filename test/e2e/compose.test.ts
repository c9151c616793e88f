// docker/compose.yaml brought up with Debian's docker-compose against the harness's private
// dockerd, with the images docker/build.sh makes from this checkout: the control plane comes up
// healthy with the same capabilities and binds as the documented `docker run`, serves the CLI
// through 127.0.0.1 and agents on the agents network, an agent from the agent image attests itself
// and runs a command under docker-init, and `docker-compose stop` drains the control plane.
// The systemd units (docker/systemd/) pass `systemd-analyze verify` and say the same as compose.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { DEFAULT_AGENT_ENTRYPOINT } from "@clawker/adminclient";
import { parse as parseYaml } from "yaml";
import { clawker, type CliResult } from "../harness/clawker-cli.js";
import { startPrivateDocker } from "../harness/docker.js";
import { REPO_ROOT } from "../harness/images.js";
import { bpffs, cgroup2, cgroup2Mount, command, root, skipReason } from "../harness/preconditions.js";
import { useTestTrust } from "../harness/trust.js";
import { waitFor } from "../harness/wait-for.js";
import {
  BUILD_TOOLS,
  CP_CAPABILITIES,
  CP_TRUST_FILES,
  buildImages,
  containerMounts,
  containerProcesses,
  dockerCli,
  dockerEnv,
} from "./images-build.js";
import { installCli, packCli } from "./cli-install-package.js";

const execFileP = promisify(execFile);

// The addresses docker/compose.yaml and docker/controlplane.yaml pin.
const CP_AGENTS_IP = "10.213.0.2";
const CP_PUBLISH_IP = "10.214.0.2";
const TOKEN_ENDPOINT = `https://${CP_AGENTS_IP}:4444/oauth2/token`;
const CONTAINER = "clawker-controlplane";
// The published admin port, named on every admin command: without `--admin` the CLI dials the
// system admin socket first when one answers (/run/clawker/admin.sock, which `up --container` as
// root leaves for its own control plane), and a CI run beside such a test sent this test's calls
// there, with a token that control plane's auth server never issued: 30 s of token_inactive, and
// nothing in this container's log.
const ADMIN = ["--admin", "127.0.0.1:7443"];

function json<T>(r: CliResult, what: string): T {
  assert.equal(r.code, 0, `${what} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

describe(
  "compose",
  {
    skip: skipReason(
      root,
      command("dockerd"),
      command("nsenter"),
      command("docker-compose"),
      cgroup2,
      bpffs,
      ...BUILD_TOOLS,
    ),
  },
  () => {
    test(
      "docker-compose up: healthy, documented capabilities and binds, an agent attests, stop drains",
      // Builds the images in its own dockerd first: in a loaded CI run that alone has taken minutes.
      { timeout: 600_000 },
      async (t) => {
        const daemon = await startPrivateDocker(t);
        const host = daemon.dockerHost;
        const images = await buildImages(host, "all");
        const trust = await useTestTrust(t, { serverNames: [CP_AGENTS_IP] });
        const dir = mkdtempSync(join(tmpdir(), "clawker-compose-"));
        t.after(() => rmSync(dir, { recursive: true, force: true }));
        const cgroupMount = cgroup2Mount()!;
        const composeEnv = dockerEnv(host, {
          CLAWKER_CP_IMAGE: images["controlplane"]!.ref,
          CLAWKER_TRUST_DIR: trust.trustDir,
          CLAWKER_CGROUP2: cgroupMount,
          CLAWKER_DOCKER_SOCKET: daemon.socketPath,
        });
        const compose = (args: string[]) =>
          execFileP(
            "docker-compose",
            ["--file", join(REPO_ROOT, "docker/compose.yaml"), "--project-name", "clawker", ...args],
            {
              env: composeEnv,
              timeout: 120_000,
            },
          );
        t.after(() => compose(["down", "--volumes", "--timeout", "5"]).catch(() => undefined));
        await compose(["up", "--detach"]);

        const cli = (args: string[]) =>
          clawker(args, {
            netns: daemon.netnsName,
            env: {
              ...process.env,
              DOCKER_HOST: host,
              CLAWKER_CP_TRUST_DIR: trust.trustDir,
              CLAWKER_CP_DATA_DIR: join(dir, "state"),
              CLAWKER_TOKEN_ENDPOINT: TOKEN_ENDPOINT,
            },
          });
        // A wait that fails says why: where the CLI's calls went and what they met, whether the
        // daemon runs or is stuck, what the published port holds, and what the container logged
        // (a loaded CI run once saw 30 s of refusals, and the test output had nothing to go on).
        const withLogs = <T>(wait: Promise<T>): Promise<T> =>
          wait.catch(async (err: unknown) => {
            const report = await diagnose(host, daemon.netnsName, cli);
            throw new Error(`${(err as Error).message}\n${report}`, { cause: err });
          });
        await withLogs(
          waitFor(async () => (await cli(["controlplane", "status", ...ADMIN])).code === 0, {
            timeoutMs: 60_000,
            intervalMs: 200,
            what: "the compose control plane healthy through 127.0.0.1:7080 and :7443",
          }),
        );

        // The same capabilities and binds as the documented docker run.
        const procs = await containerProcesses(host, CONTAINER);
        assert.match(procs.find((p) => p.pid === 1)?.cmdline ?? "", /docker-init/);
        const cp = procs.find((p) => p.cmdline.endsWith("controlplane/dist/main.js"));
        assert.equal(cp?.capEff.toString(16), CP_CAPABILITIES.toString(16));
        assert.equal(cp?.noNewPrivs, true);
        const mounts = await containerMounts(host, CONTAINER);
        assert.equal(mounts.get("/")?.readOnly, true);
        assert.equal(mounts.get("/sys/fs/bpf")?.readOnly, false);
        assert.deepEqual(
          [mounts.get(cgroupMount)?.fsType, mounts.get(cgroupMount)?.readOnly],
          ["cgroup2", true],
        );
        for (const f of CP_TRUST_FILES)
          assert.equal(mounts.get(`/etc/clawker/trust/${f}`)?.readOnly, true, f);
        // Each listener on its own network: the CLI's on the publishing one, the agents' on theirs.
        const ready = (await dockerCli(host, ["logs", CONTAINER]))
          .split("\n")
          .filter((l) => l.includes('"event":"ready"') && l.includes('"addresses"'))
          .map((l) => JSON.parse(l) as { addresses: Record<string, unknown> })[0];
        assert.deepEqual(ready?.addresses, {
          admin: { host: CP_PUBLISH_IP, port: 7443 },
          agent: { host: CP_AGENTS_IP, port: 7444 },
          health: { host: CP_PUBLISH_IP, port: 7080 },
          // The admin socket stays inside the data volume: compose does not share it with the host.
          adminSocket: "/var/lib/clawker/run/admin.sock",
        });
        const published = await dockerCli(host, ["port", CONTAINER]);
        assert.deepEqual(published.trim().split("\n").sort(), [
          "7080/tcp -> 127.0.0.1:7080",
          "7443/tcp -> 127.0.0.1:7443",
        ]);

        // An agent from the agent image, on the agents network, attests itself through the container.
        const started = json<{ containerId: string; thumbprint: string }>(
          await cli([
            "run",
            "--agent",
            "dev",
            "--project",
            "compose",
            "--network",
            "clawker-agents",
            "--cp-addr",
            `${CP_AGENTS_IP}:7444`,
            "--token-endpoint",
            TOKEN_ENDPOINT,
            ...ADMIN,
            "--format",
            "json",
            images["agent"]!.ref,
            "sleep",
            "infinity",
          ]),
          "clawker run",
        );
        const listed = await withLogs(
          waitFor(
            async () => {
              const out = json<{
                agents: Array<{ name: string; containerId: string; certThumbprint: string }>;
              }>(await cli(["controlplane", "agents", ...ADMIN, "--format", "json"]), "controlplane agents");
              return out.agents.length > 0 ? out.agents : undefined;
            },
            { timeoutMs: 30_000, intervalMs: 250, what: "the agent registered" },
          ),
        );
        assert.deepEqual(
          listed.map((a) => [a.name, a.containerId, a.certThumbprint]),
          [["dev", started.containerId, started.thumbprint]],
        );
        const exec = await cli([
          "exec",
          "--agent",
          "dev",
          "--project",
          "compose",
          ...ADMIN,
          "--sh",
          "tr '\\0' ' ' </proc/1/cmdline",
        ]);
        assert.equal(exec.code, 0, exec.stderr);
        // docker-init runs `clawker run`'s entrypoint (clawkerd under node with its flags), then the CMD.
        assert.equal(
          exec.stdout.trimEnd(),
          ["/sbin/docker-init", "--", ...DEFAULT_AGENT_ENTRYPOINT, "sleep", "infinity"].join(" "),
        );
        assert.equal((await cli(["rm", "--agent", "dev", "--project", "compose", "--force"])).code, 0);

        // docker-compose stop: SIGTERM, the drain, exit 0.
        await compose(["stop", "--timeout", "30"]);
        const state = JSON.parse(
          await dockerCli(host, ["inspect", "--format", "{{json .State}}", CONTAINER]),
        ) as {
          Status: string;
          ExitCode: number;
        };
        assert.deepEqual([state.Status, state.ExitCode], ["exited", 0]);
        const logs = await dockerCli(host, ["logs", CONTAINER]);
        assert.match(logs, /"event":"drain","cause":"signal","signal":"SIGTERM"/);
        assert.match(logs, /"event":"stopped","code":0/);
      },
    );

    test(
      "the systemd unit and the Quadlet file pass systemd-analyze verify and match compose",
      { skip: skipReason(command("systemd-analyze"), command("npm")) },
      async (t) => {
        // An alternate root for verify: the system's own units, ours in /etc, and clawker-cp where
        // the unit's ExecStart expects it, put there by the real package installed with npm -g.
        const root = mkdtempSync(join(tmpdir(), "clawker-units-"));
        t.after(() => rmSync(root, { recursive: true, force: true }));
        cpSync("/usr/lib/systemd/system", join(root, "usr/lib/systemd/system"), {
          recursive: true,
          verbatimSymlinks: true,
        });
        mkdirSync(join(root, "etc/systemd/system"), { recursive: true });
        await installCli(await packCli(join(root, "pack")), join(root, "usr/local"));
        const unitDir = join(root, "etc/systemd/system");
        const verify = async (unit: string) =>
          execFileP("systemd-analyze", ["verify", "--man=no", `--root=${root}`, unit]).then(
            ({ stdout, stderr }) => ({ ok: true, out: stdout + stderr }),
            (err: { stdout: string; stderr: string }) => ({ ok: false, out: err.stdout + err.stderr }),
          );

        cpSync(
          join(REPO_ROOT, "docker/systemd/clawker-controlplane.service"),
          join(unitDir, "clawker-controlplane.service"),
        );
        assert.deepEqual(await verify("clawker-controlplane.service"), { ok: true, out: "" });
        const { stdout: security } = await execFileP("systemd-analyze", [
          "security",
          "--offline=true",
          `--root=${root}`,
          "clawker-controlplane.service",
        ]);
        const exposure = Number(/Overall exposure level for \S+: ([\d.]+)/.exec(security)?.[1]);
        t.diagnostic(`systemd-analyze security exposure: ${exposure}`);
        assert.ok(exposure < 4, `exposure ${exposure}`);
        // The check bites: without the installed daemon, verify refuses the unit.
        rmSync(join(root, "usr/local/bin/clawker-cp"));
        const broken = await verify("clawker-controlplane.service");
        assert.equal(broken.ok, false);
        assert.match(broken.out, /\/usr\/local\/bin\/clawker-cp is not executable/);

        // Quadlet (Podman 4.4+) is not in Debian 12's Podman 4.3: the service Quadlet generates from
        // the [Container] keys is written here (only the keys the file uses are known) and verified,
        // with a stand-in at /usr/bin/podman because verify checks that ExecStart exists; Podman
        // itself does not run.
        const quadlet = parseUnit(
          readFileSync(join(REPO_ROOT, "docker/systemd/clawker-controlplane.container"), "utf8"),
        );
        const container = quadlet.get("Container") ?? [];
        const args = [
          "run",
          "--name=%N",
          "--cidfile=%t/%N.cid",
          "--replace",
          "--rm",
          "--sdnotify=conmon",
          "-d",
        ];
        let image = "";
        for (const [key, value] of container) {
          switch (key) {
            case "Image":
              image = value;
              break;
            case "ContainerName":
              args[1] = `--name=${value}`;
              break;
            case "RunInit":
              assert.equal(value, "true");
              args.push("--init");
              break;
            case "DropCapability":
              args.push(...value.split(" ").map((c) => `--cap-drop=${c.toLowerCase()}`));
              break;
            case "AddCapability":
              args.push(...value.split(" ").map((c) => `--cap-add=${c.toLowerCase()}`));
              break;
            case "NoNewPrivileges":
              assert.equal(value, "true");
              args.push("--security-opt=no-new-privileges");
              break;
            case "ReadOnly":
              assert.equal(value, "true");
              args.push("--read-only");
              break;
            case "Volume":
              args.push("-v", value);
              break;
            case "Environment":
              args.push("--env", value);
              break;
            case "PublishPort":
              args.push("--publish", value);
              break;
            default:
              assert.fail(`a [Container] key this check does not know: ${key}`);
          }
        }
        const service = [
          "[Unit]",
          ...(quadlet.get("Unit") ?? []).map(([k, v]) => `${k}=${v}`),
          "[Service]",
          "Type=notify",
          "NotifyAccess=all",
          "KillMode=mixed",
          `ExecStart=/usr/bin/podman ${[...args, image].join(" ")}`,
          "ExecStop=/usr/bin/podman rm -f -i --cidfile=%t/%N.cid",
          ...(quadlet.get("Service") ?? []).map(([k, v]) => `${k}=${v}`),
          "[Install]",
          ...(quadlet.get("Install") ?? []).map(([k, v]) => `${k}=${v}`),
        ].join("\n");
        writeFileSync(join(unitDir, "clawker-controlplane-container.service"), service + "\n");
        mkdirSync(join(root, "usr/bin"), { recursive: true });
        writeFileSync(join(root, "usr/bin/podman"), "#!/bin/sh\nexit 1\n", { mode: 0o755 });
        assert.deepEqual(await verify("clawker-controlplane-container.service"), { ok: true, out: "" });

        // Quadlet, compose and the unit agree on what the daemon gets.
        const compose = parseYaml(readFileSync(join(REPO_ROOT, "docker/compose.yaml"), "utf8")) as {
          services: {
            controlplane: {
              cap_add: string[];
              cap_drop: string[];
              volumes: string[];
              init: boolean;
              read_only: boolean;
            };
          };
        };
        const cp = compose.services.controlplane;
        assert.deepEqual(cp.cap_drop, ["ALL"]);
        const quadletValues = (key: string) => container.filter(([k]) => k === key).map(([, v]) => v);
        assert.deepEqual(
          quadletValues("AddCapability")[0]?.split(" "),
          cp.cap_add.map((c) => `CAP_${c}`),
        );
        const unit = parseUnit(
          readFileSync(join(REPO_ROOT, "docker/systemd/clawker-controlplane.service"), "utf8"),
        );
        const bounding = unit.get("Service")?.find(([k]) => k === "CapabilityBoundingSet")?.[1];
        assert.deepEqual(
          bounding?.split(" "),
          cp.cap_add.map((c) => `CAP_${c}`),
        );
        // The source may hold a colon (`${VAR:?message}`): read target and mode from the end.
        const trustTargets = (volumes: string[]) =>
          volumes
            .map((v) => /:\/etc\/clawker\/trust\/([^:]+)(?::(ro|rw))?$/.exec(v))
            .filter((m) => m !== null)
            .map((m) => `${m[1]}:${m[2] ?? "rw"}`)
            .sort();
        const expected = CP_TRUST_FILES.map((f) => `${f}:ro`).sort();
        assert.deepEqual(trustTargets(cp.volumes), expected);
        assert.deepEqual(trustTargets(quadletValues("Volume")), expected);
        for (const volumes of [cp.volumes, quadletValues("Volume")]) {
          assert.ok(volumes.includes("/sys/fs/bpf:/sys/fs/bpf"), "bpffs read-write");
          assert.ok(
            volumes.some((v) => /cgroup}?:ro$/.test(v)),
            "cgroup2 read-only",
          );
        }
      },
    );
  },
);

/**
 * What a failed wait needs to say why: a CLI call with --debug (where it connected, the error and
 * its causes), /healthz and the clock from `controlplane status`, any system admin socket that
 * would take the CLI's calls, the daemon's processes and the state of its main thread, /healthz
 * from inside the container, the published ports' sockets in the engine's netns, and the
 * container's log (the auth server's lines are in it). Every probe is bounded; a failed probe
 * prints its error instead.
 */
async function diagnose(
  host: string,
  netns: string,
  cli: (args: string[]) => Promise<CliResult>,
): Promise<string> {
  const bounded = (p: Promise<string>): Promise<string> =>
    Promise.race([
      p,
      new Promise<string>((resolve) => setTimeout(() => resolve("(no answer in 20 s)"), 20_000).unref()),
    ]).catch((e: unknown) => `(failed: ${(e as Error).message})`);
  const call = async (args: string[]): Promise<string> => {
    const r = await cli(args);
    return `exit ${r.code}\nstdout: ${r.stdout.trim()}\nstderr: ${r.stderr.trim()}`;
  };
  const daemonState = async (): Promise<string> => {
    // docker top's PIDs are the host's: the harness's dockerd shares the host's pid namespace.
    const top = await dockerCli(host, ["top", CONTAINER, "-o", "pid,stat,pcpu,etime,args"], {
      timeoutMs: 20_000,
    });
    const lines = [top.trimEnd()];
    for (const row of top
      .split("\n")
      .filter((l) => l.includes("controlplane/dist/main.js") && !l.includes("docker-init"))) {
      const pid = row.trim().split(/\s+/)[0]!;
      const status = readFileSync(`/proc/${pid}/status`, "utf8")
        .split("\n")
        .filter((l) => /^(State|Threads|VmRSS|voluntary_ctxt_switches|nonvoluntary_ctxt_switches):/.test(l));
      const wchan = readFileSync(`/proc/${pid}/wchan`, "utf8");
      lines.push(`daemon ${pid}: ${status.join(", ")}, wchan ${wchan}`);
    }
    return lines.join("\n");
  };
  const probes: Array<[string, Promise<string>]> = [
    [
      "clawker controlplane agents --debug",
      call(["controlplane", "agents", ...ADMIN, "--format", "json", "--debug"]),
    ],
    // Without --admin: where the CLI goes on its own (a system admin socket first, when one answers).
    [
      "clawker controlplane agents without --admin --debug",
      call(["controlplane", "agents", "--format", "json", "--debug"]),
    ],
    ["clawker controlplane status", call(["controlplane", "status", ...ADMIN, "--format", "json"])],
    [
      "system admin socket (the CLI's first choice without --admin)",
      execFileP("ls", ["-la", "/run/clawker"]).then(
        (r) => r.stdout,
        () => "no /run/clawker",
      ),
    ],
    ["daemon processes (docker top) and its main thread", daemonState()],
    [
      "/healthz from inside the container",
      dockerCli(
        host,
        [
          "exec",
          CONTAINER,
          "node",
          "-e",
          `fetch("http://${CP_PUBLISH_IP}:7080/healthz").then(async (r) => console.log(r.status, await r.text()))`,
        ],
        { timeoutMs: 20_000 },
      ),
    ],
    [
      "published ports in the engine's netns (ss)",
      execFileP("nsenter", [
        `--net=/run/netns/${netns}`,
        "ss",
        "-tanp",
        "( sport = :7443 or dport = :7443 or sport = :7080 )",
      ]).then((r) => r.stdout),
    ],
    [
      "container log (last 80 lines)",
      dockerCli(host, ["logs", "--tail", "80", CONTAINER], { timeoutMs: 20_000 }),
    ],
  ];
  const sections = await Promise.all(
    probes.map(async ([name, p]) => `--- ${name} ---\n${(await bounded(p)).trimEnd()}`),
  );
  return sections.join("\n");
}

/** A unit file's sections as ordered key/value lists (comments and blank lines dropped). */
function parseUnit(text: string): Map<string, Array<[string, string]>> {
  const sections = new Map<string, Array<[string, string]>>();
  let current: Array<[string, string]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section !== null) {
      current = [];
      sections.set(section[1]!, current);
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(current !== undefined && eq > 0, `not a unit file line: ${line}`);
    current.push([line.slice(0, eq), line.slice(eq + 1)]);
  }
  return sections;
}
