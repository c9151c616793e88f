import assert from "node:assert/strict";
import { test } from "node:test";
import { SosBoard, type Sos } from "./sos-board.js";

const bpffs: Sos = { kind: "bpffs_delegation", message: "mount bpffs" };

async function collect(board: SosBoard, signal = new AbortController().signal): Promise<Sos[]> {
  const out: Sos[] = [];
  for await (const sos of board.watch(signal)) out.push(sos);
  return out;
}

test("a pending SOS is sent once and the stream ends when it is cleared", async () => {
  const board = new SosBoard();
  board.raise(bpffs);
  const seen = collect(board);
  await Promise.resolve();
  board.clear();
  assert.deepEqual(await seen, [bpffs]);
});

test("a watcher with nothing pending waits for an SOS, then ends on finish", async () => {
  const board = new SosBoard();
  const seen = collect(board);
  board.raise(bpffs);
  await new Promise((r) => setImmediate(r));
  board.finish();
  assert.deepEqual(await seen, [bpffs]);
});

test("after finish every watch ends at once and raise is ignored", async () => {
  const board = new SosBoard();
  board.finish();
  board.raise(bpffs);
  assert.equal(board.pending, undefined);
  assert.deepEqual(await collect(board), []);
});

test("a replaced SOS ends the stream of a watcher that saw the old one", async () => {
  const board = new SosBoard();
  board.raise(bpffs);
  const seen = collect(board);
  await new Promise((r) => setImmediate(r));
  board.raise({ kind: "bpffs_delegation", message: "other" });
  assert.deepEqual(await seen, [bpffs]);
});

test("aborting the signal ends a waiting watcher", async () => {
  const board = new SosBoard();
  const ac = new AbortController();
  const seen = collect(board, ac.signal);
  ac.abort();
  assert.deepEqual(await seen, []);
});
