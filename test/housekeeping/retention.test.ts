import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { createLogger } from '../../src/observability/logger.js';
import { RetentionJob, type PurgeKind } from '../../src/housekeeping/retention.js';
import { newId } from '../../src/core/ids.js';
import { DAY, HOUR } from '../../src/core/time.js';
import { closeAccount, closedRecord, reopenAccount } from '../../src/store/account-state.js';
import { createWebhook, listWebhooks } from '../../src/store/webhooks.js';
import { addSuppression } from '../../src/store/suppression.js';
import { storeMessage } from '../../src/store/messages.js';
import { createList, listLists, upsertContacts, findContact, deleteContact, deleteList } from '../../src/store/contacts.js';
import { createCampaign } from '../../src/store/campaigns.js';
import { keepCopiesFindable } from '../../src/store/privacy.js';
import { purgeMessage } from '../../src/store/retention.js';
import { storeFeedback } from '../../src/feedback/raw-store.js';
import { enqueueRecipients } from '../../src/queue/enqueue.js';
import { claim } from '../../src/queue/claim.js';
import { ackAndFinish } from '../../src/queue/outcome.js';
import { markUnsubscribe } from '../../src/store/engagement.js';

const test = suite('housekeeping/retention');
let redis: TestRedis;
let client: RedisClient;

const NOW = Date.UTC(2026, 5, 1);
const periods = { recordsMs: 90 * DAY, eventsMs: 90 * DAY, rawBouncesMs: 30 * DAY, auditMs: 365 * DAY };

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});
test.after(async () => {
  await redis.stop();
});

function job(keys: Keys, opts: { scanCount?: number; now?: () => number; recordsMs?: number; refsMs?: number } = {}) {
  const purged = new Map<PurgeKind, number>();
  const j = new RetentionJob({
    redis: client, keys, periods: { ...periods, recordsMs: opts.recordsMs ?? periods.recordsMs }, intervalMs: 1000, scanCount: opts.scanCount ?? 100, queueMaxAgeMs: 72 * HOUR, refsMs: opts.refsMs ?? 72 * HOUR + 90 * DAY, logger: createLogger('silent'),
    onPurged: (kind, n) => purged.set(kind, (purged.get(kind) ?? 0) + n),
    now: opts.now ?? (() => NOW),
  });
  return { j, purged };
}

/** Steps until a pass over the keyspace completes; returns how many steps it took. */
async function fullPass(j: RetentionJob, max = 1000): Promise<number> {
  for (let i = 1; i <= max; i++) if ((await j.step()).passCompleted) return i;
  throw new Error('no pass completed');
}

/** A message of one recipient accepted at `at`; finished at `finishedAt` as finishMessage leaves one. */
async function message(keys: Keys, account: string, at: number, finishedAt?: number): Promise<string> {
  const id = newId(at);
  await storeMessage(client, keys, { id, account, source: 'http', kind: 'spec', from: `a@${account}.example`, fromDomain: `${account}.example`, rcpts: [{ address: 'r@x.example', domain: 'x.example' }], acceptedAt: at, tags: [], metadata: {}, body: '{}' });
  await client.rpush(keys.links(id), 'https://x.example/');
  if (finishedAt !== undefined) {
    await client.multi().hset(keys.msgMeta(id), 'pending', 0, 'finishedAt', finishedAt).pexpire(keys.msgMeta(id), 10 * DAY).pexpire(keys.links(id), 10 * DAY).del(keys.msgBody(id)).exec();
  }
  return id;
}

/**
 * A message as delivery leaves it, accepted at `at`, its recipient i delivered at finishes[i] (each
 * record's TTL and, at the last, the message's set from retention.records = `ttlMs` then), with an
 * unsubscribe mark (tracking) at the first finish.
 */
