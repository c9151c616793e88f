// RegisterRequired: exchange the single-use client assertion for a token (RFC 7523
// private_key_jwt, client_credentials, scopes agent:self:register and agent:self:request) at the
// token endpoint, keep the token for `clawkerd request-egress` (agent-token.ts), then call
// AgentService.Register over mTLS with the agent leaf and the bearer token. The assertion
// is sent at most once in the container's life: the attempt is recorded in the state file
// before it leaves, and every later RegisterRequired replays the remembered outcome.
import { request } from "node:https";
import { isIP } from "node:net";
import { performance } from "node:perf_hooks";
import tls, { checkServerIdentity, type PeerCertificate } from "node:tls";
import { credentials, Metadata, type ChannelCredentials, type ServiceError } from "@grpc/grpc-js";
import { agent, CONTROLPLANE_CN } from "@clawker/proto";
import type { Bootstrap } from "./bootstrap.js";
import type { Logger } from "./log.js";
import { saveAgentToken } from "./agent-token.js";
import type { StateStore } from "./state-store.js";

/** The scope Register needs. */
export const REGISTER_SCOPE = "agent:self:register";
/** The scope AgentEgressService.RequestEgress needs (issue 11). */
export const REQUEST_SCOPE = "agent:self:request";
/**
 * The scopes the one token is requested with: the assertion is single-use, so the token that
 * registers is also the one `clawkerd request-egress` asks with, for as long as it lives.
 */
export const AGENT_TOKEN_SCOPE = `${REGISTER_SCOPE} ${REQUEST_SCOPE}`;
/** RFC 7523 §2.2 client assertion type. */
export const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/** What RegisterDone carries. */
export interface RegisterOutcome {
  readonly ok: boolean;
  readonly error: string;
}

/** Registrar construction options. */
export interface RegistrarOptions {
  readonly bootstrap: Bootstrap;
  readonly state: StateStore;
  readonly log: Logger;
  /** Budget for each of the two network steps; default 15 s. */
  readonly timeoutMs?: number;
}

/** Runs the registration at most once and remembers its outcome. */
export class Registrar {
  readonly #o: RegistrarOptions;
  readonly #timeoutMs: number;
  #inflight: Promise<RegisterOutcome> | undefined;

  constructor(options: RegistrarOptions) {
    this.#o = options;
    this.#timeoutMs = options.timeoutMs ?? 15_000;
  }

  /** Registers (first call) or replays the outcome (every later call). Never rejects. */
  register(): Promise<RegisterOutcome> {
    const rec = this.#o.state.registration;
    if (rec?.phase === "done") {
      this.#o.log.info({ ok: rec.ok, event: "register_replayed" }, "registration outcome replayed");
      return Promise.resolve({ ok: rec.ok, error: rec.error });
    }
    if (this.#inflight !== undefined) return this.#inflight;
    if (rec?.phase === "started") {
      // An earlier clawkerd sent (or was about to send) the assertion and died before the
      // outcome was written: it must not be sent again.
      const outcome = {
        ok: false,
        error: "the single-use assertion was already used by an earlier run whose outcome is unknown",
      };
      this.#inflight = this.#remember(outcome);
      return this.#inflight;
    }
    this.#inflight = this.#run();
    return this.#inflight;
  }

  async #run(): Promise<RegisterOutcome> {
    const log = this.#o.log;
    // ms since RegisterRequired reached the registrar, logged with the outcome (where it waited).
    const t0 = performance.now();
    const timeline: Record<string, number> = {};
    const mark = (step: string): void => {
      timeline[step] = Math.round((performance.now() - t0) * 10) / 10;
    };
    try {
      await this.#o.state.setRegistration({ phase: "started", at: new Date().toISOString() });
    } catch (err) {
      log.error(
        { err, event: "register_state_failed" },
        "cannot record the registration; assertion not sent",
      );
      // Nothing was sent: a later RegisterRequired may try again.
      this.#inflight = undefined;
      return { ok: false, error: "cannot record the registration attempt in the state dir" };
    }
    mark("stateWritten");
    let outcome: RegisterOutcome;
    // The connection to the agent listener (TCP + TLS) is made while the token is being fetched:
    // the two were one round of handshakes after the other.
    const client = this.#agentClient();
    client.getChannel().getConnectivityState(true);
    try {
      const token = await this.#exchange();
      mark("tokenReceived");
      // Keeping the token (a file write) does not hold Register up; #keep never rejects.
      await Promise.all([
        this.#keep(token).then(() => mark("tokenKept")),
        this.#callRegister(client, token.accessToken).then(() => mark("registerAnswered")),
      ]);
      outcome = { ok: true, error: "" };
      log.info(
        { event: "registered", t0UnixMs: Math.round(performance.timeOrigin + t0), timeline },
        "registered with the control plane",
      );
    } catch (err) {
      outcome = { ok: false, error: err instanceof Error ? err.message : String(err) };
      log.warn({ err, event: "register_failed" }, "registration failed");
    } finally {
      client.close();
    }
    return this.#remember(outcome);
  }

