// AgentSession's command discipline against a scripted TEST DOUBLE of clawkerd (a real grpc-js
// server, plain loopback mTLS): exactly one Done or Error ends a command and later strays are
// ignored, a stream that ends mid-command fails the reader, ids in flight cannot be reused,
// Error answers become CommandError, and a slow reader pauses the stream instead of buffering.
// The double is what a Go clawkerd looks like (no flow-control offer), or, with `offer`, a
// clawkerd that offers per-command flow control and then breaks it, which the real one cannot be
// made to do (the well-behaved side is tested against the real clawkerd in agents-flow-control).
import assert from "node:assert/strict";
import tls from "node:tls";
import { after, before, test } from "node:test";
import { Server, ServerCredentials, credentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { mintTrustSet, type TrustSet } from "@clawker/adminclient";
import { Overseer, type CommandEvent } from "@clawker/overseer";
import { clawkerd } from "@clawker/proto";
import pino from "pino";
import { AgentSession, CommandError, SessionError } from "../src/agents/session.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { waitSteady } from "../../clawkerd/test/fixtures/processes.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const log = pino({ level: "silent" });
type Call = ServerDuplexStream<clawkerd.Command, clawkerd.Response>;
/** How the double answers a ShellCommand whose argv[0] names the script. */
const scripts: Record<string, (id: string, call: Call) => void> = {
  twice: (id, call) => {
    call.write({ commandId: id, payload: { $case: "started", value: {} } });
    call.write({ commandId: id, payload: { $case: "output", value: { data: Buffer.from("x") } } });
    call.write({ commandId: id, payload: { $case: "done", value: { finalExitCode: 0 } } });
    call.write({ commandId: id, payload: { $case: "done", value: { finalExitCode: 9 } } });
    call.write({ commandId: id, payload: { $case: "error", value: { code: 4, message: "stray" } } });
  },
  vanish: (id, call) => {
    call.write({ commandId: id, payload: { $case: "started", value: {} } });
    call.end();
  },
  fail: (id, call) => {
    call.write({
      commandId: id,
      payload: {
        $case: "error",
        value: { code: clawkerd.ErrorCode.ERROR_CODE_SPAWN_FAILED, message: "no such file" },
      },
    });
  },
  flood: (id, call) => {
    for (let i = 0; i < 2000; i++) {
      call.write({ commandId: id, payload: { $case: "output", value: { data: Buffer.alloc(1024, 97) } } });
    }
    call.write({ commandId: id, payload: { $case: "done", value: { finalExitCode: 0 } } });
  },
  hang: () => undefined,
  /** Output past any window, with no credit: a clawkerd that ignores flow control. */
  overdraw: (id, call) => {
    for (let i = 0; i < 80; i++) {
      call.write({ commandId: id, payload: { $case: "output", value: { data: Buffer.alloc(1024, 98) } } });
    }
  },
  /** Endless StageExits: a flood of responses that spend no output credit. */
  stageflood: (id, call) => {
    for (let i = 0; i < 1000; i++) {
      call.write({
        commandId: id,
        payload: { $case: "stageExit", value: { stageIndex: 0, exitCode: 0, signo: 0 } },
      });
    }
  },
  /** Sends 256 KiB in 1 KiB chunks strictly within the credit it was given, then Done. */
  windowed: (id, call) => {
    const flow = received.find((c) => c.commandId === id && c.payload?.$case === "shell");
    const window = flow?.payload?.$case === "shell" ? flow.payload.value.flowControl : undefined;
    let credit = window?.outputWindowBytes ?? 0;
    let sent = 0;
    const pump = (): void => {
      while (credit >= 1024 && sent < 256 * 1024) {
        call.write({ commandId: id, payload: { $case: "output", value: { data: Buffer.alloc(1024, 99) } } });
        credit -= 1024;
        sent += 1024;
      }
      if (sent === 256 * 1024)
        call.write({ commandId: id, payload: { $case: "done", value: { finalExitCode: 0 } } });
    };
    onCredit.set(id, (bytes) => {
      credit += bytes;
      pump();
    });
    pump();
  },
};
/** What the double offers in HelloAck for the next session (undefined: a Go clawkerd). */
let offer: clawkerd.FlowControlOffer | undefined;
/** Every Command the double received, in order, and the call it came on. */
const received: clawkerd.Command[] = [];
const callOf = new Map<string, Call>();
/** OutputCredit handlers of the `windowed` script, by command id. */
const onCredit = new Map<string, (bytes: number) => void>();

let trust: TrustSet;
let server: Server;
let port: number;
const overseer = new Overseer();
const progress: CommandEvent[] = [];
const sessions: AgentSession[] = [];

before(async () => {
  trust = await mintTrustSet();
  overseer.commands.subscribe((e) => void progress.push(e));
  server = new Server();
  server.addService(clawkerd.ClawkerdServiceService, {
    session: (call: Call) => {
      const offered = offer;
      call.on("data", (cmd: clawkerd.Command) => {
        received.push(cmd);
        callOf.set(cmd.commandId, call);
        if (cmd.payload?.$case === "hello") {
          call.write({
            commandId: "hello",
            payload: {
              $case: "helloAck",
              value: { initialized: true, cmdRunning: false, flowControl: offered },
            },
          });
        } else if (cmd.payload?.$case === "shell") {
          scripts[cmd.payload.value.stages[0]!.argv[0]!]!(cmd.commandId, call);
        } else if (cmd.payload?.$case === "outputCredit") {
          onCredit.get(cmd.commandId)?.(cmd.payload.value.bytes);
        }
      });
      call.on("end", () => call.end());
    },
  });
  const s = trust.controlPlaneServer;
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      ServerCredentials.createSsl(
        Buffer.from(trust.ca.certPem),
        [{ private_key: Buffer.from(s.keyPem), cert_chain: Buffer.from(s.certPem) }],
        true,
      ),
      (err, p) => (err ? reject(err) : resolve(p)),
    ),
  );
});

