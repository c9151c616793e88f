// The wire contract of ../shared/API.md, transcribed by hand (not derived from the .proto files or
// the generated code), so contract.test.ts can catch a .proto or a generation that drifts from it.
// The API.md part is unchanged; our additions beyond the Go contract are kept apart (EXTENSIONS
// below) and merged in, because the test compares both ways and so must know them too.

/**
 * A field type as API.md writes it: a scalar, a message or enum of the same package, a map, or a
 * message of another contract package written fully qualified (`clawker.clawkerd.v1.Response`).
 */
export type FieldType = string;

/** One field: number, proto name, type; `repeated`, or the oneof it belongs to. */
export interface FieldSpec {
  readonly number: number;
  readonly name: string;
  readonly type: FieldType;
  readonly repeated: boolean;
  readonly oneof: string | undefined;
}

/** One message: its fields and the field numbers it reserves. */
export interface MessageSpec {
  readonly fields: readonly FieldSpec[];
  readonly reserved: readonly number[];
}

/** One RPC: full path, request/response message names (same package) and streaming flags. */
export interface MethodSpec {
  readonly path: string;
  readonly request: string;
  readonly response: string;
  readonly clientStreaming: boolean;
  readonly serverStreaming: boolean;
}

/** One .proto file of the contract. */
export interface FileSpec {
  readonly file: string;
  readonly package: string;
  /** service name -> RPC name -> method. */
  readonly services: Readonly<Record<string, Readonly<Record<string, MethodSpec>>>>;
  readonly messages: Readonly<Record<string, MessageSpec>>;
  /** enum name -> value name -> number. */
  readonly enums: Readonly<Record<string, Readonly<Record<string, number>>>>;
}

/** A singular field. */
function f(number: number, name: string, type: FieldType): FieldSpec {
  return { number, name, type, repeated: false, oneof: undefined };
}

/** A repeated field. */
function r(number: number, name: string, type: FieldType): FieldSpec {
  return { number, name, type, repeated: true, oneof: undefined };
}

/** A member of the oneof `payload`. */
function o(number: number, name: string, type: FieldType): FieldSpec {
  return { number, name, type, repeated: false, oneof: "payload" };
}

/** A message with these fields and nothing reserved. */
function m(...fields: FieldSpec[]): MessageSpec {
  return { fields, reserved: [] };
}

/** A unary RPC. */
function unary(path: string, request: string, response: string): MethodSpec {
  return { path, request, response, clientStreaming: false, serverStreaming: false };
}

/**
 * OUR EXTENSION beyond the Go contract (not in API.md; a Go control plane answers UNIMPLEMENTED):
 * AdminService.ExecAgent runs one ShellCommand in one agent over its Session and streams that
 * command's clawkerd Responses back. Added under API.md's compatibility rules (a new RPC and a new
 * message, nothing renumbered).
 */
export const ADMIN_EXTENSION_METHODS = {
  ExecAgent: {
    path: "/clawker.admin.v1.AdminService/ExecAgent",
    request: "ExecAgentRequest",
    response: "clawker.clawkerd.v1.Response",
    clientStreaming: false,
    serverStreaming: true,
  },
} as const satisfies Record<string, MethodSpec>;

/** The messages of our extension RPCs and fields (ADMIN_EXTENSION_METHODS / _FIELDS); not in API.md. */
export const ADMIN_EXTENSION_MESSAGES = {
  ExecAgentRequest: m(
    f(1, "container_id", "string"),
    f(2, "agent_name", "string"),
    f(3, "project", "string"),
    f(4, "command", "clawker.clawkerd.v1.ShellCommand"),
  ),
  // One container's firewall mode, listed in FirewallStatusResult.containers (an extension field).
  FirewallContainerMode: m(
    f(1, "container_id", "string"),
    f(2, "mode", "string"),
    f(3, "bypass_seconds_left", "uint32"),
    f(4, "enforced", "bool"),
  ),
  // One source's counters of the decision stream, listed in FirewallStatusResult.event_sources.
  FirewallEventSource: m(
    f(1, "source", "string"),
    f(2, "published", "uint64"),
    f(3, "delivered", "uint64"),
    f(4, "dropped_rate_limited", "uint64"),
    f(5, "dropped_upstream", "uint64"),
  ),
} as const satisfies Record<string, MessageSpec>;

