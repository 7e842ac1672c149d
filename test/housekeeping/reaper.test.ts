import * as assert from 'uvu/assert';
import { redisSuite } from '../helpers/redis.js';
import { Reaper } from '../../src/housekeeping/reaper.js';
import { enqueueRecipients } from '../../src/queue/enqueue.js';
import { claim } from '../../src/queue/claim.js';
import { ack } from '../../src/queue/outcome.js';
import { persistMessage } from '../../src/ingress/persist.js';
import { newId } from '../../src/core/ids.js';
import { shardOf } from '../../src/redis/keys.js';
import { createLogger } from '../../src/observability/logger.js';

const { test, env } = redisSuite('housekeeping/reaper');

const SHARDS = 2;
const T = 1_700_000_000_000;
const COUNTS = { recordsMs: 60_000, refsMs: 60_000 };

test('a destination with nothing queued on two visits in a row leaves the destination sets; one with work or a lease stays; an expired lease is reaped', async () => {
  const { keys } = env.redis.fresh();
  let now = T;
  const reaper = new Reaper({ redis: env.client, keys, shards: SHARDS, intervalMs: 60_000, logger: createLogger('silent'), now: () => now, counts: COUNTS });
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
  const reaper = new Reaper({ redis: env.client, keys, shards: SHARDS, intervalMs: 60_000, logger: createLogger('silent'), now: () => T + 60_000, counts: COUNTS });
  const items = Array.from({ length: 2500 }, (_, i) => ({ msgId: `m${i}`, idx: 0, domain: 'dead.test', dueAt: T }));
  await enqueueRecipients(env.client, keys, SHARDS, items);
  assert.is((await claim(env.client, keys, { domain: 'dead.test', max: 2500, leaseMs: 30_000, now: T })).entries.length, 2500);
  const { reaped } = await reaper.tick();
  assert.is(reaped, 2500);
  assert.is(await env.client.zcard(keys.leases('dead.test')), 0);
  assert.is(await env.client.zcard(keys.ready('dead.test')), 2500);
});

test("a count the reaper cannot make (its message's keys refuse it) stays owed, and the pass goes on to the other destinations' leases", async () => {
  const { keys } = env.redis.fresh();
  let now = T;
  const reaper = new Reaper({ redis: env.client, keys, shards: SHARDS, intervalMs: 60_000, logger: createLogger('silent'), now: () => now, counts: { recordsMs: 60_000, refsMs: 60_000, graceMs: 1000 } });
  const id = newId(T);
  await persistMessage(env.client, keys, SHARDS, { id, account: 'acct', source: 'http', kind: 'raw', from: 'n@x.test', fromDomain: 'x.test', rcpts: [{ address: 'a@owes.test', domain: 'owes.test' }], acceptedAt: T, tags: [], metadata: {}, body: 'To: a@owes.test\r\n\r\nhi\r\n' });
  const [e] = (await claim(env.client, keys, { domain: 'owes.test', max: 1, leaseMs: 30_000, now: T })).entries;
  assert.is(await ack(env.client, keys, e!, { code: 250, enhanced: '2.0.0', response: '250 ok', now: T, recordTtlMs: 60_000, owe: { counter: 'delivered' } }), 2);
  // A dead process's lease elsewhere, and the count's key made unusable (WRONGTYPE: every count fails before it writes).
  await enqueueRecipients(env.client, keys, SHARDS, [{ msgId: 'dead', idx: 0, domain: 'dead.test', dueAt: T }]);
  await claim(env.client, keys, { domain: 'dead.test', max: 1, leaseMs: 1000, now: T });
  await env.client.sadd(keys.copiesCounted(id), 'poison');
  now = T + 60_000;
  const r = await reaper.tick();
  assert.is(r.reaped, 1, "the other destination's lease is back");
  assert.is(r.counted, 0);
  assert.is(await env.client.zcard(keys.owed('owes.test')), 1, 'still owed');
  assert.is(await env.client.hget(keys.msgMeta(id), 'pending'), '1');
  await env.client.del(keys.copiesCounted(id));
  now += 2000; // moved behind the others at the failure: due again after the grace
  assert.is((await reaper.tick()).counted, 1, 'made once the keys take it');
  assert.is(await env.client.hget(keys.msgMeta(id), 'pending'), '0');
  assert.is(await env.client.zcard(keys.owed('owes.test')), 0);
});

test.run();
