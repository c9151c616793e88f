// The state and drawing of `clawker firewall watch` (issue 11 §4), kept apart from the terminal and
// the RPCs so that what the operator sees and what each key does is one pure, testable piece:
// the command feeds it ListFirewallDenials answers and keys, and draws the lines it returns.
import type { egress } from "@clawker/proto";

/** Who an approval applies to. */
export type ApprovalTarget = "agent" | "project" | "global";

/** What a key asks the command to do. */
export type TriageAction =
  | {
      readonly kind: "approve";
      readonly item: TriageItem;
      readonly target: ApprovalTarget;
      /** 0: permanent. */
      readonly expiresAfterSeconds: number;
    }
  | { readonly kind: "dismiss"; readonly item: TriageItem }
  | { readonly kind: "quit" };

/** One line of the triage list: a denial group or a pending request without a denial yet. */
export interface TriageItem {
  readonly kind: "denial" | "request";
  /** The denial group's id, or the request's id. */
  readonly id: string;
  readonly dst: string;
  readonly port: number;
  readonly agent: string;
  readonly project: string;
  /** Denials counted (0 for a request alone). */
  readonly count: number;
  /** Milliseconds since the epoch of the newest denial or request. */
  readonly lastMs: number;
  /** The layer and reason of the last denial, or the agent's reason for its request. */
  readonly why: string;
  /** The newest pending request of this agent for this destination, if any. */
  readonly requestId: string | undefined;
}

/** One hour, the temporary approval's length. */
export const TEMPORARY_SECONDS = 3600;

/** The keys and what they do, as drawn in the help line. */
export const KEY_HELP =
  "↑/↓ select  a/A allow agent 1h/always  p/P project 1h/always  g/G everyone 1h/always  d dismiss  q quit";

const APPROVE_KEYS: Readonly<Record<string, [ApprovalTarget, number]>> = {
  a: ["agent", TEMPORARY_SECONDS],
  A: ["agent", 0],
  p: ["project", TEMPORARY_SECONDS],
  P: ["project", 0],
  g: ["global", TEMPORARY_SECONDS],
  G: ["global", 0],
};

const LAYER_NAMES: Readonly<Record<number, string>> = { 1: "dns", 2: "bpf", 3: "proxy" };

/** Nanoseconds since the epoch (the wire's int64, as a number or bigint) to milliseconds. */
function nanosToMs(nanos: number | bigint): number {
  return Number(BigInt(nanos) / 1_000_000n);
}

/** The triage list from one ListFirewallDenials answer, newest first. */
export function triageItems(answer: egress.ListFirewallDenialsResponse): TriageItem[] {
  const items: TriageItem[] = answer.groups.map((g) => {
    const request = g.requests[0];
    const layer = LAYER_NAMES[g.layer] ?? "?";
    return {
      kind: "denial",
      id: g.id,
      dst: g.dstName !== "" ? g.dstName : g.dstAddr,
      port: g.port,
      agent: g.agentName,
      project: g.project,
      count: Number(g.count),
      lastMs: nanosToMs(g.lastSeenUnixNanos),
      why: request !== undefined ? `asked: ${request.reason}` : `${layer}: ${g.reason}`,
      requestId: request?.id,
    };
  });
  for (const r of answer.requests) {
    items.push({
      kind: "request",
      id: r.id,
      dst: r.dst,
      port: r.port,
      agent: r.agentName,
      project: r.project,
      count: 0,
      lastMs: nanosToMs(r.requestedAtUnixNanos),
      why: `asked: ${r.reason}`,
      requestId: r.id,
    });
  }
  return items.sort((x, y) => y.lastMs - x.lastMs);
}

/** The selection, the list and the status line of the watch screen. */
export class TriageView {
  #items: TriageItem[] = [];
  #selected = 0;
  #status = "";
  #updatedMs: number | undefined;
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** The items shown, newest first. */
  get items(): readonly TriageItem[] {
    return this.#items;
  }

