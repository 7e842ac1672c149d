/**
 * Feedback about a message whose record is gone, against a real Redis and the real inbound MX: a
 * message erased whole (every recipient erased) or deleted with its account leaves a tombstone
 * (store/tombstone.ts), so a DSN or ARF report that comes later for it is dropped like mail about an
 * erased recipient, instead of being kept as unmatched mail carrying the person's address past their
 * erasure. A record removed at the end of its life leaves none: mail about it is unmatched as before.
 * The DSN is the corpus's Postfix bounce (lhost-postfix-05.eml) adapted to the copy: its recipient,
 * its VERP return path and its Message-ID.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';
import { pino } from 'pino';
import { keyspaceText, startCluster, startRedis, type TestRedis } from '../helpers/redis.js';
import { CORPUS_EMAILS } from '../helpers/corpus.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { newId } from '../../src/core/ids.js';
import { DAY, HOUR } from '../../src/core/time.js';
import { verpAddress } from '../../src/core/verp.js';
import { persistMessage } from '../../src/ingress/persist.js';
import { storeMessage } from '../../src/store/messages.js';
import { eraseAddress } from '../../src/store/privacy.js';
import { closeAccount } from '../../src/store/account-state.js';
import { GLOBAL_LIST, suppressionOf } from '../../src/store/suppression.js';
import { startInboundMx, type InboundMx } from '../../src/feedback/inbound-mx.js';
import { unsubscribeAddress } from '../../src/feedback/recipients.js';
import { listUnprocessed, loadFeedback, recordOutcome, storeFeedback } from '../../src/feedback/raw-store.js';
import { dropFeedback } from '../../src/store/feedback-stored.js';
import { purgeMessage } from '../../src/store/retention.js';
import { tombstoneOf } from '../../src/store/tombstone.js';
import { appendEvent } from '../../src/store/events.js';
import { RetentionJob } from '../../src/housekeeping/retention.js';
import { createLogger } from '../../src/observability/logger.js';

const test = suite('feedback/tombstone');
const BOUNCE_DOMAIN = 'bounce.test';
const FBL = 'fbl@feedback.test';

const ctx = {} as { redis: TestRedis; client: RedisClient; keys: Keys; mx: InboundMx; outcomes: Map<string, number> };

test.before(async () => {
  ctx.redis = await startRedis();
  ctx.client = ctx.redis.client();
});
test.before.each(async () => {
  ctx.keys = ctx.redis.fresh().keys;
  ctx.outcomes = new Map();
  ctx.mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger: pino({ level: 'silent' }), metrics: { outcome: (o) => ctx.outcomes.set(o, (ctx.outcomes.get(o) ?? 0) + 1) } },
    {
      host: '127.0.0.1', port: 0, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: 256 * 1024, rawRetentionMs: 30 * DAY,
      softBounceLimit: 5, softBounceWindowMs: DAY,
      // A stand-in for tracking's signed tokens: "ok.<msgId>.<idx>" is valid, anything else forged.
      verifyUnsubscribeToken: (t) => {
        const m = /^ok\.([0-9a-z]{16})\.(\d+)$/.exec(t);
        return m ? { msgId: m[1] as string, idx: Number(m[2]) } : undefined;
      },
    },
  );
});
test.after.each(async () => {
  await ctx.mx.close();
});
test.after(async () => {
  await ctx.redis.stop();
});

/** A message accepted (persisted, queued and indexed by its recipients' addresses) as ingress does. */
async function sentMessage(account: string, addresses: string[]): Promise<string> {
  const id = newId();
  await persistMessage(ctx.client, ctx.keys, 4, {
    id, account, source: 'http', kind: 'raw', from: 'news@sender.test', fromDomain: 'sender.test',
    rcpts: addresses.map((address) => ({ address, domain: address.slice(address.indexOf('@') + 1) })),
    acceptedAt: Date.now(), tags: [], metadata: {}, body: `To: ${addresses.join(', ')}\r\nSubject: hi\r\n\r\nhello\r\n`,
  });
  return id;
}

async function erase(address: string): Promise<void> {
  await eraseAddress(ctx.client, ctx.keys, address, { accounts: ['acme'], all: false }, { eventsMaxLen: 1000, recordTtlMs: 90 * DAY, refsTtlMs: 93 * DAY, ref: 'hmac:test' });
}

