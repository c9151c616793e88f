// The control plane's topics in one place, one per event family, with aggregated stats and one
// close for the shutdown sequence ("close topics" in ARCHITECTURE.md).
import type { AgentEvent, CommandEvent, ContainerEvent, DrainEvent, FirewallEvent } from "./events.js";
import type { Logger } from "./logger.js";
import { Topic, type TopicStats } from "./topic.js";

/** Options shared by all of the Overseer's topics. */
export interface OverseerOptions {
  readonly logger?: Logger;
  /** Default per-subscriber queue capacity. */
  readonly capacity?: number;
}

/** Something that reports topic counters (every Topic does). */
export interface StatsSource {
  stats(): TopicStats;
}

/** Counters summed over several topics. */
export interface StatsTotals {
  readonly published: number;
  readonly delivered: number;
  readonly dropped: number;
  readonly panics: number;
  readonly rejected: number;
  readonly subscribers: number;
}

/** A point-in-time, frozen, JSON-serialisable copy of every topic's counters and their sum. */
export interface StatsSnapshot {
  readonly topics: readonly TopicStats[];
  readonly totals: StatsTotals;
}

/** Takes a stats snapshot of any set of topics. */
export function statsSnapshot(sources: Iterable<StatsSource>): StatsSnapshot {
  const topics = [...sources].map((s) => s.stats());
  const totals = { published: 0, delivered: 0, dropped: 0, panics: 0, rejected: 0, subscribers: 0 };
  for (const t of topics) {
    totals.published += t.published;
    totals.delivered += t.delivered;
    totals.dropped += t.dropped;
    totals.panics += t.panics;
    totals.rejected += t.rejected;
    totals.subscribers += t.subscribers;
  }
  return Object.freeze({ topics: Object.freeze(topics), totals: Object.freeze(totals) });
}

/** The control plane's five topics: containers, agents, commands, drain, firewall. */
export class Overseer {
  /** Docker container lifecycle and feeder connectivity. */
  readonly containers: Topic<ContainerEvent>;
  /** Registration, Sessions and trust of agents. */
  readonly agents: Topic<AgentEvent>;
  /** Executor progress of Session commands. */
  readonly commands: Topic<CommandEvent>;
  /** Agent watcher counts and the ordered shutdown. */
  readonly drain: Topic<DrainEvent>;
  /** Egress firewall changes and denials. */
  readonly firewall: Topic<FirewallEvent>;
  #closing: Promise<void> | undefined;

  constructor(options: OverseerOptions = {}) {
    const make = <T>(name: string): Topic<T> =>
      new Topic<T>({
        name,
        ...(options.logger === undefined ? {} : { logger: options.logger }),
        ...(options.capacity === undefined ? {} : { capacity: options.capacity }),
      });
    this.containers = make("containers");
    this.agents = make("agents");
    this.commands = make("commands");
    this.drain = make("drain");
    this.firewall = make("firewall");
  }

  /** The five topics, for iteration (stats, close). */
  topics(): readonly [
    Topic<ContainerEvent>,
    Topic<AgentEvent>,
    Topic<CommandEvent>,
    Topic<DrainEvent>,
    Topic<FirewallEvent>,
  ] {
    return [this.containers, this.agents, this.commands, this.drain, this.firewall];
  }

  /** Counters of every topic and their sum. */
  stats(): StatsSnapshot {
    return statsSnapshot(this.topics());
  }

  /** Closes every topic (each drains and waits for its handlers). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= Promise.all(this.topics().map((t) => t.close())).then(() => undefined);
    return this.#closing;
  }
}
