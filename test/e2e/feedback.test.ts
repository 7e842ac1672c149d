import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { createTransport } from 'nodemailer';
import { request } from 'undici';
import { commandsOn, startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, startScriptedPeer, type CapturePeer, type ScriptedPeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { GLOBAL_LIST, suppressionOf } from '../../src/store/suppression.js';
import { addressDigest } from '../../src/store/address-digest.js';
import { CORPUS_EMAILS } from '../helpers/corpus.js';
import { newId } from '../../src/core/ids.js';
import { dropPending, storeFeedback } from '../../src/feedback/raw-store.js';
import { verpAddress } from '../../src/core/verp.js';
import { BUCKET_MS } from '../../src/store/reputation.js';

/**
 * The feedback loop through `sluice start` itself: a message is delivered with its VERP return
 * path, a real MTA's bounce (from the corpus) comes back to that address at the inbound MX, the
 * recipient is suppressed globally, and the next message to it is never sent.
 */
const test = suite('e2e/feedback');
let redis: TestRedis;
let sink: CapturePeer;
let gonePeer: ScriptedPeer;
let fullPeer: ScriptedPeer;
let blockPeer: ScriptedPeer;
let laterPeer: ScriptedPeer;
let dropPeer: ScriptedPeer;
let s: SluiceFixture;
const CORPUS = CORPUS_EMAILS;

test.before(async () => {
  redis = await startRedis();
  sink = await startCapturePeer();
  // The receiving MX refuses the address at RCPT: a synchronous 550 5.1.1, no DSN ever comes.
  gonePeer = await startScriptedPeer({ ehlo: ['PIPELINING'], on: { RCPT: '550 5.1.1 <nobody@gone.test>: Recipient address rejected: User unknown in virtual mailbox table' } });
  // Synchronous soft bounces (the address's), a refusal of the sender, and a mailbox full for now.
  fullPeer = await startScriptedPeer({ on: { RCPT: '552 5.2.2 <box@full.test>: Recipient address rejected: Mailbox full' } });
  blockPeer = await startScriptedPeer({ on: { RCPT: '550 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org' } });
  laterPeer = await startScriptedPeer({ on: { RCPT: '452 4.2.2 <box@later.test>: Mailbox full, try again later' } });
  // Hangs up at RCPT: no answer at all, so nothing said about the address.
  dropPeer = await startScriptedPeer({ on: { RCPT: 'drop' } });
  s = await startSluiceFixture(redis, {
    roles: ['ingress', 'delivery', 'feedback'],
    feedback: { host: '127.0.0.1', port: 0, softBounceLimit: 2 },
    delivery: {
      transport: {
        'one.test': `${sink.host}:${sink.port}`, 'gone.test': `${gonePeer.host}:${gonePeer.port}`, 'full.test': `${fullPeer.host}:${fullPeer.port}`,
        'block.test': `${blockPeer.host}:${blockPeer.port}`, 'later.test': `${laterPeer.host}:${laterPeer.port}`, 'drops.test': `${dropPeer.host}:${dropPeer.port}`,
      },
    },
    // later.test's copies expire at their second 4xx: the retry due past maxAge comes at it (1 s).
    shaping: { rules: [{ name: 'later', match: { domains: ['later.test', 'drops.test'], mx: [] }, maxAge: '1s' }] },
  });
});

test.after(async () => {
  await s?.stop();
  await sink?.close();
  await gonePeer?.close();
  await fullPeer?.close();
  await blockPeer?.close();
  await laterPeer?.close();
  await dropPeer?.close();
  await redis?.stop();
});

/**
 * The dispatcher suppresses an address after the outcome that made the recipient final (the state a
 * waitFinal sees first): a suppression, or a copy's count in the soft-bounce history, is awaited.
 */
async function suppressedSoon(account: string, address: string): ReturnType<typeof suppressionOf> {
  for (let i = 0; i < 200; i++) {
    const entry = await suppressionOf(s.app.redis.client, s.app.keys, account, address);
    if (entry) return entry;
    await new Promise((r) => setTimeout(r, 25));
  }
  return null;
}

/** Resolves once copy `msgId`:0 is counted in the soft-bounce history of `address`. */
async function softBounceCounted(address: string, msgId: string): Promise<void> {
  const key = s.app.keys.softBounces(await addressDigest(s.app.redis.client, s.app.keys, address));
  for (let i = 0; i < 200; i++) {
    if ((await s.app.redis.client.zscore(key, `${msgId}:0`)) !== null) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.unreachable(`the soft bounce of ${msgId} was not counted`);
}

/** Plain text, or with `tls` over STARTTLS (nodemailer's requireTLS: without it, no mail). */
function inbound(tls = false): ReturnType<typeof createTransport> {
  return createTransport({
    host: '127.0.0.1', port: s.app.ports.feedback, secure: false,
    ...(tls ? { requireTLS: true, tls: { rejectUnauthorized: false } } : { ignoreTLS: true }),
  });
}

test('a DSN to the VERP address suppresses the recipient globally; the next message is not sent', async () => {
  const first = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'kijitora@one.test', subject: 'one', text: 'x' } });
  await s.waitFinal(first.body.id);
  const delivered = sink.messages.find((m) => m.envelope.to[0] === 'kijitora@one.test');
  assert.ok(delivered, 'first copy delivered');
  const verp = delivered!.envelope.from;

  // A real Courier bounce (5.1.1 user unknown) that names another address: the VERP decides. Sent
  // over the STARTTLS the role offers with the generated pair, as a real MTA would.
  const t = inbound(true);
  await t.sendMail({ envelope: { from: '', to: [verp] }, raw: readFileSync(new URL('lhost-courier-01.eml', CORPUS)) });
  t.close();
  let entry = null;
  for (let i = 0; i < 100 && !entry; i++) {
    entry = await suppressionOf(s.app.redis.client, s.app.keys, 'acme', 'kijitora@one.test');
    if (!entry) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(entry, 'suppressed');
  assert.is(entry!.reason, 'hardbounce');
  assert.is(entry!.list, '*', 'on the global list: the address does not exist');

  // The suppression comes first in the bounce's processing; its outcome, which ends its pending entry, last.
  for (let i = 0; i < 200 && (await s.app.redis.client.zcard(s.app.keys.feedbackPending())) > 0; i++) await new Promise((r) => setTimeout(r, 25));
  const metrics = await (await request(`http://127.0.0.1:${s.app.ports.admin}/metrics`)).body.text();
  assert.match(metrics, /^sluice_suppression_list_size\{list="global"\} 1$/m, 'the global list size is exported');
  assert.match(metrics, /^sluice_senders_paused 0$/m);
  assert.match(metrics, /^sluice_feedback_pending 0$/m, 'the bounce was processed for good');
  // A mail stored as the MX stores it, whose processing has not run (it waits out its 5 min grace
  // here): pending until then.
  const stray = newId();
  await storeFeedback(s.app.redis.client, s.app.keys, { id: stray, raw: Buffer.from('Subject: x\r\n\r\nx\r\n'), rcpts: ['postmaster@bounce.sluice.test'], mailFrom: '', receivedAt: Date.now() }, 3_600_000);
  const later = await (await request(`http://127.0.0.1:${s.app.ports.admin}/metrics`)).body.text();
  assert.match(later, /^sluice_feedback_pending 1$/m, 'a stored mail waiting for its processing is counted');
  await dropPending(s.app.redis.client, s.app.keys, stray);

  const before = sink.messages.length;
  const second = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'kijitora@one.test', subject: 'two', text: 'x' } });
  const final = await s.waitFinal(second.body.id);
  assert.is(final.recipients[0].state, 'suppressed');
  assert.is(sink.messages.length, before, 'never sent');
});