/** The corpus's Postfix DSN (a 4.1.1 user unknown) as the copy (msgId, idx) to `address` would get it back. */
function dsn(msgId: string, idx: number, address: string): Buffer {
  const raw = readFileSync(new URL('lhost-postfix-05.eml', CORPUS_EMAILS), 'latin1')
    .replaceAll('kijitora@example.org', address)
    .replaceAll('shironeko@example.co.jp', verpAddress(msgId, idx, BOUNCE_DOMAIN))
    .replace('<FFFFFFFF.0000000@example.co.jp>', `<${msgId}@mta.sender.test>`);
  return Buffer.from(raw, 'latin1');
}

/** An ARF complaint at the FBL address returning the headers of a copy (RFC 5965). */
function complaint(address: string, returned: readonly string[]): string {
  return [
    'From: fbl@provider.test', `To: ${FBL}`, 'Subject: complaint', 'MIME-Version: 1.0',
    'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"', '',
    '--b1', 'Content-Type: text/plain', '', 'A complaint about a message.',
    '--b1', 'Content-Type: message/feedback-report', '', 'Feedback-Type: abuse', 'User-Agent: provider-fbl/1.0', 'Version: 1', `Original-Rcpt-To: ${address}`, '',
    '--b1', 'Content-Type: text/rfc822-headers', '', ...returned, `To: ${address}`, '', '--b1--', '',
  ].join('\r\n');
}

/** Delivers to the MX and waits for its processing; the feedback id. */
async function send(raw: Buffer | string, to: string[]): Promise<string> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: ctx.mx.port, secure: false, ignoreTLS: true });
  try {
    const info = await transport.sendMail({ envelope: { from: '', to }, raw });
    await ctx.mx.idle();
    const id = /stored as (\S+)/.exec(info.response)?.[1];
    assert.ok(id, `no feedback id in ${info.response}`);
    return id;
  } finally {
    transport.close();
  }
}

/** The mail is not kept, nor listed for the operator, and nothing in Redis names the address. */
async function dropped(fid: string, address: string, why: string): Promise<void> {
  assert.is(await loadFeedback(ctx.client, ctx.keys, fid), null, `${why}: the mail is not kept`);
  assert.not.ok((await listUnprocessed(ctx.client, ctx.keys, 10_000)).some((u) => u.id === fid), `${why}: not listed`);
  const text = await keyspaceText(ctx.client, ctx.keys.prefix);
  assert.not.ok(text.includes(address), `${why}: ${address} is in no key or value`);
  assert.not.ok(text.includes(address.slice(0, address.indexOf('@'))), `${why}: nor its local part`);
}

test('a DSN, a mail unsubscribe and a complaint by Message-ID for a message erased whole are dropped, and leave the address nowhere; a kept message\'s DSN is acted on as before', async () => {
  // One recipient, erased; and two, erased one after the other (the second erasure deletes the record).
  const solo = await sentMessage('acme', ['solo.person@dest.test']);
  const pair = await sentMessage('acme', ['first.person@dest.test', 'second.person@dest.test']);
  const kept = await sentMessage('acme', ['kept.person@dest.test']);
  for (const a of ['solo.person@dest.test', 'first.person@dest.test', 'second.person@dest.test']) await erase(a);
  assert.is(await ctx.client.exists(ctx.keys.msgMeta(solo), ctx.keys.msgMeta(pair)), 0, 'both records are gone');

  await dropped(await send(dsn(solo, 0, 'solo.person@dest.test'), [verpAddress(solo, 0, BOUNCE_DOMAIN)]), 'solo.person@dest.test', 'the DSN of the only recipient');
  await dropped(await send(dsn(pair, 0, 'first.person@dest.test'), [verpAddress(pair, 0, BOUNCE_DOMAIN)]), 'first.person@dest.test', 'the DSN of the first of two');
  await dropped(await send(dsn(pair, 1, 'second.person@dest.test'), [verpAddress(pair, 1, BOUNCE_DOMAIN)]), 'second.person@dest.test', 'the DSN of the second of two');
  await dropped(await send('From: solo.person@dest.test\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n', [unsubscribeAddress(`ok.${solo}.0`, BOUNCE_DOMAIN)]), 'solo.person@dest.test', 'mail to the unsubscribe address');
  await dropped(await send(complaint('solo.person@dest.test', [`Message-ID: <${solo}@mta.sender.test>`, 'Subject: hi']), [FBL]), 'solo.person@dest.test', 'a complaint naming the Message-ID only');
  assert.is(ctx.outcomes.get('processed'), 5, 'counted as mail about an erased person is');
  assert.is(ctx.outcomes.get('unmatched'), undefined);
  for (const a of ['solo.person@dest.test', 'first.person@dest.test', 'second.person@dest.test']) assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', a), null, `${a}: nothing suppressed`);

  // The same DSN for a message that was not erased: acted on and kept, as before.
  const fid = await send(dsn(kept, 0, 'kept.person@dest.test'), [verpAddress(kept, 0, BOUNCE_DOMAIN)]);
  assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'processed');
  assert.is((await suppressionOf(ctx.client, ctx.keys, GLOBAL_LIST, 'kept.person@dest.test'))?.reason, 'hardbounce');
});

