// FAKE Kratos, for tests only: `tsx test/fakes/fake-kratos.ts serve --config kratos.yaml` binds
// the configured public and admin listeners as Kratos does (a `unix:` host is a socket; TLS only
// where a `tls` block gives files, on a socket too) and answers `/health/alive` and
// `/health/ready`. Nothing else of Kratos is used by clawker.
import { addressOf, readConfigFromArgv, serveFake, tlsOf } from "./fake-ory-server.js";

const config = readConfigFromArgv("kratos", ["serve"]);
const listener = (side: "public" | "admin", fallback: number) => ({
  ...addressOf(config, `serve.${side}`, fallback),
  tls: tlsOf(config, `serve.${side}.tls`),
});
await serveFake("kratos", [listener("public", 4433), listener("admin", 4434)]);
