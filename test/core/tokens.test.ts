import { createHmac } from 'node:crypto';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createTokenCodec, tokenUrl, type TokenPayload } from '../../src/core/tokens.js';
import { newId } from '../../src/core/ids.js';

const test = suite('core/tokens');
const NOW = Date.UTC(2026, 0, 15);
const K1 = { id: 'k1', secret: 'first-secret-of-32-bytes-length!' };
const K2 = { id: 'k2', secret: Buffer.alloc(32, 7) };
const codec = createTokenCodec({ keys: [K1, K2], signWith: 'k1' });
const msgId = newId(NOW);
const click: TokenPayload = { kind: 'c', account: 'acme', msgId, idx: 1234, link: 7, issuedAt: Math.floor(NOW / 1000) };

test('round-trips every kind, and stays compact and URL-safe', () => {
  for (const p of [click, { kind: 'o', account: 'acme', msgId, idx: 0, issuedAt: 1 }, { kind: 'u', account: 'ünï', msgId, idx: 2 ** 40, issuedAt: 2 ** 32 }] as TokenPayload[]) {
    const t = codec.sign(p);
    assert.match(t, /^[A-Za-z0-9_-]+$/);
    assert.equal(codec.verify(t, NOW), p);
  }
  assert.ok(codec.sign(click).length <= 64, `click token is ${codec.sign(click).length} chars`);
  // With the expected kind given, a token of another kind is refused.
  assert.equal(codec.verify(codec.sign(click), NOW, 'c'), click);
  assert.is(codec.verify(codec.sign(click), NOW, 'o'), null);
  assert.is(codec.verify(codec.sign(click), NOW, 'u'), null);
  assert.is(tokenUrl('https://t.example.com/', 'o', 'abc'), 'https://t.example.com/o/abc.gif');
});

test('flipping any byte, or any bit of one byte, makes the token invalid', () => {
  const raw = Buffer.from(codec.sign(click), 'base64url');
  for (let i = 0; i < raw.length; i++) {
    const b = Buffer.from(raw);
    b[i] = (b[i] as number) ^ 0xff;
    assert.is(codec.verify(b.toString('base64url'), NOW), null, `byte ${i}`);
  }
  const mid = Math.floor(raw.length / 2);
  for (let bit = 0; bit < 8; bit++) {
    const b = Buffer.from(raw);
    b[mid] = (b[mid] as number) ^ (1 << bit);
    assert.is(codec.verify(b.toString('base64url'), NOW), null, `bit ${bit}`);
  }
});

test('changing any character, truncating or extending makes the token invalid', () => {
  const t = codec.sign(click);
  for (let i = 0; i < t.length; i++) {
    const other = t[i] === 'A' ? 'B' : 'A';
    assert.is(codec.verify(t.slice(0, i) + other + t.slice(i + 1), NOW), null, `char ${i}`);
  }
  for (let n = 0; n < t.length; n++) assert.is(codec.verify(t.slice(0, n), NOW), null, `first ${n} chars`);
  for (const extra of ['A', 'AA', 'AAAA', '_', '==', '.', '%41']) assert.is(codec.verify(t + extra, NOW), null, `+${extra}`);
  assert.is(codec.verify('', NOW), null);
  assert.is(codec.verify('x'.repeat(10_000), NOW), null);
});

test('verify accepts what sign makes for keys of every length (HMAC block size and beyond)', () => {
  for (const len of [16, 31, 32, 63, 64, 65, 100, 200]) {
    const c = createTokenCodec({ keys: [{ id: 'kx', secret: Buffer.alloc(len, len) }], signWith: 'kx' });
    for (const idx of [0, 1, 300, 2 ** 20]) {
      const p: TokenPayload = { ...click, idx };
      assert.equal(c.verify(c.sign(p), NOW), p, `key ${len} B, idx ${idx}`);
      // Another key of the same length never verifies it.
      const other = createTokenCodec({ keys: [{ id: 'kx', secret: Buffer.alloc(len, len + 1) }], signWith: 'kx' });
      assert.is(other.verify(c.sign(p), NOW), null, `other key ${len} B`);
    }
  }
});