test('a forged VERP address (no tag, or the tag of another recipient) is refused at RCPT', async () => {
  const sent = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: ['target@one.test', 'other@one.test'], subject: 'two', text: 'x' } });
  await s.waitFinal(sent.body.id);
  const verps = sink.messages.filter((m) => m.envelope.from.startsWith(`b-${sent.body.id}-`)).map((m) => m.envelope.from);
  assert.is(verps.length, 2);
  const tagOf = (v: string) => /-([0-9a-z]{8})@/.exec(v)?.[1] as string;
  const idxOf = (v: string) => Number(/^b-[0-9a-z]{16}-(\d+)-/.exec(v)?.[1]);
  const forged = [
    `b-${sent.body.id}-${idxOf(verps[0]!)}@bounce.localhost`,
    `b-${sent.body.id}-${idxOf(verps[1]!)}-${tagOf(verps[0]!)}@bounce.localhost`,
  ];
  for (const to of forged) {
    const t = inbound();
    try {
      await t.sendMail({ envelope: { from: '', to: [to] }, raw: readFileSync(new URL('lhost-courier-01.eml', CORPUS)) });
      assert.unreachable(`${to} must be refused`);
    } catch (err) {
      assert.is((err as { responseCode?: number }).responseCode, 550, to);
    } finally {
      t.close();
    }
  }
  assert.is(await suppressionOf(s.app.redis.client, s.app.keys, 'acme', 'target@one.test'), null);
});

