// The typed AdminService client: promise methods with a default deadline, async iterators for the
// server streams (WatchSOS, ExecAgent), typed errors (AdminError, TokenError) instead of raw
// grpc-js status objects.
import { Metadata, type CallOptions, type ClientReadableStream, type MethodDefinition } from "@grpc/grpc-js";
import {
  admin,
  deserializeClawkerdResponse,
  PUBLIC_SCOPE,
  requiredScope,
  type clawkerd,
} from "@clawker/proto";
import { dial, dialSocket, type ClientTls } from "./dial.js";
import { AdminError, isTokenRefusal, toAdminError } from "./errors.js";
import { scavengePacer } from "./scavenge-pacer.js";
import { TokenSource } from "./token-source.js";
import type { TrustSet } from "./trust/bootstrap.js";
import type { TokenCredentials } from "./trust/token-credentials.js";

/** Default deadline of a unary call, token fetch excluded. */
export const DEFAULT_DEADLINE_MS = 10_000;

type Service = typeof admin.AdminServiceService;

/** The scavenge pacer of this process's ExecAgent reads (scavenge-pacer.ts), shared by its clients. */
const processPacer = scavengePacer();

/**
 * AdminService's method table with ExecAgent's output read without a copy: an OutputChunk's data
 * is a view of the message buffer grpc-js allocated (the generated decoder copies every chunk:
 * one more buffer per message to collect, where GC was half the reader's CPU). Unknown
 * fields are dropped as before.
 */
const METHODS: Service = {
  ...admin.AdminServiceService,
  execAgent: { ...admin.AdminServiceService.execAgent, responseDeserialize: deserializeClawkerdResponse },
};
/** The names of AdminService's server-streaming methods (`watchSos`, `execAgent`). */
export type StreamMethod = {
  [K in keyof Service]: Service[K]["responseStream"] extends true ? K : never;
}[keyof Service];
/** The names of AdminService's unary methods (`listAgents`, `getSystemTime`, ...). */
export type UnaryMethod = {
  [K in keyof Service]: Service[K]["responseStream"] extends false ? K : never;
}[keyof Service];
/** The request message type of a method. */
export type RequestOf<K extends keyof Service> = Parameters<Service[K]["requestSerialize"]>[0];
/** The response message type of a method. */
export type ResponseOf<K extends keyof Service> = ReturnType<Service[K]["responseDeserialize"]>;

/** Per-call options. */
export interface AdminCallOptions {
  /** Deadline of this call in ms (default: the client's, 10 s for unary calls, none for streams). */
  readonly deadlineMs?: number;
  /** Aborting cancels the call; it then fails with reason `cancelled`. */
  readonly signal?: AbortSignal;
}

/** Options of AdminClient. */
export interface AdminClientOptions {
  /** A generated client from dial() WITHOUT `tokens` (this class attaches the token itself). */
  readonly client: admin.AdminServiceClient;
  /**
   * Where tokens come from: fetched before each token-checked call and attached as the call's
   * `authorization` metadata, so a token failure surfaces as TokenError before any RPC is sent.
   */
  readonly tokens?: TokenSource;
  readonly deadlineMs?: number;
  /** Told the size of each ExecAgent OutputChunk read; default this process's scavenge pacer. */
  readonly paceOutput?: (bytes: number) => void;
}

/** The result of a clock comparison through GetSystemTime. */
export interface ClockSkew {
  /** Server clock minus local clock at the call's midpoint, in ms (positive: server ahead). */
  readonly skewMs: number;
  /** Round trip of the call in ms; the skew is only known to within half of it. */
  readonly rttMs: number;
  /** The server's clock in ms since the epoch. */
  readonly serverTimeMs: number;
}

/**
 * AdminService as promises. Each method throws AdminError (mapped from the gRPC status) or
 * TokenError (no token could be had). `close()` closes the channel and the token source.
 */
export class AdminClient {
  readonly #client: admin.AdminServiceClient;
  readonly #tokens: TokenSource | undefined;
  readonly #deadlineMs: number;
  readonly #paceOutput: (bytes: number) => void;
  #closed = false;

