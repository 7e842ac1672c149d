import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connect } from 'node:net';
import nodemailer from 'nodemailer';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { startSubmissionServer, type SubmissionServer } from '../../src/ingress/smtp-server.js';
import { loadOrCreateTls } from '../../src/ingress/tls.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { awayFromHourBoundary, BRISK_PER_HOUR, ingressFixture, type IngressFixture, briskWindowCount, storedMessages } from './fixture.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { createLogger } from '../../src/observability/logger.js';

const test = suite('ingress/smtp-server');
let fx: IngressFixture;
let server: SubmissionServer;
const metrics = createMetrics();
const MAX_SIZE = 32 * 1024;
type Logged = { level: string; msg: string; sessionId?: string };
const logged: Logged[] = [];

test.before(async () => {
  fx = await ingressFixture({ smtp: { maxMessageSize: MAX_SIZE, maxRecipients: 3 } });
  server = await startSubmissionServer(
    { redis: fx.client, keys: fx.keys, config: fx.config, registry: fx.registry, logger: createLogger('info', { write: (line: string) => void logged.push(JSON.parse(line) as Logged) }), metrics },
    { host: '127.0.0.1', port: 0, authThrottle: { refuseAfter: 6, baseDelayMs: 1, maxDelayMs: 5 } },
  );
});
test.after(async () => {
  await server.close();
  await fx.stop();
});

function transport(auth: { user: string; pass: string } | null) {
  return nodemailer.createTransport({
    host: '127.0.0.1', port: server.port, secure: false, requireTLS: true,
    tls: { rejectUnauthorized: false }, ...(auth ? { auth } : {}),
  });
}
const acme = () => transport({ user: 'acme', pass: 'acme-password' });

async function refusal(p: Promise<unknown>): Promise<{ responseCode?: number; response?: string }> {
  try {
    await p;
  } catch (err) {
    return err as { responseCode?: number; response?: string };
  }
  assert.unreachable('expected a refusal');
  return {};
}

test('a self-signed STARTTLS pair was generated under dataDir/tls and is reused', async () => {
  assert.ok(existsSync(join(fx.dataDir, 'tls', 'submission-key.pem')));
  const a = await loadOrCreateTls(fx.config);
  const b = await loadOrCreateTls(fx.config);
  assert.ok(a.cert.equals(b.cert));
  assert.match(a.cert.toString(), 'BEGIN CERTIFICATE');
});

test('accepts over STARTTLS + AUTH, answers 250 with the id only after persisting and queueing', async () => {
  const t = acme();
  const info = await t.sendMail({
    from: 'Acme <news@acme.example>', to: ['one@gmail.com', 'two@example.org'], bcc: 'hidden@gmail.com',
    subject: 'Hello', text: 'Body text',
  });
  t.close();
  const m = /^250 2\.0\.0 Ok: queued as ([0-9a-z]{16})$/.exec(info.response);
  assert.ok(m, info.response);
  const id = m[1] as string;
  const meta = await fx.client.hgetall(fx.keys.msgMeta(id));
  assert.is(meta['account'], 'acme');
  assert.is(meta['source'], 'smtp');
  assert.is(meta['kind'], 'raw');
  assert.is(meta['from'], 'news@acme.example');
  assert.equal(JSON.parse(meta['rcpts'] as string).map((r: { address: string }) => r.address), ['one@gmail.com', 'two@example.org', 'hidden@gmail.com']);
  const body = await fx.client.get(fx.keys.msgBody(id));
  assert.match(body ?? '', 'Subject: Hello');
  assert.not.match(body ?? '', 'hidden@gmail.com');
  assert.equal(await fx.client.zrange(fx.keys.ready('gmail.com'), 0, -1), [`${id}:0:0`, `${id}:2:0`]);
  assert.equal(await fx.client.zrange(fx.keys.ready('example.org'), 0, -1), [`${id}:1:0`]);
  const accepted = await metrics.messagesAccepted.get();
  assert.is(accepted.values.find((v) => v.labels['source'] === 'smtp')?.value, 1);
});

test('a Bcc (or Resent-Bcc) field in the submitted message is stripped, folded lines too; every other byte is kept', async () => {
  const t = acme();
  const raw = 'From: news@acme.example\r\nTo: one@gmail.com\r\nBcc: secret1@gmail.com,\r\n  secret2@gmail.com\r\nSubject: s\r\nRESENT-BCC: secret3@gmail.com\r\n\r\nBcc: in the body stays\r\n';
  const info = await t.sendMail({ envelope: { from: 'news@acme.example', to: ['one@gmail.com', 'secret1@gmail.com'] }, raw });
  t.close();
  const id = (/queued as ([0-9a-z]{16})$/.exec(info.response) as RegExpExecArray)[1] as string;
  const body = await fx.client.get(fx.keys.msgBody(id));
  assert.is(body, 'From: news@acme.example\r\nTo: one@gmail.com\r\nSubject: s\r\n\r\nBcc: in the body stays\r\n');
});

