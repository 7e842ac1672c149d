import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';
import { pino } from 'pino';
import { keyspaceText, startRedis, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { newId } from '../../src/core/ids.js';
import { verpAddress } from '../../src/core/verp.js';
import { createCampaign, campaignStats, getCampaign, recordCampaignOutcome } from '../../src/store/campaigns.js';
import { createList, findContact, upsertContacts } from '../../src/store/contacts.js';
import { suppressionOf } from '../../src/store/suppression.js';
import { resumeCampaign, startCampaign } from '../../src/queue/campaign.js';
import { ReputationGuard } from '../../src/feedback/reputation.js';
import { BUCKET_MS, readFigures } from '../../src/store/reputation.js';
import { startInboundMx, type InboundMx } from '../../src/feedback/inbound-mx.js';
import { CORPUS_EMAILS } from '../helpers/corpus.js';
import { awayFromHourBoundary } from '../helpers/clock.js';
import { eraseAddress } from '../../src/store/privacy.js';
import { listUnprocessed, loadFeedback } from '../../src/feedback/raw-store.js';

/**
 * Feedback about campaign copies, through the real inbound MX: a complaint or a hard bounce names a
 * campaign recipient by VERP (campaign id, contact number); the contact's status changes, the
 * campaign counts it, and the reputation guard pauses the campaign when its own rate crosses the
 * threshold — with an event that says why.
 */
const test = suite('feedback/campaign');
const CORPUS = CORPUS_EMAILS;
const corpus = (name: string) => readFileSync(new URL(name, CORPUS));
const BOUNCE_DOMAIN = 'bounce.test';
const FBL = 'fbl@feedback.test';

const ctx = {} as { redis: TestRedis; client: RedisClient; keys: Keys; mx: InboundMx; guard: ReputationGuard };

test.before(async () => {
  ctx.redis = await startRedis();
  ctx.client = ctx.redis.client();
  ctx.keys = ctx.redis.fresh().keys;
  ctx.guard = new ReputationGuard({ redis: ctx.client, keys: ctx.keys, eventsMaxLen: 10_000, shards: 4 }, { minVolume: 20, complaintRate: 0.003, hardBounceRate: 0.05, checkCacheMs: 0 });
  ctx.mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger: pino({ level: 'silent' }), reputation: ctx.guard },
    { host: '127.0.0.1', port: 0, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: 1024 * 1024, rawRetentionMs: 3_600_000, softBounceLimit: 3, softBounceWindowMs: 86_400_000 },
  );
});

test.after(async () => {
  await ctx.mx.close();
  await ctx.redis.stop();
});

async function send(raw: Buffer, to: string): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: ctx.mx.port, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail({ envelope: { from: '', to: [to] }, raw });
    await ctx.mx.idle();
  } finally {
    transport.close();
  }
}

/** A campaign to `n` contacts that has delivered to all of them. */
async function sentCampaign(account: string, n: number): Promise<{ id: string; listId: string }> {
  const { client, keys } = ctx;
  const list = await createList(client, keys, account, `list ${newId()}`);
  await upsertContacts(client, keys, account, list.id, Array.from({ length: n }, (_, i) => ({ email: `c${i + 1}@dest.test`, fields: {} })), Date.now());
  const id = newId();
  await createCampaign(client, keys, {
    id, account, name: 'c', listId: list.id, from: 'news@sender.test', fromDomain: 'sender.test', subject: 's',
    tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: Date.now(), sendAt: Date.now(), body: '{}', links: [],
  });
  assert.ok((await startCampaign(client, keys, id, Date.now())).ok);
  for (let i = 0; i < n; i++) await recordCampaignOutcome(client, keys, id, { counter: 'delivered', final: false, now: Date.now() });
  return { id, listId: list.id };
}

async function eventsOf(type: string, campaign: string): Promise<Record<string, string>[]> {
  const entries = await ctx.client.xrange(ctx.keys.events(), '-', '+');
  return entries
    .map(([, flat]) => {
      const o: Record<string, string> = {};
      for (let i = 0; i + 1 < flat.length; i += 2) o[flat[i] as string] = flat[i + 1] as string;
      return o;
    })
    .filter((e) => e['type'] === type && (e['campaign'] === campaign || e['msgId'] === campaign));
}

