/**
 * Recipients' rights against a real Redis: an address with contacts in two lists, messages queued,
 * deferred (leased), delivered and bounced, a campaign copy, tracking marks and events, a raw bounce,
 * soft bounces, suppression, webhook batches in an outbox and a dead-letter list, and an idempotency
 * answer. Export holds each kind; after erase a read of every key and value (stream entries
 * included) finds neither the address (any case) nor its VERP address, and its digest still blocks.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { persistMessage } from '../../src/ingress/persist.js';
import type { MessageDsn } from '../../src/store/messages.js';
import { createList, upsertContacts, findContact, deleteContact, deleteList } from '../../src/store/contacts.js';
import { createCampaign } from '../../src/store/campaigns.js';
import { pushCampaignChunk } from '../../src/queue/campaign.js';
import { appendEvent, appendEventBatch, packEvent } from '../../src/store/events.js';
import { createEventBatch } from '../../src/tracking/event-batch.js';
import { addSuppression, attachEvidence, normaliseForSuppression, suppressionsOf, suppressionOf } from '../../src/store/suppression.js';
import { messageFor } from '../../src/store/recipients.js';
import { unsubscribe, unsubscribeTarget } from '../../src/tracking/unsubscribe.js';
import { createTokenCodec, type TokenPayload } from '../../src/core/tokens.js';
import { createLogger } from '../../src/observability/logger.js';
import { recordOutcome, storeFeedback } from '../../src/feedback/raw-store.js';
import { recordSoftBounce } from '../../src/store/soft-bounces.js';
import { createWebhook } from '../../src/store/webhooks.js';
import { addressDigest } from '../../src/store/address-digest.js';
import { campaignsSentToList, eraseAddress, exportAddress, keepCopiesFindable, ERASED_ADDRESS, EVENTS_GUARD_MS, OUTBOX_PAGE, UNPROCESSED_PAGE } from '../../src/store/privacy.js';
import { encodeSpecRecord } from '../../src/render/spec-record.js';
import { parseSpec } from '../../src/render/compose.js';
import type { MessageSpec } from '../../src/render/protocol.js';
import { verpAddress } from '../../src/core/verp.js';
import { createMessageSource } from '../../src/store/message-source.js';
import { newId } from '../../src/core/ids.js';
import { purgeMessage } from '../../src/store/retention.js';
import { commandsOn, keyspaceText, startRedis, type TestRedis } from '../helpers/redis.js';
import { getMessage } from '../../src/store/messages.js';
import { noticeToSender } from '../../src/delivery/failure-notice.js';
import { createNoticeSender } from '../../src/app/notices.js';
import { loadConfig } from '../../src/config/load.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { ClosedAccounts } from '../../src/store/account-state.js';
import { Reaper } from '../../src/housekeeping/reaper.js';

const test = suite('store/privacy');
let redis: TestRedis;
let client: RedisClient;
let keys: Keys;

const ADDRESS = 'Ann.Person@Example.org';
const OTHER = 'bob@example.net';
const ACCOUNT = 'acme';
const SCOPE = { accounts: [ACCOUNT], all: false };
const NOW = Date.now();

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});
test.before.each(() => {
  keys = redis.fresh().keys;
});
test.after(async () => {
  await redis.stop();
});

async function message(id: string, rcpts: string[], dsn?: MessageDsn): Promise<void> {
  await persistMessage(client, keys, 4, {
    id, account: ACCOUNT, source: dsn ? 'smtp' : 'http', kind: 'raw', from: 'news@acme.test', fromDomain: 'acme.test',
    ...(dsn ? { returnPath: 'news@acme.test', dsn } : {}),
    rcpts: rcpts.map((a) => ({ address: a, domain: a.split('@')[1]!.toLowerCase() })),
    acceptedAt: NOW - 1000, tags: [], metadata: {}, body: `To: ${rcpts.join(', ')}\r\nSubject: hi\r\n\r\nHello ${rcpts[0]}\r\n`,
  });
}

/** Everything the address touches, through the modules that write it in production. */
async function populate(): Promise<{ campaignId: string; verp: string; lists: string[] }> {
  const dom = 'example.org';
  const [l1, l2] = [await createList(client, keys, ACCOUNT, 'news'), await createList(client, keys, ACCOUNT, 'offers')];
  await upsertContacts(client, keys, ACCOUNT, l1.id, [{ email: ADDRESS, fields: { first: 'Ann' } }, { email: OTHER, fields: {} }], NOW);
  await upsertContacts(client, keys, ACCOUNT, l2.id, [{ email: ADDRESS.toUpperCase(), fields: { city: 'Oslo' } }], NOW);

  await message('m-queued', [ADDRESS]);
  // An SMTP submission with DSN parameters: each ORCPT names its recipient.
  await message('m-deferred', [ADDRESS, OTHER], { envid: 'e1', rcpts: [{ notify: ['FAILURE'], orcpt: `rfc822;${ADDRESS}` }, { orcpt: `rfc822;${OTHER}` }] });
  await message('m-delivered', [ADDRESS]);
  await message('m-bounced', [ADDRESS]);
  // deferred: attempt 1 leased; delivered and bounced: records with the remote's reply naming the address
  await client.zrem(keys.ready(dom), 'm-deferred:0:0', 'm-delivered:0:0', 'm-bounced:0:0');
  await client.zadd(keys.leases(dom), NOW + 60_000, 'm-deferred:0:1');
  await client.hset(keys.rcptState(dom, 'm-deferred', 0), { state: 'deferred', attempts: 1, response: `451 4.2.0 <${ADDRESS}> try later` });
  await client.hset(keys.rcptState(dom, 'm-delivered', 0), { state: 'delivered', attempts: 1, response: `250 2.0.0 ok ${ADDRESS}` });
  await client.hset(keys.rcptState(dom, 'm-bounced', 0), { state: 'bounced', attempts: 1, code: 550, enhanced: '5.1.1', updatedAt: NOW, response: `550 5.1.1 <${ADDRESS}>: user unknown` });

  const campaignId = 'c-spring';
  await createCampaign(client, keys, {
    id: campaignId, account: ACCOUNT, name: 'Spring', listId: l1.id, from: 'news@acme.test', fromDomain: 'acme.test', subject: 'Spring',
    tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: NOW - 2000, sendAt: null, body: '{}', links: ['https://acme.test/a'],
  });
  const contact = await findContact(client, keys, l1.id, ADDRESS);
  await pushCampaignChunk(client, keys, 4, { campaignId, chunk: 1, dueAt: NOW, sending: true, byDomain: new Map([[dom, [contact!.no]]]) });

  // tracking: marks (the Lua script of the tracking server) and events
  await client.recordTrackingEvent(keys.trackMarks('m-delivered'), keys.links('m-delivered'), keys.msgStats('m-delivered'), keys.msgMeta('m-delivered'), 'o', 0, 0, NOW, 2000, 60_000, '', 3);
  await client.rpush(keys.links('m-delivered'), 'https://acme.test/x');
  await client.recordTrackingEvent(keys.trackMarks('m-delivered'), keys.links('m-delivered'), keys.msgStats('m-delivered'), keys.msgMeta('m-delivered'), 'c', 0, 0, NOW, 2000, 60_000, '', 3);
  await client.recordTrackingEvent(keys.trackMarks(campaignId), keys.links(campaignId), keys.msgStats(campaignId), keys.msgMeta(campaignId), 'u', contact!.no, 0, NOW, 2000, 60_000, '', 3);
  const opened = await appendEvent(client, keys, 'opened', { account: ACCOUNT, msgId: 'm-delivered', idx: 0, ua: 'Mail' }, 1000);
  await appendEvent(client, keys, 'clicked', { account: ACCOUNT, msgId: 'm-delivered', idx: 0, link: 0 }, 1000);
  await appendEvent(client, keys, 'unsubscribed', { account: ACCOUNT, msgId: campaignId, idx: contact!.no }, 1000);
  await appendEvent(client, keys, 'delivered', { account: ACCOUNT, msgId: 'm-deferred', idx: 1 }, 1000);

  // a bounce as the feedback role keeps it: raw mail, event, suppression, soft-bounce history
  const verp = verpAddress('m-bounced', 0, 'bounce.acme.test');
  await storeFeedback(client, keys, { id: 'fb-1', raw: Buffer.from(`Final-Recipient: rfc822; ${ADDRESS}\r\nStatus: 5.1.1\r\n`), rcpts: [verp], mailFrom: '', receivedAt: NOW }, 60_000);
  const bounced = await appendEvent(client, keys, 'bounced', { account: ACCOUNT, msgId: 'm-bounced', idx: 0, feedbackId: 'fb-1', reason: 'userunknown' }, 1000);
  await appendEvent(client, keys, 'complained', { account: ACCOUNT, msgId: 'm-delivered', idx: 0, feedbackId: 'fb-1' }, 1000);
  await addSuppression(client, keys, '*', ADDRESS, { reason: 'hardbounce', at: NOW, evidence: { event: bounced, msgId: 'm-bounced', idx: 0 } });
  await addSuppression(client, keys, ACCOUNT, ADDRESS, { reason: 'unsubscribe', at: NOW, evidence: { event: opened } });
  await recordSoftBounce(client, keys, ADDRESS, 'm-deferred:0', NOW, 60_000);

  // webhooks: one batch waiting for a retry, one dead-lettered (each also holds another recipient's event)
  const { endpoint } = await createWebhook(client, keys, ACCOUNT, { url: 'https://hooks.acme.test/x', events: ['opened'] });
  const batch = (e: object[]) => JSON.stringify({ b: 'x', n: 1, f: NOW, e });
  await client.zadd(keys.webhookOutbox(ACCOUNT, endpoint.id), NOW + 5000, batch([{ id: opened, type: 'opened', msgId: 'm-delivered', idx: '0' }, { id: '1-1', type: 'opened', msgId: 'm-deferred', idx: '1' }]));
  await client.rpush(keys.webhookDead(ACCOUNT, endpoint.id), batch([{ id: bounced, type: 'bounced', msgId: 'm-bounced', idx: '0' }]));
  // an idempotent HTTP answer listing the recipients
  await client.set(keys.idempotency(ACCOUNT, 'abc'), JSON.stringify({ h: 'x', s: 202, b: JSON.stringify({ id: 'm-queued', recipients: [ADDRESS] }) }), 'PX', 60_000);
  return { campaignId, verp, lists: [l1.id, l2.id] };
}

