import * as assert from 'uvu/assert';
import { redisSuite } from '../helpers/redis.js';
import { Reaper } from '../../src/housekeeping/reaper.js';
import { enqueueRecipients } from '../../src/queue/enqueue.js';
import { claim } from '../../src/queue/claim.js';
import { ack } from '../../src/queue/outcome.js';
import { shardOf } from '../../src/redis/keys.js';
import { createLogger } from '../../src/observability/logger.js';

const { test, env } = redisSuite('housekeeping/reaper');

const SHARDS = 2;
const T = 1_700_000_000_000;

test('a destination with nothing queued on two visits in a row leaves the destination sets; one with work or a lease stays; an expired lease is reaped', async () => {
  const { keys } = env.redis.fresh();
  let now = T;
  const reaper = new Reaper({ redis: env.client, keys, shards: SHARDS, intervalMs: 60_000, logger: createLogger('silent'), now: () => now });
  await enqueueRecipients(env.client, keys, SHARDS, [
    { msgId: 'w', idx: 0, domain: 'work.test', dueAt: T + 3_600_000 },
    { msgId: 'l', idx: 0, domain: 'leased.test', dueAt: T },
    { msgId: 'd', idx: 0, domain: 'done.test', dueAt: T },
  ]);
  await claim(env.client, keys, { domain: 'leased.test', max: 1, leaseMs: 30_000, now: T });
  const [done] = (await claim(env.client, keys, { domain: 'done.test', max: 1, leaseMs: 30_000, now: T })).entries;
  await ack(env.client, keys, done!, { code: 250, enhanced: '2.0.0', response: '250 ok', now: T, recordTtlMs: 60_000 });
  const listed = async (d: string) => (await env.client.sismember(keys.destinations(shardOf(d, SHARDS)), d)) === 1;

  const first = await reaper.tick();
  assert.is(first.forgotten, 0, 'not after one empty visit');
  assert.ok(await listed('done.test'));
  const second = await reaper.tick();
  assert.is(second.forgotten, 1);
  assert.not.ok(await listed('done.test'), 'forgotten after the second');
  assert.ok(await listed('work.test'), 'ready work keeps it');
  assert.ok(await listed('leased.test'), 'a lease keeps it');

  // The lease runs out: reaped back to ready, and the destination stays (it has work again).
  now = T + 60_000;
  const third = await reaper.tick();
  assert.is(third.reaped, 1);
  assert.ok(await listed('leased.test'));
  assert.is(await env.client.zcard(keys.ready('leased.test')), 1);
  // Mail for the forgotten destination lists it again.
  await enqueueRecipients(env.client, keys, SHARDS, [{ msgId: 'd2', idx: 0, domain: 'done.test', dueAt: now }]);
  assert.ok(await listed('done.test'));
  assert.is((await reaper.tick()).forgotten, 0);
  assert.ok(await listed('done.test'));
});

test("a dead process's 2,500 expired leases at one destination are all back after one visit, not 1,000 a lap", async () => {
  const { keys } = env.redis.fresh();
  const reaper = new Reaper({ redis: env.client, keys, shards: SHARDS, intervalMs: 60_000, logger: createLogger('silent'), now: () => T + 60_000 });
  const items = Array.from({ length: 2500 }, (_, i) => ({ msgId: `m${i}`, idx: 0, domain: 'dead.test', dueAt: T }));
  await enqueueRecipients(env.client, keys, SHARDS, items);
  assert.is((await claim(env.client, keys, { domain: 'dead.test', max: 2500, leaseMs: 30_000, now: T })).entries.length, 2500);
  const { reaped } = await reaper.tick();
  assert.is(reaped, 2500);
  assert.is(await env.client.zcard(keys.leases('dead.test')), 0);
  assert.is(await env.client.zcard(keys.ready('dead.test')), 2500);
});

test.run();