test("a DSN for a message deleted with its account is dropped as 'account-deleted'; one whose record ended its life is unmatched as before (no tombstone)", async () => {
  const gone = await sentMessage('closing', ['closing.person@dest.test']);
  const kept = await sentMessage('acme', ['kept.person@dest.test']);
  // Accepted 100 days ago and never finished: the walk ends it past retention.records (its end of life).
  const old = newId(Date.now() - 100 * DAY);
  await storeMessage(ctx.client, ctx.keys, {
    id: old, account: 'acme', source: 'http', kind: 'raw', from: 'news@sender.test', fromDomain: 'sender.test',
    rcpts: [{ address: 'old.person@dest.test', domain: 'dest.test' }], acceptedAt: Date.now() - 100 * DAY, tags: [], metadata: {}, body: 'Subject: hi\r\n\r\nhello\r\n',
  });
  await closeAccount(ctx.client, ctx.keys, 'closing', { now: Date.now() - 1000, windowMs: 1000, by: 'cli' });
  const job = new RetentionJob({
    redis: ctx.client, keys: ctx.keys, periods: { recordsMs: 90 * DAY, eventsMs: 90 * DAY, rawBouncesMs: 30 * DAY, auditMs: 365 * DAY },
    intervalMs: 1000, scanCount: 100, queueMaxAgeMs: 72 * HOUR, refsMs: 93 * DAY, logger: createLogger('silent'),
  });
  // The account is due when the first pass begins; the second ends with it deleted.
  for (let passes = 0, steps = 0; passes < 2; steps++) {
    assert.ok(steps < 1000, 'the passes end');
    if ((await job.step()).passCompleted) passes++;
  }
  assert.is(await ctx.client.exists(ctx.keys.msgMeta(gone), ctx.keys.msgMeta(old)), 0, 'both records are gone');
  assert.is(await ctx.client.exists(ctx.keys.trackMarks(old)), 0, 'the end of a life leaves no tombstone');

  await dropped(await send(dsn(gone, 0, 'closing.person@dest.test'), [verpAddress(gone, 0, BOUNCE_DOMAIN)]), 'closing.person@dest.test', "the deleted account's DSN");
  assert.is(ctx.outcomes.get('account-deleted'), 1);
  assert.is(await suppressionOf(ctx.client, ctx.keys, GLOBAL_LIST, 'closing.person@dest.test'), null, 'nothing suppressed');

  // Not erased, not deleted: mail about a message past its retention is about an unknown message.
  const late = await send(dsn(old, 0, 'old.person@dest.test'), [verpAddress(old, 0, BOUNCE_DOMAIN)]);
  assert.is((await loadFeedback(ctx.client, ctx.keys, late))?.outcome, 'unmatched');
  assert.ok((await listUnprocessed(ctx.client, ctx.keys, 10_000)).some((u) => u.id === late), 'listed for the operator');
  // Another account's message: acted on as before.
  const fid = await send(dsn(kept, 0, 'kept.person@dest.test'), [verpAddress(kept, 0, BOUNCE_DOMAIN)]);
  assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'processed');
  assert.is((await suppressionOf(ctx.client, ctx.keys, GLOBAL_LIST, 'kept.person@dest.test'))?.reason, 'hardbounce');
});