async function delivered(keys: Keys, at: number, finishes: readonly number[], ttlMs = 90 * DAY): Promise<string> {
  const id = newId(at);
  const rcpts = finishes.map((_, i) => ({ address: `r${i}@x.example`, domain: 'x.example' }));
  await storeMessage(client, keys, { id, account: 'acme', source: 'http', kind: 'spec', from: 'a@acme.example', fromDomain: 'acme.example', rcpts, acceptedAt: at, tags: [], metadata: {}, body: '{}', links: ['https://acme.example/'] });
  await enqueueRecipients(client, keys, 4, rcpts.map((_, idx) => ({ msgId: id, idx, domain: 'x.example', dueAt: at })));
  const { entries } = await claim(client, keys, { domain: 'x.example', max: rcpts.length, leaseMs: 30_000, now: at });
  assert.is(entries.length, rcpts.length);
  for (const e of entries) {
    const now = finishes[e.idx] as number;
    await ackAndFinish(client, keys, e, { now, code: 250, enhanced: '2.0.0', response: '250 2.0.0 OK', recordTtlMs: ttlMs, messageTtlMs: ttlMs });
  }
  await markUnsubscribe(client, keys, id, 0, Math.min(...finishes), ttlMs);
  return id;
}

/** How many of a delivered message's keys exist: meta, links, marks, counters, then each record. */
async function kept(keys: Keys, id: string, rcpts: number): Promise<number[]> {
  const parts = [keys.msgMeta(id), keys.links(id), keys.trackMarks(id), keys.msgStats(id)];
  const records = Array.from({ length: rcpts }, (_, i) => keys.rcptState('x.example', id, i));
  return Promise.all([client.exists(...parts), ...records.map((k) => client.exists(k))]);
}

test('events and audit entries past their period are trimmed, newer ones kept, at most scanCount per step', async () => {
  const { keys } = redis.fresh();
  const old = NOW - 100 * DAY;
  for (let i = 0; i < 250; i++) await client.xadd(keys.events(), `${old + i}-0`, 'type', 'delivered', 'account', 'acme');
  for (let i = 0; i < 5; i++) await client.xadd(keys.events(), `${NOW - DAY + i}-0`, 'type', 'delivered', 'account', 'acme');
  await client.xadd(keys.audit(), `${NOW - 400 * DAY}-0`, 'actor', 'cli', 'action', 'x', 'account', 'acme', 'from', 'cli');
  await client.xadd(keys.audit(), `${NOW - DAY}-0`, 'actor', 'cli', 'action', 'y', 'account', 'acme', 'from', 'cli');
  const { j, purged } = job(keys);
  const first = await j.step();
  assert.is(first.purged.events, 100, 'bounded by scanCount');
  assert.is(await client.xlen(keys.events()), 155);
  await j.step();
  await j.step();
  assert.is(await client.xlen(keys.events()), 5, 'exactly the old entries went (not ~: the 5 new ones share a radix node with old ones)');
  assert.is(purged.get('events'), 250);
  assert.is(purged.get('audit'), 1);
  const left = (await client.xrange(keys.audit(), '-', '+')) as [string, string[]][];
  assert.equal(left.map(([, f]) => f[3]), ['y']);
});

