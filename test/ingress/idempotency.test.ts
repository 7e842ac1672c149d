import * as assert from 'uvu/assert';
import { redisSuite } from '../helpers/redis.js';
import { createHash, randomBytes } from 'node:crypto';
import { IdempotencyStore, RequestHash } from '../../src/ingress/idempotency.js';
import { isSluiceError } from '../../src/core/errors.js';

const { test, env } = redisSuite('ingress/idempotency');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DAY = 86_400_000;

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return isSluiceError(err) ? err.code : String(err);
  }
  return 'ok';
}

test('a request that runs longer than the lease keeps its key: a concurrent retry gets 409 until the answer, then the replay', async () => {
  const { keys } = env.redis.fresh();
  // Renewed every third of the lease: an event loop stalled for most of a lease (a loaded CI machine)
  // must not end it, so the lease is long enough for that, and the request outlasts it three times.
  // (A lease of 400 ms, renewed every 133 ms, ended once under a load average of 10: a stall of
  // 270 ms. At 1.2 s a stall has to last 800 ms.)
  const a = new IdempotencyStore(env.client, keys, DAY, { leaseMs: 1200 });
  const b = new IdempotencyStore(env.client, keys, DAY, { leaseMs: 1200 });
  const begun = await a.begin('acme', 'k1', 'h1');
  assert.is(begun.kind, 'new');
  // Four leases long: without renewal the marker would have expired three times over.
  for (let i = 0; i < 6; i++) {
    await sleep(810);
    assert.is(await code(b.begin('acme', 'k1', 'h1')), 'SLUICE_INGRESS_IDEMPOTENCY_CONFLICT', `still in flight after ${(i + 1) * 810} ms`);
  }
  await a.finish('acme', 'k1', 'h1', { status: 202, body: '{"id":"x"}' }, begun.kind === 'new' ? begun.lease : undefined);
  const again = await b.begin('acme', 'k1', 'h1');
  assert.equal(again.kind === 'replay' ? again.answer : null, { status: 202, body: '{"id":"x"}' });
});

test('a request whose process died frees its key one lease later: the retry then runs anew', async () => {
  const { keys } = env.redis.fresh();
  // "At once" must come within the lease: 200 ms was too short for a loaded CI machine, 1.5 s is not.
  const LEASE = 1500;
  const dead = new IdempotencyStore(env.client, keys, DAY, { leaseMs: LEASE });
  const live = new IdempotencyStore(env.client, keys, DAY, { leaseMs: LEASE });
  const begun = await dead.begin('acme', 'k2', 'h2');
  // The process dies: nothing renews the marker and nothing answers.
  if (begun.kind === 'new') await begun.lease.end();
  assert.is(await code(live.begin('acme', 'k2', 'h2')), 'SLUICE_INGRESS_IDEMPOTENCY_CONFLICT', 'at once: still in flight');
  await sleep(LEASE + 300);
  const retry = await live.begin('acme', 'k2', 'h2');
  assert.is(retry.kind, 'new', 'after the lease the retry is processed');
  if (retry.kind === 'new') await live.finish('acme', 'k2', 'h2', { status: 202, body: '{}' }, retry.lease);
});

test('a renewal never brings back a key that was answered or freed, nor takes over another request’s marker', async () => {
  const { keys } = env.redis.fresh();
  // Leases long enough that a stalled event loop does not end b's (see the first test).
  const a = new IdempotencyStore(env.client, keys, DAY, { leaseMs: 900 });
  const begun = await a.begin('acme', 'k3', 'h3');
  // A 503 frees the key for the retry it invites.
  await a.finish('acme', 'k3', 'h3', { status: 503, body: '{}' }, begun.kind === 'new' ? begun.lease : undefined);
  await sleep(750);
  const b = new IdempotencyStore(env.client, keys, DAY, { leaseMs: 900 });
  const next = await b.begin('acme', 'k3', 'h3');
  assert.is(next.kind, 'new', 'the key was free, not re-created by a late renewal');
  // The marker is b's: a's lease (ended) and a second holder cannot renew it.
  await sleep(2700);
  assert.is(await code(a.begin('acme', 'k3', 'h3')), 'SLUICE_INGRESS_IDEMPOTENCY_CONFLICT', 'b keeps it alive');
  if (next.kind === 'new') await next.lease.end();
  await sleep(1800);
  assert.is((await a.begin('acme', 'k3', 'h3')).kind, 'new', 'and it lapses once b stops');
});

test('the same key with another request is 422 (mismatch), in flight or answered', async () => {
  const { keys } = env.redis.fresh();
  const s = new IdempotencyStore(env.client, keys, DAY, { leaseMs: 1000 });
  const begun = await s.begin('acme', 'k4', 'h4');
  assert.is(await code(s.begin('acme', 'k4', 'other')), 'SLUICE_INGRESS_IDEMPOTENCY_MISMATCH');
  await s.finish('acme', 'k4', 'h4', { status: 202, body: '{}' }, begun.kind === 'new' ? begun.lease : undefined);
  assert.is(await code(s.begin('acme', 'k4', 'other')), 'SLUICE_INGRESS_IDEMPOTENCY_MISMATCH');
  assert.is(await code(s.begin('other', 'k4', 'other')), 'ok', 'keys are per account');
});

test('a request hashed as its body arrives, in any slices, has the hash stored before (the whole body at once), so records of an earlier version still match', () => {
  const body = randomBytes(1024 * 1024 + 7);
  // What requestHash(['send', body]) gave: SHA-256 of each part followed by a NUL, base64url.
  const before = createHash('sha256').update('send').update('\0').update(body).update('\0').digest('base64url');
  for (const size of [1, 1000, 64 * 1024, body.length]) {
    const h = new RequestHash('send');
    for (let at = 0; at < body.length; at += size) h.update(body.subarray(at, at + size));
    assert.is(h.digest(), before, `slices of ${size} bytes`);
  }
  const empty = new RequestHash('batch');
  assert.is(empty.digest(), createHash('sha256').update('batch').update('\0').update('\0').digest('base64url'), 'an empty body');
});

test.run();
