// FAKE Oathkeeper, for tests only: `tsx test/fakes/fake-oathkeeper.ts serve --config
// oathkeeper.yaml` binds the configured api and proxy listeners with the configured TLS files and
// answers `/health/alive` and `/health/ready`. The proxy forwards nothing.
import { at, readConfigFromArgv, serveFake, tlsOf } from "./fake-ory-server.js";

const config = readConfigFromArgv("oathkeeper", ["serve"]);
const listener = (side: "api" | "proxy", fallback: number) => ({
  host: (at(config, `serve.${side}.host`) as string | undefined) ?? "127.0.0.1",
  port: (at(config, `serve.${side}.port`) as number | undefined) ?? fallback,
  ...tlsOf(config, `serve.${side}.tls`),
});
await serveFake("oathkeeper", [listener("api", 4456), listener("proxy", 4457)]);
