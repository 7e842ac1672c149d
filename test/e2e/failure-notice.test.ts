import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SMTPServer } from 'smtp-server';
import { createTransport } from 'nodemailer';
import { request } from 'undici';
import { pino } from 'pino';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer, type CapturedMessage } from '../helpers/smtp-peer.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { simpleParser } from 'mailparser';
import { classifyMessage } from '../../src/bounces/index.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { Reaper } from '../../src/housekeeping/reaper.js';
import type { RedisClient } from '../../src/redis/client.js';
import { noticeId } from '../../src/delivery/failure-notice.js';
import { readFileSync } from 'node:fs';
import { CORPUS_EMAILS } from '../helpers/corpus.js';
import { verpAddress } from '../../src/core/verp.js';
import { listUnprocessed, loadFeedback } from '../../src/feedback/raw-store.js';
import { GLOBAL_LIST, suppressionOf } from '../../src/store/suppression.js';

/**
 * Failure notices (DSNs) to SMTP submitters, end to end: SMTP submission → delivery to a real peer
 * that refuses the recipient → the notice queued and delivered to the sender's own domain (a capture
 * peer), with two Sluice processes on one Redis where two holders settle one recipient; and a copy
 * the peer took (250) and bounced later, by a DSN to its VERP address at the feedback MX of `a`.
 */
const test = suite('e2e/failure-notice');

let redis: TestRedis;
let rc: RedisClient;
/** The senders' domain (acme.example): notices arrive here. */
let sink: CapturePeer;
/**
 * Refuses every recipient (550 5.1.1); the first RCPT of `gate.test` is answered when `openGate` is
 * called, the first of `poison.test` when `openPoison` is, and `poisonClosed` resolves when that
 * session ends.
 */
let refuser: SMTPServer;
let poisonRcpt: Promise<void>;
let openPoison: () => void = () => undefined;
let poisonClosed: Promise<void>;
let refuserPort = 0;
let firstRcpt: Promise<void>;
let openGate: () => void = () => undefined;
let a: SluiceFixture;
let b: SluiceFixture;

test.before(async () => {
  redis = await startRedis();
  rc = redis.client();
  sink = await startCapturePeer();
  let seen: () => void = () => undefined;
  firstRcpt = new Promise((r) => (seen = r));
  const gate = new Promise<void>((r) => (openGate = r));
  let gated = true;
  let poisonSeen: () => void = () => undefined;
  poisonRcpt = new Promise((r) => (poisonSeen = r));
  const poisonGate = new Promise<void>((r) => (openPoison = r));
  let poisonSession = '';
  let poisonEnded: () => void = () => undefined;
  poisonClosed = new Promise((r) => (poisonEnded = r));
  refuser = new SMTPServer({
    logger: false,
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    closeTimeout: 50,
    onClose(session) {
      if (session.id === poisonSession) poisonEnded();
    },
    async onRcptTo(address, session, cb) {
      if (address.address.endsWith('@gate.test') && gated) {
        gated = false;
        seen();
        await gate;
      }
      if (address.address.endsWith('@poison.test') && poisonSession === '') {
        poisonSession = session.id;
        poisonSeen();
        await poisonGate;
      }
      cb(Object.assign(new Error(`5.1.1 <${address.address}>: Recipient address rejected: User unknown`), { responseCode: 550 }));
    },
  });
  refuser.on('error', () => undefined);
  await new Promise<void>((resolve) => refuser.listen(0, '127.0.0.1', () => resolve()));
  const address = refuser.server.address();
  refuserPort = typeof address === 'object' && address ? address.port : 0;
  const transport = { 'gate.test': `127.0.0.1:${refuserPort}`, 'poison.test': `127.0.0.1:${refuserPort}`, 'refuse.test': `127.0.0.1:${refuserPort}`, 'acme.example': `127.0.0.1:${sink.port}`, 'ok.test': `127.0.0.1:${sink.port}` };
  a = await startSluiceFixture(redis, { roles: ['ingress', 'delivery', 'housekeeping', 'feedback'], feedback: { host: '127.0.0.1', port: 0 }, delivery: { transport } });
  // A second process on the same keys: delivery only.
  b = await startSluiceFixture(redis, { roles: ['delivery'], redis: { prefix: a.config.redis.prefix }, delivery: { transport } });
});

