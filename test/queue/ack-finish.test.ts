import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { storeMessage } from '../../src/store/messages.js';
import { enqueueRecipients } from '../../src/queue/enqueue.js';
import { claim } from '../../src/queue/claim.js';
import type { QueueEntry } from '../../src/queue/entry.js';
import { ack, ackAndFinish, bounce, retry } from '../../src/queue/outcome.js';
import { packEvent, type EventType } from '../../src/store/events.js';
import { OUTCOME } from '../../src/queue/outcome-codes.js';
import { createMessageSource } from '../../src/store/message-source.js';

/**
 * ack-3.lua called with the message's keys (single server): the ack and finishCopy-5.lua's work for
 * a message's recipient in one call. It must leave exactly what the two calls leave.
 */
const test = suite('queue/ack-finish');
const T = Date.UTC(2026, 10, 26, 12);
const RECORD_TTL = 86_400_000;
const MESSAGE_TTL = 3_600_000;
const OK = { code: 250, enhanced: '2.0.0', response: '250 2.0.0 OK' };
let redis: TestRedis;
let client: RedisClient;

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});
test.after(() => redis.stop());

async function queued(keys: Keys, msgId: string, rcpts: number): Promise<QueueEntry[]> {
  await storeMessage(client, keys, {
    id: msgId, account: 'acme', source: 'http', kind: 'raw', from: 'a@acme.example', fromDomain: 'acme.example',
    rcpts: Array.from({ length: rcpts }, (_, i) => ({ address: `r${i}@d.test`, domain: 'd.test' })), acceptedAt: T, tags: [], metadata: {},
    body: 'Subject: x\r\n\r\nx\r\n', links: ['https://acme.example/a'],
  });
  await client.hset(keys.msgStats(msgId), 'opens_human', '1');
  await enqueueRecipients(client, keys, 4, Array.from({ length: rcpts }, (_, idx) => ({ msgId, idx, domain: 'd.test', dueAt: T })));
  return (await claim(client, keys, { domain: 'd.test', max: rcpts, leaseMs: 30_000, now: T })).entries;
}

/** What a finished message leaves: its keys' types and whether each expires, and the records. */
async function left(keys: Keys, msgId: string, rcpts: number) {
  const expires = async (k: string) => ((await client.pttl(k)) > 0 ? 'expires' : String(await client.pttl(k)));
  return {
    meta: [...(await client.hmget(keys.msgMeta(msgId), 'pending', 'finishedAt')), await expires(keys.msgMeta(msgId))],
    body: await client.exists(keys.msgBody(msgId)),
    links: await expires(keys.links(msgId)),
    stats: await expires(keys.msgStats(msgId)),
    records: await Promise.all(Array.from({ length: rcpts }, (_, i) => client.hmget(keys.rcptState('d.test', msgId, i), 'state', 'code', 'enhanced'))),
  };
}

