import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import nodemailer from 'nodemailer';
import { pino } from 'pino';
import { commandsOn, startRedis, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { newId } from '../../src/core/ids.js';
import { verpAddress } from '../../src/core/verp.js';
import { storeMessage } from '../../src/store/messages.js';
import { GLOBAL_LIST, suppressionOf } from '../../src/store/suppression.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { startInboundMx, type InboundMx, type InboundMxMetricsHook } from '../../src/feedback/inbound-mx.js';
import { listUnprocessed, loadFeedback, PENDING_GRACE_MS, storeFeedback } from '../../src/feedback/raw-store.js';
import { dropFeedback } from '../../src/store/feedback-stored.js';
import { MAX_QUOTED_CANDIDATES, unsubscribeAddress } from '../../src/feedback/recipients.js';
import { unsubscribeMailtoAddress } from '../../src/core/verp.js';
import { readEngagement } from '../../src/store/engagement.js';
import { CORPUS_DIR, CORPUS_EMAILS } from '../helpers/corpus.js';
import { createTokenCodec } from '../../src/core/tokens.js';
import { createTracker, type Tracker } from '../../src/render/tracking.js';
import { loadConfig } from '../../src/config/load.js';
import { loadOrCreateTls } from '../../src/ingress/tls.js';
import type { TlsMaterial } from '../../src/core/tls-material.js';
import { closeAccount } from '../../src/store/account-state.js';
import { eraseAddress } from '../../src/store/privacy.js';
import { indexAddresses } from '../../src/store/address-index.js';

const test = suite('feedback/inbound-mx');
const CORPUS = CORPUS_EMAILS;
const corpus = (name: string) => readFileSync(new URL(name, CORPUS));
const BOUNCE_DOMAIN = 'bounce.test';
const FBL = 'fbl@feedback.test';
/** Small on purpose: the size test sends a little more than this. */
const MAX_SIZE = 256 * 1024;

const ctx = {} as {
  redis: TestRedis;
  client: RedisClient;
  keys: Keys;
  mx: InboundMx;
  counts: Map<string, number>;
  dataDir: string;
  tls: TlsMaterial;
  /** An MX keyed as the role's is: VERP tags (secret:verp) and tracking's token codec. */
  signed: InboundMx;
};

/** The keys the delivery role signs copies with, and the MX ctx.signed checks them by. */
const SIGNED = (() => {
  const verpKey = randomBytes(32);
  const keys = [{ id: 'k1', secret: randomBytes(32) }];
  const tracker: Tracker = createTracker({ publicBaseUrl: 'https://t.sender.test', keys, signWith: 'k1', bounceDomain: BOUNCE_DOMAIN, unsubscribeKey: verpKey });
  return { verpKey, codec: createTokenCodec({ keys, signWith: 'k1' }), tracker };
})();

function count(name: string): number {
  return ctx.counts.get(name) ?? 0;
}

test.before(async () => {
  ctx.redis = await startRedis();
  ctx.client = ctx.redis.client();
  ctx.keys = ctx.redis.fresh().keys;
  ctx.counts = new Map();
  // The pair the role gets with feedback.tlsKey/tlsCert null: ingress.smtp's, here generated.
  ctx.dataDir = mkdtempSync(join(tmpdir(), 'sluice-mx-'));
  ctx.tls = await loadOrCreateTls(loadConfig({ env: {}, overrides: { instance: { hostname: 'mx.sluice.test', dataDir: ctx.dataDir } } }), 'feedback');
  const bump = (name: string) => ctx.counts.set(name, count(name) + 1);
  const metrics: InboundMxMetricsHook = {
    received: (kind) => bump(`received:${kind}`),
    rejected: (code) => bump(`rejected:${code}`),
    outcome: (o) => bump(`outcome:${o}`),
    bounce: (reason, verdict) => bump(`bounce:${reason}:${verdict}`),
    complaint: (type) => bump(`complaint:${type}`),
    suppressed: (list, reason) => bump(`suppressed:${list}:${reason}`),
  };
  ctx.mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger: pino({ level: 'silent' }), metrics },
    {
      host: '127.0.0.1', port: 0, tls: ctx.tls, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: MAX_SIZE,
      rawRetentionMs: 3_600_000, softBounceLimit: 2, softBounceWindowMs: 86_400_000,
      // Failed mail is tried again 200 ms later, then 400, … (production: 1 min, 2, …).
      retryBaseMs: 200, pendingIntervalMs: 50,
      // A stand-in for tracking's signed tokens: "ok.<msgId>.<idx>" is valid, anything else forged.
      verifyUnsubscribeToken: (t) => {
        const m = /^ok\.([0-9a-z]{16})\.(\d+)$/.exec(t);
        return m ? { msgId: m[1] as string, idx: Number(m[2]) } : undefined;
      },
    },
  );
  ctx.signed = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger: pino({ level: 'silent' }), metrics },
    {
      host: '127.0.0.1', port: 0, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: MAX_SIZE, rawRetentionMs: 3_600_000, verpKey: SIGNED.verpKey,
      // As app/start.ts passes it.
      verifyUnsubscribeToken: (token) => {
        const p = SIGNED.codec.verify(token, Date.now(), 'u');
        return p ? { msgId: p.msgId, idx: p.idx } : undefined;
      },
    },
  );
});

test.after(async () => {
  await ctx.mx.close();
  await ctx.signed.close();
  await ctx.redis.stop();
  rmSync(ctx.dataDir, { recursive: true, force: true });
});

/** A sent message with one recipient per address, in account `account`. */
async function sentMessage(account: string, addresses: string[]): Promise<string> {
  const id = newId();
  await storeMessage(ctx.client, ctx.keys, {
    id, account, source: 'http', kind: 'raw', from: 'news@sender.test', fromDomain: 'sender.test',
    rcpts: addresses.map((address) => ({ address, domain: address.slice(address.indexOf('@') + 1) })),
    acceptedAt: Date.now(), tags: [], metadata: {}, body: 'Subject: hi\r\n\r\nhello\r\n',
  });
  return id;
}

/** Sends in plain text, or over STARTTLS with `tls` (nodemailer's requireTLS: no TLS, no mail). */
async function send(raw: Buffer | string, to: string[], mx: InboundMx = ctx.mx, tls = false): Promise<string> {
  const transport = nodemailer.createTransport({
    host: '127.0.0.1', port: mx.port, secure: false,
    ...(tls ? { requireTLS: true, tls: { rejectUnauthorized: false } } : { ignoreTLS: true }),
  });
  try {
    const info = await transport.sendMail({ envelope: { from: '', to }, raw });
    await mx.idle();
    const id = /stored as (\S+)/.exec(info.response)?.[1];
    assert.ok(id, `no feedback id in ${info.response}`);
    return id;
  } finally {
    transport.close();
  }
}

async function refusal(raw: Buffer | string, to: string[], mx: InboundMx = ctx.mx): Promise<{ responseCode?: number; response?: string }> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: mx.port, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail({ envelope: { from: 'someone@elsewhere.test', to }, raw });
    assert.unreachable('the mail was accepted');
    return {};
  } catch (err) {
    return err as { responseCode?: number; response?: string };
  } finally {
    transport.close();
  }
}

async function events(): Promise<Record<string, string>[]> {
  const entries = await ctx.client.xrange(ctx.keys.events(), '-', '+');
  return entries.map(([, flat]) => {
    const o: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) o[flat[i] as string] = flat[i + 1] as string;
    return o;
  });
}

async function eventsOf(msgId: string): Promise<Record<string, string>[]> {
  return (await events()).filter((e) => e['msgId'] === msgId);
}

test('a real Postfix userunknown DSN to a VERP address suppresses the VERP recipient globally', async () => {
  const id = await sentMessage('acme', ['first@dest.test', 'alice@dest.test']);
  // The DSN's body names kijitora@example.org; the VERP (index 1) says whose copy it was.
  const fid = await send(corpus('lhost-postfix-05.eml'), [verpAddress(id, 1, BOUNCE_DOMAIN)]);
  const s = await suppressionOf(ctx.client, ctx.keys, 'any-account', 'alice@dest.test');
  assert.ok(s, 'alice is suppressed');
  assert.is(s.list, GLOBAL_LIST);
  assert.is(s.reason, 'hardbounce');
  assert.is(s.evidence['feedbackId'], fid);
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'first@dest.test'), null, 'the other recipient is untouched');
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'kijitora@example.org'), null, 'the body address is not ours to suppress');
  const [ev, ...more] = await eventsOf(id);
  assert.is(more.length, 0);
  assert.is(ev?.['type'], 'bounced');
  assert.is(ev?.['idx'], '1');
  assert.is(ev?.['account'], 'acme');
  assert.is(ev?.['reason'], 'userunknown');
  assert.is(ev?.['hard'], '1');
  assert.is(ev?.['fault'], 'recipient');
  assert.is(ev?.['suppressed'], GLOBAL_LIST);
  assert.is(s.evidence['event'] !== undefined, true);
  assert.not.ok(JSON.stringify(ev).includes('@'), 'events carry ids, never addresses');
  const stored = await loadFeedback(ctx.client, ctx.keys, fid);
  assert.ok(stored);
  assert.is(stored.outcome, 'processed');
  assert.ok(stored.raw.includes('User unknown in virtual alias table'), 'the raw mail is kept whole');
  assert.equal(stored.rcpts, [verpAddress(id, 1, BOUNCE_DOMAIN)]);
  assert.ok((await ctx.client.pttl(ctx.keys.feedbackRaw(fid))) > 0, 'raw mail expires after the retention');
});

