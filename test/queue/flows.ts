/**
 * The queue's behaviour, written once and run twice: against a single redis-server
 * (queue.test.ts) and against a 3-master Redis Cluster (cluster.test.ts), where every script must
 * find all its keys in one slot. Clocks are pinned: each test passes `now` explicitly.
 */
import { OUTCOME } from '../../src/queue/outcome-codes.js';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { RedisClient } from '../../src/redis/client.js';
import { shardOf, type Keys } from '../../src/redis/keys.js';
import { enqueueRecipients } from '../../src/queue/enqueue.js';
import { claim } from '../../src/queue/claim.js';
import { entryMember, type QueueEntry } from '../../src/queue/entry.js';
import { ack, retry, bounce, hold, release, extendLeases } from '../../src/queue/outcome.js';
import { clearOwed, owedMember } from '../../src/redis/owed.js';
import { reapAndCount, reapExpired } from '../../src/queue/reap.js';
import { dueDestinations, forgetDestination, reschedule, postpone, repairSchedule, IDLE_RECHECK_MS } from '../../src/queue/schedule.js';
import { takeTokens, refundTokens, acquireConnection, renewConnection, releaseConnection, yieldConnection, type Rate } from '../../src/queue/throttle.js';
import { recordThrottleSignal, recordSuccess, backoffState, applyBackoff, REASON_MAX, type BackoffConfig } from '../../src/queue/backoff.js';
import type { EffectiveShaping } from '../../src/queue/shaping.js';
import { MINUTE, HOUR } from '../../src/core/time.js';
import { recipientStates } from '../../src/queue/status.js';
import { destinationStats, queueTotals, scopeStats } from '../../src/queue/stats.js';
import { DestinationRuleRecorder, REWRITE_MS, RULE_TTL_S } from '../../src/queue/destination-rule.js';
import { resolveRecordedShaping, resolveShaping } from '../../src/queue/shaping.js';
import { placeHolds, readHolds, releaseHolds } from '../../src/queue/holds.js';
import { loadConfig } from '../../src/config/load.js';
import { pushCampaignChunk, controlCampaignQueue, holdCampaignEntries, pauseCampaign, resumeCampaign, startCampaign } from '../../src/queue/campaign.js';
import { createCampaign, getCampaign, markCampaignQueued, recordEnqueueChunk } from '../../src/store/campaigns.js';
import { countCopy } from '../../src/store/copy-count.js';
import { Reaper, OWED_GRACE_MS } from '../../src/housekeeping/reaper.js';
import { createLogger } from '../../src/observability/logger.js';
import { persistMessage } from '../../src/ingress/persist.js';
import { cancelRecipients } from '../../src/ingress/message-cancel.js';
import { streamFields } from '../../src/store/events.js';
import { newId } from '../../src/core/ids.js';
import { reserveSending, returnSending, takeSending } from '../../src/accounts/limits.js';
import type { Account } from '../../src/accounts/registry.js';

export interface Harness {
  client(): RedisClient;
  fresh(): { prefix: string; keys: Keys };
  stop(): Promise<void>;
}

const T = 1_700_000_000_000; // a pinned "now"
const SHARDS = 4;
const LEASE = 30_000;
const RECORD_TTL = 86_400_000;
const OK = { code: 250, enhanced: '2.0.0', response: '250 2.0.0 OK queued' };
const SOFT = { code: 451, enhanced: '4.7.1', response: '451 4.7.1 try again later' };
const HARD = { code: 550, enhanced: '5.1.1', response: '550 5.1.1 no such user' };

/**
 * Wraps a client so that `before(n)` runs (and is awaited) before its n-th command: a deterministic
 * way to interleave another actor's real Redis commands between the steps of an operation. The
 * commands still go to the real server; nothing is answered by the wrapper.
 */
