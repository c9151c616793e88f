// Executor plans: the commands the control plane runs in an agent over its Session. The init plan
// runs once per container (until clawkerd reports `initialized`), the boot plan on every container
// start, both before AgentReady. A plan is data (validated), turned into ShellCommands here.
import * as z from "zod";
import type { clawkerd } from "@clawker/proto";

/** One process of a step's pipeline. uid/gid 0 and cwd "/" unless given. */
export interface PlanStage {
  readonly argv: readonly string[];
  readonly uid?: number;
  readonly gid?: number;
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string>>;
}

/** A named step: one pipeline, run with `exit_on_non_zero` so a failure ends the container. */
export interface PlanStep {
  /** Short name, used as the command description and in the command id. */
  readonly name: string;
  readonly stages: readonly PlanStage[];
  /** Seconds before clawkerd kills the step; 0 for none. Default 300. */
  readonly timeoutSeconds?: number;
  /** Echo the step's output on clawkerd's console (the container log). Default true. */
  readonly printOutput?: boolean;
}

/** The two plans an agent goes through before AgentReady. */
export interface AgentPlans {
  /** Once per container: clawkerd answers HelloAck.initialized=true afterwards. */
  readonly init: readonly PlanStep[];
  /** On every container start (not on a re-dial of a running agent). */
  readonly boot: readonly PlanStep[];
}

/** Default step timeout in seconds. */
export const DEFAULT_STEP_TIMEOUT_S = 300;

/**
 * The built-in plans: both empty. In clawker the init step runs the project's one-time setup
 * hook inside the container and the boot step re-applies per-start setup; those are project
 * policy, so here they come from configuration (`parsePlans`) and the defaults do nothing.
 */
export const DEFAULT_PLANS: AgentPlans = Object.freeze({ init: Object.freeze([]), boot: Object.freeze([]) });

const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const stageSchema = z.strictObject({
  argv: z.array(z.string()).min(1, "argv must not be empty"),
  uid: z.number().int().min(0).max(0xffffffff).optional(),
  gid: z.number().int().min(0).max(0xffffffff).optional(),
  cwd: z.string().min(1).optional(),
  env: z.record(z.string(), z.string()).optional(),
});
const stepSchema = z.strictObject({
  name: z.string().regex(NAME, "step names are lowercase letters, digits, '_' and '-'"),
  stages: z.array(stageSchema).min(1, "a step needs at least one stage"),
  timeoutSeconds: z.number().int().min(0).max(86_400).optional(),
  printOutput: z.boolean().optional(),
});
const planSchema = z
  .array(stepSchema)
  .default([])
  .superRefine((steps, ctx) => {
    const seen = new Set<string>();
    for (const [i, step] of steps.entries()) {
      if (seen.has(step.name))
        ctx.addIssue({ code: "custom", path: [i, "name"], message: `duplicate step ${step.name}` });
      seen.add(step.name);
    }
  });
const plansSchema = z.strictObject({ init: planSchema, boot: planSchema });

/** Validates plans from configuration (JSON/YAML already parsed); throws a ZodError listing every problem. */
export function parsePlans(input: unknown): AgentPlans {
  return plansSchema.parse(input) as AgentPlans;
}

/** The ShellCommand for a step: every stage filled in, `exit_on_non_zero` always set. */
export function toShellCommand(step: PlanStep): clawkerd.ShellCommand {
  return {
    stages: step.stages.map((s) => ({
      argv: [...s.argv],
      uid: s.uid ?? 0,
      gid: s.gid ?? 0,
      cwd: s.cwd ?? "/",
      env: { ...(s.env ?? {}) },
    })),
    timeoutSeconds: step.timeoutSeconds ?? DEFAULT_STEP_TIMEOUT_S,
    initialStdin: Buffer.alloc(0),
    printOutput: step.printOutput ?? true,
    exitOnNonZero: true,
  };
}
