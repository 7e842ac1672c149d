import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { simpleParser } from 'mailparser';
import { failureNotice, noticeId } from '../../src/delivery/failure-notice.js';
import { idTime, isId } from '../../src/core/ids.js';
import { classifyMessage } from '../../src/bounces/index.js';

const test = suite('delivery/failure-notice');
const AT = Date.UTC(2026, 10, 27, 12, 0, 0);
const base = {
  hostname: 'mta.example.net', msgId: '01m8f2rda18dd3bp', idx: 2, acceptedAt: AT - 3 * 86_400_000, now: AT,
  to: 'ops@acme.example', recipient: 'full@far.example', status: '4.2.2', explanation: 'It could not be delivered within 3d.',
};

test('an expired recipient: the last remote reply, on one line, as Diagnostic-Code; its 4.x status kept (as Postfix does)', async () => {
  const raw = failureNotice({ ...base, remoteReply: '452-4.2.2 Mailbox full\r\n452 4.2.2 try again later', original: Buffer.from('Subject: hi\r\nFrom: ops@acme.example\r\n\r\nbody') });
  const text = raw.toString('latin1');
  assert.match(text, '\r\nDiagnostic-Code: smtp; 452-4.2.2 Mailbox full 452 4.2.2 try again later\r\n');
  assert.match(text, '\r\nStatus: 4.2.2\r\nDiagnostic-Code');
  assert.match(text, '\r\nArrival-Date: Tue, 24 Nov 2026 12:00:00 +0000\r\n');
  assert.match(text, '\r\nLast-Attempt-Date: Fri, 27 Nov 2026 12:00:00 +0000\r\n');
  assert.not.match(text, 'body', 'only the header section of the original');
  const parsed = await simpleParser(raw);
  assert.is(parsed.subject, 'Undelivered Mail Returned to Sender');
  assert.equal(parsed.attachments.map((a) => a.contentType), ['text/rfc822-headers']);
  assert.match(parsed.attachments[0]!.content.toString(), 'Subject: hi\r\nFrom: ops@acme.example');
  const [r] = await classifyMessage(raw);
  assert.equal([r?.recipient, r?.action, r?.status], ['full@far.example', 'failed', '4.2.2']);
});

test('no remote reply: no Diagnostic-Code; 8-bit and control bytes of the original become "?", and a huge header section is cut at a line end', () => {
  const long = Buffer.concat([Buffer.from('Subject: caf\xc3\xa9\x01\r\n', 'latin1'), Buffer.from(`X-Long: ${'a'.repeat(40_000)}\r\nX-After: cut\r\n`)]);
  const raw = failureNotice({ ...base, status: '5.7.1', remoteReply: null, explanation: 'Suppressed.\r\nInjected: header', original: long });
  const text = raw.toString('latin1');
  assert.not.match(text, 'Diagnostic-Code');
  assert.match(text, 'Subject: caf???\r\n');
  assert.not.match(text, 'X-After');
  assert.not.match(text, '\r\nInjected: header', 'the explanation stays on its line');
  assert.ok(text.endsWith(`\r\n--=_sluice-dsn-${base.msgId}-2--\r\n`));
  assert.ok(raw.length < 40_000);
  for (const b of raw) assert.ok(b === 0x0d || b === 0x0a || (b >= 0x20 && b <= 0x7e), `byte ${b}`);
});

test('RET=FULL returns the whole message only when it is 7-bit and at most 64 KiB, else its header section with a word why; a report of success returns the headers', () => {
  const small = Buffer.from('Subject: hi\r\n\r\nbody line\n');
  const full = failureNotice({ ...base, remoteReply: null, original: small, ret: 'FULL' }).toString('latin1');
  assert.match(full, '\r\nContent-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\nbody line\r\n--=_sluice-dsn-');
  for (const original of [Buffer.from('Subject: caf\xc3\xa9\r\n\r\nbody\r\n', 'latin1'), Buffer.from(`Subject: big\r\n\r\n${'x'.repeat(70 * 1024)}\r\n`)]) {
    const text = failureNotice({ ...base, remoteReply: null, original, ret: 'FULL' }).toString('latin1');
    assert.match(text, '\r\nContent-Type: text/rfc822-headers\r\n');
    assert.match(text, 'only its header section is attached');
    assert.not.match(text, /body|xxxx/);
  }
  const relayed = failureNotice({ ...base, action: 'relayed', status: '2.0.0', remoteReply: '250 2.0.0 queued', original: small, ret: 'FULL', orcpt: 'rfc822;orig@far.example', envid: 'e1' }).toString('latin1');
  assert.match(relayed, '\r\nOriginal-Envelope-Id: e1\r\nReporting-MTA: dns; mta.example.net\r\n');
  assert.match(relayed, '\r\nOriginal-Recipient: rfc822; orig@far.example\r\nFinal-Recipient: rfc822; full@far.example\r\nAction: relayed\r\nStatus: 2.0.0\r\n');
  assert.match(relayed, '\r\nContent-Type: text/rfc822-headers\r\n');
  assert.not.match(relayed, 'body line');
});

test('noticeId: one id per recipient of a message, its original\'s time, none equal to the original nor to each other, even where the random part wraps', () => {
  for (const msgId of [base.msgId, '01m8f2rda1zzzzzz']) {
    const ids = Array.from({ length: 1000 }, (_, i) => noticeId(msgId, i));
    assert.is(new Set([msgId, ...ids]).size, 1001);
    for (const id of ids) assert.ok(isId(id) && idTime(id) === idTime(msgId), id);
    assert.is(noticeId(msgId, 7), ids[7], 'the same for every holder');
  }
});

test.run();
