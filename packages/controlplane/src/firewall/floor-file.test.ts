import assert from "node:assert/strict";
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { FloorFileError } from "./errors.js";
import { loadFloorFile, parseFloor } from "./floor-file.js";
import { ruleKey } from "./rule.js";

function file(t: TestContext, text: string, name = "floor.yaml"): string {
  const dir = mkdtempSync(join(tmpdir(), "clawker-floor-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, name);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}

function problems(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof FloorFileError, String(err));
    assert.equal(err.reason, "invalid_floor_file");
    return err.problems;
  }
  assert.fail("expected a FloorFileError");
}

void test("a YAML floor file becomes canonical rules in canonical order", (t) => {
  const path = file(
    t,
    `# what every agent image needs
rules:
  - dst: Registry.NPMJS.org
  - dst: deb.debian.org
    proto: http
    path_rules:
      - path: /debian/
        methods: [get, head]
    path_default: deny
  - dst: 10.0.0.0/8
    proto: tcp
    port: 5432      # a YAML number is fine
    project: web
`,
  );
  const rules = loadFloorFile(path);
  assert.deepEqual(rules.map(ruleKey), [
    "global registry.npmjs.org:https:443",
    "global deb.debian.org:http:80",
    "project:web 10.0.0.0/8:tcp:5432",
  ]);
  assert.deepEqual(rules[1]!.pathRules, [{ path: "/debian/", action: "allow", methods: ["GET", "HEAD"] }]);
  assert.ok(Object.isFrozen(rules));
});

void test("JSON works too (YAML is a superset)", (t) => {
  const path = file(t, JSON.stringify({ rules: [{ dst: "a.test", proto: "ssh" }] }), "floor.json");
  assert.deepEqual(loadFloorFile(path).map(ruleKey), ["global a.test:ssh:22"]);
  assert.deepEqual(loadFloorFile(file(t, "rules: []\n")), []);
});

void test("every problem is listed with its position and line", () => {
  const text = `rules:
  - dst: a.test
    prot: tcp
  - dst: a..b
    port: 0
  - dst: c.test
    path_rules:
      - path: /x
        methods: [GET, FOO]
  - dst: A.test
  - port: "22"
`;
  assert.deepEqual(
    problems(() => parseFloor(text, "floor.yaml")),
    [
      'rules[0] (line 2): Unrecognized key: "prot"',
      "rules[4].dst (line 11): Invalid input: expected string, received undefined",
    ],
  );
  const semantic = `rules:
  - dst: a..b
    port: 0
  - dst: c.test
    path_rules:
      - path: /x
        methods: [GET, FOO]
  - dst: ok.test
  - dst: OK.test.
`;
  assert.deepEqual(
    problems(() => parseFloor(semantic, "floor.yaml")),
    [
      'rules[0].dst (line 2): "a..b" has an empty label',
      "rules[0].port (line 3): 0 is out of range (1-65535)",
      'rules[1].path_rules[0].methods[1] (line 7): "FOO" is not a known HTTP method (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH, PROPFIND, PROPPATCH, MKCOL, COPY, MOVE, LOCK, UNLOCK, REPORT, SEARCH, MKCALENDAR)',
      "rules[3] (line 9): ok.test:https:443 repeats rules[2]",
    ],
  );
});

void test("text that is not YAML, or not a mapping with rules, is refused with its line", () => {
  assert.match(
    problems(() => parseFloor("rules: [\n", "f"))[0]!,
    /^line 2: Flow sequence in block collection .* end with a \]$/,
  );
  assert.deepEqual(
    problems(() => parseFloor("- dst: a.test\n", "f")),
    ["(top level): Invalid input: expected object, received array"],
  );
  assert.deepEqual(
    problems(() => parseFloor("rules:\n  - dst: a.test\n    floor: true\n", "f")),
    ['rules[0] (line 2): Unrecognized key: "floor"'],
  );
});

void test("a floor file others may write, or another user owns, is refused", (t) => {
  const path = file(t, "rules: []\n");
  chmodSync(path, 0o666);
  assert.match(problems(() => loadFloorFile(path))[0]!, /writable by group or others \(mode 666\)/);
  chmodSync(path, 0o620);
  assert.match(problems(() => loadFloorFile(path))[0]!, /writable by group or others/);
  chmodSync(path, 0o644);
  assert.deepEqual(loadFloorFile(path), []);
  if (process.getuid?.() === 0) {
    chownSync(path, 65534, 65534);
    assert.match(
      problems(() => loadFloorFile(path))[0]!,
      /owned by uid 65534, neither root nor this process/,
    );
  }
  assert.match(problems(() => loadFloorFile(join(path, "..", "missing.yaml")))[0]!, /cannot be read: ENOENT/);
});
