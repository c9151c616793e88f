// The caller-address -> container map the identity gate reads on every Register. It is filled by
// inspecting a managed agent container once when the containers topic says it started, and
// emptied by died/destroyed events and reconcile listings, so a Register costs no Docker call.
import { isIP } from "node:net";
import { isAgentLabels, type ContainerEvent, type Labels, type Topic } from "@clawker/overseer";
import type { ContainerInspect, DockerClient } from "../docker/client.js";
import type { Logger } from "../logging.js";

/** Budget of one container inspect; a wedged engine becomes a failed lookup, not a hang. */
export const INSPECT_TIMEOUT_MS = 10_000;

/** A running managed agent container as the index knows it. */
export interface ContainerRecord {
  /** Full 64-hex Docker container id. */
  readonly id: string;
  readonly labels: Labels;
  /** The container's addresses on its networks (IPv4 dotted, IPv6 canonical). */
  readonly addresses: readonly string[];
}

/** What one `inspect` tells the index; undefined means the container no longer exists. */
export interface InspectedContainer extends ContainerRecord {
  readonly isRunning: boolean;
}

/** Looks up one container by id (`DockerClient.inspectContainer` in production). */
export type InspectContainer = (id: string) => Promise<InspectedContainer | undefined>;

/** The result of an address lookup: exactly one container, none, or more than one. */
export type AddressLookup =
  | { readonly kind: "found"; readonly record: ContainerRecord }
  | { readonly kind: "none" }
  | { readonly kind: "ambiguous"; readonly containerIds: readonly string[] };

/** A change the index made: a container became reachable (up) or went away (down). */
export type AddressIndexChange =
  | { readonly kind: "up"; readonly record: ContainerRecord }
  | { readonly kind: "down"; readonly containerId: string; readonly reason: string };

/** Options of a ContainerAddressIndex. */
export interface ContainerAddressIndexOptions {
  readonly inspect: InspectContainer;
  readonly log: Logger;
  /** The containers topic to follow; omit to fill the index only through `put` (tests). */
  readonly containers?: Pick<Topic<ContainerEvent>, "subscribe">;
}

/** Normalises a peer address: strips a port and brackets, and unmaps `::ffff:a.b.c.d`. */
export function normalizeAddress(peer: string): string | undefined {
  let host = peer.trim();
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    if (end < 0) return undefined;
    host = host.slice(1, end);
  } else if (isIP(host) === 0) {
    // "a.b.c.d:port" (one colon) -> strip the port; a bare IPv6 has more than one colon.
    const colon = host.lastIndexOf(":");
    if (colon > 0 && host.indexOf(":") === colon) host = host.slice(0, colon);
  }
  const zone = host.indexOf("%");
  if (zone >= 0) host = host.slice(0, zone);
  const lower = host.toLowerCase();
  if (lower.startsWith("::ffff:") && isIP(lower.slice(7)) === 4) return lower.slice(7);
  return isIP(lower) === 0 ? undefined : lower;
}

/** Maps container addresses to running managed agent containers; invalidated by events. */
export class ContainerAddressIndex {
  readonly #inspect: InspectContainer;
  readonly #log: Logger;
  readonly #containers: Pick<Topic<ContainerEvent>, "subscribe"> | undefined;
  readonly #byId = new Map<string, ContainerRecord>();
  readonly #byAddress = new Map<string, Set<string>>();
  /** Bumped on every down event, so an inspect that raced a die is dropped. */
  readonly #generation = new Map<string, number>();
  readonly #pending = new Map<string, Promise<void>>();
  readonly #listeners = new Set<(change: AddressIndexChange) => void>();
  #abort: AbortController | undefined;

  constructor(options: ContainerAddressIndexOptions) {
    this.#inspect = options.inspect;
    this.#log = options.log;
    this.#containers = options.containers;
  }

