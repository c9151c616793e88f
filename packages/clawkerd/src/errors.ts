// clawkerd's errors: one class with a stable `reason` (a ClawkerError), and one exhaustive table
// mapping each reason to the Session's in-band wire ErrorCode (API.md §3). The server's gRPC
// statuses have their own table, CLAWKERD_ERRORS in @clawker/proto.
import { ClawkerError, clawkerd } from "@clawker/proto";

/** Why something failed; stable strings, safe to log and to test against. */
export type ClawkerdReason =
  | "bootstrap_missing"
  | "bootstrap_malformed"
  | "invalid_request"
  | "duplicate_command_id"
  | "unknown_command_id"
  | "spawn_failed"
  | "timeout"
  | "io_error"
  | "registration_failed"
  | "state_io";

/** The wire ErrorCode each reason is answered with on a Session. */
export const ERROR_CODES = {
  bootstrap_missing: clawkerd.ErrorCode.ERROR_CODE_NOT_FOUND,
  bootstrap_malformed: clawkerd.ErrorCode.ERROR_CODE_INVALID_REQUEST,
  invalid_request: clawkerd.ErrorCode.ERROR_CODE_INVALID_REQUEST,
  duplicate_command_id: clawkerd.ErrorCode.ERROR_CODE_INVALID_REQUEST,
  unknown_command_id: clawkerd.ErrorCode.ERROR_CODE_UNKNOWN_COMMAND_ID,
  spawn_failed: clawkerd.ErrorCode.ERROR_CODE_SPAWN_FAILED,
  timeout: clawkerd.ErrorCode.ERROR_CODE_TIMEOUT,
  io_error: clawkerd.ErrorCode.ERROR_CODE_IO_ERROR,
  registration_failed: clawkerd.ErrorCode.ERROR_CODE_IO_ERROR,
  state_io: clawkerd.ErrorCode.ERROR_CODE_IO_ERROR,
} as const satisfies Record<ClawkerdReason, clawkerd.ErrorCode>;

/** An error with a stable reason. */
export class ClawkerdError extends ClawkerError<ClawkerdReason> {
  override readonly name = "ClawkerdError";

  /** The wire ErrorCode for this error. */
  get code(): clawkerd.ErrorCode {
    return ERROR_CODES[this.reason];
  }
}