test.after(async () => {
  openGate();
  openPoison();
  await Promise.all([a?.stop(), b?.stop()]);
  await new Promise<void>((resolve) => (refuser ? refuser.close(() => resolve()) : resolve()));
  await sink?.close();
  await redis?.stop();
});

/** Submits one message over SMTP (AUTH after STARTTLS) to Sluice `s`; returns its id. */
async function submit(s: SluiceFixture, to: string, subject: string): Promise<string> {
  const transport = createTransport({ host: '127.0.0.1', port: s.app.ports.smtp, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: s.smtpUser });
  try {
    const raw = `From: ops@acme.example\r\nTo: ${to}\r\nSubject: ${subject}\r\n\r\nbody\r\n`;
    const info = await transport.sendMail({ envelope: { from: 'ops@acme.example', to: [to] }, raw });
    return /queued as ([0-9a-z]{16})/.exec(info.response)?.[1] as string;
  } finally {
    transport.close();
  }
}

/** A counter summed over both processes (each has its own registry). */
async function metricSum(re: RegExp): Promise<number> {
  let sum = 0;
  for (const s of [a, b]) {
    const text = await (await request(`http://127.0.0.1:${s.app.ports.admin}/metrics`)).body.text();
    for (const m of text.matchAll(re)) sum += Number(m[1]);
  }
  return sum;
}

/** The notices stored in Redis about message `about` (records of source dsn). */
async function noticesAbout(about: string): Promise<string[]> {
  const out: string[] = [];
  const k = a.app.keys;
  let cursor = '0';
  do {
    const [next, found] = await rc.scan(cursor, 'MATCH', k.msgMeta('*'), 'COUNT', 1000);
    cursor = next;
    for (const key of found) {
      // (A key in the way of a notice is no record: see the test of a notice that cannot be stored.)
      const [source, metadata] = (await rc.type(key)) === 'hash' ? await rc.hmget(key, 'source', 'metadata') : [null, null];
      if (source === 'dsn' && JSON.parse(metadata ?? '{}').about === about) out.push(key);
    }
  } while (cursor !== '0');
  return out;
}

test('two holders of one recipient (a reaped lease) settle it both: its sender gets one notice', async () => {
  const id = await submit(a, 'held@gate.test', 'two holders');
  // The first holder waits for the peer's answer to RCPT...
  await firstRcpt;
  // ...longer than its lease (it stalled; the lease is 5 min, and renewed every third of it: the
  // test stands in for the time passing), and the reaper returns the recipient to the queue, as it
  // does with a lease that ran out. A second holder (either process) claims it and is refused at once.
  const k = a.app.keys;
  const [member] = await rc.zrange(k.leases('gate.test'), 0, -1);
  assert.ok(member, 'the recipient is leased');
  await rc.zadd(k.leases('gate.test'), 'XX', Date.now() - 1000, member!);
  const reaper = new Reaper({ redis: rc, keys: k, shards: a.config.redis.scheduleShards, intervalMs: 60_000, logger: pino({ level: 'silent' }), counts: { recordsMs: a.config.retention.records, refsMs: a.config.retention.records } });
  assert.is((await reaper.tick()).reaped, 1);
  assert.is((await a.waitFinal(id)).recipients[0].state, 'bounced');
  // Now the first holder gets its 550 too, and settles the recipient again: a no-op outcome.
  openGate();
  const bounced = /^sluice_delivery_attempts_total\{result="bounced",[^}]*\} (\d+)$/gm;
  for (let i = 0; i < 400 && (await metricSum(bounced)) < 2; i++) await new Promise((r) => setTimeout(r, 25));
  assert.is(await metricSum(bounced), 2, 'both holders settled the recipient');
  assert.is((await noticesAbout(id)).length, 1, 'one notice stored');
  assert.is(await metricSum(/^sluice_messages_accepted_total\{source="dsn"\} (\d+)$/gm), 1, 'one notice counted');
  const [notice] = await sink.waitFor(1);
  assert.is(notice!.envelope.to[0], 'ops@acme.example');
  assert.match(notice!.raw.toString('latin1'), 'Final-Recipient: rfc822; held@gate.test');
});

