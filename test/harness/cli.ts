// The harness as a command: start a private dockerd for manual work, or sweep what crashed runs
// left behind. Usage: npx tsx --conditions=source test/harness/cli.ts --help
import { tmpdir } from "node:os";
import { parseArgs } from "node:util";
import { PrivateDocker } from "./docker.js";
import { busyboxImage, nodeImage } from "./images.js";
import { sweepStaleRuns } from "./leftovers.js";

const HELP = `Usage: npx tsx --conditions=source test/harness/cli.ts <command> [options]

Commands:
  up       Start a private dockerd in its own network namespace, print DOCKER_HOST and the
           netns name, and keep running until SIGINT/SIGTERM; then tear everything down.
  sweep    Remove what test runs that died without cleaning up left behind (their dockerd,
           containerd, mounts, netns and temp dir). Runs whose process is alive are kept.

Options for up:
  --images     also import the busybox and Node 24 test images and print their references
  --trust      also mint a trust set (needs --conditions=source) and print its directory
  -h, --help   show this help

Run a process where "--network host" containers can reach it:
  nsenter --net=/run/netns/<netns> <command>`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    help: { type: "boolean", short: "h" },
    images: { type: "boolean" },
    trust: { type: "boolean" },
  },
});

const cmd = positionals[0];
if (values.help === true || cmd === undefined) {
  console.log(HELP);
  process.exitCode = cmd === undefined && values.help !== true ? 2 : 0;
} else if (cmd === "up") {
  await up();
} else if (cmd === "sweep") {
  for (const run of await sweepStaleRuns(tmpdir())) {
    console.log(
      `${run.error === undefined ? "swept" : "FAILED"} ${run.dir} (${run.netnsName}, owner ${run.ownerPid})${run.error ?? ""}`,
    );
  }
} else {
  console.error(`unknown command ${cmd}\n\n${HELP}`);
  process.exitCode = 2;
}

async function up(): Promise<void> {
  const daemon = new PrivateDocker();
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  let closeTrust: (() => Promise<void>) | undefined;
  try {
    await daemon.start(stop.signal);
    console.log(`DOCKER_HOST=${daemon.dockerHost}`);
    console.log(`CLAWKER_TEST_NETNS=${daemon.netnsName}`);
    console.error(`# dockerd ready in ${daemon.readyMs.toFixed(0)} ms; state in ${daemon.dir}`);
    if (values.images === true) {
      console.log(`BUSYBOX_IMAGE=${await busyboxImage(daemon.docker)}`);
      console.log(`NODE_IMAGE=${await nodeImage(daemon.docker)}`);
    }
    if (values.trust === true) {
      const { mintTestTrust } = await import("./trust.js");
      const trust = await mintTestTrust();
      closeTrust = () => trust.close();
      console.log(`CLAWKER_TEST_TRUST_DIR=${trust.trustDir}`);
    }
    console.error("# running; Ctrl-C (SIGINT) or SIGTERM tears it down");
    await new Promise<void>((resolve) => {
      if (stop.signal.aborted) resolve();
      stop.signal.addEventListener("abort", () => resolve(), { once: true });
    });
  } finally {
    console.error("# tearing down");
    await closeTrust?.();
    await daemon.close();
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
    console.error("# done");
  }
}
