// AgentSession's command discipline against a scripted TEST DOUBLE of clawkerd (a real grpc-js
// server, plain loopback mTLS): exactly one Done or Error ends a command and later strays are
// ignored, a stream that ends mid-command fails the reader, ids in flight cannot be reused,
// Error answers become CommandError, and a slow reader pauses the stream instead of buffering.
import assert from "node:assert/strict";
import tls from "node:tls";
import { after, before, test } from "node:test";
import { Server, ServerCredentials, credentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { mintTrustSet, type TrustSet } from "@clawker/adminclient";
import { Overseer, type CommandEvent } from "@clawker/overseer";
import { clawkerd } from "@clawker/proto";
import pino from "pino";
import { AgentSession, CommandError, SessionError } from "../src/agents/session.js";

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
};

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
      call.on("data", (cmd: clawkerd.Command) => {
        if (cmd.payload?.$case === "hello") {
          call.write({
            commandId: "hello",
            payload: { $case: "helloAck", value: { initialized: true, cmdRunning: false } },
          });
        } else if (cmd.payload?.$case === "shell") {
          scripts[cmd.payload.value.stages[0]!.argv[0]!]!(cmd.commandId, call);
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

async function open(highWaterMark?: number): Promise<AgentSession> {
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
  });
  void session.closed.then(() => client.close());
  sessions.push(session);
  // A double without the flow-control offer, like the Go clawkerd.
  assert.deepEqual(await session.hello(5000), {
    initialized: true,
    cmdRunning: false,
    flowControl: undefined,
  });
  return session;
}

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
  for await (const r of s.exec(shell("flood"))) {
    if (r.payload?.$case === "output") bytes += r.payload.value.data.length;
    last = r.payload!.$case;
    if (bytes % (256 * 1024) === 0) await new Promise((r) => setImmediate(r));
  }
  assert.equal(bytes, 2000 * 1024);
  assert.equal(last, "done");
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