test('a notice that cannot be stored keeps its recipient unsettled: the recipient is retried, and settled once its notice is queued', async () => {
  const id = await submit(a, 'lost@poison.test', 'notice not stored');
  await poisonRcpt;
  // While the peer holds its answer, the notice's record is made unwritable (a string where its hash
  // goes: storing it fails with WRONGTYPE), as a Redis refusing that write would.
  const k = a.app.keys;
  const noticeMeta = k.msgMeta(noticeId(id, 0));
  await rc.set(noticeMeta, 'in the way');
  openPoison();
  // The holder gets its 550, cannot queue the notice, writes no outcome and gives up the session.
  await poisonClosed;
  const [member] = await rc.zrange(k.leases('poison.test'), 0, -1);
  assert.ok(member, 'the recipient is still leased: no outcome was written');
  assert.is((await a.api(`/v1/messages/${id}`)).body.recipients[0].state, 'sending');
  assert.equal(await noticesAbout(id), []);
  // The write works again; the lease runs out (the test stands in for the time) and the reaper
  // returns the recipient to the queue: its next attempt is refused again and queues the notice.
  await rc.del(noticeMeta);
  await rc.zadd(k.leases('poison.test'), 'XX', Date.now() - 1000, member!);
  const reaper = new Reaper({ redis: rc, keys: k, shards: a.config.redis.scheduleShards, intervalMs: 60_000, logger: pino({ level: 'silent' }), counts: { recordsMs: a.config.retention.records, refsMs: a.config.retention.records } });
  assert.is((await reaper.tick()).reaped, 1);
  assert.is((await a.waitFinal(id)).recipients[0].state, 'bounced');
  await a.waitSettled(id);
  assert.is((await noticesAbout(id)).length, 1, 'the notice is stored');
  await noticeAt(id, 'lost@poison.test');
});

/**
 * One SMTP submission to Sluice `a` with DSN parameters: MAIL FROM's `mailParams`, and each
 * recipient's own; returns the message's id once every recipient is final and settled.
 */
async function submitDsn(mailParams: string, rcpts: readonly (readonly [string, string])[], message: string): Promise<string> {
  const { client: c } = await RawSmtp.open(a.app.ports.smtp as number);
  try {
    await c.startTls();
    assert.is((await c.auth(a.smtpUser.user, a.smtpUser.pass)).code, 235);
    const mail = await c.cmd(`MAIL FROM:<ops@acme.example> ${mailParams}`.trim());
    assert.is(mail.code, 250, mail.text);
    for (const [to, params] of rcpts) {
      const r = await c.cmd(`RCPT TO:<${to}> ${params}`.trim());
      assert.is(r.code, 250, r.text);
    }
    assert.is((await c.cmd('DATA')).code, 354);
    const done = await c.cmd(`${message}\r\n.`);
    assert.is(done.code, 250, done.text);
    const id = /queued as (\S+)/.exec(done.text)?.[1] as string;
    await a.waitFinal(id);
    await a.waitSettled(id);
    return id;
  } finally {
    c.close();
  }
}

