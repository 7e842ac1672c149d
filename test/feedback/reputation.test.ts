/**
 * The reputation guard on a real Redis with a pinned clock: counts decide, never timing. It pauses
 * a sender just past the complaint and hard-bounce thresholds and not at them, never below the
 * minimum volume, forgets outcomes that left the window, pauses the whole account only when the
 * problem spans its domains, writes the figures into the 'sender_paused' event, and resumes.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ReputationGuard, type ReputationOptions } from '../../src/feedback/reputation.js';
import { HOUR } from '../../src/core/time.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { figuresOf, isPaused, listPaused, pauseByOperator, pausedCount, pauseSender, resumeSender, type OutcomeKind } from '../../src/store/reputation.js';
import { replyLosingRelay, scriptSha, startRedis, type TestRedis } from '../helpers/redis.js';

const test = suite('feedback/reputation');
let redis: TestRedis;
let client: RedisClient;
// Pinned: the middle of an hour bucket, so "now" and its bucket are the same for every record.
const T0 = Date.UTC(2026, 2, 1, 10, 30);

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});
test.after(async () => {
  await redis.stop();
});

function setup(opts: Partial<ReputationOptions> = {}) {
  const { keys } = redis.fresh();
  let now = T0;
  const pausedSeen: string[] = [];
  const guard = new ReputationGuard({ redis: client, keys, eventsMaxLen: 10_000, now: () => now, onPaused: (p) => pausedSeen.push(`${p.account}|${p.scope}`) }, { checkCacheMs: 0, ...opts });
  const record = async (account: string, domain: string | null, kind: OutcomeKind, n: number) => {
    const pauses = [];
    for (let i = 0; i < n; i++) pauses.push(...(await guard.record({ account, domain, kind })));
    return pauses;
  };
  return { keys, guard, record, pausedSeen, setNow: (t: number) => (now = t) };
}

async function events(keys: Keys, type: string): Promise<Record<string, string>[]> {
  const all = await client.xrange(keys.events(), '-', '+');
  return all.map(([, f]) => Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i], f[2 * i + 1]]))).filter((e) => e['type'] === type);
}

test('a count whose reply a dropped connection lost is sent again by the client and counts once: 3 complaints of 1,000 stay 3 (0.3 %), no pause', async () => {
  const relay = await replyLosingRelay(redis);
  try {
    const lossy = relay.redis.client();
    const { keys } = redis.fresh();
    const guard = new ReputationGuard({ redis: lossy, keys, eventsMaxLen: 10_000, now: () => T0 }, { checkCacheMs: 0 });
    for (let i = 0; i < 1000; i++) await guard.record({ account: 'acme', domain: 'acme.example', kind: 'delivered' });
    const sha = scriptSha('countReputation');
    relay.lose((req) => req.includes(sha) && req.includes('complaint'));
    const pauses = [];
    for (let i = 0; i < 3; i++) pauses.push(...(await guard.record({ account: 'acme', domain: 'acme.example', kind: 'complaint' })));
    assert.is(relay.lost, 1, 'a reply was lost');
    assert.equal(pauses, []);
    const bucket = await client.hgetall(keys.reputation('acme', Math.floor(T0 / HOUR) * HOUR));
    assert.equal([bucket['acme.example|complaint'], bucket['acme.example|delivered']], ['3', '1000']);
    // A count asked again under the same id (a feedback mail's processing retried) counts nothing more.
    await guard.record({ account: 'acme', domain: 'acme.example', kind: 'complaint', id: 'f:mail1:msg1:0:complaint' });
    await guard.record({ account: 'acme', domain: 'acme.example', kind: 'complaint', id: 'f:mail1:msg1:0:complaint' });
    assert.is((await client.hgetall(keys.reputation('acme', Math.floor(T0 / HOUR) * HOUR)))['acme.example|complaint'], '4');
  } finally {
    await relay.close();
  }
});

test('complaints: 0.3 % of 1,000 delivered does not pause; the 4th complaint (0.4 %) pauses the domain with the figures', async () => {
  const { keys, guard, record, pausedSeen } = setup();
  await record('acme', 'acme.example', 'delivered', 1000);
  assert.equal(await record('acme', 'acme.example', 'complaint', 3), [], 'at the threshold, not above it');
  assert.is(await guard.check('acme', 'acme.example'), null);

  const pauses = await record('acme', 'acme.example', 'complaint', 1);
  assert.is(pauses.length, 1);
  assert.equal({ scope: pauses[0]?.scope, reason: pauses[0]?.reason }, { scope: 'acme.example', reason: 'complaints' });
  assert.equal(pauses[0]?.figures, { delivered: 1000, hardbounces: 0, complaints: 4, sent: 1000, hardBounceRate: 0, complaintRate: 0.004 });
  assert.equal(pausedSeen, ['acme|acme.example']);

  const pause = await guard.check('acme', 'ACME.example');
  assert.is(pause?.reason, 'complaints');
  assert.is(pause?.at, T0);
  assert.is(await guard.check('acme', 'other-domain.example'), null, 'only that domain is paused: the account has one domain, and it explains the rate');
  assert.is(await guard.check('acme', null), null);

  const ev = await events(keys, 'sender_paused');
  assert.is(ev.length, 1, 'one event');
  assert.equal(
    { account: ev[0]?.['account'], domain: ev[0]?.['domain'], reason: ev[0]?.['reason'], delivered: ev[0]?.['delivered'], complaints: ev[0]?.['complaints'], sent: ev[0]?.['sent'], complaintRate: ev[0]?.['complaintRate'], threshold: ev[0]?.['threshold'], windowHours: ev[0]?.['windowHours'] },
    { account: 'acme', domain: 'acme.example', reason: 'complaints', delivered: '1000', complaints: '4', sent: '1000', complaintRate: '0.004', threshold: '0.003', windowHours: '24' },
  );
  // More complaints while paused: no second pause, no second event.
  assert.equal(await record('acme', 'acme.example', 'complaint', 5), []);
  assert.is((await events(keys, 'sender_paused')).length, 1);
  assert.is(await pausedCount(client, keys), 1);
});

test('hard bounces: 50 of 1,000 sent (5 %) does not pause; the 51st pauses for hardbounces', async () => {
  const { guard, record } = setup();
  await record('acme', 'acme.example', 'delivered', 950);
  assert.equal(await record('acme', 'acme.example', 'hardbounce', 50), []);
  const pauses = await record('acme', 'acme.example', 'hardbounce', 1);
  assert.is(pauses[0]?.reason, 'hardbounces');
  assert.is(pauses[0]?.figures.sent, 1001);
  assert.is(pauses[0]?.figures.hardbounces, 51);
  assert.is((await guard.check('acme', 'acme.example'))?.reason, 'hardbounces');
});

test('a hard bounce by mail of a copy counted delivered leaves the delivered count: 52 of 1,000 copies bounced later is 5.2 % and pauses', async () => {
  const { guard, record } = setup();
  await record('acme', 'acme.example', 'delivered', 1000);
  const pauses = [];
  for (let i = 0; i < 52; i++) pauses.push(...(await guard.record({ account: 'acme', domain: 'acme.example', kind: 'hardbounce', wasDelivered: true })));
  assert.is(pauses[0]?.reason, 'hardbounces', 'counted in both, 52 / 1,052 = 4.9 % stayed under 5 %');
  assert.is(pauses[0]?.figures.sent, 1000);
  assert.is(pauses[0]?.figures.delivered, 949);
});

test('below the minimum volume nothing pauses, however bad the rates', async () => {
  const { guard, record } = setup();
  await record('acme', 'acme.example', 'delivered', 300);
  assert.equal(await record('acme', 'acme.example', 'complaint', 30), [], '10 % complaints over 300 sent');
  assert.equal(await record('acme', 'acme.example', 'hardbounce', 199), [], '199 + 300 = 499 sent, 40 % hard bounces');
  assert.is(await guard.check('acme', 'acme.example'), null);
  // The 500th sent reaches the minimum: now the rates count.
  assert.is((await record('acme', 'acme.example', 'hardbounce', 1))[0]?.reason, 'complaints', 'complaints are judged first');
});

test('the window: outcomes older than windowHours no longer count', async () => {
  const { guard, record, setNow } = setup({ windowHours: 24 });
  await record('acme', 'acme.example', 'delivered', 1000);
  setNow(T0 + 25 * HOUR);
  assert.equal(await record('acme', 'acme.example', 'complaint', 10), [], 'the deliveries have left the window: under the minimum volume');
  const ev = await guard.evaluate('acme', 'acme.example');
  assert.equal(ev.figures.get('acme.example'), { delivered: 0, hardbounces: 0, complaints: 10, sent: 0, hardBounceRate: 0, complaintRate: 10 });

  const other = setup({ windowHours: 24 });
  await other.record('acme', 'acme.example', 'delivered', 1000);
  other.setNow(T0 + 23 * HOUR);
  assert.is((await other.record('acme', 'acme.example', 'complaint', 4))[0]?.reason, 'complaints', 'within the window they still count');
});

test('the window slides: the hour bucket that is leaving it counts for the share of an hour it still covers', async () => {
  // 1,000 delivered at 10:30; a 2-hour window.
  const { guard, record, setNow } = setup({ windowHours: 2 });
  await record('acme', 'acme.example', 'delivered', 1000);
  const delivered = async (): Promise<number> => (await guard.evaluate('acme', 'acme.example')).figures.get('acme.example')?.delivered ?? -1;
  setNow(Date.UTC(2026, 2, 1, 11, 59));
  assert.is(await delivered(), 1000, 'at 11:59 the 10:00 bucket is within the window');
  // At 12:15 the window is 10:15–12:15: three quarters of the 10:00 bucket (the bucket is taken as evenly spread).
  setNow(Date.UTC(2026, 2, 1, 12, 15));
  assert.is(await delivered(), 750);
  setNow(Date.UTC(2026, 2, 1, 12, 45));
  assert.is(await delivered(), 250);
  setNow(Date.UTC(2026, 2, 1, 13, 0));
  assert.is(await delivered(), 0, 'gone once the window starts after its hour');
});

test('a problem spread over small domains pauses the whole account, which stops every domain', async () => {
  const { guard, record } = setup();
  for (const d of ['a.example', 'b.example', 'c.example', 'd.example']) await record('acme', d, 'delivered', 200);
  await record('acme', 'a.example', 'complaint', 1);
  await record('acme', 'b.example', 'complaint', 1);
  const pauses = await record('acme', 'c.example', 'complaint', 1);
  // Each domain: 200 sent, under the minimum; the account: 800 sent, 3 complaints = 0.375 %
  // (2 were 0.25 %: under the line).
  assert.is(pauses.length, 1);
  assert.equal({ scope: pauses[0]?.scope, sent: pauses[0]?.figures.sent, complaints: pauses[0]?.figures.complaints }, { scope: '*', sent: 800, complaints: 3 });
  for (const d of ['a.example', 'b.example', 'z.example', null]) assert.is((await guard.check('acme', d))?.scope, '*', `${d} is stopped`);
  assert.is(await guard.check('other-account', 'a.example'), null, 'other accounts are untouched');
});

test("a paused domain's mail is left out of the account's figures", async () => {
  const { guard, record } = setup();
  await record('acme', 'bad.example', 'delivered', 1000);
  assert.is((await record('acme', 'bad.example', 'complaint', 10))[0]?.scope, 'bad.example');
  await record('acme', 'good.example', 'delivered', 1000);
  // A complaint on the good domain: the account as a whole is 11 / 2,000 = 0.55 %, but without the
  // paused domain it is 1 / 1,000 = 0.1 %: no account-wide pause.
  assert.equal(await record('acme', 'good.example', 'complaint', 1), []);
  assert.is(await guard.check('acme', 'good.example'), null);
});

test('resume: the pause and its figures go, a sender_resumed event says who, and the guard judges afresh', async () => {
  const { keys, guard, record } = setup();
  await record('acme', 'acme.example', 'delivered', 1000);
  await record('acme', 'acme.example', 'complaint', 4);
  assert.ok(await isPaused(client, keys, 'acme', 'acme.example'));
  assert.equal((await listPaused(client, keys)).map((p) => `${p.account}|${p.scope}`), ['acme|acme.example']);

  assert.equal(await guard.resume('acme', null, 'test'), ['acme.example']);
  assert.is(await guard.check('acme', 'acme.example'), null);
  assert.is(await pausedCount(client, keys), 0);
  const ev = await events(keys, 'sender_resumed');
  assert.equal({ account: ev[0]?.['account'], domain: ev[0]?.['domain'], by: ev[0]?.['by'], reason: ev[0]?.['reason'] }, { account: 'acme', domain: 'acme.example', by: 'test', reason: 'complaints' });
  // The figures start again: one more complaint is not judged on the mail that caused the pause.
  assert.equal(await record('acme', 'acme.example', 'complaint', 1), []);
  assert.equal(await guard.resume('acme', 'acme.example', 'test'), [], 'nothing left to resume');
});

test("after a resume, late reports of mail delivered before it count nothing (the pause judged that mail); mail delivered since counts", async () => {
  const { keys, guard, record, setNow } = setup({ minVolume: 10, hardBounceRate: 0.2 });
  await record('acme', 'acme.example', 'delivered', 15);
  for (let i = 0; i < 5; i++) await guard.record({ account: 'acme', domain: 'acme.example', kind: 'hardbounce', wasDelivered: true, deliveredAt: T0 - 1000 });
  assert.ok(await isPaused(client, keys, 'acme', 'acme.example'), 'paused: 5 of 15');
  setNow(T0 + 60_000);
  assert.equal(await guard.resume('acme', null, 'test'), ['acme.example']);
  setNow(T0 + 120_000);
  await record('acme', 'acme.example', 'delivered', 10);
  // Three more DSNs about copies of the batch that caused the pause.
  for (let i = 0; i < 3; i++) assert.equal(await guard.record({ account: 'acme', domain: 'acme.example', kind: 'hardbounce', wasDelivered: true, deliveredAt: T0 - 500 }), []);
  assert.is(await guard.check('acme', 'acme.example'), null, 'not paused again for the mail it was resumed from');
  const f = async () => (await guard.evaluate('acme', 'acme.example', T0 + 120_000)).figures.get('acme.example');
  assert.equal([(await f())?.delivered, (await f())?.hardbounces], [10, 0]);
  // A copy delivered after the resume counts, and takes its delivery back.
  await guard.record({ account: 'acme', domain: 'acme.example', kind: 'hardbounce', wasDelivered: true, deliveredAt: T0 + 100_000 });
  assert.equal([(await f())?.delivered, (await f())?.hardbounces], [9, 1]);
});

test('a bounce by mail of a copy delivered before the window counts, but takes no delivery back: its delivery is in no figure any more', async () => {
  const { guard, record } = setup({ minVolume: 1000 });
  await record('acme', 'acme.example', 'delivered', 10);
  await guard.record({ account: 'acme', domain: 'acme.example', kind: 'hardbounce', wasDelivered: true, deliveredAt: T0 - 25 * HOUR });
  const f = (await guard.evaluate('acme', 'acme.example', T0)).figures.get('acme.example');
  assert.equal([f?.delivered, f?.hardbounces], [10, 1]);
});

/** The real client, except that its next `command` fails: the connection lost between a pause's or a resume's two writes. */
function failingOnce(command: 'zadd' | 'zrem'): RedisClient {
  let armed = true;
  return new Proxy(client, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (prop !== command || typeof v !== 'function') return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      return (...args: unknown[]) => {
        if (!armed) return (v as (...a: unknown[]) => unknown).apply(target, args);
        armed = false;
        return Promise.reject(new Error(`connection lost before ${command}`));
      };
    },
  });
}