test('only the canonical spelling of a token verifies: every other last character is refused', () => {
  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  // Tokens whose length leaves the last character 2 and 4 spare bits (length mod 4 = 2, 3).
  const seen = new Set<number>();
  for (let idx = 0; seen.size < 2 && idx < 2 ** 20; idx = idx * 2 + 1) {
    const t = codec.sign({ ...click, idx });
    if (t.length % 4 === 0 || seen.has(t.length % 4)) continue;
    seen.add(t.length % 4);
    let valid = 0;
    for (const ch of ALPHABET) {
      const variant = t.slice(0, -1) + ch;
      const decodesSame = Buffer.from(variant, 'base64url').equals(Buffer.from(t, 'base64url'));
      const ok = codec.verify(variant, NOW) !== null;
      if (ok) valid++;
      assert.is(ok, variant === t, `last char ${ch} (len mod 4 = ${t.length % 4}, same bytes: ${decodesSame})`);
    }
    assert.is(valid, 1);
  }
  assert.is(seen.size, 2, 'tokens of both lengths were tried');
});

test('a token of one message cannot be re-targeted to another', () => {
  const other = newId(NOW + 1);
  const a = Buffer.from(codec.sign(click), 'base64url');
  const b = Buffer.from(codec.sign({ ...click, msgId: other }), 'base64url');
  // Same layout, so the message id is the only differing region: splice b's id into a.
  const spliced = Buffer.from(a);
  for (let i = 0; i < a.length - 12; i++) if (a[i] !== b[i]) spliced[i] = b[i] as number;
  assert.is(codec.verify(spliced.toString('base64url'), NOW), null);
  // Nor to another link or recipient.
  assert.is.not(codec.sign({ ...click, link: 8 }), codec.sign(click));
});

test('keys rotate: an old key verifies until notAfter and never signs; unknown keys fail', () => {
  const old = createTokenCodec({ keys: [K2], signWith: 'k2' }).sign(click);
  const rotated = createTokenCodec({ keys: [K1, { ...K2, notAfter: NOW + 1000 }], signWith: 'k1' });
  assert.equal(rotated.verify(old, NOW), click);
  assert.is(rotated.verify(old, NOW + 1001), null);
  assert.is(createTokenCodec({ keys: [K1], signWith: 'k1' }).verify(old, NOW), null);
  assert.throws(() => createTokenCodec({ keys: [{ ...K2, notAfter: NOW }], signWith: 'k2' }), /retired/);
  assert.throws(() => createTokenCodec({ keys: [{ id: 'k', secret: 'short' }], signWith: 'k' }), /16 bytes/);
  // A key with the same id but another secret does not verify.
  assert.is(createTokenCodec({ keys: [{ id: 'k1', secret: 'another-secret-of-32-bytes-long!' }], signWith: 'k1' }).verify(codec.sign(click), NOW), null);
});

test('the MAC is HMAC-SHA256 of the body truncated to 12 bytes (checked with node:crypto)', () => {
  for (const [key, p] of [[K1, click], [K2, { ...click, kind: 'o', link: undefined }]] as const) {
    const raw = Buffer.from(createTokenCodec({ keys: [key], signWith: key.id }).sign(p as TokenPayload), 'base64url');
    const body = raw.subarray(0, raw.length - 12);
    assert.equal(raw.subarray(raw.length - 12), createHmac('sha256', key.secret).update(body).digest().subarray(0, 12));
  }
});

test('a copy\'s signer makes the same tokens as sign, for every kind and link', () => {
  const { kind: _k, link: _l, ...subject } = click;
  const sign = codec.signer(subject);
  for (const link of [0, 1, 127, 128, 300, 2 ** 20]) assert.is(sign('c', link), codec.sign({ ...click, link }));
  // Tokens interleaved from one signer do not leak into each other (it reuses one buffer).
  const o = sign('o');
  assert.is(sign('u'), codec.sign({ ...subject, kind: 'u' }));
  assert.is(o, codec.sign({ ...subject, kind: 'o' }));
  assert.throws(() => sign('c'), /link is required/);
  assert.throws(() => sign('o', 1), /link is required/);
});

test('sign refuses payloads it cannot represent', () => {
  // Seven varint bytes hold 49 bits; a larger index could not be read back.
  assert.throws(() => codec.sign({ ...click, idx: 2 ** 49 }), /2\^49/);
  assert.equal(codec.verify(codec.sign({ ...click, idx: 2 ** 49 - 1 }), NOW), { ...click, idx: 2 ** 49 - 1 });
  assert.throws(() => codec.sign({ ...click, msgId: 'not-an-id' }));
  assert.throws(() => codec.sign({ kind: 'c', account: 'a', msgId, idx: 0, issuedAt: 0 }));
  assert.throws(() => codec.sign({ kind: 'o', account: 'a', msgId, idx: 0, link: 1, issuedAt: 0 }));
  assert.throws(() => codec.sign({ ...click, idx: -1 }));
  assert.throws(() => codec.sign({ ...click, account: 'x'.repeat(65) }));
});