/** Every key and value of the test's prefix as text (helpers/redis.ts keyspaceText). */
const dump = (prefix: string): Promise<string> => keyspaceText(client, prefix);

test('export holds contacts, suppressions, messages with delivery states, opens, clicks, unsubscribes, bounces and complaints', async () => {
  await populate();
  const e = (await exportAddress(client, keys, ADDRESS, SCOPE)) as Record<string, unknown[]>;
  assert.is(e['contacts']!.length, 2);
  assert.equal(new Set(e['suppressions']!.map((s) => (s as { reason: string }).reason)), new Set(['hardbounce', 'unsubscribe']));
  const msgs = e['messages'] as { id: string; delivery: Record<string, string | number> | null }[];
  assert.equal(new Set(msgs.map((m) => m.id)), new Set(['m-queued', 'm-deferred', 'm-delivered', 'm-bounced', 'c-spring']));
  // As GET /v1/messages/:id shows a record: counts and codes numbers, times ISO strings.
  assert.equal(msgs.find((m) => m.id === 'm-bounced')!.delivery, { state: 'bounced', attempts: 1, code: 550, enhanced: '5.1.1', updatedAt: new Date(NOW).toISOString(), response: `550 5.1.1 <${ADDRESS}>: user unknown` });
  assert.is(msgs.find((m) => m.id === 'm-delivered')!.delivery!['state'], 'delivered');
  for (const kind of ['opens', 'clicks', 'unsubscribes', 'bounces', 'complaints', 'feedback', 'softBounces']) assert.is(e[kind]!.length > 0, true, kind);
  // another recipient's data is not in it
  assert.not.match(JSON.stringify(e), OTHER);
});

