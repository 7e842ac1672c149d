/**
 * Bad input never throws out of classifyMessage and never yields a record: empty, binary noise,
 * header floods, deep multipart nesting, truncated reports, huge bodies, CRLF/LF variants.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { classifyMessage } from '../../src/bounces/index.js';
import { findCommand } from '../../src/bounces/smtp-text.js';
import { CORPUS_DIR } from './corpus-eval.js';

const test = suite('bounces/robustness');

test('empty input gives no record', async () => {
  assert.equal(await classifyMessage(Buffer.alloc(0)), []);
});

test('random bytes give no record', async () => {
  // A fixed pseudo-random sequence (xorshift) so a failure reproduces.
  let x = 2463534242;
  const buf = Buffer.alloc(256 * 1024);
  for (let i = 0; i < buf.length; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    buf[i] = x & 0xff;
  }
  assert.equal(await classifyMessage(buf), []);
});

test('a flood of header fields and a huge body give no record', async () => {
  const head = 'X-Junk: a\r\n'.repeat(50_000);
  const raw = Buffer.from(`${head}Subject: hello\r\n\r\n${'lorem ipsum '.repeat(600_000)}`);
  assert.ok(raw.length > 4 * 1024 * 1024, 'input is larger than the parse bound');
  assert.equal(await classifyMessage(raw), []);
});

test('deeply nested multiparts do not recurse without bound', async () => {
  let body = 'leaf';
  for (let i = 0; i < 2000; i++) body = `Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\n${body}\r\n--b${i}--\r\n`;
  assert.equal(await classifyMessage(Buffer.from(`From: someone@example.org\r\nSubject: hi\r\n${body}`)), []);
});

test('a report part with broken fields gives no record rather than a wrong one', async () => {
  const raw = [
    'From: MAILER-DAEMON@mx.example.org', 'Subject: Undelivered Mail', 'Content-Type: multipart/report; report-type=delivery-status; boundary=x',
    '', '--x', 'Content-Type: message/delivery-status', '', 'Final-Recipient: rfc822; not an address', 'Action: failed', 'Status: 9.9.9', '--x--', '',
  ].join('\r\n');
  const got = await classifyMessage(Buffer.from(raw));
  assert.ok(got.every((r) => r.recipient === '' || r.recipient.includes('@')));
});

test('every corpus mail truncated at several points never throws', async () => {
  const files = ['lhost-postfix-05.eml', 'lhost-exim-02.eml', 'lhost-sendmail-02.eml', 'arf-01.eml', 'lhost-qmail-01.eml'];
  for (const f of files) {
    const raw = readFileSync(join(CORPUS_DIR, 'emails', f));
    for (const cut of [1, 17, 100, raw.length >> 2, raw.length >> 1, raw.length - 3]) {
      const got = await classifyMessage(raw.subarray(0, cut));
      assert.ok(Array.isArray(got), `${f} cut at ${cut}`);
    }
  }
});

test('LF and CRLF line ends classify the same', async () => {
  for (const f of ['lhost-postfix-05.eml', 'lhost-exim-02.eml', 'lhost-qmail-01.eml', 'lhost-sendmail-02.eml', 'arf-14.eml', 'rfc3834-01.eml']) {
    const lf = readFileSync(join(CORPUS_DIR, 'emails', f)).toString('latin1').replace(/\r\n/g, '\n');
    const crlf = lf.replace(/\n/g, '\r\n');
    const a = await classifyMessage(Buffer.from(lf, 'latin1'));
    const b = await classifyMessage(Buffer.from(crlf, 'latin1'));
    assert.ok(a.length > 0, `${f} yields a record`);
    assert.equal(b.map((r) => [r.recipient, r.reason, r.status]), a.map((r) => [r.recipient, r.reason, r.status]), f);
  }
});

test('a body of delimiter-like lines without a Content-Type is read in linear work (no regex backtracking)', async () => {
  // The lost-Content-Type sniff looks for a delimiter line followed, within 64 KiB, by a
  // delivery-status part. Tried after each of 65,536 `--x` lines it took ~20 s per mail, blocking
  // the feedback MX's event loop; 32 of them outlast the runner's per-file timeout by far.
  for (let i = 0; i < 32; i++) {
    const raw = Buffer.from(`From: MAILER-DAEMON@mx.example.org\r\nSubject: Returned mail\r\n\r\n${`--${i.toString(36)}\n`.repeat(64 * 1024)}`);
    assert.equal(await classifyMessage(raw), []);
  }
  // The sniff still finds a real report's delimiter when the top-level Content-Type is gone.
  const report = [
    'From: MAILER-DAEMON@mx.example.org', 'Subject: Returned mail: see transcript for details', '',
    'This is a MIME-encapsulated message', '', '--b1', 'Content-Type: text/plain', '', 'The original message was received.',
    '   ----- The following addresses had permanent fatal errors -----', '<nobody@example.com>', '',
    '--b1', 'Content-Type: message/delivery-status', '', 'Reporting-MTA: dns; mx.example.org', '',
    'Final-Recipient: RFC822; nobody@example.com', 'Action: failed', 'Status: 5.1.1', 'Diagnostic-Code: SMTP; 550 5.1.1 <nobody@example.com>... User unknown', '',
    '--b1--', '',
  ].join('\r\n');
  const got = await classifyMessage(Buffer.from(report));
  assert.equal(got.map((r) => [r.recipient, r.status, r.reason]), [['nobody@example.com', '5.1.1', 'userunknown']]);
});

test('a notice of blank lines is read in linear work (no regex backtracking across line ends)', async () => {
  // The markers of the returned message's start were /^\s*…/im: under the m flag \s* crosses line
  // ends, so each was tried from every line start over every blank line after it. 64 KiB of CRLFs
  // took ~45 s per mail, blocking the feedback MX's event loop; 16 of them outlast the runner's
  // per-file timeout by far.
  for (let i = 0; i < 16; i++) {
    const raw = Buffer.from(`From: MAILER-DAEMON@mx.example.org\r\nSubject: failure notice ${i}\r\n\r\n${'\r\n'.repeat(32 * 1024)}x\r\n`);
    assert.equal(await classifyMessage(raw), []);
  }
  // A marker indented on its own line still ends the human part: the returned copy's address is not taken.
  const notice = [
    'From: MAILER-DAEMON@mx.example.org', 'Subject: failure notice', '',
    "Sorry, I wasn't able to deliver your message to the following addresses.", '',
    '<gone@example.com>:', '550 5.1.1 mailbox unavailable', '', '',
    '   original message headers:', '', 'To: other@example.net', 'From: sender@example.org', '',
  ].join('\r\n');
  const got = await classifyMessage(Buffer.from(notice));
  assert.equal(got.map((r) => r.recipient), ['gone@example.com']);
});

test('an HTML notice of unclosed tags is read in linear work; a real HTML notice still gives its recipient', async () => {
  // Tags were /<[^>]*>/ and script/style blocks /<(?:script|style)[\s\S]*?<\/…>/: each '<' without a '>'
  // (each unclosed '<style') rescanned to the end. 64 KB of '<' took 6 s of the inbound MX's thread;
  // these 512 KB bodies would take minutes each, past the runner's per-file timeout.
  for (const unit of ['<', '<style ', '<script>']) {
    const raw = Buffer.from(`From: MAILER-DAEMON@mx.example.org\r\nSubject: Undeliverable\r\nContent-Type: text/html\r\n\r\n${unit.repeat(Math.floor((512 * 1024) / unit.length))}`);
    assert.equal(await classifyMessage(raw), [], unit);
  }
  const html = [
    'From: MAILER-DAEMON@mx.example.org', 'Subject: Undeliverable: hello', 'Content-Type: text/html', '',
    '<html><head><style>p { color: red } /* <b>x</b> */</style><script>var a = "<gone@wrong.example>";</script></head>',
    '<body><p>Delivery has failed to these recipients or groups:</p><p><a href="mailto:gone@example.com">gone@example.com</a><br>',
    'The email address you entered couldn&#39;t be found. 550 5.1.1 User unknown</p></body></html>', '',
  ].join('\r\n');
  assert.equal((await classifyMessage(Buffer.from(html))).map((r) => [r.recipient, r.status]), [['gone@example.com', '5.1.1']]);
});

