// Reading the bootstrap material the CLI copied into the container before it started
// (proto/src/agent-bootstrap.ts): CA, agent leaf and key, the single-use assertion, agent.json.
// Everything is checked up front so a broken container fails at once with a clear message.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { BOOTSTRAP_FILES, CLAWKERD_CN, type AgentBootstrapConfig } from "@clawker/proto";
import { ClawkerdError } from "./errors.js";

/** Everything clawkerd reads at start; PEM strings as read. */
export interface Bootstrap {
  readonly dir: string;
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
  /** The single-use client assertion (compact JWS). Never logged. */
  readonly assertion: string;
  readonly config: AgentBootstrapConfig;
}

/** Reads and validates the five bootstrap files in `dir`; throws ClawkerdError on any problem. */
export async function loadBootstrap(dir: string): Promise<Bootstrap> {
  const read = async (name: string): Promise<string> => {
    const path = join(dir, name);
    try {
      return await readFile(path, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") throw new ClawkerdError("bootstrap_missing", `bootstrap file missing: ${path}`);
      throw new ClawkerdError(
        "bootstrap_missing",
        `bootstrap file unreadable: ${path} (${code ?? "error"})`,
        {
          cause: err,
        },
      );
    }
  };
  const [caPem, certPem, keyPem, assertionRaw, configRaw] = await Promise.all([
    read(BOOTSTRAP_FILES.ca),
    read(BOOTSTRAP_FILES.cert),
    read(BOOTSTRAP_FILES.key),
    read(BOOTSTRAP_FILES.assertion),
    read(BOOTSTRAP_FILES.config),
  ]);
  const bad = (file: string, why: string, cause?: unknown): ClawkerdError =>
    new ClawkerdError("bootstrap_malformed", `bootstrap file ${join(dir, file)}: ${why}`, { cause });

  let ca: X509Certificate;
  try {
    ca = new X509Certificate(caPem);
  } catch (err) {
    throw bad(BOOTSTRAP_FILES.ca, "not a PEM certificate", err);
  }
  if (!ca.ca) throw bad(BOOTSTRAP_FILES.ca, "not a CA certificate");
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(certPem);
  } catch (err) {
    throw bad(BOOTSTRAP_FILES.cert, "not a PEM certificate", err);
  }
  if (!leaf.verify(ca.publicKey)) throw bad(BOOTSTRAP_FILES.cert, "not signed by the bootstrap CA");
  if (commonName(leaf.subject) !== CLAWKERD_CN) {
    throw bad(BOOTSTRAP_FILES.cert, `CN is not ${CLAWKERD_CN}`);
  }
  try {
    if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) throw new Error("mismatch");
  } catch (err) {
    throw bad(BOOTSTRAP_FILES.key, "not the private key of the agent certificate", err);
  }
  const assertion = assertionRaw.trim();
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(assertion)) {
    throw bad(BOOTSTRAP_FILES.assertion, "not a compact JWT");
  }
  const config = parseConfig(configRaw, (why, cause) => bad(BOOTSTRAP_FILES.config, why, cause));
  return { dir, caPem, certPem, keyPem, assertion, config };
}

/** The CN from a node X509Certificate subject string ("CN=x\nO=y"). */
export function commonName(subject: string): string | undefined {
  for (const line of subject.split("\n")) if (line.startsWith("CN=")) return line.slice(3);
  return undefined;
}

function parseConfig(
  raw: string,
  bad: (why: string, cause?: unknown) => ClawkerdError,
): AgentBootstrapConfig {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw bad("not JSON", err);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw bad("not a JSON object");
  const o = value as Record<string, unknown>;
  const problems: string[] = [];
  const str = (k: keyof AgentBootstrapConfig, nonEmpty: boolean): string => {
    const v = o[k];
    if (typeof v !== "string" || (nonEmpty && v === "")) {
      problems.push(`${k} must be a${nonEmpty ? " non-empty" : ""} string`);
      return "";
    }
    return v;
  };
  const config: AgentBootstrapConfig = {
    agentName: str("agentName", true),
    project: str("project", false),
    controlPlaneAddr: str("controlPlaneAddr", true),
    tokenEndpoint: str("tokenEndpoint", true),
    serverName: str("serverName", true),
  };
  if (
    config.controlPlaneAddr !== "" &&
    !/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/.test(config.controlPlaneAddr)
  ) {
    problems.push("controlPlaneAddr must be host:port");
  }
  if (config.tokenEndpoint !== "") {
    if (!URL.canParse(config.tokenEndpoint) || new URL(config.tokenEndpoint).protocol !== "https:") {
      problems.push("tokenEndpoint must be an https URL");
    }
  }
  if (
    config.serverName !== "" &&
    isIP(config.serverName) === 0 &&
    !/^[A-Za-z0-9.-]+$/.test(config.serverName)
  ) {
    problems.push("serverName must be a DNS name or an IP address");
  }
  if (problems.length > 0) throw bad(problems.join("; "));
  return Object.freeze(config);
}