/** Postfix's DSN for one dead member of a virtual alias (as a real Postfix wrote it): the alias is Original-Recipient. */
function aliasMemberDsn(alias: string, member: string): string {
  return [
    'From: MAILER-DAEMON@pfx.test (Mail Delivery System)', `To: ${verpAddress('0000000000000000', 0, BOUNCE_DOMAIN)}`, 'Subject: Undelivered Mail Returned to Sender',
    'Auto-Submitted: auto-replied', 'MIME-Version: 1.0', 'Content-Type: multipart/report; report-type=delivery-status; boundary="B1"', '',
    '--B1', 'Content-Description: Notification', 'Content-Type: text/plain; charset=us-ascii', '',
    'This is the mail system at host pfx.test.', '', "I'm sorry to have to inform you that your message could not",
    'be delivered to one or more recipients.', '', `<${member}> (expanded from <${alias}>): unknown user: "${member.split('@')[0]}"`, '',
    '--B1', 'Content-Description: Delivery report', 'Content-Type: message/delivery-status', '',
    'Reporting-MTA: dns; pfx.test', 'Arrival-Date: Sun, 29 Nov 2026 17:00:00 +0000', '',
    `Final-Recipient: rfc822; ${member}`, `Original-Recipient: rfc822;${alias}`, 'Action: failed', 'Status: 5.1.1',
    `Diagnostic-Code: X-Postfix; unknown user: "${member.split('@')[0]}"`, '',
    '--B1--', '',
  ].join('\r\n');
}

test("a DSN for one dead member of an alias we sent to (Original-Recipient ours, Final-Recipient the member's) counts as a soft bounce of the alias, not a hard one", async () => {
  const alias = 'team@alias.test';
  const id = await sentMessage('acme', [alias]);
  await send(aliasMemberDsn(alias, 'no-such-user@alias.test'), [verpAddress(id, 0, BOUNCE_DOMAIN)]);
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', alias), null, 'the alias reached its other members: not suppressed');
  const [ev, ...more] = await eventsOf(id);
  assert.is(more.length, 0);
  assert.is(ev?.['type'], 'bounced');
  assert.is(ev?.['hard'], '0', 'a soft bounce of the alias');
  assert.is(ev?.['reason'], 'userunknown', 'with the reason the report gave');
  // Its mail fails downstream every time: at feedback.softBounceLimit (2 here) it is suppressed.
  const again = await sentMessage('acme', [alias]);
  await send(aliasMemberDsn(alias, 'no-such-user@alias.test'), [verpAddress(again, 0, BOUNCE_DOMAIN)]);
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', alias))?.reason, 'softbounce');
  // A report whose Final-Recipient is the address we sent to is its own failure: hard, at once.
  const direct = await sentMessage('acme', ['gone@alias.test']);
  await send(aliasMemberDsn('gone@alias.test', 'gone@alias.test'), [verpAddress(direct, 0, BOUNCE_DOMAIN)]);
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', 'gone@alias.test'))?.reason, 'hardbounce');
});

/** The writes to the suppression list `suppressionKey` and to the event stream while `work` ran, in order. */
async function writeOrder(suppressionKey: string, work: () => Promise<void>): Promise<string[]> {
  const ran = await commandsOn(ctx.redis, [suppressionKey, ctx.keys.events()], work);
  return ran.filter(([cmd]) => cmd === 'hset' || cmd === 'xadd').map(([cmd, key]) => `${key === suppressionKey ? 'suppression' : 'events'}:${cmd}`);
}

test('the suppression is written before the event that names it, then given its id as evidence', async () => {
  const id = await sentMessage('acme', ['order@dest.test']);
  const order = await writeOrder(ctx.keys.suppression(GLOBAL_LIST), async () => {
    await send(corpus('lhost-postfix-05.eml'), [verpAddress(id, 0, BOUNCE_DOMAIN)]);
  });
  assert.equal(order, ['suppression:hset', 'events:xadd', 'suppression:hset']);
  const s = await suppressionOf(ctx.client, ctx.keys, 'acme', 'order@dest.test');
  const [entry] = (await ctx.client.xrange(ctx.keys.events(), '-', '+')).filter(([, f]) => f.includes(id));
  assert.is(s?.evidence['event'], entry?.[0], 'the evidence names the event');
});

test('a bounce whose processing fails (Redis refuses a read) is kept as failed, tried again, and acted on once Redis answers', async () => {
  const id = await sentMessage('acme', ['retry-me@dest.test']);
  // The message's record made unreadable (a string where its hash is): processing fails with WRONGTYPE.
  const meta = ctx.keys.msgMeta(id);
  await ctx.client.rename(meta, `${meta}:aside`);
  await ctx.client.set(meta, 'in the way');
  const fid = await send(corpus('lhost-exim-05.eml'), [verpAddress(id, 0, BOUNCE_DOMAIN)]);
  assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'failed');
  assert.ok((await ctx.client.zscore(ctx.keys.feedbackUnprocessed(), fid)) !== null, 'listed for the operator meanwhile');
  assert.ok((await ctx.client.zscore(ctx.keys.feedbackPending(), fid)) !== null, 'and due again');
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'retry-me@dest.test'), null);
  // Redis answers again: a later look takes the mail and processes it.
  await ctx.client.del(meta);
  await ctx.client.rename(`${meta}:aside`, meta);
  for (let i = 0; i < 400 && (await loadFeedback(ctx.client, ctx.keys, fid))?.outcome !== 'processed'; i++) await new Promise((r) => setTimeout(r, 25));
  await ctx.mx.idle();
  assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'processed');
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', 'retry-me@dest.test'))?.reason, 'hardbounce');
  assert.equal((await eventsOf(id)).map((e) => e['type']), ['bounced']);
  assert.is(await ctx.client.zscore(ctx.keys.feedbackPending(), fid), null, 'no longer due');
  assert.is(await ctx.client.zscore(ctx.keys.feedbackUnprocessed(), fid), null, 'no longer listed');
});

test('a processing that fails after its event (the notice to the sender could not be queued) appends no second event when tried again', async () => {
  let calls = 0;
  // Keys of its own: the file's other MX processes would take its due mail from a shared keyspace.
  const { keys } = ctx.redis.fresh();
  // The notice path fails once, as it does when Redis refuses the notice's write (app/notices.ts).
  const flaky = await startInboundMx(
    {
      redis: ctx.client, keys, logger: pino({ level: 'silent' }),
      reportFailure: async () => {
        if (calls++ === 0) throw new Error('the notice could not be stored');
      },
    },
    { host: '127.0.0.1', port: 0, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: MAX_SIZE, rawRetentionMs: 3_600_000, retryBaseMs: 100, pendingIntervalMs: 50 },
  );
  const eventsOfHere = async (msgId: string) => (await ctx.client.xrange(keys.events(), '-', '+')).filter(([, f]) => f[f.indexOf('msgId') + 1] === msgId);
  try {
    const id = newId();
    await storeMessage(ctx.client, keys, {
      id, account: 'acme', source: 'http', kind: 'raw', from: 'news@sender.test', fromDomain: 'sender.test',
      rcpts: [{ address: 'twice@dest.test', domain: 'dest.test' }], acceptedAt: Date.now(), tags: [], metadata: {}, body: 'Subject: hi\r\n\r\nhello\r\n',
    });
    const fid = await send(corpus('lhost-exim-05.eml'), [verpAddress(id, 0, BOUNCE_DOMAIN)], flaky);
    assert.is((await loadFeedback(ctx.client, keys, fid))?.outcome, 'failed');
    assert.is((await eventsOfHere(id)).length, 1, 'acted on before the notice failed');
    for (let i = 0; i < 400 && (await loadFeedback(ctx.client, keys, fid))?.outcome !== 'processed'; i++) await new Promise((r) => setTimeout(r, 25));
    await flaky.idle();
    assert.is((await loadFeedback(ctx.client, keys, fid))?.outcome, 'processed');
    assert.is(calls, 2, 'the notice was asked for again');
    const events = await eventsOfHere(id);
    assert.is(events.length, 1, 'one event');
    assert.is((await suppressionOf(ctx.client, keys, 'acme', 'twice@dest.test'))?.evidence['event'], events[0]?.[0], 'the suppression names that one event');
  } finally {
    await flaky.close();
  }
});

test('a bounce stored and answered 250 but never processed (the process died first) is processed by a later look', async () => {
  const id = await sentMessage('acme', ['orphan@dest.test']);
  // As the MX stores it before its 250, received longer ago than the grace: its processing never ran.
  const fid = newId();
  const receivedAt = Date.now() - PENDING_GRACE_MS - 1000;
  assert.ok(await storeFeedback(ctx.client, ctx.keys, { id: fid, raw: corpus('lhost-exim-05.eml'), rcpts: [verpAddress(id, 0, BOUNCE_DOMAIN)], mailFrom: '', receivedAt }, 3_600_000));
  for (let i = 0; i < 400 && (await loadFeedback(ctx.client, ctx.keys, fid))?.outcome === ''; i++) await new Promise((r) => setTimeout(r, 25));
  await ctx.mx.idle();
  assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'processed');
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', 'orphan@dest.test'))?.reason, 'hardbounce');
  assert.is(await ctx.client.zscore(ctx.keys.feedbackPending(), fid), null);
});

