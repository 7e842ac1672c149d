/**
 * Operator holds (src/queue/holds.ts) over a real Redis: placed, read back in force, run out by
 * themselves, replaced, released (one, or all) with the released domain made due in the schedule
 * only when it has work and only sooner; which hold applies to a destination; the dispatcher's
 * cached copy is read again only once it is older than its age limit.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { HoldCache, holdOf, placeHolds, pruneHolds, readHolds, recheckAt, releaseHolds, HOLD_RECHECK_MS } from '../../src/queue/holds.js';
import { shardOf } from '../../src/redis/keys.js';
import type { RedisClient } from '../../src/redis/client.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';

const test = suite('queue/holds');
const SHARDS = 4;

let redis: TestRedis;
let client: RedisClient;

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});

test.after(async () => {
  await redis?.stop();
});

test('placed holds are read back in force; one with an end is gone once it has passed; holding again replaces', async () => {
  const { keys } = redis.fresh();
  const now = 1_000_000;
  await placeHolds(client, keys, [{ kind: 'domain', name: 'a.test' }, { kind: 'rule', name: 'microsoft' }], { until: null, reason: '  blocked:\n S3150  ', by: 'cli:ops', now });
  await placeHolds(client, keys, [{ kind: 'domain', name: 'b.test' }], { until: now + 60_000, reason: '', by: 'cli:ops', now });
  const holds = await readHolds(client, keys, now + 1);
  assert.equal(holds.map((h) => `${h.kind}:${h.name}:${h.until}`), ['domain:a.test:null', `domain:b.test:${now + 60_000}`, 'rule:microsoft:null']);
  assert.is(holds[0]?.reason, 'blocked: S3150', 'whitespace folded');
  assert.is(holds[0]?.by, 'cli:ops');
  assert.is(holds[0]?.at, now);
  assert.equal((await readHolds(client, keys, now + 60_000)).map((h) => h.name), ['a.test', 'microsoft'], 'b.test ran out');
  // Placing prunes what ran out, and replaces a hold on the same target.
  await placeHolds(client, keys, [{ kind: 'domain', name: 'a.test' }], { until: now + 200_000, reason: 'until noon', by: 'cli:ops', now: now + 100_000 });
  assert.equal(Object.keys(await client.hgetall(keys.holds())).sort(), ['domain:a.test', 'rule:microsoft']);
  const a = (await readHolds(client, keys, now + 100_000))[0];
  assert.is(a?.until, now + 200_000);
  assert.is(a?.reason, 'until noon');
});

test('a garbled field is ignored by readers and pruned', async () => {
  const { keys } = redis.fresh();
  await client.hset(keys.holds(), 'domain:x.test', '{not json', 'other:y', '{}', 'domain:ok.test', '{"until":null,"reason":"r","by":"b","at":1}');
  assert.equal((await readHolds(client, keys, 5)).map((h) => h.name), ['ok.test']);
  assert.is(await pruneHolds(client, keys, 5), 2);
  assert.equal(Object.keys(await client.hgetall(keys.holds())), ['domain:ok.test']);
});

test('holdOf: the domain\'s own hold first, else its rule\'s; a hold that ran out holds nothing', () => {
  const base = { reason: '', by: '', at: 0 };
  const holds = [
    { ...base, kind: 'rule' as const, name: 'google', until: null },
    { ...base, kind: 'domain' as const, name: 'gmail.com', until: 500 },
    { ...base, kind: 'domain' as const, name: 'old.test', until: 100 },
  ];
  assert.is(holdOf(holds, 'gmail.com', 'google', 200)?.kind, 'domain');
  assert.is(holdOf(holds, 'gmail.com', 'google', 600)?.kind, 'rule', 'the domain\'s hold ran out; the rule\'s still holds');
  assert.is(holdOf(holds, 'gmail.com', null, 600), null, 'without its rule known, only a domain hold applies');
  assert.is(holdOf(holds, 'other.test', 'default', 0), null);
  assert.is(holdOf(holds, 'old.test', 'default', 200), null);
  assert.is(recheckAt(holds[1]!, 200), 500, 'a hold ending sooner than a recheck is looked at when it ends');
  assert.is(recheckAt(holds[0]!, 200), 200 + HOLD_RECHECK_MS);
});

test('release: the holds named (or all) go; a released domain with work is made due now, never later, and one without work is not added to the schedule', async () => {
  const { keys } = redis.fresh();
  const now = Date.now();
  const later = now + 3_600_000;
  await placeHolds(client, keys, ['late.test', 'early.test', 'idle.test'].map((name) => ({ kind: 'domain' as const, name })), { until: null, reason: '', by: 'x', now });
  await placeHolds(client, keys, [{ kind: 'rule', name: 'yahoo' }], { until: null, reason: '', by: 'x', now });
  const sched = (d: string) => keys.schedule(shardOf(d, SHARDS));
  await client.zadd(sched('late.test'), later, 'late.test');
  await client.zadd(sched('early.test'), now - 5_000, 'early.test');
  const gone = await releaseHolds(client, keys, SHARDS, [{ kind: 'domain', name: 'late.test' }, { kind: 'domain', name: 'early.test' }, { kind: 'domain', name: 'idle.test' }, { kind: 'domain', name: 'never.test' }], now);
  assert.equal(gone.map((h) => h.name).sort(), ['early.test', 'idle.test', 'late.test'], 'never.test was not held');
  assert.is(Number(await client.zscore(sched('late.test'), 'late.test')), now, 'made due now');
  assert.is(Number(await client.zscore(sched('early.test'), 'early.test')), now - 5_000, 'already due: left sooner');
  assert.is(await client.zscore(sched('idle.test'), 'idle.test'), null, 'no work: not scheduled');
  assert.equal((await readHolds(client, keys, now)).map((h) => h.name), ['yahoo']);
  const all = await releaseHolds(client, keys, SHARDS, 'all', now);
  assert.equal(all.map((h) => h.name), ['yahoo']);
  assert.is(await client.exists(keys.holds()), 0);
});

test('HoldCache: one read per age limit, then read again; a failed read keeps the last holds and is reported', async () => {
  const { keys } = redis.fresh();
  let reads = 0;
  const errors: unknown[] = [];
  const cache = new HoldCache(client, keys, () => reads++, (err) => errors.push(err), 1000);
  assert.equal(await cache.get(0), []);
  await placeHolds(client, keys, [{ kind: 'domain', name: 'c.test' }], { until: null, reason: '', by: 'x', now: 1 });
  const [a, b] = await Promise.all([cache.get(500), cache.get(999)]);
  assert.equal([a, b], [[], []], 'within the age limit: the copy read at 0');
  assert.is(reads, 1);
  assert.equal((await cache.get(1000)).map((h) => h.name), ['c.test'], 'read again once a second old');
  assert.is(reads, 2);
  // A key of the wrong type makes HGETALL fail: the last holds stay.
  await client.del(keys.holds());
  await client.set(keys.holds(), 'not a hash');
  assert.equal((await cache.get(2500)).map((h) => h.name), ['c.test']);
  assert.is(errors.length, 1);
  assert.is(reads, 2);
});

test.run();