/**
 * OUR EXTENSION FIELDS on API.md's admin messages (API.md §6: numbers from 1000 up, so a field
 * upstream adds later never collides): the egress rule's scope (a project or one agent; both
 * empty, the wire default and all a Go peer sends, is a global rule), the floor-file marker
 * the control plane sets in listings, the containers whose firewall mode is not the default
 * (disabled, or in a bypass with its time left) in FirewallStatus, and the decision stream's
 * counters per source (every dropped event visible) in FirewallStatus.
 */
export const ADMIN_EXTENSION_FIELDS = {
  EgressRule: [f(1000, "project", "string"), f(1001, "agent_name", "string"), f(1002, "floor", "bool")],
  FirewallRemoveRuleRequest: [f(1000, "project", "string"), f(1001, "agent_name", "string")],
  FirewallStatusResult: [
    r(1000, "containers", "FirewallContainerMode"),
    f(1001, "interception_ca_pem", "string"),
    r(1002, "event_sources", "FirewallEventSource"),
  ],
} as const satisfies Record<string, readonly FieldSpec[]>;

/**
 * OUR EXTENSION beyond the Go contract (not in API.md): per-command flow control on the clawkerd
 * Session. Fields numbered from 1000 in upstream messages (API.md §6), each only used after the
 * peer announced it (HelloAck.flow_control, then ShellCommand.flow_control), so a Go peer never
 * sees one.
 */
export const CLAWKERD_EXTENSION_FIELDS = {
  Command: [o(1000, "output_credit", "OutputCredit")],
  ShellCommand: [f(1000, "flow_control", "CommandFlowControl")],
  Response: [o(1000, "stdin_credit", "StdinCredit")],
  HelloAck: [f(1000, "flow_control", "FlowControlOffer")],
} as const satisfies Record<string, readonly FieldSpec[]>;

/** The messages of the clawkerd flow-control extension (see CLAWKERD_EXTENSION_FIELDS). */
export const CLAWKERD_EXTENSION_MESSAGES = {
  CommandFlowControl: m(f(1, "output_window_bytes", "uint32"), f(2, "output_window_chunks", "uint32")),
  OutputCredit: m(f(1, "bytes", "uint32"), f(2, "chunks", "uint32")),
  FlowControlOffer: m(f(1, "stdin_window_bytes", "uint32")),
  StdinCredit: m(f(1, "bytes", "uint32")),
} as const satisfies Record<string, MessageSpec>;

/** Our additions to one .proto file: RPC names, message names, and fields added to its messages. */
export interface FileExtensions {
  readonly methods: readonly string[];
  readonly messages: readonly string[];
  /** message name -> names of the fields we added to it. */
  readonly fields: Readonly<Record<string, readonly string[]>>;
}

/** Every addition beyond the Go contract, by file. */
export const EXTENSIONS: Readonly<Record<string, FileExtensions>> = {
  "clawker/admin/v1/admin.proto": {
    methods: Object.keys(ADMIN_EXTENSION_METHODS),
    messages: Object.keys(ADMIN_EXTENSION_MESSAGES),
    fields: Object.fromEntries(
      Object.entries(ADMIN_EXTENSION_FIELDS).map(([message, fields]) => [message, fields.map((x) => x.name)]),
    ),
  },
  "clawker/clawkerd/v1/clawkerd.proto": {
    methods: [],
    messages: Object.keys(CLAWKERD_EXTENSION_MESSAGES),
    fields: Object.fromEntries(
      Object.entries(CLAWKERD_EXTENSION_FIELDS).map(([message, fields]) => [
        message,
        fields.map((x) => x.name),
      ]),
    ),
  },
};

/** An API.md file spec with extension fields appended to the messages they extend, and new messages. */
function withExtension(
  spec: FileSpec,
  fields: Readonly<Record<string, readonly FieldSpec[]>>,
  messages: Readonly<Record<string, MessageSpec>>,
): FileSpec {
  const out: Record<string, MessageSpec> = { ...spec.messages, ...messages };
  for (const [name, extra] of Object.entries(fields)) {
    const base = spec.messages[name];
    if (base === undefined) throw new Error(`extension fields for unknown message ${name}`);
    out[name] = { fields: [...base.fields, ...extra], reserved: base.reserved };
  }
  return { ...spec, messages: out };
}