test('a real Exim userunknown bounce is matched and suppressed the same way', async () => {
  const id = await sentMessage('acme', ['exim-victim@dest.test']);
  await send(corpus('lhost-exim-05.eml'), [verpAddress(id, 0, BOUNCE_DOMAIN)]);
  const s = await suppressionOf(ctx.client, ctx.keys, 'acme', 'exim-victim@dest.test');
  assert.is(s?.list, GLOBAL_LIST);
  assert.is(s?.reason, 'hardbounce');
});

test('VERP matching works when the bounce body names no recipient at all', async () => {
  const id = await sentMessage('acme', ['nobody-named@dest.test']);
  const raw = [
    'From: MAILER-DAEMON@mx.dest.test (Mail Delivery System)',
    `To: ${verpAddress(id, 0, BOUNCE_DOMAIN)}`,
    'Subject: Undelivered Mail Returned to Sender',
    'Auto-Submitted: auto-replied',
    'Content-Type: text/plain',
    '',
    'I\'m sorry to have to inform you that your message could not',
    'be delivered to one or more recipients.',
    '',
    'host mx.dest.test said: 550 5.1.1 User unknown (in reply to RCPT TO command)',
    '',
  ].join('\r\n');
  await send(raw, [verpAddress(id, 0, BOUNCE_DOMAIN)]);
  const s = await suppressionOf(ctx.client, ctx.keys, 'acme', 'nobody-named@dest.test');
  assert.is(s?.list, GLOBAL_LIST);
  const [ev] = await eventsOf(id);
  assert.is(ev?.['reason'], 'userunknown');
});

test('an ARF complaint suppresses the recipient for that account only', async () => {
  const id = await sentMessage('acme', ['complainer@dest.test']);
  const before = count('complaint:abuse');
  await send(corpus('arf-14.eml'), [verpAddress(id, 0, BOUNCE_DOMAIN)]);
  const own = await suppressionOf(ctx.client, ctx.keys, 'acme', 'complainer@dest.test');
  assert.is(own?.list, 'acme');
  assert.is(own?.reason, 'complaint');
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'other-account', 'complainer@dest.test'), null, 'other accounts may still mail them');
  const [ev] = await eventsOf(id);
  assert.is(ev?.['type'], 'complained');
  assert.is(ev?.['feedbacktype'], 'abuse');
  assert.is(count('complaint:abuse'), before + 1);
});

test('an ARF auth-failure report (RFC 6591) is the receiver\'s report on the message: nobody is suppressed, no complaint is counted', async () => {
  const id = await sentMessage('acme', ['kijitora@dest.test']);
  const before = count('complaint:auth-failure');
  await send(corpus('arf-18.eml'), [verpAddress(id, 0, BOUNCE_DOMAIN)]);
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'kijitora@dest.test'), null, 'the recipient did not complain');
  const [ev] = await eventsOf(id);
  assert.is(ev?.['type'], 'feedback');
  assert.is(ev?.['feedbacktype'], 'auth-failure');
  assert.is(ev?.['suppressed'], undefined);
  assert.is(count('complaint:auth-failure'), before + 1, 'counted by its type');
});

test('an ARF complaint to the FBL address finds its message through the quoted VERP return path', async () => {
  const id = await sentMessage('shop', ['fbl-user@dest.test']);
  const raw = corpus('arf-14.eml').toString('latin1')
    .replace('Return-Path: <222222222222eeee-00000000-2222-ffff-1111-333333332222-ffffff@amazonses.com>', `Return-Path: <${verpAddress(id, 0, BOUNCE_DOMAIN)}>`);
  await send(Buffer.from(raw, 'latin1'), [FBL]);
  const s = await suppressionOf(ctx.client, ctx.keys, 'shop', 'fbl-user@dest.test');
  assert.is(s?.list, 'shop');
  assert.is(s?.reason, 'complaint');
});

/**
 * A complaint at the FBL address, as a provider writes one (RFC 5965): the report names the
 * recipient (Original-Rcpt-To) and returns the headers of the copy it is about, `returned`.
 */
function arfReport(originalRcptTo: string, returned: readonly string[]): string {
  return [
    'From: fbl@provider.test',
    `To: ${FBL}`,
    'Subject: complaint',
    'MIME-Version: 1.0',
    'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"',
    '',
    '--b1',
    'Content-Type: text/plain',
    '',
    'A complaint about a message.',
    '--b1',
    'Content-Type: message/feedback-report',
    '',
    'Feedback-Type: abuse',
    'User-Agent: provider-fbl/1.0',
    'Version: 1',
    `Original-Rcpt-To: ${originalRcptTo}`,
    '',
    '--b1',
    'Content-Type: text/rfc822-headers',
    '',
    ...returned,
    '',
    '--b1--',
    '',
  ].join('\r\n');
}

/** What a copy's headers say of it, signed as the delivery role signs them (secret:verp, tracking's token key). */
function copyHeaders(id: string, idx: number, address: string): { returnPath: string; listUnsubscribe: string } {
  const listUnsubscribe = SIGNED.tracker.urls({ account: 'acme', msgId: id, idx, issuedAt: Math.floor(Date.now() / 1000), address }).headers['List-Unsubscribe'] as string;
  return { returnPath: `Return-Path: <${verpAddress(id, idx, BOUNCE_DOMAIN, SIGNED.verpKey)}>`, listUnsubscribe: `List-Unsubscribe: ${listUnsubscribe}` };
}

test('a co-recipient cannot have another recipient suppressed by an ARF report that names them and the Message-ID only: kept as ambiguous, listed, nothing acted on', async () => {
  const id = await sentMessage('acme', ['victim@dest.test', 'attacker@dest.test']);
  const before = count('outcome:ambiguous');
  // The attacker's own copy, its Return-Path and List-Unsubscribe left out, the victim named.
  const fid = await send(arfReport('victim@dest.test', [`Message-ID: <${id}@mta.sender.test>`, 'From: news@sender.test', 'To: victim@dest.test, attacker@dest.test', 'Subject: hi']), [FBL], ctx.signed);
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'victim@dest.test'), null, 'the victim is not suppressed');
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'attacker@dest.test'), null, 'nor anyone else');
  assert.equal(await eventsOf(id), [], 'no complaint counted against the sender');
  assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'ambiguous');
  assert.is(count('outcome:ambiguous'), before + 1, 'sluice_feedback_outcomes_total{outcome="ambiguous"}');
  assert.ok((await listUnprocessed(ctx.client, ctx.keys, 10_000)).some((u) => u.id === fid), 'listed for the operator (sluice bounce list)');
});

test("a DSN to the FBL address naming a copy by its Message-ID alone (anyone's to forge: ids are not secret) suppresses nobody; a complaint so named still counts", async () => {
  const id = await sentMessage('acme', ['victim@dest.test']);
  const forged = [
    'From: MAILER-DAEMON@attacker.test', `To: ${FBL}`, 'Subject: Undelivered Mail Returned to Sender', 'MIME-Version: 1.0',
    'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"', '',
    '--b1', 'Content-Type: text/plain', '', 'Your message could not be delivered.', '',
    '--b1', 'Content-Type: message/delivery-status', '', 'Reporting-MTA: dns; mx.attacker.test', '',
    'Final-Recipient: rfc822; victim@dest.test', 'Action: failed', 'Status: 5.1.1', 'Diagnostic-Code: smtp; 550 5.1.1 user unknown', '',
    '--b1', 'Content-Type: text/rfc822-headers', '', `Message-ID: <${id}@mta.sender.test>`, 'From: news@sender.test', 'To: victim@dest.test', 'Subject: hi', '',
    '--b1--', '',
  ].join('\r\n');
  await send(forged, [FBL]);
  assert.is(await suppressionOf(ctx.client, ctx.keys, GLOBAL_LIST, 'victim@dest.test'), null, 'not on the global list');
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'victim@dest.test'), null);
  assert.equal(await eventsOf(id), [], 'no bounce counted');
  await send(arfReport('victim@dest.test', [`Message-ID: <${id}@mta.sender.test>`, 'From: news@sender.test', 'To: victim@dest.test', 'Subject: hi']), [FBL]);
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', 'victim@dest.test'))?.reason, 'complaint', 'the complaint by Message-ID is acted on');
});

test('a complaint by Message-ID is about the returned message only: ids in its References and In-Reply-To (the rest of a thread) are not charged a complaint', async () => {
  const first = await sentMessage('acme', ['thread@dest.test']);
  const second = await sentMessage('acme', ['thread@dest.test']);
  const third = await sentMessage('acme', ['thread@dest.test']);
  await send(arfReport('thread@dest.test', [`Message-ID: <${third}@mta.sender.test>`, `In-Reply-To: <${second}@mta.sender.test>`, `References: <${first}@mta.sender.test> <${second}@mta.sender.test>`, 'Subject: re: hi']), [FBL], ctx.signed);
  assert.equal((await eventsOf(third)).map((e) => e['type']), ['complained']);
  assert.equal(await eventsOf(second), [], 'the message replied to is not complained of');
  assert.equal(await eventsOf(first), []);
  // A report about a message Sluice did not send, in reply to one it did: nothing acted on.
  const earlier = await sentMessage('acme', ['elsewhere@dest.test']);
  await send(arfReport('elsewhere@dest.test', ['Message-ID: <CAF+x=abc123@mail.gmail.com>', `References: <${earlier}@mta.sender.test>`, 'Subject: re: hi']), [FBL], ctx.signed);
  assert.equal(await eventsOf(earlier), []);
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'elsewhere@dest.test'), null);
});