test('no AUTH → 530', async () => {
  const t = transport(null);
  const err = await refusal(t.sendMail({ from: 'a@acme.example', to: 'x@gmail.com', subject: 's', text: 't' }));
  t.close();
  assert.is(err.responseCode, 530);
});

test('wrong password → 535 5.7.8', async () => {
  const t = transport({ user: 'acme', pass: 'wrong' });
  const err = await refusal(t.sendMail({ from: 'a@acme.example', to: 'x@gmail.com', subject: 's', text: 't' }));
  t.close();
  assert.is(err.responseCode, 535);
  assert.match(err.response ?? '', '5.7.8');
});

test('message over the size limit → 552', async () => {
  const t = acme();
  const err = await refusal(t.sendMail({ from: 'a@acme.example', to: 'x@gmail.com', subject: 'big', text: 'x'.repeat(MAX_SIZE * 2) }));
  t.close();
  assert.is(err.responseCode, 552);
});

test('hard size cap while streaming when the declared SIZE lied → 552', async () => {
  const t = acme();
  const conn = await new Promise<{ code: number }>((resolve) => {
    t.sendMail({ from: 'a@acme.example', to: 'x@gmail.com', envelope: { from: 'a@acme.example', to: ['x@gmail.com'], size: 10 } as never, raw: `From: a@acme.example\r\nSubject: s\r\n\r\n${'y'.repeat(MAX_SIZE + 100)}\r\n` })
      .then(() => resolve({ code: 250 }), (err: { responseCode: number }) => resolve({ code: err.responseCode }));
  });
  t.close();
  assert.is(conn.code, 552);
});

test('more recipients than the limit → 452 4.5.3 for the excess; the message, accepted, is not counted as refused', async () => {
  const refused = async () => (await metrics.messagesRejected.get()).values.filter((v) => v.labels['source'] === 'smtp').reduce((n, v) => n + v.value, 0);
  const before = await refused();
  const t = acme();
  const info = await t.sendMail({ from: 'a@acme.example', to: ['r1@gmail.com', 'r2@gmail.com', 'r3@gmail.com', 'r4@gmail.com'], subject: 's', text: 't' });
  t.close();
  assert.equal(info.rejected, ['r4@gmail.com']);
  const rej = (info as unknown as { rejectedErrors: { responseCode: number; response: string }[] }).rejectedErrors[0];
  assert.is(rej?.responseCode, 452);
  assert.match(rej?.response ?? '', '4.5.3');
  assert.is(await refused(), before, 'sluice_messages_rejected_total counts messages refused, not recipients');
});

test('at the recipient limit a repeated recipient (any case) is still taken: it adds none, and the message goes to each once', async () => {
  const c = await acmeSession();
  try {
    assert.is((await c.cmd('MAIL FROM:<news@acme.example>')).code, 250);
    for (const r of ['r1@gmail.com', 'r2@gmail.com', 'r3@gmail.com']) assert.is((await c.cmd(`RCPT TO:<${r}>`)).code, 250);
    const again = await c.cmd('RCPT TO:<R2@gmail.com>');
    assert.is(again.code, 250, again.text);
    assert.is((await c.cmd('RCPT TO:<r4@gmail.com>')).code, 452, 'a new one is still refused');
    const id = await sendData(c, 'From: news@acme.example\r\nSubject: s\r\n\r\nbody\r\n.');
    assert.equal((await storedRcpts(id)).map((a) => a.toLowerCase()).sort(), ['r1@gmail.com', 'r2@gmail.com', 'r3@gmail.com']);
  } finally {
    c.close();
  }
});

test('From domain not owned → 550 5.7.1 (header From after DATA, and MAIL FROM)', async () => {
  const t = acme();
  const err = await refusal(t.sendMail({ envelope: { from: 'a@acme.example', to: ['x@gmail.com'] }, from: 'ceo@other.example', to: 'x@gmail.com', subject: 's', text: 't' }));
  assert.is(err.responseCode, 550);
  assert.match(err.response ?? '', /^550 5\.7\.1 .* \[[A-Za-z0-9]+\]$/, 'enhanced code first, session id echoed');
  const err2 = await refusal(t.sendMail({ from: 'ceo@other.example', to: 'x@gmail.com', subject: 's', text: 't' }));
  assert.is(err2.responseCode, 550);
  assert.match(err2.response ?? '', '5.7.1');
  t.close();
});

test('malformed message (no From header) → 554', async () => {
  const t = acme();
  const err = await refusal(t.sendMail({ envelope: { from: 'a@acme.example', to: ['x@gmail.com'] }, raw: 'Subject: no author\r\n\r\nbody\r\n' }));
  t.close();
  assert.is(err.responseCode, 554);
});

test('a message that starts with an empty line has no header section (RFC 5322 §3.5): 554 no From, although a From follows it; nothing stored', async () => {
  const t = acme();
  const before = await storedMessages(fx);
  const err = await refusal(t.sendMail({ envelope: { from: 'news@acme.example', to: ['x@gmail.com'] }, raw: '\r\nFrom: news@acme.example\r\nTo: x@gmail.com\r\nSubject: s\r\n\r\nbody\r\n' }));
  t.close();
  assert.is(err.responseCode, 554);
  assert.match(err.response ?? '', /^554 5\.6\.0 .*no From header/);
  assert.is(await storedMessages(fx), before);
});

