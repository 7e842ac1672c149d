import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { simpleParser } from 'mailparser';
import { encodeText, encodeQuotedPrintable } from '../../src/render/text-part.js';
import { composeSpec } from '../../src/render/compose.js';

const test = suite('render/text-part');

/** Decodes quoted-printable the way a receiver does (RFC 2045 §6.7), independently of our encoder. */
function decodeQp(text: string): Buffer {
  const soft = text.replace(/=\r\n/g, '');
  const bytes: number[] = [];
  for (let i = 0; i < soft.length; i++) {
    if (soft[i] === '=' && /^[0-9A-F]{2}$/.test(soft.slice(i + 1, i + 3))) {
      bytes.push(parseInt(soft.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(soft.charCodeAt(i));
  }
  return Buffer.from(bytes);
}

test('ASCII with lines up to 998 octets goes out as 7bit, unchanged but for CRLF', () => {
  const e = encodeText('html', '<p>plain ascii</p>\n<p>second line</p>');
  assert.is(e.transferEncoding, '7bit');
  assert.is(e.body.toString(), '<p>plain ascii</p>\r\n<p>second line</p>');
});

test('non-ASCII, control bytes or a line over 998 octets go out as quoted-printable', () => {
  assert.is(encodeText('plain', 'café').transferEncoding, 'quoted-printable');
  assert.is(encodeText('plain', 'bell\x07').transferEncoding, 'quoted-printable');
  assert.is(encodeText('plain', 'x'.repeat(999)).transferEncoding, 'quoted-printable');
  assert.is(encodeText('plain', 'x'.repeat(998)).transferEncoding, '7bit');
});

test('quoted-printable round-trips every byte, keeps lines ≤ 76, encodes = and trailing whitespace', () => {
  const samples = [
    'Grüße aus Köln = 100 % ✓ \t\r\nnext line with trailing space \r\nend',
    'a'.repeat(500) + '=' + 'é'.repeat(200),
    Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join('').replace(/\r|\n/g, ''),
    // A blank last on a line or last of all, at every column around the soft-break limit.
    ...Array.from({ length: 10 }, (_, k) => `${'a'.repeat(70 + k)} \r\n${'b'.repeat(68 + k)}\t\r\n${'c'.repeat(70 + k)}  `),
  ];
  for (const s of samples) {
    const src = Buffer.from(s, 'utf8');
    const enc = encodeQuotedPrintable(src).toString('latin1');
    for (const line of enc.split('\r\n')) assert.ok(line.length <= 76, `line of ${line.length}: ${line}`);
    assert.not.match(enc, /[ \t]\r\n/, 'no whitespace before a line break');
    assert.not.match(enc, /[^\x20-\x7e\t\r\n]/, 'only printable ASCII (and tab) on the wire');
    assert.ok(decodeQp(enc).equals(src), 'decodes to the original bytes');
  }
});

test('quoted-printable of random text (blanks, CR, LF, =, non-ASCII in runs) decodes exactly and keeps every line rule', () => {
  // A seeded generator: the same inputs on every run.
  let seed = 42;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  const alphabet = [' ', ' ', '\t', '\r', '\n', '\r\n', '\r\n', '=', 'é', '✓', 'a', 'b', 'word', 'x'.repeat(80), '\x00', '\x7f'];
  for (let k = 0; k < 300; k++) {
    let s = '';
    const len = 1 + rnd(120);
    for (let j = 0; j < len; j++) s += alphabet[rnd(alphabet.length)];
    const src = Buffer.from(s, 'utf8');
    const enc = encodeQuotedPrintable(src).toString('latin1');
    for (const line of enc.split('\r\n')) assert.ok(line.length <= 76, `line of ${line.length} in case ${k}`);
    assert.not.match(enc, /[ \t](\r\n|$)/, `no whitespace before a line break or at the end (case ${k})`);
    assert.not.match(enc, /[^\x20-\x7e\t\r\n]/, 'only printable ASCII (and tab) on the wire');
    assert.not.match(enc, /\r(?!\n)|(?<!\r)\n/, 'line breaks are CRLF only');
    assert.ok(decodeQp(enc).equals(src), `case ${k} decodes to the original bytes: ${JSON.stringify(s)}`);
  }
});

test('an html-only message is a single text/html part with its headers, readable by mailparser', async () => {
  const html = '<p>Schöne Grüße</p>\n' + '<p>' + 'long line '.repeat(120) + '</p>';
  const msg = await composeSpec({ from: { name: 'Zoë', address: 'a@shop.example' }, to: [{ address: 'b@x.test' }], cc: [], subject: 'Grüße', html, headers: { 'X-Campaign': 'c1' }, attachments: [], messageId: '<0123456789abcdef@shop.example>' }, Date.UTC(2026, 0, 1));
  const head = msg.subarray(0, msg.indexOf('\r\n\r\n')).toString();
  assert.match(head, /^Content-Type: text\/html; charset=utf-8$/m);
  assert.match(head, /^Content-Transfer-Encoding: quoted-printable$/m);
  assert.is(head.match(/^Content-Type:/gim)?.length, 1, 'one Content-Type');
  const parsed = await simpleParser(msg);
  assert.is(parsed.html, html.replace(/\n/g, '\r\n').replace(/\r\n/g, '\n'));
  assert.is(parsed.subject, 'Grüße');
  assert.is(parsed.headers.get('x-campaign'), 'c1');
});

test.run();