test("an ARF report is matched by what only the copy it returns carries, each signed (VERP return path, List-Unsubscribe's https token or mailto), whatever recipient the report names", async () => {
  const cases: [string, (h: ReturnType<typeof copyHeaders>) => string[]][] = [
    ['return path', (h) => [h.returnPath]],
    ['both List-Unsubscribe forms', (h) => [h.listUnsubscribe]],
    ['https token', (h) => [h.listUnsubscribe.replace(/, <mailto:[^>]*>/, '')]],
    ['mailto', (h) => [`List-Unsubscribe: ${/<mailto:[^>]*>/.exec(h.listUnsubscribe)?.[0] ?? ''}`]],
  ];
  for (const [name, pick] of cases) {
    const id = await sentMessage('acme', [`named-${name.length}@dest.test`, `reporter-${name.length}@dest.test`]);
    const h = copyHeaders(id, 1, `reporter-${name.length}@dest.test`);
    // A provider that writes the wrong recipient, or a forger, names index 0: the signed copy is index 1.
    await send(arfReport(`named-${name.length}@dest.test`, [...pick(h), `Message-ID: <${id}@mta.sender.test>`, 'Subject: hi']), [FBL], ctx.signed);
    assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', `reporter-${name.length}@dest.test`))?.reason, 'complaint', name);
    assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', `named-${name.length}@dest.test`), null, name);
    assert.equal((await eventsOf(id)).map((e) => [e['type'], e['idx']]), [['complained', '1']], name);
  }
  // The same headers signed with other keys are the forger's: not the copy, so Message-ID only, ambiguous.
  const id = await sentMessage('acme', ['other-key-a@dest.test', 'other-key-b@dest.test']);
  const forged = [
    `Return-Path: <${verpAddress(id, 0, BOUNCE_DOMAIN, randomBytes(32))}>`,
    `List-Unsubscribe: <https://t.sender.test/u/${createTokenCodec({ keys: [{ id: 'k1', secret: randomBytes(32) }], signWith: 'k1' }).sign({ kind: 'u', account: 'acme', msgId: id, idx: 0, issuedAt: 1 })}>, <mailto:${unsubscribeMailtoAddress(id, 0, BOUNCE_DOMAIN, randomBytes(32))}>`,
    `Message-ID: <${id}@mta.sender.test>`,
  ];
  const fid = await send(arfReport('other-key-a@dest.test', forged), [FBL], ctx.signed);
  assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'ambiguous');
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'other-key-a@dest.test'), null);
});

test('a report quoting more candidate copies than a report would (guessed tags) is garbage: not searched, kept as unparsed, nobody suppressed; repeats of one copy are not guesses', async () => {
  const id = await sentMessage('acme', ['guessed@dest.test']);
  // Each guess costs the MX an HMAC: a forger quotes many, hoping one tag is right. The real copy's
  // return path is among them here; so many candidates are not a report, whichever one is right.
  const guesses = Array.from({ length: MAX_QUOTED_CANDIDATES }, (_, i) => `X-Guess: <mailto:u-${id}-${i}-${newId().slice(8)}@${BOUNCE_DOMAIN}>`);
  const before = count('outcome:unparsed');
  const fid = await send(arfReport('guessed@dest.test', [`Return-Path: <${verpAddress(id, 0, BOUNCE_DOMAIN, SIGNED.verpKey)}>`, ...guesses, 'Subject: hi']), [FBL], ctx.signed);
  assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'unparsed');
  assert.is(count('outcome:unparsed'), before + 1);
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'guessed@dest.test'), null);
  assert.equal(await eventsOf(id), []);
  // One copy's return path quoted as often: one candidate, acted on.
  const repeated = Array.from({ length: MAX_QUOTED_CANDIDATES + 10 }, () => `X-Quoted: <${verpAddress(id, 0, BOUNCE_DOMAIN, SIGNED.verpKey)}>`);
  await send(arfReport('guessed@dest.test', [...repeated, 'Subject: hi']), [FBL], ctx.signed);
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', 'guessed@dest.test'))?.reason, 'complaint');
});

test("the corpus's ARF reports: matched by Message-ID for a message of one recipient, ambiguous for several, and by the returned copy's List-Unsubscribe", async () => {
  const rows = readFileSync(join(CORPUS_DIR, 'dev.jsonl'), 'utf8').split('\n').filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { file: string; recipient: string | null; mta: string; feedbacktype: string | null });
  let files = 0;
  for (const row of rows) {
    if (row.mta !== 'ARF' || row.recipient === null) continue;
    const raw = readFileSync(join(CORPUS_DIR, row.file), 'latin1');
    const eol = raw.includes('\r\n') ? '\r\n' : '\n';
    // The returned message starts after its part's headers.
    const part = /^content-type:\s*(?:message\/rfc822|text\/rfc822-headers)/im.exec(raw);
    const start = part ? raw.indexOf(`${eol}${eol}`, part.index) : -1;
    if (start < 0) continue;
    files++;
    // What the report's type makes of the copy (bounces/verdict.ts): an auth-failure report is not a complaint.
    const type = row.feedbacktype === 'auth-failure' ? 'feedback' : row.feedbacktype === 'opt-out' ? 'unsubscribed' : 'complained';
    const into = (lines: string[]) => Buffer.from(raw.slice(0, start + 2 * eol.length) + lines.map((l) => l + eol).join('') + raw.slice(start + 2 * eol.length), 'latin1');

    const solo = await sentMessage('acme', [row.recipient]);
    await send(into([`Message-ID: <${solo}@mta.sender.test>`]), [FBL], ctx.signed);
    assert.equal((await eventsOf(solo)).map((e) => [e['type'], e['idx']]), [[type, '0']], `${row.file}: one recipient, by Message-ID`);

    const shared = await sentMessage('acme', [row.recipient, `co-${files}@dest.test`]);
    const fid = await send(into([`Message-ID: <${shared}@mta.sender.test>`]), [FBL], ctx.signed);
    assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'ambiguous', `${row.file}: two recipients, by Message-ID`);
    assert.equal(await eventsOf(shared), [], row.file);

    const signed = await sentMessage('acme', [`co-${files}@dest.test`, row.recipient]);
    await send(into([copyHeaders(signed, 1, row.recipient).listUnsubscribe, `Message-ID: <${signed}@mta.sender.test>`]), [FBL], ctx.signed);
    assert.equal((await eventsOf(signed)).map((e) => [e['type'], e['idx']]), [[type, '1']], `${row.file}: by List-Unsubscribe`);
  }
  assert.ok(files >= 4, `${files} corpus reports return their message`);
});

test('an auto-reply suppresses nothing and is reported as an auto-reply', async () => {
  const id = await sentMessage('acme', ['away@dest.test']);
  await send(corpus('rfc3834-01.eml'), [verpAddress(id, 0, BOUNCE_DOMAIN)]);
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'away@dest.test'), null);
  const evs = await eventsOf(id);
  assert.equal(evs.map((e) => e['type']), ['autoreply']);
});

test('a policy block or a blocked sender suppresses nothing: it is the sender\'s problem', async () => {
  for (const file of ['lhost-postfix-41.eml', 'lhost-exim-01.eml']) {
    const id = await sentMessage('acme', [`policy-${file}@dest.test`]);
    await send(corpus(file), [verpAddress(id, 0, BOUNCE_DOMAIN)]);
    assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', `policy-${file}@dest.test`), null, file);
    const [ev] = await eventsOf(id);
    assert.is(ev?.['type'], 'bounced', file);
    assert.is(ev?.['fault'], 'sender', file);
    assert.is(ev?.['suppressed'], undefined, file);
  }
});

test('soft bounces suppress only once the configured number is reached within the window', async () => {
  const address = 'full@dest.test';
  const first = await sentMessage('acme', [address]);
  await send(corpus('lhost-postfix-45.eml'), [verpAddress(first, 0, BOUNCE_DOMAIN)]);
  // The same copy bouncing twice is one soft bounce, not two.
  await send(corpus('lhost-postfix-45.eml'), [verpAddress(first, 0, BOUNCE_DOMAIN)]);
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', address), null, 'one soft bounce does not suppress');
  const second = await sentMessage('acme', [address]);
  await send(corpus('lhost-postfix-45.eml'), [verpAddress(second, 0, BOUNCE_DOMAIN)]);
  const s = await suppressionOf(ctx.client, ctx.keys, 'acme', address);
  assert.is(s?.list, GLOBAL_LIST);
  assert.is(s?.reason, 'softbounce');
});

