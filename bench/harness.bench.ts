// The test harness's fixed costs: a private dockerd's start to first ping, importing the
// busybox and Node 24 images into a fresh daemon, and a full teardown.
import { PrivateDocker } from "../test/harness/docker.js";
import { busyboxImage, nodeImage } from "../test/harness/images.js";
import { command, root } from "../test/harness/preconditions.js";
import { repeat, summarise, timeMs, type Benchmark } from "./lib.js";

const bench: Benchmark = {
  name: "harness",
  skip: () => root.check() ?? command("dockerd").check() ?? command("nsenter").check(),
  async run(ctx) {
    const samples = await repeat(ctx, async () => {
      const daemon = new PrivateDocker();
      try {
        await daemon.start();
        const busybox = await timeMs(() => busyboxImage(daemon.docker));
        const node = await timeMs(() => nodeImage(daemon.docker));
        const close = await timeMs(() => daemon.close());
        ctx.log(
          `ready ${daemon.readyMs.toFixed(0)} ms, busybox ${busybox.toFixed(0)} ms, node ${node.toFixed(0)} ms`,
        );
        return { ready: daemon.readyMs, busybox, node, close };
      } finally {
        await daemon.close();
      }
    });
    return [
      summarise(
        "dockerd ready (spawn to first ping)",
        "ms",
        samples.map((s) => s.ready),
        "lower",
        "< 2000 ms",
      ),
      summarise(
        "busybox image import (fresh daemon)",
        "ms",
        samples.map((s) => s.busybox),
        "lower",
      ),
      summarise(
        "Node 24 image import (fresh daemon)",
        "ms",
        samples.map((s) => s.node),
        "lower",
      ),
      summarise(
        "teardown (close)",
        "ms",
        samples.map((s) => s.close),
        "lower",
      ),
    ];
  },
};

export default bench;
