/**
 * The raw feedback store against a real Redis: recording an outcome trims the unprocessed index to
 * the retention window in bounded steps, however many ids expired at once.
 */
import * as assert from 'uvu/assert';
import { recordOutcome, storeFeedback, summarizeFeedback, TRIM_STEP } from '../../src/feedback/raw-store.js';
import { commandsOn, redisSuite, startCluster } from '../helpers/redis.js';

const { test, env } = redisSuite('feedback/raw-store');

test('an outcome trims the unprocessed index of more expired ids than one step, in bounded steps, and keeps the rest', async () => {
  const { keys } = env.redis.fresh();
  const index = keys.feedbackUnprocessed();
  const now = Date.now();
  const retention = 60_000;
  // Two and a half steps of ids older than the window (a quiet spell), and some inside it.
  const expired = Math.floor(TRIM_STEP * 2.5);
  await env.client.zadd(index, ...Array.from({ length: expired }, (_, n) => [now - retention - 1 - n, `old-${n}`]).flat());
  await env.client.zadd(index, now - retention, 'edge', now - 1000, 'recent');
  await storeFeedback(env.client, keys, { id: 'new', raw: Buffer.from('x'), rcpts: [], mailFrom: '', receivedAt: now }, retention);
  const seen = await commandsOn(env.redis, index, () => recordOutcome(env.client, keys, 'new', 'unmatched', now, retention));
  assert.equal((await env.client.zrange(index, 0, -1)).sort(), ['edge', 'new', 'recent'], 'the window is kept, to its first millisecond');
  assert.is(await env.client.hget(keys.feedbackRaw('new'), 'outcome'), 'unmatched');
  // No command reads or removes more than one step.
  for (const c of seen) {
    if (c[0] === 'zadd') continue;
    if (c[0] === 'zrangebyscore') assert.equal([c[4], Number(c[6]) <= TRIM_STEP], ['LIMIT', true], c.join(' '));
    else assert.ok(c[0] === 'zrem' && c.length - 2 <= TRIM_STEP, c.slice(0, 3).join(' '));
  }
  assert.ok(seen.filter((c) => c[0] === 'zrem').length >= 3);
});

test('mail processed stays out of the index', async () => {
  const { keys } = env.redis.fresh();
  const now = Date.now();
  await storeFeedback(env.client, keys, { id: 'ok', raw: Buffer.from('x'), rcpts: [], mailFrom: '', receivedAt: now }, 60_000);
  await recordOutcome(env.client, keys, 'ok', 'processed', now, 60_000);
  assert.equal([await env.client.exists(keys.feedbackUnprocessed()), await env.client.hget(keys.feedbackRaw('ok'), 'outcome')], [0, 'processed']);
});

test("summaries of stored mail on a Redis Cluster: each mail's key in its own slot, so one read each, not a pipeline (refused across nodes)", async () => {
  const cluster = await startCluster();
  const client = cluster.client();
  try {
    const { keys } = cluster.fresh();
    const now = Date.now();
    // Enough ids that their keys sit on more than one of the three masters.
    const ids = Array.from({ length: 12 }, (_, n) => `fb-${n}`);
    for (const [n, id] of ids.entries()) {
      assert.ok(await storeFeedback(client, keys, { id, raw: Buffer.alloc(n + 1, 0x61), rcpts: [`b-${n}@bounce.test`], mailFrom: '', receivedAt: now + n }, 60_000));
    }
    const rows = await summarizeFeedback(client, keys, [...ids, 'fb-gone']);
    assert.equal(rows.map((r) => r && [r.id, r.bytes, r.rcpts[0], r.receivedAt]), [...ids.map((id, n) => [id, n + 1, `b-${n}@bounce.test`, now + n]), null]);
  } finally {
    client.disconnect();
    await cluster.stop();
  }
});

test.run();
