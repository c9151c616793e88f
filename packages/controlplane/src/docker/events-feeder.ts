// The Docker events feeder: turns the engine's event stream into overseer container events, with a
// reconcile on every (re)connect so nothing falls between a listing and the stream (README.md).
import type { Readable } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import { setTimeout as sleep } from "node:timers/promises";
import { type ContainerEvent, LABELS, Topic } from "@clawker/overseer";
import type { Logger } from "../logging.js";
import type { DockerClient } from "./client.js";
import { DockerError, toDockerError } from "./errors.js";
import {
  type DockerEventMessage,
  FOLLOWED_ACTIONS,
  type NetworkEvent,
  containerEventFromMessage,
  containerEventsFromListing,
  isManaged,
  networkActionFromMessage,
  sinceFromLocalTime,
  sinceFromSystemTime,
} from "./event-parse.js";

/** Anything events can be published on (every overseer Topic fits). */
export interface Publisher<T> {
  publish(event: T): boolean;
}

/** Reconnect pacing: the first retry after `initialMs`, doubling up to `maxMs`. */
export interface FeederBackoff {
  /** First retry delay (1 s). */
  readonly initialMs?: number;
  /** Ceiling (30 s). */
  readonly maxMs?: number;
  /** A connection that stayed up this long resets the delay to `initialMs` (5 s). */
  readonly healthyAfterMs?: number;
}

/** Options for an EventsFeeder. */
export interface EventsFeederOptions {
  readonly docker: DockerClient;
  /** Where container events and docker.connected/disconnected/reconciled go (overseer.containers). */
  readonly containers: Publisher<ContainerEvent>;
  readonly log: Logger;
  readonly backoff?: FeederBackoff;
  /** Budget for each info/list/inspect request (10 s); the stream itself has none. */
  readonly requestTimeoutMs?: number;
  /** Clock for event `time` fields and backoff bookkeeping (Date.now). */
  readonly now?: () => number;
}

/** Defaults of the feeder's options. */
export const FEEDER_DEFAULTS = Object.freeze({
  initialMs: 1_000,
  maxMs: 30_000,
  healthyAfterMs: 5_000,
  requestTimeoutMs: 10_000,
  // Only when the daemon's SystemTime is missing: replay a little more rather than miss events.
  localSinceMarginMs: 2_000,
});

/** Why one connection ended, and when it had become healthy (reconciled), if it did. */
interface ConnectionEnd {
  readonly error: DockerError;
  readonly reconciledAt: number | undefined;
}

/**
 * Follows the Docker engine: on every (re)connect it publishes docker.connected, reconciles
 * (synthetic events for every managed container and network, then docker.reconciled), and then
 * streams live events from a `since` taken on the daemon's clock before the listing. Reconnects
 * with backoff; a lost daemon is published as docker.disconnected ("unknown", never "zero").
 */
