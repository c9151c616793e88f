// FAKE Kratos, for tests only: `tsx test/fakes/fake-kratos.ts serve --config kratos.yaml` binds
// the configured public and admin listeners with the configured TLS files and answers
// `/health/alive` and `/health/ready`. Nothing else of Kratos is used by clawker.
import { at, readConfigFromArgv, serveFake, tlsOf } from "./fake-ory-server.js";

const config = readConfigFromArgv("kratos", ["serve"]);
const listener = (side: "public" | "admin", fallback: number) => ({
  host: (at(config, `serve.${side}.host`) as string | undefined) ?? "127.0.0.1",
  port: (at(config, `serve.${side}.port`) as number | undefined) ?? fallback,
  ...tlsOf(config, `serve.${side}.tls`),
});
await serveFake("kratos", [listener("public", 4433), listener("admin", 4434)]);