/** The notice about message `id` the sender's server received (from either process). */
async function noticeAt(id: string, recipient: string): Promise<CapturedMessage> {
  for (let i = 0; i < 400; i++) {
    const m = sink.messages.find((x) => x.envelope.from === '' && x.raw.includes(`X-Sluice-Message-ID: ${id}`) && x.raw.includes(`Final-Recipient: rfc822; ${recipient}`));
    if (m) return m;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no notice about ${recipient} of ${id} arrived`);
}

const ORIGINAL = 'From: ops@acme.example\r\nTo: them\r\nSubject: dsn parameters\r\n\r\nthe body line\r\n';

test('NOTIFY=NEVER: no notice for that recipient; NOTIFY=FAILURE: one, with Original-Recipient (ORCPT) and Original-Envelope-Id (ENVID); RET=HDRS: the headers only', async () => {
  const id = await submitDsn('RET=HDRS ENVID=batch+2B42', [['never@refuse.test', 'NOTIFY=NEVER'], ['failure@refuse.test', 'NOTIFY=FAILURE ORCPT=rfc822;Orig+2Bfailure@refuse.test']], ORIGINAL);
  // Each notice is stored before its recipient's outcome: with both final, any notice exists.
  const stored = await noticesAbout(id);
  assert.is(stored.length, 1, 'one notice: none for NOTIFY=NEVER');
  const notice = await noticeAt(id, 'failure@refuse.test');
  const text = notice.raw.toString('latin1');
  assert.match(text, /\r\nContent-Type: message\/delivery-status\r\n\r\nOriginal-Envelope-Id: batch\+42\r\nReporting-MTA: dns; /);
  assert.match(text, /\r\nOriginal-Recipient: rfc822; Orig\+failure@refuse\.test\r\nFinal-Recipient: rfc822; failure@refuse\.test\r\nAction: failed\r\n/);
  assert.not.match(text, 'never@refuse.test');
  const parsed = await simpleParser(notice.raw);
  assert.equal(parsed.attachments.map((x) => x.contentType), ['text/rfc822-headers']);
  assert.match(parsed.attachments[0]!.content.toString(), 'Subject: dsn parameters');
  assert.not.match(text, 'the body line', 'RET=HDRS: no body');
  const [record] = await classifyMessage(notice.raw);
  assert.equal([record?.recipient, record?.action, record?.status], ['failure@refuse.test', 'failed', '5.1.1']);
});

test('RET=FULL: the notice returns the whole message as message/rfc822; without NOTIFY a recipient gets the notice it always got', async () => {
  const id = await submitDsn('RET=FULL', [['full@refuse.test', '']], ORIGINAL);
  const notice = await noticeAt(id, 'full@refuse.test');
  const parsed = await simpleParser(notice.raw);
  const returned = parsed.attachments.find((x) => x.contentType === 'message/rfc822');
  assert.ok(returned, `a message/rfc822 part: ${parsed.attachments.map((x) => x.contentType).join(', ')}`);
  assert.ok(notice.raw.toString('latin1').includes(`\r\nContent-Type: message/rfc822\r\n\r\n${ORIGINAL}`), 'the message as submitted, whole');
  assert.not.match(notice.raw.toString('latin1'), 'Original-Recipient', 'no ORCPT given');
});

test('NOTIFY=SUCCESS: a recipient the next hop took is reported as relayed (Sluice passes no DSN on); one without NOTIFY gets no report of success', async () => {
  const id = await submitDsn('', [['glad@ok.test', 'NOTIFY=SUCCESS,FAILURE'], ['quiet@ok.test', '']], ORIGINAL);
  assert.equal((await a.waitFinal(id)).recipients.map((r: { state: string }) => r.state), ['delivered', 'delivered']);
  assert.is((await noticesAbout(id)).length, 1);
  const notice = await noticeAt(id, 'glad@ok.test');
  const text = notice.raw.toString('latin1');
  assert.match(text, /\r\nFinal-Recipient: rfc822; glad@ok\.test\r\nAction: relayed\r\nStatus: 2\.\d\.\d\r\nDiagnostic-Code: smtp; 250 /);
  assert.match(text, '\r\nSubject: Successful Mail Delivery Report\r\n');
  const parsed = await simpleParser(notice.raw);
  assert.equal(parsed.attachments.map((x) => x.contentType), ['text/rfc822-headers'], 'a report of success returns the headers');
  // The copy the next hop got carries no DSN parameters, and went out as usual.
  assert.ok(sink.messages.some((m) => m.envelope.to[0] === 'glad@ok.test'));
});

/** A real Courier bounce (550 5.1.1 User Unknown, Remote-MTA mx.example.co.jp) of a copy that was taken. */
const COURIER_DSN = readFileSync(new URL('lhost-courier-01.eml', CORPUS_EMAILS));

/** Sends `raw` to the feedback MX of `a` for `verp`, and resolves once the MX has processed it. */
async function bounceLater(verp: string, raw: Buffer): Promise<void> {
  const outcomes = /^sluice_feedback_outcomes_total\{[^}]*\} (\d+)$/gm;
  const before = await metricSum(outcomes);
  const t = createTransport({ host: '127.0.0.1', port: a.app.ports.feedback, secure: false, ignoreTLS: true });
  try {
    await t.sendMail({ envelope: { from: '', to: [verp] }, raw });
  } finally {
    t.close();
  }
  for (let i = 0; i < 400 && (await metricSum(outcomes)) === before; i++) await new Promise((r) => setTimeout(r, 25));
  assert.is(await metricSum(outcomes), before + 1, 'the feedback mail was processed');
}

/** The copy of `to` the peer took: its envelope sender is the copy's VERP address. */
async function takenCopy(to: string): Promise<CapturedMessage> {
  for (let i = 0; i < 400; i++) {
    const m = sink.messages.find((x) => x.envelope.to[0] === to && x.envelope.from !== '');
    if (m) return m;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no copy of ${to} arrived`);
}

