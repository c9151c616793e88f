// PeerTokenBucket: burst, refill rate, peers independent, memory bounded (a fake clock: the clock
// is the only input).
import assert from "node:assert/strict";
import { test } from "node:test";
import { PeerTokenBucket } from "./peer-token-bucket.js";

void test("a peer spends its burst, then gets `rate` per second; other peers are unaffected", () => {
  let now = 0;
  const bucket = new PeerTokenBucket({ rate: 10, burst: 20, now: () => now });
  const taken = (peer: string, n: number): number =>
    Array.from({ length: n }, () => bucket.take(peer)).filter(Boolean).length;
  assert.equal(taken("a:1", 50), 20, "the burst");
  assert.equal(taken("b:2", 5), 5, "another connection has its own bucket");
  now += 500;
  assert.equal(taken("a:1", 50), 5, "half a second refills 5");
  now += 60_000;
  assert.equal(taken("a:1", 50), 20, "never more than the burst is saved");
});

void test("memory is bounded: refilled buckets are forgotten first, then the oldest half", () => {
  let now = 0;
  const bucket = new PeerTokenBucket({ rate: 1, burst: 2, maxPeers: 100, now: () => now });
  for (let i = 0; i < 100; i++) bucket.take(`p:${i}`);
  assert.equal(bucket.size, 100);
  now += 5_000; // every bucket refilled
  bucket.take("new:1");
  assert.equal(bucket.size, 1, "refilled buckets were forgotten");
  for (let i = 0; i < 99; i++) bucket.take(`q:${i}`);
  bucket.take("new:2");
  const left: number = bucket.size;
  assert.ok(left <= 51, `busy buckets: the oldest half went (${left} left)`);
});