test('leaves what ack then finishCopy leave, counts each recipient once, and finishes the last', async () => {
  const a = redis.fresh().keys;
  const b = redis.fresh().keys;
  const [a0, a1] = await queued(a, '01aaaaaaaaaaaaaa', 2) as [QueueEntry, QueueEntry];
  const [b0, b1] = await queued(b, '01aaaaaaaaaaaaaa', 2) as [QueueEntry, QueueEntry];
  // No address index here: its references never run out (ingress/persist tests their renewal).
  const src = createMessageSource(client, b, MESSAGE_TTL, Number.MAX_SAFE_INTEGER);

  assert.equal(await ackAndFinish(client, a, a0, { now: T + 1, ...OK, recordTtlMs: RECORD_TTL, messageTtlMs: MESSAGE_TTL }), { reply: OUTCOME.APPLIED, pending: 1 });
  assert.is(await ack(client, b, b0, { now: T + 1, ...OK, recordTtlMs: RECORD_TTL }), OUTCOME.APPLIED);
  await src.countCopy(b0, { counter: 'delivered' }, T + 1);
  assert.equal(await left(a, '01aaaaaaaaaaaaaa', 2), await left(b, '01aaaaaaaaaaaaaa', 2));
  assert.is((await left(a, '01aaaaaaaaaaaaaa', 2)).body, 1, 'one recipient is still pending: the body stays');

  // A late ack of the same entry changes nothing and does not count the recipient again.
  assert.equal(await ackAndFinish(client, a, a0, { now: T + 2, ...OK, recordTtlMs: RECORD_TTL, messageTtlMs: MESSAGE_TTL }), { reply: OUTCOME.NOOP, pending: -2 });
  assert.is(await client.hget(a.msgMeta('01aaaaaaaaaaaaaa'), 'pending'), '1');

  assert.equal(await ackAndFinish(client, a, a1, { now: T + 3, ...OK, recordTtlMs: RECORD_TTL, messageTtlMs: MESSAGE_TTL }), { reply: OUTCOME.APPLIED, pending: 0 });
  assert.is(await ack(client, b, b1, { now: T + 3, ...OK, recordTtlMs: RECORD_TTL }), OUTCOME.APPLIED);
  await src.countCopy(b1, { counter: 'delivered' }, T + 3);
  const done = await left(a, '01aaaaaaaaaaaaaa', 2);
  assert.equal(done, await left(b, '01aaaaaaaaaaaaaa', 2));
  assert.equal(done, { meta: ['0', String(T + 3), 'expires'], body: 0, links: 'expires', stats: 'expires', records: [['delivered', '250', '2.0.0'], ['delivered', '250', '2.0.0']] });
});

test('an outcome given its event appends it in the same step, only when it applies', async () => {
  const { keys } = redis.fresh();
  const [e0, e1, e2, e3] = await queued(keys, '01cccccccccccccc', 4) as [QueueEntry, QueueEntry, QueueEntry, QueueEntry];
  const ev = (type: EventType, idx: number) => ({ stream: keys.events(), maxLen: 1000, packed: packEvent(type, { msgId: '01cccccccccccccc', idx, account: 'acme' }) });
  const base = { now: T + 1, ...OK, recordTtlMs: RECORD_TTL };
  assert.equal(await ackAndFinish(client, keys, e0, { ...base, messageTtlMs: MESSAGE_TTL, event: ev('delivered', 0) }), { reply: OUTCOME.APPLIED, pending: 3 });
  assert.is(await ack(client, keys, e1, { ...base, event: ev('delivered', 1) }), OUTCOME.APPLIED);
  assert.is(await retry(client, keys, e2, { ...base, code: 451, enhanced: '4.7.1', response: '451 later', nextAt: T + 60_000, event: ev('deferred', 2) }), OUTCOME.APPLIED);
  assert.is(await bounce(client, keys, e3, { ...base, code: 550, enhanced: '5.1.1', response: '550 no', state: 'bounced', reason: 'userunknown', event: ev('bounced', 3) }), OUTCOME.APPLIED);
  // Late outcomes of entries already settled: nothing changes and no event is appended.
  assert.equal(await ackAndFinish(client, keys, e0, { ...base, messageTtlMs: MESSAGE_TTL, event: ev('delivered', 0) }), { reply: OUTCOME.NOOP, pending: -2 });
  assert.is(await ack(client, keys, e1, { ...base, event: ev('delivered', 1) }), OUTCOME.NOOP);
  assert.is(await bounce(client, keys, e3, { ...base, code: 550, enhanced: '5.1.1', response: '550 no', state: 'bounced', reason: 'userunknown', event: ev('bounced', 3) }), OUTCOME.NOOP);
  const events = (await client.xrange(keys.events(), '-', '+')).map(([, f]) => `${f[1]}:${f[f.indexOf('idx') + 1]}`);
  assert.equal(events, ['delivered:0', 'delivered:1', 'deferred:2', 'bounced:3']);
});