test('mail to a verified unsubscribe address unsubscribes the recipient from that account', async () => {
  const id = await sentMessage('acme', ['leaver@dest.test']);
  await send('From: leaver@dest.test\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n', [unsubscribeAddress(`ok.${id}.0`, BOUNCE_DOMAIN)]);
  const s = await suppressionOf(ctx.client, ctx.keys, 'acme', 'leaver@dest.test');
  assert.is(s?.list, 'acme');
  assert.is(s?.reason, 'unsubscribe');
  // Marked and counted as the one-click POST is: first, then a repeat that is not counted again.
  await send('From: leaver@dest.test\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n', [unsubscribeAddress(`ok.${id}.0`, BOUNCE_DOMAIN)]);
  const events = (await ctx.client.xrange(ctx.keys.events(), '-', '+'))
    .map(([, flat]) => Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]])) as Record<string, string>)
    .filter((e) => e['type'] === 'unsubscribed' && e['msgId'] === id);
  assert.equal(events.map((e) => [e['first'], e['via'], e['idx'], e['account']]), [['1', 'mail', '0', 'acme'], ['0', 'mail', '0', 'acme']]);
  assert.is((await readEngagement(ctx.client, ctx.keys, id)).unsubscribes, 1, "the message's unsubscribes count the recipient once");
  const forged = await refusal('Subject: x\r\n\r\nx\r\n', [unsubscribeAddress(`forged.${id}.0`, BOUNCE_DOMAIN)]);
  assert.is(forged.responseCode, 550);
});

test("mail to a copy's short mailto unsubscribe address (u-<msgId>-<idx>-<tag>) unsubscribes the recipient; a wrong tag is refused", async () => {
  const verpKey = randomBytes(32);
  const mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger: pino({ level: 'silent' }) },
    { host: '127.0.0.1', port: 0, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [], maxMessageSize: MAX_SIZE, rawRetentionMs: 3_600_000, softBounceLimit: 2, softBounceWindowMs: 86_400_000, verpKey },
  );
  try {
    const id = await sentMessage('acme', ['keep@dest.test', 'quitter@dest.test']);
    const to = unsubscribeMailtoAddress(id, 1, BOUNCE_DOMAIN, verpKey);
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: mx.port, secure: false, ignoreTLS: true });
    try {
      // As a mail client sends it: the address upper-cased by some, which is the same address.
      const order = await writeOrder(ctx.keys.suppression('acme'), async () => {
        await transport.sendMail({ envelope: { from: 'quitter@dest.test', to: [to.toUpperCase()] }, raw: 'From: quitter@dest.test\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n' });
        await mx.idle();
      });
      const entry = await suppressionOf(ctx.client, ctx.keys, 'acme', 'quitter@dest.test');
      assert.is(entry?.reason, 'unsubscribe');
      // Suppressed before the event says so, then given the event's id as evidence.
      assert.equal(order, ['suppression:hset', 'events:xadd', 'suppression:hset']);
      const [event] = (await ctx.client.xrange(ctx.keys.events(), '-', '+')).filter(([, f]) => f.includes(id) && f.includes('unsubscribed'));
      assert.is(entry?.evidence['event'], event?.[0]);
      assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'keep@dest.test'), null, 'the other recipient is not');
      const wrong = unsubscribeMailtoAddress(id, 0, BOUNCE_DOMAIN, randomBytes(32));
      const refused = await transport.sendMail({ envelope: { from: 'x@dest.test', to: [wrong] }, raw: 'Subject: x\r\n\r\nx\r\n' }).then(() => null, (err: { responseCode?: number }) => err.responseCode);
      assert.is(refused, 550);
      assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'keep@dest.test'), null);
    } finally {
      transport.close();
    }
  } finally {
    await mx.close();
  }
});

test("feedback about a message of an account whose deletion is due writes nothing: a hard bounce, a complaint and a mail unsubscribe are dropped as 'account-deleted'", async () => {
  // The retention walk removes such an account's keys in keyspace order: a suppression, mark or event
  // written behind it would outlive the deletion (as the tracking server's unsubscribe refuses).
  const id = await sentMessage('closing', ['hard@dest.test', 'complainer@dest.test', 'leaver@dest.test']);
  await closeAccount(ctx.client, ctx.keys, 'closing', { now: Date.now() - 1000, windowMs: 1000, by: 'cli' });
  const keysBefore = new Set(await ctx.client.keys('*'));
  const before = count('outcome:account-deleted');
  const fids = [
    await send(corpus('lhost-postfix-05.eml'), [verpAddress(id, 0, BOUNCE_DOMAIN)]),
    await send(corpus('arf-14.eml'), [verpAddress(id, 1, BOUNCE_DOMAIN)]),
    await send('From: leaver@dest.test\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n', [unsubscribeAddress(`ok.${id}.2`, BOUNCE_DOMAIN)]),
  ];
  for (const address of ['hard@dest.test', 'complainer@dest.test', 'leaver@dest.test']) {
    assert.is(await suppressionOf(ctx.client, ctx.keys, 'closing', address), null, `${address} is not suppressed, globally or for the account`);
  }
  assert.equal(await eventsOf(id), [], 'no event');
  assert.is((await readEngagement(ctx.client, ctx.keys, id)).unsubscribes, 0, 'no unsubscribe counted');
  const added = (await ctx.client.keys('*')).filter((k) => !keysBefore.has(k) && k !== ctx.keys.feedbackPending());
  assert.equal(added, [], 'no key written but the feedback bookkeeping');
  // Kept, each mail would carry the deleted account's recipient past the deletion: dropped, counted.
  for (const fid of fids) assert.is(await loadFeedback(ctx.client, ctx.keys, fid), null);
  assert.is(count('outcome:account-deleted'), before + 3);

  // While the deletion is not due, the same account's feedback is acted on (its data is kept, and what
  // is written goes with it).
  const kept = await sentMessage('closing-later', ['later@dest.test']);
  await closeAccount(ctx.client, ctx.keys, 'closing-later', { now: Date.now(), windowMs: 86_400_000, by: 'cli' });
  await send(corpus('arf-14.eml'), [verpAddress(kept, 0, BOUNCE_DOMAIN)]);
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'closing-later', 'later@dest.test'))?.reason, 'complaint');
});

test('the inbound MX refuses every other recipient with 550 5.1.1 and relays nothing', async () => {
  const before = await ctx.client.keys(`${ctx.keys.prefix}{f:*`);
  const id = await sentMessage('acme', ['x@dest.test']);
  for (const to of ['victim@gmail.com', `nobody@${BOUNCE_DOMAIN}`, `abuse@${BOUNCE_DOMAIN}`, 'postmaster@gmail.com', `postmaster.x@${BOUNCE_DOMAIN}`, verpAddress(id, 0, 'other-domain.test'), 'b-nonsense-1@bounce.test', `fbl@${BOUNCE_DOMAIN}`]) {
    const err = await refusal('Subject: relay me\r\n\r\nhello\r\n', [to]);
    assert.is(err.responseCode, 550, to);
    assert.match(String(err.response), /5\.1\.1/, to);
  }
  const after = await ctx.client.keys(`${ctx.keys.prefix}{f:*`);
  assert.is(after.length, before.length, 'nothing was stored, so nothing can be relayed');
  assert.ok(count('rejected:SLUICE_FEEDBACK_NO_SUCH_RECIPIENT') >= 8);
});

test('mail to postmaster (any case, on each bounce domain and FBL domain, or bare <Postmaster>) is accepted, stored, counted, listed and logged, never acted on', async () => {
  const lines: { level: number; msg: string; feedbackId?: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as (typeof lines)[number]) });
  const received: string[] = [];
  const outcomes: string[] = [];
  const mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger, metrics: { received: (k) => received.push(k), outcome: (o) => outcomes.push(o) } },
    // delivery.bounceDomain and one of feedback.extraBounceDomains, as the role passes them.
    { host: '127.0.0.1', port: 0, tls: ctx.tls, bounceDomains: [BOUNCE_DOMAIN, 'old-bounce.test'], fblAddresses: [FBL], maxMessageSize: MAX_SIZE, rawRetentionMs: 3_600_000 },
  );
  try {
    // A person's mail quoting our VERP return path: read by the operator, not taken as a complaint.
    const id = await sentMessage('acme', ['quoted@dest.test']);
    const mail = `From: admin@provider.test\r\nSubject: your mail is blocked\r\n\r\nWe block mail with Return-Path: <${verpAddress(id, 0, BOUNCE_DOMAIN)}>.\r\n`;
    const ids: string[] = [];
    for (const to of [`postmaster@${BOUNCE_DOMAIN}`, 'PostMaster@Old-Bounce.TEST', 'postmaster@feedback.test']) ids.push(await send(mail, [to], mx));
    // RFC 5321 §4.1.1.3: RCPT TO:<Postmaster>, no domain (nodemailer will not send that).
    const { client: c } = await RawSmtp.open(mx.port);
    try {
      await c.cmd('EHLO client.test');
      assert.is((await c.cmd('MAIL FROM:<admin@provider.test>')).code, 250);
      assert.match((await c.cmd('RCPT TO:<Postmaster>')).text, /^250 2\.1\.5 /);
      assert.is((await c.cmd('DATA')).code, 354);
      const stored = await c.cmd(`${mail}.`);
      const bare = /stored as (\S+)/.exec(stored.text)?.[1];
      assert.ok(bare, stored.text);
      ids.push(bare);
      assert.is((await c.cmd('QUIT')).code, 221);
    } finally {
      c.close();
    }
    await mx.idle();
    assert.equal(received, ['postmaster', 'postmaster', 'postmaster', 'postmaster'], 'sluice_feedback_received_total{kind="postmaster"}');
    assert.equal(outcomes, ['unparsed', 'unparsed', 'unparsed', 'unparsed']);
    const listed = new Set((await listUnprocessed(ctx.client, ctx.keys, 10_000)).map((u) => u.id));
    for (const [i, fid] of ids.entries()) {
      const kept = await loadFeedback(ctx.client, ctx.keys, fid);
      assert.is(kept?.outcome, 'unparsed', fid);
      assert.ok(kept?.raw.toString().includes('your mail is blocked'), 'kept whole');
      // smtp-server lowers the domain, keeps the local part as sent.
      assert.equal(kept?.rcpts, [[`postmaster@${BOUNCE_DOMAIN}`, 'PostMaster@old-bounce.test', 'postmaster@feedback.test', 'Postmaster'][i]]);
      assert.ok(listed.has(fid), 'in the index an operator lists (sluice bounce list)');
      const ttl = await ctx.client.pttl(ctx.keys.feedbackRaw(fid));
      assert.ok(ttl > 0 && ttl <= 3_600_000, `kept for the retention: ${ttl}`);
      assert.ok(lines.some((l) => l.level === 40 && l.feedbackId === fid && l.msg.startsWith('mail to postmaster stored')), `a warning names ${fid}`);
    }
    assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'quoted@dest.test'), null, 'nothing acted on');
    assert.equal(await eventsOf(id), []);
    // The same limits as any feedback mail.
    const huge = 'Subject: big\r\n\r\n' + ('x'.repeat(998) + '\r\n').repeat(Math.ceil((MAX_SIZE + 4096) / 1000));
    assert.is((await refusal(huge, [`postmaster@${BOUNCE_DOMAIN}`], mx)).responseCode, 552);
  } finally {
    await mx.close();
  }
});