test('Sender, Resent-From and Resent-Sender are held to From\'s rule: another domain → 550 5.7.1 naming the field, nothing stored; the account\'s own → 250', async () => {
  const t = acme();
  const before = await storedMessages(fx);
  for (const field of ['Sender', 'Resent-From', 'resent-sender']) {
    const err = await refusal(t.sendMail({ envelope: { from: 'news@acme.example', to: ['x@gmail.com'] }, raw: `From: news@acme.example\r\n${field}: ceo@evil.example\r\nTo: x@gmail.com\r\nSubject: s\r\n\r\nbody\r\n` }));
    assert.is(err.responseCode, 550, field);
    assert.match(err.response ?? '', new RegExp(`^550 5\\.7\\.1 The ${field} domain evil\\.example is not owned`), field);
  }
  // Ambiguous as From would be: 554.
  const odd = await refusal(t.sendMail({ envelope: { from: 'news@acme.example', to: ['x@gmail.com'] }, raw: 'From: news@acme.example\r\nSender: ceo@evil.example <news@acme.example>\r\nTo: x@gmail.com\r\nSubject: s\r\n\r\nbody\r\n' }));
  assert.is(odd.responseCode, 554);
  assert.is(await storedMessages(fx), before, 'none of them stored');
  const info = await t.sendMail({ envelope: { from: 'news@acme.example', to: ['x@gmail.com'] }, raw: 'From: news@acme.example\r\nSender: Desk <desk@acme.example>\r\nTo: x@gmail.com\r\nSubject: s\r\n\r\nbody\r\n' });
  assert.match(info.response, /^250 /);
  t.close();
});

test('a From header other parsers read as another address → 554 5.6.0, nothing stored; quoted names and comments are fine', async () => {
  // The lenient parser reads each of these as news@acme.example (the rest a display name); Python's
  // email reads evil@other.example from the first, and two addresses from the others. Signed with
  // acme.example's key, they would show another domain's address with a passing signature.
  const t = acme();
  const before = await storedMessages(fx);
  for (const from of ['evil@other.example <news@acme.example>', '<news@acme.example> <evil@other.example>', '<news@acme.example>evil@other.example', 'news@acme.example evil@other.example']) {
    const err = await refusal(t.sendMail({ envelope: { from: 'news@acme.example', to: ['x@gmail.com'] }, raw: `From: ${from}\r\nTo: x@gmail.com\r\nSubject: s\r\n\r\nbody\r\n` }));
    assert.is(err.responseCode, 554, from);
    assert.match(err.response ?? '', /^554 5\.6\.0 /, from);
  }
  assert.is(await storedMessages(fx), before, 'none of them stored');
  for (const from of ['"evil@other.example" <news@acme.example>', 'news@acme.example (Acme, <the> news)', 'Acme (the (nested) one) <news@acme.example>', 'John Q. Public <news@acme.example>']) {
    const info = await t.sendMail({ envelope: { from: 'news@acme.example', to: ['x@gmail.com'] }, raw: `From: ${from}\r\nTo: x@gmail.com\r\nSubject: s\r\n\r\nbody\r\n` });
    assert.match(info.response, /^250 /, from);
  }
  t.close();
});

test('an author field longer than 2048 characters, or a list in it, is refused 554 5.6.0 before it is parsed (a long list held the process for seconds)', async () => {
  const t = acme();
  const before = await storedMessages(fx);
  const fold = (v: string) => v.match(/.{1,70}/g)!.join('\r\n ');
  const long = await refusal(t.sendMail({ envelope: { from: 'news@acme.example', to: ['x@gmail.com'] }, raw: `From: ${fold(`"${'x'.repeat(3000)}" <news@acme.example>`)}\r\nTo: x@gmail.com\r\nSubject: s\r\n\r\nbody\r\n` }));
  assert.match(long.response ?? '', /^554 5\.6\.0 .*the From header is longer than 2048 characters/);
  const list = await refusal(t.sendMail({ envelope: { from: 'news@acme.example', to: ['x@gmail.com'] }, raw: `From: ${fold('a,'.repeat(12_000) + 'news@acme.example')}\r\nTo: x@gmail.com\r\nSubject: s\r\n\r\nbody\r\n` }));
  assert.match(list.response ?? '', /^554 5\.6\.0 /, list.response);
  const group = await refusal(t.sendMail({ envelope: { from: 'news@acme.example', to: ['x@gmail.com'] }, raw: 'From: news@acme.example\r\nSender: staff: desk@acme.example;\r\nTo: x@gmail.com\r\nSubject: s\r\n\r\nbody\r\n' }));
  assert.match(group.response ?? '', /^554 5\.6\.0 .*the Sender header must name exactly one address/);
  assert.is(await storedMessages(fx), before, 'none of them stored');
  t.close();
});