test('a message no longer stored: the ack is recorded, pending is -1 and no record is created', async () => {
  const { keys } = redis.fresh();
  const [e] = await queued(keys, '01bbbbbbbbbbbbbb', 1) as [QueueEntry];
  await client.del(keys.msgMeta('01bbbbbbbbbbbbbb'), keys.msgBody('01bbbbbbbbbbbbbb'));
  assert.equal(await ackAndFinish(client, keys, e, { now: T + 1, ...OK, recordTtlMs: RECORD_TTL, messageTtlMs: MESSAGE_TTL }), { reply: OUTCOME.APPLIED, pending: -1 });
  assert.is(await client.exists(keys.msgMeta('01bbbbbbbbbbbbbb')), 0);
  assert.is(await client.hget(keys.rcptState('d.test', '01bbbbbbbbbbbbbb', 0), 'state'), 'delivered');
});

test("a campaign copy's final outcome and its count are one step (single server): counted when it applies, never by a no-op; the last completes the campaign", async () => {
  const keys = redis.fresh().keys;
  const campaignId = 'c-one-step';
  await client.hset(keys.msgMeta(campaignId), { kind: 'campaign', state: 'sending', pending: 3, enqueued: 1 });
  // Its destinations (pause, resume and cancel walk them), as the enqueuer lists them.
  await client.sadd(keys.campaignDomains(campaignId), 'd.test');
  await enqueueRecipients(client, keys, 4, [1, 2, 3].map((no) => ({ msgId: campaignId, idx: no, domain: 'd.test', dueAt: T })));
  const [c1, c2, c3] = (await claim(client, keys, { domain: 'd.test', max: 3, leaseMs: 30_000, now: T })).entries as [QueueEntry, QueueEntry, QueueEntry];
  const campaign = { campaignId };
  const stream = keys.events();
  const event = { stream, maxLen: 1000, packed: packEvent('delivered', { msgId: campaignId, idx: 1 }) };
  assert.is(await ack(client, keys, c1, { now: T + 1, ...OK, recordTtlMs: RECORD_TTL, campaign, event }), OUTCOME.APPLIED);
  assert.is(await ack(client, keys, c1, { now: T + 2, ...OK, recordTtlMs: RECORD_TTL, campaign }), OUTCOME.NOOP);
  assert.is(await bounce(client, keys, c2, { now: T + 3, state: 'bounced', code: 550, enhanced: '5.1.1', response: '550 5.1.1 no such user', reason: 'userunknown', recordTtlMs: RECORD_TTL, campaign: { campaignId, counter: 'bounced', reason: 'userunknown', hard: true } }), OUTCOME.APPLIED);
  assert.is(await bounce(client, keys, c2, { now: T + 4, state: 'bounced', code: 550, enhanced: '5.1.1', response: 'again', reason: 'userunknown', recordTtlMs: RECORD_TTL, campaign: { campaignId, counter: 'bounced', reason: 'userunknown', hard: true } }), OUTCOME.NOOP);
  assert.equal(await client.hmget(keys.msgStats(campaignId), 'delivered', 'bounced', 'bounced:userunknown', 'hardbounces'), ['1', '1', '1', '1'], 'each counted once');
  assert.equal(await client.hmget(keys.msgMeta(campaignId), 'pending', 'state'), ['1', 'sending']);
  assert.is((await client.xrange(stream, '-', '+')).length, 1, 'the event too');
  assert.is(await bounce(client, keys, c3, { now: T + 5, state: 'expired', code: null, enhanced: null, response: 'gave up', reason: 'expired', recordTtlMs: RECORD_TTL, campaign: { campaignId, counter: 'expired' } }), OUTCOME.APPLIED);
  assert.equal(await client.hmget(keys.msgMeta(campaignId), 'pending', 'state'), ['0', 'completed'], 'the last outcome completes the campaign');
  assert.is(await client.exists(keys.campaignDomains(campaignId)), 0, 'its destination set goes with it: nothing is queued any more');
  assert.is(await client.hget(keys.msgStats(campaignId), 'expired'), '1');
});

test.run();