  constructor(options: AdminClientOptions) {
    this.#client = options.client;
    this.#tokens = options.tokens;
    this.#deadlineMs = options.deadlineMs ?? DEFAULT_DEADLINE_MS;
    this.#paceOutput = options.paceOutput ?? processPacer;
  }

  /** Calls any unary method by name. */
  call<K extends UnaryMethod>(
    method: K,
    request: RequestOf<K>,
    options: AdminCallOptions = {},
  ): Promise<ResponseOf<K>> {
    return this.callMethod(
      admin.AdminServiceService[method] as unknown as MethodDefinition<RequestOf<K>, ResponseOf<K>>,
      request,
      options,
    );
  }

  /**
   * Calls a unary method of another service of ours served on the same listener (e.g.
   * `jobs.JobServiceService.startJob`), on the same channel, with the same token and errors.
   */
  async callMethod<Req, Res>(
    def: MethodDefinition<Req, Res>,
    request: Req,
    options: AdminCallOptions = {},
  ): Promise<Res> {
    const path = def.path;
    const metadata = await this.#metadataFor(path, options.signal);
    options.signal?.throwIfAborted();
    const callOptions: CallOptions = { deadline: Date.now() + (options.deadlineMs ?? this.#deadlineMs) };
    return new Promise<Res>((resolve, reject) => {
      const call = this.#client.makeUnaryRequest(
        path,
        def.requestSerialize,
        def.responseDeserialize,
        request,
        metadata,
        callOptions,
        (err, response) => {
          options.signal?.removeEventListener("abort", onAbort);
          if (err !== null || response === undefined) {
            const mapped = toAdminError(err ?? new Error("empty response"), path);
            if (isTokenRefusal(mapped)) this.#tokens?.invalidate();
            reject(mapped);
          } else {
            resolve(response);
          }
        },
      );
      const onAbort = (): void => call.cancel();
      options.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Calls any server-streaming method by name and yields its messages as they arrive (read on
   * demand, so a slow consumer slows the server). No deadline unless `deadlineMs` is given;
   * leaving the loop early or aborting `signal` cancels the call.
   */
  stream<K extends StreamMethod>(
    method: K,
    request: RequestOf<K>,
    options: AdminCallOptions = {},
  ): AsyncGenerator<ResponseOf<K>, void, undefined> {
    return this.streamMethod(
      METHODS[method] as unknown as MethodDefinition<RequestOf<K>, ResponseOf<K>>,
      request,
      options,
    );
  }

  /** Like stream(), for a server-streaming method of another service of ours (see callMethod). */
  async *streamMethod<Req, Res>(
    def: MethodDefinition<Req, Res>,
    request: Req,
    options: AdminCallOptions = {},
  ): AsyncGenerator<Res, void, undefined> {
    const metadata = await this.#metadataFor(def.path, options.signal);
    options.signal?.throwIfAborted();
    const callOptions: CallOptions =
      options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
    const stream: ClientReadableStream<Res> = this.#client.makeServerStreamRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      request,
      metadata,
      callOptions,
    );
    const onAbort = (): void => stream.cancel();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const message of stream as AsyncIterable<Res>) yield message;
    } catch (err) {
      const mapped = toAdminError(err, def.path);
      if (isTokenRefusal(mapped)) this.#tokens?.invalidate();
      throw mapped;
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
      stream.cancel();
    }
  }

  /** Streams pending start-up failures; ends cleanly when there is nothing (more) to report. */
  watchSos(options: AdminCallOptions = {}): AsyncGenerator<admin.SOS, void, undefined> {
    return this.stream("watchSos", {}, options);
  }

  /**
   * Runs one command in one agent (ExecAgent, our extension beyond the Go contract) and yields
   * its clawkerd Responses: Started, output chunks, stage exits, then exactly one Done or Error.
   * Leaving the loop early or aborting `signal` cancels the call, which kills the command. Each
   * output chunk's size goes to the client's `paceOutput` as it is read.
   */
  async *execAgent(
    request: admin.ExecAgentRequest,
    options: AdminCallOptions = {},
  ): AsyncGenerator<clawkerd.Response, void, undefined> {
    const pace = this.#paceOutput;
    for await (const r of this.stream("execAgent", request, options)) {
      if (r.payload?.$case === "output") pace(r.payload.value.data.length);
      yield r;
    }
  }

  /** The control plane's clock (public: no token is fetched). */
  getSystemTime(options?: AdminCallOptions): Promise<admin.GetSystemTimeResult> {
    return this.call("getSystemTime", {}, options);
  }

  /** Compares the local clock with the control plane's. */
  async clockSkew(options?: AdminCallOptions): Promise<ClockSkew> {
    const t0 = Date.now();
    const { unixNanos } = await this.getSystemTime(options);
    const t1 = Date.now();
    const serverTimeMs = Number(unixNanos / 1_000_000n) + Number(unixNanos % 1_000_000n) / 1e6;
    return { skewMs: serverTimeMs - (t0 + t1) / 2, rttMs: t1 - t0, serverTimeMs };
  }

  /** Every registered agent. */
  async listAgents(options?: AdminCallOptions): Promise<admin.Agent[]> {
    return (await this.call("listAgents", {}, options)).agents;
  }

  /** Brings the firewall stack up. */
  firewallInit(options?: AdminCallOptions): Promise<admin.FirewallInitResult> {
    return this.call("firewallInit", {}, options);
  }

  /** Tears the firewall stack down. */
  firewallRemove(options?: AdminCallOptions): Promise<admin.FirewallRemoveResult> {
    return this.call("firewallRemove", {}, options);
  }

  /** Puts one container under egress enforcement. */
  firewallEnable(containerId: string, options?: AdminCallOptions): Promise<admin.FirewallEnableResult> {
    return this.call("firewallEnable", { containerId }, options);
  }

  /** Takes one container out of egress enforcement. */
  firewallDisable(containerId: string, options?: AdminCallOptions): Promise<admin.FirewallDisableResult> {
    return this.call("firewallDisable", { containerId }, options);
  }

  /** Unrestricted egress for one container for `timeoutSeconds` (at most 3600). */
  firewallBypass(
    containerId: string,
    timeoutSeconds: number,
    options?: AdminCallOptions,
  ): Promise<admin.FirewallBypassResult> {
    return this.call("firewallBypass", { containerId, timeoutSeconds }, options);
  }

  /** Adds or merges rules, all or nothing; statuses are index-aligned with `rules`. */
  firewallAddRules(
    rules: admin.EgressRule[],
    options?: AdminCallOptions,
  ): Promise<admin.FirewallAddRulesResult> {
    return this.call("firewallAddRules", { rules }, options);
  }

  /** Removes one rule, one path of a rule, or (`all`) every rule. */
  firewallRemoveRule(
    request: admin.FirewallRemoveRuleRequest,
    options?: AdminCallOptions,
  ): Promise<admin.FirewallRemoveRuleResult> {
    return this.call("firewallRemoveRule", request, options);
  }

  /** The stored rules. */
  async firewallListRules(options?: AdminCallOptions): Promise<admin.EgressRule[]> {
    return (await this.call("firewallListRules", {}, options)).rules;
  }

  /** Re-applies the stored rules. */
  firewallReload(options?: AdminCallOptions): Promise<admin.FirewallReloadResult> {
    return this.call("firewallReload", {}, options);
  }

  /** Whether the firewall stack is up and healthy. */
  firewallStatus(options?: AdminCallOptions): Promise<admin.FirewallStatusResult> {
    return this.call("firewallStatus", {}, options);
  }

  /** Replaces the interception CA. */
  firewallRotateCa(options?: AdminCallOptions): Promise<admin.FirewallRotateCAResult> {
    return this.call("firewallRotateCa", {}, options);
  }

  /** Asks the server to rebuild its routes from its own rule store. */
  firewallSyncRoutes(
    routes: admin.Route[] = [],
    options?: AdminCallOptions,
  ): Promise<admin.FirewallSyncRoutesResult> {
    return this.call("firewallSyncRoutes", { routes }, options);
  }

  /** Resolves a name from the control plane's network view. */
  async firewallResolveHostname(hostname: string, options?: AdminCallOptions): Promise<string[]> {
    return (await this.call("firewallResolveHostname", { hostname }, options)).addresses;
  }

  /** Closes the channel and the token source; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#client.close();
    await this.#tokens?.close();
  }

  /** The call's metadata: the bearer token unless the method is public or there is no source. */
  async #metadataFor(path: string, signal: AbortSignal | undefined): Promise<Metadata> {
    if (this.#closed) throw new AdminError("cancelled", 1, path, "the admin client is closed");
    const metadata = new Metadata();
    if (requiredScope(path) === PUBLIC_SCOPE || this.#tokens === undefined) return metadata;
    const token = await this.#tokens.token(signal === undefined ? {} : { signal });
    metadata.set("authorization", `Bearer ${token}`);
    return metadata;
  }
}

/** Options of openAdminClient. */
export interface OpenAdminClientOptions {
  /** The stored trust set (loadTrustSet): CA, CLI leaf, CLI signing key. */
  readonly trust: TrustSet;
  /** Admin listener `host:port`; default 127.0.0.1:7443. */
  readonly target?: string;
  readonly serverName?: string;
  /** Default https://127.0.0.1:4444/oauth2/token. */
  readonly tokenEndpoint?: string;
  readonly deadlineMs?: number;
  /** Clock for client assertions (ms since the epoch); default Date.now. */
  readonly now?: () => number;
}

/** The mTLS material of the CLI from a trust set. */
export function cliTls(trust: TrustSet): ClientTls {
  return { ca: trust.ca.certPem, cert: trust.cli.certPem, key: trust.cli.keyPem };
}

/** Dials the admin listener as the CLI (`clawker-cli`, scope `admin`) and wraps it. */
export function openAdminClient(options: OpenAdminClientOptions): AdminClient {
  const tokens = new TokenSource({
    ca: options.trust.ca.certPem,
    signingKey: options.trust.signingKey.privateJwk,
    ...(options.tokenEndpoint === undefined ? {} : { tokenEndpoint: options.tokenEndpoint }),
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  const client = dial({
    tls: cliTls(options.trust),
    ...(options.target === undefined ? {} : { target: options.target }),
    ...(options.serverName === undefined ? {} : { serverName: options.serverName }),
  });
  return new AdminClient({
    client,
    tokens,
    ...(options.deadlineMs === undefined ? {} : { deadlineMs: options.deadlineMs }),
  });
}

/** Options of openAdminSocketClient. */
export interface OpenAdminSocketClientOptions {
  /** The admin Unix socket's absolute path. */
  readonly socketPath: string;
  /** The CA and the CLI signing key (loadTokenCredentials, or a loaded TrustSet's). */
  readonly credentials: TokenCredentials;
  /** Default https://127.0.0.1:4444/oauth2/token. */
  readonly tokenEndpoint?: string;
  readonly deadlineMs?: number;
  /** Clock for client assertions (ms since the epoch); default Date.now. */
  readonly now?: () => number;
}

/** Dials the admin Unix socket as the CLI (`clawker-cli`, scope `admin`) and wraps it. */
export function openAdminSocketClient(options: OpenAdminSocketClientOptions): AdminClient {
  const tokens = new TokenSource({
    ca: options.credentials.ca,
    signingKey: options.credentials.signingKey,
    ...(options.tokenEndpoint === undefined ? {} : { tokenEndpoint: options.tokenEndpoint }),
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  return new AdminClient({
    client: dialSocket(options.socketPath),
    tokens,
    ...(options.deadlineMs === undefined ? {} : { deadlineMs: options.deadlineMs }),
  });
}