async function failure(p: Promise<unknown>): Promise<string> {
  return p.then(() => 'no error', (e: unknown) => String(e));
}

test('the paused-senders index heals: a phantom entry (record never written, or removed) is dropped by the gauge and the status', async () => {
  const { keys, guard, record } = setup();
  // A pause that died after its first write (the index entry) and before the record.
  await client.zadd(keys.pausedSenders(), T0, 'acme|acme.example');
  assert.is(await pausedCount(client, keys), 0, 'no record behind the entry: nothing is paused');
  assert.equal(await guard.status(), []);
  assert.is(await client.zcard(keys.pausedSenders()), 0, 'the phantom was dropped');

  // A resume that died after its first write (the record's removal) and before the index's.
  await record('acme', 'acme.example', 'delivered', 1000);
  await record('acme', 'acme.example', 'complaint', 4);
  await record('beta', null, 'delivered', 1000);
  await record('beta', null, 'complaint', 4);
  await client.hdel(keys.senderPaused('acme'), 'acme.example');
  assert.equal((await guard.status()).map((r) => `${r.pause.account}|${r.pause.scope}`), ['beta|*']);
  assert.is(await pausedCount(client, keys), 1, 'only beta is paused');
  assert.equal(await client.zrange(keys.pausedSenders(), 0, -1), ['beta|*']);
});