test("mixed mail naming an erased recipient is dropped, though acted on for the live copy it names too; a complaint quoting an erased copy's VERP is dropped too", async () => {
  // The record is kept (another recipient is live): the erased one is a tombstone in it.
  const shared = await sentMessage('acme', ['erased.person@dest.test', 'live.person@dest.test']);
  const other = await sentMessage('acme', ['other.person@dest.test']);
  await erase('erased.person@dest.test');
  assert.is(await ctx.client.exists(ctx.keys.msgMeta(shared)), 1);

  // One delivery to both copies' VERP addresses: the live one is acted on, the mail is not kept.
  const mixed = await send(dsn(other, 0, 'erased.person@dest.test'), [verpAddress(shared, 0, BOUNCE_DOMAIN), verpAddress(other, 0, BOUNCE_DOMAIN)]);
  assert.is((await suppressionOf(ctx.client, ctx.keys, GLOBAL_LIST, 'other.person@dest.test'))?.reason, 'hardbounce', 'the live copy is acted on');
  await dropped(mixed, 'erased.person@dest.test', 'mixed mail');

  // A complaint at the FBL address that finds the erased copy by its quoted return path.
  const quoted = await send(complaint('erased.person@dest.test', [`Return-Path: <${verpAddress(shared, 0, BOUNCE_DOMAIN)}>`, 'Subject: hi']), [FBL]);
  await dropped(quoted, 'erased.person@dest.test', 'a complaint quoting the VERP');
  assert.is(ctx.outcomes.get('unmatched'), undefined);
  // The live recipient of the same message is complained about as before.
  await send(complaint('live.person@dest.test', [`Return-Path: <${verpAddress(shared, 1, BOUNCE_DOMAIN)}>`, 'Subject: hi']), [FBL]);
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', 'live.person@dest.test'))?.reason, 'complaint');
});

test("a copy erased after its record's life ended gets its erased mark: a DSN for it that comes later is dropped, not kept as unmatched", async () => {
  const id = await sentMessage('acme', ['expired.person@dest.test', 'other.person@dest.test']);
  // Its delivery event outlives the record (events have their own retention): it names the account.
  await appendEvent(ctx.client, ctx.keys, 'delivered', { account: 'acme', msgId: id, idx: 0 }, 1000);
  // Its record ended its life (the walk past retention.records, or its TTL): no tombstone then.
  await purgeMessage(ctx.client, ctx.keys, id);
  assert.is(await ctx.client.exists(ctx.keys.msgMeta(id), ctx.keys.trackMarks(id)), 0);
  await erase('expired.person@dest.test');
  assert.is(await tombstoneOf(ctx.client, ctx.keys, id, 0), 'erased', 'the erased copy is marked');
  assert.is(await tombstoneOf(ctx.client, ctx.keys, id, 1), null, 'the other copy is not');
  const ttl = await ctx.client.pttl(ctx.keys.trackMarks(id));
  assert.ok(ttl > 89 * DAY && ttl <= 90 * DAY, `the mark lives retention.records (${ttl} ms)`);
  await dropped(await send(dsn(id, 0, 'expired.person@dest.test'), [verpAddress(id, 0, BOUNCE_DOMAIN)]), 'expired.person@dest.test', 'the DSN of a copy erased after its record ended');
  // The other copy's DSN is about an unknown message, as before.
  const other = await send(dsn(id, 1, 'other.person@dest.test'), [verpAddress(id, 1, BOUNCE_DOMAIN)]);
  assert.is((await loadFeedback(ctx.client, ctx.keys, other))?.outcome, 'unmatched');
});

test("a copy whose record and events are both gone gets its erased mark from an erasure everywhere, not from an account's", async () => {
  const id = await sentMessage('acme', ['unnamed.person@dest.test', 'other.person@dest.test']);
  // Its record ended its life, and no event names it any more (or ever did): only the address index does.
  await purgeMessage(ctx.client, ctx.keys, id);
  const opts = { eventsMaxLen: 1000, recordTtlMs: 90 * DAY, refsTtlMs: 93 * DAY, ref: 'hmac:test' };
  // An account's erasure cannot tell the copy was its own: no mark (and the index entry, naming nothing, goes).
  await eraseAddress(ctx.client, ctx.keys, 'unnamed.person@dest.test', { accounts: ['acme'], all: false }, opts);
  assert.is(await tombstoneOf(ctx.client, ctx.keys, id, 0), null);
  // The operator's erasure everywhere (sluice privacy erase without --account): it finds the copy the same way and marks it.
  const again = await sentMessage('acme', ['unnamed.person@dest.test']);
  await purgeMessage(ctx.client, ctx.keys, again);
  await eraseAddress(ctx.client, ctx.keys, 'unnamed.person@dest.test', { accounts: [], all: true }, opts);
  assert.is(await tombstoneOf(ctx.client, ctx.keys, again, 0), 'erased');
  const ttl = await ctx.client.pttl(ctx.keys.trackMarks(again));
  assert.ok(ttl > 89 * DAY && ttl <= 90 * DAY, `the mark lives retention.records (${ttl} ms)`);
  await dropped(await send(dsn(again, 0, 'unnamed.person@dest.test'), [verpAddress(again, 0, BOUNCE_DOMAIN)]), 'unnamed.person@dest.test', 'the DSN of a copy no event named');
  // The other recipient of the first message is not marked.
  assert.is(await tombstoneOf(ctx.client, ctx.keys, id, 1), null);
});

