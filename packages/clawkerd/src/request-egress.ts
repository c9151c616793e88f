// `clawkerd request-egress NAME [--port N] [--proto P] --reason TEXT`, run inside the agent
// container: asks the control plane (AgentEgressService.RequestEgress, over mTLS with the agent's
// leaf and the token kept at registration) for a destination, and prints the pending request's id.
// The control plane takes the agent from the certificate, not from anything sent here, and an
// operator decides (`clawker firewall approve`); asking grants nothing.
import { parseArgs } from "node:util";
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { egress } from "@clawker/proto";
import { loadAgentToken } from "./agent-token.js";
import { loadBootstrap } from "./bootstrap.js";
import { ClawkerdError } from "./errors.js";
import { agentListenerChannel } from "./registrar.js";

/** Where the command reads the agent's material. */
export interface RequestEgressPaths {
  readonly bootstrapDir: string;
  readonly stateDir: string;
}

/** Exit codes: 0 asked (or already allowed), 1 refused or failed, 2 usage or bootstrap unusable. */
export const REQUEST_EGRESS_EXIT = { ok: 0, failed: 1, usage: 2 } as const;

const USAGE = "usage: clawkerd request-egress NAME [--port N] [--proto P] --reason TEXT";
const TIMEOUT_MS = 15_000;

/** Runs the command; writes the outcome to `out` / `err` and resolves with the exit code. */
export async function requestEgressCommand(
  args: readonly string[],
  paths: RequestEgressPaths,
  out: NodeJS.WritableStream,
  err: NodeJS.WritableStream,
): Promise<number> {
  const fail = (code: number, message: string): number => {
    err.write(`clawkerd request-egress: ${message}\n`);
    return code;
  };
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      allowPositionals: true,
      strict: true,
      options: { port: { type: "string" }, proto: { type: "string" }, reason: { type: "string" } },
    });
  } catch (e) {
    return fail(REQUEST_EGRESS_EXIT.usage, `${(e as Error).message}\n${USAGE}`);
  }
  const [dst, ...extra] = parsed.positionals;
  if (dst === undefined || extra.length > 0) return fail(REQUEST_EGRESS_EXIT.usage, USAGE);
  const reason = parsed.values.reason;
  if (reason === undefined || reason.trim() === "") {
    return fail(REQUEST_EGRESS_EXIT.usage, `--reason is required (say why the agent needs it)\n${USAGE}`);
  }
  let port = 0;
  if (parsed.values.port !== undefined) {
    if (
      !/^\d{1,5}$/.test(parsed.values.port) ||
      Number(parsed.values.port) < 1 ||
      Number(parsed.values.port) > 65535
    ) {
      return fail(
        REQUEST_EGRESS_EXIT.usage,
        `--port must be 1-65535, got ${JSON.stringify(parsed.values.port)}`,
      );
    }
    port = Number(parsed.values.port);
  }
  let bootstrap;
  let token;
  try {
    bootstrap = await loadBootstrap(paths.bootstrapDir);
    token = await loadAgentToken(paths.stateDir);
  } catch (e) {
    if (!(e instanceof ClawkerdError)) throw e;
    return fail(e.reason === "not_found" ? REQUEST_EGRESS_EXIT.failed : REQUEST_EGRESS_EXIT.usage, e.message);
  }
  if (token.expiresAtUnixMs <= Date.now()) {
    return fail(
      REQUEST_EGRESS_EXIT.failed,
      `the agent's token expired at ${new Date(token.expiresAtUnixMs).toISOString()} (it is bought once, at registration); ask the operator to add the rule: clawker firewall add ${dst}`,
    );
  }
  const c = agentListenerChannel(bootstrap);
  const client = new egress.AgentEgressServiceClient(c.address, c.credentials, c.options);
  const md = new Metadata();
  md.set("authorization", `Bearer ${token.accessToken}`);
  try {
    const answer = await new Promise<egress.RequestEgressResponse>((resolve, reject) => {
      client.requestEgress(
        { dst, port, proto: parsed.values.proto ?? "", reason },
        md,
        { deadline: Date.now() + TIMEOUT_MS },
        (e: ServiceError | null, res?: egress.RequestEgressResponse) =>
          e === null ? resolve(res!) : reject(e),
      );
    });
    if (answer.alreadyAllowed) out.write(`already allowed: ${dst}\n`);
    else out.write(`${answer.requestId}\n`);
    return REQUEST_EGRESS_EXIT.ok;
  } catch (e) {
    const se = e as ServiceError;
    const code = se.code === status.INVALID_ARGUMENT ? REQUEST_EGRESS_EXIT.usage : REQUEST_EGRESS_EXIT.failed;
    return fail(code, `refused: ${se.details || se.message}`);
  } finally {
    client.close();
  }
}