export class EventsFeeder {
  /** Managed networks: created/connected/disconnected/destroyed and each reconcile's listing. */
  readonly networks = new Topic<NetworkEvent>({ name: "networks" });
  readonly #docker: DockerClient;
  readonly #containers: Publisher<ContainerEvent>;
  readonly #log: Logger;
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #healthyAfterMs: number;
  readonly #requestTimeoutMs: number;
  readonly #now: () => number;
  readonly #stop = new AbortController();
  readonly #managedNetworks = new Map<string, string>();
  #status: "unknown" | "connected" | "disconnected" = "unknown";
  // The last connectivity event published, so a failed reconcile after docker.connected is
  // followed by docker.disconnected even when the previous attempt had failed too.
  #announced: "none" | "docker.connected" | "docker.disconnected" = "none";
  #reconciles = 0;
  #attempts = 0;
  #loop: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: EventsFeederOptions) {
    this.#docker = options.docker;
    this.#containers = options.containers;
    this.#log = options.log;
    this.#initialMs = positive(options.backoff?.initialMs, FEEDER_DEFAULTS.initialMs, "backoff.initialMs");
    this.#maxMs = positive(options.backoff?.maxMs, FEEDER_DEFAULTS.maxMs, "backoff.maxMs");
    this.#healthyAfterMs = positive(
      options.backoff?.healthyAfterMs,
      FEEDER_DEFAULTS.healthyAfterMs,
      "backoff.healthyAfterMs",
    );
    this.#requestTimeoutMs = positive(
      options.requestTimeoutMs,
      FEEDER_DEFAULTS.requestTimeoutMs,
      "requestTimeoutMs",
    );
    this.#now = options.now ?? Date.now;
  }

  /** Connected and reconciled right now. */
  get isConnected(): boolean {
    return this.#status === "connected";
  }

  /** How many reconciles have completed (one per successful (re)connect). */
  get reconciles(): number {
    return this.#reconciles;
  }

  /** How many connections have been attempted (successful or not). */
  get attempts(): number {
    return this.#attempts;
  }

  /** Starts following Docker in the background until `signal` aborts or close(). Call once. */
  start(signal: AbortSignal): void {
    if (this.#loop !== undefined) throw new Error("EventsFeeder.start called twice");
    if (signal.aborted) this.#stop.abort();
    else signal.addEventListener("abort", () => void this.close(), { once: true, signal: this.#stop.signal });
    this.#loop = this.#run();
  }

  /** Stops: ends the stream, waits for the loop, closes the networks topic. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stop.abort();
      await this.#loop;
      await this.networks.close();
    })();
    return this.#closing;
  }

  async #run(): Promise<void> {
    const stop = this.#stop.signal;
    let delay = this.#initialMs;
    let failures = 0;
    while (!stop.aborted) {
      const end = await this.#connectOnce(stop);
      if (stop.aborted) break;
      if (end.reconciledAt !== undefined && this.#now() - end.reconciledAt >= this.#healthyAfterMs) {
        delay = this.#initialMs;
        failures = 0;
      }
      failures++;
      const wasConnected = this.#status === "connected";
      this.#status = "disconnected";
      if (this.#announced !== "docker.disconnected") {
        this.#announced = "docker.disconnected";
        this.#containers.publish({
          type: "docker.disconnected",
          time: this.#now(),
          error: end.error.message,
        });
      }
      this.#log.warn(
        {
          event: wasConnected ? "docker_disconnected" : "docker_connect_failed",
          reason: end.error.reason,
          err: end.error.message,
          retryMs: delay,
          failures,
        },
        "docker events stream lost; reconnecting",
      );
      try {
        await sleep(delay, undefined, { signal: stop });
      } catch {
        break;
      }
      delay = Math.min(delay * 2, this.#maxMs);
    }
  }

  /** One connection: subscribe, reconcile, follow until the stream ends. Never throws. */
  async #connectOnce(stop: AbortSignal): Promise<ConnectionEnd> {
    const conn = new AbortController();
    const onStop = (): void => conn.abort();
    stop.addEventListener("abort", onStop, { once: true });
    let stream: Readable | undefined;
    let reconciledAt: number | undefined;
    this.#attempts++;
    try {
      // 1. `since` on the daemon's clock, before the listing: every event after it is replayed.
      const since = await this.#since(conn.signal);
      // 2. Subscribe before listing, buffering what arrives, so the listing cannot miss anything.
      // The stream lives as long as the connection: the request budget covers only the headers.
      const headers = setTimeout(
        () => conn.abort(new DOMException("events timed out", "TimeoutError")),
        this.#requestTimeoutMs,
      );
      try {
        stream = await this.#docker.events(
          {
            since,
            filters: {
              type: ["container", "network"],
              // Network events carry no labels (only name/type/container), so a label filter
              // here would drop them all: containers are filtered by label below, networks by id.
              event: [...new Set([...FOLLOWED_ACTIONS.container, ...FOLLOWED_ACTIONS.network])],
            },
          },
          conn.signal,
        );
      } finally {
        clearTimeout(headers);
      }
      const inbox = new Inbox(stream);
      this.#announced = "docker.connected";
      this.#containers.publish({ type: "docker.connected", time: this.#now() });
      // 3. Reconcile: synthetic events for the current state, then docker.reconciled.
      await this.#reconcile(conn.signal);
      this.#status = "connected";
      reconciledAt = this.#now();
      this.#reconciles++;
      this.#log.info({ event: "docker_reconciled", reconciles: this.#reconciles }, "docker reconciled");
      // 4. Follow: the buffered events first, then live ones, strictly in order.
      for (;;) {
        const msg = await inbox.next();
        if (msg === undefined) break;
        await this.#handle(msg, conn.signal);
      }
      const error = toDockerError(inbox.error ?? new Error("events stream ended"), "events");
      return { error, reconciledAt };
    } catch (err) {
      return { error: toDockerError(err, "events"), reconciledAt };
    } finally {
      stop.removeEventListener("abort", onStop);
      conn.abort();
      stream?.destroy();
    }
  }

  async #since(signal: AbortSignal): Promise<string> {
    const info = await this.#request("info", (abortSignal) => this.#docker.info(abortSignal));
    signal.throwIfAborted();
    const since = sinceFromSystemTime(info.SystemTime);
    if (since !== undefined) return since;
    this.#log.warn({ event: "docker_no_system_time" }, "docker info has no SystemTime; using local clock");
    return sinceFromLocalTime(this.#now(), FEEDER_DEFAULTS.localSinceMarginMs);
  }

  async #reconcile(signal: AbortSignal): Promise<void> {
    const filters = { label: [`${LABELS.managed}=true`] };
    const [containers, networks] = await Promise.all([
      this.#request("listContainers", (abortSignal) =>
        this.#docker.listContainers({ all: true, filters }, abortSignal),
      ),
      this.#request("listNetworks", (abortSignal) => this.#docker.listNetworks({ filters }, abortSignal)),
    ]);
    signal.throwIfAborted();
    const time = this.#now();
    const ids: string[] = [];
    for (const c of containers) {
      if (!isManaged(c.Labels)) continue;
      ids.push(c.Id);
      for (const e of containerEventsFromListing(c, time)) this.#containers.publish(e);
    }
    this.#managedNetworks.clear();
    for (const n of networks) {
      if (!isManaged(n.Labels)) continue;
      this.#managedNetworks.set(n.Id, n.Name);
      this.networks.publish({
        type: "network.created",
        id: n.Id,
        name: n.Name,
        labels: Object.freeze({ ...n.Labels }),
        time,
        source: "reconcile",
      });
    }
    this.networks.publish({
      type: "network.reconciled",
      networkIds: [...this.#managedNetworks.keys()],
      time,
    });
    this.#containers.publish({ type: "docker.reconciled", time, containerIds: ids });
  }

  async #handle(msg: DockerEventMessage, signal: AbortSignal): Promise<void> {
    const container = containerEventFromMessage(msg, this.#now());
    if (container !== undefined) {
      this.#containers.publish(container);
      return;
    }
    const net = networkActionFromMessage(msg);
    if (net === undefined) return;
    const time = this.#now();
    switch (net.action) {
      case "create": {
        // The event has no labels: ask for them (gone already means a destroy event follows).
        const labels = await this.#networkLabels(net.id, signal);
        if (!isManaged(labels)) return;
        this.#managedNetworks.set(net.id, net.name);
        this.networks.publish({
          type: "network.created",
          id: net.id,
          name: net.name,
          labels: Object.freeze({ ...labels }),
          time,
          source: "event",
        });
        return;
      }
      case "connect":
      case "disconnect":
        if (!this.#managedNetworks.has(net.id) || net.containerId === undefined) return;
        this.networks.publish({
          type: net.action === "connect" ? "network.connected" : "network.disconnected",
          id: net.id,
          name: net.name,
          containerId: net.containerId,
          time,
          source: "event",
        });
        return;
      case "destroy":
        if (!this.#managedNetworks.delete(net.id)) return;
        this.networks.publish({
          type: "network.destroyed",
          id: net.id,
          name: net.name,
          time,
          source: "event",
        });
        return;
    }
  }

  async #networkLabels(id: string, signal: AbortSignal): Promise<Record<string, string> | undefined> {
    try {
      const info = await this.#request("inspectNetwork", (abortSignal) =>
        this.#docker.inspectNetwork(id, abortSignal),
      );
      return info.Labels ?? undefined;
    } catch (err) {
      const e = toDockerError(err, "inspectNetwork");
      if (e.reason === "api_error" && e.statusCode === 404) return undefined;
      signal.throwIfAborted();
      throw e;
    }
  }

  /** Runs one Docker request with the per-request budget and the feeder's stop signal. */
  async #request<T>(operation: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const timeout = AbortSignal.timeout(this.#requestTimeoutMs);
    const signal = AbortSignal.any([this.#stop.signal, timeout]);
    try {
      return await fn(signal);
    } catch (err) {
      if (timeout.aborted && !this.#stop.signal.aborted) {
        throw new DockerError("timeout", operation, `docker ${operation}: timed out`, { cause: err });
      }
      throw toDockerError(err, operation);
    }
  }
}

