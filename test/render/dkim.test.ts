import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DKIM_SELECTOR } from '../../src/core/dkim-record.js';
import { isSluiceError } from '../../src/core/errors.js';
import { bodyHash, dnsRecord, prepareSigner, signMessage } from '../../src/render/dkim.js';
import { makeKey, txtTable, verifyBoth, verifyWithDkimpy, verifyWithMailauth, type TestKey, type Verdict } from '../helpers/dkim-verify.js';

const test = suite('render/dkim');

let rsa: TestKey;
let ed: TestKey;
let table: Record<string, string>;

test.before(() => {
  rsa = makeKey('example.com', 'r2026', 'rsa');
  ed = makeKey('example.com', 'e2026', 'ed25519');
  table = txtTable([rsa, ed]);
});

const crlf = (lines: string[]): Buffer => Buffer.from(lines.join('\r\n'), 'utf8');

const PLAIN = crlf([
  'From: Alice <alice@example.com>',
  'To: bob@example.org',
  'Subject: Quarterly report',
  'Date: Tue, 01 Jul 2025 09:05:00 +0000',
  'Message-ID: <q1@example.com>',
  'MIME-Version: 1.0',
  'Content-Type: text/plain; charset=utf-8',
  '',
  'Numbers are up.',
  '',
]);

function signatureHeaders(signed: Buffer): string[] {
  const head = signed.toString('latin1', 0, signed.indexOf('\r\n\r\n'));
  return head.split(/\r\n(?![ \t])/).filter((h) => /^dkim-signature:/i.test(h));
}

function tag(header: string, name: string): string {
  const m = new RegExp(`[;:\\s]${name}=([^;]*)`).exec(header.replace(/\r\n[ \t]/g, ' '));
  return (m?.[1] ?? '').replace(/\s+/g, '');
}

function assertAllPass(res: { mailauth: Verdict[]; dkimpy: Verdict[] }, count: number): void {
  assert.is(res.mailauth.length, count, `mailauth saw ${res.mailauth.length} signatures`);
  assert.is(res.dkimpy.length, count, `dkimpy saw ${res.dkimpy.length} signatures`);
  for (const v of [...res.mailauth, ...res.dkimpy]) assert.ok(v.pass, `${v.algo} ${v.selector}: ${v.detail}`);
}

function assertAllFail(res: { mailauth: Verdict[]; dkimpy: Verdict[] }): void {
  assert.ok(res.mailauth.length > 0 && res.dkimpy.length > 0, 'both verifiers saw the signatures');
  for (const v of [...res.mailauth, ...res.dkimpy]) assert.not.ok(v.pass, `${v.algo} ${v.selector} should fail`);
}

test('an RSA-2048 signature verifies with mailauth and dkimpy', async () => {
  const { signed, algorithms } = signMessage(PLAIN, [prepareSigner(rsa)]);
  assert.equal(algorithms, ['rsa']);
  const res = await verifyBoth(signed, table);
  assertAllPass(res, 1);
  assert.is(res.mailauth[0]?.algo, 'rsa-sha256');
  assert.is(res.dkimpy[0]?.algo, 'rsa-sha256');
});

test('an Ed25519-SHA256 signature (RFC 8463) verifies with mailauth and dkimpy', async () => {
  const { signed, algorithms } = signMessage(PLAIN, [prepareSigner(ed)]);
  assert.equal(algorithms, ['ed25519']);
  const res = await verifyBoth(signed, table);
  assertAllPass(res, 1);
  assert.is(res.mailauth[0]?.algo, 'ed25519-sha256');
  assert.is(res.dkimpy[0]?.algo, 'ed25519-sha256');
});

test('dual signing prepends one signature per key, in key order, and both verify', async () => {
  const { signed, algorithms } = signMessage(PLAIN, [prepareSigner(rsa), prepareSigner(ed)]);
  assert.equal(algorithms, ['rsa', 'ed25519']);
  const sigs = signatureHeaders(signed);
  assert.is(sigs.length, 2);
  assert.is(tag(sigs[0] as string, 'a'), 'rsa-sha256');
  assert.is(tag(sigs[1] as string, 'a'), 'ed25519-sha256');
  assert.is(tag(sigs[0] as string, 'bh'), tag(sigs[1] as string, 'bh'), 'one body hash for both');
  assert.ok(signed.subarray(signed.length - PLAIN.length).equals(PLAIN), 'the original bytes follow unchanged');
  assertAllPass(await verifyBoth(signed, table), 2);
});