after(async () => {
  for (const s of sessions) s.close();
  server.forceShutdown();
  await overseer.close();
});

async function open(
  highWaterMark?: number,
  flow: { offer?: clawkerd.FlowControlOffer; outputWindow?: { bytes: number; chunks: number } } = {},
): Promise<AgentSession> {
  offer = flow.offer;
  received.length = 0;
  const c = trust.controlPlaneClient;
  const client = new clawkerd.ClawkerdServiceClient(
    `localhost:${port}`,
    credentials.createSsl(Buffer.from(trust.ca.certPem), Buffer.from(c.keyPem), Buffer.from(c.certPem)),
  );
  const session = new AgentSession({
    containerId: "c1",
    stream: client.session(),
    commands: overseer.commands,
    log,
    ...(highWaterMark === undefined ? {} : { highWaterMark }),
    ...(flow.outputWindow === undefined ? {} : { outputWindow: flow.outputWindow }),
  });
  void session.closed.then(() => client.close());
  sessions.push(session);
  assert.deepEqual(await session.hello(5000), {
    initialized: true,
    cmdRunning: false,
    flowControl: flow.offer,
  });
  assert.equal(session.hasCommandFlowControl, flow.offer !== undefined);
  return session;
}

/** The kinds of Command the double received for `id`. */
const kindsFor = (id: string): string[] =>
  received.filter((c) => c.commandId === id).map((c) => c.payload?.$case ?? "none");

const shell = (script: string): clawkerd.ShellCommand => ({
  stages: [{ argv: [script], uid: 0, gid: 0, cwd: "/", env: {} }],
  timeoutSeconds: 0,
  initialStdin: Buffer.alloc(0),
  printOutput: false,
  exitOnNonZero: false,
});

test("the first Done ends the command; a second Done and a stray Error are ignored", async () => {
  const s = await open();
  const kinds: string[] = [];
  for await (const r of s.exec(shell("twice"), { commandId: "t1" })) kinds.push(r.payload!.$case);
  assert.deepEqual(kinds, ["started", "output", "done"]);
  // Ids are unique per session: a reused one could be answered by the strays of the first.
  assert.throws(
    () => s.exec(shell("twice"), { commandId: "t1" }),
    (e) => e instanceof SessionError && e.reason === "duplicate_command",
  );
  assert.equal(await s.run(shell("twice"), { commandId: "t2" }), 0);
  for (const id of ["t1", "t2"]) {
    const done = progress.filter((e) => e.commandId === id && e.type === "command.done");
    assert.deepEqual(
      done.map((e) => (e.type === "command.done" ? e.exitCode : -1)),
      [0],
      "strays are not published",
    );
  }
});

test("an id in flight cannot be reused", async () => {
  const s = await open();
  s.exec(shell("hang"), { commandId: "h1" });
  assert.throws(
    () => s.exec(shell("hang"), { commandId: "h1" }),
    (e) => e instanceof SessionError && e.reason === "duplicate_command",
  );
});

test("an Error answer rejects run() with the ErrorCode name", async () => {
  const s = await open();
  await assert.rejects(
    s.run(shell("fail")),
    (e) => e instanceof CommandError && e.code === "ERROR_CODE_SPAWN_FAILED",
  );
});

test("a stream that ends mid-command fails the reader with session_closed", async () => {
  const s = await open();
  const it = s.exec(shell("vanish"));
  const first = await it.next();
  assert.equal(first.value?.payload?.$case, "started");
  await assert.rejects(it.next(), (e) => e instanceof SessionError && e.reason === "session_closed");
  assert.match(await s.closed, /stream/);
  assert.throws(
    () => s.exec(shell("hang")),
    (e) => e instanceof SessionError && e.reason === "session_closed",
  );
});