  /** Follows the containers topic until `signal` aborts or `close()`. */
  start(signal?: AbortSignal): void {
    if (this.#abort !== undefined || this.#containers === undefined) return;
    this.#abort = new AbortController();
    const stop = this.#abort.signal;
    signal?.addEventListener("abort", () => this.close(), { once: true });
    this.#containers.subscribe((event) => this.handle(event), { signal: stop, name: "address-index" });
  }

  /** Applies one containers-topic event (the subscription calls this; exposed for tests). */
  handle(event: ContainerEvent): void {
    switch (event.type) {
      case "container.started":
        if (isAgentLabels(event.labels)) this.#track(event.id, event.time);
        break;
      case "container.died":
        this.remove(event.id, "died");
        break;
      case "container.destroyed":
        this.remove(event.id, "destroyed");
        break;
      case "docker.reconciled": {
        const present = new Set(event.containerIds);
        for (const id of [...this.#byId.keys()]) if (!present.has(id)) this.remove(id, "gone");
        break;
      }
      case "container.created":
      case "docker.connected":
      case "docker.disconnected":
        // Created containers have no address yet; a disconnect keeps what we knew until the
        // reconcile after the reconnect says otherwise.
        break;
    }
  }

  /** Adds or replaces a running container (tests inject records; `handle` uses it after inspect). */
  put(record: ContainerRecord): void {
    this.#unindex(record.id);
    const addresses = record.addresses.map((a) => normalizeAddress(a)).filter((a) => a !== undefined);
    const stored: ContainerRecord = Object.freeze({
      id: record.id,
      labels: Object.freeze({ ...record.labels }),
      addresses: Object.freeze(addresses),
    });
    this.#byId.set(record.id, stored);
    for (const address of addresses) {
      let ids = this.#byAddress.get(address);
      if (ids === undefined) this.#byAddress.set(address, (ids = new Set()));
      ids.add(record.id);
    }
    this.#emit({ kind: "up", record: stored });
  }

  /** Forgets a container (and cancels an inspect in flight for it). */
  remove(containerId: string, reason = "removed"): void {
    this.#generation.set(containerId, (this.#generation.get(containerId) ?? 0) + 1);
    if (this.#unindex(containerId)) this.#emit({ kind: "down", containerId, reason });
  }

  /** The one running managed container owning `address`, or why there is not exactly one. */
  lookup(address: string): AddressLookup {
    const normalized = normalizeAddress(address);
    const ids = normalized === undefined ? undefined : this.#byAddress.get(normalized);
    if (ids === undefined || ids.size === 0) return { kind: "none" };
    if (ids.size > 1) return { kind: "ambiguous", containerIds: [...ids] };
    const [id] = ids;
    return { kind: "found", record: this.#byId.get(id!)! };
  }

  /** A container's record, if it is running and indexed. */
  get(containerId: string): ContainerRecord | undefined {
    return this.#byId.get(containerId);
  }

  /** Every indexed container. */
  records(): ContainerRecord[] {
    return [...this.#byId.values()];
  }

  /** Resolves when no inspect is in flight (a Register that missed waits for this once). */
  async settled(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all(this.#pending.values());
  }

  /** Calls `listener` with every later change; returns the unsubscribe function. */
  onChange(listener: (change: AddressIndexChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Stops following the topic. Idempotent; keeps the records (the dialer is closed separately). */
  close(): void {
    this.#abort?.abort();
  }

  #track(id: string, seenAt: number): void {
    const generation = this.#generation.get(id) ?? 0;
    const run = (async () => {
      let inspected: InspectedContainer | undefined;
      try {
        inspected = await this.#inspect(id);
      } catch (err) {
        this.#log.warn({ err, containerId: id, event: "inspect_failed" }, "cannot inspect agent container");
        return;
      }
      // A die/destroy arrived while we were inspecting: the answer is stale.
      if ((this.#generation.get(id) ?? 0) !== generation) return;
      if (inspected === undefined || !inspected.isRunning || !isAgentLabels(inspected.labels)) return;
      this.put({ id: inspected.id, labels: inspected.labels, addresses: inspected.addresses });
      // One line per agent start: the event's arrival and the inspect, the first pieces of its
      // start -> registered (the dial starts here).
      this.#log.info(
        { containerId: id, seenAt, inspectMs: Date.now() - seenAt, event: "agent_indexed" },
        "agent container indexed",
      );
    })().finally(() => {
      if (this.#pending.get(id) === run) this.#pending.delete(id);
    });
    this.#pending.set(id, run);
  }

  #unindex(id: string): boolean {
    const old = this.#byId.get(id);
    if (old === undefined) return false;
    this.#byId.delete(id);
    for (const address of old.addresses) {
      const ids = this.#byAddress.get(address);
      ids?.delete(id);
      if (ids?.size === 0) this.#byAddress.delete(address);
    }
    return true;
  }

  #emit(change: AddressIndexChange): void {
    for (const listener of this.#listeners) {
      try {
        listener(change);
      } catch (err) {
        this.#log.error({ err, event: "address_index_listener_failed" }, "address index listener threw");
      }
    }
  }
}

/** An InspectContainer backed by the Docker client; a 404 means the container is gone. */
export function dockerInspector(docker: Pick<DockerClient, "inspectContainer">): InspectContainer {
  return async (id) => {
    let info: ContainerInspect;
    try {
      info = await docker.inspectContainer(id, AbortSignal.timeout(INSPECT_TIMEOUT_MS));
    } catch (err) {
      if ((err as { statusCode?: unknown }).statusCode === 404) return undefined;
      throw err;
    }
    const addresses: string[] = [];
    for (const net of Object.values(info.NetworkSettings?.Networks ?? {})) {
      if (net.IPAddress) addresses.push(net.IPAddress);
      if (net.GlobalIPv6Address) addresses.push(net.GlobalIPv6Address);
    }
    return {
      id: info.Id,
      labels: info.Config?.Labels ?? {},
      addresses,
      isRunning: info.State?.Running === true,
    };
  };
}