test('the signature header has t=, bh=, no l=, relaxed/relaxed, and lines of at most 78 characters', () => {
  const now = Date.UTC(2025, 6, 1, 9, 5, 0);
  const [sig] = signatureHeaders(signMessage(PLAIN, [prepareSigner(rsa)], { now }).signed);
  assert.ok(sig);
  assert.is(tag(sig, 't'), String(now / 1000));
  assert.is(tag(sig, 'c'), 'relaxed/relaxed');
  assert.is(tag(sig, 'd'), 'example.com');
  assert.is(tag(sig, 's'), 'r2026');
  assert.is(tag(sig, 'l'), '');
  assert.is(Buffer.from(tag(sig, 'bh'), 'base64').length, 32);
  for (const line of sig.split('\r\n')) assert.ok(line.length <= 78, `line too long: ${line}`);
});

test('odd whitespace, folded headers, 8-bit header bytes and LF-only endings sign and verify', async () => {
  const odd = Buffer.from(
    [
      'From:   "Ålice  Ünïcode"   <alice@example.com>  ',
      'To: bob@example.org,',
      '\t carol@example.org,',
      '    dave@example.org',
      'Subject:\tA subject \t with   runs of\t\twhitespace ',
      '  and a folded second line   ',
      'Subject-Extra: Grüße aus Köln',
      'Date: Tue, 01 Jul 2025 09:05:00 +0000',
      'Content-Type: text/plain;',
      '  charset="utf-8"',
      '',
      '  Leading spaces stay significant.',
      'Trailing tabs and spaces go away \t \t',
      'Runs  of\t\t whitespace   collapse',
      '',
      '   ',
      '',
      '',
    ].join('\n'),
    'utf8',
  );
  const { signed } = signMessage(odd, [prepareSigner(rsa), prepareSigner(ed)]);
  for (let i = 0; i < signed.length; i++) {
    if (signed[i] === 0x0a) assert.is(signed[i - 1], 0x0d, `bare LF left at byte ${i}`);
  }
  assertAllPass(await verifyBoth(signed, table), 2);
});

test('relaxed body canonicalisation: trailing empty or blank lines and a missing final CRLF do not change bh', () => {
  const at = (body: string): string => bodyHash(Buffer.from(body, 'latin1'), 0);
  const sha = (s: string): string => createHash('sha256').update(s, 'latin1').digest('base64');
  const base = at('Hello  world\r\n');
  assert.is(base, sha('Hello world\r\n'));
  assert.is(at('QUJD\r\nREVG\r\n\r\n'), sha('QUJD\r\nREVG\r\n'), 'a body without whitespace (base64) is hashed as is');
  assert.is(at(' a \t b\t\r\n\tc'), sha(' a b\r\n c\r\n'));
  assert.is(at('Hello world\r\n\r\n\r\n'), base);
  assert.is(at('Hello \t world \r\n \t \r\n\r\n'), base);
  assert.is(at('Hello world'), base);
  assert.is.not(at('Hello world!\r\n'), base);
  assert.is.not(at(' Hello world\r\n'), base, 'leading whitespace is kept as one SP');
  // RFC 6376 errata 1384: an empty relaxed body is hashed as the empty string.
  const empty = createHash('sha256').update('').digest('base64');
  assert.is(at(''), empty);
  assert.is(at('\r\n\r\n  \r\n'), empty);
});

test('an empty body, and a message that ends after its header, verify', async () => {
  const emptyBody = crlf(['From: alice@example.com', 'To: bob@example.org', 'Subject: nothing', '', '']);
  assertAllPass(await verifyBoth(signMessage(emptyBody, [prepareSigner(rsa), prepareSigner(ed)]).signed, table), 2);
  const onlyBlankLines = crlf(['From: alice@example.com', 'Subject: blanks', '', '', '', '   ', '']);
  assertAllPass(await verifyBoth(signMessage(onlyBlankLines, [prepareSigner(ed)]).signed, table), 1);
});

test('List-Unsubscribe and List-Unsubscribe-Post are in h= (RFC 8058), From is over-signed', () => {
  const msg = crlf([
    'From: news@example.com',
    'To: reader@example.org',
    'Subject: Newsletter',
    'List-Unsubscribe: <https://t.example.com/u/abc>, <mailto:u-abc@example.com>',
    'List-Unsubscribe-Post: List-Unsubscribe=One-Click',
    'X-Not-Signed: whatever',
    '',
    'Hi',
    '',
  ]);
  const [sig] = signatureHeaders(signMessage(msg, [prepareSigner(rsa)]).signed);
  const h = tag(sig as string, 'h').split(':');
  assert.equal(h, ['from', 'from', 'to', 'subject', 'list-unsubscribe', 'list-unsubscribe-post']);
});