test("a slow reader gets every byte in order; the stream is paused, not buffered without bound", async () => {
  const s = await open(8);
  let bytes = 0;
  let last = "";
  // A caller's flow_control is not passed on to a clawkerd that never offered it.
  const own = { ...shell("flood"), flowControl: { outputWindowBytes: 1, outputWindowChunks: 1 } };
  for await (const r of s.exec(own, { commandId: "f1" })) {
    if (r.payload?.$case === "output") bytes += r.payload.value.data.length;
    last = r.payload!.$case;
    if (bytes % (256 * 1024) === 0) await new Promise((r) => setImmediate(r));
  }
  assert.equal(bytes, 2000 * 1024);
  assert.equal(last, "done");
  const sent = received.find((c) => c.commandId === "f1")!.payload;
  assert.equal(sent?.$case === "shell" ? sent.value.flowControl : "no shell", undefined);
  assert.deepEqual(kindsFor("f1"), ["shell"], "no credit goes to a clawkerd without the offer");
});

test("without the offer, stdin goes out at once (the stream's own backpressure only); with it, within the window", async () => {
  const legacy = await open();
  legacy.exec(shell("hang"), { commandId: "in1" });
  assert.equal(await legacy.stdin("in1", Buffer.alloc(300 << 10, 1)), true);
  assert.equal(await legacy.closeStdin("in1"), true);
  await waitFor(() => kindsFor("in1").at(-1) === "closeStdin", { what: "stdin at the double" });
  assert.equal(kindsFor("in1").filter((k) => k === "stdin").length, 5, "in 64 KiB pieces");

  const s = await open(undefined, { offer: { stdinWindowBytes: 100 << 10 } });
  s.exec({ ...shell("hang"), initialStdin: Buffer.alloc(30 << 10, 2) }, { commandId: "in2" });
  const stdinBytes = (): number =>
    received
      .filter((c) => c.commandId === "in2")
      .reduce((n, c) => n + (c.payload?.$case === "stdin" ? c.payload.value.data.length : 0), 0);
  let done = false;
  const write = s.stdin("in2", Buffer.alloc(200 << 10, 3)).then((ok) => ((done = ok), ok));
  const closing = s.closeStdin("in2");
  // initial_stdin counts against the window: 70 KiB more may go, then the writer waits.
  assert.equal(await waitSteady(stdinBytes, { quietMs: 200, what: "the window filled" }), 70 << 10);
  assert.equal(done, false);
  const credit = (bytes: number): void => {
    callOf.get("in2")!.write({ commandId: "in2", payload: { $case: "stdinCredit", value: { bytes } } });
  };
  credit(50 << 10);
  await waitFor(() => stdinBytes() === 120 << 10, { what: "50 KiB more" });
  credit(100 << 10);
  assert.equal(await write, true);
  assert.equal(await closing, true);
  await waitFor(() => kindsFor("in2").at(-1) === "closeStdin", { what: "CloseStdin at the double" });
  assert.equal(stdinBytes(), 200 << 10, "CloseStdin came after every earlier Stdin");
});

test("with the offer, the session's window replaces the caller's and output is credited as it is read", async () => {
  const s = await open(undefined, {
    offer: { stdinWindowBytes: 1 << 20 },
    outputWindow: { bytes: 16 << 10, chunks: 64 },
  });
  const own = { ...shell("windowed"), flowControl: { outputWindowBytes: 1 << 30, outputWindowChunks: 0 } };
  let bytes = 0;
  for await (const r of s.exec(own, { commandId: "w1" })) {
    if (r.payload?.$case === "output") bytes += r.payload.value.data.length;
  }
  assert.equal(bytes, 256 << 10, "a double that sends only within its credit got all of it out");
  const sent = received.find((c) => c.commandId === "w1")!.payload;
  assert.deepEqual(sent?.$case === "shell" ? sent.value.flowControl : undefined, {
    outputWindowBytes: 16 << 10,
    outputWindowChunks: 64,
  });
  const credits = received.flatMap((c) =>
    c.commandId === "w1" && c.payload?.$case === "outputCredit" ? [c.payload.value] : [],
  );
  assert.ok(
    credits.every((c) => c.bytes === 4 << 10 && c.chunks === 4),
    JSON.stringify(credits[0]),
  );
});

test("a clawkerd that overdraws a command's window, or floods it with responses, loses the session", async () => {
  for (const script of ["overdraw", "stageflood"]) {
    const s = await open(undefined, {
      offer: { stdinWindowBytes: 1 << 20 },
      outputWindow: { bytes: 64 << 10, chunks: 256 },
    });
    const it = s.exec(shell(script));
    assert.match(await s.closed, /flow control violated/, script);
    await assert.rejects(
      async () => {
        for (;;) if ((await it.next()).done === true) break;
      },
      (e) => e instanceof SessionError && e.reason === "session_closed",
    );
  }
});

test("return() settles a next() that is already waiting", async () => {
  const s = await open();
  const it = s.exec(shell("hang"));
  const waiting = it.next();
  const settled = Promise.race([
    waiting.then(() => "settled"),
    new Promise((resolve) => setImmediate(() => resolve("pending"))),
  ]);
  assert.equal(await settled, "pending", "nothing has arrived yet");
  await it.return!();
  assert.deepEqual(await waiting, { value: undefined, done: true });
});
