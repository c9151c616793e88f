// The scope match of the AuthInterceptor: exact names in a space-separated list, nothing else.
import assert from "node:assert/strict";
import { test } from "node:test";
import { grantsScope } from "./auth-interceptor.js";

test("grantsScope matches exact names only", () => {
  const cases: [list: string, scope: string, granted: boolean][] = [
    ["admin", "admin", true],
    ["agent:self:register admin", "admin", true],
    ["admin agent:self:register", "agent:self:register", true],
    ["  admin  ", "admin", true],
    ["admin:read", "admin", false],
    ["xadmin", "admin", false],
    ["adminx", "admin", false],
    ["adm", "admin", false],
    ["agent:self", "agent:self:register", false],
    ["agent:self:register", "agent:self", false],
    ["", "admin", false],
    ["admin", "", false],
    ["a  b", "", false],
    ["Admin", "admin", false],
    ["admin\tother", "admin", false],
  ];
  for (const [list, scope, granted] of cases)
    assert.equal(
      grantsScope(list, scope),
      granted,
      `${JSON.stringify(list)} grants ${JSON.stringify(scope)}`,
    );
});
