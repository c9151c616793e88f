// StreamTable and PendingStreams: the Map and Set operations node:http2 calls on a session's stream
// tables (a seeded random run against a real Map), installed on real node:http2 server sessions
// (streams open, finish, and a destroyed session closes the ones still open), refused where the
// shape is not there, and what they are for: under 64 streams in flight on one session, V8's GC
// trace of a real server process shows finished calls no longer surviving scavenges, against the
// same server keeping Node's own tables.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import http2 from "node:http2";
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { installStreamTables, PendingStreams, StreamTable } from "./stream-table.js";

void test("get, set, has, delete and size behave as a Map's; set on a known id replaces", () => {
  const table = new StreamTable<string>();
  assert.equal(table.size, 0);
  assert.equal(table.set(1, "a"), table, "set returns the table, as Map's does");
  table.set(3, "b").set(5, "c");
  assert.equal(table.size, 3);
  assert.equal(table.get(3), "b");
  assert.equal(table.has(5), true);
  assert.equal(table.get(7), undefined);
  table.set(3, "B");
  assert.equal(table.size, 3, "replacing an entry does not count it twice");
  assert.equal(table.get(3), "B");
  assert.equal(table.delete(3), true);
  assert.equal(table.delete(3), false, "a second delete finds nothing");
  assert.equal(table.has(3), false);
  assert.equal(table.size, 2);
  table.delete(1);
  table.delete(5);
  assert.equal(table.size, 0);
  table.set(9, "d");
  assert.deepEqual(
    [table.size, table.get(9), table.get(1)],
    [1, "d", undefined],
    "an emptied table keeps working",
  );
});

void test("forEach visits in id order and skips a stream deleted before its turn, as a Map's does", () => {
  const table = new StreamTable<string>();
  for (const id of [1, 3, 5, 7, 9, 11]) table.set(id, `s${id}`);
  const seen: Array<[string, number]> = [];
  table.forEach((stream, id, t) => {
    seen.push([stream, id]);
    assert.equal(t, table);
    // What destroying a stream does to Node's table while the session walks it, plus one more.
    t.delete(id);
    if (id === 3) t.delete(7);
  });
  assert.deepEqual(seen, [
    ["s1", 1],
    ["s3", 3],
    ["s5", 5],
    ["s9", 9],
    ["s11", 11],
  ]);
  assert.equal(table.size, 0);
});

/** 200,000 seeded random operations on a StreamTable hashing with `multiplier`, checked against a Map. */
function againstMap(multiplier: number | undefined): void {
  // A small LCG, so a failure replays (with the multiplier the message names).
  let seed = 0x2f6b1d;
  const next = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const table = new StreamTable<number>(multiplier === undefined ? {} : { multiplier });
  const oracle = new Map<number, number>();
  const at = (op: number): string => `at op ${op} (multiplier ${multiplier ?? "random"})`;
  let nextId = 1;
  for (let op = 0; op < 200_000; op++) {
    const roll = next(100);
    // Mostly fresh odd ids (as a client opens streams), some far ahead, gets and deletes of open
    // and unknown ids; bursts grow the table past 16 slots and drain it back to empty.
    if (roll < 45 || (op % 5_000 < 300 && roll < 90)) {
      const id = roll % 7 === 0 ? nextId + 2 * 16 * (1 + next(8)) : nextId;
      nextId += 2;
      table.set(id, op);
      oracle.set(id, op);
    } else if (roll < 90) {
      const open = [...oracle.keys()];
      const id = open.length > 0 && roll < 85 ? open[next(open.length)]! : 2 * next(50_000) + 1;
      assert.equal(table.delete(id), oracle.delete(id), `delete ${id} ${at(op)}`);
    } else {
      const id = 2 * next(Math.max(1, nextId)) + 1;
      assert.equal(table.get(id), oracle.get(id), `get ${id} ${at(op)}`);
      assert.equal(table.has(id), oracle.has(id));
    }
    assert.equal(table.size, oracle.size, `size ${at(op)}`);
  }
  const seen: number[] = [];
  table.forEach((stream, id) => {
    assert.equal(stream, oracle.get(id));
    seen.push(id);
  });
  assert.deepEqual(
    seen,
    [...oracle.keys()].sort((a, b) => a - b),
  );
}

void test("agrees with a Map over 200,000 seeded random operations: growth, emptying and refilling", () => {
  againstMap(undefined);
  againstMap(0x9e3779b1);
});