test("mail not understood that names the address is another account's business: only an operator's search of every account reads or erases it", async () => {
  await populate();
  // A bounce nobody could match: it quotes another account's message to the address.
  await storeFeedback(client, keys, { id: 'fb-lost', raw: Buffer.from(`Subject: undeliverable\r\n\r\nTo: ${ADDRESS}\r\nFrom: ceo@other-account.test\r\n`), rcpts: ['postmaster@bounce.acme.test'], mailFrom: '', receivedAt: NOW }, 60_000);
  await recordOutcome(client, keys, 'fb-lost', 'unmatched', NOW, 60_000);
  const ids = (e: Record<string, unknown>) => (e['feedback'] as { id: string }[]).map((f) => f.id);
  assert.not.ok(ids(await exportAddress(client, keys, ADDRESS, SCOPE)).includes('fb-lost'), "not in the account's export");
  assert.ok(ids(await exportAddress(client, keys, ADDRESS, { accounts: [ACCOUNT], all: true })).includes('fb-lost'), "in the operator's");
  const erase = { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' };
  await eraseAddress(client, keys, ADDRESS, SCOPE, erase);
  assert.is(await client.exists(keys.feedbackRaw('fb-lost')), 1, "the account's erasure leaves it");
  await eraseAddress(client, keys, ADDRESS, { accounts: [ACCOUNT], all: true }, erase);
  assert.is(await client.exists(keys.feedbackRaw('fb-lost')), 0, "the operator's erases it");
});

test("feedback mail not processed yet (no event names it) is exported and erased: an account's request takes the mail returned to its own copies, an operator's any that names the address", async () => {
  await populate();
  // Stored by the inbound MX before its 250 and not processed yet (a crash, or no feedback process running).
  const pending = async (id: string, raw: string, rcpt: string): Promise<void> => {
    await storeFeedback(client, keys, { id, raw: Buffer.from(raw), rcpts: [rcpt], mailFrom: '', receivedAt: NOW }, 60_000);
  };
  // (A return path names the message by its id: a real one here.)
  const [mine, another, others] = [newId(), newId(), newId()];
  await message(mine, [ADDRESS]);
  await message(others, [OTHER]);
  await pending('fb-p-own', `Final-Recipient: rfc822; ${ADDRESS}\r\nStatus: 5.2.2\r\n`, verpAddress(mine, 0, 'bounce.acme.test'));
  await pending('fb-p-postmaster', `Subject: please stop mailing ${ADDRESS}\r\n\r\nthanks\r\n`, 'postmaster@bounce.acme.test');
  await pending('fb-p-other', `Final-Recipient: rfc822; ${ADDRESS}\r\nStatus: 5.2.2\r\n`, verpAddress(another, 0, 'bounce.acme.test'));
  await pending('fb-p-unrelated', `Final-Recipient: rfc822; ${OTHER}\r\nStatus: 5.2.2\r\n`, verpAddress(others, 0, 'bounce.acme.test'));
  const ids = (e: Record<string, unknown>) => (e['feedback'] as { id: string }[]).map((f) => f.id).filter((id) => id.startsWith('fb-p-')).sort();
  assert.equal(ids(await exportAddress(client, keys, ADDRESS, SCOPE)), ['fb-p-own'], "the account's export: the mail returned to its copy");
  assert.equal(ids(await exportAddress(client, keys, ADDRESS, { accounts: [ACCOUNT], all: true })), ['fb-p-other', 'fb-p-own', 'fb-p-postmaster'], "the operator's: all that name the address");
  const erase = { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' };
  const gone = async (id: string): Promise<boolean> => (await client.exists(keys.feedbackRaw(id))) === 0 && (await client.zscore(keys.feedbackPending(), id)) === null;
  await eraseAddress(client, keys, ADDRESS, SCOPE, erase);
  assert.ok(await gone('fb-p-own'), "the account's erasure takes it, from the pending index too");
  assert.not.ok(await gone('fb-p-postmaster'), "the account's erasure leaves the operator's part");
  await eraseAddress(client, keys, ADDRESS, { accounts: [ACCOUNT], all: true }, erase);
  for (const id of ['fb-p-postmaster', 'fb-p-other']) assert.ok(await gone(id), `the operator's erasure takes ${id}`);
  assert.not.ok(await gone('fb-p-unrelated'), 'mail about another address stays');
});

test("the global list and the soft-bounce history are everyone's: an account sees and erases only its own part", async () => {
  await populate();
  // Beta's mail to the address soft-bounced too, and beta's hard bounce made the global entry.
  await recordSoftBounce(client, keys, ADDRESS, 'b-1:0', NOW, 60_000);
  await addSuppression(client, keys, '*', ADDRESS, { reason: 'hardbounce', at: NOW, evidence: { event: '9-9', msgId: 'b-1', idx: 0, status: '5.1.1' } });
  const e = (await exportAddress(client, keys, ADDRESS, SCOPE)) as Record<string, Record<string, unknown>[]>;
  assert.equal(e['softBounces']!.map((s) => s['ref']), ['m-deferred:0'], "acme's own soft bounce only");
  const global = e['suppressions']!.find((s) => s['list'] === 'global');
  assert.equal({ ...global }, { list: 'global', erased: false, reason: 'hardbounce', at: NOW }, "the global entry without beta's ids");
  assert.ok(e['suppressions']!.find((s) => s['list'] === ACCOUNT)?.['evidence'], "acme's own entry keeps its evidence");
  const operator = (await exportAddress(client, keys, ADDRESS, { accounts: [], all: true })) as Record<string, Record<string, unknown>[]>;
  assert.equal(new Set(operator['softBounces']!.map((s) => s['ref'])), new Set(['m-deferred:0', 'b-1:0']));
  assert.equal(operator['suppressions']!.find((s) => s['list'] === 'global')?.['evidence'], { event: '9-9', msgId: 'b-1', idx: 0, status: '5.1.1' });

  await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
  const digestKey = keys.softBounces((await client.hkeys(keys.suppression('*'))).find((f) => f.startsWith('erased:'))!.slice('erased:'.length));
  assert.equal(await client.zrange(digestKey, 0, -1), ['b-1:0'], "beta's soft bounce still counts");
  const [field, json] = Object.entries(await client.hgetall(keys.suppression('*')))[0]!;
  assert.ok(field.startsWith('erased:'), 'the global entry is kept by digest');
  assert.equal(JSON.parse(json).evidence, { event: '9-9', msgId: 'b-1', idx: 0, status: '5.1.1' }, "beta's evidence stays");
  assert.is((await suppressionOf(client, keys, 'beta', ADDRESS))?.reason, 'hardbounce', 'still suppressed everywhere');

  await eraseAddress(client, keys, ADDRESS, { accounts: [], all: true }, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
  assert.is(await client.exists(digestKey), 0, "the operator's erasure takes the whole history");
});

test('erase leaves no trace of the address in any key or value, and its digest still suppresses it', async () => {
  const { verp } = await populate();
  const before = await dump(keys.prefix);
  assert.match(before, ADDRESS.toLowerCase());
  const report = await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
  assert.is(report.contacts, 2);
  assert.is(report.queued >= 3, true, 'queued, leased and campaign entries removed');
  const after = await dump(keys.prefix);
  assert.not.ok(after.includes(ADDRESS.toLowerCase()), 'the address is gone');
  assert.not.ok(after.includes(verp.toLowerCase()), 'its VERP address is gone');
  assert.not.ok(after.includes('ann.person'), 'no part of it is left');
  // the other recipient is intact: its message, queue entry, event and webhook event
  assert.ok(after.includes(OTHER));
  assert.equal(JSON.parse((await client.hget(keys.msgMeta('m-deferred'), 'dsn')) ?? 'null'), { envid: 'e1', rcpts: [{ notify: ['FAILURE'] }, { orcpt: `rfc822;${OTHER}` }] }, 'only the erased ORCPT goes');
  assert.ok((await client.zscore(keys.ready('example.net'), 'm-deferred:1:0')) !== null);
  // still never mailed: account and global suppression by digest
  assert.is((await suppressionOf(client, keys, ACCOUNT, ADDRESS.toLowerCase()))?.reason, 'unsubscribe');
  assert.is((await suppressionOf(client, keys, 'other-account', ADDRESS))?.reason, 'hardbounce');
  assert.equal((await suppressionsOf(client, keys, ACCOUNT, [ADDRESS, 'new@example.org'])).map((hit) => hit !== null), [true, false]);
  // an `erased` event tells the account, without the address
  const erased = (await client.xrange(keys.events(), '-', '+')).filter(([, f]) => f.includes('erased'));
  assert.is(erased.length, 1);
  // idempotent: a second run finds nothing more
  const again = await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
  assert.equal({ ...again, suppressions: 0 }, { contacts: 0, messages: 0, queued: 0, events: 0, feedback: 0, notices: 0, webhookBatches: 0, suppressions: 0, idempotency: 0 });
});

test("an erasure that dies before it counts a pending copy leaves the count owed, and the reaper makes it: the campaign is not left pending for good", async () => {
  const { campaignId } = await populate();
  // As the enqueuer leaves it: the copy counted pending, the list not queued whole yet.
  await client.hset(keys.msgMeta(campaignId), 'state', 'sending', 'startedAt', NOW - 1500, 'pending', 1);
  // The campaign's count is refused (its counted bitmap is another type): the erasure stops there,
  // as a process killed between the queue step and the count would.
  await client.sadd(keys.copiesCounted(campaignId), 'x');
  const o = { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test', now: NOW };
  try {
    await eraseAddress(client, keys, ADDRESS, SCOPE, o);
    assert.unreachable('the count was refused');
  } catch (err) {
    assert.match(String((err as Error).message), /WRONGTYPE/);
  }
  await client.del(keys.copiesCounted(campaignId));
  // Asked again, it finds the copy out of the queue already: only the owed note still says it counts.
  await eraseAddress(client, keys, ADDRESS, SCOPE, o);
  assert.is(await client.hget(keys.msgMeta(campaignId), 'pending'), '1');
  const contactNo = (await client.zrange(keys.owed('example.org'), 0, -1)).map((m) => /^c-spring:(\d+)\|cancelled\|\|0$/.exec(m)?.[1]);
  assert.is(contactNo.length, 1, 'the count is owed');
  const reaper = new Reaper({ redis: client, keys, shards: 4, intervalMs: 60_000, logger: createLogger('silent'), now: () => NOW + 2000, counts: { recordsMs: 60_000, refsMs: 60_000, graceMs: 1000 } });
  assert.is((await reaper.tick()).counted, 1);
  assert.is(await client.hget(keys.msgMeta(campaignId), 'pending'), '0');
  assert.is(await client.hget(keys.msgStats(campaignId), 'cancelled'), '1');
  assert.is(await client.zcard(keys.owed('example.org')), 0);
  // Each message's recipient was counted once, by the erasure itself: m-queued finished, its body gone.
  assert.is(await client.exists(keys.msgBody('m-queued')), 0);
  assert.is(await client.zcard(keys.owed('example.net')), 0);
});

test('a failure notice quoting the address (its failed recipient) is exported, and erased from its body; it still goes to its sender', async () => {
  const id = newId(NOW - 1000);
  await message(id, [ADDRESS, OTHER], {});
  const original = await getMessage(client, keys, id);
  // The notice the dispatcher queues when the recipient is refused, through the sender Sluice uses.
  const notice = noticeToSender(original!.meta, {
    hostname: 'sluice.test', now: NOW, idx: 0, status: '5.1.1', remoteReply: `550 5.1.1 <${ADDRESS}>: User unknown`,
    explanation: 'The recipient\'s mail server refused it.', original: await original!.body(),
  });
  assert.ok(notice);
  const config = loadConfig({ env: {}, overrides: { redis: { scheduleShards: 4 } } });
  await createNoticeSender({ redis: client, keys, config, metrics: createMetrics(), closedAccounts: new ClosedAccounts(client, keys) })(notice!);
  const body = (await client.getBuffer(keys.msgBody(notice!.id)))!.toString('latin1');
  assert.match(body, `Final-Recipient: rfc822; ${ADDRESS}`);

  const exported = await exportAddress(client, keys, ADDRESS.toUpperCase(), SCOPE) as { notices: { id: string; about: string; to: string; body: string }[] };
  assert.equal(exported.notices.map((n) => [n.id, n.about, n.to]), [[notice!.id, id, 'news@acme.test']]);
  assert.match(exported.notices[0]!.body, `Final-Recipient: rfc822; ${ADDRESS}`);
  assert.equal((await exportAddress(client, keys, OTHER, SCOPE) as { notices: unknown[] }).notices, [], 'the notice names one recipient');
  assert.equal((await exportAddress(client, keys, ADDRESS, { accounts: ['other'], all: false }) as { notices: unknown[] }).notices, [], "another account's export does not see it");

  const report = await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
  assert.is(report.notices, 1);
  const after = await dump(keys.prefix);
  assert.not.ok(after.toLowerCase().includes('ann.person'), 'no part of the address is left');
  const redacted = (await client.getBuffer(keys.msgBody(notice!.id)))!.toString('latin1');
  assert.match(redacted, `Final-Recipient: rfc822; ${ERASED_ADDRESS}`);
  assert.ok(redacted.includes(OTHER), 'the returned headers keep the other recipient');
  assert.ok((await client.zscore(keys.ready('acme.test'), `${notice!.id}:0:0`)) !== null, 'the notice is still queued to its sender');
  assert.is((await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' })).notices, 0);
});

test("an API message's spec loses the erased recipient's display name with the address; the others' stay and it still parses", async () => {
  const named = (name: string, address: string) => ({ name, address });
  for (const [id, html] of [['m-spec-html', '<p>Hi, "friend"</p>'], ['m-spec-text', undefined]] as const) {
    const spec = {
      from: named('Acme News', 'news@acme.test'), to: [named('Ann "Q" Zquux', ADDRESS), named('Bob Yarrow', OTHER)], cc: [named('Ann "Q" Zquux', ADDRESS.toUpperCase())],
      subject: 'hi', headers: {}, attachments: [], messageId: `<${id}@acme.test>`, text: 'Hello', ...(html ? { html } : {}),
    } as unknown as MessageSpec;
    await persistMessage(client, keys, 4, {
      id, account: ACCOUNT, source: 'http', kind: 'spec', from: 'news@acme.test', fromDomain: 'acme.test',
      rcpts: [ADDRESS, OTHER].map((a) => ({ address: a, domain: a.split('@')[1]!.toLowerCase() })), acceptedAt: NOW - 1000, tags: [], metadata: {}, body: encodeSpecRecord(spec),
    });
  }
  await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'hmac:test' });
  const after = await dump(keys.prefix);
  assert.not.ok(after.includes('zquux'), 'the display name went with the address');
  assert.ok(after.includes('bob yarrow') && after.includes('acme news'), "the other recipient's and the sender's names stay");
  for (const id of ['m-spec-html', 'm-spec-text']) {
    const spec = parseSpec((await client.getBuffer(keys.msgBody(id)))!);
    assert.equal(spec.to, [{ address: ERASED_ADDRESS }, named('Bob Yarrow', OTHER)], id);
    assert.equal(spec.cc, [{ address: ERASED_ADDRESS }], id);
  }
  assert.is(parseSpec((await client.getBuffer(keys.msgBody('m-spec-html')))!).html, '<p>Hi, "friend"</p>', 'the html is intact');
});

test("a message kept for its other recipient: the erased address goes from its link table (plain and %40-encoded, indexes kept) and from its body as stored, non-ASCII capitals too", async () => {
  const unicode = 'Ärger.Person@two.test';
  const link = (a: string) => `https://acme.test/prefs?email=${a}`;
  for (const [id, address] of [['m-links', ADDRESS], ['m-unicode', unicode]] as const) {
    await persistMessage(client, keys, 4, {
      id, account: ACCOUNT, source: 'smtp', kind: 'raw', from: 'news@acme.test', fromDomain: 'acme.test',
      rcpts: [address, OTHER].map((a) => ({ address: a, domain: a.split('@')[1]!.toLowerCase() })), acceptedAt: NOW - 1000, tags: [], metadata: {},
      body: `From: news@acme.test\r\nTo: ${address}, ${OTHER}\r\nSubject: hi\r\n\r\nHallo ${address}\r\n`,
      links: [link(address), link(address.replace('@', '%40').toLowerCase()), 'https://acme.test/plain'],
    });
  }
  await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
  await eraseAddress(client, keys, unicode, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
  const after = await dump(keys.prefix);
  for (const gone of ['ann.person', 'ärger']) assert.not.ok(after.includes(gone), `${gone}: nowhere`);
  assert.equal(await client.lrange(keys.links('m-links'), 0, -1), [link(ERASED_ADDRESS), link(ERASED_ADDRESS.replace('@', '%40')), 'https://acme.test/plain']);
  assert.ok((await client.get(keys.msgBody('m-unicode')))?.includes(`To: ${ERASED_ADDRESS}, ${OTHER}`), 'the other recipient stays');
});

/** What the campaign copy to the address left: its queue entry, delivery record, events and marks. */
async function copyTraces(campaignId: string, no: number): Promise<string[]> {
  const out: string[] = [];
  if ((await client.zrange(keys.campaignQueue('example.org', campaignId), 0, -1)).length > 0) out.push('queue');
  if ((await client.exists(keys.rcptState('example.org', campaignId, no))) > 0) out.push('delivery record');
  const events = await client.xrange(keys.events(), '-', '+');
  if (events.some(([, f]) => f.includes(campaignId) && f.includes(String(no)))) out.push('event');
  if ((await client.hkeys(keys.trackMarks(campaignId))).some((k) => new RegExp(`^m?[ocub]:${no}(:|$)`).test(k))) out.push('mark');
  return out;
}

for (const how of ['contact', 'list'] as const) {
  test(`campaign copies stay findable by export and erasure after their ${how === 'contact' ? 'contact was deleted from the list' : 'whole list was deleted'}`, async () => {
    const { campaignId, lists } = await populate();
    const [l1] = lists as [string];
    await client.hset(keys.msgMeta(campaignId), 'state', 'sending', 'startedAt', NOW - 1500);
    const contact = (await findContact(client, keys, l1, ADDRESS))!;
    await client.hset(keys.rcptState('example.org', campaignId, contact.no), { state: 'delivered', response: `250 ok <${ADDRESS}>` });
    assert.equal((await campaignsSentToList(client, keys, ACCOUNT, l1)).map((c) => c.id), [campaignId]);
    if (how === 'contact') {
      assert.is(await keepCopiesFindable(client, keys, ACCOUNT, l1, contact, NOW, 60_000), 1);
      assert.ok(await deleteContact(client, keys, ACCOUNT, l1, ADDRESS, NOW));
    } else {
      assert.ok(await deleteList(client, keys, ACCOUNT, l1, 60_000));
      assert.is(await client.exists(keys.listContacts(l1)), 0, "the list's contacts are gone");
      assert.ok((await client.pttl(keys.listEmails(l1))) > 0, 'its address index stays, for a while');
    }
    const e = (await exportAddress(client, keys, ADDRESS, SCOPE)) as Record<string, { id: string; kind?: string; recipientIndex?: number }[]>;
    const copy = e['messages']!.find((m) => m.id === campaignId);
    assert.equal([copy?.kind, copy?.recipientIndex], ['campaign', contact.no], 'the copy is in the export');
    assert.equal(e['unsubscribes']!.length, 1, "the copy's unsubscribe event");
    // Another account's export does not see it.
    const other = (await exportAddress(client, keys, ADDRESS, { accounts: ['beta'], all: false })) as Record<string, { id: string }[]>;
    assert.not.ok(other['messages']!.some((m) => m.id === campaignId));

    const report = await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
    assert.ok(report.queued >= 1, "the copy's queue entry");
    const after = await dump(keys.prefix);
    assert.not.ok(after.includes('ann.person'), 'no trace of the address anywhere (the kept address index included)');
    assert.equal(await copyTraces(campaignId, contact.no), [], 'nothing of the copy is left');
    const again = await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
    assert.is(again.messages + again.queued + again.events, 0, 'a second erasure finds nothing');
  });
}

for (const how of ['contact', 'list'] as const) {
  test(`a campaign copy's unsubscribe link and feedback still name the address after its ${how} was deleted`, async () => {
    const { campaignId, lists } = await populate();
    const [l1] = lists as [string];
    await client.hset(keys.msgMeta(campaignId), 'state', 'sending', 'startedAt', NOW - 1500);
    const contact = (await findContact(client, keys, l1, ADDRESS))!;
    if (how === 'contact') {
      await keepCopiesFindable(client, keys, ACCOUNT, l1, contact, NOW, 60_000);
      await deleteContact(client, keys, ACCOUNT, l1, ADDRESS, NOW);
    } else await deleteList(client, keys, ACCOUNT, l1, 60_000);
    const view = await messageFor(client, keys, campaignId, contact.no);
    // A deleted list's index holds the address normalised (lower case), as suppression matches it.
    assert.is(view?.meta.rcpts[contact.no]?.address.toLowerCase(), contact.email.toLowerCase(), 'the feedback and tracking resolver finds the address');
    assert.is(view?.meta.rcpts[contact.no]?.domain, 'example.org');
    const deps = { redis: client, keys, codec: createTokenCodec({ keys: [{ id: 'k1', secret: 'privacy-test-secret-0123456789' }], signWith: 'k1' }), logger: createLogger('silent'), now: () => NOW, settings: { mode: 'full' as const } };
    const p: TokenPayload = { kind: 'u', account: ACCOUNT, msgId: campaignId, idx: contact.no, issuedAt: Math.floor(NOW / 1000) };
    const target = await unsubscribeTarget(deps as never, p);
    assert.is(target?.address.toLowerCase(), contact.email.toLowerCase(), 'the unsubscribe page names the address');
    await client.hdel(keys.suppression(ACCOUNT), normaliseForSuppression(ADDRESS));
    const r = await unsubscribe(deps as never, p, { via: 'http' });
    assert.ok(r.ok, JSON.stringify(r));
    assert.is((await suppressionOf(client, keys, ACCOUNT, ADDRESS))?.reason, 'unsubscribe', 'suppressed for the account');
    assert.is(await findContact(client, keys, l1, ADDRESS), null, 'the deleted contact is not made again');
    // An erasure takes the kept address too.
    await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
    assert.is((await messageFor(client, keys, campaignId, contact.no))?.meta.rcpts[contact.no], undefined, 'erased: no address any more');
    assert.not.ok((await dump(keys.prefix)).includes('ann.person'));
  });
}

test('an erasure walks a webhook outbox of more batches than one page in bounded steps, and rewrites every batch that names the recipient', async () => {
  await message('m-ann', [ADDRESS]);
  await message('m-bob', [OTHER]);
  const { endpoint } = await createWebhook(client, keys, ACCOUNT, { url: 'https://hooks.acme.test/x', events: ['opened'] });
  const outbox = keys.webhookOutbox(ACCOUNT, endpoint.id);
  const ann = (n: number) => ({ id: `${NOW}-${n}`, type: 'opened', msgId: 'm-ann', idx: '0' });
  const bob = (n: number) => ({ id: `${NOW}-${n + 10_000}`, type: 'opened', msgId: 'm-bob', idx: '0' });
  const batch = (n: number, e: object[]) => JSON.stringify({ b: `b${n}`, n: 1, f: NOW, e });
  // Two and a half pages: batches of Ann's events only (they go), of both (rewritten), of Bob's only (kept).
  const count = Math.floor(OUTBOX_PAGE * 2.5);
  const expected: string[] = [];
  for (let n = 0; n < count; n++) {
    const kind = n % 3;
    await client.zadd(outbox, NOW + n, batch(n, kind === 0 ? [ann(n)] : kind === 1 ? [ann(n), bob(n)] : [bob(n)]));
    if (kind !== 0) expected.push(batch(n, [bob(n)]));
  }
  // The outbox's event count (webhooks.maxOutbox) as the dispatcher keeps it.
  const held = keys.webhookOutboxEvents(ACCOUNT, endpoint.id);
  await client.set(held, count + Math.floor((count + 1) / 3));
  let report: Awaited<ReturnType<typeof eraseAddress>> | undefined;
  const seen = await commandsOn(redis, outbox, async () => {
    report = await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
  });
  assert.equal((await client.zrange(outbox, 0, -1)).sort(), expected.sort());
  assert.is(report!.webhookBatches, count - Math.floor(count / 3));
  assert.is(Number(await client.get(held)), expected.length, 'the erased events leave the count');
  // Each read of the outbox is one bounded step: never the whole of it at once.
  const reads = seen.filter((c) => !['zrem', 'zadd', 'zscore'].includes(c[0] as string));
  assert.ok(reads.length > 1, `${reads.length} reads`);
  for (const c of reads) assert.equal([c[0], c[3], Number(c[4]) <= OUTBOX_PAGE], ['zscan', 'COUNT', true], c.join(' '));
});

test('a webhook batch delivered or put back for a retry after the erasure read it is not added again by its rewrite', async () => {
  const outbox = keys.webhookOutbox(ACCOUNT, 'ep-race');
  const ages = keys.webhookAges(ACCOUNT, 'ep-race');
  const held = keys.webhookOutboxEvents(ACCOUNT, 'ep-race');
  const read = JSON.stringify({ b: 'b1', n: 1, f: NOW, e: [{ id: `${NOW}-1`, msgId: 'm-ann', idx: '0' }, { id: `${NOW}-2`, msgId: 'm-bob', idx: '0' }] });
  const rewritten = JSON.stringify({ b: 'b1', n: 1, f: NOW, e: [{ id: `${NOW}-2`, msgId: 'm-bob', idx: '0' }] });
  // Put back for a retry meanwhile: the outbox holds it as another member now (n: 2).
  const retried = read.replace('"n":1', '"n":2');
  await client.zadd(outbox, NOW + 60_000, retried);
  await client.set(held, '2');
  assert.is(await client.rewriteBatch(outbox, ages, held, read, rewritten, 1, 'b1', NOW), 0);
  assert.equal(await client.zrange(outbox, 0, -1), [retried], 'no second copy');
  assert.is(await client.get(held), '2', 'the count unchanged');
  // As read: rewritten where it is, at its score.
  assert.is(await client.rewriteBatch(outbox, ages, held, retried, rewritten, 1, 'b1', NOW), 1);
  assert.equal(await client.zrange(outbox, 0, -1, 'WITHSCORES'), [rewritten, String(NOW + 60_000)]);
  assert.is(await client.get(held), '1');
});

test("an operator's erasure walks an unprocessed feedback index of more mail than one page in bounded steps, and finds every mail naming the address", async () => {
  const index = keys.feedbackUnprocessed();
  const count = Math.floor(UNPROCESSED_PAGE * 1.5);
  const naming = new Set<string>();
  await Promise.all(Array.from({ length: count }, (_, n) => {
    const id = `fb-${n}`;
    // Every 97th names the address, in its text or as a recipient.
    const names = n % 97 === 0;
    if (names) naming.add(id);
    const raw = Buffer.from(`Subject: undeliverable\r\n\r\nTo: ${names && n % 2 === 0 ? ADDRESS : OTHER}\r\n`);
    return storeFeedback(client, keys, { id, raw, rcpts: [names && n % 2 === 1 ? ADDRESS.toLowerCase() : 'postmaster@bounce.acme.test'], mailFrom: '', receivedAt: NOW }, 60_000);
  }));
  await client.zadd(index, ...Array.from({ length: count }, (_, n) => [NOW, `fb-${n}`]).flat());
  let report: Awaited<ReturnType<typeof eraseAddress>> | undefined;
  const seen = await commandsOn(redis, index, async () => {
    report = await eraseAddress(client, keys, ADDRESS, { accounts: [ACCOUNT], all: true }, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' });
  });
  assert.is(report!.feedback, naming.size);
  const left = new Set(await client.zrange(index, 0, -1));
  assert.is(left.size, count - naming.size);
  for (const id of naming) assert.equal([left.has(id), await client.exists(keys.feedbackRaw(id))], [false, 0], id);
  assert.is(await client.exists(keys.feedbackRaw('fb-1')), 1, 'mail naming someone else stays');
  // Each read of the index is one bounded step: never the whole of it at once.
  const reads = seen.filter((c) => c[0] !== 'zrem');
  assert.ok(reads.length > 1, `${reads.length} reads`);
  for (const c of reads) assert.equal([c[0], c[3], Number(c[4]) <= UNPROCESSED_PAGE], ['zscan', 'COUNT', true], c.join(' '));
});

test("a contact added after a campaign's snapshot of the list is not indexed for that campaign when deleted", async () => {
  const { campaignId, lists } = await populate();
  const [l1] = lists as [string];
  const contact = (await findContact(client, keys, l1, ADDRESS))!;
  // The campaign read the list up to the contact before this one.
  await client.hset(keys.msgMeta(campaignId), 'state', 'sending', 'startedAt', NOW - 1500, 'lastNo', contact.no - 1);
  assert.is(await keepCopiesFindable(client, keys, ACCOUNT, l1, contact, NOW, 60_000), 0);
  assert.is(await client.exists(keys.campaignGone(campaignId)), 0, "the campaign never mailed it: its address is not kept there");
  await client.hset(keys.msgMeta(campaignId), 'lastNo', contact.no);
  assert.is(await keepCopiesFindable(client, keys, ACCOUNT, l1, contact, NOW, 60_000), 1);
});

test("a deleted list's kept index is walked once for a number it does not hold: the miss is kept", async () => {
  const { campaignId, lists } = await populate();
  const [l1] = lists as [string];
  await client.hset(keys.msgMeta(campaignId), 'state', 'sending', 'startedAt', NOW - 1500);
  assert.ok(await deleteList(client, keys, ACCOUNT, l1, 60_000));
  assert.is((await messageFor(client, keys, campaignId, 999))?.meta.rcpts[999], undefined);
  assert.is(await client.hget(keys.campaignGone(campaignId), '999'), '', 'the miss is kept: the next request does not walk the index');
  assert.ok((await client.pttl(keys.campaignGone(campaignId))) > 0);
  assert.is((await messageFor(client, keys, campaignId, 999))?.meta.rcpts[999], undefined, 'and reads as no address');
});

test('a list no campaign began sending to is deleted whole; a contact deleted from it indexes nothing', async () => {
  const { campaignId, lists } = await populate();
  const [l1, l2] = lists as [string, string];
  // c-spring (on l1) never started; nothing was sent to l2.
  assert.equal(await campaignsSentToList(client, keys, ACCOUNT, l1), []);
  assert.equal(await campaignsSentToList(client, keys, ACCOUNT, l2), []);
  const contact = (await findContact(client, keys, l2, ADDRESS))!;
  assert.is(await keepCopiesFindable(client, keys, ACCOUNT, l2, contact, NOW, 60_000), 0);
  assert.ok(await deleteList(client, keys, ACCOUNT, l2));
  assert.is(await client.exists(keys.listEmails(l2)), 0);
  assert.ok(campaignId);
});

const DAY = 86_400_000;
/** Retention of 8 days for records and a queue age of 2: references live 10 days from their score. */
const LATE = { recordsMs: 8 * DAY, refsMs: 10 * DAY };

/** A message of `rcpts` accepted at `at`, its references living LATE.refsMs. */
async function messageAt(at: number, rcpts: string[], id = newId(at)): Promise<string> {
  await persistMessage(client, keys, 4, {
    id, account: ACCOUNT, source: 'http', kind: 'raw', from: 'news@acme.test', fromDomain: 'acme.test',
    rcpts: rcpts.map((a) => ({ address: a, domain: a.split('@')[1]!.toLowerCase() })), acceptedAt: at, tags: [], metadata: {}, body: `To: ${rcpts.join(', ')}\r\n\r\nhi\r\n`,
  }, LATE.refsMs);
  return id;
}

const ids = (e: Record<string, unknown>) => (e['messages'] as { id: string }[]).map((m) => m.id);

test('a message held long past its acceptance is found by export and erasure for as long as its record is kept after it finishes', async () => {
  // Accepted 9 days ago, held since (its account closed, or its sender paused), delivered today: its
  // record is kept 8 more days, past the 10 days its references had from its acceptance.
  const held = await messageAt(NOW - 9 * DAY, [ADDRESS, OTHER]);
  await client.xadd(keys.events(), `${NOW - 9 * DAY}-1`, 'type', 'deferred', 'msgId', held, 'idx', '0', 'account', ACCOUNT);
  const source = createMessageSource(client, keys, LATE.recordsMs, LATE.refsMs);
  await source.countCopy({ msgId: held, idx: 0 }, { counter: 'delivered' }, NOW);
  await source.finishedElsewhere(held, 0, NOW);
  // Two days on, new mail to both addresses trims their references past their lifetime.
  const later = NOW + 2 * DAY;
  const fresh = await messageAt(later, [ADDRESS, OTHER]);
  const e = await exportAddress(client, keys, ADDRESS, SCOPE, later);
  assert.equal(new Set(ids(e)), new Set([held, fresh]));
  const found = (e['messages'] as { id: string; events: { type: string }[] }[]).find((m) => m.id === held)!;
  assert.equal(found.events.map((x) => x.type), ['deferred'], 'its events from its acceptance on');
  assert.equal(new Set(ids(await exportAddress(client, keys, OTHER, SCOPE, later))), new Set([held, fresh]), "every recipient's reference");

  const report = await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: LATE.recordsMs, refsTtlMs: LATE.refsMs, ref: 'sha256:test', now: later });
  assert.is(report.messages, 2);
  assert.is(report.events, 1);
  assert.not.match(JSON.stringify(await client.hgetall(keys.msgMeta(held))), /ann\.person/i);
});

test("a deleted contact's campaign copies are found and erased after its reference went, while later deletions keep the campaign's :gone", async () => {
  const { campaignId, lists } = await populate();
  const [l1] = lists as [string];
  await upsertContacts(client, keys, ACCOUNT, l1, [{ email: 'cy@example.com', fields: {} }], NOW);
  await client.hset(keys.msgMeta(campaignId), 'state', 'sending', 'startedAt', NOW - 12 * DAY);
  const ann = (await findContact(client, keys, l1, ADDRESS))!;
  // Ann's copy: delivered, bounced later by mail (raw feedback, event), a soft bounce, her unsubscribe (populate).
  await client.hset(keys.rcptState('example.org', campaignId, ann.no), { state: 'delivered', response: `250 ok <${ADDRESS}>` });
  await storeFeedback(client, keys, { id: 'fb-c', raw: Buffer.from(`Final-Recipient: rfc822; ${ADDRESS}\r\n`), rcpts: [verpAddress(campaignId, ann.no, 'bounce.acme.test')], mailFrom: '', receivedAt: NOW }, 60_000);
  await appendEvent(client, keys, 'bounced', { account: ACCOUNT, msgId: campaignId, idx: ann.no, feedbackId: 'fb-c' }, 1000);
  await recordSoftBounce(client, keys, ADDRESS, `${campaignId}:${ann.no}`, NOW, 60_000);
  // Ann deleted 11 days ago; the others later, each renewing the campaign's :gone for 10 more days
  // (and trimming the fields deleted more than 10 days before it: none of them yet).
  const remove = async (email: string, at: number): Promise<void> => {
    const c = (await findContact(client, keys, l1, email))!;
    assert.is(await keepCopiesFindable(client, keys, ACCOUNT, l1, c, at, LATE.refsMs), 1);
    assert.ok(await deleteContact(client, keys, ACCOUNT, l1, email, at));
  };
  await remove(ADDRESS, NOW - 11 * DAY);
  await remove(OTHER, NOW - 5 * DAY);
  await remove('cy@example.com', NOW - DAY);
  // Mail to Ann today trims her "c:" reference: it lived 10 days from her deletion.
  const fresh = await messageAt(NOW, [ADDRESS]);
  const digest = await addressDigest(client, keys, ADDRESS);
  assert.not.ok((await client.zrange(keys.addressRefs(digest), 0, -1)).some((m) => m.startsWith('c:')), 'her reference is gone');
  assert.is(await client.hget(keys.campaignGone(campaignId), String(ann.no)), ann.email, 'her address is still kept in :gone');

  const e = (await exportAddress(client, keys, ADDRESS, SCOPE, NOW)) as Record<string, { id: string; recipientIndex?: number }[]>;
  assert.equal(e['messages']!.filter((m) => m.id === campaignId).map((m) => m.recipientIndex), [ann.no], 'the copy is in the export');
  assert.ok(ids(e).includes(fresh));
  assert.ok(e['feedback']!.some((f) => f.id === 'fb-c'), "the copy's raw bounce");

  const report = await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: LATE.recordsMs, refsTtlMs: LATE.refsMs, ref: 'sha256:test', now: NOW });
  assert.ok(report.queued >= 1, "the copy's queue entry");
  assert.equal(await copyTraces(campaignId, ann.no), [], 'nothing of the copy is left');
  assert.is(await client.exists(keys.feedbackRaw('fb-c')), 0, "the copy's raw bounce is erased");
  assert.not.ok((await client.zrange(keys.softBounces(digest), 0, -1)).some((m) => m.includes(campaignId)), 'its soft bounce');
  const gone = await client.hgetall(keys.campaignGone(campaignId));
  assert.not.ok(String(ann.no) in gone || `d:${digest}` in gone, 'nothing of her is left in :gone');
  assert.equal(Object.values(gone).filter((v) => v.includes('@')).sort(), ['bob@example.net', 'cy@example.com'], "the others' stay");
  assert.not.ok((await dump(keys.prefix)).includes('ann.person'), 'no trace of the address anywhere');
});

test("a deleted contact's address leaves the campaign's :gone when its lifetime ends, however often later deletions renew the key", async () => {
  const { campaignId, lists } = await populate();
  const [l1] = lists as [string];
  await client.hset(keys.msgMeta(campaignId), 'state', 'sending', 'startedAt', NOW - 12 * DAY);
  const ann = (await findContact(client, keys, l1, ADDRESS))!;
  const bob = (await findContact(client, keys, l1, OTHER))!;
  assert.is(await keepCopiesFindable(client, keys, ACCOUNT, l1, ann, NOW - 11 * DAY, LATE.refsMs), 1);
  await deleteContact(client, keys, ACCOUNT, l1, ADDRESS, NOW - 11 * DAY);
  const digest = await addressDigest(client, keys, ADDRESS);
  assert.is(await client.hget(keys.campaignGone(campaignId), `d:${digest}`), String(ann.no));
  // Bob's deletion today renews the key for 10 days; Ann's fields were due a day ago.
  assert.is(await keepCopiesFindable(client, keys, ACCOUNT, l1, bob, NOW, LATE.refsMs), 1);
  const gone = await client.hgetall(keys.campaignGone(campaignId));
  assert.equal(Object.values(gone).filter((v) => v.includes('@')), [OTHER], "only Bob's address is kept");
  assert.not.ok(`d:${digest}` in gone, "nor Ann's digest");
  assert.equal(await client.zrange(keys.campaignGoneAt(campaignId), 0, -1), [`${bob.no} ${await addressDigest(client, keys, OTHER)}`]);
  assert.ok((await client.pttl(keys.campaignGoneAt(campaignId))) > 9 * DAY, 'the times live as long as the fields');
  assert.is((await messageFor(client, keys, campaignId, bob.no))?.meta.rcpts[bob.no]?.address, OTHER, "Bob's copies still name him");
  assert.is((await messageFor(client, keys, campaignId, ann.no))?.meta.rcpts[ann.no], undefined, "Ann's no longer");
});

test('an erasure that finishes a held message keeps the other recipients\' references as long as its record', async () => {
  const held = await messageAt(NOW - 9 * DAY, [ADDRESS, OTHER]);
  // The other copy was delivered at once; this one was held until the erasure removes it today.
  await client.zrem(keys.ready('example.net'), `${held}:1:0`);
  await createMessageSource(client, keys, LATE.recordsMs, LATE.refsMs).countCopy({ msgId: held, idx: 1 }, { counter: 'delivered' }, NOW - 9 * DAY + 1000);
  const report = await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: LATE.recordsMs, refsTtlMs: LATE.refsMs, ref: 'sha256:test', now: NOW });
  assert.is(report.queued, 1);
  assert.ok((await client.pttl(keys.msgMeta(held))) > 7 * DAY, 'finished now: kept 8 days');
  const later = NOW + 2 * DAY;
  await messageAt(later, [OTHER]);
  assert.ok(ids(await exportAddress(client, keys, OTHER, SCOPE, later)).includes(held));
});

