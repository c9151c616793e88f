// A child process for bench/firewall-events.bench.ts: sends the proxy's decision log lines (the
// format HAProxy writes, with this run's token) to the daemon's loopback decision socket as fast
// as it can for a while (printing `{"started":true}` as it begins), then prints how many it sent and the CPU it used doing so (it shares the
// cores with the daemon).
import { createSocket } from "node:dgram";

const [port, token, seconds] = process.argv.slice(2);
const socket = createSocket("udp4");
const end = Date.now() + Number(seconds) * 1000;
let sent = 0;
let inFlight = 0;
const line = (i: number): Buffer =>
  Buffer.from(
    `{"k":"${token}","layer":"tls","ts":${Math.floor(Date.now() / 1000)},"src":"127.0.0.3","sport":${1024 + (i % 60000)},` +
      `"agent":"-","project":"-","name":"flood${i % 1000}.example.test","port":443,"verdict":"deny","reason":"no_rule",` +
      `"rule":"-","upstream":"-","duration_ms":1,"bytes_in":517,"bytes_out":7,"termination":"SD"}`,
  );
function burst(): void {
  if (Date.now() >= end) {
    const finish = (): void => {
      if (inFlight > 0) return void setImmediate(finish);
      const cpu = process.cpuUsage();
      process.stdout.write(`${JSON.stringify({ sent, cpuMs: (cpu.user + cpu.system) / 1000 })}\n`);
      socket.close();
    };
    finish();
    return;
  }
  // Bounded in flight, so the sender paces itself to what the kernel takes.
  for (let i = 0; i < 64 && inFlight < 512; i++) {
    inFlight++;
    socket.send(line(sent), Number(port), "127.0.0.1", () => inFlight--);
    sent++;
  }
  setImmediate(burst);
}
process.stdout.write(`${JSON.stringify({ started: true })}\n`);
burst();