test('a pass removes unfinished messages, orphans, records and raw bounces past their period, and nothing else', async () => {
  const { keys } = redis.fresh();
  const stuck = await message(keys, 'acme', NOW - 100 * DAY);
  const fresh = await message(keys, 'acme', NOW - DAY);
  const finishedOld = await message(keys, 'acme', NOW - 100 * DAY, NOW - 20 * DAY);
  const orphanId = newId(NOW - 2 * HOUR);
  await client.rpush(keys.links(orphanId), 'https://orphan.example/');
  const youngOrphan = newId(NOW - 60_000);
  await client.rpush(keys.links(youngOrphan), 'https://young.example/');
  await client.hset(keys.rcptState('x.example', stuck, 0), 'state', 'deferred');
  await client.hset(keys.rcptState('x.example', fresh, 0), 'state', 'deferred');
  await storeFeedback(client, keys, { id: 'oldfb', raw: Buffer.from('x'), rcpts: [], mailFrom: '', receivedAt: NOW - 40 * DAY }, 365 * DAY);
  await storeFeedback(client, keys, { id: 'newfb', raw: Buffer.from('x'), rcpts: [], mailFrom: '', receivedAt: NOW - DAY }, 365 * DAY);
  await client.zadd(keys.feedbackUnprocessed(), NOW - 40 * DAY, 'oldfb', NOW - DAY, 'newfb');

  const { j, purged } = job(keys, { scanCount: 3 });
  const steps = await fullPass(j);
  assert.ok(steps > 3, `a small scanCount takes several steps (${steps})`);
  assert.is(await client.exists(keys.msgMeta(stuck), keys.msgBody(stuck), keys.links(stuck)), 0, 'the stuck message is gone with its body and links');
  assert.is(await client.exists(keys.msgMeta(fresh), keys.msgBody(fresh), keys.links(fresh)), 3, 'a pending message within its period stays');
  assert.is(await client.exists(keys.msgMeta(finishedOld)), 1, 'a record finished within the period stays, however long ago it was accepted');
  assert.is(await client.exists(keys.links(orphanId)), 0, 'an orphan link table older than the grace period goes');
  assert.is(await client.exists(keys.links(youngOrphan)), 1, 'a link table written just before its meta is not an orphan yet');
  assert.is(await client.exists(keys.rcptState('x.example', stuck, 0)), 0);
  assert.is(await client.exists(keys.rcptState('x.example', fresh, 0)), 1);
  assert.is(await client.exists(keys.feedbackRaw('oldfb')), 0, 'raw mail past retention.rawBounces goes even though its TTL was longer');
  assert.is(await client.exists(keys.feedbackRaw('newfb')), 1);
  assert.equal(await client.zrange(keys.feedbackUnprocessed(), 0, -1), ['newfb']);
  assert.is(purged.get('messages'), 2);
  assert.is(purged.get('records'), 1);
  assert.is(purged.get('raw_bounces'), 1);
});

test('a retention.records shorter than the queue\'s maximum age keeps mail still queued; a closed account\'s held mail waits for the account', async () => {
  const { keys } = redis.fresh();
  const rec = async (id: string, updatedAt: number) => client.hset(keys.rcptState('x.example', id, 0), 'state', 'deferred', 'updatedAt', updatedAt);
  const retried = await message(keys, 'acme', NOW - 2 * DAY); // within its 72 h: still being tried
  await rec(retried, NOW - 2 * DAY + HOUR);
  const expired = await message(keys, 'acme', NOW - 5 * DAY); // past 72 h and a day: the queue is done with it
  await rec(expired, NOW - 5 * DAY + HOUR);
  await closeAccount(client, keys, 'shut', { now: NOW - 9 * DAY, windowMs: 30 * DAY, by: 'cli' });
  const held = await message(keys, 'shut', NOW - 10 * DAY); // held while its account is closed
  await rec(held, NOW - 9 * DAY);
  const { j } = job(keys, { recordsMs: DAY });
  await fullPass(j);
  assert.is(await client.exists(keys.msgMeta(retried), keys.msgBody(retried), keys.rcptState('x.example', retried, 0)), 3, 'a message within the queue\'s maximum age is kept');
  assert.is(await client.exists(keys.msgMeta(expired), keys.msgBody(expired), keys.rcptState('x.example', expired, 0)), 0, 'one past it and the period goes');
  assert.is(await client.exists(keys.msgMeta(held), keys.msgBody(held), keys.rcptState('x.example', held, 0)), 3, 'held mail waits for a reopen or the account\'s deletion');
});

test("webhook dead letters whose events are past retention.events go, oldest first; younger ones stay", async () => {
  const { keys } = redis.fresh();
  const dead = keys.webhookDead('acme', '0000000000000009');
  const batch = (b: string, ...ages: number[]) => JSON.stringify({ b, n: 9, f: NOW - Math.max(...ages), e: ages.map((a, i) => ({ id: `${NOW - a}-${i}`, type: 'opened', account: 'acme', msgId: 'm', idx: '0', ip: '203.0.113.7' })) });
  // Oldest first, as the dispatcher appends them: one all old, one old with a young event, one young.
  // An unreadable item at the head (a replay leaves one in place for the operator) is stepped over.
  await client.rpush(dead, '{"b":"cut short', batch('old', 100 * DAY, 95 * DAY), batch('mixed', 100 * DAY, 10 * DAY), batch('young', DAY));
  const { j, purged } = job(keys);
  await fullPass(j);
  assert.equal((await client.lrange(dead, 0, -1)).map((m) => (m.endsWith('}') ? JSON.parse(m).b : m)), ['{"b":"cut short', 'mixed', 'young'], 'a batch goes once its newest event is past the period');
  assert.is(purged.get('webhook_dead_letters'), 1);
});

