// `clawker auth init`: mints the bootstrap trust set and stores it (0700 dir, 0600 keys).
import { stat } from "node:fs/promises";
import { basename } from "node:path";
import { mintTrustSet, TRUST_FILES, writeTrustSet, type TrustFile } from "@clawker/adminclient";
import { FORMAT_FLAG, str, type CommandSpec, type FlagValues } from "../command-spec.js";
import { defaultTrustDir } from "../defaults.js";
import { ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";

/** The spec of `clawker auth init`. */
export const AUTH_INIT: CommandSpec = {
  words: ["auth", "init"],
  summary:
    "Mint the trust material: a CA, the control plane's server and client leaves, the CLI's client leaf and its ES256 signing key.",
  description:
    "Writes them into the trust dir (created 0700; keys 0600). Refuses to overwrite an existing set\n" +
    "unless --force. The control plane reads the same dir (CLAWKER_CP_TRUST_DIR).",
  flags: {
    dir: {
      type: "string",
      value: "DIR",
      description: "trust dir (default $CLAWKER_CP_TRUST_DIR or ${XDG_CONFIG_HOME:-~/.config}/clawker/trust)",
    },
    force: { type: "boolean", description: "replace an existing trust set" },
    san: {
      type: "string",
      multiple: true,
      value: "HOST",
      description: "extra DNS name or IP for the control plane's server leaf",
    },
    format: FORMAT_FLAG,
  },
  examples: [
    "clawker auth init",
    "clawker auth init --dir ./trust --san cp.internal --san 10.0.0.5",
    "clawker auth init --force --format json",
  ],
};

const DESCRIPTIONS: Record<TrustFile, string> = {
  caCert: "CA certificate",
  caKey: "CA private key",
  controlPlaneServerCert: "control plane server certificate",
  controlPlaneServerKey: "control plane server key",
  controlPlaneClientCert: "control plane client certificate (dials clawkerd)",
  controlPlaneClientKey: "control plane client key",
  cliCert: "CLI client certificate",
  cliKey: "CLI client key",
  signingKey: "CLI ES256 signing key (private JWK)",
  signingPublicKey: "CLI ES256 public JWK (for the control plane)",
};

/** Runs `auth init`. */
export async function authInit(values: FlagValues, io: Io): Promise<number> {
  const dir = str(values, "dir", defaultTrustDir(io.env));
  const sans = (values["san"] as string[] | undefined) ?? [];
  const set = await mintTrustSet({ serverNames: sans });
  const paths = await writeTrustSet(dir, set, { force: values["force"] === true });
  const files = await Promise.all(
    (Object.keys(TRUST_FILES) as TrustFile[]).map(async (role) => {
      const path = paths[role];
      const mode = (await stat(path)).mode & 0o777;
      return {
        file: basename(path),
        path,
        mode: mode.toString(8).padStart(4, "0"),
        description: DESCRIPTIONS[role],
      };
    }),
  );
  const dirMode = ((await stat(dir)).mode & 0o777).toString(8).padStart(4, "0");
  if (values["format"] === "json") {
    io.stdout.write(
      JSON.stringify(
        {
          dir,
          dirMode,
          replaced: values["force"] === true,
          serverNames: sans,
          signingKeyKid: set.signingKey.kid,
          files,
        },
        null,
        2,
      ) + "\n",
    );
    return ExitCode.ok;
  }
  const width = Math.max(...files.map((f) => f.file.length)) + 2;
  io.stdout.write(`wrote the trust set to ${dir} (mode ${dirMode}):\n`);
  for (const f of files) io.stdout.write(`  ${f.file.padEnd(width)}${f.mode}  ${f.description}\n`);
  io.stdout.write(`signing key kid: ${set.signingKey.kid}\n`);
  io.stdout.write("next: clawker controlplane up\n");
  return ExitCode.ok;
}