test('a client that hangs up in the middle of DATA: nothing stored, logged as a disconnect, not as an internal error', async () => {
  const { client: c } = await RawSmtp.open(server.port);
  await c.startTls();
  assert.is((await c.auth('acme', 'acme-password')).code, 235);
  assert.is((await c.cmd('MAIL FROM:<news@acme.example>')).code, 250);
  assert.is((await c.cmd('RCPT TO:<x@gmail.com>')).code, 250);
  assert.is((await c.cmd('DATA')).code, 354);
  const before = await storedMessages(fx);
  const errors = () => logged.filter((l) => l.level === 'error').length;
  const errorsBefore = errors();
  await c.write('From: news@acme.example\r\nTo: x@gmail.com\r\nSubject: cut\r\n\r\nhalf a mess');
  c.close();
  const line = async () => logged.find((l) => l.msg === 'client disconnected during DATA; nothing stored');
  for (let i = 0; i < 100 && !(await line()); i++) await new Promise((r) => setTimeout(r, 20));
  assert.is((await line())?.level, 'info');
  assert.is(errors(), errorsBefore, 'no error logged');
  assert.is(await storedMessages(fx), before, 'nothing stored');
});

test('daily quota exceeded → 452 4.5.3, and nothing stored', async () => {
  const t = transport({ user: 'tiny', pass: 'tiny-password' });
  await t.sendMail({ from: 'a@tiny.example', to: ['a@gmail.com', 'b@gmail.com'], subject: 's', text: 't' });
  const before = await fx.client.zcard(fx.keys.ready('gmail.com'));
  const err = await refusal(t.sendMail({ from: 'a@tiny.example', to: ['c@gmail.com', 'd@gmail.com'], subject: 's', text: 't' }));
  t.close();
  assert.is(err.responseCode, 452);
  assert.match(err.response ?? '', '4.5.3');
  assert.is(await fx.client.zcard(fx.keys.ready('gmail.com')), before);
});

test('account rate limit used up → 451 4.7.1 with its reason at the end of DATA; the refused message is not stored and counts nothing', async () => {
  await awayFromHourBoundary();
  const metas = () => storedMessages(fx);
  const windowCount = () => briskWindowCount(fx);
  const rejectedCount = async () => (await metrics.messagesRejected.get()).values.find((v) => v.labels['source'] === 'smtp' && v.labels['code'] === 'SLUICE_INGRESS_RATE_LIMITED')?.value ?? 0;
  assert.is(BRISK_PER_HOUR, 3);
  const t = transport({ user: 'brisk', pass: 'brisk-password' });
  try {
    // Envelope recipients count, bcc included: 2 of the 3 per hour.
    const first = await t.sendMail({ from: 'a@brisk.example', to: 's1@rate.example', bcc: 's2@rate.example', subject: 'first', text: 't' });
    assert.match(first.response, /^250 2\.0\.0 Ok: queued as [0-9a-z]{16}$/);
    assert.is(await windowCount(), 2);

    // Two more would make 4 > 3: refused whole, although one recipient is still free.
    const beforeMetas = await metas();
    const beforeRejected = await rejectedCount();
    const err = await refusal(t.sendMail({ from: 'a@brisk.example', to: ['s3@rate.example', 's4@rate.example'], subject: 'second', text: 't' }));
    assert.is(err.responseCode, 451, err.response);
    assert.match(err.response ?? '', /^451 4\.7\.1 Sending rate limit of 3 recipients per hour reached, slow down \[[A-Za-z0-9]+\]$/);
    assert.is(await metas(), beforeMetas, 'no message stored for the refused one');
    assert.is(await fx.client.zcard(fx.keys.ready('rate.example')), 2, 'only the first message queued');
    assert.is(await windowCount(), 2, 'the refused recipients were given back');
    assert.is(await rejectedCount(), beforeRejected + 1, 'counted as a rate-limit refusal');

    // The one recipient left in the window is still there; after it, even one more is refused.
    const last = await t.sendMail({ from: 'a@brisk.example', to: 's5@rate.example', subject: 'third', text: 't' });
    assert.match(last.response, /^250 /);
    assert.is(await windowCount(), 3);
    const over = await refusal(t.sendMail({ from: 'a@brisk.example', to: 's6@rate.example', subject: 'fourth', text: 't' }));
    assert.is(over.responseCode, 451);
    assert.match(over.response ?? '', '4.7.1');
    assert.is(await metas(), beforeMetas + 1);
    assert.is(await fx.client.zcard(fx.keys.ready('rate.example')), 3);
  } finally {
    t.close();
  }
});