test("mail to postmaster and to a VERP address in one delivery is acted on for the VERP and still listed for the operator; an erased recipient's is dropped", async () => {
  const id = await sentMessage('acme', ['both@dest.test']);
  const fid = await send(corpus('lhost-postfix-05.eml'), [`postmaster@${BOUNCE_DOMAIN}`, verpAddress(id, 0, BOUNCE_DOMAIN)]);
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', 'both@dest.test'))?.reason, 'hardbounce', 'the VERP part is processed');
  assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'processed');
  assert.ok((await listUnprocessed(ctx.client, ctx.keys, 10_000)).some((u) => u.id === fid), 'the postmaster copy is listed (sluice bounce list)');
  // Without postmaster, mail acted on is not listed.
  const other = await sentMessage('acme', ['verp-only@dest.test']);
  const quiet = await send(corpus('lhost-postfix-05.eml'), [verpAddress(other, 0, BOUNCE_DOMAIN)]);
  assert.not.ok((await listUnprocessed(ctx.client, ctx.keys, 10_000)).some((u) => u.id === quiet));
  // An erased recipient's: postmaster or not, the mail would keep the person (their VERP address, the
  // bounce naming them) past the erasure, and the tombstone holds no address to redact: dropped.
  // (Two recipients, so the record is kept with a tombstone in it: a message erased whole is
  // feedback/tombstone.test.ts.)
  const erased = await sentMessage('acme', ['gone@dest.test', 'stays@dest.test']);
  await indexAddresses(ctx.client, ctx.keys, [{ address: 'gone@dest.test', ref: { kind: 'm', msgId: erased, idx: 0 }, at: Date.now() }], 3_600_000);
  await eraseAddress(ctx.client, ctx.keys, 'gone@dest.test', { accounts: ['acme'], all: true }, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'hmac:test' });
  const dropped = await send(corpus('lhost-postfix-05.eml'), [`postmaster@${BOUNCE_DOMAIN}`, verpAddress(erased, 0, BOUNCE_DOMAIN)]);
  assert.is(await loadFeedback(ctx.client, ctx.keys, dropped), null);
  assert.not.ok((await listUnprocessed(ctx.client, ctx.keys, 10_000)).some((u) => u.id === dropped));
});

test('MAIL FROM and RCPT TO parameters the MX does not advertise (DSN, AUTH) → 555 5.5.4; a non-ASCII address without SMTPUTF8 → 553 5.6.7', async () => {
  const id = await sentMessage('acme', ['params@dest.test']);
  const verp = verpAddress(id, 0, BOUNCE_DOMAIN);
  const { client: c } = await RawSmtp.open(ctx.mx.port);
  try {
    assert.is((await c.cmd('EHLO client.test')).code, 250);
    // (REQUIRETLS gets smtp-server's own 530 on this plain-text port.)
    for (const params of ['FOO=BAR', 'RET=HDRS ENVID=x', 'AUTH=<>']) {
      const r = await c.cmd(`MAIL FROM:<mailer-daemon@elsewhere.test> ${params}`);
      assert.is(r.code, 555, `${params}: ${r.text}`);
      assert.match(r.text, /^555 5\.5\.4 /, params);
    }
    const utf8From = await c.cmd('MAIL FROM:<pöstmaster@elsewhere.test>');
    assert.is(utf8From.code, 553, utf8From.text);
    assert.match(utf8From.text, /^553 5\.6\.7 /);
    assert.is((await c.cmd('MAIL FROM:<> SIZE=2000 BODY=8BITMIME')).code, 250);
    const notify = await c.cmd(`RCPT TO:<${verp}> NOTIFY=NEVER`);
    assert.is(notify.code, 555, notify.text);
    assert.match(notify.text, /^555 5\.5\.4 /);
    const utf8Rcpt = await c.cmd(`RCPT TO:<ü${verp}>`);
    assert.is(utf8Rcpt.code, 553, utf8Rcpt.text);
    assert.match(utf8Rcpt.text, /^553 5\.6\.7 /);
    assert.is((await c.cmd(`RCPT TO:<${verp}>`)).code, 250, 'the transaction goes on');
    assert.is((await c.cmd('QUIT')).code, 221);
  } finally {
    c.close();
  }
  assert.ok(count('rejected:SLUICE_SMTP_PARAM_UNSUPPORTED') >= 4);
  assert.ok(count('rejected:SLUICE_SMTP_UTF8_REQUIRED') >= 2);
});

test('guessing VERP and unsubscribe tags: the 20th refused RCPT of a connection is 421 4.7.0 and closes it; a new connection is served, the right address accepted', async () => {
  const id = await sentMessage('acme', ['guessed@dest.test']);
  const verp = verpAddress(id, 0, BOUNCE_DOMAIN, SIGNED.verpKey);
  const wrong = (i: number) => (i % 2 === 0 ? verp.replace(/-[0-9a-z]{8}@/, `-${String(i).padStart(8, 'a')}@`) : `u-${id}-0-${String(i).padStart(8, 'a')}@${BOUNCE_DOMAIN}`);
  const { client: c } = await RawSmtp.open(ctx.signed.port);
  try {
    assert.is((await c.cmd('EHLO client.test')).code, 250);
    assert.is((await c.cmd('MAIL FROM:<>')).code, 250);
    for (let i = 1; i < 20; i++) assert.is((await c.cmd(`RCPT TO:<${wrong(i)}>`)).code, 550, `guess ${i}`);
    // A new transaction on the same connection does not start the count again.
    assert.is((await c.cmd('RSET')).code, 250);
    assert.is((await c.cmd('MAIL FROM:<>')).code, 250);
    const last = await c.cmd(`RCPT TO:<${wrong(20)}>`);
    assert.match(last.text, /^421 4\.7\.0 /);
    await c.closed;
  } finally {
    c.close();
  }
  assert.ok(count('rejected:SLUICE_FEEDBACK_GUESSING') >= 1);
  const { client: again } = await RawSmtp.open(ctx.signed.port);
  try {
    assert.is((await again.cmd('EHLO client.test')).code, 250);
    assert.is((await again.cmd('MAIL FROM:<>')).code, 250);
    assert.is((await again.cmd(`RCPT TO:<${wrong(2)}>`)).code, 550, 'a new connection has its own count');
    assert.is((await again.cmd(`RCPT TO:<${verp}>`)).code, 250);
    assert.is((await again.cmd('QUIT')).code, 221);
  } finally {
    again.close();
  }
});

test('the MX advertises ENHANCEDSTATUSCODES and every reply after EHLO carries one code, Sluice\'s own not doubled', async () => {
  const id = await sentMessage('acme', ['codes@dest.test']);
  const { client: c } = await RawSmtp.open(ctx.mx.port);
  const expect = async (line: string, reply: RegExp) => {
    const r = await c.cmd(line);
    assert.match(r.text, reply, `${line} → ${r.text}`);
  };
  try {
    assert.ok((await c.cmd('EHLO client.test')).text.split('\n').includes('250-ENHANCEDSTATUSCODES'));
    await expect('AUTH PLAIN AGFAYg==', /^500 5\.5\.2 /);
    await expect('DATA', /^503 5\.5\.1 /);
    await expect(`MAIL FROM:<> SIZE=${MAX_SIZE + 1}`, /^552 5\.3\.4 /);
    await expect('MAIL FROM:<>', /^250 2\.1\.0 /);
    await expect('RCPT TO:<victim@gmail.com>', /^550 5\.1\.1 No such recipient here: this server accepts only bounces and feedback \[[A-Za-z0-9]+\]$/);
    await expect(`RCPT TO:<${verpAddress(id, 0, BOUNCE_DOMAIN)}>`, /^250 2\.1\.5 /);
    await expect('RSET', /^250 2\.0\.0 /);
    await expect('QUIT', /^221 2\.0\.0 /);
  } finally {
    c.close();
  }
});

