// Pure translation between Docker's vocabulary (events stream messages, listings, the daemon's
// clock) and the overseer's container events plus the feeder's network events. No I/O here.
import { type ContainerEvent, type Labels, LABELS } from "@clawker/overseer";

/** A message of Docker's `/events` stream (the fields we read). */
export interface DockerEventMessage {
  readonly Type?: string;
  readonly Action?: string;
  readonly Actor?: { readonly ID?: string; readonly Attributes?: Readonly<Record<string, string>> };
  readonly time?: number;
  readonly timeNano?: number;
}

/** A container as `GET /containers/json` lists it (the fields we read). */
export interface ListedContainer {
  readonly Id: string;
  readonly Names?: readonly string[];
  readonly Labels?: Readonly<Record<string, string>> | null;
  readonly State?: string;
  readonly Status?: string;
}

/** A network as `GET /networks` lists it (the fields we read). */
export interface ListedNetwork {
  readonly Id: string;
  readonly Name: string;
  readonly Labels?: Readonly<Record<string, string>> | null;
}

/** Where a network event came from: the live stream, or a reconcile listing. */
export type NetworkEventSource = "event" | "reconcile";

/** A managed network exists (Docker `create`, or found by a reconcile listing). */
export interface NetworkCreated {
  readonly type: "network.created";
  readonly id: string;
  readonly name: string;
  readonly labels: Labels;
  readonly time: number;
  readonly source: NetworkEventSource;
}

/** A container joined (`connect`) or left (`disconnect`) a managed network. */
export interface NetworkMembership {
  readonly type: "network.connected" | "network.disconnected";
  readonly id: string;
  readonly name: string;
  readonly containerId: string;
  readonly time: number;
  readonly source: "event";
}

/** A managed network was removed (Docker `destroy`). */
export interface NetworkDestroyed {
  readonly type: "network.destroyed";
  readonly id: string;
  readonly name: string;
  readonly time: number;
  readonly source: "event";
}

/** A reconcile listing finished: `networkIds` is every managed network that exists now. */
export interface NetworksReconciled {
  readonly type: "network.reconciled";
  readonly networkIds: readonly string[];
  readonly time: number;
}

/** Everything the feeder publishes on its networks topic. */
export type NetworkEvent = NetworkCreated | NetworkMembership | NetworkDestroyed | NetworksReconciled;

/** The Docker actions the feeder follows: container lifecycle and network lifecycle/membership. */
export const FOLLOWED_ACTIONS = Object.freeze({
  container: ["create", "start", "die", "destroy"],
  network: ["create", "connect", "disconnect", "destroy"],
});

// Keys Docker adds to a container event's Actor.Attributes next to the container's labels.
const NON_LABEL_ATTRIBUTES = new Set(["image", "name", "exitCode", "signal", "execDuration"]);

/** True when labels mark something the control plane manages (`dev.clawker.managed=true`). */
export function isManaged(labels: Labels | null | undefined): boolean {
  return labels?.[LABELS.managed] === "true";
}

/** The container's labels from an event's attributes (Docker mixes in image, name, exitCode...). */
export function labelsFromAttributes(attributes: Readonly<Record<string, string>>): Labels {
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(attributes)) if (!NON_LABEL_ATTRIBUTES.has(k)) labels[k] = v;
  return Object.freeze(labels);
}

/**
 * The overseer event for a managed container's stream message, or undefined for anything else
 * (unmanaged containers, actions we do not follow, malformed messages). `time` is the local
 * publish time in ms (the daemon's clock may be skewed; see README).
 */
export function containerEventFromMessage(msg: DockerEventMessage, time: number): ContainerEvent | undefined {
  if (msg.Type !== "container") return undefined;
  const id = msg.Actor?.ID;
  const attributes = msg.Actor?.Attributes;
  if (typeof id !== "string" || id === "" || attributes === undefined) return undefined;
  const labels = labelsFromAttributes(attributes);
  if (!isManaged(labels)) return undefined;
  const facts = { id, name: attributes["name"] ?? "", labels, time, source: "event" as const };
  switch (msg.Action) {
    case "create":
      return { type: "container.created", ...facts };
    case "start":
      return { type: "container.started", ...facts };
    case "die":
      return { type: "container.died", ...facts, exitCode: parseExitCode(attributes["exitCode"]) };
    case "destroy":
      return { type: "container.destroyed", ...facts };
    default:
      return undefined;
  }
}

/** The network action of a stream message (managedness is decided by the caller), or undefined. */
export function networkActionFromMessage(
  msg: DockerEventMessage,
): { action: string; id: string; name: string; containerId: string | undefined } | undefined {
  if (msg.Type !== "network") return undefined;
  const id = msg.Actor?.ID;
  const action = msg.Action;
  if (typeof id !== "string" || id === "" || action === undefined) return undefined;
  if (!FOLLOWED_ACTIONS.network.includes(action)) return undefined;
  const attributes = msg.Actor?.Attributes ?? {};
  return { action, id, name: attributes["name"] ?? "", containerId: attributes["container"] };
}

/**
 * Synthetic events stating a listed container's current state: `created`, then `started` when it
 * runs (or is paused), or `died` when it exited, is dead, restarting or being removed.
 */
export function containerEventsFromListing(c: ListedContainer, time: number): ContainerEvent[] {
  const labels = Object.freeze({ ...c.Labels });
  const name = (c.Names?.[0] ?? "").replace(/^\//, "");
  const facts = { id: c.Id, name, labels, time, source: "reconcile" as const };
  const events: ContainerEvent[] = [{ type: "container.created", ...facts }];
  switch (c.State) {
    case "running":
    case "paused":
      events.push({ type: "container.started", ...facts });
      break;
    case "exited":
    case "dead":
    case "restarting":
    case "removing":
      events.push({ type: "container.died", ...facts, exitCode: exitCodeFromStatus(c.Status) });
      break;
    default:
      // "created": never started.
      break;
  }
  return events;
}

/** The exit code in a listing's Status ("Exited (143) 2 seconds ago"), or null. */
export function exitCodeFromStatus(status: string | undefined): number | null {
  const m = /^Exited \((-?\d+)\)/.exec(status ?? "");
  return m?.[1] === undefined ? null : Number(m[1]);
}

function parseExitCode(value: string | undefined): number | null {
  if (value === undefined || !/^-?\d+$/.test(value)) return null;
  return Number(value);
}

/**
 * Docker's `SystemTime` (RFC 3339 with up to nanoseconds, e.g. "2026-11-22T23:23:09.571944551Z")
 * as the events API's `since` form "<seconds>.<nanoseconds>", or undefined when unparsable.
 */
export function sinceFromSystemTime(systemTime: unknown): string | undefined {
  if (typeof systemTime !== "string") return undefined;
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/.exec(systemTime);
  if (m === null) return undefined;
  const ms = Date.parse(`${m[1]}${m[3]}`);
  if (Number.isNaN(ms)) return undefined;
  const nanos = (m[2] ?? "").padEnd(9, "0");
  return `${Math.floor(ms / 1000)}.${nanos}`;
}

/** `since` from the local clock minus a margin (used only when the daemon's time is unknown). */
export function sinceFromLocalTime(nowMs: number, marginMs: number): string {
  const ms = Math.max(0, Math.floor(nowMs - marginMs));
  return `${Math.floor(ms / 1000)}.${String((ms % 1000) * 1_000_000).padStart(9, "0")}`;
}
