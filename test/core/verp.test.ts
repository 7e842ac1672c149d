import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { parseVerp, verpAddress } from '../../src/core/verp.js';

const test = suite('core/verp');
const KEY = randomBytes(32);
const ID = '01jabcdefghjkmnp';

test('a signed VERP address round-trips its message and recipient', () => {
  const a = verpAddress(ID, 7, 'bounce.example', KEY);
  assert.match(a, /^b-01jabcdefghjkmnp-7-[0-9a-hjkmnp-tv-z]{8}@bounce\.example$/);
  assert.equal(parseVerp(a, KEY), { msgId: ID, idx: 7, domain: 'bounce.example' });
  assert.equal(parseVerp(a.toUpperCase(), KEY), { msgId: ID, idx: 7, domain: 'bounce.example' }, 'case-insensitive like mail addresses on the wire');
});

test('with a key, a missing, wrong or moved tag is refused', () => {
  const a = verpAddress(ID, 7, 'bounce.example', KEY);
  const tag = /-([0-9a-z]{8})@/.exec(a)?.[1] as string;
  assert.is(parseVerp(`b-${ID}-7@bounce.example`, KEY), undefined, 'untagged');
  assert.is(parseVerp(`b-${ID}-8-${tag}@bounce.example`, KEY), undefined, 'the tag of recipient 7 does not open recipient 8');
  assert.is(parseVerp(verpAddress(ID, 7, 'bounce.example', randomBytes(32)), KEY), undefined, 'another key');
  for (let i = 0; i < tag.length; i++) {
    const flipped = tag.slice(0, i) + (tag[i] === '0' ? '1' : '0') + tag.slice(i + 1);
    assert.is(parseVerp(`b-${ID}-7-${flipped}@bounce.example`, KEY), undefined, `tag changed at ${i}`);
  }
});

test('without a key (tests of single parts) addresses carry no tag', () => {
  assert.is(verpAddress(ID, 0, 'b.example'), `b-${ID}-0@b.example`);
  assert.equal(parseVerp(`b-${ID}-0@b.example`), { msgId: ID, idx: 0, domain: 'b.example' });
  assert.is(parseVerp('b-short-0@b.example'), undefined);
});

test.run();