/** API.md §1: clawker.admin.v1 (plus our extensions, merged in at the end). */
export const ADMIN: FileSpec = {
  file: "clawker/admin/v1/admin.proto",
  package: "clawker.admin.v1",
  services: {
    AdminService: {
      FirewallInit: unary(
        "/clawker.admin.v1.AdminService/FirewallInit",
        "FirewallInitRequest",
        "FirewallInitResult",
      ),
      FirewallRemove: unary(
        "/clawker.admin.v1.AdminService/FirewallRemove",
        "FirewallRemoveRequest",
        "FirewallRemoveResult",
      ),
      FirewallEnable: unary(
        "/clawker.admin.v1.AdminService/FirewallEnable",
        "FirewallEnableRequest",
        "FirewallEnableResult",
      ),
      FirewallDisable: unary(
        "/clawker.admin.v1.AdminService/FirewallDisable",
        "FirewallDisableRequest",
        "FirewallDisableResult",
      ),
      FirewallBypass: unary(
        "/clawker.admin.v1.AdminService/FirewallBypass",
        "FirewallBypassRequest",
        "FirewallBypassResult",
      ),
      FirewallAddRules: unary(
        "/clawker.admin.v1.AdminService/FirewallAddRules",
        "FirewallAddRulesRequest",
        "FirewallAddRulesResult",
      ),
      FirewallRemoveRule: unary(
        "/clawker.admin.v1.AdminService/FirewallRemoveRule",
        "FirewallRemoveRuleRequest",
        "FirewallRemoveRuleResult",
      ),
      FirewallListRules: unary(
        "/clawker.admin.v1.AdminService/FirewallListRules",
        "FirewallListRulesRequest",
        "FirewallListRulesResult",
      ),
      FirewallReload: unary(
        "/clawker.admin.v1.AdminService/FirewallReload",
        "FirewallReloadRequest",
        "FirewallReloadResult",
      ),
      FirewallStatus: unary(
        "/clawker.admin.v1.AdminService/FirewallStatus",
        "FirewallStatusRequest",
        "FirewallStatusResult",
      ),
      FirewallRotateCA: unary(
        "/clawker.admin.v1.AdminService/FirewallRotateCA",
        "FirewallRotateCARequest",
        "FirewallRotateCAResult",
      ),
      FirewallSyncRoutes: unary(
        "/clawker.admin.v1.AdminService/FirewallSyncRoutes",
        "FirewallSyncRoutesRequest",
        "FirewallSyncRoutesResult",
      ),
      FirewallResolveHostname: unary(
        "/clawker.admin.v1.AdminService/FirewallResolveHostname",
        "FirewallResolveHostnameRequest",
        "FirewallResolveHostnameResult",
      ),
      ListAgents: unary("/clawker.admin.v1.AdminService/ListAgents", "ListAgentsRequest", "ListAgentsResult"),
      GetSystemTime: unary(
        "/clawker.admin.v1.AdminService/GetSystemTime",
        "GetSystemTimeRequest",
        "GetSystemTimeResult",
      ),
      WatchSOS: {
        path: "/clawker.admin.v1.AdminService/WatchSOS",
        request: "WatchSOSRequest",
        response: "SOS",
        clientStreaming: false,
        serverStreaming: true,
      },
      ...ADMIN_EXTENSION_METHODS,
    },
  },
  messages: {
    FirewallInitRequest: m(),
    FirewallInitResult: m(
      f(1, "envoy_ip", "string"),
      f(2, "coredns_ip", "string"),
      f(3, "network_id", "string"),
    ),
    FirewallRemoveRequest: m(),
    FirewallRemoveResult: m(),
    FirewallEnableRequest: m(f(1, "container_id", "string")),
    FirewallEnableResult: m(),
    FirewallDisableRequest: m(f(1, "container_id", "string")),
    FirewallDisableResult: m(),
    FirewallBypassRequest: m(f(1, "container_id", "string"), f(2, "timeout_seconds", "uint32")),
    FirewallBypassResult: m(),
    FirewallAddRulesRequest: m(r(1, "rules", "EgressRule")),
    FirewallAddRulesResult: m(r(1, "statuses", "AddRuleStatus"), f(2, "stack_restarted", "bool")),
    FirewallRemoveRuleRequest: m(
      f(1, "dst", "string"),
      f(2, "proto", "string"),
      f(3, "port", "string"),
      f(4, "path", "string"),
      f(5, "all", "bool"),
      ...ADMIN_EXTENSION_FIELDS.FirewallRemoveRuleRequest,
    ),
    FirewallRemoveRuleResult: m(f(1, "stack_restarted", "bool"), f(2, "status", "RemoveRuleStatus")),
    FirewallListRulesRequest: m(),
    FirewallListRulesResult: m(r(1, "rules", "EgressRule")),
    FirewallReloadRequest: m(),
    FirewallReloadResult: m(f(1, "stack_restarted", "bool")),
    FirewallStatusRequest: m(),
    FirewallStatusResult: m(
      f(1, "running", "bool"),
      f(2, "envoy_health", "bool"),
      f(3, "coredns_health", "bool"),
      f(4, "rule_count", "int32"),
      f(5, "envoy_ip", "string"),
      f(6, "coredns_ip", "string"),
      f(7, "network_id", "string"),
      f(8, "cidr", "string"),
      ...ADMIN_EXTENSION_FIELDS.FirewallStatusResult,
    ),
    FirewallRotateCARequest: m(),
    FirewallRotateCAResult: m(f(1, "stack_restarted", "bool")),
    FirewallSyncRoutesRequest: m(r(1, "routes", "Route")),
    FirewallSyncRoutesResult: m(f(1, "applied", "uint32")),
    FirewallResolveHostnameRequest: m(f(1, "hostname", "string")),
    FirewallResolveHostnameResult: m(r(1, "addresses", "string")),
    ListAgentsRequest: m(),
    ListAgentsResult: m(r(1, "agents", "Agent")),
    GetSystemTimeRequest: m(),
    GetSystemTimeResult: m(f(1, "unix_nanos", "int64")),
    WatchSOSRequest: m(),
    Route: m(f(1, "identity", "uint32"), f(2, "dst_port", "uint32"), f(3, "envoy_port", "uint32")),
    EgressRule: m(
      f(1, "dst", "string"),
      f(2, "proto", "string"),
      f(3, "port", "string"),
      f(4, "action", "string"),
      r(5, "path_rules", "PathRule"),
      f(6, "path_default", "string"),
      f(7, "insecure_skip_tls_verify", "bool"),
      ...ADMIN_EXTENSION_FIELDS.EgressRule,
    ),
    PathRule: m(f(1, "path", "string"), f(2, "action", "string"), r(3, "methods", "string")),
    Agent: m(
      f(1, "agent_name", "string"),
      f(2, "container_id", "string"),
      f(3, "cert_thumbprint", "string"),
      f(4, "registered_at_unix", "int64"),
      f(5, "last_seen_unix", "int64"),
      f(6, "project", "string"),
    ),
    SOS: m(f(1, "message", "string"), f(2, "kind", "SOSKind")),
    ...ADMIN_EXTENSION_MESSAGES,
  },
  enums: {
    AddRuleStatus: {
      ADD_RULE_STATUS_UNSPECIFIED: 0,
      ADD_RULE_STATUS_ADDED: 1,
      ADD_RULE_STATUS_MODIFIED: 2,
      ADD_RULE_STATUS_UNCHANGED: 3,
    },
    RemoveRuleStatus: {
      REMOVE_RULE_STATUS_UNSPECIFIED: 0,
      REMOVE_RULE_STATUS_REMOVED: 1,
      REMOVE_RULE_STATUS_PATH_REMOVED: 2,
      REMOVE_RULE_STATUS_NOT_FOUND: 3,
    },
    SOSKind: {
      SOS_KIND_UNSPECIFIED: 0,
      SOS_KIND_BPFFS_DELEGATION: 1,
    },
  },
};

