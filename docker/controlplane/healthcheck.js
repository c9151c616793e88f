/* global process */
// The image's HEALTHCHECK: GET /healthz on the address the daemon serves it on
// (CLAWKER_CP_HEALTH_ADDR, a wildcard host probed on loopback), healthy only on 200. Exit 0 or 1.
import { request } from "node:http";

const address = process.env.CLAWKER_CP_HEALTH_ADDR || "127.0.0.1:7080";
const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(address);
if (match === null) {
  process.stderr.write(`healthcheck: CLAWKER_CP_HEALTH_ADDR is not host:port: ${address}\n`);
  process.exit(1);
}
const given = match[1] ?? match[2];
const host = given === "0.0.0.0" ? "127.0.0.1" : given === "::" ? "::1" : given;
const req = request({ host, port: Number(match[3]), path: "/healthz", timeout: 2000 }, (res) => {
  res.resume();
  process.exit(res.statusCode === 200 ? 0 : 1);
});
req.on("timeout", () => req.destroy(new Error("timed out")));
req.on("error", (err) => {
  process.stderr.write(`healthcheck: ${err.message}\n`);
  process.exit(1);
});
req.end();