void test("agrees with a Map when every id hashes to one slot (multiplier 1: one probe run for all)", () => {
  againstMap(1);
});

void test("the hash multiplier must be odd (an even one is not a bijection on 32-bit ids)", () => {
  for (const multiplier of [2, 0, 1.5, Number.NaN])
    assert.throws(() => new StreamTable({ multiplier }), RangeError);
});

void test("PendingStreams: add once, has, delete, size, forEach in order skipping one removed before its turn", () => {
  const pending = new PendingStreams<object>();
  const [a, b, c] = [{}, {}, {}];
  assert.equal(pending.add(a), pending);
  pending.add(b).add(a).add(c);
  assert.equal(pending.size, 3, "a stream is held once");
  assert.equal(pending.has(b), true);
  assert.equal(pending.delete(b), true);
  assert.equal(pending.delete(b), false);
  assert.equal(pending.has(b), false);
  pending.add(b);
  const seen: object[] = [];
  pending.forEach((stream, same, set) => {
    assert.equal(stream, same);
    assert.equal(set, pending);
    seen.push(stream);
    set.delete(stream);
    if (stream === a) set.delete(c);
  });
  assert.deepEqual(seen, [a, b]);
  assert.equal(pending.size, 0);
});

void test("set refuses what is not an HTTP/2 stream id; get, has and delete find nothing under one", () => {
  const table = new StreamTable<string>();
  for (const bad of [0, -1, 1.5, 2 ** 31, Number.NaN]) {
    assert.throws(() => table.set(bad, "x"), RangeError);
    assert.equal(table.get(bad), undefined);
    assert.equal(table.has(bad), false);
    assert.equal(table.delete(bad), false);
  }
  assert.equal(table.size, 0);
});

/** A plain HTTP/2 server fed by our own TCP front, as GrpcListener feeds grpc-js's. */
async function injectedServer(onStream: (stream: http2.ServerHttp2Stream) => void): Promise<{
  readonly port: number;
  readonly installed: boolean[];
  readonly close: () => Promise<void>;
}> {
  const h2 = http2.createServer();
  h2.on("stream", onStream);
  const installed: boolean[] = [];
  const sockets = new Set<Socket>();
  const front: NetServer = createNetServer((socket) => {
    sockets.add(socket);
    h2.emit("connection", socket);
    installed.push(installStreamTables(socket));
  });
  await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
  const address = front.address();
  assert.ok(typeof address === "object" && address !== null);
  return {
    port: address.port,
    installed,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    },
  };
}

/** One GET on `client`: its status, or the error that ended it. */
function get(client: http2.ClientHttp2Session): Promise<number | Error> {
  return new Promise((resolve) => {
    const req = client.request({ ":path": "/" });
    let code = 0;
    req.on("response", (h) => (code = Number(h[":status"])));
    req.on("error", (err: Error) => resolve(err));
    req.on("close", () => resolve(code));
    req.resume();
  });
}

void test("installed on a real server session, 200 streams (64 at a time) open and finish through it", async (t) => {
  const server = await injectedServer((stream) => stream.respond({ ":status": 200 }, { endStream: true }));
  t.after(() => server.close());
  const client = http2.connect(`http://127.0.0.1:${server.port}`);
  t.after(() => client.destroy());
  let left = 200;
  const codes: Array<number | Error> = [];
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (left-- > 0) codes.push(await get(client));
    }),
  );
  assert.deepEqual(server.installed, [true], "one session, its table installed");
  assert.equal(codes.length, 200);
  assert.ok(
    codes.every((c) => c === 200),
    `every stream answered: ${codes.filter((c) => c !== 200).join(", ")}`,
  );
});

void test("a session destroyed with streams open closes each of them through the table", async (t) => {
  const held: http2.ServerHttp2Stream[] = [];
  const server = await injectedServer((stream) => held.push(stream));
  t.after(() => server.close());
  const client = http2.connect(`http://127.0.0.1:${server.port}`);
  client.on("error", () => {});
  t.after(() => client.destroy());
  const answers = Array.from({ length: 10 }, () => get(client));
  while (held.length < 10) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(server.installed, [true]);
  const closed = held.map((s) => new Promise<void>((resolve) => s.once("close", resolve)));
  held[0]!.session!.destroy();
  await Promise.all(closed);
  assert.ok(
    held.every((s) => s.destroyed),
    "every open stream was destroyed with its session",
  );
  for (const answer of await Promise.all(answers))
    assert.notEqual(answer, 200, "no held stream was answered");
});