test('the inbound MX refuses every address that is not feedback, and relays nothing', async () => {
  const t = inbound();
  try {
    await t.sendMail({ envelope: { from: 'someone@elsewhere.test', to: ['victim@one.test'] }, raw: 'Subject: relay?\r\n\r\nx\r\n' });
    assert.unreachable('must be refused');
  } catch (err) {
    assert.is((err as { responseCode?: number }).responseCode, 550);
  } finally {
    t.close();
  }
  await new Promise((r) => setTimeout(r, 200));
  assert.not.ok(sink.messages.some((m) => m.envelope.to[0] === 'victim@one.test'));
});

test('a synchronous 550 5.1.1 at RCPT suppresses the address globally too; the next message is not sent', async () => {
  const first = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'nobody@gone.test', subject: 'one', text: 'x' } });
  const r1 = (await s.waitFinal(first.body.id)).recipients[0];
  assert.equal([r1.state, r1.reason], ['bounced', 'userunknown']);
  const entry = await suppressedSoon('beta', 'nobody@gone.test');
  assert.is(entry?.reason, 'hardbounce');
  assert.is(entry?.list, '*', 'on the global list: the address does not exist');
  assert.is(entry?.evidence['status'], '5.1.1');

  const rcpts = gonePeer.commands.filter((c) => c.startsWith('RCPT')).length;
  const second = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'nobody@gone.test', subject: 'two', text: 'x' } });
  assert.is((await s.waitFinal(second.body.id)).recipients[0].state, 'suppressed');
  assert.is(gonePeer.commands.filter((c) => c.startsWith('RCPT')).length, rcpts, 'never tried again');
});