test("a message's events outlive its record: export and erasure still find them (an expired copy, a purged delivered one), and leave another account's", async () => {
  // Acme's mail to Ann: one copy expired after its retries, one delivered and opened later; beta's
  // message to her delivered. Each record is gone (retention.records), their events are kept longer.
  const [expired, opened, beta] = [newId(NOW - 6 * DAY), newId(NOW - 5 * DAY), newId(NOW - 5 * DAY)];
  // The events first: a stream's ids only grow, and acceptance appends one now.
  const ev = async (at: number, type: string, msgId: string, idx: number, account = ACCOUNT): Promise<string> =>
    (await client.xadd(keys.events(), `${at}-0`, 'type', type, 'account', account, 'msgId', msgId, 'idx', String(idx), 'domain', 'example.org'))!;
  await ev(NOW - 6 * DAY, 'deferred', expired, 0);
  await ev(NOW - 5 * DAY, 'delivered', opened, 0);
  await ev(NOW - 5 * DAY + 1, 'delivered', beta, 0, 'beta');
  const gaveUp = await ev(NOW - 4 * DAY, 'expired', expired, 0);
  await ev(NOW - 4 * DAY + 1, 'delivered', expired, 1);
  await ev(NOW - 3 * DAY, 'opened', opened, 0);
  await messageAt(NOW - 6 * DAY, [ADDRESS, OTHER], expired);
  await messageAt(NOW - 5 * DAY, [ADDRESS], opened);
  await persistMessage(client, keys, 4, {
    id: beta, account: 'beta', source: 'http', kind: 'raw', from: 'hi@beta.test', fromDomain: 'beta.test',
    rcpts: [{ address: ADDRESS, domain: 'example.org' }], acceptedAt: NOW - 5 * DAY, tags: [], metadata: {}, body: 'To: x\r\n\r\nhi\r\n',
  }, LATE.refsMs);
  for (const id of [expired, opened, beta]) await purgeMessage(client, keys, id);
  const { endpoint } = await createWebhook(client, keys, ACCOUNT, { url: 'https://hooks.acme.test/x', events: ['expired'] });
  const dead = keys.webhookDead(ACCOUNT, endpoint.id);
  // Oldest first: the first batch names Ann and Bob, and keeps its place once Ann's event is out of it.
  const bobs = { id: `${NOW - 4 * DAY + 2}-0`, type: 'expired', msgId: expired, idx: '1' };
  await client.rpush(dead, JSON.stringify({ b: 'x', n: 1, f: NOW, e: [{ id: gaveUp, type: 'expired', msgId: expired, idx: '0' }, bobs] }));
  await client.rpush(dead, JSON.stringify({ b: 'y', n: 1, f: NOW, e: [{ id: `${NOW - DAY}-0`, type: 'expired', msgId: 'other', idx: '0' }] }));
  await client.rpush(dead, JSON.stringify({ b: 'z', n: 1, f: NOW, e: [{ id: gaveUp, type: 'expired', msgId: expired, idx: '0' }] }));

  const e = (await exportAddress(client, keys, ADDRESS, SCOPE)) as Record<string, { id?: string; type?: string; msgId?: string; events?: unknown[] }[]>;
  assert.equal(new Set(e['messages']!.map((m) => m.id)), new Set([expired, opened]), "acme's copies, not beta's");
  assert.equal(e['bounces']!.map((b) => b.type), ['deferred', 'expired']);
  assert.equal(e['opens']!.map((o) => o.msgId), [opened]);
  assert.not.match(JSON.stringify(e), beta);

  const report = await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: LATE.recordsMs, refsTtlMs: LATE.refsMs, ref: 'sha256:test', now: NOW });
  assert.is(report.events, 4);
  assert.is(report.webhookBatches, 2);
  const left = (await client.xrange(keys.events(), '-', '+')).map(([, f]) => `${f[1]} ${f[5]}:${f[7]}`);
  assert.equal(left.filter((l) => !l.startsWith('erased')), [`delivered ${beta}:0`, `delivered ${expired}:1`], "beta's event and Bob's stay");
  const batches = (await client.lrange(dead, 0, -1)).map((b) => JSON.parse(b) as { b: string; e: unknown[] });
  assert.equal(batches.map((b) => b.b), ['x', 'y'], 'rewritten in place (retention trims from the head), the batch left empty gone');
  assert.equal(batches[0]?.e, [bobs]);
  // Beta's reference stays for beta's own erasure, which finds its event.
  assert.is((await eraseAddress(client, keys, ADDRESS, { accounts: ['beta'], all: false }, { eventsMaxLen: 1000, recordTtlMs: LATE.recordsMs, refsTtlMs: LATE.refsMs, ref: 'sha256:test', now: NOW })).events, 1);
});