/** API.md §2: clawker.agent.v1. */
export const AGENT: FileSpec = {
  file: "clawker/agent/v1/agent.proto",
  package: "clawker.agent.v1",
  services: {
    AgentService: {
      Register: unary("/clawker.agent.v1.AgentService/Register", "RegisterRequest", "Welcome"),
    },
  },
  messages: {
    RegisterRequest: m(f(1, "agent_name", "string"), f(2, "project", "string")),
    Welcome: m(),
  },
  enums: {},
};

/** API.md §3: clawker.clawkerd.v1. */
export const CLAWKERD: FileSpec = {
  file: "clawker/clawkerd/v1/clawkerd.proto",
  package: "clawker.clawkerd.v1",
  services: {
    ClawkerdService: {
      Session: {
        path: "/clawker.clawkerd.v1.ClawkerdService/Session",
        request: "Command",
        response: "Response",
        clientStreaming: true,
        serverStreaming: true,
      },
    },
  },
  messages: {
    Command: m(
      f(1, "command_id", "string"),
      o(2, "hello", "Hello"),
      o(3, "shell", "ShellCommand"),
      o(4, "stdin", "Stdin"),
      o(5, "close_stdin", "CloseStdin"),
      o(6, "signal", "Signal"),
      o(7, "register_required", "RegisterRequired"),
      o(8, "agent_ready", "AgentReady"),
      o(9, "agent_initialized", "AgentInitialized"),
    ),
    Hello: m(),
    ShellCommand: m(
      r(1, "stages", "PipeStage"),
      f(2, "timeout_seconds", "uint32"),
      f(3, "initial_stdin", "bytes"),
      f(4, "print_output", "bool"),
      f(5, "exit_on_non_zero", "bool"),
    ),
    PipeStage: m(
      r(1, "argv", "string"),
      f(2, "uid", "uint32"),
      f(3, "gid", "uint32"),
      f(4, "cwd", "string"),
      f(5, "env", "map<string,string>"),
    ),
    Stdin: m(f(1, "data", "bytes")),
    CloseStdin: m(),
    Signal: m(f(1, "signo", "int32")),
    RegisterRequired: m(),
    AgentReady: m(f(1, "default_cmd", "string")),
    AgentInitialized: m(),
    Response: {
      fields: [
        f(1, "command_id", "string"),
        o(2, "hello_ack", "HelloAck"),
        o(3, "started", "Started"),
        o(4, "output", "OutputChunk"),
        o(6, "stage_exit", "StageExit"),
        o(7, "done", "Done"),
        o(8, "error", "Error"),
        o(9, "register_done", "RegisterDone"),
      ],
      reserved: [5],
    },
    HelloAck: m(f(1, "initialized", "bool"), f(2, "cmd_running", "bool")),
    Started: m(),
    OutputChunk: m(f(1, "data", "bytes")),
    StageExit: m(f(1, "stage_index", "uint32"), f(2, "exit_code", "int32"), f(3, "signo", "int32")),
    Done: m(f(1, "final_exit_code", "int32")),
    Error: m(f(1, "code", "ErrorCode"), f(2, "message", "string")),
    RegisterDone: m(f(1, "ok", "bool"), f(2, "error", "string")),
  },
  enums: {
    ErrorCode: {
      ERROR_CODE_UNSPECIFIED: 0,
      ERROR_CODE_UNKNOWN_COMMAND_ID: 1,
      ERROR_CODE_INVALID_REQUEST: 2,
      ERROR_CODE_SPAWN_FAILED: 3,
      ERROR_CODE_TIMEOUT: 4,
      ERROR_CODE_IO_ERROR: 5,
      ERROR_CODE_NOT_FOUND: 6,
    },
  },
};

