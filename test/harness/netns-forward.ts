// Reaches loopback listeners inside a network namespace from the test's own: for each port, a
// relay inside the netns listens on a Unix socket (the file system is shared) and connects to
// 127.0.0.1:<port> there, and a listener on 127.0.0.1:<port> here pipes into that socket. So a
// daemon run in a private dockerd's netns keeps its URLs (token endpoint, admin target) as-is.
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { NetnsProcess, type NetnsRef } from "./netns.js";

/** Forwarding in place; `close()` stops both sides. */
export interface NetnsForward {
  close(): Promise<void>;
}

const RELAY = `
const net = require("node:net");
const [dir, ...ports] = process.argv.slice(1);
let ready = 0;
for (const port of ports) {
  net.createServer((c) => {
    const up = net.connect(Number(port), "127.0.0.1");
    c.pipe(up).pipe(c);
    c.on("error", () => up.destroy());
    up.on("error", () => c.destroy());
  }).listen(dir + "/fwd-" + port + ".sock", () => ++ready === ports.length && console.log("ready"));
}`;

/** Forwards 127.0.0.1:<port> here to 127.0.0.1:<port> inside `netns`, for every port; `dir` holds the sockets. */
export async function forwardIntoNetns(
  netns: NetnsRef,
  ports: readonly number[],
  dir: string,
): Promise<NetnsForward> {
  const relay = new NetnsProcess(netns, process.execPath, ["-e", RELAY, dir, ...ports.map(String)]);
  await relay.start();
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const close = async (): Promise<void> => {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    await relay.close();
  };
  try {
    await relay.waitForOutput(/ready/);
    for (const port of ports) {
      const server = createServer((c) => {
        const up = createConnection(join(dir, `fwd-${port}.sock`));
        for (const s of [c, up]) {
          sockets.add(s);
          s.on("close", () => sockets.delete(s));
        }
        c.pipe(up).pipe(c);
        c.on("error", () => up.destroy());
        up.on("error", () => c.destroy());
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, "127.0.0.1", resolve);
      });
      servers.push(server);
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { close };
}