test('an erasure finds a dead letter naming its recipient while the list is trimmed at its head and appended to meanwhile', async () => {
  const id = newId(NOW - 1000);
  await message(id, [ADDRESS]);
  const { endpoint } = await createWebhook(client, keys, ACCOUNT, { url: 'https://hooks.acme.test/x', events: ['delivered'] });
  const dead = keys.webhookDead(ACCOUNT, endpoint.id);
  const other = (b: string) => JSON.stringify({ b, n: 1, f: NOW, e: [{ id: `${NOW - 5000}-0`, type: 'delivered', msgId: 'someone-else', idx: '0' }] });
  const ann = JSON.stringify({ b: 'ANN', n: 1, f: NOW, e: [{ id: `${NOW - 900}-0`, type: 'delivered', msgId: id, idx: '0' }] });
  for (let i = 0; i < 250; i++) await client.rpush(dead, i === 150 ? ann : other(`old${i}`));
  // Between the walk's first and second page: 100 batches trimmed from the head (retention, a
  // replay, the cap), 100 new dead letters appended. Walked forward by index, the batch naming Ann
  // moved from 150 to 50, behind the walk, and the length told nothing.
  let reads = 0;
  const busy = new Proxy(client, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown;
      if (prop === 'lrange') {
        return async (...args: [string, number, number]) => {
          if (args[0] === dead && ++reads === 2) {
            await target.ltrim(dead, 100, -1);
            for (let i = 0; i < 100; i++) await target.rpush(dead, other(`new${i}`));
          }
          return target.lrange(...args);
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  const report = await eraseAddress(busy, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: 86_400_000, refsTtlMs: 86_400_000, ref: 'sha256:test', now: NOW });
  assert.is(report.webhookBatches, 1);
  assert.equal((await client.lrange(dead, 0, -1)).filter((m) => m.includes(id)), [], 'no dead letter names the erased copy');
  assert.is(await client.llen(dead), 249, 'the rest kept: 250 - 100 trimmed + 100 appended - the emptied one');
});

test("a deleted contact's copies record no open or click of them any more, as an erased recipient's do; the other contacts' still count", async () => {
  const { campaignId, lists } = await populate();
  const [l1] = lists as [string];
  await client.hset(keys.msgMeta(campaignId), 'state', 'sending', 'startedAt', NOW - DAY);
  const ann = (await findContact(client, keys, l1, ADDRESS))!;
  const bob = (await findContact(client, keys, l1, OTHER))!;
  // As DELETE /v1/lists/:id/contacts/:email does (ingress/list-routes.ts).
  await keepCopiesFindable(client, keys, ACCOUNT, l1, ann, NOW, LATE.refsMs);
  await deleteContact(client, keys, ACCOUNT, l1, ADDRESS, NOW);
  const [marks, links, stats, meta] = [keys.trackMarks(campaignId), keys.links(campaignId), keys.msgStats(campaignId), keys.msgMeta(campaignId)];
  const opens = await client.recordTrackingOpens(marks, stats, meta, 60_000, JSON.stringify([[1, '', String(ann.no), NOW], [1, '', String(bob.no), NOW]]));
  assert.equal(opens, [-1, 1], "Ann's open writes nothing (its caller appends no event); Bob's is his first");
  const click = await client.recordTrackingEvent(marks, links, stats, meta, 'c', ann.no, 0, NOW, 2000, 60_000, '', 3);
  assert.equal([click[2], click[4]], ['https://acme.test/a', 1], 'the link still redirects, as erased');
  assert.equal(Object.keys(await client.hgetall(marks)).filter((f) => f.endsWith(`:${ann.no}`) && !f.startsWith('u:')), [`x:${ann.no}`], 'no mark of her but the block');
  assert.is(await client.hget(stats, 'opens_human'), '1', "only Bob's open counts");
  // Her unsubscribe link still works (the :gone field names her), so she can still opt out.
  assert.is((await messageFor(client, keys, campaignId, ann.no))?.meta.rcpts[ann.no]?.address, ann.email);
});

test("an unsubscribe after the message's record and its reference are gone is found by export and erased: its suppression's evidence names the copy", async () => {
  // Accepted 20 days ago: its record went at 8 days, the address's reference at 10; a message to the
  // address today trims it. The link carries the address (core/tokens.ts), so it still unsubscribes.
  const old = await messageAt(NOW - 20 * DAY, [ADDRESS]);
  await purgeMessage(client, keys, old);
  await messageAt(NOW, [ADDRESS]);
  const digest = await addressDigest(client, keys, ADDRESS);
  assert.not.ok((await client.zrange(keys.addressRefs(digest), 0, -1)).some((m) => m.includes(old)), 'its reference is gone');
  const deps = { redis: client, keys, codec: createTokenCodec({ keys: [{ id: 'k1', secret: 'privacy-test-secret-0123456789' }], signWith: 'k1' }), logger: createLogger('silent'), now: () => NOW, settings: { mode: 'full' as const } };
  const p: TokenPayload = { kind: 'u', account: ACCOUNT, msgId: old, idx: 0, issuedAt: Math.floor(NOW / 1000), address: ADDRESS };
  const r = await unsubscribe(deps as never, p, { via: 'http', userAgent: 'Mail', ip: '192.0.2.7' });
  assert.ok(r.ok, JSON.stringify(r));

  const e = (await exportAddress(client, keys, ADDRESS, SCOPE, NOW)) as Record<string, { msgId?: string; ip?: string }[]>;
  assert.equal(e['unsubscribes']!.map((u) => u.msgId), [old], 'the unsubscribe event is in the export');
  const report = await eraseAddress(client, keys, ADDRESS, SCOPE, { eventsMaxLen: 1000, recordTtlMs: LATE.recordsMs, refsTtlMs: LATE.refsMs, ref: 'sha256:test', now: NOW });
  assert.is(report.events, 1, 'the unsubscribe');
  assert.not.ok(JSON.stringify(await client.xrange(keys.events(), '-', '+')).includes(old), 'no event names the old copy');
  assert.is((await suppressionOf(client, keys, ACCOUNT, ADDRESS))?.reason, 'unsubscribe', 'still suppressed by digest');
});

test('an unsubscribe whose event an erasure drops is not counted as an event written; its suppression is', async () => {
  const id = await messageAt(NOW, [ADDRESS]);
  const m = createMetrics();
  const metrics = { events: m.trackingEvents, suppressed: m.suppressionsAdded };
  const deps = { redis: client, keys, codec: createTokenCodec({ keys: [{ id: 'k1', secret: 'privacy-test-secret-0123456789' }], signWith: 'k1' }), logger: createLogger('silent'), now: () => NOW, settings: { mode: 'full' as const }, metrics };
  const p: TokenPayload = { kind: 'u', account: ACCOUNT, msgId: id, idx: 0, issuedAt: Math.floor(NOW / 1000) };
  // An erasure of the address has begun (it lists the copy before it walks the stream) after the
  // unsubscribe found the recipient still there.
  const target = await unsubscribeTarget(deps as never, p);
  await client.zadd(keys.eventsErased(), NOW, `${id}:0`);
  const r = await unsubscribe(deps as never, p, { via: 'http', target: target! });
  assert.ok(r.ok && r.eventId === '', JSON.stringify(r));
  const text = await m.registry.metrics();
  assert.not.ok(/sluice_tracking_events_total\{[^}]*type="unsubscribed"/.test(text), 'no unsubscribed event counted');
  assert.match(text, /sluice_suppressions_added_total\{list="account",reason="unsubscribe"\} 1/);
  await client.del(keys.eventsErased());
});

test("an unsubscribe's or bounce's second write (its event's id as evidence) after an erasure does not put the address back", async () => {
  await populate();
  const opts = { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' };
  await eraseAddress(client, keys, ADDRESS, SCOPE, opts);
  const entry = { reason: 'unsubscribe' as const, at: NOW, evidence: { event: '1-1', msgId: 'm-delivered', idx: 0 } };
  assert.is(await attachEvidence(client, keys, ACCOUNT, ADDRESS, entry), false, 'not on the list any more: nothing written');
  assert.not.ok((await dump(keys.prefix)).includes(ADDRESS.toLowerCase()), 'the address is still gone');
  assert.is((await suppressionOf(client, keys, ACCOUNT, ADDRESS))?.reason, 'unsubscribe', 'its digest still suppresses it');
  // While listed, the evidence is written.
  await addSuppression(client, keys, ACCOUNT, OTHER, { reason: 'unsubscribe', at: NOW, evidence: {} });
  assert.is(await attachEvidence(client, keys, ACCOUNT, OTHER, { ...entry, evidence: { event: '2-2' } }), true);
  assert.equal((await suppressionOf(client, keys, ACCOUNT, OTHER))?.evidence, { event: '2-2' });
});

test('an event decided before the erasure and appended after its walk is dropped: held clicks checked for erased marks just before it', async () => {
  await populate();
  const opts = { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'sha256:test' };
  // The tracking batch's client is the real one, but its stream append waits for a whole erasure
  // first: the held clicks passed their erased-mark check (erasedOf), then the erasure walked the
  // stream, then they come. The race the recorder thread can lose when it is descheduled there.
  // The two clicks are held 20 ms each from their own arrival, so a slow machine may release them in
  // two batches (two appends): Ann's, held first, is then in the first, the one the erasure races.
  let erasures = 0;
  const appended: string[] = [];
  const racing = new Proxy(client, {
    get(target, prop) {
      if (prop === 'appendEvents') {
        return async (...args: Parameters<RedisClient['appendEvents']>) => {
          appended.push(String(args[3]));
          if (erasures++ === 0) await eraseAddress(client, keys, ADDRESS, SCOPE, opts);
          return target.appendEvents(...args);
        };
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  const batch = createEventBatch({ redis: racing, keys, logger: createLogger('silent'), metrics: undefined }, {
    maxPending: 100, modeOf: () => 'full', verifyOpen: () => null, clickHoldMs: 20,
  });
  const click = (msgId: string, idx: number) => batch.event(
    { kind: 'c', account: ACCOUNT, msgId, idx, link: 0, issuedAt: Math.floor(NOW / 1000) - 3600 },
    { now: Date.now(), mode: 'full', first: true, machine: null, userAgent: 'Mail', ip: '192.0.2.1' },
  );
  click('m-delivered', 0); // Ann's
  click('m-deferred', 1); // Bob's
  await batch.idle();
  assert.ok(erasures >= 1 && (appended[0] ?? '').includes('m-delivered'), 'the erasure ran between the check of her click and its append');
  const clicks = (await client.xrange(keys.events(), '-', '+')).map(([, f]) => f).filter((f) => f[1] === 'clicked');
  assert.equal(clicks.map((f) => `${f[f.indexOf('msgId') + 1]}:${f[f.indexOf('idx') + 1]}`), ['m-deferred:1'], "Bob's click is written, Ann's is not");

  // Any later append naming her copies (a delivery outcome, another process's batch) is dropped too,
  // in order with the others; the set holds pairs only, no address.
  const n = await appendEventBatch(client, keys, 1000, [
    packEvent('delivered', { account: ACCOUNT, msgId: 'm-queued', idx: 0 }),
    packEvent('opened', { account: ACCOUNT, msgId: 'm-deferred', idx: 1 }),
    packEvent('delivered', { account: ACCOUNT, msgId: 'm-queued', idx: 1 }),
  ]);
  assert.is(n, 2);
  const last = (await client.xrange(keys.events(), '-', '+')).slice(-2).map(([, f]) => `${f[1]} ${f[f.indexOf('msgId') + 1]}:${f[f.indexOf('idx') + 1]}`);
  assert.equal(last, ['opened m-deferred:1', 'delivered m-queued:1']);
  // A single append about her copy (an unsubscribe, a bounce being processed meanwhile) too: no id.
  assert.is(await appendEvent(client, keys, 'bounced', { account: ACCOUNT, msgId: 'm-bounced', idx: 0, reason: 'userunknown' }, 1000), '');
  assert.match(await appendEvent(client, keys, 'bounced', { account: ACCOUNT, msgId: 'm-deferred', idx: 1, reason: 'userunknown' }, 1000), /^\d+-\d+$/);
  assert.equal((await client.xrange(keys.events(), '-', '+')).filter(([, f]) => f[1] === 'bounced').map(([, f]) => f[f.indexOf('msgId') + 1]), ['m-deferred']);
  const guarded = await client.zrange(keys.eventsErased(), 0, -1);
  assert.ok(guarded.includes('m-queued:0') && guarded.includes('m-delivered:0'), guarded.join(','));
  assert.not.ok(guarded.join(' ').toLowerCase().includes('ann'));
  assert.ok((await client.pttl(keys.eventsErased())) > EVENTS_GUARD_MS - 60_000, 'the set goes by itself an hour after the last erasure');

  // An erasure more than an hour later drops the old pairs from the set as it adds its own.
  await message('m-later', [OTHER]);
  await eraseAddress(client, keys, OTHER, SCOPE, { ...opts, now: Date.now() + EVENTS_GUARD_MS + 1000 });
  const after = await client.zrange(keys.eventsErased(), 0, -1);
  assert.ok(after.includes('m-later:0'), after.join(','));
  assert.not.ok(after.includes('m-delivered:0'), after.join(','));
});

test.run();
