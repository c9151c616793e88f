// WatchFirewallEvents' filter: empty fields match everything; a gap event always passes (a
// watcher must learn it lost events whatever it asked for).
import { egress } from "@clawker/proto";

/** The reason a filter is refused. */
export class EventFilterError extends Error {
  override readonly name = "EventFilterError";
  readonly reason = "invalid_argument";
}

/** Compiles a wire filter into a predicate; throws EventFilterError naming a bad enum value. */
export function eventFilter(
  filter: egress.EventFilter | undefined,
): (event: egress.FirewallEvent) => boolean {
  const agent = filter?.agentName ?? "";
  const project = filter?.project ?? "";
  const verdicts = new Set(filter?.verdicts ?? []);
  const layers = new Set(filter?.layers ?? []);
  for (const v of verdicts)
    if (v === egress.Verdict.VERDICT_UNSPECIFIED || egress.verdictToJSON(v) === "UNRECOGNIZED")
      throw new EventFilterError(`filter.verdicts: ${v} is not a verdict`);
  for (const l of layers)
    if (l === egress.Layer.LAYER_UNSPECIFIED || egress.layerToJSON(l) === "UNRECOGNIZED")
      throw new EventFilterError(`filter.layers: ${l} is not a layer`);
  return (e) =>
    e.gapCount > 0n ||
    ((agent === "" || e.agentName === agent) &&
      (project === "" || e.project === project) &&
      (verdicts.size === 0 || verdicts.has(e.verdict)) &&
      (layers.size === 0 || layers.has(e.layer)));
}