test('RCPT TO past the account\'s smallest limit → 452 4.5.3, so the client sends the rest in another transaction; nothing counted', async () => {
  // A server that takes more recipients per transaction than brisk's rate limit (3 per hour).
  const wide = await guardedServer({ maxRecipients: 10 });
  const { client } = await RawSmtp.open(wide.port);
  try {
    await client.cmd('EHLO client.test');
    assert.is((await client.auth('brisk', 'brisk-password')).code, 235);
    const before = await fx.client.keys(`${fx.keys.accountRate('brisk')}:h:*`);
    const counted = await Promise.all(before.map((k) => fx.client.get(k)));
    assert.is((await client.cmd('MAIL FROM:<a@brisk.example>')).code, 250);
    for (let i = 1; i <= BRISK_PER_HOUR; i++) assert.is((await client.cmd(`RCPT TO:<cap${i}@rate.example>`)).code, 250);
    const over = await client.cmd('RCPT TO:<cap4@rate.example>');
    assert.is(over.code, 452, over.text);
    assert.match(over.text, /^452 4\.5\.3 Too many recipients, this account may send at most 3 per message \[[A-Za-z0-9]+\]$/);
    assert.is((await client.cmd('RCPT TO:<CAP2@rate.example>')).code, 250, 'a repeat adds none: taken at the cap too');
    assert.is((await client.cmd('RSET')).code, 250);
    assert.equal(await Promise.all(before.map((k) => fx.client.get(k))), counted, 'RCPT counts nothing');
    // Another account, without limits, takes the server's 10.
    assert.is((await client.cmd('QUIT')).code, 221);
  } finally {
    client.close();
    await wide.close();
  }
  const other = await guardedServer({ maxRecipients: 10 });
  const { client: c } = await RawSmtp.open(other.port);
  try {
    await c.cmd('EHLO client.test');
    assert.is((await c.auth('acme', 'acme-password')).code, 235);
    assert.is((await c.cmd('MAIL FROM:<a@acme.example>')).code, 250);
    for (let i = 1; i <= 10; i++) assert.is((await c.cmd(`RCPT TO:<wide${i}@gmail.com>`)).code, 250);
    assert.is((await c.cmd('RCPT TO:<wide11@gmail.com>')).code, 452);
  } finally {
    c.close();
    await other.close();
  }
});

/** A raw session over STARTTLS, authenticated as acme. */
async function acmeSession(): Promise<RawSmtp> {
  const { client } = await RawSmtp.open(server.port);
  await client.startTls();
  assert.is((await client.auth('acme', 'acme-password')).code, 235);
  return client;
}

/** The recipients stored with message `id`. */
/** DATA with `message` (ended by the caller's "\r\n."): 354, then 250; the queued message's id. */
async function sendData(c: RawSmtp, message: string): Promise<string> {
  assert.is((await c.cmd('DATA')).code, 354);
  const done = await c.cmd(message);
  assert.is(done.code, 250, done.text);
  return /queued as (\S+)/.exec(done.text)?.[1] as string;
}

async function storedRcpts(id: string): Promise<string[]> {
  const meta = await fx.client.hgetall(fx.keys.msgMeta(id));
  return (JSON.parse(meta['rcpts'] ?? '[]') as { address: string }[]).map((r) => r.address);
}

test('a MAIL FROM or RCPT TO parameter of an extension not advertised → 555 5.5.4 and no transaction; the advertised ones are taken', async () => {
  const c = await acmeSession();
  try {
    // REQUIRETLS is not advertised: its parameter would be a promise Sluice does not keep.
    for (const params of ['FOO=BAR', 'REQUIRETLS', 'SIZE=100 XTRA']) {
      const r = await c.cmd(`MAIL FROM:<a@acme.example> ${params}`);
      assert.is(r.code, 555, `${params}: ${r.text}`);
      assert.match(r.text, /^555 5\.5\.4 .*not supported.* \[[A-Za-z0-9]+\]$/, params);
      assert.is((await c.cmd('RCPT TO:<x@gmail.com>')).code, 503, `${params}: no transaction was opened`);
    }
    // AUTH is advertised, so MAIL FROM's AUTH= is allowed (RFC 4954 §5), but it needs a value.
    const bare = await c.cmd('MAIL FROM:<a@acme.example> AUTH');
    assert.is(bare.code, 501, bare.text);
    assert.match(bare.text, /^501 5\.5\.4 /);
    assert.is((await c.cmd('MAIL FROM:<a@acme.example> SIZE=100 BODY=8BITMIME AUTH=<>')).code, 250);
    for (const params of ['FOO', 'NOTIFY=NEVER FOO=1', 'XTRA=1']) {
      const r = await c.cmd(`RCPT TO:<x@gmail.com> ${params}`);
      assert.is(r.code, 555, `${params}: ${r.text}`);
      assert.match(r.text, /^555 5\.5\.4 /, params);
    }
    // The transaction goes on: the refused RCPTs are not in it.
    assert.is((await c.cmd('RCPT TO:<y@gmail.com>')).code, 250);
    const id = await sendData(c, 'From: a@acme.example\r\nSubject: params\r\n\r\nbody\r\n.');
    assert.equal(await storedRcpts(id), ['y@gmail.com']);
  } finally {
    c.close();
  }
});

