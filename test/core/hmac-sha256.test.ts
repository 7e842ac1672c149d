import { createHmac, randomBytes } from 'node:crypto';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { hmacSha256, textHmacSha256 } from '../../src/core/hmac-sha256.js';

const test = suite('core/hmac-sha256');

const reference = (key: Uint8Array, data: Uint8Array): Buffer => createHmac('sha256', key).update(data).digest();

test('equals node:crypto for data of every length over three blocks, around each padding boundary', () => {
  const key = randomBytes(32);
  const mac = hmacSha256(key);
  const data = randomBytes(200);
  const out = Buffer.alloc(32);
  for (let n = 0; n <= data.length; n++) {
    mac(data, 0, n, out);
    assert.equal(out, reference(key, data.subarray(0, n)), `length ${n}`);
  }
});

test('equals node:crypto for keys of every length, shorter and longer than a block', () => {
  const data = Buffer.from('the body of a token');
  const out = Buffer.alloc(32);
  for (let n = 0; n <= 150; n++) {
    const key = randomBytes(n);
    hmacSha256(key)(data, 0, data.length, out);
    assert.equal(out, reference(key, data), `key length ${n}`);
  }
});

test('MACs a range of a larger buffer, and calls do not disturb each other', () => {
  const key = randomBytes(16);
  const mac = hmacSha256(key);
  const other = hmacSha256(randomBytes(16));
  const buf = randomBytes(300);
  const out = Buffer.alloc(32);
  for (const [start, end] of [[0, 0], [5, 60], [7, 71], [100, 300], [13, 14]] as const) {
    other(buf, 0, 64, Buffer.alloc(32));
    mac(buf, start, end, out);
    assert.equal(out, reference(key, buf.subarray(start, end)), `${start}..${end}`);
  }
});

test('a known answer: RFC 4231 test case 2', () => {
  const out = Buffer.alloc(32);
  const data = Buffer.from('what do ya want for nothing?');
  hmacSha256(Buffer.from('Jefe'))(data, 0, data.length, out);
  assert.is(out.toString('hex'), '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
});


test('textHmacSha256: the UTF-8 text of any length under each key, like node:crypto', () => {
  const keys = [randomBytes(32), randomBytes(7), randomBytes(100)];
  const texts = ['', 'zoë@exämple.org', '01m8c74za6qyb61g.3', '😀 surrogate pairs 😀', 'ü'.repeat(700), 'x'.repeat(2000)];
  for (const text of texts) {
    for (const key of keys) {
      assert.equal(textHmacSha256(key, text), createHmac('sha256', key).update(text, 'utf8').digest(), `${key.length}-byte key, ${text.length} chars`);
    }
  }
  // The result is the key's own buffer: another key's call does not change it.
  const a = textHmacSha256(keys[0] as Buffer, 'a');
  textHmacSha256(keys[1] as Buffer, 'b');
  assert.equal(a, createHmac('sha256', keys[0] as Buffer).update('a').digest());
});

test.run();