test('a lowered retention.records applies to what was stored under the longer one, counted from each finish', async () => {
  const { keys } = redis.fresh();
  // Written while retention.records was 90 days: every TTL below is 90 days from its finish.
  const old = await delivered(keys, NOW - 40 * DAY, [NOW - 40 * DAY]);
  const recent = await delivered(keys, NOW - 10 * DAY, [NOW - 10 * DAY]);
  // Accepted 80 days ago, held (its account was closed, then reopened), finished yesterday.
  const late = await delivered(keys, NOW - 80 * DAY, [NOW - DAY]);
  // Recipient 0 delivered at once, recipient 1 only yesterday: the message finished yesterday.
  const split = await delivered(keys, NOW - 80 * DAY, [NOW - 79 * DAY, NOW - DAY]);
  // Finished before finishedAt was kept: counted as finished at the queue's maximum age (72 h).
  const legacyOld = await message(keys, 'acme', NOW - 34 * DAY, NOW);
  const legacyNew = await message(keys, 'acme', NOW - 32 * DAY, NOW);
  await client.hdel(keys.msgMeta(legacyOld), 'finishedAt');
  await client.hdel(keys.msgMeta(legacyNew), 'finishedAt');
  // A campaign is its account's object, whatever its age.
  const campaignId = newId(NOW - 60 * DAY);
  await createCampaign(client, keys, { id: campaignId, account: 'acme', name: 'x', listId: 'l1', from: 'n@acme.example', fromDomain: 'acme.example', subject: 's', tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: NOW - 60 * DAY, sendAt: null, body: '{}', links: [] });
  await client.hset(keys.rcptState('x.example', campaignId, 1), 'state', 'delivered', 'updatedAt', NOW - 2 * DAY);
  await client.pexpire(keys.rcptState('x.example', campaignId, 1), 90 * DAY);
  await client.hset(keys.rcptState('x.example', campaignId, 2), 'state', 'delivered', 'updatedAt', NOW - 50 * DAY);
  await client.pexpire(keys.rcptState('x.example', campaignId, 2), 90 * DAY);
  // Pending (no TTL), first tried yesterday: the campaign began sending long after it was created.
  await client.hset(keys.rcptState('x.example', campaignId, 3), 'state', 'deferred', 'attempts', '1', 'firstAt', NOW - DAY, 'updatedAt', NOW - DAY);

  const before = job(keys, { scanCount: 7 });
  await fullPass(before.j);
  await before.j.stop(); // hands the lock over to the next job at once
  assert.is(before.purged.size, 0, 'nothing is past 90 days');
  assert.equal(await kept(keys, old, 1), [4, 1]);

  {
    const { j, purged } = job(keys, { scanCount: 7, recordsMs: 30 * DAY });
    await fullPass(j);
    assert.equal(await kept(keys, old, 1), [0, 0], 'finished 40 days ago: record, links, marks, counters and delivery record gone');
    assert.equal(await kept(keys, recent, 1), [4, 1], 'finished 10 days ago: kept');
    assert.equal(await kept(keys, late, 1), [4, 1], 'accepted 80 days ago, finished yesterday: kept');
    assert.equal(await kept(keys, split, 2), [4, 0, 1], "the message and yesterday's record kept; the record final 79 days ago gone");
    assert.is(await client.exists(keys.msgMeta(legacyOld)), 0, 'accepted 34 days ago, no finishedAt: finished before the period began');
    assert.is(await client.exists(keys.msgMeta(legacyNew)), 1, 'accepted 32 days ago, no finishedAt: may have finished within the period');
    assert.is(await client.exists(keys.msgMeta(campaignId)), 1, 'a campaign stays');
    assert.is(await client.exists(keys.rcptState('x.example', campaignId, 1)), 1, "a campaign copy's record final 2 days ago stays");
    assert.is(await client.exists(keys.rcptState('x.example', campaignId, 2)), 0, "a campaign copy's record final 50 days ago goes");
    assert.is(await client.exists(keys.rcptState('x.example', campaignId, 3)), 1, "a campaign copy pending since yesterday stays, though its campaign was created 60 days ago");
    assert.is(purged.get('messages'), 2);
    assert.is(purged.get('records'), 3);
  }
});