test('a From added after signing (above or below the original) makes both verifiers fail', async () => {
  const { signed } = signMessage(PLAIN, [prepareSigner(rsa), prepareSigner(ed)]);
  assertAllPass(await verifyBoth(signed, table), 2);
  const start = signed.indexOf('From: Alice');
  const extra = Buffer.from('From: Mallory <ceo@example.com>\r\n');
  const above = Buffer.concat([signed.subarray(0, start), extra, signed.subarray(start)]);
  const afterFrom = signed.indexOf('\r\n', start) + 2;
  const below = Buffer.concat([signed.subarray(0, afterFrom), extra, signed.subarray(afterFrom)]);
  assertAllFail(await verifyBoth(above, table));
  assertAllFail(await verifyBoth(below, table));
});

test('a tampered body or subject fails verification in both verifiers', async () => {
  const { signed } = signMessage(PLAIN, [prepareSigner(rsa), prepareSigner(ed)]);
  const body = Buffer.from(signed.toString('latin1').replace('Numbers are up.', 'Numbers are down.'), 'latin1');
  const subject = Buffer.from(signed.toString('latin1').replace('Quarterly report', 'Quarterly rep0rt'), 'latin1');
  const [m1, m2] = [await verifyWithMailauth(body, table), await verifyWithMailauth(subject, table)];
  const [p1, p2] = await verifyWithDkimpy([body, subject], table);
  for (const v of [...m1, ...m2, ...(p1 ?? []), ...(p2 ?? [])]) assert.not.ok(v.pass, `${v.algo}: ${v.detail}`);
  assert.is(m1.length + m2.length + (p1?.length ?? 0) + (p2?.length ?? 0), 8);
  // Whitespace changes that relaxed canonicalisation absorbs still verify.
  const rewrapped = Buffer.from(signed.toString('latin1').replace('Subject: Quarterly report', 'Subject:   Quarterly \t report  '), 'latin1');
  assertAllPass(await verifyBoth(rewrapped, table), 2);
});

test('dnsRecord gives the TXT record for RSA (SPKI) and Ed25519 (32 raw bytes), from public or private PEM', () => {
  const r = dnsRecord(rsa.publicKeyPem, 'rsa');
  assert.match(r, /^v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]+$/);
  const spki = Buffer.from(r.split('p=')[1] as string, 'base64');
  assert.is(createPublicKey({ key: spki, format: 'der', type: 'spki' }).asymmetricKeyType, 'rsa');
  assert.is(dnsRecord(rsa.privateKeyPem, 'rsa'), r, 'the public half of a private key gives the same record');
  const e = dnsRecord(ed.publicKeyPem, 'ed25519');
  assert.match(e, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/=]+$/);
  assert.is(Buffer.from(e.split('p=')[1] as string, 'base64').length, 32);
  try {
    dnsRecord(ed.publicKeyPem, 'rsa');
    assert.unreachable('an Ed25519 key is not an RSA key');
  } catch (err) {
    assert.ok(isSluiceError(err, 'SLUICE_DKIM_KEY_INVALID'));
  }
});

test('prepareSigner refuses corrupt PEM, a key of the other algorithm, short RSA keys and bad selectors', () => {
  const weak = generateKeyPairSync('rsa', { modulusLength: 768 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const cases = [
    { ...rsa, privateKeyPem: '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n' },
    { ...rsa, privateKeyPem: '' },
    { ...ed, algorithm: 'rsa' as const },
    { ...rsa, privateKeyPem: weak },
    { ...rsa, selector: 'bad; h=from' },
    { ...rsa, domain: 'not a domain' },
  ];
  for (const c of cases) {
    try {
      prepareSigner(c);
      assert.unreachable(`accepted ${c.selector}/${c.algorithm}`);
    } catch (err) {
      assert.ok(isSluiceError(err, 'SLUICE_DKIM_KEY_INVALID'), String(err));
    }
  }
});

test('prepareSigner takes every selector the config and `sluice dkim keygen` take: several labels, longer than 63 characters in all', () => {
  const selector = 'newsletter-2025-q3-rotation-key.outbound-cluster-frankfurt-primary';
  assert.ok(DKIM_SELECTOR.test(selector));
  const { signed } = signMessage(Buffer.from('From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n'), [prepareSigner({ ...rsa, selector })]);
  assert.match(signed.toString().replace(/\r\n\s+/g, ' '), `s=${selector};`);
});

test('without signers the message is returned CRLF-normalised and unsigned', () => {
  const { signed, algorithms } = signMessage(Buffer.from('From: a@example.com\nSubject: x\n\nbody\n'), []);
  assert.equal(algorithms, []);
  assert.is(signed.toString(), 'From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n');
});

test.run();