test('an ARF complaint about a campaign copy: suppressed for that account, contact complained, counted, campaign paused past 0.3 %', async () => {
  const { id, listId } = await sentCampaign('acme', 40);
  await send(corpus('arf-14.eml'), verpAddress(id, 3, BOUNCE_DOMAIN));

  const s = await suppressionOf(ctx.client, ctx.keys, 'acme', 'c3@dest.test');
  assert.is(s?.reason, 'complaint');
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'other', 'c3@dest.test'), null, 'another account may still mail them');
  assert.is((await findContact(ctx.client, ctx.keys, listId, 'c3@dest.test'))?.status, 'complained');
  assert.is((await findContact(ctx.client, ctx.keys, listId, 'c4@dest.test'))?.status, 'subscribed');

  const c = await getCampaign(ctx.client, ctx.keys, 'acme', id);
  assert.ok(c);
  assert.is((await campaignStats(ctx.client, ctx.keys, c)).complaints, 1);
  // 1 complaint / 40 delivered = 2.5 % > 0.3 %, over the minimum volume of 20
  assert.is(c.state, 'paused');
  assert.is(c.guardPause?.reason, 'complaints');
  assert.is(c.guardPause?.complaints, 1);
  const [ev] = await eventsOf('campaign_paused', id);
  assert.is(ev?.['reason'], 'complaints');
  assert.is(ev?.['delivered'], '40');
  assert.is(ev?.['account'], 'acme');

  // Resumed, it is judged on what it sends from then on: the old complaint does not pause it again.
  assert.ok((await resumeCampaign(ctx.client, ctx.keys, 4, id, Date.now())).ok);
  assert.is(await ctx.guard.judgeCampaign(id), null);
  assert.is((await getCampaign(ctx.client, ctx.keys, 'acme', id))?.state, 'sending');
});

test('below the minimum volume a complaint is counted but pauses nothing', async () => {
  const { id } = await sentCampaign('shop', 10);
  await send(corpus('arf-14.eml'), verpAddress(id, 2, BOUNCE_DOMAIN));
  const c = await getCampaign(ctx.client, ctx.keys, 'shop', id);
  assert.is(c?.state, 'sending');
  assert.is(c && (await campaignStats(ctx.client, ctx.keys, c)).complaints, 1);
});

test('a hard bounce by mail about a campaign copy: globally suppressed, contact bounced, counted with its reason', async () => {
  const { id, listId } = await sentCampaign('acme', 100);
  await send(corpus('lhost-postfix-05.eml'), verpAddress(id, 7, BOUNCE_DOMAIN));
  assert.is((await findContact(ctx.client, ctx.keys, listId, 'c7@dest.test'))?.status, 'bounced');
  const c = await getCampaign(ctx.client, ctx.keys, 'acme', id);
  assert.ok(c);
  const st = await campaignStats(ctx.client, ctx.keys, c);
  assert.is(st.hardbounces, 1);
  assert.is(st.bounced, 1);
  assert.is(Object.values(st.bouncedByReason).reduce((a, b) => a + b, 0), 1);
  assert.is(c.state, 'sending', '1 % hard bounces is under the 5 % threshold');
});

test("a hard bounce by mail of a copy recorded delivered takes its delivery back (campaign and sender figures); one of a copy never delivered takes nothing", async () => {
  // The sender's figures and the raw counter are per hour: the deliveries and the bounces that take
  // them back must fall in one bucket (30 s of margin for a slow machine).
  await awayFromHourBoundary(30_000);
  const { id } = await sentCampaign('undo', 28);
  // The delivery records the dispatcher's ack wrote: copies 1-3 were delivered; copy 4 is still deferred.
  for (const no of [1, 2, 3]) await ctx.client.hset(ctx.keys.rcptState('dest.test', id, no), 'state', 'delivered');
  await ctx.client.hset(ctx.keys.rcptState('dest.test', id, 4), 'state', 'deferred');
  const figures = async () => (await readFigures(ctx.client, ctx.keys, 'undo', ['*'], Date.now(), 24)).get('*');
  await ctx.guard.record({ account: 'undo', domain: null, kind: 'delivered' });
  await ctx.guard.record({ account: 'undo', domain: null, kind: 'delivered' });
  await ctx.guard.record({ account: 'undo', domain: null, kind: 'delivered' });
  for (const no of [1, 2, 3]) await send(corpus('lhost-postfix-05.eml'), verpAddress(id, no, BOUNCE_DOMAIN));
  let c = await getCampaign(ctx.client, ctx.keys, 'undo', id);
  assert.ok(c);
  let st = await campaignStats(ctx.client, ctx.keys, c);
  assert.equal([st.delivered, st.bounced, st.hardbounces], [25, 3, 3], 'delivered + bounced = the 28 copies that reached a server');
  assert.equal([(await figures())?.delivered, (await figures())?.hardbounces], [0, 3], "the sender's figures as well");
  await send(corpus('lhost-postfix-05.eml'), verpAddress(id, 4, BOUNCE_DOMAIN));
  c = await getCampaign(ctx.client, ctx.keys, 'undo', id);
  assert.ok(c);
  st = await campaignStats(ctx.client, ctx.keys, c);
  assert.equal([st.delivered, st.bounced, st.hardbounces], [25, 4, 4], 'a copy never delivered: a bounce, no delivery taken back');
  assert.equal([(await figures())?.delivered, (await figures())?.hardbounces], [0, 4]);
  assert.is(Number(await ctx.client.hget(ctx.keys.reputation('undo', Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS), '*|delivered')), 0, 'the raw counter never goes below the deliveries counted');
});