function stepped(client: RedisClient, before: (n: number) => Promise<void>, commands: readonly string[] = ['zadd', 'zrange', 'zscore']): RedisClient {
  let n = 0;
  const COMMANDS = new Set(commands);
  return new Proxy(client, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      if (typeof prop === 'string' && COMMANDS.has(prop)) {
        return async (...args: unknown[]) => {
          await before(n++);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
}

export function queueFlows(name: string, start: () => Promise<Harness>) {
  const test = suite(name);
  let h: Harness;
  let redis: RedisClient;
  let other: RedisClient; // a second "process"

  test.before(async () => {
    h = await start();
    redis = h.client();
    other = h.client();
  });
  test.after(async () => {
    await h.stop();
  });

  const ctx = () => h.fresh().keys;
  const score = (keys: Keys, domain: string) => redis.zscore(keys.schedule(shardOf(domain, SHARDS)), domain).then((s) => (s === null ? null : Number(s)));
  const members = (key: string) => redis.zrange(key, 0, -1);

  test('enqueue writes each domain ready set and the schedule at the earliest due time; claim takes entries earliest first', async () => {
    const keys = ctx();
    await enqueueRecipients(redis, keys, SHARDS, [
      { msgId: 'm1', idx: 0, domain: 'a.test', dueAt: T + 20 },
      { msgId: 'm1', idx: 1, domain: 'a.test', dueAt: T },
      { msgId: 'm1', idx: 2, domain: 'b.test', dueAt: T + 5 },
      { msgId: 'm2', idx: 0, domain: 'a.test', dueAt: T + 10 },
      { msgId: 'm2', idx: 1, domain: 'a.test', dueAt: T + 60_000 },
    ]);
    assert.is(await score(keys, 'a.test'), T);
    assert.is(await score(keys, 'b.test'), T + 5);
    assert.ok((await redis.sismember(keys.destinations(shardOf('a.test', SHARDS)), 'a.test')) === 1);

    const { entries, nextAt } = await claim(redis, keys, { domain: 'a.test', max: 10, leaseMs: LEASE, now: T + 20 });
    assert.equal(entries.map(entryMember), ['m1:1:0', 'm2:0:0', 'm1:0:0']);
    assert.equal(entries[0], { msgId: 'm1', idx: 1, attempt: 0, domain: 'a.test', lease: entries[0]?.lease });
    assert.is(await redis.hget(keys.leaseOwners('a.test'), 'm1:1:0'), entries[0]?.lease as string, 'leased under the claim\'s token');
    // the future entry stays; the earliest of it and the leases (T+20+LEASE) is next
    assert.is(nextAt, T + 20 + LEASE);
    assert.equal(await members(keys.ready('a.test')), ['m2:1:0']);
    assert.is(Number(await redis.zscore(keys.leases('a.test'), 'm1:1:0')), T + 20 + LEASE);

    const again = await claim(redis, keys, { domain: 'a.test', max: 10, leaseMs: LEASE, now: T + 20 + LEASE + 1 });
    assert.equal(again.entries.map(entryMember), []);
    // the leased entries' expiry is the earliest thing left: their lease ran out, not yet reaped
    assert.is(again.nextAt, T + 20 + LEASE);
  });

  test('claim respects max and due time; nextAt is null once ready and leases are empty', async () => {
    const keys = ctx();
    const items = Array.from({ length: 7 }, (_, i) => ({ msgId: 'm', idx: i, domain: 'c.test', dueAt: T + i * 1000 }));
    await enqueueRecipients(redis, keys, SHARDS, items);
    const first = await claim(redis, keys, { domain: 'c.test', max: 2, leaseMs: LEASE, now: T + 4000 });
    assert.equal(first.entries.map((e) => e.idx), [0, 1]);
    assert.is(first.nextAt, T + 2000);
    const second = await claim(redis, keys, { domain: 'c.test', max: 100, leaseMs: LEASE, now: T + 4000 });
    assert.equal(second.entries.map((e) => e.idx), [2, 3, 4]);
    assert.is(second.nextAt, T + 5000);
    const none = await claim(redis, keys, { domain: 'c.test', max: 0, leaseMs: LEASE, now: T + 10_000 });
    assert.is(none.entries.length, 0);
    for (const e of [...first.entries, ...second.entries]) assert.ok(await ack(redis, keys, e, { now: T + 5000, ...OK, recordTtlMs: RECORD_TTL }));
    const rest = await claim(redis, keys, { domain: 'c.test', max: 100, leaseMs: LEASE, now: T + 10_000 });
    for (const e of rest.entries) await ack(redis, keys, e, { now: T + 10_000, ...OK, recordTtlMs: RECORD_TTL });
    assert.is(rest.entries.length, 2);
    assert.is((await claim(redis, keys, { domain: 'c.test', max: 100, leaseMs: LEASE, now: T + 10_000 })).nextAt, null);
    assert.is(await claim(redis, keys, { domain: 'never.test', max: 5, leaseMs: LEASE, now: T }).then((r) => r.nextAt), null);
  });

  test('bulk enqueue of thousands of recipients over several domains; enqueuing again moves nothing', async () => {
    const keys = ctx();
    const domains = ['x1.test', 'x2.test', 'x3.test'];
    const items = Array.from({ length: 3000 }, (_, i) => ({ msgId: 'bulk', idx: i, domain: domains[i % 3] as string, dueAt: T + (i % 50) }));
    await enqueueRecipients(redis, keys, SHARDS, items);
    await enqueueRecipients(redis, keys, SHARDS, items.map((it) => ({ ...it, dueAt: T + 999_999 })));
    for (const d of domains) {
      assert.is(await redis.zcard(keys.ready(d)), 1000);
      assert.is(await redis.zcount(keys.ready(d), '-inf', T + 49), 1000, 'no entry moved by the second enqueue');
      assert.is(await score(keys, d), T, 'scheduled at its earliest due time');
    }
    await enqueueRecipients(redis, keys, SHARDS, []);
  });

  test('an expired lease is returned to ready by reapExpired, due now, attempt not counted', async () => {
    const keys = ctx();
    await enqueueRecipients(redis, keys, SHARDS, [1, 2, 3].map((idx) => ({ msgId: 'r', idx, domain: 'reap.test', dueAt: T })));
    await claim(redis, keys, { domain: 'reap.test', max: 2, leaseMs: 1000, now: T });
    await claim(redis, keys, { domain: 'reap.test', max: 1, leaseMs: 5000, now: T });
    assert.is(await reapExpired(redis, keys, 'reap.test', T + 999, 100), 0, 'nothing expired yet');
    assert.is(await reapExpired(redis, keys, 'reap.test', T + 1000, 1), 1, 'limit respected');
    assert.is(await reapExpired(redis, keys, 'reap.test', T + 1000, 100), 1);
    assert.equal((await members(keys.ready('reap.test'))).sort(), ['r:1:0', 'r:2:0']);
    assert.is(Number(await redis.zscore(keys.ready('reap.test'), 'r:1:0')), T + 1000);
    assert.equal(await members(keys.leases('reap.test')), ['r:3:0']);
    const retaken = await claim(redis, keys, { domain: 'reap.test', max: 10, leaseMs: 1000, now: T + 1000 });
    assert.equal(retaken.entries.map((e) => `${e.idx}:${e.attempt}`).sort(), ['1:0', '2:0']);
  });

  test('ack, retry and bounce are exclusive: a late outcome of a reaped and re-claimed entry settles it once', async () => {
    const keys = ctx();
    const d = 'ex.test';
    await enqueueRecipients(redis, keys, SHARDS, [{ msgId: 'x', idx: 0, domain: d, dueAt: T }, { msgId: 'x', idx: 1, domain: d, dueAt: T }]);
    const [a0, a1] = (await claim(redis, keys, { domain: d, max: 2, leaseMs: 1000, now: T })).entries as [QueueEntry, QueueEntry];
    assert.is(await reapExpired(redis, keys, d, T + 2000, 100), 2);

    // x:0 is claimed again by a second holder, then the first holder's ack arrives late
    const [b0] = (await claim(redis, keys, { domain: d, max: 1, leaseMs: 1000, now: T + 2000 })).entries as [QueueEntry];
    assert.is(b0.idx, 0);
    await ack(redis, keys, a0, { now: T + 2100, ...OK, recordTtlMs: RECORD_TTL });
    assert.is(await redis.zscore(keys.leases(d), 'x:0:0'), null);
    assert.is(await redis.zscore(keys.ready(d), 'x:0:0'), null);
    assert.not.ok(await retry(redis, keys, b0, { now: T + 2200, nextAt: T + 60_000, ...SOFT }), 'the second holder finds it settled');
    assert.is(await redis.zcard(keys.ready(d)), 1, 'retry after ack re-added nothing');
    assert.is(await redis.hget(keys.rcptState(d, 'x', 0), 'state'), 'delivered');

    // x:1 sits in ready after the reap; the first holder's bounce still settles it (lease lost: applied after reap)
    assert.is(await bounce(redis, keys, a1, { now: T + 2300, state: 'bounced', ...HARD, reason: 'userunknown', recordTtlMs: RECORD_TTL }), OUTCOME.APPLIED_AFTER_REAP);
    assert.is(await redis.zcard(keys.ready(d)), 0);
    assert.is(await redis.zcard(keys.leases(d)), 0);
    assert.not.ok(await ack(redis, keys, a1, { now: T + 2400, ...OK, recordTtlMs: RECORD_TTL }));
    assert.is(await redis.hget(keys.rcptState(d, 'x', 1), 'state'), 'bounced', 'ack after bounce changed nothing');
  });

  test('lease tokens: a holder whose lease was reaped and claimed again cannot retry, bounce, hold, give back or extend the new holder\'s copy', async () => {
    const keys = ctx();
    const d = 'fence.test';
    const camp = 'cfence';
    await enqueueRecipients(redis, keys, SHARDS, [0, 1, 2, 3, 4].map((idx) => ({ msgId: 'f', idx, domain: d, dueAt: T })));
    const first = (await claim(redis, keys, { domain: d, max: 5, leaseMs: 1000, now: T })).entries;
    assert.is(first.length, 5);
    assert.ok(first[0]?.lease, 'a claimed entry carries its lease token');
    assert.is(await redis.hlen(keys.leaseOwners(d)), 5, 'one token per leased member');
    assert.is(await reapExpired(redis, keys, d, T + 1000, 100), 5);
    assert.is(await redis.exists(keys.leaseOwners(d)), 0, 'the reap takes the tokens with the leases');
    const second = (await claim(redis, keys, { domain: d, max: 5, leaseMs: 60_000, now: T + 1000 })).entries;
    assert.is(second.length, 5);
    assert.is.not(second[0]?.lease, first[0]?.lease, 'each claim has its own token');
    const [a0, a1, a2, a3, a4] = first as [QueueEntry, QueueEntry, QueueEntry, QueueEntry, QueueEntry];
    const byIdx = (i: number): QueueEntry => second.find((e) => e.idx === i) as QueueEntry;

    // The first holder's late outcomes find the second claim's token: nothing changes.
    assert.is(await retry(redis, keys, a0, { now: T + 1100, nextAt: T + 1200, ...SOFT }), OUTCOME.NOOP, 'a late retry');
    assert.is(await bounce(redis, keys, a1, { now: T + 1100, state: 'bounced', ...HARD, reason: 'userunknown', recordTtlMs: RECORD_TTL }), OUTCOME.NOOP, 'a late bounce');
    assert.is(await hold(redis, keys, a2, { now: T + 1100, nextAt: T + 9999, enhanced: '4.7.0', response: 'held' }), OUTCOME.NOOP, 'a late hold');
    assert.is(await release(redis, keys, [a3], T + 1100), 0, 'a late give-back');
    assert.equal(await extendLeases(redis, keys, d, first, T + 500_000), first.map(entryMember), 'a late extension: every lease lost');
    assert.is(await redis.zcard(keys.leases(d)), 5, 'the second holder still holds all five');
    assert.is(await redis.zcard(keys.ready(d)), 0, 'nothing was requeued');
    assert.is(Number(await redis.zscore(keys.leases(d), 'f:0:0')), T + 61_000, 'the second lease keeps its own expiry');
    for (const i of [0, 1, 2]) assert.is(await redis.exists(keys.rcptState(d, 'f', i)), 0, `no record written for f:${i}`);

    // A late ack is a fact: it settles the copy, and the second holder finds its lease gone.
    assert.is(await ack(redis, keys, a4, { now: T + 1200, ...OK, recordTtlMs: RECORD_TTL }), OUTCOME.APPLIED);
    assert.equal(await extendLeases(redis, keys, d, second, T + 90_000), ['f:4:0'], 'the second holder learns it must not send f:4');
    assert.is(await retry(redis, keys, byIdx(4), { now: T + 1300, nextAt: T + 1400, ...SOFT }), OUTCOME.NOOP);
    assert.is(await redis.hget(keys.rcptState(d, 'f', 4), 'state'), 'delivered');

    // The second holder's own outcomes apply.
    assert.is(await retry(redis, keys, byIdx(0), { now: T + 1300, nextAt: T + 1400, ...SOFT }), OUTCOME.APPLIED);
    assert.is(await bounce(redis, keys, byIdx(1), { now: T + 1300, state: 'bounced', ...HARD, reason: 'userunknown', recordTtlMs: RECORD_TTL }), OUTCOME.APPLIED);
    assert.is(await hold(redis, keys, byIdx(2), { now: T + 1300, nextAt: T + 9999, enhanced: '4.7.0', response: 'held' }), OUTCOME.APPLIED);
    assert.is(await release(redis, keys, [byIdx(3)], T + 1300), 1);
    assert.equal((await members(keys.ready(d))).sort(), ['f:0:1', 'f:2:0', 'f:3:0']);
    assert.is(await redis.zcard(keys.leases(d)), 0);
    assert.is(await redis.exists(keys.leaseOwners(d)), 0, 'every token went with its lease');

    // A campaign's copies: a late campaign hold is fenced too.
    await redis.rpush(keys.campaignQueue(d, camp), '7');
    await redis.zadd(keys.ready(d), T, `@${camp}`);
    await redis.zrem(keys.ready(d), 'f:0:1', 'f:2:0', 'f:3:0');
    const c1 = (await claim(redis, keys, { domain: d, max: 5, leaseMs: 1000, now: T + 2000 })).entries;
    assert.equal(c1.map(entryMember), [`${camp}:7:0`]);
    assert.is(await reapExpired(redis, keys, d, T + 3000, 100), 1);
    const c2 = (await claim(redis, keys, { domain: d, max: 5, leaseMs: 60_000, now: T + 3000 })).entries;
    assert.equal(c2.map(entryMember), [`${camp}:7:0`]);
    assert.is(await holdCampaignEntries(redis, keys, SHARDS, camp, c1, { pointerAt: T + 5000, holdUntil: T + 5000, now: T + 3100 }), 0, 'a late campaign hold');
    assert.is(await redis.llen(keys.campaignQueue(d, camp)), 0, 'nothing pushed back');
    assert.is(await holdCampaignEntries(redis, keys, SHARDS, camp, c2, { pointerAt: T + 5000, holdUntil: T + 5000, now: T + 3100 }), 1, "the holder's own");
    assert.equal(await redis.lrange(keys.campaignQueue(d, camp), 0, -1), ['7']);
  });

  test('retry re-queues attempt+1 at nextAt and records the deferral; ack and bounce write final records with a TTL', async () => {
    const keys = ctx();
    const d = 'out.test';
    await enqueueRecipients(redis, keys, SHARDS, [0, 1, 2].map((idx) => ({ msgId: 'o', idx, domain: d, dueAt: T })));
    const [e0, e1, e2] = (await claim(redis, keys, { domain: d, max: 3, leaseMs: LEASE, now: T })).entries as [QueueEntry, QueueEntry, QueueEntry];
    const long = 'x'.repeat(2000);
    assert.ok(await retry(redis, keys, e0, { now: T + 1, nextAt: T + 60_000, code: 451, enhanced: null, response: long }));
    assert.equal(await members(keys.ready(d)), ['o:0:1']);
    assert.is(Number(await redis.zscore(keys.ready(d), 'o:0:1')), T + 60_000);
    const rs = await redis.hgetall(keys.rcptState(d, 'o', 0));
    assert.equal({ state: rs['state'], attempts: rs['attempts'], code: rs['code'], nextAt: rs['nextAt'], enhanced: rs['enhanced'] }, { state: 'deferred', attempts: '1', code: '451', nextAt: String(T + 60_000), enhanced: undefined });
    assert.is(rs['response']?.length, 512);
    assert.is(await redis.pttl(keys.rcptState(d, 'o', 0)), -1, 'a pending record does not expire');

    assert.ok(await ack(redis, keys, e1, { now: T + 2, ...OK, recordTtlMs: RECORD_TTL }));
    assert.ok(await bounce(redis, keys, e2, { now: T + 3, state: 'expired', code: null, enhanced: null, response: 'gave up', reason: 'expired', recordTtlMs: RECORD_TTL }));
    assert.equal(await redis.hmget(keys.rcptState(d, 'o', 1), 'state', 'attempts', 'code', 'enhanced', 'updatedAt'), ['delivered', '1', '250', '2.0.0', String(T + 2)]);
    assert.equal(await redis.hmget(keys.rcptState(d, 'o', 2), 'state', 'reason', 'code'), ['expired', 'expired', null]);
    for (const idx of [1, 2]) {
      const ttl = await redis.pttl(keys.rcptState(d, 'o', idx));
      assert.ok(ttl > 0 && ttl <= RECORD_TTL, `final record ${idx} has a TTL`);
    }

    // the next attempt is claimed with attempt 1 and its success clears the deferral fields
    const [n0] = (await claim(redis, keys, { domain: d, max: 5, leaseMs: LEASE, now: T + 60_000 })).entries as [QueueEntry];
    assert.is(n0.attempt, 1);
    assert.ok(await ack(redis, keys, n0, { now: T + 60_001, ...OK, recordTtlMs: RECORD_TTL }));
    assert.equal(await redis.hmget(keys.rcptState(d, 'o', 0), 'state', 'attempts', 'nextAt'), ['delivered', '2', null]);

    // A later outcome without a code or enhanced status removes the ones an earlier answer left.
    await enqueueRecipients(redis, keys, SHARDS, [{ msgId: 'o', idx: 3, domain: d, dueAt: T }]);
    const [f0] = (await claim(redis, keys, { domain: d, max: 5, leaseMs: LEASE, now: T + 60_002 })).entries as [QueueEntry];
    assert.ok(await retry(redis, keys, f0, { now: T + 60_003, nextAt: T + 60_004, code: 451, enhanced: '4.7.1', response: 'greylisted' }));
    const [f1] = (await claim(redis, keys, { domain: d, max: 5, leaseMs: LEASE, now: T + 60_004 })).entries as [QueueEntry];
    assert.ok(await retry(redis, keys, f1, { now: T + 60_005, nextAt: T + 60_006, code: null, enhanced: null, response: 'connection dropped' }));
    assert.equal(await redis.hmget(keys.rcptState(d, 'o', 3), 'state', 'code', 'enhanced', 'nextAt'), ['deferred', null, null, String(T + 60_006)]);
    const [f2] = (await claim(redis, keys, { domain: d, max: 5, leaseMs: LEASE, now: T + 60_006 })).entries as [QueueEntry];
    assert.ok(await retry(redis, keys, f2, { now: T + 60_007, nextAt: T + 60_008, code: 452, enhanced: '4.2.2', response: 'mailbox full' }));
    const [f3] = (await claim(redis, keys, { domain: d, max: 5, leaseMs: LEASE, now: T + 60_008 })).entries as [QueueEntry];
    assert.ok(await bounce(redis, keys, f3, { now: T + 60_009, state: 'expired', code: null, enhanced: null, response: 'gave up', reason: 'expired', recordTtlMs: RECORD_TTL }));
    assert.equal(await redis.hmget(keys.rcptState(d, 'o', 3), 'state', 'code', 'enhanced', 'nextAt', 'reason', 'attempts'), ['expired', null, null, null, 'expired', '4']);
  });

  test('release gives unattempted claims back due now; extendLeases extends only leases still held', async () => {
    const keys = ctx();
    await enqueueRecipients(redis, keys, SHARDS, [
      { msgId: 'rel', idx: 0, domain: 'r1.test', dueAt: T },
      { msgId: 'rel', idx: 1, domain: 'r1.test', dueAt: T },
      { msgId: 'rel', idx: 2, domain: 'r2.test', dueAt: T },
    ]);
    const c1 = (await claim(redis, keys, { domain: 'r1.test', max: 5, leaseMs: 1000, now: T })).entries;
    const c2 = (await claim(redis, keys, { domain: 'r2.test', max: 5, leaseMs: 1000, now: T })).entries;
    assert.equal(await extendLeases(redis, keys, 'r1.test', [...c1, { msgId: 'gone', idx: 9, attempt: 0, domain: 'r1.test' }], T + 50_000), ['gone:9:0'], 'the one not leased is named');
    assert.is(await redis.zscore(keys.leases('r1.test'), 'gone:9:0'), null, 'never creates a lease');
    assert.is(await reapExpired(redis, keys, 'r1.test', T + 2000, 100), 0, 'extended leases are not reaped');
    assert.equal(await extendLeases(redis, keys, 'r1.test', [], T), []);

    assert.is(await release(redis, keys, [...c1, ...c2], T + 3000), 3);
    assert.is(await release(redis, keys, c1, T + 3000), 0, 'a second release finds nothing leased');
    assert.is(await redis.zcard(keys.leases('r1.test')), 0);
    const back = (await claim(redis, keys, { domain: 'r1.test', max: 5, leaseMs: 1000, now: T + 3000 })).entries;
    assert.equal(back.map((e) => e.attempt), [0, 0], 'attempt not counted');
    assert.is(Number(await redis.zscore(keys.ready('r2.test'), 'rel:2:0')), T + 3000);
  });

  test('reschedule: an idle destination is re-checked after 5 minutes; work present keeps it due', async () => {
    const keys = ctx();
    // Listed and scheduled (a dispatcher took it from the schedule), found with nothing queued.
    await redis.zadd(keys.schedule(shardOf('idle.test', SHARDS)), T, 'idle.test');
    await redis.sadd(keys.destinations(shardOf('idle.test', SHARDS)), 'idle.test');
    await reschedule(redis, keys, SHARDS, 'idle.test', null, T);
    assert.is(await score(keys, 'idle.test'), T + IDLE_RECHECK_MS);
    assert.equal(await dueDestinations(redis, keys, shardOf('idle.test', SHARDS), T, 10), []);
    assert.equal(await dueDestinations(redis, keys, shardOf('idle.test', SHARDS), T + IDLE_RECHECK_MS, 10), ['idle.test']);

    // a caller that thinks the destination is empty while an entry is due cannot push it away
    await redis.zadd(keys.ready('busy.test'), T - 5, 'b:0:0');
    await reschedule(redis, keys, SHARDS, 'busy.test', T + 100_000, T);
    assert.is(await score(keys, 'busy.test'), T - 5);
    // postpone holds due work back on purpose
    await postpone(redis, keys, SHARDS, 'busy.test', T + 100_000);
    assert.is(await score(keys, 'busy.test'), T + 100_000);
  });

  // E1/E2: the two phases of enqueueRecipients (ready, then schedule); R1/R2: reschedule's ZADD and
  // its re-check of the ready set. Every order must leave the new entry's destination due.
  const ORDERS = ['E1 E2 R1 R2', 'E1 R1 E2 R2', 'E1 R1 R2 E2', 'R1 E1 E2 R2', 'R1 E1 R2 E2', 'R1 R2 E1 E2'];
  for (const order of ORDERS) {
    test(`reschedule never loses an entry enqueued concurrently (${order})`, async () => {
      const keys = ctx();
      const d = 'race.test';
      const shard = shardOf(d, SHARDS);
      // The dispatcher claimed everything and saw an empty destination (nextAt null).
      await enqueueRecipients(redis, keys, SHARDS, [{ msgId: 'old', idx: 0, domain: d, dueAt: T - 1000 }]);
      const c = await claim(redis, keys, { domain: d, max: 10, leaseMs: LEASE, now: T });
      await ack(redis, keys, c.entries[0] as QueueEntry, { now: T, ...OK, recordTtlMs: RECORD_TTL });
      const seen = await claim(redis, keys, { domain: d, max: 10, leaseMs: LEASE, now: T });
      assert.is(seen.nextAt, null);

      const steps = order.split(' ');
      const enqueueSteps: Record<string, () => Promise<unknown>> = {
        E1: () => other.zadd(keys.ready(d), 'NX', T, 'new:0:0'),
        E2: () => Promise.all([other.sadd(keys.destinations(shard), d), other.zadd(keys.schedule(shard), 'LT', T, d)]),
      };
      let next = 0;
      const runEnqueueUntil = async (r: string | undefined) => {
        while (next < steps.length && steps[next] !== r) {
          const s = steps[next++] as string;
          if (s.startsWith('E')) await (enqueueSteps[s] as () => Promise<unknown>)();
        }
        if (steps[next] === r) next++;
      };
      const dispatcher = stepped(redis, async (n) => {
        if (n < 2) await runEnqueueUntil(n === 0 ? 'R1' : 'R2');
      });
      await reschedule(dispatcher, keys, SHARDS, d, seen.nextAt, T);
      await runEnqueueUntil(undefined);

      assert.is(await redis.zcard(keys.ready(d)), 1);
      assert.equal(await dueDestinations(redis, keys, shard, T, 100), [d], `due after ${order}`);
    });
  }

  test('forgetDestination takes out a destination with nothing queued, never one with ready or leased work', async () => {
    const keys = ctx();
    const members = async (d: string) => redis.sismember(keys.destinations(shardOf(d, SHARDS)), d);
    await enqueueRecipients(redis, keys, SHARDS, [
      { msgId: 'r', idx: 0, domain: 'ready.test', dueAt: T },
      { msgId: 'l', idx: 0, domain: 'leased.test', dueAt: T },
      { msgId: 'e', idx: 0, domain: 'empty.test', dueAt: T },
    ]);
    await claim(redis, keys, { domain: 'leased.test', max: 1, leaseMs: LEASE, now: T });
    const [done] = (await claim(redis, keys, { domain: 'empty.test', max: 1, leaseMs: LEASE, now: T })).entries;
    await ack(redis, keys, done as QueueEntry, { ...OK, now: T, recordTtlMs: RECORD_TTL });
    assert.equal(await reapAndCount(redis, keys, 'leased.test', T, 10), { moved: 0, left: 1, owed: [] });
    assert.equal(await reapAndCount(redis, keys, 'empty.test', T, 10), { moved: 0, left: 0, owed: [] });

    assert.is(await forgetDestination(redis, keys, SHARDS, 'ready.test', T), false);
    assert.is(await forgetDestination(redis, keys, SHARDS, 'leased.test', T), false);
    assert.is(await forgetDestination(redis, keys, SHARDS, 'empty.test', T), true);
    assert.is(await members('ready.test'), 1, 'kept: ready work');
    assert.is(await members('leased.test'), 1, 'kept: a lease');
    assert.is(await members('empty.test'), 0, 'forgotten');
    assert.is(await forgetDestination(redis, keys, SHARDS, 'empty.test', T), false, 'once');
    // The next enqueue brings it back, and repair sees it again.
    await enqueueRecipients(redis, keys, SHARDS, [{ msgId: 'e2', idx: 0, domain: 'empty.test', dueAt: T }]);
    assert.is(await members('empty.test'), 1);
  });

  test("a paused campaign's recipients keep their destination listed: `sluice queue` and the gauges still count them", async () => {
    const keys = ctx();
    const d = 'paused.test';
    await pushCampaignChunk(redis, keys, SHARDS, { campaignId: 'pc', chunk: 1, dueAt: T, sending: true, byDomain: new Map([[d, [1, 2, 3]]]) });
    await controlCampaignQueue(redis, keys, SHARDS, 'pc', 'pause', T);
    assert.is(await redis.zcard(keys.ready(d)), 0, 'paused: no pointer in ready');
    assert.is(await forgetDestination(redis, keys, SHARDS, d, T), false);
    assert.is(await redis.sismember(keys.destinations(shardOf(d, SHARDS)), d), 1, 'still listed');
    const [row] = (await destinationStats(redis, keys, SHARDS, T)).filter((r) => r.domain === d);
    assert.is(row?.campaigns, 3, 'its recipients counted');
    // Cancelled: nothing waits any more, and it goes.
    await controlCampaignQueue(redis, keys, SHARDS, 'pc', 'cancel', T);
    assert.is(await forgetDestination(redis, keys, SHARDS, d, T), true);
  });

  test("a sealed campaign's recipients claimed whole and held back for a pause keep their destination listed and counted", async () => {
    const keys = ctx();
    const d = 'sealed.test';
    await pushCampaignChunk(redis, keys, SHARDS, { campaignId: 'sc', chunk: 1, dueAt: T, sending: true, byDomain: new Map([[d, [1, 2, 3]]]) });
    await controlCampaignQueue(redis, keys, SHARDS, 'sc', 'seal', T);
    const got = await claim(redis, keys, { domain: d, max: 3, leaseMs: LEASE, now: T });
    assert.is(got.entries.length, 3);
    assert.equal(await redis.hkeys(keys.campaignPushed(d)), [], 'the claim that emptied the sealed list dropped its record');
    // Paused while they were claimed: they go back to the list, behind no pointer.
    assert.is(await holdCampaignEntries(redis, keys, SHARDS, 'sc', got.entries, { pointerAt: null, holdUntil: T + 60_000, now: T }), 3);
    assert.is(await redis.hget(keys.campaignPushed(d), 'sc'), 'sealed', 'the record is back');
    await redis.del(keys.leases(d));
    assert.is(await forgetDestination(redis, keys, SHARDS, d, T), false, 'not idle');
    const [row] = (await destinationStats(redis, keys, SHARDS, T)).filter((r) => r.domain === d);
    assert.is(row?.campaigns, 3);
  });

  test('a campaign chunk pushed while not sending lists its destinations after the push too', async () => {
    const keys = ctx();
    const d = 'later.test';
    // A forget that runs between the push's listing and the push itself.
    const racing = new Proxy(redis, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (prop === 'pushCampaign') return async (...a: unknown[]) => {
          await forgetDestination(other, keys, SHARDS, d, T);
          return (v as (...x: unknown[]) => unknown).apply(target, a);
        };
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as RedisClient;
    await pushCampaignChunk(racing, keys, SHARDS, { campaignId: 'pc2', chunk: 1, dueAt: T, sending: false, byDomain: new Map([[d, [1, 2]]]) });
    assert.is(await redis.sismember(keys.destinations(shardOf(d, SHARDS)), d), 1, 'listed');
  });

  test('forgetDestination racing an enqueue: work that arrives between its steps keeps the destination listed', async () => {
    const keys = ctx();
    const d = 'race.test';
    const set = keys.destinations(shardOf(d, SHARDS));
    await redis.sadd(set, d);
    // The other process enqueues (both phases) after the SREM, before the look at the queue.
    const racing = stepped(redis, async (n) => {
      if (n === 0) await enqueueRecipients(other, keys, SHARDS, [{ msgId: 'x', idx: 0, domain: d, dueAt: T }]);
    }, ['zcard']);
    assert.is(await forgetDestination(racing, keys, SHARDS, d, T), false);
    assert.is(await redis.sismember(set, d), 1, 'put back');
    // Its first phase only (ZADD ready, no SADD yet: a crash or a slow second phase): put back too.
    await redis.del(keys.ready(d));
    const half = stepped(redis, async (n) => {
      if (n === 0) await other.zadd(keys.ready(d), T, entryMember({ msgId: 'y', idx: 0, attempt: 0 }));
    }, ['zcard']);
    assert.is(await forgetDestination(half, keys, SHARDS, d, T), false);
    assert.is(await redis.sismember(set, d), 1, 'repair can still find it');
  });

  test("a forgotten destination leaves the schedule too, and an idle re-check does not put it back; work put back lists and schedules it", async () => {
    const keys = ctx();
    const d = 'gone.test';
    const shard = shardOf(d, SHARDS);
    await enqueueRecipients(redis, keys, SHARDS, [{ msgId: 'g', idx: 0, domain: d, dueAt: T }]);
    const [e] = (await claim(redis, keys, { domain: d, max: 1, leaseMs: LEASE, now: T })).entries;
    await ack(redis, keys, e as QueueEntry, { ...OK, now: T, recordTtlMs: RECORD_TTL });
    await reschedule(redis, keys, SHARDS, d, null, T);
    assert.is(await redis.zscore(keys.schedule(shard), d), String(T + IDLE_RECHECK_MS), 'idle: looked at again later');
    assert.ok(await forgetDestination(redis, keys, SHARDS, d, T));
    assert.is(await redis.zscore(keys.schedule(shard), d), null, 'out of the schedule: no look every 5 minutes for good');
    // A dispatcher that was looking at it meanwhile finds nothing: its idle re-check does not bring it back.
    await reschedule(redis, keys, SHARDS, d, null, T);
    assert.is(await redis.zscore(keys.schedule(shard), d), null);
    // Put back in the schedule by a plain write racing the forget (a postpone): its next idle look takes it out.
    await postpone(redis, keys, SHARDS, d, T);
    await reschedule(redis, keys, SHARDS, d, null, T);
    assert.is(await redis.zscore(keys.schedule(shard), d), null, 'not listed: out of the schedule');
    // An enqueue of mail due in 10 minutes lands between that look at the set and the ZREM: still scheduled for it.
    await postpone(redis, keys, SHARDS, d, T);
    const later = new Proxy(redis, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (prop === 'sismember') return async (...a: unknown[]) => {
          const r = await (v as (...x: unknown[]) => Promise<number>).apply(target, a);
          await enqueueRecipients(other, keys, SHARDS, [{ msgId: 'late', idx: 0, domain: d, dueAt: T + 600_000 }]);
          return r;
        };
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as RedisClient;
    await reschedule(later, keys, SHARDS, d, null, T);
    assert.is(await redis.zscore(keys.schedule(shard), d), String(T + 600_000), 'scheduled for its work');
    await redis.del(keys.ready(d));

    // An enqueue whose two phases land between the ZREM and the second look: listed and due again.
    await redis.zadd(keys.schedule(shard), T, d);
    await redis.sadd(keys.destinations(shard), d);
    const racing = new Proxy(redis, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (prop !== 'multi' || typeof v !== 'function') return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        let first = true;
        return (...a: unknown[]) => {
          const m = (v as (...a: unknown[]) => { exec(): Promise<unknown> }).apply(target, a);
          const exec = m.exec.bind(m);
          m.exec = async () => {
            const r = await exec();
            if (first) await enqueueRecipients(other, keys, SHARDS, [{ msgId: 'h', idx: 0, domain: d, dueAt: T + 5 }]);
            first = false;
            return r;
          };
          return m;
        };
      },
    }) as RedisClient;
    assert.is(await forgetDestination(racing, keys, SHARDS, d, T + 1), false);
    assert.is(await redis.sismember(keys.destinations(shard), d), 1, 'listed');
    assert.ok(Number(await redis.zscore(keys.schedule(shard), d)) <= T + 5, 'scheduled no later than its work');
  });

  test("an enqueue lists its destinations before it writes their work: a crash before the schedule leaves work that repair finds, also at a forgotten destination", async () => {
    const keys = ctx();
    const d = 'crash.test';
    const shard = shardOf(d, SHARDS);
    // The enqueue's process dies after phase 1 (its work written), before phase 2 (the schedule).
    const dying = new Proxy(redis, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (prop === 'zadd') return async (...a: unknown[]) => {
          if (a[0] === keys.schedule(shard)) throw new Error('killed');
          return (v as (...x: unknown[]) => unknown).apply(target, a);
        };
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as RedisClient;
    const died = await enqueueRecipients(dying, keys, SHARDS, [{ msgId: 'c', idx: 0, domain: d, dueAt: T }]).then(() => null, (err: Error) => err.message);
    assert.is(died, 'killed');
    assert.is(await redis.zscore(keys.schedule(shard), d), null, 'no schedule entry');
    assert.is(await repairSchedule(redis, keys, SHARDS, T, 1000), 1, 'repair finds the work: the destination was listed first');
    assert.is(await redis.zscore(keys.schedule(shard), d), String(T));
  });

  test("a campaign chunk is recorded once: sent again (a lost reply, a second process that took the lock over) it counts nothing more, nor does an older one", async () => {
    const keys = ctx();
    const id = 'c00000000000rec1';
    await createCampaign(redis, keys, {
      id, account: 'acme', name: 'rec', listId: 'l', from: 'a@acme.example', fromDomain: 'acme.example', subject: 's',
      tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: T, sendAt: T, body: '{}', links: [],
    });
    assert.ok((await startCampaign(redis, keys, id, T)).ok);
    assert.is(await recordEnqueueChunk(redis, keys, id, { next: 101, chunk: 1, queued: 90, skipped: 10 }), true);
    assert.is(await recordEnqueueChunk(redis, keys, id, { next: 101, chunk: 1, queued: 90, skipped: 10 }), false);
    assert.is(await recordEnqueueChunk(redis, keys, id, { next: 201, chunk: 2, queued: 100, skipped: 0 }), true);
    assert.is(await recordEnqueueChunk(redis, keys, id, { next: 101, chunk: 1, queued: 90, skipped: 10 }), false);
    const c = await getCampaign(redis, keys, null, id);
    assert.equal([c?.queued, c?.pending, c?.skipped, c?.cursor, c?.chunk], [190, 190, 10, 201, 2]);
  });

  test('a final outcome that notes its count as owed (a cluster: the count is in another slot) notes it only when it applies; the count is made once however often it is asked', async () => {
    const keys = ctx();
    const id = 'c00000000000owe1';
    await createCampaign(redis, keys, {
      id, account: 'acme', name: 'owe', listId: 'l', from: 'a@acme.example', fromDomain: 'acme.example', subject: 's',
      tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: T, sendAt: T, body: '{}', links: [],
    });
    assert.ok((await startCampaign(redis, keys, id, T)).ok);
    await pushCampaignChunk(redis, keys, SHARDS, { campaignId: id, chunk: 1, dueAt: T, sending: true, byDomain: new Map([['o.test', [1, 2]]]) });
    await recordEnqueueChunk(redis, keys, id, { next: 3, chunk: 1, queued: 2, skipped: 0 });
    await markCampaignQueued(redis, keys, id, T);
    const [c1, c2] = (await claim(redis, keys, { domain: 'o.test', max: 2, leaseMs: LEASE, now: T })).entries as [QueueEntry, QueueEntry];
    const ttl = { recordsMs: RECORD_TTL, refsMs: RECORD_TTL };
    // c1 delivered: owed; a second ack (another holder's) applies nothing and notes nothing more.
    assert.is(await ack(redis, keys, c1, { ...OK, now: T, recordTtlMs: RECORD_TTL, owe: { counter: 'delivered' } }), 2);
    assert.is(await ack(redis, keys, c1, { ...OK, now: T, recordTtlMs: RECORD_TTL, owe: { counter: 'delivered' } }), 0);
    // c2: a stale holder's bounce (another token) applies nothing and owes nothing.
    assert.is(await bounce(redis, keys, { ...c2, lease: 'someone-else' }, { now: T, state: 'bounced', code: 550, enhanced: '5.1.1', response: '550 no', reason: 'hostunknown', recordTtlMs: RECORD_TTL, owe: { counter: 'bounced', reason: 'hostunknown', hard: true } }), 0);
    assert.equal(await redis.zrange(keys.owed('o.test'), 0, -1), [`${id}:1|delivered||0`]);
    // Counted twice (the dispatcher and the reaper both came): once.
    assert.equal(await countCopy(redis, keys, c1, { counter: 'delivered' }, T, ttl), { kind: 'campaign', state: 'sending' });
    assert.equal(await countCopy(other, keys, c1, { counter: 'delivered' }, T, ttl), { kind: 'before' });
    await clearOwed(redis, keys, 'o.test', owedMember(c1, { counter: 'delivered' }));
    assert.is(await redis.zcard(keys.owed('o.test')), 0);
    assert.is(await bounce(redis, keys, c2, { now: T, state: 'bounced', code: 550, enhanced: '5.1.1', response: '550 no', reason: 'hostunknown', recordTtlMs: RECORD_TTL, owe: { counter: 'bounced', reason: 'hostunknown', hard: true } }), 2);
    assert.equal(await countCopy(redis, keys, c2, { counter: 'bounced', reason: 'hostunknown', hard: true }, T, ttl), { kind: 'campaign', state: 'completed' });
    const c = await getCampaign(redis, keys, null, id);
    assert.equal([c?.state, c?.pending], ['completed', 0]);
    assert.equal([await redis.hget(keys.msgStats(id), 'delivered'), await redis.hget(keys.msgStats(id), 'bounced'), await redis.hget(keys.msgStats(id), 'hardbounces')], ['1', '1', '1']);
  });

  test("counts a crash left owed are made by the reaper after a grace, once; a destination that only owes counts is not forgotten; a message's body goes with its last count", async () => {
    const keys = ctx();
    const id = newId(T);
    await persistMessage(redis, keys, SHARDS, { id, account: 'acct', source: 'http', kind: 'raw', from: 'n@x.test', fromDomain: 'x.test', rcpts: [{ address: 'a@w.test', domain: 'w.test' }, { address: 'b@w.test', domain: 'w.test' }], acceptedAt: T, tags: [], metadata: {}, body: 'To: a@w.test\r\n\r\nhi\r\n' });
    const [a, b] = (await claim(redis, keys, { domain: 'w.test', max: 2, leaseMs: LEASE, now: T })).entries as [QueueEntry, QueueEntry];
    // Both delivered; the process dies before either count.
    for (const e of [a, b]) assert.is(await ack(redis, keys, e, { ...OK, now: T, recordTtlMs: RECORD_TTL, owe: { counter: 'delivered' } }), 2);
    let now = T + 1000;
    const reaper = new Reaper({ redis, keys, shards: SHARDS, intervalMs: 60_000, logger: createLogger('silent'), now: () => now, counts: { recordsMs: RECORD_TTL, refsMs: RECORD_TTL } });
    assert.is((await reaper.tick()).counted, 0, 'within the grace: the count may be on its way');
    assert.is((await reaper.tick()).forgotten, 0, 'a destination that owes counts stays listed');
    assert.ok(await redis.exists(keys.msgBody(id)));
    // One of them counted by its dispatcher after all (late), not yet cleared.
    assert.equal(await countCopy(redis, keys, a, { counter: 'delivered' }, T, { recordsMs: RECORD_TTL, refsMs: RECORD_TTL }), { kind: 'message', pending: 1 });
    now = T + OWED_GRACE_MS + 1000;
    assert.is((await reaper.tick()).counted, 1, 'the other one; the first is not counted twice');
    assert.is(await redis.zcard(keys.owed('w.test')), 0);
    assert.is(await redis.hget(keys.msgMeta(id), 'pending'), '0');
    assert.is(await redis.exists(keys.msgBody(id)), 0, 'the body went with the last count');
    await reaper.tick();
    assert.is((await reaper.tick()).forgotten >= 1, true, 'and the destination is forgotten once nothing is owed');
  });

  test('repairSchedule walks the destination sets in bounded steps and reschedules only what needs it', async () => {
    const keys = ctx();
    const broken = ['p1.test', 'p2.test', 'p3.test', 'p4.test', 'p5.test', 'p6.test'];
    for (const d of broken) {
      await redis.sadd(keys.destinations(shardOf(d, SHARDS)), d);
      await redis.zadd(keys.ready(d), T + 10, `${d}:0:0`);
    }
    // p1: no schedule entry (crash between the enqueue phases); p2: scheduled too late;
    // p3: only a lease, scheduled after its expiry; p4..p6: no schedule entry
    await redis.zadd(keys.schedule(shardOf('p2.test', SHARDS)), T + 999_999, 'p2.test');
    await redis.del(keys.ready('p3.test'));
    await redis.zadd(keys.leases('p3.test'), T + 500, 'p3:0:0');
    await redis.zadd(keys.schedule(shardOf('p3.test', SHARDS)), T + 999_999, 'p3.test');
    // fine: scheduled at its work; empty: no work at all
    await enqueueRecipients(redis, keys, SHARDS, [{ msgId: 'f', idx: 0, domain: 'fine.test', dueAt: T + 10 }]);
    await redis.sadd(keys.destinations(shardOf('empty.test', SHARDS)), 'empty.test');

    // batch 1: each call reads one SSCAN page and stops, resuming where the last one stopped
    const first = await repairSchedule(redis, keys, SHARDS, T, 1);
    assert.ok(first < broken.length, `one call fixed ${first}`);
    let total = first;
    for (let calls = 1; total < broken.length && calls < 50; calls++) total += await repairSchedule(redis, keys, SHARDS, T, 1);
    assert.is(total, broken.length);
    for (const d of broken) assert.ok(((await score(keys, d)) ?? Infinity) <= T + 500, `${d} rescheduled`);
    assert.is(await score(keys, 'p3.test'), T + 500, 'lease expiry counts as work');
    assert.is(await score(keys, 'empty.test'), null);
    assert.is(await repairSchedule(redis, keys, SHARDS, T, 1000), 0, 'a full lap finds nothing more');
    // work long overdue is scheduled at now, not at its ancient due time
    await redis.zrem(keys.schedule(shardOf('fine.test', SHARDS)), 'fine.test');
    assert.is(await repairSchedule(redis, keys, SHARDS, T + 50_000, 1000), 1);
    assert.is(await score(keys, 'fine.test'), T + 50_000);
  });

  test('repairSchedule keeps a postponement (hold, suspension) and repairs a postponed score that something else later changed', async () => {
    const keys = ctx();
    await enqueueRecipients(redis, keys, SHARDS, [
      { msgId: 'h', idx: 0, domain: 'held.test', dueAt: T },
      { msgId: 'l', idx: 0, domain: 'lost.test', dueAt: T },
    ]);
    await postpone(redis, keys, SHARDS, 'held.test', T + 30_000);
    await postpone(redis, keys, SHARDS, 'lost.test', T + 30_000);
    // lost.test's score is then rewritten late by something other than postpone() (a stray write)
    await redis.zadd(keys.schedule(shardOf('lost.test', SHARDS)), T + 999_999, 'lost.test');
    assert.is(await repairSchedule(redis, keys, SHARDS, T + 1, 1000), 1, 'only lost.test is repaired');
    assert.is(await score(keys, 'held.test'), T + 30_000, 'the postponement stands');
    assert.is(await score(keys, 'lost.test'), T + 1);
    assert.is(await redis.hexists(keys.postponed(shardOf('lost.test', SHARDS)), 'lost.test'), 0, 'the stale note is dropped');
    // an enqueue lowers a postponed score (ZADD LT): the dispatcher looks, and postpones again if it must
    await enqueueRecipients(redis, keys, SHARDS, [{ msgId: 'h2', idx: 0, domain: 'held.test', dueAt: T + 2 }]);
    assert.is(await score(keys, 'held.test'), T + 2);
    // emptied and forgotten: the note goes with the destination
    await redis.del(keys.ready('held.test'));
    assert.ok(await forgetDestination(redis, keys, SHARDS, 'held.test', T));
    assert.is(await redis.hexists(keys.postponed(shardOf('held.test', SHARDS)), 'held.test'), 0);
  });

  test('token buckets grant by count: the minimum over windows, refill by elapsed time, refunds capped', async () => {
    const keys = ctx();
    const rate: Rate = { perSecond: 10, perMinute: 25, perHour: null };
    assert.equal(await takeTokens(redis, keys, 'g', rate, 8, T), { granted: 8, retryAt: null });
    // the second bucket holds 2; the next token comes after 1000/10 ms
    assert.equal(await takeTokens(redis, keys, 'g', rate, 8, T), { granted: 2, retryAt: T + 100 });
    assert.equal(await takeTokens(redis, keys, 'g', rate, 1, T + 50), { granted: 0, retryAt: T + 100 });
    // one second later: per-second is full (10), per-minute has 15 + 1000*25/60000 ≈ 15.4
    assert.equal(await takeTokens(redis, keys, 'g', rate, 20, T + 1000), { granted: 10, retryAt: T + 1100 });
    // per-minute is now the limit: 5.83 left → 5; its 0.83 reaches 1 after 0.17 × 60000/25 = 400 ms
    const t = await takeTokens(redis, keys, 'g', rate, 20, T + 2000);
    assert.is(t.granted, 5);
    assert.ok(t.retryAt !== null && t.retryAt >= T + 2399 && t.retryAt <= T + 2401, `retryAt ${t.retryAt}`);
    await refundTokens(redis, keys, 'g', rate, 3, T + 2000);
    assert.is((await takeTokens(redis, keys, 'g', rate, 20, T + 2000)).granted, 3);
    await refundTokens(redis, keys, 'g', rate, 1000, T + 2000);
    assert.is((await takeTokens(redis, keys, 'g', rate, 100, T + 2000)).granted, 10, 'refund never exceeds a bucket');
    // a clock running behind the stored time refills nothing
    assert.is((await takeTokens(redis, keys, 'g', rate, 100, T)).granted, 0);
    const stats = await scopeStats(redis, keys, 'g', rate, T + 2000);
    assert.equal(Object.keys(stats.tokens).sort(), ['perMinute', 'perSecond']);
    assert.is(stats.tokens['perSecond'], 0);
    // no limit: everything, without touching Redis
    assert.equal(await takeTokens(redis, keys, 'free', { perSecond: null, perMinute: null, perHour: null }, 500, T), { granted: 500, retryAt: null });
    assert.is(await redis.exists(keys.bucket('free')), 0);
  });

  test("a shared scope's slots go to its destinations in turn: a refused one waits, and a freed slot is its before the holder's next ask; a wait not renewed lapses", async () => {
    const keys = ctx();
    const turn = (domain: string, join = true) => ({ domain, join, waitTtlMs: 5000 });
    assert.ok(await acquireConnection(redis, keys, 'g', 'big1', 1, 60_000, T, turn('big.test')));
    assert.not.ok(await acquireConnection(other, keys, 'g', 'small1', 1, 60_000, T + 10, turn('small.test')), 'all taken');
    // The holder gives its slot up after its batch (the head of the line is named, to be made due) and asks again at once: small.test waited longer.
    assert.is(await yieldConnection(redis, keys, 'g', 'big1', 'big.test', 1, T + 20, 5000), 'small.test');
    assert.is(await redis.zscore(keys.conns('g'), 'big1'), null, 'its slot is free');
    assert.not.ok(await acquireConnection(redis, keys, 'g', 'big2', 1, 60_000, T + 30, turn('big.test')), 'not before the one that waits');
    assert.ok(await acquireConnection(other, keys, 'g', 'small2', 1, 60_000, T + 900, turn('small.test')), "the waiter's turn");
    await releaseConnection(other, keys, 'g', 'small2');
    assert.ok(await acquireConnection(redis, keys, 'g', 'big3', 1, 60_000, T + 1000, turn('big.test')), "then big.test's, which waited meanwhile");
    // One more connection of a destination that has one does not join the line.
    assert.not.ok(await acquireConnection(redis, keys, 'g', 'big4', 1, 60_000, T + 1100, turn('big.test', false)));
    assert.is(await redis.zcard(keys.connWaiting('g')), 0);
    // A waiter that stops asking (its mail went elsewhere) no longer holds the line after waitTtl.
    assert.not.ok(await acquireConnection(other, keys, 'g', 'gone1', 1, 60_000, T + 1200, turn('gone.test')));
    await releaseConnection(redis, keys, 'g', 'big3');
    assert.not.ok(await acquireConnection(redis, keys, 'g', 'big5', 1, 60_000, T + 2000, turn('big.test')), 'gone.test waits still');
    assert.ok(await acquireConnection(redis, keys, 'g', 'big6', 1, 60_000, T + 1200 + 5001, turn('big.test')), 'its wait lapsed');
    // Without a turn (a scope of one destination) nothing waits.
    assert.not.ok(await acquireConnection(redis, keys, 'g', 'x', 1, 60_000, T + 7000));
    assert.is(await redis.zcard(keys.connWaiting('g')), 0);
    assert.is(await yieldConnection(redis, keys, 'g', 'big6', 'big.test', 1, T + 7000, 5000), null, 'nobody waits: it carries on');
  });

  test('one connection gives its slot up per waiting destination: the busy one keeps the rest', async () => {
    const keys = ctx();
    const turn = (domain: string) => ({ domain, join: true, waitTtlMs: 5000 });
    for (const c of ['b1', 'b2', 'b3']) assert.ok(await acquireConnection(redis, keys, 'g', c, 3, 60_000, T, turn('big.test')));
    assert.not.ok(await acquireConnection(other, keys, 'g', 's1', 3, 60_000, T + 10, turn('small.test')));
    assert.is(await yieldConnection(redis, keys, 'g', 'b1', 'big.test', 3, T + 20, 5000), 'small.test');
    assert.is(await yieldConnection(redis, keys, 'g', 'b2', 'big.test', 3, T + 21, 5000), null, 'one slot free for one waiter: the others carry on');
    assert.is(await yieldConnection(other, keys, 'g', 'b3', 'big.test', 3, T + 22, 5000), null);
    assert.is(await redis.zcard(keys.conns('g')), 2);
  });

  test('connection slots are shared by two processes, expire, and are not renewed once lost', async () => {
    const keys = ctx();
    assert.ok(await acquireConnection(redis, keys, 'mx', 'a1', 2, 10_000, T));
    assert.ok(await acquireConnection(other, keys, 'mx', 'b1', 2, 10_000, T));
    assert.not.ok(await acquireConnection(redis, keys, 'mx', 'a2', 2, 10_000, T), 'third slot refused');
    assert.ok(await acquireConnection(redis, keys, 'mx', 'a1', 2, 10_000, T + 1), 'a held slot is ours again');
    await releaseConnection(redis, keys, 'mx', 'a1');
    assert.ok(await acquireConnection(other, keys, 'mx', 'b2', 2, 10_000, T + 2));
    assert.not.ok(await acquireConnection(redis, keys, 'mx', 'a3', 2, 10_000, T + 3));
    assert.is((await scopeStats(redis, keys, 'mx', { perSecond: null, perMinute: null, perHour: null }, T + 3)).connections, 2);
    // b1 is renewed, b2 is not: at T + 10_001 only b2 has expired
    await renewConnection(other, keys, 'mx', 'b1', 20_000, T + 5000);
    assert.ok(await acquireConnection(redis, keys, 'mx', 'a4', 2, 10_000, T + 10_003));
    assert.not.ok(await acquireConnection(redis, keys, 'mx', 'a5', 2, 10_000, T + 10_004));
    // a slot that expired is not taken back by a renewal
    await renewConnection(other, keys, 'mx', 'b2', 20_000, T + 10_005);
    assert.is(await redis.zscore(keys.conns('mx'), 'b2'), null);
    assert.ok((await redis.pttl(keys.conns('mx'))) > 0, 'the slot set expires on its own');
  });

  const BACKOFF: BackoffConfig = { threshold: 3, windowMs: 10_000, suspendMs: 1000, maxSuspendMs: 4000, maxLevel: 3, recoverMs: 5000, ratePerConnection: 1 };
  const SLOW = '421 4.7.0 Try again later, closing connection';

  test('adaptive backoff: a burst suspends the scope and raises its level with the reason; repeats double the suspension up to the cap', async () => {
    const keys = ctx();
    const signal = (now: number, reply = SLOW) => recordThrottleSignal(redis, keys, 'bo', BACKOFF, now, reply);
    assert.equal(await signal(T), { suspendedUntil: null, level: 0 });
    assert.equal(await signal(T + 1), { suspendedUntil: null, level: 0 });
    assert.equal(await signal(T + 20_000), { suspendedUntil: null, level: 0 }, 'the window restarted: two old signals no longer count');
    assert.equal(await backoffState(redis, keys, 'bo', T + 20_000), { suspendedUntil: null, level: 0, reason: null }, 'no reason shown at full speed');
    await signal(T + 20_001);
    let now = T + 20_002;
    assert.equal(await signal(now, '421  4.7.0\r\n  Too many connections from your IP'), { suspendedUntil: now + 1000, level: 1 });
    assert.equal(await backoffState(redis, keys, 'bo', now), { suspendedUntil: now + 1000, level: 1, reason: '421 4.7.0 Too many connections from your IP' });
    assert.equal(await signal(now + 10), { suspendedUntil: now + 1000, level: 1 }, 'answers during the suspension do not escalate');
    assert.is(await recordSuccess(redis, keys, 'bo', BACKOFF, now + 20), 1, 'success during a suspension changes nothing');

    const trigger = async (at: number, reply = SLOW) => {
      await signal(at, reply);
      await signal(at + 1, reply);
      return signal(at + 2, reply);
    };
    now += 2000;
    assert.equal(await trigger(now), { suspendedUntil: now + 2 + 2000, level: 2 }, 'doubled');
    now += 5000;
    assert.equal(await trigger(now), { suspendedUntil: now + 2 + 4000, level: 3 }, 'doubled again, at the cap');
    now += 5000;
    const long = `451 4.7.1 ${'rate limited '.repeat(40)}`;
    assert.equal(await trigger(now, long), { suspendedUntil: now + 2 + 4000, level: 3 }, 'suspension and level stay at their caps');
    const st = await backoffState(redis, keys, 'bo', now + 5000);
    assert.equal([st.suspendedUntil, st.level, st.reason?.length], [null, 3, REASON_MAX], 'the reason is the last answer, truncated');
    assert.ok(st.reason?.startsWith('451 4.7.1 rate limited'));
  });

  test('adaptive backoff: the level cuts connections and rate; good answers remove one level per quiet period', async () => {
    const keys = ctx();
    const configured: EffectiveShaping = { rule: 'big', provider: 'big', scope: 'big', connections: 8, messagesPerConnection: 100, rate: { perSecond: 40, perMinute: null, perHour: null }, retry: [MINUTE], maxAge: HOUR, tls: null, bind: null, ehloName: null };
    let now = T;
    for (let k = 0; k < 3; k++, now += 20_000) {
      for (let i = 0; i < 3; i++) await recordThrottleSignal(redis, keys, 'big', BACKOFF, now + i, SLOW);
    }
    const quietFrom = now - 20_000 + 2 + 4000; // end of the last suspension
    now = quietFrom;
    const { level } = await backoffState(redis, keys, 'big', now);
    assert.is(level, 3);

    // What the dispatcher does with the level: 8 → 1 connection, 40/s → 5/s.
    const slowed = applyBackoff(configured, level, BACKOFF);
    assert.equal([slowed.connections, slowed.rate], [1, { perSecond: 5, perMinute: null, perHour: null }]);
    assert.ok(await acquireConnection(redis, keys, 'big', 'c1', slowed.connections, 10_000, now));
    assert.not.ok(await acquireConnection(redis, keys, 'big', 'c2', slowed.connections, 10_000, now), 'a second connection is refused');
    assert.ok(await acquireConnection(redis, keys, 'big', 'c2', configured.connections, 10_000, now), 'which full speed would allow');
    assert.is((await takeTokens(redis, keys, 'big', slowed.rate, 100, now)).granted, 5, 'one second of the slowed rate');

    // Recovery: one level per 5 s of good answers, never two at once.
    assert.is(await recordSuccess(redis, keys, 'big', BACKOFF, now + 4999), 3, 'not quiet long enough yet');
    assert.is(await recordSuccess(redis, keys, 'big', BACKOFF, now + 5000), 2);
    assert.is(await recordSuccess(redis, keys, 'big', BACKOFF, now + 5001), 2, 'the quiet period restarts after each step');
    assert.equal(applyBackoff(configured, 2, BACKOFF).connections, 2);
    assert.is(await recordSuccess(redis, keys, 'big', BACKOFF, now + 10_000), 1);
    // one slow-down answer below the threshold does not raise the level, but restarts the quiet period
    assert.equal(await recordThrottleSignal(redis, keys, 'big', BACKOFF, now + 12_000, SLOW), { suspendedUntil: null, level: 1 });
    assert.is(await recordSuccess(redis, keys, 'big', BACKOFF, now + 15_000), 1);
    assert.is(await recordSuccess(redis, keys, 'big', BACKOFF, now + 17_000), 0);
    assert.is(await recordSuccess(redis, keys, 'big', BACKOFF, now + 30_000), 0);
    assert.equal(await backoffState(redis, keys, 'big', now + 30_000), { suspendedUntil: null, level: 0, reason: null });
    assert.is(applyBackoff(configured, 0, BACKOFF), configured, 'full speed again');
    assert.ok((await redis.pttl(keys.backoff('big'))) > 0, 'the state expires on its own');

    now += 40_000;
    for (let i = 0; i < 2; i++) await recordThrottleSignal(redis, keys, 'big', BACKOFF, now + i, SLOW);
    assert.equal(await recordThrottleSignal(redis, keys, 'big', BACKOFF, now + 2, SLOW), { suspendedUntil: now + 2 + 1000, level: 1 }, 'back to the first suspension');
  });

  test('recipientStates reports every state', async () => {
    const keys = ctx();
    const d = 'st.test';
    const m = 'msg';
    await enqueueRecipients(redis, keys, SHARDS, [0, 1, 2, 3, 4, 5, 6].map((idx) => ({ msgId: m, idx, domain: d, dueAt: idx === 6 ? T + 500 : T })));
    const claimed = (await claim(redis, keys, { domain: d, max: 5, leaseMs: LEASE, now: T })).entries;
    const [, e1, e2, e3, e4] = claimed as [QueueEntry, QueueEntry, QueueEntry, QueueEntry, QueueEntry];
    // 0 sending; 1 delivered; 2 bounced; 3 expired; 4 deferred then claimed again (sending); 5 deferred in ready
    await ack(redis, keys, e1, { now: T + 1, ...OK, recordTtlMs: RECORD_TTL });
    await bounce(redis, keys, e2, { now: T + 2, state: 'bounced', ...HARD, reason: 'userunknown', recordTtlMs: RECORD_TTL });
    await bounce(redis, keys, e3, { now: T + 3, state: 'expired', ...SOFT, reason: 'expired', recordTtlMs: RECORD_TTL });
    await retry(redis, keys, e4, { now: T + 4, nextAt: T + 100, ...SOFT });
    // takes 5 (due T) and 4's second attempt (due T + 100); 6 (due T + 500) stays queued
    assert.is((await claim(redis, keys, { domain: d, max: 2, leaseMs: LEASE, now: T + 100 })).entries.length, 2);
    const five = { msgId: m, idx: 5, attempt: 0, domain: d };
    await retry(redis, keys, five, { now: T + 5, nextAt: T + 60_000, ...SOFT });

    const states = await recipientStates(redis, keys, m, [0, 1, 2, 3, 4, 5, 6, 7].map((idx) => ({ idx, domain: d })));
    assert.equal(states.map((s) => s.state), ['sending', 'delivered', 'bounced', 'expired', 'sending', 'deferred', 'queued', 'unknown']);
    assert.equal(states[1], { idx: 1, state: 'delivered', attempts: 1, nextAttemptAt: null, code: 250, enhanced: '2.0.0', response: OK.response, reason: null, updatedAt: T + 1 });
    assert.is(states[2]?.reason, 'userunknown');
    assert.is(states[4]?.attempts, 1);
    assert.equal([states[5]?.nextAttemptAt, states[5]?.attempts, states[5]?.code], [T + 60_000, 1, 451]);
    assert.equal([states[6]?.nextAttemptAt, states[6]?.attempts], [T + 500, 0]);
    assert.equal(states[7], { idx: 7, state: 'unknown', attempts: 0, nextAttemptAt: null, code: null, enhanced: null, response: null, reason: null, updatedAt: null });
  });

  test('destinationStats lists busy destinations across shards, busiest first', async () => {
    const keys = ctx();
    await enqueueRecipients(redis, keys, SHARDS, [
      ...[0, 1, 2].map((idx) => ({ msgId: 's', idx, domain: 'big.test', dueAt: T })),
      { msgId: 's', idx: 3, domain: 'big.test', dueAt: T + 9000 },
      { msgId: 's', idx: 4, domain: 'small.test', dueAt: T + 10 },
      { msgId: 's', idx: 5, domain: 'done.test', dueAt: T },
    ]);
    await claim(redis, keys, { domain: 'big.test', max: 1, leaseMs: LEASE, now: T });
    const done = (await claim(redis, keys, { domain: 'done.test', max: 1, leaseMs: LEASE, now: T })).entries[0] as QueueEntry;
    await ack(redis, keys, done, { now: T, ...OK, recordTtlMs: RECORD_TTL });

    const stats = await destinationStats(redis, keys, SHARDS, T + 10);
    assert.equal(stats, [
      { domain: 'big.test', ready: 3, campaigns: 0, due: 2, leased: 1, nextAt: T, scheduledAt: T, recordedRule: null },
      { domain: 'small.test', ready: 1, campaigns: 0, due: 1, leased: 0, nextAt: T + 10, scheduledAt: T + 10, recordedRule: null },
    ]);
    assert.equal((await destinationStats(redis, keys, SHARDS, T + 10, 1)).map((s) => s.domain), ['big.test']);
  });

  test("destinationStats counts a campaign's recipients behind its pointer, not the pointer, as queueTotals does", async () => {
    const keys = ctx();
    await pushCampaignChunk(redis, keys, SHARDS, { campaignId: 'camp', chunk: 1, dueAt: T, sending: true, byDomain: new Map([['c.test', [1, 2, 3]]]) });
    const [s] = await destinationStats(redis, keys, SHARDS, T);
    assert.equal([s?.domain, s?.ready, s?.campaigns], ['c.test', 0, 3], 'the pointer is not a recipient');
    const totals = await queueTotals(redis, keys, SHARDS, () => 'all');
    assert.equal(totals.get('all'), { recipients: 3, leased: 0 });
  });

  test('queueTotals counts every destination (600 here, over every shard), and destinationStats reads them all before its limit', async () => {
    const keys = ctx();
    const N = 600;
    const domains = Array.from({ length: N }, (_, i) => `d${i}.test`);
    // destination i holds 1 + i % 3 recipients, and the first 100 have one of them leased
    await enqueueRecipients(redis, keys, SHARDS, domains.flatMap((domain, i) => Array.from({ length: 1 + (i % 3) }, (_, idx) => ({ msgId: `t${i}`, idx, domain, dueAt: T }))));
    for (const domain of domains.slice(0, 100)) await claim(redis, keys, { domain, max: 1, leaseMs: LEASE, now: T });
    const total = domains.reduce((n, _, i) => n + 1 + (i % 3), 0);
    // two groups: the first 250 domains and the rest
    const totals = await queueTotals(redis, keys, SHARDS, (domain) => (Number(domain.slice(1, -5)) < 250 ? 'first' : 'rest'));
    const first = domains.slice(0, 250).reduce((n, _, i) => n + 1 + (i % 3), 0);
    assert.equal(Object.fromEntries(totals), { first: { recipients: first - 100, leased: 100 }, rest: { recipients: total - first, leased: 0 } });

    const all = await destinationStats(redis, keys, SHARDS, T);
    assert.is(all.length, N, 'every destination, none cut at 500');
    assert.is(all.reduce((n, s) => n + s.ready + s.leased, 0), total);
    const top = await destinationStats(redis, keys, SHARDS, T, 50);
    assert.equal(top, all.slice(0, 50), 'the limit cuts the ranked list (busiest first), not the destinations read');
    assert.is(top[0]?.due, 3);
  });

  test("a destination's recorded rule: stats and totals group it as the dispatcher did; written on change or after REWRITE_MS, with a TTL", async () => {
    const keys = ctx();
    const { shaping } = loadConfig({ env: {} }); // the shipped rules: google matches '*.google.com' MX hosts
    await enqueueRecipients(redis, keys, SHARDS, [
      { msgId: 'r', idx: 0, domain: 'hosted.test', dueAt: T },
      { msgId: 'r', idx: 1, domain: 'hosted.test', dueAt: T },
      { msgId: 'r', idx: 2, domain: 'plain.test', dueAt: T },
      { msgId: 'r', idx: 3, domain: 'gmail.com', dueAt: T },
    ]);
    await claim(redis, keys, { domain: 'hosted.test', max: 1, leaseMs: LEASE, now: T });
    const provider = (domain: string, recorded: string | null) => resolveRecordedShaping(shaping, domain, recorded).provider;
    assert.equal(Object.fromEntries(await queueTotals(redis, keys, SHARDS, provider)), { default: { recipients: 2, leased: 1 }, google: { recipients: 1, leased: 0 } }, 'before any visit: by domain alone');

    // the dispatcher resolves hosted.test with its MX hosts and records the rule
    const writes: string[] = [];
    const recorder = new DestinationRuleRecorder(stepped(redis, async () => {
      writes.push('set');
    }, ['set']), keys);
    const resolved = resolveShaping(shaping, 'hosted.test', ['alt1.aspmx.l.google.com']);
    assert.is(resolved.rule, 'google');
    recorder.record('hosted.test', resolved.rule, T);
    recorder.record('hosted.test', resolved.rule, T + 1000); // the next claims: no write
    await redis.ping();
    assert.is(writes.length, 1);
    assert.is(await redis.get(keys.destinationRule('hosted.test')), 'google');
    const ttl = await redis.ttl(keys.destinationRule('hosted.test'));
    assert.ok(ttl > RULE_TTL_S - 5 && ttl <= RULE_TTL_S, `TTL ${ttl}`);

    const stats = await destinationStats(redis, keys, SHARDS, T);
    assert.is(stats.find((s) => s.domain === 'hosted.test')?.recordedRule, 'google');
    assert.is(stats.find((s) => s.domain === 'plain.test')?.recordedRule, null);
    assert.equal(Object.fromEntries(await queueTotals(redis, keys, SHARDS, provider)), { default: { recipients: 1, leased: 0 }, google: { recipients: 2, leased: 1 } }, 'hosted.test now counts under google, as its deliveries do');

    // unchanged: written again only after REWRITE_MS (which brings back a record lost meanwhile); changed: at once
    await redis.del(keys.destinationRule('hosted.test'));
    recorder.record('hosted.test', 'google', T + REWRITE_MS - 1);
    await redis.ping();
    assert.is(await redis.get(keys.destinationRule('hosted.test')), null);
    recorder.record('hosted.test', 'google', T + REWRITE_MS);
    await redis.ping();
    assert.is(await redis.get(keys.destinationRule('hosted.test')), 'google');
    recorder.record('hosted.test', 'default', T + REWRITE_MS + 1);
    await redis.ping();
    assert.is(await redis.get(keys.destinationRule('hosted.test')), 'default');
    assert.is(writes.length, 3);
  });

  test('campaigns at one destination share each claim in turn: the later one is not kept waiting until the first is drained', async () => {
    const keys = ctx();
    await pushCampaignChunk(redis, keys, SHARDS, { campaignId: 'old', chunk: 1, dueAt: T, sending: true, byDomain: new Map([['s.test', [1, 2, 3, 4, 5, 6, 7, 8]]]) });
    await pushCampaignChunk(redis, keys, SHARDS, { campaignId: 'new', chunk: 1, dueAt: T + 1_000, sending: true, byDomain: new Map([['s.test', [1, 2]]]) });
    const first = await claim(redis, keys, { domain: 's.test', max: 4, leaseMs: LEASE, now: T + 2_000 });
    assert.equal(first.entries.map(entryMember), ['old:1:0', 'old:2:0', 'new:1:0', 'new:2:0']);
    // A campaign with fewer waiting than its share leaves the rest to the others.
    const second = await claim(redis, keys, { domain: 's.test', max: 10, leaseMs: LEASE, now: T + 2_000 });
    assert.equal(second.entries.map(entryMember), ['old:3:0', 'old:4:0', 'old:5:0', 'old:6:0', 'old:7:0', 'old:8:0']);
    assert.is(await redis.zcard(keys.ready('s.test')), 0);
  });

  test('a campaign waits as contact numbers behind one pointer; claim expands them in order into lease entries', async () => {
    const keys = ctx();
    const byDomain = new Map([['a.test', [1, 2, 3, 4, 5]], ['b.test', [6]]]);
    assert.is(await pushCampaignChunk(redis, keys, SHARDS, { campaignId: 'c1', chunk: 1, dueAt: T, sending: true, byDomain }), 6);
    assert.equal(await redis.zrange(keys.ready('a.test'), 0, -1), ['@c1']);
    assert.equal(await redis.lrange(keys.campaignQueue('a.test', 'c1'), 0, -1), ['1', '2', '3', '4', '5']);
    assert.equal((await dueDestinations(redis, keys, shardOf('a.test', SHARDS), T, 10)).includes('a.test'), true);
    assert.equal((await redis.smembers(keys.campaignDomains('c1'))).sort(), ['a.test', 'b.test']);

    // the same chunk pushed again (a crash before the cursor was saved) queues nobody twice
    assert.is(await pushCampaignChunk(redis, keys, SHARDS, { campaignId: 'c1', chunk: 1, dueAt: T, sending: true, byDomain }), 6);
    assert.is(await redis.llen(keys.campaignQueue('a.test', 'c1')), 5);

    // a plain message entry and the pointer share the ready set; both are claimed, the message's
    // recipient first although the campaign was queued before it (it does not wait out the campaign)
    await enqueueRecipients(redis, keys, SHARDS, [{ msgId: 'm', idx: 0, domain: 'a.test', dueAt: T + 1 }]);
    // The gauges count recipients: the 6 waiting and the message's 1, not the pointers.
    assert.equal(Object.fromEntries(await queueTotals(redis, keys, SHARDS, () => 'all')), { all: { recipients: 7, leased: 0 } });
    const first = await claim(redis, keys, { domain: 'a.test', max: 3, leaseMs: LEASE, now: T + 5 });
    assert.equal(first.entries.map(entryMember), ['m:0:0', 'c1:1:0', 'c1:2:0']);
    assert.equal(await redis.zrange(keys.ready('a.test'), 0, -1), ['@c1'], 'the pointer stays while numbers wait');
    const second = await claim(redis, keys, { domain: 'a.test', max: 10, leaseMs: LEASE, now: T + 5 });
    assert.equal(second.entries.map(entryMember), ['c1:3:0', 'c1:4:0', 'c1:5:0']);
    assert.is(await redis.zcard(keys.ready('a.test')), 0, 'an empty queue takes its pointer with it');
    assert.is(await redis.exists(keys.campaignQueue('a.test', 'c1')), 0);
    // sealed (the list is queued whole): the chunk record of a drained destination goes, no push is taken after
    await controlCampaignQueue(redis, keys, SHARDS, 'c1', 'seal', T + 5);
    assert.is(await redis.hexists(keys.campaignPushed('a.test'), 'c1'), 0);
    assert.is(await redis.hget(keys.campaignPushed('b.test'), 'c1'), 'sealed');
    assert.is(await pushCampaignChunk(redis, keys, SHARDS, { campaignId: 'c1', chunk: 2, dueAt: T, sending: true, byDomain: new Map([['b.test', [9]]]) }), 0);
    assert.is((await claim(redis, keys, { domain: 'b.test', max: 5, leaseMs: LEASE, now: T + 5 })).entries.length, 1);
    assert.is(await redis.hexists(keys.campaignPushed('b.test'), 'c1'), 0, 'the claim that drains a sealed queue drops its record');

    // a campaign recipient, once claimed, is settled like any entry
    assert.ok(await ack(redis, keys, first.entries[1] as QueueEntry, { now: T + 6, ...OK, recordTtlMs: RECORD_TTL }));
    assert.is(await redis.hget(keys.rcptState('a.test', 'c1', 1), 'state'), 'delivered');
    assert.ok(await retry(redis, keys, first.entries[2] as QueueEntry, { now: T + 6, nextAt: T + 60_000, ...SOFT }));
    assert.equal(await redis.zrange(keys.ready('a.test'), 0, -1), ['c1:2:1']);
  });

  test('a message cancel takes its waiting recipients out with an event each and counts them off; a leased one is left to its holder', async () => {
    const keys = ctx();
    const id = newId(T);
    const rcpts = [{ address: 'a@ca.test', domain: 'ca.test' }, { address: 'b@cb.test', domain: 'cb.test' }, { address: 'c@cc.test', domain: 'cc.test' }];
    await persistMessage(redis, keys, SHARDS, { id, account: 'acct', source: 'http', kind: 'raw', from: 'n@x.test', fromDomain: 'x.test', rcpts, acceptedAt: T, tags: [], metadata: {}, body: 'To: a@ca.test\r\n\r\nhi\r\n' });
    const claimed = (await claim(redis, keys, { domain: 'cb.test', max: 1, leaseMs: LEASE, now: T })).entries[0] as QueueEntry;
    await retry(redis, keys, (await claim(redis, keys, { domain: 'cc.test', max: 1, leaseMs: LEASE, now: T })).entries[0] as QueueEntry, { now: T, nextAt: T + HOUR, ...SOFT });
    const idx = rcpts.map((r, i) => ({ idx: i, domain: r.domain }));
    const r = await cancelRecipients(redis, keys, id, 'acct', idx, await recipientStates(redis, keys, id, idx), { now: T + 1, recordTtlMs: RECORD_TTL, refsTtlMs: 2 * RECORD_TTL, eventsMaxLen: 1000 });
    assert.equal(r, { cancelled: 2, sending: 1 });
    assert.equal((await recipientStates(redis, keys, id, idx)).map((s) => s.state), ['cancelled', 'sending', 'cancelled']);
    assert.is(await redis.hget(keys.msgMeta(id), 'pending'), '1');
    // Counted on the message by the cancel itself (on a cluster a second call, noted owed until made).
    for (const d of ['ca.test', 'cc.test']) assert.is(await redis.zcard(keys.owed(d)), 0, `nothing left owed at ${d}`);
    const events = (await redis.xrange(keys.events(), '-', '+')).map(([, f]) => streamFields(f)).filter((e) => e['type'] === 'cancelled');
    assert.equal(events.map((e) => [e['idx'], e['attempt']]).sort(), [['0', '0'], ['2', '1']]);
    // The holder's outcome still applies, and finishes the message.
    assert.is(await ack(redis, keys, claimed, { now: T + 2, ...OK, recordTtlMs: RECORD_TTL }), OUTCOME.APPLIED);
  });

  test('pause removes a campaign from every destination, resume brings it back, cancel drops what waits', async () => {
    const keys = ctx();
    const byDomain = new Map([['p1.test', [1, 2, 3]], ['p2.test', [4, 5]]]);
    await pushCampaignChunk(redis, keys, SHARDS, { campaignId: 'cp', chunk: 1, dueAt: T, sending: true, byDomain });
    assert.is(await controlCampaignQueue(redis, keys, SHARDS, 'cp', 'pause', T + 1), 5);
    assert.is((await claim(redis, keys, { domain: 'p1.test', max: 10, leaseMs: LEASE, now: T + 2 })).entries.length, 0, 'a paused campaign is not claimed');
    assert.is(await controlCampaignQueue(redis, keys, SHARDS, 'cp', 'resume', T + 3), 5);
    const got = await claim(redis, keys, { domain: 'p1.test', max: 2, leaseMs: LEASE, now: T + 3 });
    assert.equal(got.entries.map(entryMember), ['cp:1:0', 'cp:2:0']);

    // claimed entries of a campaign paused meanwhile go back to the head of its queue, unattempted
    await controlCampaignQueue(redis, keys, SHARDS, 'cp', 'pause', T + 4);
    assert.is(await holdCampaignEntries(redis, keys, SHARDS, 'cp', got.entries, { pointerAt: null, holdUntil: T + 60_000, now: T + 4 }), 2);
    assert.equal(await redis.lrange(keys.campaignQueue('p1.test', 'cp'), 0, -1), ['1', '2', '3']);
    assert.is(await redis.zcard(keys.leases('p1.test')), 0);
    assert.is(await redis.zscore(keys.ready('p1.test'), '@cp'), null);

    // over its throttle: back to the queue, the pointer waits until the bucket refills
    await controlCampaignQueue(redis, keys, SHARDS, 'cp', 'resume', T + 5);
    const again = await claim(redis, keys, { domain: 'p1.test', max: 1, leaseMs: LEASE, now: T + 5 });
    await holdCampaignEntries(redis, keys, SHARDS, 'cp', again.entries, { pointerAt: T + 9_000, holdUntil: T + 9_000, now: T + 5 });
    assert.is(await redis.zscore(keys.ready('p1.test'), '@cp'), String(T + 9_000));
    assert.is((await claim(redis, keys, { domain: 'p1.test', max: 5, leaseMs: LEASE, now: T + 6 })).entries.length, 0);

    const waiting = (await destinationStats(redis, keys, SHARDS, T + 6)).find((s) => s.domain === 'p1.test');
    assert.is(waiting?.campaigns, 3, 'sluice queue counts the recipients behind a pointer');
    assert.is(await controlCampaignQueue(redis, keys, SHARDS, 'cp', 'cancel', T + 7), 5, 'cancel reports what it dropped');
    assert.is((await redis.exists(keys.campaignQueue('p1.test', 'cp'))) + (await redis.exists(keys.campaignQueue('p2.test', 'cp'))), 0);
    assert.is(await redis.zcard(keys.ready('p2.test')), 0);
  });

  test('a hold for a pause that lands after the resume: the campaign keeps its pointer and its recipients are claimed', async () => {
    const keys = ctx();
    const id = 'c0000000000hold1';
    await createCampaign(redis, keys, {
      id, account: 'acme', name: 'hold', listId: 'l', from: 'a@acme.example', fromDomain: 'acme.example', subject: 's',
      tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: T, sendAt: T, body: '{}', links: [],
    });
    assert.ok((await startCampaign(redis, keys, id, T)).ok);
    await pushCampaignChunk(redis, keys, SHARDS, { campaignId: id, chunk: 1, dueAt: T, sending: true, byDomain: new Map([['h.test', [1, 2, 3]]]) });
    const got = await claim(redis, keys, { domain: 'h.test', max: 2, leaseMs: LEASE, now: T + 1 });
    assert.is(got.entries.length, 2);
    // Delivery reads the campaign paused, then the operator resumes before delivery's hold runs.
    assert.ok((await pauseCampaign(redis, keys, SHARDS, id, T + 2)).ok);
    assert.ok((await resumeCampaign(redis, keys, SHARDS, id, T + 3)).ok);
    assert.is(await holdCampaignEntries(redis, keys, SHARDS, id, got.entries, { pointerAt: null, holdUntil: T + 60_000, now: T + 4 }), 2);
    assert.equal(await redis.lrange(keys.campaignQueue('h.test', id), 0, -1), ['1', '2', '3']);
    assert.is(await redis.zscore(keys.ready('h.test'), `@${id}`), String(T + 4), 'the resumed campaign has its pointer');
    assert.equal((await claim(redis, keys, { domain: 'h.test', max: 5, leaseMs: LEASE, now: T + 5 })).entries.map(entryMember), [`${id}:1:0`, `${id}:2:0`, `${id}:3:0`]);
    assert.ok((await dueDestinations(redis, keys, shardOf('h.test', SHARDS), T + 5, 10)).includes('h.test'));
  });

  test("campaign copies count on the account's quota and rate counters (one slot, its hash tag): a partial grant, its refund, and a submission that then fits", async () => {
    const keys = ctx();
    const acct: Account = { id: 'capped', domains: new Set(['capped.example']), dailyQuota: 10, rateLimit: { perSecond: null, perMinute: null, perHour: 6 }, tracking: { mode: 'full', anonymizeIp: 'none' } };
    const t = await takeSending(redis, keys, acct, 8, T);
    assert.equal([t.granted, t.stoppedBy], [6, { name: 'rateLimit.perHour', limit: 6 }]);
    assert.is(t.retryAt, Math.floor(T / HOUR) * HOUR + HOUR);
    assert.is((await takeSending(other, keys, acct, 1, T + 1)).granted, 0, 'another process sees the same counters');
    await returnSending(redis, t.counters!, 2);
    await reserveSending(other, keys, acct, 2, T + 2);
    assert.is((await takeSending(redis, keys, acct, 1, T + 3)).granted, 0, 'the submission took the two refunded');
  });

  test('an operator hold on a rule, released: every destination of that rule with work is made due now (its recorded rule, or its domain\'s), others keep their time', async () => {
    const keys = ctx();
    const later = T + HOUR;
    await enqueueRecipients(redis, keys, SHARDS, ['mx-ruled.test', 'named.ruled.test', 'other.test'].map((domain, i) => ({ msgId: `h${i}`, idx: 0, domain, dueAt: later })));
    await redis.set(keys.destinationRule('mx-ruled.test'), 'ruled');
    await placeHolds(redis, keys, [{ kind: 'rule', name: 'ruled' }, { kind: 'domain', name: 'idle.test' }], { until: null, reason: 'blocked', by: 'test', now: T });
    const shaping = loadConfig({ env: {}, overrides: { shaping: { rules: [{ name: 'ruled', match: { domains: ['*.ruled.test'], mx: ['*.mx.test'] } }] } } }).shaping;
    const gone = await releaseHolds(redis, keys, SHARDS, [{ kind: 'rule', name: 'ruled' }], T + 5, (d, recorded) => resolveRecordedShaping(shaping, d, recorded).rule);
    assert.equal(gone.map((h) => `${h.kind}:${h.name}`), ['rule:ruled']);
    assert.is(await score(keys, 'mx-ruled.test'), T + 5, 'its recorded rule is the one released');
    assert.is(await score(keys, 'named.ruled.test'), T + 5, 'its domain matches the rule');
    assert.is(await score(keys, 'other.test'), later);
    assert.equal((await readHolds(redis, keys, T + 5)).map((h) => h.name), ['idle.test'], 'the domain hold stays');
  });

  return test;
}
