// `clawker job` argument handling (pure): the StartJob request and its limits, sizes, bad input
// (`--memory 12Q`), job names, states. Runs against a control plane in controlplane/test/jobs.test.ts.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jobs } from "@clawker/proto";
import { resolveCommand } from "../cli.js";
import { parseFlags, type FlagValues } from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { parseCpu, parseSize, startJobRequest, statusLines } from "./job.js";

function parsed(argv: string[]): FlagValues {
  const r = resolveCommand(argv);
  assert.ok(r.kind === "command", `${argv.join(" ")} is a command`);
  return (r.command.parse ?? parseFlags)(r.command.spec, r.args);
}

const isUsage = (e: unknown): boolean => e instanceof CliError && e.exitCode === ExitCode.usage;

describe("clawker job arguments", () => {
  test("start: -- CMD verbatim, limits from --cpu/--memory/--device-*, env and workdir", () => {
    const req = startJobRequest(
      parsed([
        "job",
        "start",
        "--agent",
        "dev",
        "--project",
        "web",
        "--cpu",
        "0.5",
        "--memory",
        "512M",
        "--device-write-bps",
        "5MiB",
        "--device-read-iops",
        "1000",
        "-w",
        "/src",
        "-e",
        "A=1",
        "--",
        "make",
        "--jobs",
        "4",
      ]),
    );
    assert.deepEqual(req.argv, ["make", "--jobs", "4"]);
    assert.deepEqual([req.agentName, req.project, req.cwd, req.env], ["dev", "web", "/src", { A: "1" }]);
    assert.equal(req.limits?.cpuMillis, 500);
    assert.equal(req.limits?.memoryMaxBytes, 512n << 20n);
    assert.equal(req.limits?.ioWriteBps, 5n << 20n);
    assert.equal(req.limits?.ioReadIops, 1000);
    assert.equal(req.limits?.ioReadBps, 0n, "no flag, no limit of the job's own");
  });

  test("sizes: binary units, with or without B/iB; anything else is a usage error", () => {
    const table: Array<[string, number]> = [
      ["4096", 4096],
      ["1K", 1024],
      ["512M", 512 << 20],
      ["1.5G", 1.5 * 2 ** 30],
      ["10MB", 10 << 20],
      ["2GiB", 2 * 2 ** 30],
    ];
    for (const [text, want] of table) assert.equal(parseSize("memory", text), want, text);
    for (const bad of ["12Q", "", "-1M", "0", "M", "1.2.3G", "NaN"]) {
      assert.throws(() => parseSize("memory", bad), isUsage, bad);
    }
    assert.throws(
      () => startJobRequest(parsed(["job", "start", "--agent", "dev", "--memory", "12Q", "--", "true"])),
      (e: unknown) => isUsage(e) && /--memory must be a positive size/.test((e as Error).message),
    );
  });

  test("cpu: CPUs to thousandths; zero, negative or junk is a usage error", () => {
    assert.equal(parseCpu("0.1"), 100);
    assert.equal(parseCpu("2"), 2000);
    for (const bad of ["0", "-1", "x", "0.0001", "1e3", "2000"])
      assert.throws(() => parseCpu(bad), isUsage, bad);
  });

  test("start without --agent or without a command is a usage error", () => {
    assert.throws(() => startJobRequest(parsed(["job", "start", "--", "true"])), isUsage);
    assert.throws(() => startJobRequest(parsed(["job", "start", "--agent", "dev"])), isUsage);
    assert.throws(
      () => startJobRequest(parsed(["job", "start", "--agent", "dev", "-e", "NOEQ", "--", "x"])),
      isUsage,
    );
  });

  test("status, watch and stop take one NAME; ls rejects an unknown state", () => {
    for (const word of ["status", "watch", "stop"]) {
      const v = parsed(["job", word, "agents/dev/jobs/x"]);
      assert.deepEqual(v["--"], ["agents/dev/jobs/x"]);
    }
    assert.throws(() => parsed(["job", "ls", "extra"]), isUsage);
  });

  test("status lines: state, reason, exit and the cgroup stats in the seed's key value shape", () => {
    const job: jobs.Job = {
      ...jobs.Job.create(),
      name: "agents/dev/jobs/1",
      state: jobs.JobState.JOB_STATE_FAILED,
      reason: "oom_killed",
      exitCode: -1,
      signo: 9,
    };
    const stats = { ...jobs.JobStats.create(), cpuNrThrottled: 7n, memoryEvents: { oom_kill: 1n } };
    const lines = statusLines(job, stats);
    for (const want of [
      "state FAILED",
      "reason oom_killed",
      "exit_code -1",
      "signal 9",
      "cpuNrThrottled 7",
      "memoryEvents.oom_kill 1",
    ]) {
      assert.ok(lines.includes(want), `${want} in ${lines.join(" | ")}`);
    }
  });
});

describe("clawker run limits", () => {
  test("--cpus, --memory, --pids-limit and --device-* map onto Docker's host config (no swap, 75% soft limit)", async () => {
    const { agentLimits } = await import("./run.js");
    const { agentLimitsHostConfig } = await import("@clawker/adminclient");
    const values: FlagValues = {
      cpus: "0.5",
      memory: "512M",
      "pids-limit": "256",
      "device-write-bps": ["/dev/sda:5M"],
      "device-read-iops": ["/dev/sda:1000"],
    };
    assert.deepEqual(agentLimitsHostConfig(agentLimits(values)), {
      NanoCpus: 500_000_000,
      Memory: 512 << 20,
      MemorySwap: 512 << 20,
      MemoryReservation: 384 << 20,
      PidsLimit: 256,
      BlkioDeviceWriteBps: [{ Path: "/dev/sda", Rate: 5 << 20 }],
      BlkioDeviceReadIOps: [{ Path: "/dev/sda", Rate: 1000 }],
    });
    assert.deepEqual(agentLimitsHostConfig(agentLimits({})), {}, "no flags: Docker's defaults");
    for (const bad of [
      { memory: "12Q" },
      { cpus: "0" },
      { "pids-limit": "-3" },
      { "device-read-bps": ["sda:1M"] },
    ]) {
      assert.throws(() => agentLimits(bad), isUsage, JSON.stringify(bad));
    }
  });
});
