// The completion scripts, run by the real shells: bash completes every command's words and
// flags from the specs; zsh parses its script. `completion` refuses anything but bash or zsh.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { accessSync } from "node:fs";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { COMMANDS, run } from "./cli.js";
import { COMMON_FLAGS } from "./command-spec.js";
import { completionScript } from "./completion.js";
import { ExitCode } from "./exit-codes.js";

const execFileP = promisify(execFile);
const specs = COMMANDS.map((c) => c.spec);

function onPath(file: string): boolean {
  try {
    accessSync(file);
    return true;
  } catch {
    return false;
  }
}

/** What bash's completion function offers for `clawker <words...>` (the last word being completed). */
async function bashOffers(...words: string[]): Promise<string[]> {
  const { stdout } = await execFileP("bash", [
    "--norc",
    "-c",
    `eval "$0"; COMP_WORDS=(clawker "$@"); COMP_CWORD=$#; _clawker; printf '%s\\n' "\${COMPREPLY[@]}"`,
    completionScript("bash", specs),
    ...words,
  ]);
  return stdout.split("\n").filter((l) => l !== "");
}

describe("completion", () => {
  test("bash offers each group's next words and every command's flags", async () => {
    assert.deepEqual(await bashOffers(""), [
      "auth",
      "controlplane",
      "run",
      "rm",
      "exec",
      "job",
      "firewall",
      "completion",
      "--help",
    ]);
    assert.deepEqual(await bashOffers("auth", ""), ["init"]);
    assert.deepEqual(await bashOffers("job", ""), ["start", "status", "watch", "stop", "ls"]);
    assert.deepEqual(await bashOffers("firewall", ""), [
      "up",
      "down",
      "status",
      "list",
      "add",
      "remove",
      "prune",
      "reload",
      "rotate-ca",
      "enable",
      "disable",
      "bypass",
      "events",
      "denials",
      "approve",
      "dismiss",
      "watch",
    ]);
    for (const spec of specs) {
      const flags = Object.entries({ ...spec.flags, ...COMMON_FLAGS }).flatMap(([name, f]) => [
        `--${name}`,
        ...(f.short === undefined ? [] : [`-${f.short}`]),
      ]);
      assert.deepEqual((await bashOffers(...spec.words, "-")).sort(), flags.sort(), spec.words.join(" "));
    }
  });

  test("bash completes flag values: choices, directories, and nothing for free text", async () => {
    assert.deepEqual(await bashOffers("controlplane", "agents", "--format", ""), ["text", "json"]);
    assert.deepEqual(await bashOffers("controlplane", "up", "--timeout", ""), []);
    assert.ok((await bashOffers("auth", "init", "--dir", "/")).every((d) => d.startsWith("/")));
    assert.ok((await bashOffers("auth", "init", "--dir", "/")).includes("/tmp"));
    assert.deepEqual(await bashOffers("completion", ""), ["bash", "zsh"]);
    assert.deepEqual(await bashOffers("firewall", "add", "--action", ""), ["allow", "deny"]);
    // A rule's URL path, not a file: nothing to offer.
    assert.deepEqual(await bashOffers("firewall", "add", "--path", ""), []);
  });

  test("zsh parses its script", { skip: onPath("/usr/bin/zsh") ? false : "needs zsh" }, async () => {
    await execFileP("/usr/bin/zsh", ["-n", "-c", completionScript("zsh", specs)]);
  });

  test("any shell but bash or zsh is a usage error", async () => {
    let err = "";
    const io = {
      stdout: { write: () => undefined },
      stderr: { write: (s: string) => void (err += s) },
      env: {},
    };
    assert.equal(await run(["completion", "fish"], io), ExitCode.usage);
    assert.equal(await run(["completion"], io), ExitCode.usage);
    assert.match(err, /completion needs one shell: bash or zsh/);
  });
});
