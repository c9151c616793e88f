// Polling for tests: wait until a condition holds instead of sleeping a guessed amount. The one
// implementation lives in @clawker/test-support; harness modules and older tests import it here.
export { waitFor, type WaitForOptions } from "@clawker/test-support";