/** A server-streaming RPC. */
function serverStream(path: string, request: string, response: string): MethodSpec {
  return { path, request, response, clientStreaming: false, serverStreaming: true };
}

/**
 * OUR OWN SERVICE beyond the Go contract (API.md §6, issue 13): clawker.jobs.v1.JobService, served
 * by the control plane (scope admin) and by clawkerd (mTLS only). The whole file is an extension.
 */
export const JOBS: FileSpec = {
  file: "clawker/jobs/v1/jobs.proto",
  package: "clawker.jobs.v1",
  services: {
    JobService: {
      StartJob: unary("/clawker.jobs.v1.JobService/StartJob", "StartJobRequest", "StartJobResponse"),
      StopJob: unary("/clawker.jobs.v1.JobService/StopJob", "StopJobRequest", "StopJobResponse"),
      GetJobStatus: unary(
        "/clawker.jobs.v1.JobService/GetJobStatus",
        "GetJobStatusRequest",
        "GetJobStatusResponse",
      ),
      ListJobs: unary("/clawker.jobs.v1.JobService/ListJobs", "ListJobsRequest", "ListJobsResponse"),
      WatchJobOutput: serverStream(
        "/clawker.jobs.v1.JobService/WatchJobOutput",
        "WatchJobOutputRequest",
        "WatchJobOutputResponse",
      ),
    },
    JobGateService: {
      OpenJobGate: unary(
        "/clawker.jobs.v1.JobGateService/OpenJobGate",
        "OpenJobGateRequest",
        "OpenJobGateResponse",
      ),
      ReserveSpareGate: unary(
        "/clawker.jobs.v1.JobGateService/ReserveSpareGate",
        "ReserveSpareGateRequest",
        "ReserveSpareGateResponse",
      ),
    },
    AgentUsageService: {
      ListAgentUsage: unary(
        "/clawker.jobs.v1.AgentUsageService/ListAgentUsage",
        "ListAgentUsageRequest",
        "ListAgentUsageResponse",
      ),
    },
  },
  messages: {
    JobLimits: m(
      f(1, "cpu_millis", "uint32"),
      f(2, "memory_max_bytes", "uint64"),
      f(3, "io_read_bps", "uint64"),
      f(4, "io_write_bps", "uint64"),
      f(5, "io_read_iops", "uint32"),
      f(6, "io_write_iops", "uint32"),
      f(7, "pids_max", "uint32"),
    ),
    Job: m(
      f(1, "name", "string"),
      f(2, "state", "JobState"),
      r(3, "argv", "string"),
      f(4, "exit_code", "int32"),
      f(5, "signo", "int32"),
      f(6, "reason", "string"),
      f(7, "started_at_unix_nanos", "int64"),
      f(8, "ended_at_unix_nanos", "int64"),
      f(9, "limits", "JobLimits"),
      f(10, "is_limited", "bool"),
      f(11, "limits_note", "string"),
      f(12, "output_bytes", "uint64"),
      f(13, "output_dropped_bytes", "uint64"),
    ),
    JobStats: m(
      f(1, "cpu_usage_usec", "uint64"),
      f(2, "cpu_user_usec", "uint64"),
      f(3, "cpu_system_usec", "uint64"),
      f(4, "cpu_nr_periods", "uint64"),
      f(5, "cpu_nr_throttled", "uint64"),
      f(6, "cpu_throttled_usec", "uint64"),
      f(7, "memory_current_bytes", "uint64"),
      f(8, "memory_peak_bytes", "uint64"),
      f(9, "memory_events", "map<string,uint64>"),
      f(10, "io_read_bytes", "uint64"),
      f(11, "io_write_bytes", "uint64"),
      f(12, "io_read_ops", "uint64"),
      f(13, "io_write_ops", "uint64"),
      f(14, "pids_current", "uint64"),
    ),
    StartJobRequest: m(
      f(1, "agent_name", "string"),
      f(2, "project", "string"),
      r(3, "argv", "string"),
      f(4, "cwd", "string"),
      f(5, "env", "map<string,string>"),
      f(6, "limits", "JobLimits"),
      f(1000, "hold_for_placement", "bool"),
      f(1001, "job_uuid", "string"),
      f(1002, "spare_placement", "SparePlacement"),
    ),
    SparePlacement: m(f(1, "is_limited", "bool"), f(2, "limits_note", "string")),
    StartJobResponse: m(f(1, "job", "Job"), f(1000, "held_pid", "uint32")),
    OpenJobGateRequest: m(
      f(1, "name", "string"),
      f(2, "run", "bool"),
      f(3, "is_limited", "bool"),
      f(4, "limits_note", "string"),
    ),
    OpenJobGateResponse: m(f(1, "job", "Job")),
    ReserveSpareGateRequest: m(f(1, "job_uuid", "string")),
    ReserveSpareGateResponse: m(f(1, "pid", "uint32")),
    ListAgentUsageRequest: m(f(1, "agent_name", "string"), f(2, "project", "string")),
    AgentUsage: m(
      f(1, "agent_name", "string"),
      f(2, "project", "string"),
      f(3, "container_id", "string"),
      f(4, "stats", "JobStats"),
      f(5, "cpu_limit_millis", "uint32"),
      f(6, "memory_limit_bytes", "uint64"),
      f(7, "pids_limit", "uint64"),
      f(8, "note", "string"),
    ),
    ListAgentUsageResponse: m(r(1, "agents", "AgentUsage")),
    StopJobRequest: m(f(1, "name", "string"), f(2, "grace_seconds", "uint32")),
    StopJobResponse: m(f(1, "job", "Job")),
    GetJobStatusRequest: m(f(1, "name", "string")),
    GetJobStatusResponse: m(f(1, "job", "Job"), f(2, "stats", "JobStats")),
    ListJobsRequest: m(f(1, "agent_name", "string"), f(2, "project", "string"), f(3, "state", "JobState")),
    ListJobsResponse: m(r(1, "jobs", "Job")),
    WatchJobOutputRequest: m(f(1, "name", "string")),
    WatchJobOutputResponse: m(f(1, "data", "bytes"), f(2, "dropped_bytes", "uint64")),
  },
  enums: {
    JobState: {
      JOB_STATE_UNSPECIFIED: 0,
      JOB_STATE_RUNNING: 1,
      JOB_STATE_COMPLETED: 2,
      JOB_STATE_FAILED: 3,
      JOB_STATE_STOPPED: 4,
    },
  },
};

