// The interception CA pushed into running agents (clawkerd's FirewallTrustService over the
// control plane's ready Session channel, mTLS, pinned both ways). Firewall.rotateCa pushes the
// new CA with the old one before the proxy presents certificates of the new one, and the new one
// alone after; each agent whose link becomes ready gets the current bundle (clawkerd changes
// nothing when it already holds it), so one that was down or unreachable at a rotation catches
// up. A push that fails is logged and the rotation goes on: that agent then fails verification of
// intercepted names (closed) until its next ready link, never trusts more. See README.md.
import * as grpc from "@grpc/grpc-js";
import { trust } from "@clawker/proto";
import type { AgentChannel } from "../agents/dialer.js";
import type { Logger } from "pino";

/** How long one agent may take to install a bundle (update-ca-certificates runs there). */
export const DEFAULT_CA_PUSH_TIMEOUT_MS = 30_000;

/** What the push needs from the daemon. */
export interface CaPushOptions {
  /** The containers of registered agents. */
  readonly agents: () => readonly { readonly containerId: string }[];
  /** The ready Session channel of a container (the dialer's readyChannel). */
  readonly channel: (containerId: string) => AgentChannel | undefined;
  /** The bundle agents should hold now (the firewall's trustBundle); undefined: no CA yet. */
  readonly bundle: () => Promise<string | undefined>;
  readonly log: Logger;
  readonly timeoutMs?: number;
}

/** The outcome of pushing one bundle to every agent with a ready link. */
export interface CaPushResult {
  /** Agents that answered: they hold the bundle now, or were made without a CA and hold none. */
  readonly installed: number;
  /** Agents that refused it or could not be asked in time. */
  readonly failed: number;
  /** Registered agents without a ready link (they get it when their link is ready). */
  readonly unreachable: number;
}

/** Pushes the interception CA bundle to agents. */
export class CaPush {
  readonly #o: CaPushOptions;
  readonly #log: Logger;
  readonly #timeoutMs: number;

  constructor(options: CaPushOptions) {
    this.#o = options;
    this.#log = options.log.child({ component: "ca-push" });
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_CA_PUSH_TIMEOUT_MS;
  }

  /** Pushes `bundle` to every registered agent with a ready link, in parallel; never throws. */
  async pushAll(bundle: string): Promise<CaPushResult> {
    let unreachable = 0;
    const pushes: Promise<boolean>[] = [];
    for (const { containerId } of this.#o.agents()) {
      const channel = this.#o.channel(containerId);
      if (channel === undefined) unreachable++;
      else pushes.push(this.#push(containerId, channel, bundle));
    }
    const results = await Promise.all(pushes);
    const installed = results.filter(Boolean).length;
    const result = { installed, failed: results.length - installed, unreachable };
    this.#log.info({ event: "ca_pushed", ...result }, "interception CA pushed to agents");
    return result;
  }

  /** A container's link became ready: give it the current bundle. Never throws. */
  onLinkReady(containerId: string): void {
    void (async () => {
      const bundle = await this.#o.bundle();
      const channel = this.#o.channel(containerId);
      if (bundle === undefined || channel === undefined) return;
      await this.#push(containerId, channel, bundle);
    })().catch((err: unknown) =>
      this.#log.warn({ err, containerId, event: "ca_push_failed" }, "interception CA not pushed"),
    );
  }

  #push(containerId: string, channel: AgentChannel, bundle: string): Promise<boolean> {
    // The target and credentials are unused with channelOverride; the channel carries both.
    const client = new trust.FirewallTrustServiceClient("unused:0", grpc.credentials.createInsecure(), {
      channelOverride: channel,
    });
    return new Promise<boolean>((resolve) => {
      client.installFirewallCa(
        { caBundlePem: bundle },
        new grpc.Metadata(),
        { deadline: Date.now() + this.#timeoutMs },
        (err, res) => {
          if (err !== null) {
            // A clawkerd from before this service answers UNIMPLEMENTED: it keeps its copy.
            this.#log.warn(
              { containerId, code: err.code, err: err.details, event: "ca_push_failed" },
              "interception CA not pushed",
            );
            resolve(false);
            return;
          }
          if (res.absent) {
            this.#log.info({ containerId, event: "ca_not_held" }, "agent made without the interception CA");
          } else if (!res.changed) {
            // One line per ready link at most: which CA each agent holds is worth knowing.
            this.#log.info(
              { containerId, fingerprints: res.fingerprints, event: "ca_held" },
              "agent holds the interception CA",
            );
          } else {
            this.#log.info(
              {
                containerId,
                fingerprints: res.fingerprints,
                systemStore: res.systemStore,
                event: "ca_installed",
              },
              "interception CA installed in agent",
            );
          }
          resolve(true);
        },
      );
    });
  }
}
