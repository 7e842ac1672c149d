import { randomInt } from 'node:crypto';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeUtf8 } from '../../src/core/utf8.js';

const test = suite('core/utf8');

// Characters of 1, 2, 3 and 4 bytes (the last a surrogate pair in JavaScript).
const ALPHABET = ['a', 'Z', ' ', '\n', '·', 'é', 'Ж', '€', '中', '😀', '𝄞'];

test('equals Buffer.toString for text with characters of every width across the slice boundaries', () => {
  for (let round = 0; round < 200; round++) {
    let text = '';
    const n = randomInt(1, 20_000);
    for (let i = 0; i < n; i++) text += ALPHABET[randomInt(ALPHABET.length)] as string;
    const buf = Buffer.from(text, 'utf8');
    assert.is(decodeUtf8(buf), buf.toString('utf8'), `round ${round}, ${buf.length} bytes`);
  }
});

test('a multi-byte character straddling every position near a slice edge is kept whole', () => {
  for (const ch of ['é', '€', '😀']) {
    for (let pad = 4090; pad <= 4100; pad++) {
      const text = 'x'.repeat(pad) + ch + 'y'.repeat(5000) + ch;
      assert.is(decodeUtf8(Buffer.from(text)), text, `${ch} after ${pad} bytes`);
    }
  }
});

test('invalid bytes (a long run of continuation bytes) end, as replacement characters', () => {
  const text = decodeUtf8(Buffer.alloc(10_000, 0x80));
  assert.is(text.length, 10_000);
  assert.ok([...text].every((c) => c === '\ufffd'));
});

test('short and empty buffers', () => {
  assert.is(decodeUtf8(Buffer.alloc(0)), '');
  assert.is(decodeUtf8(Buffer.from('héllo')), 'héllo');
});

test.run();