void test("refused, changing nothing, on a socket no session is bound to or a session with a stream open", async (t) => {
  const plain = createNetServer(() => {});
  await new Promise<void>((resolve) => plain.listen(0, "127.0.0.1", resolve));
  t.after(() => plain.close());
  const h2 = http2.createServer();
  let late: boolean | undefined;
  const held: http2.ServerHttp2Stream[] = [];
  h2.on("stream", (stream) => {
    held.push(stream);
    // The session's first stream is open now: a Map in use is never swapped out.
    late = installStreamTables(rawSocketOf(stream));
    stream.respond({ ":status": 200 }, { endStream: true });
  });
  const sockets: Socket[] = [];
  const front = createNetServer((socket) => {
    sockets.push(socket);
    assert.equal(installStreamTables(socket), false, "no session yet");
    h2.emit("connection", socket);
  });
  await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
  t.after(() => {
    for (const s of sockets) s.destroy();
    front.close();
  });
  const address = front.address();
  assert.ok(typeof address === "object" && address !== null);
  const client = http2.connect(`http://127.0.0.1:${address.port}`);
  t.after(() => client.destroy());
  assert.equal(await get(client), 200);
  assert.equal(late, false, "a session with a stream open keeps its own table");
  assert.equal(installStreamTables({}), false);
});

/** The TCP socket under a server stream's session (what our front hands to http2). */
function rawSocketOf(stream: http2.ServerHttp2Stream): object {
  const session = stream.session as unknown as Record<symbol, unknown>;
  const key = Object.getOwnPropertySymbols(session).find((s) => s.description === "socket");
  assert.ok(key !== undefined, "node:http2 keeps the session's socket under Symbol(socket)");
  return session[key] as object;
}

/** Share of what a real server allocated that survived its scavenges, with or without the table. */
async function survivalUnderLoad(withTable: boolean, requests: number): Promise<number> {
  const script = `
    import http2 from "node:http2";
    import { createServer } from "node:net";
    import { installStreamTables } from ${JSON.stringify(new URL("./stream-table.ts", import.meta.url).href)};
    const h2 = http2.createServer();
    h2.on("stream", (s) => s.respond({ ":status": 200 }, { endStream: true }));
    const front = createServer((socket) => {
      h2.emit("connection", socket);
      if (${withTable} && !installStreamTables(socket)) process.exit(3);
    });
    front.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: front.address().port })));
    process.on("SIGTERM", () => process.exit(0));
  `;
  const child = spawn(
    process.execPath,
    ["--trace-gc-nvp", "--import", import.meta.resolve("tsx"), "--input-type=module", "-e", script],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const lines: string[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`server exited ${code} before serving`)));
    createInterface({ input: child.stdout }).on("line", (l: string) => {
      if (l.startsWith('{"port":')) resolve((JSON.parse(l) as { port: number }).port);
      else lines.push(l);
    });
  });
  const client = http2.connect(`http://127.0.0.1:${port}`);
  const load = async (requests: number): Promise<void> => {
    let left = requests;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (left-- > 0) assert.equal(await get(client), 200);
      }),
    );
  };
  // Warmed first, so start-up objects (the loader's, the first compilations) are out of the way.
  await load(10_000);
  const before = lines.length;
  await load(requests);
  client.close();
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await exited;
  let allocated = 0;
  let survived = 0;
  for (const line of lines.slice(before).filter((l) => / gc=s /.test(l))) {
    const field = (name: string): number => Number(new RegExp(` ${name}=(\\d+)`).exec(line)?.[1] ?? NaN);
    allocated += field("allocated");
    survived += field("new_space_survived") + field("promoted");
  }
  assert.ok(allocated > 50e6, `the load allocated enough to measure (${(allocated / 1e6).toFixed(1)} MB)`);
  return survived / allocated;
}

void test("under 64 streams in flight, finished calls no longer survive scavenges (V8's GC trace)", async () => {
  const own = await survivalUnderLoad(false, 30_000);
  const table = await survivalUnderLoad(true, 30_000);
  const pct = (x: number): string => `${(100 * x).toFixed(1)} %`;
  assert.ok(table < 0.06, `with our tables ${pct(table)} of the allocation survived (Node's: ${pct(own)})`);
  // The control: if this fails, Node's tables no longer chain and ours are moot.
  assert.ok(own > 0.15, `with Node's own tables ${pct(own)} survived (ours: ${pct(table)})`);
});
