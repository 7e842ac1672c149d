/**
 * Delay warnings (delivery.delayWarning) end to end: SMTP submission → a real peer that greylists
 * (451) until the test opens it → the sender warned once, by a DSN with Action: delayed delivered to
 * its own domain (a capture peer), however many deferrals follow; as its NOTIFY asks (DELAY, or none
 * given), never for API mail; the warning read by mailparser and by the bounce classifier.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createTransport } from 'nodemailer';
import { simpleParser } from 'mailparser';
import { classifyMessage } from '../../src/bounces/index.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer, type CapturedMessage } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';

const test = suite('e2e/delay-warning');

let redis: TestRedis;
/** The senders' domain (acme.example): notices arrive here. */
let sink: CapturePeer;
/** Answers 451 to every recipient while `greylisting`. */
let peer: CapturePeer;
let greylisting = true;
let s: SluiceFixture;

const MAX_AGE_MS = 3_600_000;

test.before(async () => {
  redis = await startRedis();
  sink = await startCapturePeer();
  peer = await startCapturePeer({ onRcpt: () => (greylisting ? { code: 451, message: '4.2.0 greylisted, come back in a while' } : null) });
  s = await startSluiceFixture(redis, {
    delivery: {
      transport: { 'later.test': `${peer.host}:${peer.port}`, 'acme.example': `${sink.host}:${sink.port}` },
      delayWarning: '1s',
    },
    shaping: { default: { retry: ['200ms'], maxAge: '1h' } },
  });
});

test.after(async () => {
  await s?.stop();
  await Promise.all([sink?.close(), peer?.close()]);
  await redis?.stop();
});

/** Submits one message over SMTP with these DSN NOTIFY values (none: no NOTIFY); returns its id. */
async function submit(to: string, notify?: ('success' | 'failure' | 'delay' | 'never')[]): Promise<string> {
  const transport = createTransport({ host: '127.0.0.1', port: s.app.ports.smtp, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: s.smtpUser });
  try {
    const raw = `From: ops@acme.example\r\nTo: ${to}\r\nSubject: slow one\r\n\r\nthe body line\r\n`;
    const info = await transport.sendMail({ envelope: { from: 'ops@acme.example', to: [to] }, raw, ...(notify ? { dsn: { notify } } : {}) });
    return /queued as ([0-9a-z]{16})/.exec(info.response)?.[1] as string;
  } finally {
    transport.close();
  }
}

const reportsAbout = (id: string, action: string): CapturedMessage[] =>
  sink.messages.filter((m) => m.envelope.from === '' && m.raw.includes(`X-Sluice-Message-ID: ${id}`) && m.raw.includes(`\r\nAction: ${action}\r\n`));

async function waitFor<T>(what: string, probe: () => Promise<T | null> | T | null, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Waits until the first recipient of message `id` has been attempted at least `n` times. */
const attempted = (id: string, n: number) => waitFor(`${n} attempts of ${id}`, async () => {
  const r = (await s.api(`/v1/messages/${id}`)).body.recipients[0];
  return (r?.attempts ?? 0) >= n ? r : null;
});

test('a recipient still deferred a delayWarning after acceptance: its sender is warned once, however many deferrals follow; delivered later, it gets no failure notice', async () => {
  greylisting = true;
  const accepted = Date.now();
  const id = await submit('ann@later.test');
  const [warning] = await waitFor('the warning', () => (reportsAbout(id, 'delayed').length > 0 ? reportsAbout(id, 'delayed') : null));
  const attemptsThen = (await s.api(`/v1/messages/${id}`)).body.recipients[0].attempts as number;
  // Several deferrals past the threshold, each of which queued the warning again (and found it queued).
  await attempted(id, attemptsThen + 4);
  const text = warning!.raw.toString('latin1');
  assert.match(text, /\r\nSubject: Delayed Mail \(still being retried\)\r\n/);
  assert.match(text, 'THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE.');
  assert.match(text, /Your message to <ann@later\.test> has not been delivered yet\.\r\nIt was accepted \d+ seconds? ago and is still being retried/);
  assert.match(text, /\r\nFinal-Recipient: rfc822; ann@later\.test\r\nAction: delayed\r\nStatus: 4\.2\.0\r\nDiagnostic-Code: smtp; 451 4\.2\.0 greylisted, come back in a while\r\nLast-Attempt-Date: [^\r]+\r\nWill-Retry-Until: ([^\r]+)\r\n/);
  const until = Date.parse(/Will-Retry-Until: ([^\r]+)/.exec(text)?.[1] ?? '');
  assert.ok(Math.abs(until - (accepted + MAX_AGE_MS)) < 5_000, `retried until accepted + maxAge: ${new Date(until).toISOString()}`);
  const parsed = await simpleParser(warning!.raw);
  assert.ok(parsed.attachments.some((x) => x.contentType === 'text/rfc822-headers' && x.content.toString().includes('Subject: slow one')), 'the headers returned');
  assert.not.match(text, 'the body line', 'a warning returns no body');
  const [record] = await classifyMessage(warning!.raw);
  assert.equal([record?.recipient, record?.action, record?.status], ['ann@later.test', 'delayed', '4.2.0']);

  greylisting = false;
  assert.is((await s.waitFinal(id)).recipients[0].state, 'delivered');
  await s.waitSettled(id);
  assert.is(reportsAbout(id, 'delayed').length, 1, 'one warning');
  assert.is(reportsAbout(id, 'failed').length, 0, 'no failure notice');
});

test('NOTIFY=FAILURE (no DELAY) and NOTIFY=NEVER: no warning; NOTIFY=DELAY: one; HTTP API mail: none', async () => {
  greylisting = true;
  const failureOnly = await submit('bob@later.test', ['failure']);
  const never = await submit('cid@later.test', ['never']);
  const delay = await submit('cat@later.test', ['delay']);
  const api = await s.api('/v1/messages', { body: { from: 'ops@acme.example', to: 'dan@later.test', subject: 'api', text: 'x' } });
  assert.is(api.status, 202);
  const lastAccepted = Date.now();
  await waitFor('the NOTIFY=DELAY warning', () => (reportsAbout(delay, 'delayed').length > 0 ? true : null));
  // Past the threshold for every one of them, then deferred twice more each.
  await new Promise((r) => setTimeout(r, Math.max(0, lastAccepted + 1_100 - Date.now())));
  const others = [failureOnly, never, api.body.id as string];
  for (const id of others) {
    const r = (await s.api(`/v1/messages/${id}`)).body.recipients[0];
    // Still being retried: deferred between attempts, or sending when the read meets an attempt.
    assert.ok(r.state === 'deferred' || r.state === 'sending', JSON.stringify(r));
    await attempted(id, (r.attempts as number) + 2);
  }
  // The last of those deferrals' warnings, had there been one, would be on its way: give it the time the first took.
  await new Promise((r) => setTimeout(r, 500));
  for (const id of others) assert.is(reportsAbout(id, 'delayed').length, 0, `no warning about ${id}`);
  assert.is(reportsAbout(delay, 'delayed').length, 1);
  greylisting = false;
  for (const id of [failureOnly, never, delay, api.body.id as string]) assert.is((await s.waitFinal(id)).recipients[0].state, 'delivered');
});

test.run();
