// What V8's `--trace-gc-nvp` says about a process's garbage collections over a stretch of its
// output: scavenges and their pauses, bytes allocated and promoted. Allocation is counted from the
// GCs themselves (each line's `allocated` is what was allocated since the previous GC), so it is
// not a timing and does not swing with the machine's load the way CPU time does; but it comes in
// whole collections: its resolution is one young generation's fill (~48 MB under the authz bench's
// load) over the calls measured, ~0.8 KB per call at 3 runs of 20,000.

/** The node flag that makes V8 print one name=value line per collection on stdout. */
export const GC_TRACE_FLAG = "--trace-gc-nvp";

/**
 * What a traced node is started under: V8 prints through C stdio, which holds a pipe's output in
 * a buffer of several lines, so a round's collections would be read during the next round.
 */
export const LINE_BUFFERED = ["stdbuf", "-oL"] as const;

/** Sums over the collections in a stretch of trace output. */
export interface GcTotals {
  readonly scavenges: number;
  /** Main-thread pause of the scavenges, ms (wall time: inflated when the core is shared). */
  readonly scavengePauseMs: number;
  readonly majors: number;
  readonly majorPauseMs: number;
  /** Bytes allocated before each collection since the one before it. */
  readonly allocatedBytes: number;
  /** Bytes the scavenges moved to the old generation. */
  readonly promotedBytes: number;
}

/** Sums the `--trace-gc-nvp` lines among `lines` (other lines are ignored). */
export function gcTotals(lines: readonly string[]): GcTotals {
  let scavenges = 0;
  let scavengePauseMs = 0;
  let majors = 0;
  let majorPauseMs = 0;
  let allocatedBytes = 0;
  let promotedBytes = 0;
  for (const line of lines) {
    const kind = field(line, "gc");
    if (kind === undefined) continue;
    const pause = Number(field(line, "pause") ?? 0);
    allocatedBytes += Number(field(line, "allocated") ?? 0);
    if (kind === "s") {
      scavenges++;
      scavengePauseMs += pause;
      promotedBytes += Number(field(line, "promoted") ?? 0);
    } else {
      majors++;
      majorPauseMs += pause;
    }
  }
  return { scavenges, scavengePauseMs, majors, majorPauseMs, allocatedBytes, promotedBytes };
}

/** The value of ` name=value` in a trace line. */
function field(line: string, name: string): string | undefined {
  const at = line.indexOf(` ${name}=`);
  if (at < 0) return undefined;
  const start = at + name.length + 2;
  const end = line.indexOf(" ", start);
  return line.slice(start, end < 0 ? undefined : end);
}