test('a copy refused at RCPT (550 5.1.1) counts once: a DSN of the same refusal later adds nothing to the figures', async () => {
  const client = s.app.redis.client;
  const keys = s.app.keys;
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'twice@gone.test', subject: 'once', text: 'x' } });
  assert.is((await s.waitFinal(r.body.id)).recipients[0].state, 'bounced');
  // The copy's hard-bounce mark, as a DSN of it would leave (written just after its outcome).
  for (let i = 0; i < 200 && (await client.hexists(keys.trackMarks(r.body.id), 'fh:0')) === 0; i++) await new Promise((res) => setTimeout(res, 25));
  assert.is(await client.hexists(keys.trackMarks(r.body.id), 'fh:0'), 1, 'marked as counted');
  const bucket = keys.reputation('acme', Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS);
  const before = await client.hmget(bucket, '*|hardbounce', '*|delivered');
  // The relay that refused it reports it by mail as well: the same copy, through its VERP address.
  const verp = verpAddress(r.body.id, 0, s.config.delivery.bounceDomain, Buffer.from((await client.get(keys.verpKey())) as string, 'base64'));
  const t = inbound();
  const stored = (await t.sendMail({ envelope: { from: '', to: [verp] }, raw: readFileSync(new URL('lhost-postfix-05.eml', CORPUS)) })).response;
  t.close();
  const feedbackId = /stored as (\S+)/.exec(stored)?.[1] as string;
  for (let i = 0; i < 200 && !(await client.hget(keys.feedbackRaw(feedbackId), 'outcome')); i++) await new Promise((res) => setTimeout(res, 25));
  assert.is(await client.hget(keys.feedbackRaw(feedbackId), 'outcome'), 'processed');
  const after = await client.hmget(bucket, '*|hardbounce', '*|delivered');
  assert.is(after[0], before[0], 'one hard bounce, not two');
  assert.ok(Number(after[1] ?? 0) >= Number(before[1] ?? 0), 'and no delivery taken back (it had none)');
});

/** Sends one message to `to` through the API, waits for its delivery to the sink, returns its VERP. */
async function delivered(to: string, subject: string): Promise<string> {
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to, subject, text: 'x' } });
  assert.is((await s.waitFinal(r.body.id)).recipients[0].state, 'delivered');
  const copy = sink.messages.find((m) => m.envelope.to[0] === to && m.envelope.from.startsWith(`b-${r.body.id}-`));
  assert.ok(copy, `${subject} reached the sink`);
  return copy!.envelope.from;
}

/**
 * A real Postfix mailbox-full DSN to `verp`; resolves once the inbound MX has processed it whole. The
 * MX answers 250 once the mail is stored and processes it after; its event comes before the
 * suppression that event names (feedback/process.ts act), and the stored mail's outcome is written last.
 */