test("events about a message no address reference can name any more go: accepted before the references' lifetime, record gone; not a campaign's, nor a kept record's", async () => {
  const { keys } = redis.fresh();
  // References live 72 h + 90 days from acceptance (ingress/persist.ts refsTtlMs). An open 80 days
  // after acceptance is kept 90 days from then by retention.events, past its message's references:
  // no export or erasure could find it from day 93 on.
  const opened = newId(NOW - 100 * DAY);
  const recent = newId(NOW - 10 * DAY);
  const campaignId = newId(NOW - 100 * DAY);
  const held = await message(keys, 'acme', NOW - 100 * DAY, NOW - DAY);
  await createCampaign(client, keys, { id: campaignId, account: 'acme', name: 'x', listId: 'l1', from: 'n@acme.example', fromDomain: 'acme.example', subject: 's', tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: NOW - 100 * DAY, sendAt: null, body: '{}', links: [] });
  await storeFeedback(client, keys, { id: 'fb-late', raw: Buffer.from('complaint'), rcpts: [], mailFrom: '', receivedAt: NOW - 20 * DAY }, 365 * DAY);
  const ev = (at: number, type: string, msgId: string, more: string[] = []) => client.xadd(keys.events(), `${at}-0`, 'type', type, 'account', 'acme', 'msgId', msgId, 'idx', '0', ...more);
  await ev(NOW - 30 * DAY, 'opened', opened);
  await ev(NOW - 29 * DAY, 'opened', campaignId);
  await ev(NOW - 28 * DAY, 'opened', held);
  await ev(NOW - 20 * DAY, 'complained', opened, ['feedbackId', 'fb-late']);
  await ev(NOW - 9 * DAY, 'opened', recent);
  await client.xadd(keys.events(), `${NOW - 8 * DAY}-0`, 'type', 'erased', 'account', 'acme', 'ref', 'hmac:x');
  // An unsubscribe through a link that outlived the record: its suppression's evidence names it.
  await ev(NOW - 2 * HOUR, 'unsubscribed', opened);
  // Appended a moment ago: the webhook dispatcher may not have routed it yet.
  await ev(NOW - 60_000, 'complained', opened);

  const { j, purged } = job(keys, { scanCount: 2 });
  await fullPass(j);
  const left = ((await client.xrange(keys.events(), '-', '+')) as [string, string[]][]).map(([, f]) => `${f[1]} ${f[5] ?? ''}`);
  assert.equal(left, [`opened ${campaignId}`, `opened ${held}`, `opened ${recent}`, 'erased hmac:x', `unsubscribed ${opened}`, `complained ${opened}`], "the old message's open and complaint went");
  assert.is(await client.exists(keys.feedbackRaw('fb-late')), 0, 'the raw complaint its event named went with it');
  assert.is(purged.get('events'), 2);
  assert.is(purged.get('raw_bounces'), 1);
});