test('DSN (RFC 3461) is advertised: RET and ENVID, and each recipient\'s NOTIFY and ORCPT, are stored with the message (xtext decoded); bad values → 501 5.5.4; a refused MAIL FROM leaves none behind', async () => {
  const c = await acmeSession();
  try {
    const ehlo = await c.cmd('EHLO client.test');
    assert.ok(ehlo.text.split('\n').includes('250-DSN'), ehlo.text);
    for (const [params, text] of [['RET=BOTH', /^501 5\.5\.4 Invalid RET parameter value\. Must be FULL or HDRS/], ['ENVID=', /^501 5\.5\.4 /], [`ENVID=${'x'.repeat(101)}`, /^501 5\.5\.4 The ENVID parameter must be 1 to 100 printable ASCII/]] as const) {
      const r = await c.cmd(`MAIL FROM:<a@acme.example> ${params}`);
      assert.match(r.text, text, `${params}: ${r.text}`);
    }
    // Refused at the From check: its RET and ENVID must not stick to the next transaction.
    assert.is((await c.cmd('MAIL FROM:<ceo@other.example> RET=FULL ENVID=stale')).code, 550);
    assert.is((await c.cmd('MAIL FROM:<a@acme.example>')).code, 250);
    assert.is((await c.cmd('RCPT TO:<plain@gmail.com>')).code, 250);
    const plain = await sendData(c, 'From: a@acme.example\r\nSubject: no dsn\r\n\r\nbody\r\n.');
    assert.is(await fx.client.hget(fx.keys.msgMeta(plain), 'dsn'), null, 'no DSN parameters, nothing stored');

    assert.is((await c.cmd('MAIL FROM:<a@acme.example> RET=hdrs ENVID=QQ314159+2Bx')).code, 250);
    for (const [params, text] of [
      ['NOTIFY=SOMETIMES', /^501 5\.5\.4 Error: NOTIFY parameter must be NEVER, SUCCESS, FAILURE, or DELAY/],
      ['NOTIFY=NEVER,FAILURE', /^501 5\.5\.4 Error: NOTIFY=NEVER cannot be combined with other values/],
      ['ORCPT=x@gmail.com', /^501 5\.5\.4 Error: Bad ORCPT parameter syntax/],
      [`ORCPT=rfc822;${'x'.repeat(501)}`, /^501 5\.5\.4 The ORCPT parameter must be 1 to 500 printable ASCII/],
    ] as const) {
      const r = await c.cmd(`RCPT TO:<x@gmail.com> ${params}`);
      assert.match(r.text, text, `${params}: ${r.text}`);
    }
    assert.is((await c.cmd('RCPT TO:<never@gmail.com> NOTIFY=NEVER')).code, 250);
    assert.is((await c.cmd('RCPT TO:<none@gmail.com>')).code, 250);
    assert.is((await c.cmd('RCPT TO:<both@gmail.com> NOTIFY=success,FAILURE ORCPT=rfc822;Both+2Bx@gmail.com')).code, 250);
    const id = await sendData(c, 'From: a@acme.example\r\nSubject: dsn\r\n\r\nbody\r\n.');
    assert.equal(JSON.parse((await fx.client.hget(fx.keys.msgMeta(id), 'dsn')) ?? 'null'), {
      ret: 'HDRS', envid: 'QQ314159+x',
      rcpts: [{ notify: ['NEVER'] }, null, { notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;Both+x@gmail.com' }],
    });
  } finally {
    c.close();
  }
});

test('a non-ASCII address without SMTPUTF8 on MAIL FROM → 553 5.6.7; with it, accepted and queued as written', async () => {
  const c = await acmeSession();
  try {
    const from = await c.cmd('MAIL FROM:<ünïcode@acme.example>');
    assert.is(from.code, 553, from.text);
    assert.match(from.text, /^553 5\.6\.7 /);
    assert.is((await c.cmd('MAIL FROM:<a@acme.example>')).code, 250);
    const rcpt = await c.cmd('RCPT TO:<jürgen@gmail.com>');
    assert.is(rcpt.code, 553, rcpt.text);
    assert.match(rcpt.text, /^553 5\.6\.7 /);
    // An IDN domain sent as its A-label is ASCII on the wire (smtp-server shows it decoded).
    assert.is((await c.cmd('RCPT TO:<x@xn--bcher-kva.example>')).code, 250);
    assert.is((await c.cmd('RSET')).code, 250);
    // A MAIL FROM with SMTPUTF8 that was refused leaves no SMTPUTF8 behind for the next one.
    assert.is((await c.cmd('MAIL FROM:<a@acme.example> SMTPUTF8 FOO=1')).code, 555);
    assert.is((await c.cmd('MAIL FROM:<a@acme.example>')).code, 250);
    assert.is((await c.cmd('RCPT TO:<jürgen@gmail.com>')).code, 553);
    assert.is((await c.cmd('RSET')).code, 250);

    assert.is((await c.cmd('MAIL FROM:<ünïcode@acme.example> SMTPUTF8 BODY=8BITMIME')).code, 250);
    assert.is((await c.cmd('RCPT TO:<jürgen@gmail.com>')).code, 250);
    const id = await sendData(c, 'From: Jürgen <ünïcode@acme.example>\r\nTo: jürgen@gmail.com\r\nSubject: grüße\r\n\r\nbody\r\n.');
    assert.equal(await storedRcpts(id), ['jürgen@gmail.com']);
    assert.ok((await fx.client.zrange(fx.keys.ready('gmail.com'), 0, -1)).includes(`${id}:0:0`), 'queued for delivery');
  } finally {
    c.close();
  }
});

test('ENHANCEDSTATUSCODES is advertised and every reply but the greeting, EHLO and 3xx carries one code: smtp-server\'s own, or Sluice\'s precise one once', async () => {
  const { client: c, greeting } = await RawSmtp.open(server.port);
  const expect = async (line: string, reply: RegExp) => {
    const r = await c.cmd(line);
    assert.match(r.text, reply, `${line} → ${r.text}`);
  };
  try {
    assert.match(greeting.text, /^220 sluice\.test ESMTP /);
    const ehlo = await c.cmd('EHLO client.test');
    assert.ok(ehlo.text.split('\n').includes('250-ENHANCEDSTATUSCODES'), ehlo.text);
    await expect('MAIL FROM:<a@acme.example>', /^530 5\.7\.0 /);
    await expect('BOGUS', /^500 5\.5\.2 /);
    await c.startTls();
    await expect(`AUTH PLAIN ${Buffer.from('\0acme\0wrong').toString('base64')}`, /^535 5\.7\.8 Invalid credentials \[[A-Za-z0-9]+\]$/);
    await expect(`AUTH PLAIN ${Buffer.from('\0acme\0acme-password').toString('base64')}`, /^235 2\.7\.0 /);
    await expect('MAIL FROM:<a@acme.example> SIZE=abc', /^501 5\.5\.4 /);
    // A declared size over the limit is refused at MAIL FROM, before any data.
    await expect(`MAIL FROM:<a@acme.example> SIZE=${MAX_SIZE + 1}`, /^552 5\.3\.4 /);
    await expect('MAIL FROM:<ceo@other.example>', /^550 5\.7\.1 The From domain other\.example is not owned by this account \[[A-Za-z0-9]+\]$/);
    await expect(`MAIL FROM:<a@acme.example> SIZE=${MAX_SIZE}`, /^250 2\.1\.0 /);
    await expect('MAIL FROM:<a@acme.example>', /^503 5\.5\.1 /);
    await expect('RCPT TO:<x@gmail.com>', /^250 2\.1\.5 /);
    await expect('DATA', /^354 /);
    await expect('From: a@acme.example\r\nSubject: codes\r\n\r\nbody\r\n.', /^250 2\.0\.0 Ok: queued as [0-9a-z]{16}$/);
    await expect('NOOP', /^250 2\.0\.0 /);
    await expect('QUIT', /^221 2\.0\.0 /);
  } finally {
    c.close();
  }
});

test('AUTH is offered only over TLS: EHLO in the clear does not list it (a client would send its password in it), AUTH there is 500 and authenticates nobody', async () => {
  const { client: c } = await RawSmtp.open(server.port);
  const plain = `AUTH PLAIN ${Buffer.from('\0acme\0acme-password').toString('base64')}`;
  try {
    const ehlo = await c.cmd('EHLO client.test');
    assert.ok(ehlo.text.split('\n').includes('250-STARTTLS'), ehlo.text);
    assert.not.match(ehlo.text, /^250[- ]AUTH/m, ehlo.text);
    assert.match((await c.cmd(plain)).text, /^500 5\.5\.2 /);
    assert.match((await c.cmd('MAIL FROM:<a@acme.example>')).text, /^530 5\.7\.0 /);
    const secure = await c.startTls();
    assert.ok(secure.text.split('\n').includes('250-AUTH PLAIN LOGIN'), secure.text);
    assert.match((await c.cmd(plain)).text, /^235 2\.7\.0 /);
    assert.match((await c.cmd('MAIL FROM:<a@acme.example>')).text, /^250 2\.1\.0 /);
  } finally {
    c.close();
  }
});

/** Writes lines to a plain TCP session and collects the reply lines. */
function rawSession(lines: (string | Buffer)[], quit: boolean): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const sock = connect(server.port, '127.0.0.1');
    let buf = '';
    sock.on('data', (d) => (buf += d.toString('latin1')));
    sock.on('error', reject);
    sock.on('connect', async () => {
      // Talking before the greeting is refused (421), as it should be: wait for the 220.
      while (!buf.includes('\r\n')) await new Promise((r) => setTimeout(r, 10));
      for (const l of lines) {
        sock.write(typeof l === 'string' ? `${l}\r\n` : l);
        await new Promise((r) => setTimeout(r, 20));
      }
      if (quit) sock.write('QUIT\r\n');
      await new Promise((r) => setTimeout(r, 100));
      sock.end();
    });
    sock.on('close', () => resolve(buf.split('\r\n').filter(Boolean)));
  });
}