test('a pause or resume cut between its two writes never hides a pause from the all-accounts status, nor leaves the gauge above it', async () => {
  const { keys } = setup();
  const cut = new ReputationGuard({ redis: failingOnce('zadd'), keys, eventsMaxLen: 10_000, now: () => T0 }, { checkCacheMs: 0 });
  for (let i = 0; i < 1000; i++) await cut.record({ account: 'acme', domain: 'acme.example', kind: 'delivered' });
  for (let i = 0; i < 3; i++) await cut.record({ account: 'acme', domain: 'acme.example', kind: 'complaint' });
  assert.match(await failure(cut.record({ account: 'acme', domain: 'acme.example', kind: 'complaint' })), /connection lost/);
  const own = (await listPaused(client, keys, 'acme')).map((p) => p.scope);
  assert.equal((await cut.status()).map((r) => r.pause.scope), own, 'every pause of the account is in the all-accounts status');
  assert.is(await pausedCount(client, keys), own.length);
  // The next bad outcome pauses (the cut write came before the record, so there was none yet).
  assert.is((await cut.record({ account: 'acme', domain: 'acme.example', kind: 'complaint' })).length, 1);
  assert.equal((await cut.status()).map((r) => r.pause.scope), ['acme.example']);
  assert.is(await pausedCount(client, keys), 1);

  const cutResume = new ReputationGuard({ redis: failingOnce('zrem'), keys, eventsMaxLen: 10_000, now: () => T0 }, { checkCacheMs: 0 });
  assert.match(await failure(cutResume.resume('acme', 'acme.example', 'test')), /connection lost/);
  assert.is(await isPaused(client, keys, 'acme', 'acme.example'), null);
  assert.is(await pausedCount(client, keys), 0, 'the gauge does not count the resumed sender');
  assert.equal(await cutResume.status(), []);
});