/**
 * OUR OWN SERVICES beyond the Go contract (API.md §6, issue 11): clawker.egress.v1.EgressService on
 * the admin listener (scope admin) and AgentEgressService on the agent listener (scope
 * agent:self:request). The whole file is an extension.
 */
export const EGRESS: FileSpec = {
  file: "clawker/egress/v1/egress.proto",
  package: "clawker.egress.v1",
  services: {
    EgressService: {
      WatchFirewallEvents: serverStream(
        "/clawker.egress.v1.EgressService/WatchFirewallEvents",
        "WatchFirewallEventsRequest",
        "WatchFirewallEventsResponse",
      ),
      ListFirewallDenials: unary(
        "/clawker.egress.v1.EgressService/ListFirewallDenials",
        "ListFirewallDenialsRequest",
        "ListFirewallDenialsResponse",
      ),
      ApproveEgress: unary(
        "/clawker.egress.v1.EgressService/ApproveEgress",
        "ApproveEgressRequest",
        "ApproveEgressResponse",
      ),
      DismissEgress: unary(
        "/clawker.egress.v1.EgressService/DismissEgress",
        "DismissEgressRequest",
        "DismissEgressResponse",
      ),
    },
    AgentEgressService: {
      RequestEgress: unary(
        "/clawker.egress.v1.AgentEgressService/RequestEgress",
        "RequestEgressRequest",
        "RequestEgressResponse",
      ),
    },
  },
  messages: {
    RuleRef: m(
      f(1, "key", "string"),
      f(2, "project", "string"),
      f(3, "agent_name", "string"),
      f(4, "action", "string"),
    ),
    FirewallEvent: m(
      f(1, "schema_version", "uint32"),
      f(2, "seq", "uint64"),
      f(3, "time_unix_nanos", "int64"),
      f(4, "agent_name", "string"),
      f(5, "project", "string"),
      f(6, "container_id", "string"),
      f(7, "dst_name", "string"),
      f(8, "dst_addr", "string"),
      f(9, "port", "uint32"),
      f(10, "protocol", "string"),
      f(11, "verdict", "Verdict"),
      f(12, "layer", "Layer"),
      f(13, "rule", "RuleRef"),
      f(14, "reason", "string"),
      f(15, "method", "string"),
      f(16, "path", "string"),
      f(17, "http_status", "uint32"),
      f(18, "bytes_in", "uint64"),
      f(19, "bytes_out", "uint64"),
      f(20, "duration_micros", "uint64"),
      f(21, "gap_count", "uint64"),
    ),
    EventFilter: m(
      f(1, "agent_name", "string"),
      f(2, "project", "string"),
      r(3, "verdicts", "Verdict"),
      r(4, "layers", "Layer"),
    ),
    WatchFirewallEventsRequest: m(
      f(1, "filter", "EventFilter"),
      f(2, "since_unix_nanos", "int64"),
      f(3, "no_follow", "bool"),
    ),
    WatchFirewallEventsResponse: m(f(1, "event", "FirewallEvent")),
    DenialGroup: m(
      f(1, "id", "string"),
      f(2, "agent_name", "string"),
      f(3, "project", "string"),
      f(4, "dst_name", "string"),
      f(5, "dst_addr", "string"),
      f(6, "port", "uint32"),
      f(7, "protocol", "string"),
      f(8, "count", "uint64"),
      f(9, "first_seen_unix_nanos", "int64"),
      f(10, "last_seen_unix_nanos", "int64"),
      f(11, "layer", "Layer"),
      f(12, "reason", "string"),
      f(13, "suggested_rule", "clawker.admin.v1.EgressRule"),
      r(14, "requests", "EgressRequest"),
    ),
    EgressRequest: m(
      f(1, "id", "string"),
      f(2, "agent_name", "string"),
      f(3, "project", "string"),
      f(4, "dst", "string"),
      f(5, "port", "uint32"),
      f(6, "proto", "string"),
      f(7, "reason", "string"),
      f(8, "requested_at_unix_nanos", "int64"),
    ),
    ListFirewallDenialsRequest: m(
      f(1, "agent_name", "string"),
      f(2, "project", "string"),
      f(3, "since_unix_nanos", "int64"),
    ),
    ListFirewallDenialsResponse: m(r(1, "groups", "DenialGroup"), r(2, "requests", "EgressRequest")),
    ApproveEgressRequest: m(
      f(1, "denial_id", "string"),
      f(2, "request_id", "string"),
      f(3, "scope", "ApprovalScope"),
      f(4, "expires_after_seconds", "uint32"),
    ),
    ApproveEgressResponse: m(
      f(1, "rule", "clawker.admin.v1.EgressRule"),
      f(2, "expires_at_unix_nanos", "int64"),
    ),
    DismissEgressRequest: m(f(1, "denial_id", "string"), f(2, "request_id", "string")),
    DismissEgressResponse: m(),
    RequestEgressRequest: m(
      f(1, "dst", "string"),
      f(2, "port", "uint32"),
      f(3, "proto", "string"),
      f(4, "reason", "string"),
    ),
    RequestEgressResponse: m(f(1, "request_id", "string"), f(2, "already_allowed", "bool")),
  },
  enums: {
    Verdict: { VERDICT_UNSPECIFIED: 0, VERDICT_ALLOWED: 1, VERDICT_DENIED: 2, VERDICT_BYPASSED: 3 },
    Layer: { LAYER_UNSPECIFIED: 0, LAYER_DNS: 1, LAYER_BPF: 2, LAYER_PROXY: 3 },
    ApprovalScope: {
      APPROVAL_SCOPE_UNSPECIFIED: 0,
      APPROVAL_SCOPE_AGENT: 1,
      APPROVAL_SCOPE_PROJECT: 2,
      APPROVAL_SCOPE_GLOBAL: 3,
    },
  },
};