test('the same report twice about one copy counts once: one recipient cannot pause a campaign by repeating it', async () => {
  // 1 complaint / 400 delivered = 0.25 %, under 0.3 %: a second copy of the same complaint (a
  // provider's duplicate, or a recipient mailing their own VERP again) must not make it 0.5 %.
  const { id } = await sentCampaign('dup', 400);
  for (let i = 0; i < 3; i++) await send(corpus('arf-14.eml'), verpAddress(id, 5, BOUNCE_DOMAIN));
  let c = await getCampaign(ctx.client, ctx.keys, 'dup', id);
  assert.ok(c);
  assert.is((await campaignStats(ctx.client, ctx.keys, c)).complaints, 1);
  assert.is(c.state, 'sending');
  assert.is((await eventsOf('complained', id)).length, 3, 'each report is still an event');
  // A hard bounce reported twice (a relay retrying its DSN) is one hard bounce too.
  await send(corpus('lhost-postfix-05.eml'), verpAddress(id, 9, BOUNCE_DOMAIN));
  await send(corpus('lhost-postfix-05.eml'), verpAddress(id, 9, BOUNCE_DOMAIN));
  c = await getCampaign(ctx.client, ctx.keys, 'dup', id);
  assert.ok(c);
  const st = await campaignStats(ctx.client, ctx.keys, c);
  assert.equal([st.hardbounces, st.bounced], [1, 1]);
  const f = (await readFigures(ctx.client, ctx.keys, 'dup', ['*'], Date.now(), 24)).get('*');
  assert.equal([f?.complaints, f?.hardbounces], [1, 1], "the account's reputation figures count each copy once");
});

test("a complaint whose reputation count Redis refused fails the mail's processing, and its retry makes that count (once): the campaign's count is not made again", async () => {
  // The guard writes to a second real Redis, whose writes are refused at first (as one master of a
  // cluster refusing writes while the campaign's own answers): the count was logged and lost before.
  const other = await startRedis();
  const otherClient = other.client();
  const otherKeys = other.fresh().keys;
  const guard = new ReputationGuard({ redis: otherClient, keys: otherKeys, eventsMaxLen: 10_000, shards: 4 }, { minVolume: 20, checkCacheMs: 0, deliveredFlushMs: 0 });
  const mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger: pino({ level: 'silent' }), reputation: guard },
    { host: '127.0.0.1', port: 0, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: 1024 * 1024, rawRetentionMs: 3_600_000, retryBaseMs: 50, pendingIntervalMs: 50 },
  );
  try {
    const { id } = await sentCampaign('refused', 400);
    await otherClient.config('SET', 'min-replicas-to-write', '1');
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: mx.port, secure: false, ignoreTLS: true });
    const info = await transport.sendMail({ envelope: { from: '', to: [verpAddress(id, 5, BOUNCE_DOMAIN)] }, raw: corpus('arf-14.eml') });
    transport.close();
    await mx.idle();
    const fid = /stored as (\S+)/.exec(info.response)?.[1] as string;
    assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'failed');
    const complaints = async () => (await campaignStats(ctx.client, ctx.keys, (await getCampaign(ctx.client, ctx.keys, 'refused', id))!)).complaints;
    assert.is(await complaints(), 1, "the campaign's count was made");
    await otherClient.config('SET', 'min-replicas-to-write', '0');
    for (let i = 0; i < 200 && (await loadFeedback(ctx.client, ctx.keys, fid))?.outcome !== 'processed'; i++) await new Promise((r) => setTimeout(r, 25));
    await mx.idle();
    assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'processed');
    const figures = async () => (await readFigures(otherClient, otherKeys, 'refused', ['*'], Date.now(), 24)).get('*')?.complaints;
    assert.is(await figures(), 1, 'the reputation count made by the retry');
    assert.is(await complaints(), 1, "the campaign's not made twice");
    // Another report of the copy counts nothing more.
    await send(corpus('arf-14.eml'), verpAddress(id, 5, BOUNCE_DOMAIN));
    assert.equal([await complaints(), await figures()], [1, 1]);
  } finally {
    await otherClient.config('SET', 'min-replicas-to-write', '0').catch(() => undefined);
    await mx.close();
    await other.stop();
  }
});