test("a lowered retention shortens what deleted contacts leave: a campaign's kept addresses and a deleted list's kept index", async () => {
  const { keys } = redis.fresh();
  const [l1, l2] = [await createList(client, keys, 'acme', 'news', NOW - 60 * DAY), await createList(client, keys, 'acme', 'other', NOW - 60 * DAY)];
  await upsertContacts(client, keys, 'acme', l1.id, [{ email: 'ann@example.org', fields: {} }, { email: 'bob@example.org', fields: {} }], NOW - 60 * DAY);
  await upsertContacts(client, keys, 'acme', l2.id, [{ email: 'cat@example.org', fields: {} }], NOW - 60 * DAY);
  const campaign = async (listId: string): Promise<string> => {
    const id = newId(NOW - 50 * DAY);
    await createCampaign(client, keys, { id, account: 'acme', name: 'x', listId, from: 'n@acme.example', fromDomain: 'acme.example', subject: 's', tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: NOW - 50 * DAY, sendAt: null, body: '{}', links: [] });
    await client.hset(keys.msgMeta(id), 'state', 'sent', 'startedAt', NOW - 50 * DAY);
    return id;
  };
  const c1 = await campaign(l1.id);
  await campaign(l2.id);
  // Kept for 93 days (72 h + retention.records of 90 days) from each deletion: Ann 40 days ago, Bob
  // 5 days ago; the whole of l2 40 days ago.
  const remove = async (email: string, at: number): Promise<void> => {
    await keepCopiesFindable(client, keys, 'acme', l1.id, (await findContact(client, keys, l1.id, email))!, at, 93 * DAY);
    await deleteContact(client, keys, 'acme', l1.id, email, at);
  };
  await remove('ann@example.org', NOW - 40 * DAY);
  await remove('bob@example.org', NOW - 5 * DAY);
  await deleteList(client, keys, 'acme', l2.id, 93 * DAY);
  await client.pexpire(keys.listEmails(l2.id), 53 * DAY);

  // retention.records and events lowered to 30 days: references, and these, live 33 days.
  const { j } = job(keys, { scanCount: 3, recordsMs: 30 * DAY, refsMs: 72 * HOUR + 30 * DAY });
  await fullPass(j);
  const gone = await client.hgetall(keys.campaignGone(c1));
  assert.equal(Object.values(gone).filter((v) => v.includes('@')), ['bob@example.org'], "Ann's address went, deleted 40 days ago; Bob's stays");
  assert.is(Object.keys(gone).filter((f) => f.startsWith('d:')).length, 1, 'and her digest field');
  assert.is(await client.zcard(keys.campaignGoneAt(c1)), 1);
  const left = await client.pttl(keys.listEmails(l2.id));
  assert.ok(left > 0 && left <= 33 * DAY, `the deleted list's index lives no longer than the new lifetime (${left} ms)`);
});

test('a closed account is deleted after its window: keys, messages, webhooks, lists, events — not other accounts', async () => {
  const { keys } = redis.fresh();
  let now = NOW;
  const clock = () => now;
  for (const a of ['gone', 'kept']) {
    await addSuppression(client, keys, a, 'someone@x.example', { reason: 'manual', at: now, evidence: {} });
    await createWebhook(client, keys, a, { url: 'https://hooks.example/', events: ['*'] });
    await createList(client, keys, a, 'newsletter', now);
    await client.set(keys.quota(a, '2026-06-01'), 3);
    await client.xadd(keys.events(), '*', 'type', 'accepted', 'account', a, 'msgId', 'x');
  }
  const goneMsg = await message(keys, 'gone', now - DAY);
  // Recent at the time the deletion runs (91 days on): retention by age must not take it.
  const keptMsg = await message(keys, 'kept', now + 90 * DAY);
  await client.hset(keys.senderPaused('gone'), '*', '{}');
  await client.zadd(keys.pausedSenders(), now, 'gone|*');
  await closeAccount(client, keys, 'gone', { now, windowMs: 90 * DAY, by: 'cli' });

  const { j, purged } = job(keys, { scanCount: 5, now: clock });
  await fullPass(j);
  assert.is(await client.exists(keys.suppression('gone')), 1, 'nothing is deleted before the window ends');
  assert.is(purged.size, 0);

  now += 91 * DAY;
  const before = await closedRecord(client, keys, 'gone');
  assert.is(before?.deletedAt, null);
  await fullPass(j); // the account became due during this pass' predecessor: one whole pass after it is due
  await fullPass(j);
  const after = await closedRecord(client, keys, 'gone');
  assert.ok(after && after.deletedAt !== null, 'the deletion is recorded and the account stays closed');
  for (const k of [keys.suppression('gone'), keys.webhooks('gone'), keys.quota('gone', '2026-06-01'), keys.msgMeta(goneMsg), keys.msgBody(goneMsg), keys.senderPaused('gone')]) {
    assert.is(await client.exists(k), 0, `${k} is gone`);
  }
  assert.equal(await listLists(client, keys, 'gone'), []);
  assert.is((await client.smembers(keys.webhookEndpoints())).filter((r) => r.startsWith('gone/')).length, 0);
  assert.is(await client.zscore(keys.pausedSenders(), 'gone|*'), null);
  const accounts = ((await client.xrange(keys.events(), '-', '+')) as [string, string[]][]).map(([, f]) => f[f.indexOf('account') + 1]);
  assert.equal(accounts, ['kept'], "the deleted account's events went, the other's stayed");
  assert.is(await client.exists(keys.suppression('kept'), keys.webhooks('kept'), keys.msgMeta(keptMsg), keys.quota('kept', '2026-06-01')), 4);
  assert.is((await listWebhooks(client, keys, 'kept')).length, 1);
  assert.is((await listLists(client, keys, 'kept')).length, 1);
  assert.is(purged.get('accounts'), 1);
  assert.is(purged.get('messages'), 1);
  assert.is(purged.get('account_events'), 1);
  assert.ok((purged.get('account_keys') ?? 0) >= 4, `account keys counted (${purged.get('account_keys')})`);
});