test("a notice line of repeated 'remote host … said: 5xx' is read in bounded work; the greeting refusal is still told", async () => {
  // The CONN pattern had two unbounded .* on one line: 60 KB of it took 5 minutes per call.
  const line = `<a@example.com>: ${'remote host said: 500 '.repeat(3000)}`;
  const raw = Buffer.from(`From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\n${line}\r\n`);
  assert.equal((await classifyMessage(raw)).map((r) => r.recipient), ['a@example.com']);
  assert.is(findCommand('host mx.example.net[192.0.2.1] refused to talk to me: remote host mx.example.net said: 554 5.7.1 go away (in reply to the greeting)'), 'CONN');
});

test("a block of thousands of 'x:' lines and blank lines is read in linear work", async () => {
  // A blank line joined the whole block again to see whether it ended in ':': quadratic, ~9 s for a
  // 64 KiB notice; 40 of them outlast the runner's per-file timeout.
  for (let i = 0; i < 40; i++) {
    const raw = Buffer.from(`From: MAILER-DAEMON@mx.example.org\r\nSubject: failure notice ${i}\r\n\r\n<a@example.com>:\r\n${'x:\r\n\r\n'.repeat(20_000)}`);
    assert.equal((await classifyMessage(raw)).map((r) => r.recipient), ['a@example.com']);
  }
});

test.run();