async function mailboxFull(verp: string): Promise<void> {
  const msgId = /^b-([0-9a-z]{16})-/.exec(verp)?.[1] as string;
  const t = inbound();
  let stored: string;
  try {
    stored = (await t.sendMail({ envelope: { from: '', to: [verp] }, raw: readFileSync(new URL('lhost-postfix-45.eml', CORPUS)) })).response;
  } finally {
    t.close();
  }
  const feedbackId = /stored as (\S+)/.exec(stored)?.[1];
  assert.ok(feedbackId, stored);
  for (let i = 0; i < 200; i++) {
    const outcome = await s.app.redis.client.hget(s.app.keys.feedbackRaw(feedbackId), 'outcome');
    if (outcome) {
      assert.is(outcome, 'processed', `the DSN for ${msgId}`);
      const entries = await s.app.redis.client.xrange(s.app.keys.events(), '-', '+');
      assert.ok(entries.some(([, f]) => f[f.indexOf('feedbackId') + 1] === feedbackId && f[f.indexOf('msgId') + 1] === msgId), `the DSN for ${msgId} was applied to it`);
      return;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.unreachable(`the DSN for ${msgId} was not processed`);
}

test('soft bounces suppress only when consecutive: a delivery that did not bounce starts the count again', async () => {
  const to = 'full@one.test';
  const suppressed = () => suppressionOf(s.app.redis.client, s.app.keys, 'acme', to);
  // Accepted (250), then bounced later by mail: the 250 was no delivery, so the two count as a run.
  await mailboxFull(await delivered(to, 'soft 1'));
  assert.is(await suppressed(), null, 'one soft bounce (limit 2)');
  await delivered(to, 'soft 2: delivered, never bounced');
  await mailboxFull(await delivered(to, 'soft 3'));
  assert.is(await suppressed(), null, 'a delivery came between: the run is one long');
  await mailboxFull(await delivered(to, 'soft 4'));
  const entry = await suppressed();
  assert.is(entry?.reason, 'softbounce', 'two in a row, each accepted then bounced');
  assert.is(entry?.list, '*');
});

test('synchronous soft bounces of the address count as DSN ones: a run of the limit suppresses it globally; a refusal of the sender never does', async () => {
  const send = async (to: string, subject: string): Promise<{ state: string; id: string }> => {
    const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to, subject, text: 'x' } });
    return { state: (await s.waitFinal(r.body.id)).recipients[0].state, id: r.body.id };
  };
  const entry = (to: string) => suppressionOf(s.app.redis.client, s.app.keys, 'acme', to);
  /** Sent to `to`, ended in `state` and counted as a soft bounce of the address. */
  const softly = async (to: string, subject: string, state: string) => {
    const r = await send(to, subject);
    assert.is(r.state, state, subject);
    await softBounceCounted(to, r.id);
  };

  // 552 5.2.2 at RCPT: bounced now, soft (mailboxfull); two in a row reach the limit of 2.
  await softly('box@full.test', 'full 1', 'bounced');
  assert.is(await entry('box@full.test'), null, 'one soft bounce (limit 2)');
  await softly('box@full.test', 'full 2', 'bounced');
  const full = await suppressedSoon('acme', 'box@full.test');
  assert.is(full?.reason, 'softbounce', 'two synchronous soft bounces in a row');
  assert.is(full?.list, '*');
  assert.is(full?.evidence['status'], '5.2.2');

  /** Sent to `to`, ended in `state`, and the dispatcher done with it: nothing more will be written for it. */
  const ended = async (to: string, subject: string, state: string) => {
    const r = await send(to, subject);
    assert.is(r.state, state, subject);
    await s.waitSettled(r.id);
  };

  // 550 5.7.1 blocked: the sender's problem, however often.
  for (let i = 0; i < 3; i++) await ended('box@block.test', `blocked ${i}`, 'bounced');
  assert.is(await entry('box@block.test'), null, 'a block list refusal says nothing about the address');

  // 452 4.2.2 until the copy expires: the last answer was the mailbox's, so the expiry counts.
  await softly('box@later.test', 'later 1', 'expired');
  assert.is(await entry('box@later.test'), null, 'one expiry (limit 2)');
  await softly('box@later.test', 'later 2', 'expired');
  assert.is((await suppressedSoon('acme', 'box@later.test'))?.reason, 'softbounce', 'two expiries after the mailbox said full');

  // Expired after connections dropped at RCPT: no remote answer, so no soft bounce of the address.
  await ended('box@drops.test', 'drops 1', 'expired');
  await ended('box@drops.test', 'drops 2', 'expired');
  assert.is(await entry('box@drops.test'), null, 'two expiries without an answer say nothing about the address');
});

test('a recipient bounced by the remote server is final only once the address is suppressed (the suppression is written first)', async () => {
  const suppressionKey = s.app.keys.suppression(GLOBAL_LIST);
  let id = '';
  // The writes to the global list and the event stream, in the order the server ran them.
  const ran = await commandsOn(redis, [suppressionKey, s.app.keys.events()], async () => {
    const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'order@gone.test', subject: 'order', text: 'x' } });
    id = r.body.id;
    const final = (await s.waitFinal(id)).recipients[0];
    assert.equal([final.state, final.reason], ['bounced', 'userunknown']);
    assert.is((await suppressedSoon('acme', 'order@gone.test'))?.reason, 'hardbounce');
  });
  // The bounced event is appended by the outcome's own script: its XADD is the outcome.
  const outcomeAt = ran.findIndex(([cmd, , ...fields]) => cmd === 'xadd' && fields.includes('bounced') && fields.includes(id));
  const suppressedAt = ran.findIndex(([cmd, key]) => cmd === 'hset' && key === suppressionKey);
  assert.ok(outcomeAt >= 0, 'the bounced event is on the stream');
  assert.ok(suppressedAt >= 0 && outcomeAt > suppressedAt, ran.map(([cmd]) => cmd).join(' '));
});

test.run();