test("a closed account's deletion takes the address indexes its deleted lists kept and its campaigns' deleted contacts, wherever the walk starts", async () => {
  const { keys, prefix } = redis.fresh();
  const now = NOW;
  const [l1, l2] = [await createList(client, keys, 'gone', 'news', now), await createList(client, keys, 'gone', 'other', now)];
  await upsertContacts(client, keys, 'gone', l1.id, [{ email: 'ann.person@example.org', fields: {} }], now);
  await upsertContacts(client, keys, 'gone', l2.id, [{ email: 'cat.person@example.org', fields: {} }], now);
  const campaign = async (listId: string) => {
    const id = newId(now - 1000);
    await createCampaign(client, keys, { id, account: 'gone', name: 'x', listId, from: 'n@gone.example', fromDomain: 'gone.example', subject: 's', tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: now - 1000, sendAt: null, body: '{}', links: [] });
    await client.hset(keys.msgMeta(id), 'state', 'sending', 'startedAt', now - 500);
    return id;
  };
  const c1 = await campaign(l1.id);
  await campaign(l2.id);
  // Ann deleted from l1 (her copies stay findable: {m:<c1>}:gone), l2 deleted (its index kept).
  const ann = (await findContact(client, keys, l1.id, 'ann.person@example.org'))!;
  await keepCopiesFindable(client, keys, 'gone', l1.id, ann, now, 93 * DAY);
  await deleteContact(client, keys, 'gone', l1.id, 'ann.person@example.org', now);
  await deleteList(client, keys, 'gone', l2.id, 93 * DAY);
  assert.ok((await client.pttl(keys.listEmails(l2.id))) > 0, 'the kept index has its TTL');
  await closeAccount(client, keys, 'gone', { now: now - 100 * DAY, windowMs: DAY, by: 'cli' });
  // As if the walk had met the campaign's meta first: its other keys are then orphans with a TTL.
  await purgeMessage(client, keys, c1);
  const { j } = job(keys, { scanCount: 1, now: () => now });
  await fullPass(j, 5000);
  await fullPass(j, 5000);
  assert.ok((await closedRecord(client, keys, 'gone'))?.deletedAt, 'the account was deleted');
  assert.equal(await keysHolding(prefix, /person/), [], 'no key holds an address of the deleted account');
});