test('an unsubscribe token carries its recipient\'s address, encrypted: readable with the key, never in the text', () => {
  const address = 'Kijitora.Ünï+news@example.org';
  const sign = codec.signer({ account: 'acme', msgId, idx: 3, issuedAt: 1, address });
  const u = sign('u');
  assert.equal(codec.verify(u, NOW, 'u'), { kind: 'u', account: 'acme', msgId, idx: 3, issuedAt: 1, address });
  // Only the unsubscribe token carries it: the pixel and click tokens are as without it.
  const plain = codec.signer({ account: 'acme', msgId, idx: 3, issuedAt: 1 });
  assert.is(sign('o'), plain('o'));
  assert.is(sign('c', 2), plain('c', 2));
  assert.equal(codec.verify(plain('u'), NOW, 'u'), { kind: 'u', account: 'acme', msgId, idx: 3, issuedAt: 1 }, 'a token without one still verifies');
  // Neither the address nor any 4-byte piece of it shows in the token's bytes or text.
  const raw = Buffer.from(u, 'base64url');
  const bytes = Buffer.from(address, 'utf8');
  for (let i = 0; i + 4 <= bytes.length; i++) assert.is(raw.indexOf(bytes.subarray(i, i + 4)), -1, `bytes ${i}–${i + 3}`);
  assert.not.ok(u.toLowerCase().includes('kijitora'));
  // Another key cannot read it (it does not verify at all), and the same copy signs the same token.
  const other = createTokenCodec({ keys: [{ id: 'k1', secret: 'another-secret-of-32-bytes-len!!' }], signWith: 'k1' });
  assert.is(other.verify(u, NOW, 'u'), null);
  assert.is(codec.signer({ account: 'acme', msgId, idx: 3, issuedAt: 1, address })('u'), u);
});

test('the encrypted address differs between recipients and messages, and every byte of it is authenticated', () => {
  const address = 'reader@example.org';
  const tokenOf = (id: string, idx: number) => codec.signer({ account: 'acme', msgId: id, idx, issuedAt: 1, address })('u');
  const sealedOf = (t: string) => Buffer.from(t, 'base64url').subarray(-12 - address.length - 12, -12);
  const a = sealedOf(tokenOf(msgId, 1));
  assert.not.equal(a, sealedOf(tokenOf(msgId, 2)), 'another recipient of the message');
  assert.not.equal(a, sealedOf(tokenOf(newId(NOW + 1), 1)), 'the same recipient of another message');
  const raw = Buffer.from(tokenOf(msgId, 1), 'base64url');
  for (let i = 0; i < raw.length; i++) {
    const b = Buffer.from(raw);
    b[i] = (b[i] as number) ^ 0x01;
    assert.is(codec.verify(b.toString('base64url'), NOW), null, `byte ${i}`);
  }
  // Cut after the account (the address field dropped whole) or inside it: the MAC no longer matches.
  for (let n = raw.length - 1; n > raw.length - 12 - address.length - 14; n--) assert.is(codec.verify(raw.subarray(0, n).toString('base64url'), NOW), null, `first ${n} bytes`);
});

test('the longest unsubscribe token verifies; an address over 255 bytes is left out rather than refused', () => {
  const account = 'a'.repeat(64);
  const longKid = createTokenCodec({ keys: [{ id: 'k'.repeat(16), secret: K1.secret }], signWith: 'k'.repeat(16) });
  const longest = { account, msgId, idx: 2 ** 49 - 1, issuedAt: 2 ** 49 - 1, address: `${'x'.repeat(243)}@example.org` };
  const t = longKid.signer(longest)('u');
  assert.is(t.length, 518);
  assert.equal(longKid.verify(t, NOW, 'u'), { kind: 'u', ...longest });
  const tooLong = { ...longest, address: `${'x'.repeat(244)}@example.org` };
  assert.equal(longKid.verify(longKid.signer(tooLong)('u'), NOW, 'u'), { kind: 'u', account, msgId, idx: longest.idx, issuedAt: longest.issuedAt });
});

test.run();
