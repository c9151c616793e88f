// FAKE Oathkeeper, for tests only: `tsx test/fakes/fake-oathkeeper.ts serve --config
// oathkeeper.yaml` binds the configured api and proxy listeners with the configured TLS files and
// answers `/health/alive` and `/health/ready`. The proxy forwards nothing. Like the real one
// (cmd/server: ListenAndServe on host:port) it listens on TCP only: a `unix:` host fails.
import { addressOf, isUnixHost, readConfigFromArgv, serveFake, tlsOf } from "./fake-ory-server.js";

const config = readConfigFromArgv("oathkeeper", ["serve"]);
const listener = (side: "api" | "proxy", fallback: number) => {
  const address = addressOf(config, `serve.${side}`, fallback);
  if (isUnixHost(address.host)) {
    console.error(`FAKE oathkeeper: listen tcp: address ${address.host}:${address.port}: too many colons`);
    process.exit(1);
  }
  return { ...address, tls: tlsOf(config, `serve.${side}.tls`) };
};
await serveFake("oathkeeper", [listener("api", 4456), listener("proxy", 4457)]);
