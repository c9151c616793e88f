// A child process for bench/firewall-events.bench.ts: writes the proxy's decision log lines (the
// format HAProxy writes, with this run's token) to the daemon's decision socket at a fixed offered
// rate for a while, as HAProxy's ring forwarder does: newline-delimited, at most 16 KiB per write
// (HAProxy's buffer), and when 4 MiB (the ring) are still unwritten the newest lines are dropped,
// counted and announced in-band (`N events dropped`) before the next line. Prints
// `{"started":true}` as it begins, then one line with how many lines it offered, wrote and
// dropped, over how long, and the CPU it used (the bench confines it to a CPU quota, so it cannot
// starve the daemon it measures).
//   decision-line-flood.ts <socket path> <token> <seconds> <lines per second>
import { createConnection } from "node:net";
import { performance } from "node:perf_hooks";

const [path, token, seconds, rate] = process.argv.slice(2).map((a, i) => (i < 2 ? a : Number(a))) as [
  string,
  string,
  number,
  number,
];
const WRITE_BYTES = 16 * 1024;
const RING_BYTES = 4 * 1024 * 1024;
// Built once: a flooder that formats every line measures its own formatting, not the daemon.
const ts = Math.floor(Date.now() / 1000);
const lines = Array.from({ length: 1000 }, (_, i) =>
  Buffer.from(
    `{"k":"${token}","layer":"tls","ts":${ts},"src":"127.0.0.3","sport":${1024 + i},` +
      `"agent":"-","project":"-","name":"flood${i}.example.test","port":"443","verdict":"deny","reason":"no_rule",` +
      `"rule":"-","upstream":"-","server":"-","duration_ms":1,"bytes_in":517,"bytes_out":7,"termination":"SD"}\n`,
  ),
);
// Every line twice in a row, so a run of up to 1,000 lines starting anywhere is one subarray.
const all = Buffer.concat([...lines, ...lines]);
const offsets: number[] = [0];
for (const l of [...lines, ...lines]) offsets.push(offsets[offsets.length - 1]! + l.length);

const socket = createConnection(path);
let offered = 0;
let written = 0;
let dropped = 0;
let unannounced = 0;
const start = performance.now();
const end = start + seconds * 1000;

/** Writes lines [from, from + n) of the endless sequence in writes of at most 16 KiB. */
function writeLines(from: number, n: number): void {
  while (n > 0) {
    const i = from % lines.length;
    let k = 0;
    while (k < n && k < lines.length && offsets[i + k + 1]! - offsets[i]! <= WRITE_BYTES) k++;
    socket.write(all.subarray(offsets[i], offsets[i + k]));
    written += k;
    from += k;
    n -= k;
  }
}

function tick(): void {
  const now = performance.now();
  const due = Math.floor(((Math.min(now, end) - start) / 1000) * rate) - offered;
  if (due > 0) {
    if (socket.writableLength >= RING_BYTES) {
      // The ring is full: HAProxy drops the newest lines and counts them.
      dropped += due;
      unannounced += due;
    } else {
      if (unannounced > 0) {
        socket.write(`${unannounced} events dropped\n`);
        unannounced = 0;
      }
      writeLines(offered, due);
    }
    offered += due;
  }
  if (now < end) {
    setTimeout(tick, 1);
    return;
  }
  if (unannounced > 0) socket.write(`${unannounced} events dropped\n`);
  socket.end(() => {
    const cpu = process.cpuUsage();
    process.stdout.write(
      `${JSON.stringify({ sent: offered, written, dropped, ms: performance.now() - start, cpuMs: (cpu.user + cpu.system) / 1000 })}\n`,
    );
  });
}
socket.once("connect", () => {
  process.stdout.write(`${JSON.stringify({ started: true })}\n`);
  tick();
});