test("a recipient erased before their account was deleted stays erased: mail about them, to postmaster too, is dropped; the other copy's is the deleted account's", async () => {
  const id = await sentMessage('closing', ['erased.first@dest.test', 'stays.second@dest.test']);
  await eraseAddress(ctx.client, ctx.keys, 'erased.first@dest.test', { accounts: ['closing'], all: false }, { eventsMaxLen: 1000, recordTtlMs: 90 * DAY, refsTtlMs: 93 * DAY, ref: 'hmac:test' });
  await ctx.client.hset(ctx.keys.trackMarks(id), 'o:1', Date.now());
  // The retention walk's purge of a due account's message.
  await purgeMessage(ctx.client, ctx.keys, id, 90 * DAY);
  assert.equal(await ctx.client.hgetall(ctx.keys.trackMarks(id)), { 'x:0': '1', 'x:*': 'a' }, "the erasure's mark is kept, the engagement marks go");
  assert.is(await tombstoneOf(ctx.client, ctx.keys, id, 0), 'erased');
  assert.is(await tombstoneOf(ctx.client, ctx.keys, id, 1), 'account-deleted');
  // By its Message-ID alone the mail may be about the erased person: nothing tells which copy.
  assert.is(await tombstoneOf(ctx.client, ctx.keys, id, undefined), 'erased');
  const postmaster = `postmaster@${BOUNCE_DOMAIN}`;
  await dropped(await send(dsn(id, 0, 'erased.first@dest.test'), [verpAddress(id, 0, BOUNCE_DOMAIN), postmaster]), 'erased.first@dest.test', 'the erased copy\'s DSN, to postmaster too');
  // The other copy's, to postmaster too: a person's mail for the operator, kept as a deleted account's.
  const kept = await send(dsn(id, 1, 'stays.second@dest.test'), [verpAddress(id, 1, BOUNCE_DOMAIN), postmaster]);
  assert.is((await loadFeedback(ctx.client, ctx.keys, kept))?.outcome, 'account-deleted');
  // A complaint whose provider redacted the recipient, quoting the message's Message-ID: nothing tells
  // which copy it is about, so it is dropped as possibly about the erased person, to postmaster too.
  await dropped(await send(complaint('redacted@fbl.provider.test', [`Message-ID: <${id}@mta.sender.test>`, 'From: news@sender.test', 'Subject: hi']), [FBL, postmaster]), 'redacted@fbl.provider.test', 'a complaint by Message-ID alone');
  // A second purge (the walk met another of its keys) keeps both marks.
  await purgeMessage(ctx.client, ctx.keys, id, 90 * DAY);
  assert.equal(await ctx.client.hgetall(ctx.keys.trackMarks(id)), { 'x:0': '1', 'x:*': 'a' });
  // A deleted account's message none of whose recipients was erased: by Message-ID, the account's.
  const plain = await sentMessage('closing', ['only.one@dest.test']);
  await purgeMessage(ctx.client, ctx.keys, plain, 90 * DAY);
  assert.is(await tombstoneOf(ctx.client, ctx.keys, plain, undefined), 'account-deleted');
});