/**
 * OUR OWN SERVICE beyond the Go contract (API.md §6): clawker.trust.v1.FirewallTrustService, served
 * by clawkerd only (mTLS, pinned to the control plane). The whole file is an extension.
 */
export const TRUST: FileSpec = {
  file: "clawker/trust/v1/trust.proto",
  package: "clawker.trust.v1",
  services: {
    FirewallTrustService: {
      InstallFirewallCa: unary(
        "/clawker.trust.v1.FirewallTrustService/InstallFirewallCa",
        "InstallFirewallCaRequest",
        "InstallFirewallCaResponse",
      ),
    },
  },
  messages: {
    InstallFirewallCaRequest: m(f(1, "ca_bundle_pem", "string")),
    InstallFirewallCaResponse: m(
      f(1, "changed", "bool"),
      r(2, "fingerprints", "string"),
      f(3, "system_store", "bool"),
      f(4, "bundle", "bool"),
      f(5, "absent", "bool"),
    ),
  },
  enums: {},
};

/** The whole contract: API.md plus our extensions. */
export const CONTRACT: readonly FileSpec[] = [
  ADMIN,
  AGENT,
  withExtension(CLAWKERD, CLAWKERD_EXTENSION_FIELDS, CLAWKERD_EXTENSION_MESSAGES),
  JOBS,
  EGRESS,
  TRUST,
];