  async #remember(outcome: RegisterOutcome): Promise<RegisterOutcome> {
    try {
      await this.#o.state.setRegistration({ phase: "done", ...outcome, at: new Date().toISOString() });
    } catch (err) {
      this.#o.log.error({ err, event: "register_state_failed" }, "cannot record the registration outcome");
    }
    return outcome;
  }

  /** Keeps the token for request-egress; a failure only costs that command, never Register. */
  async #keep(token: { accessToken: string; expiresIn: number }): Promise<void> {
    try {
      await saveAgentToken(this.#o.state.dir, {
        accessToken: token.accessToken,
        expiresAtUnixMs: Date.now() + token.expiresIn * 1000,
      });
    } catch (err) {
      this.#o.log.warn(
        { err, event: "agent_token_not_kept" },
        "token not kept; request-egress will not work",
      );
    }
  }

  // POST the assertion; answers the access token and its lifetime. Error messages carry the OAuth
  // error code only, never the assertion or a token.
  async #exchange(): Promise<{ accessToken: string; expiresIn: number }> {
    const { bootstrap } = this.#o;
    const { serverName, tokenEndpoint } = bootstrap.config;
    const body = new URLSearchParams({
      grant_type: "client_credentials",
      scope: AGENT_TOKEN_SCOPE,
      client_assertion_type: CLIENT_ASSERTION_TYPE,
      client_assertion: bootstrap.assertion,
    }).toString();
    this.#o.log.info({ tokenEndpoint, event: "token_request" }, "exchanging the assertion for a token");
    const res = await postForm(tokenEndpoint, body, {
      ca: bootstrap.caPem,
      ...(isIP(serverName) === 0 ? { servername: serverName } : {}),
      checkServerIdentity: (_host: string, cert: PeerCertificate) => checkControlPlane(serverName, cert),
      timeoutMs: this.#timeoutMs,
    });
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(res.text) as Record<string, unknown>;
    } catch {
      // not JSON: reported by status below
    }
    if (res.status !== 200) {
      const code = typeof json["error"] === "string" ? json["error"] : "no error code";
      throw new Error(`token endpoint refused the assertion: HTTP ${res.status} (${code})`);
    }
    const token = json["access_token"];
    if (typeof token !== "string" || token === "")
      throw new Error("token endpoint answered without an access_token");
    const expiresIn = json["expires_in"];
    return {
      accessToken: token,
      expiresIn: typeof expiresIn === "number" && expiresIn > 0 ? expiresIn : 3600,
    };
  }

  /** A client of the control plane's AgentService with the agent leaf (checked: CN and name). */
  #agentClient(): agent.AgentServiceClient {
    const { bootstrap } = this.#o;
    const c = agentListenerChannel(bootstrap);
    return new agent.AgentServiceClient(c.address, c.credentials, c.options);
  }

  async #callRegister(client: agent.AgentServiceClient, token: string): Promise<void> {
    const { agentName, project } = this.#o.bootstrap.config;
    const md = new Metadata();
    md.set("authorization", `Bearer ${token}`);
    await new Promise<void>((resolve, reject) => {
      client.register(
        { agentName, project },
        md,
        { deadline: Date.now() + this.#timeoutMs },
        (err: ServiceError | null) => {
          if (err === null) resolve();
          else reject(new Error(`Register refused: ${err.code} ${err.details}`));
        },
      );
    });
  }
}

/**
 * The agent listener as a gRPC client dials it: its address, mTLS with the agent leaf (TLS 1.3,
 * the control plane's leaf checked: CN and name) and the channel options naming the server.
 */
export function agentListenerChannel(bootstrap: Bootstrap): {
  address: string;
  credentials: ChannelCredentials;
  options: Record<string, string>;
} {
  const { serverName, controlPlaneAddr } = bootstrap.config;
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
  return {
    address: controlPlaneAddr,
    credentials: credentials.createSsl(
      Buffer.from(bootstrap.caPem),
      Buffer.from(bootstrap.keyPem),
      Buffer.from(bootstrap.certPem),
      { checkServerIdentity: (_host, cert) => checkControlPlane(serverName, cert) },
    ),
    options: {
      "grpc.ssl_target_name_override": isIP(serverName) === 0 ? serverName : CONTROLPLANE_CN,
      "grpc.default_authority": serverName,
    },
  };
}

/** The control plane's leaf must be valid for `serverName` and carry CN clawker-controlplane. */
export function checkControlPlane(serverName: string, cert: PeerCertificate): Error | undefined {
  const hostError = checkServerIdentity(serverName, cert);
  if (hostError !== undefined) return hostError;
  if (cert.subject?.CN !== CONTROLPLANE_CN) {
    return new Error(`server certificate CN is not ${CONTROLPLANE_CN}`);
  }
  return undefined;
}

/** Largest token endpoint answer read (a token response is a few hundred bytes). */
const MAX_TOKEN_RESPONSE_BYTES = 64 * 1024;

/** TLS settings of the token request: the bootstrap CA only, TLS 1.3, the control plane's leaf. */
interface TokenRequestTls {
  readonly ca: string;
  readonly servername?: string;
  readonly checkServerIdentity: (host: string, cert: PeerCertificate) => Error | undefined;
  readonly timeoutMs: number;
}

/**
 * POSTs a form over HTTPS on a connection of its own (closed after) and answers the status and
 * the body. node:https rather than undici: this one request is all clawkerd sends over HTTP, and
 * undici was half of its bundle, loaded at every start before it could listen.
 */
function postForm(url: string, body: string, o: TokenRequestTls): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: "POST",
        agent: false,
        ca: o.ca,
        minVersion: "TLSv1.3",
        ...(o.servername === undefined ? {} : { servername: o.servername }),
        checkServerIdentity: o.checkServerIdentity,
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          accept: "application/json",
          "content-length": Buffer.byteLength(body),
        },
        signal: AbortSignal.timeout(o.timeoutMs),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_TOKEN_RESPONSE_BYTES) {
            req.destroy(new Error("token endpoint answer too large"));
            return;
          }
          chunks.push(chunk);
        });
        res.once("end", () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }),
        );
        res.once("error", reject);
      },
    );
    req.once("error", reject);
    req.end(body);
  });
}