test('the MX offers STARTTLS and never requires it: a DSN over TLS is processed as one in plain text is (the suppression happens)', async () => {
  const { client: c } = await RawSmtp.open(ctx.mx.port);
  try {
    const plain = (await c.cmd('EHLO client.test')).text.split('\n');
    assert.ok(plain.includes('250-STARTTLS'), plain.join(' | '));
    const secure = (await c.startTls()).text.split('\n');
    assert.is(secure[0]?.slice(0, 4), '250-', secure.join(' | '));
    assert.not.ok(secure.some((l) => /STARTTLS|REQUIRETLS/.test(l)), `no second STARTTLS, no REQUIRETLS promise: ${secure.join(' | ')}`);
    assert.match((await c.cmd('MAIL FROM:<> REQUIRETLS')).text, /^555 5\.5\.4 /);
  } finally {
    c.close();
  }
  const id = await sentMessage('acme', ['tls-first@dest.test', 'tls-alice@dest.test']);
  const fid = await send(corpus('lhost-postfix-05.eml'), [verpAddress(id, 1, BOUNCE_DOMAIN)], ctx.mx, true);
  const s = await suppressionOf(ctx.client, ctx.keys, 'acme', 'tls-alice@dest.test');
  assert.is(s?.list, GLOBAL_LIST);
  assert.is(s?.reason, 'hardbounce');
  assert.is(s?.evidence['feedbackId'], fid);
  assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'processed');
  assert.equal((await eventsOf(id)).map((e) => [e['type'], e['idx'], e['reason']]), [['bounced', '1', 'userunknown']]);
  // The same in plain text, on the same server.
  const other = await sentMessage('acme', ['plain-alice@dest.test']);
  await send(corpus('lhost-postfix-05.eml'), [verpAddress(other, 0, BOUNCE_DOMAIN)]);
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', 'plain-alice@dest.test'))?.reason, 'hardbounce');
});

test("the MX's STARTTLS pair: feedback.tlsKey/tlsCert when set, else ingress.smtp's (its files, or the generated pair); one without the other is refused", async () => {
  const config = (dataDir: string, smtp: object, feedback: object) =>
    loadConfig({ env: {}, overrides: { instance: { hostname: 'mx.sluice.test', dataDir }, ingress: { smtp }, feedback } });
  const none = { tlsKey: null, tlsCert: null };
  assert.ok(ctx.tls.cert.equals((await loadOrCreateTls(config(ctx.dataDir, none, none))).cert), "null: submission's generated pair");
  const other = mkdtempSync(join(tmpdir(), 'sluice-mx-'));
  try {
    const submission = await loadOrCreateTls(config(other, none, none));
    assert.not.ok(submission.cert.equals(ctx.tls.cert));
    const files = (dir: string) => ({ tlsKey: join(dir, 'tls', 'submission-key.pem'), tlsCert: join(dir, 'tls', 'submission-cert.pem') });
    // The files configured for submission, whatever dataDir holds.
    assert.ok((await loadOrCreateTls(config(ctx.dataDir, files(other), none), 'feedback')).cert.equals(submission.cert));
    // The MX's own files win over submission's.
    assert.ok((await loadOrCreateTls(config(other, files(other), files(ctx.dataDir)), 'feedback')).cert.equals(ctx.tls.cert));
    await loadOrCreateTls(config(other, none, { tlsKey: files(other).tlsKey, tlsCert: null }), 'feedback').then(
      () => assert.unreachable('a key without a certificate was taken'),
      (err: { code?: string; message: string }) => {
        assert.is(err.code, 'SLUICE_CONFIG_INVALID');
        assert.match(err.message, 'feedback.tlsKey and feedback.tlsCert must be set together');
      },
    );
  } finally {
    rmSync(other, { recursive: true, force: true });
  }
});

test('commands pipelined after STARTTLS are discarded, not run inside the TLS session (RFC 3207 §5)', async () => {
  const id = await sentMessage('acme', ['injected@dest.test']);
  const verp = verpAddress(id, 0, BOUNCE_DOMAIN);
  const dsn = corpus('lhost-postfix-05.eml').toString('latin1').replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
  const before = (await ctx.client.keys(`${ctx.keys.prefix}{f:*`)).length;
  const { client: c } = await RawSmtp.open(ctx.mx.port);
  try {
    const ehlo = await c.startTls({ pipelined: `MAIL FROM:<>\r\nRCPT TO:<${verp}>\r\nDATA\r\n${dsn}\r\n.\r\n` });
    assert.is(ehlo.code, 250, `the first reply over TLS answers the client's EHLO: ${ehlo.text}`);
    assert.ok(ehlo.text.split('\n').includes('250-ENHANCEDSTATUSCODES'), ehlo.text);
    const rcpt = await c.cmd(`RCPT TO:<${verp}>`);
    assert.match(rcpt.text, /^503 5\.5\.1 /, `no MAIL FROM was taken: ${rcpt.text}`);
    assert.is((await c.cmd('QUIT')).code, 221);
  } finally {
    c.close();
  }
  await ctx.mx.idle();
  assert.is((await ctx.client.keys(`${ctx.keys.prefix}{f:*`)).length, before, 'the injected mail was not stored');
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'injected@dest.test'), null);
});

test('a TLS handshake that breaks (bytes that are not TLS, a client refusing the certificate) ends that connection only; the MX serves on', async () => {
  const { client: a } = await RawSmtp.open(ctx.mx.port);
  assert.is((await a.cmd('EHLO client.test')).code, 250);
  assert.is((await a.cmd('STARTTLS')).code, 220);
  await a.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await a.closed;
  const { client: b } = await RawSmtp.open(ctx.mx.port);
  try {
    // A verifying client refuses the self-signed certificate and aborts the handshake.
    await b.startTls({ tls: { rejectUnauthorized: true, servername: 'mx.sluice.test' } }).then(
      () => assert.unreachable('the self-signed certificate was accepted'),
      (err: Error) => assert.match(err.message, /self.signed|certificate/i),
    );
  } finally {
    b.close();
  }
  const id = await sentMessage('acme', ['after-broken-tls@dest.test']);
  await send(corpus('lhost-postfix-05.eml'), [verpAddress(id, 0, BOUNCE_DOMAIN)], ctx.mx, true);
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', 'after-broken-tls@dest.test'))?.reason, 'hardbounce');
});

test('a TLS handshake a client breaks (a scanner\'s HTTP request after STARTTLS) is logged at info, routine on a public port, not as a warning', async () => {
  const lines: { level: number; msg: string; err?: { code?: string } }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger },
    { host: '127.0.0.1', port: 0, tls: ctx.tls, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: MAX_SIZE, rawRetentionMs: 3_600_000 },
  );
  try {
    const { client } = await RawSmtp.open(mx.port);
    assert.is((await client.cmd('EHLO scanner.test')).code, 250);
    assert.is((await client.cmd('STARTTLS')).code, 220);
    await client.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await client.closed;
    const errors = () => lines.filter((l) => l.msg === 'feedback mx connection error');
    for (let i = 0; errors().length === 0; i++) {
      assert.ok(i < 100, 'the broken handshake is logged');
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const e of errors()) assert.is(e.level, 30, `logged at info: ${JSON.stringify(e)}`);
  } finally {
    await mx.close();
  }
});

test('binary garbage to a VERP address is stored, counted as unparsed and listed, and never crashes', async () => {
  const id = await sentMessage('acme', ['garbage@dest.test']);
  const before = count('outcome:unparsed');
  const garbage = randomBytes(64 * 1024);
  const fid = await send(garbage, [verpAddress(id, 0, BOUNCE_DOMAIN)]);
  const stored = await loadFeedback(ctx.client, ctx.keys, fid);
  assert.ok(stored, 'kept');
  assert.is(stored.outcome, 'unparsed');
  assert.ok(stored.raw.length >= garbage.length - 1024, 'the raw bytes are kept');
  assert.is(count('outcome:unparsed'), before + 1);
  assert.ok((await listUnprocessed(ctx.client, ctx.keys, 1000)).some((u) => u.id === fid), 'an operator can find it');
  assert.is(await suppressionOf(ctx.client, ctx.keys, 'acme', 'garbage@dest.test'), null);
});