test('an FBL complaint quoting the VERP of a contact numbered past a million finds that contact', async () => {
  // A list's numbers only grow: a big list's contacts are numbered in 7 digits (the VERP takes 9).
  const { client, keys } = ctx;
  const list = await createList(client, keys, 'big', `list ${newId()}`);
  await client.hset(keys.listMeta(list.id), 'nextNo', 1_234_567);
  await upsertContacts(client, keys, 'big', list.id, [{ email: 'million@dest.test', fields: {} }], Date.now());
  assert.is((await findContact(client, keys, list.id, 'million@dest.test'))?.no, 1_234_567);
  const id = newId();
  await createCampaign(client, keys, {
    id, account: 'big', name: 'c', listId: list.id, from: 'news@sender.test', fromDomain: 'sender.test', subject: 's',
    tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: Date.now(), sendAt: Date.now(), body: '{}', links: [],
  });
  assert.ok((await startCampaign(client, keys, id, Date.now())).ok);
  const raw = corpus('arf-14.eml').toString('latin1')
    .replace('Return-Path: <222222222222eeee-00000000-2222-ffff-1111-333333332222-ffffff@amazonses.com>', `Return-Path: <${verpAddress(id, 1_234_567, BOUNCE_DOMAIN)}>`);
  await send(Buffer.from(raw, 'latin1'), FBL);
  assert.is((await suppressionOf(client, keys, 'big', 'million@dest.test'))?.reason, 'complaint');
  assert.is((await findContact(client, keys, list.id, 'million@dest.test'))?.status, 'complained');
});

test("a DSN about an erased contact's campaign copy is dropped, as an erased message recipient's is: the campaign's x:<no> mark says so", async () => {
  const { client, keys } = ctx;
  const list = await createList(client, keys, 'acme', `list ${newId()}`);
  await upsertContacts(client, keys, 'acme', list.id, [{ email: 'erased.contact@dest.test', fields: {} }, { email: 'kept.contact@dest.test', fields: {} }], Date.now());
  const id = newId();
  await createCampaign(client, keys, {
    id, account: 'acme', name: 'c', listId: list.id, from: 'news@sender.test', fromDomain: 'sender.test', subject: 's',
    tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: Date.now(), sendAt: Date.now(), body: '{}', links: [],
  });
  assert.ok((await startCampaign(client, keys, id, Date.now())).ok);
  await eraseAddress(client, keys, 'erased.contact@dest.test', { accounts: ['acme'], all: false }, { eventsMaxLen: 1000, recordTtlMs: 3_600_000, refsTtlMs: 3_600_000, ref: 'hmac:test' });
  const dsn = (no: number, address: string) => Buffer.from(corpus('lhost-postfix-05.eml').toString('latin1').replaceAll('kijitora@example.org', address).replaceAll('shironeko@example.co.jp', verpAddress(id, no, BOUNCE_DOMAIN)), 'latin1');
  const listed = (await listUnprocessed(client, keys, 10_000)).length;
  await send(dsn(1, 'erased.contact@dest.test'), verpAddress(id, 1, BOUNCE_DOMAIN));
  assert.is((await listUnprocessed(client, keys, 10_000)).length, listed, 'not kept as unmatched');
  assert.not.ok((await keyspaceText(client, keys.prefix)).includes('erased.contact'), 'the address is in no key or value');
  // The other contact's copy: acted on as before.
  await send(dsn(2, 'kept.contact@dest.test'), verpAddress(id, 2, BOUNCE_DOMAIN));
  assert.is((await findContact(client, keys, list.id, 'kept.contact@dest.test'))?.status, 'bounced');
});

test.run();
