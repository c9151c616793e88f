// Checks generated Ory configs against the upstream JSON Schemas (a folder laid out like the
// reference copy the tests use, ../shared/ory-schemas; the daemon loads it only when the operator
// configures `auth.ory.schemaDir`), the way that folder's README describes: ajv's default (draft-07) class with ajv-formats, `strict: false`,
// and the ory/x schemas registered under their `ory://` keys before the top-level ones compile.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import addFormatsModule from "ajv-formats";

// ajv-formats is CommonJS with `exports.default`; under NodeNext the default import is the module.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ??
  addFormatsModule) as unknown as (ajv: Ajv) => Ajv;

/** The three services whose config files we generate. */
export type OryService = "hydra" | "kratos" | "oathkeeper";

/** The ory/x schemas and the `ory://` keys the servers register them under. */
const X_SCHEMAS: readonly (readonly [file: string, key: string])[] = [
  ["x/otelx/config.schema.json", "ory://tracing-config"],
  ["x/logrusx/config.schema.json", "ory://logging-config"],
  ["x/configx/serve.schema.json", "ory://serve-config"],
  ["x/configx/tls.schema.json", "ory://tls-config"],
  ["x/configx/cors.schema.json", "ory://cors-config"],
];

const TOP_LEVEL: Record<OryService, string> = {
  hydra: "hydra/config.json",
  kratos: "kratos/config.schema.json",
  oathkeeper: "oathkeeper/config.schema.json",
};

/** A schema folder that is missing or incomplete. */
export class OrySchemasMissingError extends Error {
  override readonly name = "OrySchemasMissingError";
  readonly reason = "ory_schemas_missing";
}

/** A config that the upstream schema rejects; `problems` are `<json pointer> <message>` lines. */
export class OryConfigInvalidError extends Error {
  override readonly name = "OryConfigInvalidError";
  readonly reason = "ory_config_invalid";
  constructor(
    readonly service: OryService,
    readonly problems: readonly string[],
  ) {
    super(`${service} config is invalid: ${problems.join("; ")}`);
  }
}

/** Compiled validators for the Hydra, Kratos and Oathkeeper config schemas. */
export class OrySchemaValidator {
  readonly #validators: Record<OryService, ValidateFunction>;
  readonly #pipeline: (handlerKey: string) => ValidateFunction | undefined;

  private constructor(
    validators: Record<OryService, ValidateFunction>,
    pipeline: (handlerKey: string) => ValidateFunction | undefined,
  ) {
    this.#validators = validators;
    this.#pipeline = pipeline;
  }

  /** Loads and compiles the schemas from `dir`; throws OrySchemasMissingError naming what is absent. */
  static load(dir: string): OrySchemaValidator {
    const read = (rel: string): Record<string, unknown> => {
      const file = join(dir, rel);
      if (!existsSync(file)) {
        throw new OrySchemasMissingError(
          `Ory config schema ${file} not found; point auth.ory.schemaDir at the schemas of the Ory release you run (${dir})`,
        );
      }
      return JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    };
    const xSchemas = X_SCHEMAS.map(([file, key]) => [read(file), key] as const);
    const compile = (service: OryService): ValidateFunction => {
      // One Ajv per service: each top-level schema registers its own ids (Oathkeeper's is relative).
      const ajv = new Ajv({ strict: false, allErrors: true });
      addFormats(ajv);
      for (const [schema, key] of xSchemas) ajv.addSchema(schema, key);
      return ajv.compile(read(TOP_LEVEL[service]));
    };
    // Oathkeeper's pipeline schemas: one Ajv each (four of them share one `$id`, README), each
    // resolving its `$ref` through the main schema's relative `$id`.
    const oathkeeperMain = read(TOP_LEVEL.oathkeeper);
    const pipeline = new Map<string, ValidateFunction | undefined>();
    const pipelineValidator = (handlerKey: string): ValidateFunction | undefined => {
      if (!/^[a-z]+\.[a-z0-9_]+$/.test(handlerKey)) return undefined;
      if (!pipeline.has(handlerKey)) {
        const file = join(dir, "oathkeeper/pipeline", `${handlerKey}.schema.json`);
        let fn: ValidateFunction | undefined;
        if (existsSync(file)) {
          const ajv = new Ajv({ strict: false, allErrors: true });
          addFormats(ajv);
          for (const [schema, key] of xSchemas) ajv.addSchema(schema, key);
          ajv.addSchema(oathkeeperMain);
          fn = ajv.compile(JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>);
        }
        pipeline.set(handlerKey, fn);
      }
      return pipeline.get(handlerKey);
    };
    return new OrySchemaValidator(
      { hydra: compile("hydra"), kratos: compile("kratos"), oathkeeper: compile("oathkeeper") },
      pipelineValidator,
    );
  }

