import * as assert from 'uvu/assert';
import { redisSuite } from '../helpers/redis.js';
import { holdLock, keepRenewing, releaseLock } from '../../src/store/locks.js';

/**
 * keepRenewing (store/locks.ts) over a real Redis: it keeps a held key alive, and a key that lapsed
 * is never taken back, even when nobody holds it now (another process may have taken it, worked and
 * released it meanwhile: the old holder's view is stale).
 */
const { test, env } = redisSuite('store/locks');
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a held lock is kept past its TTL while renewed, and goes when renewing ends', async () => {
  const key = `${env.redis.fresh().prefix}lock:a`;
  // Renewed every third of the TTL (500 ms): a 400 ms TTL lapsed under load (an event loop stalled
  // past it); 1.5 s leaves a loaded CI machine a second of stall. Held three TTLs over.
  const TTL = 1500;
  assert.ok(await holdLock(env.client, key, 'me', TTL));
  const r = keepRenewing(env.client, key, 'me', TTL);
  await wait(3 * TTL + 300);
  assert.is(await env.client.get(key), 'me', 'still held after three TTLs');
  assert.is(r.held, true);
  await r.end();
  await releaseLock(env.client, key, 'me');
  assert.is(await env.client.get(key), null);
});

test('a lock that lapsed and was taken and released by another is not taken back: held turns false for good', async () => {
  const key = `${env.redis.fresh().prefix}lock:b`;
  assert.ok(await holdLock(env.client, key, 'me', 150));
  const r = keepRenewing(env.client, key, 'me', 150);
  // Another process's turn in between: the key lapsed, went to it, and was released.
  await env.client.set(key, 'other', 'PX', 1000);
  await wait(120);
  await releaseLock(env.client, key, 'other');
  // The next renewal (a third of the TTL on) finds the key lapsed; its answer comes asynchronously.
  for (let i = 0; i < 100 && r.held; i++) await wait(20);
  assert.is(r.held, false);
  assert.is(await env.client.get(key), null, 'not re-created by the old holder');
  await r.end();
});

test.run();
