// Firewall rule store figures: 10,000 rules validated and canonicalised, then validated + stored in
// one FirewallAddRules-sized call on a real sqlite file (WAL), and the same call again (every rule
// merged, all UNCHANGED). Issue 16 wants 10,000 rules validated and stored well under 1 s.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { canonicalRules } from "../packages/controlplane/src/firewall/rule-validation.js";
import { RuleStore } from "../packages/controlplane/src/firewall/rule-store.js";
import type { RuleInput } from "../packages/controlplane/src/firewall/rule.js";
import { repeat, summarise, type Benchmark, type Figure } from "./lib.js";

const RULES = 10_000;
const actor = { clientId: "clawker-cli", certCn: "bench" };

/**
 * A mix like a large fleet's: mostly HTTPS names (some wildcards, some per project or agent),
 * one in five with literal and RE2 path rules, opaque TCP ranges to CIDRs, SSH to addresses.
 * Expressions differ between runs (`salt`), so the validator's expression cache starts cold; within
 * a run there are 50 distinct ones (one per project), or with `distinct` 2,000 (the worst case).
 */
function inputs(salt: number, distinct: boolean): RuleInput[] {
  return Array.from({ length: RULES }, (_, i): RuleInput => {
    const scope =
      i % 10 === 0
        ? { project: `p${i % 50}` }
        : i % 25 === 1
          ? { project: "web", agentName: `a${i % 7}` }
          : {};
    switch (i % 10) {
      case 3:
        return {
          dst: `10.${(i >> 8) & 255}.${i & 255}.0/24`,
          proto: "tcp",
          port: `${1000 + (i % 50)}-${2000 + (i % 50)}`,
          ...scope,
        };
      case 5:
        return { dst: `192.168.${(i >> 8) & 255}.${i & 255}`, proto: "ssh", ...scope };
      case 7:
      case 8:
        return {
          dst: `API${i}.Example.com`,
          pathDefault: "deny",
          pathRules: [
            { path: `/v1/repos/${i}/`, methods: ["get", "head"] },
            { path: `~/v2/items${salt}x${distinct ? i : i % 50}/[0-9]+/(read|list)`, action: "allow" },
            { path: "/admin", action: "deny" },
          ],
          ...scope,
        };
      case 9:
        return { dst: `*.cdn${i}.example.net`, ...scope };
      default:
        return { dst: `host${i}.example.org.`, ...scope };
    }
  });
}

/** Milliseconds for one synchronous call. */
function time(fn: () => unknown): number {
  const start = performance.now();
  fn();
  return performance.now() - start;
}

const bench: Benchmark = {
  name: "firewall-rules",
  async run(ctx): Promise<Figure[]> {
    let salt = 0;
    const validate = await repeat(ctx, () => {
      const rules = inputs(salt++, false);
      return Promise.resolve(time(() => canonicalRules(rules)));
    });
    const worst = await repeat(ctx, () => {
      const rules = inputs(salt++, true);
      return Promise.resolve(time(() => canonicalRules(rules)));
    });
    const stored = await repeat(ctx, () => {
      const rules = inputs(salt++, false);
      const dir = mkdtempSync(join(tmpdir(), "clawker-bench-rules-"));
      const store = new RuleStore({ db: join(dir, "cp.db") });
      try {
        const add = time(() => store.add(rules, actor));
        const again = time(() => store.add(rules, actor));
        if (store.list().length !== RULES || store.changes({ limit: 10_000 }).length !== RULES) {
          throw new Error("the store does not hold every rule exactly once");
        }
        return Promise.resolve({ add, again });
      } finally {
        store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
    ctx.log(`${RULES} rules: 20% with 3 path rules (one RE2), 10% CIDR ranges, 10% SSH, 10% wildcards`);
    return [
      summarise("validate + canonicalise 10k rules", "ms", validate, "lower"),
      summarise("validate + canonicalise 10k rules, 2,000 distinct RE2", "ms", worst, "lower"),
      summarise(
        "validate + store 10k rules (one call, new file)",
        "ms",
        stored.map((s) => s.add),
        "lower",
        "< 1000 ms",
      ),
      summarise(
        "same 10k again (merge, all unchanged)",
        "ms",
        stored.map((s) => s.again),
        "lower",
      ),
    ];
  },
};

export default bench;