  /**
   * The problems in Oathkeeper access rules, judged the way Oathkeeper does at load time: every
   * handler a rule names must exist and be enabled in `oathkeeperConfig`, and its global config
   * merged with the rule's override must satisfy that handler's pipeline schema.
   */
  checkAccessRules(rules: unknown, oathkeeperConfig: Record<string, unknown>): string[] {
    if (!Array.isArray(rules)) return ["/ must be an array of access rules"];
    const problems: string[] = [];
    rules.forEach((rule: unknown, i) => {
      const r = (typeof rule === "object" && rule !== null ? rule : {}) as Record<string, unknown>;
      const match = r["match"] as Record<string, unknown> | undefined;
      if (typeof r["id"] !== "string" || r["id"] === "") problems.push(`/${i}/id must be a non-empty string`);
      if (typeof match?.["url"] !== "string") problems.push(`/${i}/match/url must be a string`);
      if (!Array.isArray(match?.["methods"])) problems.push(`/${i}/match/methods must be an array`);
      const sections: [field: string, kind: string, list: unknown][] = [
        ["authenticators", "authenticators", r["authenticators"]],
        ["authorizer", "authorizers", r["authorizer"] === undefined ? undefined : [r["authorizer"]]],
        ["mutators", "mutators", r["mutators"]],
        ["errors", "errors", r["errors"] ?? []],
      ];
      for (const [field, kind, list] of sections) {
        if (!Array.isArray(list) || (field !== "errors" && list.length === 0)) {
          problems.push(`/${i}/${field} must name at least one handler`);
          continue;
        }
        list.forEach((h: unknown, j) => {
          const at = field === "authorizer" ? `/${i}/authorizer` : `/${i}/${field}/${j}`;
          const entry = (typeof h === "object" && h !== null ? h : {}) as Record<string, unknown>;
          const name = entry["handler"];
          const validate = typeof name === "string" ? this.#pipeline(`${kind}.${name}`) : undefined;
          if (typeof name !== "string" || validate === undefined) {
            problems.push(`${at}/handler ${JSON.stringify(name)} is not an Oathkeeper ${kind} handler`);
            return;
          }
          // Error handlers sit one level deeper in the config: `errors.handlers.<name>`.
          const section = (oathkeeperConfig[kind] ?? {}) as Record<string, unknown>;
          const handlers = (kind === "errors" ? (section["handlers"] ?? {}) : section) as Record<
            string,
            Record<string, unknown> | undefined
          >;
          const global = handlers[name] ?? {};
          if (global["enabled"] !== true) problems.push(`${at}/handler ${name} is not enabled in the config`);
          const merged = {
            ...(global["config"] as object | undefined),
            ...(entry["config"] as object | undefined),
          };
          if (!validate(merged)) {
            for (const e of validate.errors ?? [])
              problems.push(`${at}/config${describe(e).replace(/^\/ /, " ")}`);
          }
        });
      }
    });
    return problems;
  }

  /** Throws OryConfigInvalidError (service `oathkeeper`) listing every access-rule problem. */
  validateAccessRules(rules: unknown, oathkeeperConfig: Record<string, unknown>): void {
    const problems = this.checkAccessRules(rules, oathkeeperConfig).map((p) => `access rules ${p}`);
    if (problems.length > 0) throw new OryConfigInvalidError("oathkeeper", problems);
  }

  /** The problems the upstream schema finds in `config` (empty when valid). */
  check(service: OryService, config: unknown): string[] {
    const validate = this.#validators[service];
    if (validate(config)) return [];
    return (validate.errors ?? []).map(describe);
  }

  /** Throws OryConfigInvalidError listing every problem when `config` is invalid. */
  validate(service: OryService, config: unknown): void {
    const problems = this.check(service, config);
    if (problems.length > 0) throw new OryConfigInvalidError(service, problems);
  }
}

function describe(e: ErrorObject): string {
  const path = e.instancePath === "" ? "/" : e.instancePath;
  const params = e.params as Record<string, unknown>;
  const extra = typeof params["additionalProperty"] === "string" ? ` (${params["additionalProperty"]})` : "";
  return `${path} ${e.message ?? "is invalid"}${extra}`;
}