test('a cached check sees the pause the same guard made at once', async () => {
  const { keys } = redis.fresh();
  const guard = new ReputationGuard({ redis: client, keys, eventsMaxLen: 1000, now: () => T0 }, { checkCacheMs: 60_000 });
  assert.is(await guard.check('acme', 'acme.example'), null);
  for (let i = 0; i < 1000; i++) await guard.record({ account: 'acme', domain: 'acme.example', kind: 'delivered' });
  for (let i = 0; i < 4; i++) await guard.record({ account: 'acme', domain: 'acme.example', kind: 'complaint' });
  assert.is((await guard.check('acme', 'acme.example'))?.reason, 'complaints');
});

test('deliveries counted in memory are flushed before a bad outcome is judged, with the same figures', async () => {
  const { keys, record } = setup({ deliveredFlushMs: 60_000 });
  await record('acme', 'acme.example', 'delivered', 1000);
  const bucketKeys = await client.keys(`${keys.prefix}*rep*`);
  assert.equal(bucketKeys, [], 'nothing written yet: 1,000 deliveries are one counter in memory');
  const pauses = await record('acme', 'acme.example', 'complaint', 4);
  assert.is(pauses.length, 1);
  assert.is(pauses[0]?.figures.delivered, 1000, 'the flush happened before the evaluation');
});

