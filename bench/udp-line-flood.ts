// A child process for bench/firewall-events.bench.ts: sends the proxy's decision log lines (the
// format HAProxy writes, with this run's token) to the daemon's loopback decision socket at a
// fixed offered rate for a while. Prints `{"started":true}` as it begins, then one line with how
// many it sent, over how long, and the CPU it used (the bench confines it to a CPU quota, so it
// cannot starve the daemon it measures).
//   udp-line-flood.ts <port> <token> <seconds> <lines per second>
import { createSocket } from "node:dgram";
import { performance } from "node:perf_hooks";

const [port, token, seconds, rate] = process.argv.slice(2).map((a, i) => (i === 1 ? a : Number(a))) as [
  number,
  string,
  number,
  number,
];
const socket = createSocket("udp4");
// Built once: a flooder that formats every line measures its own formatting, not the daemon.
const ts = Math.floor(Date.now() / 1000);
const lines = Array.from({ length: 1000 }, (_, i) =>
  Buffer.from(
    `{"k":"${token}","layer":"tls","ts":${ts},"src":"127.0.0.3","sport":${1024 + i},` +
      `"agent":"-","project":"-","name":"flood${i}.example.test","port":443,"verdict":"deny","reason":"no_rule",` +
      `"rule":"-","upstream":"-","duration_ms":1,"bytes_in":517,"bytes_out":7,"termination":"SD"}`,
  ),
);
const MAX_IN_FLIGHT = 4096;
let sent = 0;
let inFlight = 0;
const done = (): void => void inFlight--;
const start = performance.now();
const end = start + seconds * 1000;

function tick(): void {
  const now = performance.now();
  if (now >= end) {
    const finish = (): void => {
      if (inFlight > 0) return void setImmediate(finish);
      const cpu = process.cpuUsage();
      process.stdout.write(
        `${JSON.stringify({ sent, ms: performance.now() - start, cpuMs: (cpu.user + cpu.system) / 1000 })}\n`,
      );
      socket.close();
    };
    finish();
    return;
  }
  // What the fixed rate says is due by now; behind (a capped CPU), it sends what it can and the
  // achieved rate is what it reports.
  const due = Math.floor(((now - start) / 1000) * rate);
  while (sent < due && inFlight < MAX_IN_FLIGHT) {
    inFlight++;
    socket.send(lines[sent % lines.length]!, port, "127.0.0.1", done);
    sent++;
  }
  setTimeout(tick, 1);
}
process.stdout.write(`${JSON.stringify({ started: true })}\n`);
tick();
