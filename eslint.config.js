// ESLint flat config: type-aware typescript-eslint rules plus the import graph of ARCHITECTURE.md.
import js from "@eslint/js";
import tseslint from "typescript-eslint";
import { importX } from "eslint-plugin-import-x";
import { createTypeScriptImportResolver } from "eslint-import-resolver-typescript";

/** Which internal packages each workspace folder may import (ARCHITECTURE.md, "who may import whom"). */
const allowed = {
  proto: [],
  "packages/overseer": [],
  "packages/controlplane": ["proto", "overseer"],
  "packages/authserver": [],
  "packages/adminclient": ["proto"],
  "packages/cli": ["adminclient", "proto"],
  "packages/clawkerd": ["proto"],
  "packages/test-support": [],
};
const internal = [
  "proto",
  "overseer",
  "controlplane",
  "authserver",
  "adminclient",
  "cli",
  "clawkerd",
  "test-support",
];

/** The rule for one folder's src files; tests (`*.test.ts`) may also import @clawker/test-support. */
function restrictedImports(folder, ok) {
  return {
    "no-restricted-imports": [
      "error",
      {
        patterns: [
          {
            group: ["@clawker/*/*"],
            message: "Import a package through its entry point, never a deep path.",
          },
          ...internal
            .filter((name) => !ok.includes(name) && !folder.endsWith(name))
            .map((name) => ({
              group: [`@clawker/${name}`],
              message:
                name === "test-support"
                  ? "@clawker/test-support is for tests and benchmarks only: product code may not depend on it."
                  : `ARCHITECTURE.md: ${folder} may not import @clawker/${name}.`,
            })),
        ],
      },
    ],
  };
}

const importGraph = Object.entries(allowed).flatMap(([folder, ok]) => [
  {
    files: [`${folder}/src/**/*.ts`],
    ignores: [`${folder}/src/**/*.test.ts`],
    rules: restrictedImports(folder, ok),
  },
  { files: [`${folder}/src/**/*.test.ts`], rules: restrictedImports(folder, [...ok, "test-support"]) },
]);

export default tseslint.config(
  {
    ignores: [
      "**/node_modules/**",
      "**/dist/**",
      "**/.output/**",
      "proto/src/gen/**",
      "bench/results/**",
      ".tmp/**",
      "packages/ebpf-manager/**",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { "import-x": importX },
    settings: {
      "import-x/resolver-next": [createTypeScriptImportResolver({ alwaysTryTypes: true })],
    },
    rules: {
      "@typescript-eslint/no-floating-promises": [
        "error",
        {
          // node:test's test()/describe() return promises the runner itself awaits.
          allowForKnownSafeCalls: [
            {
              from: "package",
              package: "node:test",
              name: ["test", "describe", "it", "suite", "before", "after"],
            },
          ],
        },
      ],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/consistent-type-imports": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "import-x/no-cycle": "error",
      "no-console": "error",
    },
  },
  {
    // Binaries, scripts, tests and benchmarks may print.
    files: [
      "**/main.ts",
      "**/cli/src/**",
      "scripts/**",
      "proto/scripts/**",
      "test/**",
      "bench/**",
      "**/*.test.ts",
    ],
    rules: { "no-console": "off" },
  },
  {
    files: ["**/*.js"],
    ...tseslint.configs.disableTypeChecked,
  },
  ...importGraph,
  {
    // Product code takes zod as a namespace (`import * as z`): the named `z` (or the default) is one
    // object holding every export, so a bundle keeps all of zod with it, every locale included
    // (~460 KB in each of the install tree's bundles, parsed at every start).
    files: ["packages/*/src/**/*.ts"],
    ignores: ["**/*.test.ts"],
    rules: {
      "no-restricted-syntax": [
        "error",
        {
          selector:
            "ImportDeclaration[source.value='zod'][importKind!='type'] > :matches(ImportDefaultSpecifier, ImportSpecifier[imported.name='z'][importKind!='type'])",
          message:
            'Write `import * as z from "zod"`: the named z pulls all of zod (every locale) into the bundles.',
        },
      ],
    },
  },
);