test("the purge of a deleted account's message is one step on its slot: an erasure landing while it runs keeps its mark, and an every-recipient erasure stays 'erased'", async () => {
  const id = await sentMessage('closing', ['first.gone@dest.test', 'second.gone@dest.test', 'third.stays@dest.test']);
  const scope = { accounts: ['closing'], all: false };
  const opts = { eventsMaxLen: 1000, recordTtlMs: 90 * DAY, refsTtlMs: 93 * DAY, ref: 'hmac:test' };
  await eraseAddress(ctx.client, ctx.keys, 'first.gone@dest.test', scope, opts);
  await ctx.client.hset(ctx.keys.trackMarks(id), 'o:1', Date.now(), 'c:2:0', Date.now());
  // Its delivery event names the account, should the erasure find the record gone.
  await appendEvent(ctx.client, ctx.keys, 'delivered', { account: 'closing', msgId: id, idx: 1 }, 1000);
  // The purge's client: the second recipient's erasure (another process) lands as soon as the purge's
  // first Redis call has answered, before anything else the purge sends.
  let landed = false;
  const racing = new Proxy(ctx.client, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        const out = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (!(out instanceof Promise) || landed) return out;
        return out.then(async (answer: unknown) => {
          if (!landed) {
            landed = true;
            await eraseAddress(ctx.client, ctx.keys, 'second.gone@dest.test', scope, opts);
          }
          return answer;
        });
      };
    },
  });
  await purgeMessage(racing, ctx.keys, id, 90 * DAY);
  assert.ok(landed, 'the erasure ran');
  assert.equal(await ctx.client.hgetall(ctx.keys.trackMarks(id)), { 'x:0': '1', 'x:1': '1', 'x:*': 'a' }, 'both erasure marks, the engagement marks gone');
  assert.is(await tombstoneOf(ctx.client, ctx.keys, id, 1), 'erased');
  assert.is(await tombstoneOf(ctx.client, ctx.keys, id, 2), 'account-deleted');

  // Marks saying every recipient was erased (x:* = '1') keep saying so: 'erased' wins.
  const whole = newId();
  await ctx.client.hset(ctx.keys.trackMarks(whole), 'x:*', '1', 'o:0', Date.now());
  assert.is(await purgeMessage(ctx.client, ctx.keys, whole, DAY), 0, 'no record left to delete');
  assert.equal(await ctx.client.hgetall(ctx.keys.trackMarks(whole)), { 'x:*': '1' });
  assert.is(await tombstoneOf(ctx.client, ctx.keys, whole, 0), 'erased');
  const ttl = await ctx.client.pttl(ctx.keys.trackMarks(whole));
  assert.ok(ttl > DAY - HOUR && ttl <= DAY, `the tombstone's TTL (${ttl} ms)`);
});

test("on a Redis Cluster: a deleted account's message is purged and tombstoned in its own slot, and a dropped mail's bytes and index entries go, each in its own", async () => {
  const cluster = await startCluster();
  const client = cluster.client();
  try {
    const { keys } = cluster.fresh();
    const id = newId();
    await storeMessage(client, keys, {
      id, account: 'closing', source: 'http', kind: 'raw', from: 'news@sender.test', fromDomain: 'sender.test',
      rcpts: [{ address: 'r@dest.test', domain: 'dest.test' }], acceptedAt: Date.now(), tags: [], metadata: {}, body: 'Subject: hi\r\n\r\nhello\r\n',
    });
    await client.hset(keys.trackMarks(id), 'o:0', 1);
    assert.is(await purgeMessage(client, keys, id, DAY), 2, 'meta and body');
    assert.is(await purgeMessage(client, keys, id, DAY), 0, 'a second purge (the walk met another key of it) counts nothing');
    assert.equal(await client.hgetall(keys.trackMarks(id)), { 'x:*': 'a' }, 'the marks are the tombstone alone');
    assert.ok((await client.pttl(keys.trackMarks(id))) > DAY - HOUR);
    assert.is(await tombstoneOf(client, keys, id, 0), 'account-deleted');

    const now = Date.now();
    await storeFeedback(client, keys, { id: 'fb-1', raw: Buffer.from('x'), rcpts: ['b-x@bounce.test'], mailFrom: '', receivedAt: now }, 60_000);
    await recordOutcome(client, keys, 'fb-1', 'failed', now, 60_000);
    await dropFeedback(client, keys, 'fb-1');
    assert.equal(await Promise.all([client.exists(keys.feedbackRaw('fb-1')), client.zscore(keys.feedbackUnprocessed(), 'fb-1'), client.zscore(keys.feedbackPending(), 'fb-1')]), [0, null, null]);
  } finally {
    client.disconnect();
    await cluster.stop();
  }
});

test.run();