test("a closed account's delivery records and raw feedback mail go with it, though their TTLs outlast a short window", async () => {
  const { keys, prefix } = redis.fresh();
  const now = NOW;
  const sent = now - 3 * DAY;
  // What delivery and the feedback role leave of a recipient: a finished record naming the address
  // (the remote's answer) with the records' TTL, raw feedback mail with its own, and its event.
  const trace = async (account: string, address: string, msgId: string, fb: string) => {
    await client.hset(keys.rcptState('x.example', msgId, 0), 'state', 'bounced', 'response', `550 5.1.1 <${address}>: no such user`);
    await client.pexpire(keys.rcptState('x.example', msgId, 0), 90 * DAY);
    await storeFeedback(client, keys, { id: fb, raw: Buffer.from(`Final-Recipient: rfc822; ${address}\r\n`), rcpts: [`b-${msgId}-0@bounce.example`], mailFrom: '', receivedAt: sent }, 30 * DAY);
    await client.xadd(keys.events(), '*', 'type', 'bounced', 'account', account, 'msgId', msgId, 'idx', '0', 'feedbackId', fb);
  };
  const gone = await message(keys, 'gone', sent, sent);
  await trace('gone', 'ann.person@example.org', gone, 'fb-gone');
  // A message whose meta the walk already took (it met the meta first): its record is left alone.
  const early = await message(keys, 'gone', sent, sent);
  await client.hset(keys.rcptState('x.example', early, 0), 'state', 'delivered', 'response', '250 ok <bob.person@example.org>');
  await client.pexpire(keys.rcptState('x.example', early, 0), 90 * DAY);
  await purgeMessage(client, keys, early);
  // A campaign copy's record: the campaign's meta names the account.
  const list = await createList(client, keys, 'gone', 'news', sent);
  const campaignId = newId(sent);
  await createCampaign(client, keys, { id: campaignId, account: 'gone', name: 'x', listId: list.id, from: 'n@gone.example', fromDomain: 'gone.example', subject: 's', tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: sent, sendAt: null, body: '{}', links: [] });
  await client.hset(keys.rcptState('example.org', campaignId, 1), 'state', 'delivered', 'response', '250 ok <cat.person@example.org>');
  await client.pexpire(keys.rcptState('example.org', campaignId, 1), 90 * DAY);
  const other = await message(keys, 'kept', sent, sent);
  await trace('kept', 'dan.person@example.org', other, 'fb-kept');
  await closeAccount(client, keys, 'gone', { now: now - 2 * DAY, windowMs: DAY, by: 'cli' });

  const { j, purged } = job(keys, { scanCount: 2, now: () => now });
  await fullPass(j, 5000);
  await fullPass(j, 5000);
  assert.ok((await closedRecord(client, keys, 'gone'))?.deletedAt, 'the account was deleted');
  assert.equal(await keysHolding(prefix, /(ann|bob|cat)\.person/), [], 'no key holds an address of the deleted account');
  assert.is(await client.exists(keys.rcptState('x.example', other, 0), keys.feedbackRaw('fb-kept')), 2, "the other account's record and raw mail stay");
  assert.is(await client.zcard(keys.feedbackUnprocessed()), 0);
  assert.is(purged.get('records'), 3);
  assert.is(purged.get('raw_bounces'), 1);
});

test('reopening before the window ends keeps everything', async () => {
  const { keys } = redis.fresh();
  let now = NOW;
  await addSuppression(client, keys, 'back', 'someone@x.example', { reason: 'manual', at: now, evidence: {} });
  await closeAccount(client, keys, 'back', { now, windowMs: DAY, by: 'cli' });
  assert.ok(await reopenAccount(client, keys, 'back'));
  now += 2 * DAY;
  const { j } = job(keys, { now: () => now });
  await fullPass(j);
  await fullPass(j);
  assert.is(await client.exists(keys.suppression('back')), 1);
  assert.is(await closedRecord(client, keys, 'back'), null);
});

test('only one process steps at a time (the lock), and the cursor carries over to another process', async () => {
  const { keys } = redis.fresh();
  for (let i = 0; i < 30; i++) await client.set(`${keys.prefix}filler:${i}`, 'x');
  const a = job(keys, { scanCount: 5 }).j;
  const b = job(keys, { scanCount: 5 }).j;
  assert.ok((await a.step()).ran);
  assert.is((await b.step()).ran, false, 'b waits while a holds the lock');
  await a.stop();
  const cursor = await client.hgetall(keys.retentionCursor());
  assert.ok(cursor['scan:server'] !== undefined && cursor['scan:server'] !== '0', 'a stored where it was');
  assert.ok((await b.step()).ran, 'after a stops, b takes over');
  assert.ok(Number((await client.hgetall(keys.retentionCursor()))['pass']) === Number(cursor['pass']), 'b continued the same pass');
});

/** Keys under `prefix` whose value (a hash or a string) matches `pattern`. */
async function keysHolding(prefix: string, pattern: RegExp): Promise<string[]> {
  const found: string[] = [];
  for (const k of await client.keys(`${prefix}*`)) {
    const type = await client.type(k);
    const text = type === 'hash' ? JSON.stringify(await client.hgetall(k)) : type === 'string' ? String(await client.get(k)) : '';
    if (pattern.test(text)) found.push(k);
  }
  return found;
}

test.run();
