// The V8 settings the daemon serves with, set from inside (daemon.ts, as it becomes ready) so that
// every way of starting it gets them: the CLI, the systemd unit, the image and the test harness
// all run `node main.js` with no V8 flags of their own. Not before ready: the start-up's
// long-lived allocations gain from pretenuring (the cold start was ~50 ms slower without it).
//
// --no-allocation-site-pretenuring: V8 watches how many objects from each allocation site survive
// scavenges and, past a threshold, allocates that site's objects straight in the old generation.
// A server warming up with a young generation of 1-4 MiB sees a call's objects outlive a scavenge
// often enough (64 calls in flight, TLS writes completing a tick later) that the sites of the
// HTTP/2 stream, its Duplex state and its headers get pretenured; from then on every call's stream
// is born old, dies young, and holds its younger parts alive through each scavenge until a full
// collection. A TLS node:http2 server with 64 streams in flight stayed in that state for the whole
// run in about half the runs (30 % of what it allocated surviving each scavenge, 10-20x the
// scavenge work); with pretenuring off every run left it once the young generation had grown
// (server/README.md, "What an authorized call costs beyond a bare grpc-js call").
import { setFlagsFromString } from "node:v8";

/** The V8 flags the daemon sets on itself as it becomes ready. */
const DAEMON_V8_FLAGS = ["--no-allocation-site-pretenuring"] as const;

/** Sets DAEMON_V8_FLAGS on this process's V8. */
export function tuneHeap(): void {
  for (const flag of DAEMON_V8_FLAGS) setFlagsFromString(flag);
}