test('truncated DSNs and mail for unknown messages are kept and counted; the server stays up', async () => {
  const dsn = corpus('lhost-postfix-05.eml');
  const id = await sentMessage('acme', ['truncated@dest.test']);
  for (const cut of [1, 200, Math.floor(dsn.length / 2), dsn.length - 40]) {
    const fid = await send(dsn.subarray(0, cut), [verpAddress(id, 0, BOUNCE_DOMAIN)]);
    const stored = await loadFeedback(ctx.client, ctx.keys, fid);
    assert.ok(stored && stored.outcome !== '', `cut at ${cut} was stored and processed`);
  }
  // A well-formed VERP whose message is gone (purged): kept, counted unmatched, nothing suppressed.
  const before = count('outcome:unmatched');
  const fid = await send(dsn, [verpAddress(newId(), 0, BOUNCE_DOMAIN)]);
  assert.is((await loadFeedback(ctx.client, ctx.keys, fid))?.outcome, 'unmatched');
  assert.is(count('outcome:unmatched'), before + 1);
});

test('a mail over the size limit is refused with 552 and the next one is accepted', async () => {
  const id = await sentMessage('acme', ['big@dest.test']);
  const huge = 'Subject: big\r\n\r\n' + ('x'.repeat(998) + '\r\n').repeat(Math.ceil((MAX_SIZE + 4096) / 1000));
  const err = await refusal(huge, [verpAddress(id, 0, BOUNCE_DOMAIN)]);
  assert.is(err.responseCode, 552);
  await send(corpus('lhost-postfix-05.eml'), [verpAddress(id, 0, BOUNCE_DOMAIN)]);
  assert.is((await suppressionOf(ctx.client, ctx.keys, 'acme', 'big@dest.test'))?.reason, 'hardbounce');
});

test('mail held in memory is bounded over all sessions: beyond maxBufferedBytes a message gets 452 4.3.1, and the bytes come back once mail is processed', async () => {
  const mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger: pino({ level: 'silent' }) },
    { host: '127.0.0.1', port: 0, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: MAX_SIZE, rawRetentionMs: 3_600_000, maxBufferedBytes: 16 * 1024 },
  );
  try {
    const to = [verpAddress(newId(), 0, BOUNCE_DOMAIN)];
    const big = 'Subject: big\r\n\r\n' + ('x'.repeat(998) + '\r\n').repeat(30); // ~30 KB: under maxMessageSize, over the budget
    const err = await refusal(big, to, mx);
    assert.is(err.responseCode, 452, err.response);
    assert.match(err.response ?? '', '4.3.1');
    // Each DSN is a few KB: 40 of them in a row are several times the budget, so each one's bytes must have been given back.
    const dsn = corpus('lhost-postfix-05.eml');
    assert.ok(dsn.length * 40 > 4 * 16 * 1024, `${dsn.length} bytes`);
    for (let i = 0; i < 40; i++) await send(dsn, to, mx);
    await mx.idle();
    assert.is(mx.bufferedBytes(), 0, 'every byte given back once processed (sluice_buffered_bytes{server="feedback"})');
  } finally {
    await mx.close();
  }
});

test("feedback mail kept in Redis is bounded: beyond maxStoredBytes a message gets 452 4.3.1 and nothing is stored; the count is by day and mail past the retention no longer counts", async () => {
  const t0 = Date.now();
  let clock = t0;
  const mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger: pino({ level: 'silent' }), now: () => clock },
    { host: '127.0.0.1', port: 0, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: MAX_SIZE, rawRetentionMs: 2 * 86_400_000, maxStoredBytes: 64 * 1024 },
  );
  try {
    await ctx.client.del(ctx.keys.feedbackStored()); // what the file's other tests stored
    const to = [`postmaster@${BOUNCE_DOMAIN}`];
    const mail = 'Subject: hello\r\n\r\n' + ('x'.repeat(998) + '\r\n').repeat(20); // ~20 KB
    const stored = async () => (await ctx.client.keys(`${ctx.keys.prefix}{f:*}:raw`)).length;
    const before = await stored();
    for (let i = 0; i < 3; i++) await send(mail, to, mx);
    assert.is(await stored(), before + 3);
    const err = await refusal(mail, to, mx);
    assert.is(err.responseCode, 452, err.response);
    assert.match(err.response ?? '', /4\.3\.1 .*feedback mail stored/i);
    assert.is(await stored(), before + 3, 'the refused mail is not stored');
    // Mail deleted before its time (processed and dropped, erased) gives its bytes back.
    const ids = (await ctx.client.keys(`${ctx.keys.prefix}{f:*}:raw`)).map((k) => /\{f:([^}]+)\}/.exec(k)?.[1] as string);
    const newest = (await Promise.all(ids.map(async (id) => [id, Number(await ctx.client.hget(ctx.keys.feedbackRaw(id), 'receivedAt'))] as const))).filter(([, at]) => at === t0);
    await dropFeedback(ctx.client, ctx.keys, newest[0]![0]);
    await send(mail, to, mx); // accepted again
    assert.is(await stored(), before + 3);
    // Three days on, that mail has expired (retention 2 days): it no longer counts.
    clock = t0 + 3 * 86_400_000;
    await send(mail, to, mx);
    assert.is(Object.keys(await ctx.client.hgetall(ctx.keys.feedbackStored())).length, 1, "the old day's count is gone");
  } finally {
    await mx.close();
  }
});

test('one client gets maxClientsPerIp connections to the MX; the next is refused with 421 4.7.0 and counted', async () => {
  let limited = 0;
  const mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger: pino({ level: 'silent' }), metrics: { clientLimited: () => limited++ } },
    { host: '127.0.0.1', port: 0, tls: ctx.tls, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: MAX_SIZE, rawRetentionMs: 3_600_000, softBounceLimit: 2, softBounceWindowMs: 86_400_000, maxClientsPerIp: 1 },
  );
  try {
    const a = await RawSmtp.open(mx.port);
    assert.is(a.greeting.code, 220);
    const b = await RawSmtp.open(mx.port);
    assert.is(b.greeting.code, 421, b.greeting.text);
    assert.match(b.greeting.text, '4.7.0');
    assert.is(limited, 1);
    assert.is((await a.client.cmd('EHLO sender.test')).code, 250, 'the admitted session is unaffected');
    a.client.close();
  } finally {
    await mx.close();
  }
});

test('a client trickling its DATA (never idle) is closed at the session time limit with 421 4.4.2, and its slot is free again', async () => {
  const mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger: pino({ level: 'silent' }) },
    { host: '127.0.0.1', port: 0, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: MAX_SIZE, rawRetentionMs: 3_600_000, maxClientsPerIp: 1, socketTimeoutMs: 1_000, sessionTimeoutMs: 2_500 },
  );
  try {
    const { client: c } = await RawSmtp.open(mx.port);
    assert.is((await c.cmd('EHLO sender.test')).code, 250);
    assert.is((await c.cmd('MAIL FROM:<>')).code, 250);
    assert.is((await c.cmd(`RCPT TO:<${FBL}>`)).code, 250);
    assert.is((await c.cmd('DATA')).code, 354);
    // One byte every 400 ms: under the 1 s idle limit, for longer than the session's 2.5 s.
    let sent = 0;
    const trickle = setInterval(() => void c.write('x').then(() => sent++, () => undefined), 400);
    const closing = await c.reply(10_000);
    clearInterval(trickle);
    assert.is(closing.code, 421, closing.text);
    assert.match(closing.text, /4\.4\.2 Session time limit/);
    assert.ok(sent >= 3, `the client kept sending (${sent} bytes)`);
    // The client's one slot (maxClientsPerIp 1) was given back.
    let again = await RawSmtp.open(mx.port);
    for (let i = 0; again.greeting.code !== 220 && i < 50; i++) {
      again.client.close();
      await new Promise((r) => setTimeout(r, 20));
      again = await RawSmtp.open(mx.port);
    }
    assert.is(again.greeting.code, 220);
    again.client.close();
  } finally {
    await mx.close();
  }
});

test('the per-client cap counts sessions over STARTTLS, and a handshake that breaks gives its slot back', async () => {
  let limited = 0;
  const mx = await startInboundMx(
    { redis: ctx.client, keys: ctx.keys, logger: pino({ level: 'silent' }), metrics: { clientLimited: () => limited++ } },
    { host: '127.0.0.1', port: 0, tls: ctx.tls, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [FBL], maxMessageSize: MAX_SIZE, rawRetentionMs: 3_600_000, maxClientsPerIp: 1 },
  );
  /** A new connection's greeting; smtp-server gives a closed connection's slot back on its next turn. */
  const admitted = async (): Promise<RawSmtp> => {
    for (let i = 0; ; i++) {
      const { client, greeting } = await RawSmtp.open(mx.port);
      if (greeting.code === 220 || i === 50) {
        assert.is(greeting.code, 220, greeting.text);
        return client;
      }
      client.close();
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  try {
    const a = await admitted();
    assert.is((await a.startTls()).code, 250);
    const b = await RawSmtp.open(mx.port);
    assert.is(b.greeting.code, 421, b.greeting.text);
    assert.match(b.greeting.text, '4.7.0');
    assert.is(limited, 1);
    assert.is((await a.cmd('NOOP')).code, 250, 'the TLS session is unaffected');
    a.close();
    for (let round = 0; round < 3; round++) {
      const c = await admitted();
      await c.cmd('EHLO client.test');
      assert.is((await c.cmd('STARTTLS')).code, 220);
      await c.write(Buffer.alloc(64, 0x16));
      await c.closed;
    }
    const d = await admitted();
    assert.is((await d.startTls()).code, 250, 'the slot of each broken handshake came back');
    d.close();
  } finally {
    await mx.close();
  }
});

test.run();