test('deliveries whose flush Redis refused are kept and written with the next one, not lost (they are the rates\' denominator)', async () => {
  const { guard, record } = setup({ deliveredFlushMs: 60_000 });
  await record('acme', 'acme.example', 'delivered', 1000);
  await client.config('SET', 'min-replicas-to-write', '1'); // every write refused: NOREPLICAS
  try {
    let refused: unknown;
    await guard.flush().catch((err: unknown) => (refused = err));
    assert.match(String(refused), /NOREPLICAS|EXECABORT/);
  } finally {
    await client.config('SET', 'min-replicas-to-write', '0');
  }
  await record('acme', 'acme.example', 'delivered', 10);
  const pauses = await record('acme', 'acme.example', 'complaint', 4);
  assert.is(pauses.length, 1, 'paused: 4 complaints of 1,010 delivered');
  assert.is(pauses[0]?.figures.delivered, 1010);
});

test('options are checked: the window is whole hours from 1 to 168', () => {
  const { keys } = redis.fresh();
  assert.throws(() => new ReputationGuard({ redis: client, keys, eventsMaxLen: 1 }, { windowHours: 0 }), /windowHours/);
  assert.throws(() => new ReputationGuard({ redis: client, keys, eventsMaxLen: 1 }, { windowHours: 1.5 }), /windowHours/);
  assert.throws(() => new ReputationGuard({ redis: client, keys, eventsMaxLen: 1 }, { windowHours: 169 }), /windowHours/);
});

test("resumeSender keepOperator: an operator's pause stays, a guard's and a damaged record go; without it, all go", async () => {
  const { keys } = redis.fresh();
  const opts = { now: T0, eventsMaxLen: 100 };
  await pauseByOperator(client, keys, 'acme', null, { by: 'cli:ops', note: 'review' }, opts);
  await pauseSender(client, keys, 'acme', 'a.example', 'complaints', figuresOf(1000, 0, 9), { threshold: 0.003, windowHours: 24 }, opts);
  await client.hset(keys.senderPaused('acme'), 'b.example', '{damaged');
  const kept = await resumeSender(client, keys, 'acme', null, 'api', { ...opts, keepOperator: true });
  assert.equal(kept.sort(), ['a.example', 'b.example']);
  assert.equal([(await isPaused(client, keys, 'acme', null))?.reason, (await isPaused(client, keys, 'acme', null))?.by], ['operator', 'cli:ops']);
  assert.equal(await resumeSender(client, keys, 'acme', null, 'api', { ...opts, keepOperator: true }), [], 'nothing the account may lift');
  assert.equal(await resumeSender(client, keys, 'acme', null, 'cli', opts), ['*']);
  assert.equal(await listPaused(client, keys, 'acme'), []);
});

test.run();