test('a copy the next hop took and bounced later: its SMTP sender gets one notice, with the remote status, Remote-MTA and Diagnostic-Code', async () => {
  const id = await submit(a, 'later@ok.test', 'bounced later');
  assert.is((await a.waitFinal(id)).recipients[0].state, 'delivered');
  await a.waitSettled(id);
  const copy = await takenCopy('later@ok.test');
  assert.equal(await noticesAbout(id), [], 'no notice while the copy is delivered');
  await bounceLater(copy.envelope.from, COURIER_DSN);
  const notice = await noticeAt(id, 'later@ok.test');
  assert.is(notice.envelope.to[0], 'ops@acme.example');
  const text = notice.raw.toString('latin1');
  assert.match(text, /\r\nFinal-Recipient: rfc822; later@ok\.test\r\nAction: failed\r\nStatus: 5\.\d\.\d\r\nRemote-MTA: dns; mx\.example\.co\.jp \[192\.0\.2\.95\]\r\nDiagnostic-Code: smtp; 550 5\.1\.1 <kijitora@example\.co\.jp>\.\.\. User Unknown\r\n/);
  // Every recipient was settled, so the message's body is gone: the report goes without a third part.
  assert.equal((await simpleParser(notice.raw)).attachments.map((x) => x.contentType), []);
  assert.match(text, 'The message is no longer stored here');
  const [record] = await classifyMessage(notice.raw);
  assert.equal([record?.recipient, record?.action], ['later@ok.test', 'failed']);
  // The same bounce again (a retrying MTA, a second report): no second notice.
  await bounceLater(copy.envelope.from, COURIER_DSN);
  assert.is((await noticesAbout(id)).length, 1, 'one notice for the copy');
});

test('a later failure whose notice cannot be queued: the bounce is acted on, and the feedback mail kept as failed for the operator', async () => {
  const id = await submit(a, 'stuck@ok.test', 'notice in the way');
  await a.waitFinal(id);
  await a.waitSettled(id);
  const noticeMeta = a.app.keys.msgMeta(noticeId(id, 0));
  await rc.set(noticeMeta, 'in the way');
  try {
    await bounceLater((await takenCopy('stuck@ok.test')).envelope.from, COURIER_DSN);
  } finally {
    await rc.del(noticeMeta);
  }
  assert.equal(await noticesAbout(id), []);
  assert.is(await metricSum(/^sluice_feedback_outcomes_total\{outcome="failed"\} (\d+)$/gm), 1);
  const listed = await listUnprocessed(rc, a.app.keys, 100, 'newest');
  const kept = await Promise.all(listed.map((x) => loadFeedback(rc, a.app.keys, x.id)));
  assert.ok(kept.some((f) => f?.outcome === 'failed' && f.raw.includes('User Unknown')), 'listed by `sluice bounce list`, outcome failed');
  assert.is((await suppressionOf(rc, a.app.keys, GLOBAL_LIST, 'stuck@ok.test'))?.reason, 'hardbounce', 'the bounce itself was acted on');
});