test('garbage input gets replies, never a crash; the server keeps serving', async () => {
  const junk = Buffer.alloc(3000);
  for (let i = 0; i < junk.length; i++) junk[i] = (i * 131 + 7) % 256;
  const replies = await rawSession(['HELO', 'RCPT TO:<x@y>', 'DATA', 'AUTH PLAIN !!!!', 'MAIL FROM:<<<>>>', junk, '\u0000\u0001\r\n', 'NOOP'], true);
  assert.ok(replies.length >= 3, replies.join('|'));
  assert.match(replies[0] ?? '', /^220 /);
  assert.ok(replies.some((l) => /^5\d\d /.test(l)), 'bad commands get 5xx replies');
  const plain = await rawSession(['EHLO t', 'MAIL FROM:<a@acme.example>'], true);
  assert.ok(plain.some((l) => /^530 /.test(l)), `MAIL before AUTH is refused: ${plain.join('|')}`);
  const t = acme();
  const info = await t.sendMail({ from: 'a@acme.example', to: 'after@gmail.com', subject: 's', text: 't' });
  t.close();
  assert.match(info.response, /^250 /);
});

test('repeated auth failures from one IP are throttled (454 4.7.0), shared through Redis', async () => {
  for (let i = 0; i < 6; i++) {
    const t = transport({ user: 'acme', pass: `wrong-${i}` });
    await refusal(t.sendMail({ from: 'a@acme.example', to: 'x@gmail.com', subject: 's', text: 't' }));
    t.close();
  }
  const t = acme();
  const err = await refusal(t.sendMail({ from: 'a@acme.example', to: 'x@gmail.com', subject: 's', text: 't' }));
  t.close();
  assert.is(err.responseCode, 454);
  assert.match(err.response ?? '', '4.7.0');
  assert.ok((await fx.client.get(fx.keys.authFailures('ip', '127.0.0.1'))) !== null);
});