/** Newline-delimited JSON messages of the events stream, buffered as they arrive. */
class Inbox {
  error: unknown;
  readonly #queue: DockerEventMessage[] = [];
  readonly #decoder = new StringDecoder("utf8");
  #partial = "";
  #isEnded = false;
  #wake: (() => void) | undefined;

  constructor(stream: Readable) {
    stream.on("data", (chunk: Buffer | string) => this.#push(chunk));
    stream.on("error", (err: unknown) => this.#end(err));
    stream.on("end", () => this.#end(undefined));
    stream.on("close", () => this.#end(undefined));
  }

  /** The next message, or undefined once the stream has ended and the queue is empty. */
  async next(): Promise<DockerEventMessage | undefined> {
    for (;;) {
      const msg = this.#queue.shift();
      if (msg !== undefined) return msg;
      if (this.#isEnded) return undefined;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  #push(chunk: Buffer | string): void {
    this.#partial += typeof chunk === "string" ? chunk : this.#decoder.write(chunk);
    let nl: number;
    while ((nl = this.#partial.indexOf("\n")) >= 0) {
      const line = this.#partial.slice(0, nl).trim();
      this.#partial = this.#partial.slice(nl + 1);
      if (line === "") continue;
      try {
        this.#queue.push(JSON.parse(line) as DockerEventMessage);
      } catch {
        // A malformed line cannot be an event we follow; the next reconcile corrects any doubt.
      }
    }
    this.#signal();
  }

  #end(err: unknown): void {
    if (this.#isEnded) return;
    this.#isEnded = true;
    this.error ??= err;
    this.#signal();
  }

  #signal(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

function positive(value: number | undefined, fallback: number, what: string): number {
  if (value === undefined || value === 0) return fallback;
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`EventsFeeder: ${what} must be >= 0`);
  return value;
}