test('a later bounce of an API message sends no notice; nor does a delay warning of an SMTP one', async () => {
  const api = await a.api('/v1/messages', { body: { from: 'news@acme.example', to: 'viaapi@ok.test', subject: 'api', text: 'x' } });
  assert.is(api.status, 202, JSON.stringify(api.body));
  await a.waitFinal(api.body.id);
  await bounceLater((await takenCopy('viaapi@ok.test')).envelope.from, COURIER_DSN);
  assert.equal(await noticesAbout(api.body.id), []);
  const id = await submit(a, 'slow@ok.test', 'delayed');
  await a.waitFinal(id);
  const delay = Buffer.from(COURIER_DSN.toString('latin1').replace('Action: failed', 'Action: delayed').replace('Status: 5.0.0', 'Status: 4.4.1').replace('550 5.1.1', '451 4.4.1'), 'latin1');
  assert.ok(delay.includes('Action: delayed'));
  await bounceLater((await takenCopy('slow@ok.test')).envelope.from, delay);
  assert.equal(await noticesAbout(id), []);
});

test('a copy already reported at its refusal gets no second notice from a DSN to its VERP address', async () => {
  const id = await submit(a, 'twice@refuse.test', 'refused then reported');
  assert.is((await a.waitFinal(id)).recipients[0].state, 'bounced');
  await a.waitSettled(id);
  await noticeAt(id, 'twice@refuse.test');
  const verpKey = Buffer.from((await rc.get(a.app.keys.verpKey())) as string, 'base64');
  await bounceLater(verpAddress(id, 0, a.config.delivery.bounceDomain, verpKey), COURIER_DSN);
  assert.is((await noticesAbout(id)).length, 1);
  assert.is(sink.messages.filter((m) => m.envelope.from === '' && m.raw.includes(`X-Sluice-Message-ID: ${id}`)).length, 1);
});

test('NOTIFY=SUCCESS,FAILURE: a copy reported relayed and bounced later gets both reports, the failure with the headers of the message still stored', async () => {
  const { client: c } = await RawSmtp.open(a.app.ports.smtp as number);
  let id = '';
  try {
    await c.startTls();
    assert.is((await c.auth(a.smtpUser.user, a.smtpUser.pass)).code, 235);
    assert.is((await c.cmd('MAIL FROM:<ops@acme.example>')).code, 250);
    assert.is((await c.cmd('RCPT TO:<both@ok.test> NOTIFY=SUCCESS,FAILURE')).code, 250);
    // A second recipient deferred and retried (its domain has no MX to be found): the message stays stored meanwhile.
    assert.is((await c.cmd('RCPT TO:<wait@nowhere.test>')).code, 250);
    assert.is((await c.cmd('DATA')).code, 354);
    const done = await c.cmd(`${ORIGINAL}\r\n.`);
    id = /queued as (\S+)/.exec(done.text)?.[1] as string;
  } finally {
    c.close();
  }
  await a.waitRecipient(id, 'delivered');
  const relayed = await noticeAt(id, 'both@ok.test');
  assert.match(relayed.raw.toString('latin1'), 'Action: relayed');
  await bounceLater((await takenCopy('both@ok.test')).envelope.from, COURIER_DSN);
  let failed: CapturedMessage | undefined;
  for (let i = 0; i < 400 && !failed; i++) {
    failed = sink.messages.find((x) => x.envelope.from === '' && x.raw.includes(`X-Sluice-Message-ID: ${id}`) && x.raw.includes('Action: failed'));
    if (!failed) await new Promise((r) => setTimeout(r, 25));
  }
  assert.ok(failed, 'the later failure is reported too');
  const parsed = await simpleParser(failed!.raw);
  assert.equal(parsed.attachments.map((x) => x.contentType), ['text/rfc822-headers']);
  assert.match(parsed.attachments[0]!.content.toString(), 'Subject: dsn parameters');
  const messageId = (m: CapturedMessage) => /^Message-ID: (.*)$/m.exec(m.raw.toString('latin1'))?.[1]?.trim();
  assert.is.not(messageId(failed!), messageId(relayed), 'two reports, two Message-IDs');
});

test.run();