/** A second server on the fixture's Redis with the connection guards tightened (loopback not exempt). */
async function guardedServer(smtp: Record<string, unknown>): Promise<SubmissionServer> {
  const config = { ...fx.config, ingress: { ...fx.config.ingress, smtp: { ...fx.config.ingress.smtp, clientLimitExempt: [], ...smtp } } };
  return startSubmissionServer(
    { redis: fx.client, keys: fx.keys, config, registry: fx.registry, logger: fx.logger, metrics },
    { host: '127.0.0.1', port: 0, allowInsecureAuth: true },
  );
}

async function refusedCount(reason: string): Promise<number> {
  const m = await metrics.smtpSessionsRefused.get();
  return m.values.find((v) => v.labels.interface === 'submission' && v.labels.reason === reason)?.value ?? 0;
}

test('one client gets maxClientsPerIp connections; the next is refused with 421 4.7.0 until one closes', async () => {
  const guarded = await guardedServer({ maxClientsPerIp: 2 });
  const before = await refusedCount('client_limit');
  try {
    const a = await RawSmtp.open(guarded.port);
    const b = await RawSmtp.open(guarded.port);
    assert.is(a.greeting.code, 220);
    assert.is(b.greeting.code, 220);
    const c = await RawSmtp.open(guarded.port);
    assert.is(c.greeting.code, 421, c.greeting.text);
    assert.match(c.greeting.text, '4.7.0');
    await c.client.closed;
    assert.is(await refusedCount('client_limit'), before + 1);
    // The open ones still work, and a closed one frees its slot.
    assert.is((await a.client.cmd('NOOP')).code, 250);
    assert.is((await b.client.cmd('QUIT')).code, 221);
    await b.client.closed;
    let d = await RawSmtp.open(guarded.port);
    // The server learns of the close a moment after the client: retry briefly.
    for (let i = 0; i < 50 && d.greeting.code === 421; i++) {
      await d.client.closed;
      await new Promise((r) => setTimeout(r, 20));
      d = await RawSmtp.open(guarded.port);
    }
    assert.is(d.greeting.code, 220, d.greeting.text);
    a.client.close();
    d.client.close();
  } finally {
    await guarded.close();
  }
});

test('a client that does not authenticate within authTimeout is sent 421 4.4.2 and disconnected, busy or not; an authenticated one stays', async () => {
  const guarded = await guardedServer({ authTimeout: 300 });
  const before = await refusedCount('auth_timeout');
  try {
    const idle = await RawSmtp.open(guarded.port);
    const authed = await RawSmtp.open(guarded.port);
    assert.is((await authed.client.cmd('EHLO client.test')).code, 250);
    assert.is((await authed.client.auth('acme', 'acme-password')).code, 235);
    // A trickle: a command every 50 ms keeps the idle timeout away, but not the deadline.
    assert.is((await idle.client.cmd('EHLO client.test')).code, 250);
    let last: { code: number; text: string } = { code: 250, text: '' };
    for (let i = 0; i < 100 && last.code === 250; i++) {
      await new Promise((r) => setTimeout(r, 50));
      last = await idle.client.cmd('NOOP');
    }
    assert.is(last.code, 421, last.text);
    assert.match(last.text, '4.4.2');
    await idle.client.closed;
    assert.is(await refusedCount('auth_timeout'), before + 1);
    // Past the deadline the authenticated session still answers and can send.
    assert.is((await authed.client.cmd('NOOP')).code, 250);
    assert.is((await authed.client.cmd('MAIL FROM:<a@acme.example>')).code, 250);
    authed.client.close();
  } finally {
    await guarded.close();
  }
});

test.run();