  /** The item under the cursor, if the list is not empty. */
  get selected(): TriageItem | undefined {
    return this.#items[this.#selected];
  }

  /** Replaces the list with a new answer; the cursor stays on the same item when it is still there. */
  update(answer: egress.ListFirewallDenialsResponse): void {
    const keep = this.selected?.id;
    this.#items = triageItems(answer);
    const at = keep === undefined ? -1 : this.#items.findIndex((i) => i.id === keep);
    this.#selected = at >= 0 ? at : Math.min(this.#selected, Math.max(0, this.#items.length - 1));
    this.#updatedMs = this.#now();
  }

  /** Sets the status line (what the last action did, or why it failed). */
  setStatus(text: string): void {
    this.#status = text;
  }

  /** Moves the cursor or returns the action a key asks for; unknown keys do nothing. */
  key(key: string): TriageAction | undefined {
    switch (key) {
      case "\x1b[A":
      case "k":
        this.#selected = Math.max(0, this.#selected - 1);
        return undefined;
      case "\x1b[B":
      case "j":
        this.#selected = Math.min(Math.max(0, this.#items.length - 1), this.#selected + 1);
        return undefined;
      case "q":
      case "\x03":
        return { kind: "quit" };
    }
    const item = this.selected;
    if (item === undefined) return undefined;
    if (key === "d") return { kind: "dismiss", item };
    const approve = APPROVE_KEYS[key];
    if (approve === undefined) return undefined;
    const [target, expiresAfterSeconds] = approve;
    return { kind: "approve", item, target, expiresAfterSeconds };
  }

  /** The screen as lines, at most `rows` of them, each cut to `cols` characters. */
  render(cols: number, rows: number): string[] {
    const denials = this.#items.filter((i) => i.kind === "denial").length;
    const pending = this.#items.filter((i) => i.requestId !== undefined).length;
    const updated = this.#updatedMs === undefined ? "waiting" : `updated ${clock(this.#updatedMs)}`;
    const head = [
      `clawker firewall watch: ${denials} denied destination(s), ${pending} pending request(s), ${updated}`,
      KEY_HELP,
      "",
      row(["", "DESTINATION", "PORT", "AGENT", "COUNT", "LAST", "WHY"]),
    ];
    const room = Math.max(1, rows - head.length - 2);
    // Keep the cursor on screen: scroll the window so that the selected line is inside it.
    const first = Math.max(0, Math.min(this.#selected - room + 1, this.#items.length - room));
    const body = this.#items
      .slice(Math.max(0, first), Math.max(0, first) + room)
      .map((item, i) =>
        row([
          i + Math.max(0, first) === this.#selected ? ">" : " ",
          item.dst,
          String(item.port),
          item.project === "" ? item.agent : `${item.project}.${item.agent}`,
          item.kind === "request" ? "-" : String(item.count),
          ago(this.#now() - item.lastMs),
          item.why,
        ]),
      );
    if (body.length === 0) body.push("  nothing denied and nothing asked for (yet)");
    return [...head, ...body, "", this.#status].slice(0, rows).map((l) => clip(l, cols));
  }
}

const WIDTHS = [1, 32, 5, 20, 6, 6];

/** One table row: fixed columns, the last one free. */
function row(cells: readonly string[]): string {
  return cells.map((c, i) => (i < WIDTHS.length ? clip(c, WIDTHS[i]!).padEnd(WIDTHS[i]!) : c)).join(" ");
}

/** Cuts a line to `n` characters, marking the cut. */
function clip(text: string, n: number): string {
  return text.length <= n ? text : `${text.slice(0, Math.max(0, n - 1))}…`;
}

/** How long ago, shortly: 5s, 3m, 2h, 4d. */
function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** The local wall clock, hh:mm:ss. */
function clock(ms: number): string {
  return new Date(ms).toTimeString().slice(0, 8);
}
