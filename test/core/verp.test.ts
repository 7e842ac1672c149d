import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { parseUnsubscribeMailto, parseVerp, unsubscribeMailtoAddress, verpAddress } from '../../src/core/verp.js';

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

test('the mailto unsubscribe address: short, case-insensitive, tagged apart from the return path', () => {
  const a = unsubscribeMailtoAddress(ID, 123456, 'bounce.example', KEY);
  assert.match(a, /^u-01jabcdefghjkmnp-123456-[0-9a-hjkmnp-tv-z]{8}@bounce\.example$/);
  assert.ok(a.indexOf('@') <= 64, 'within RFC 5321\'s 64-octet local part at the largest index');
  assert.equal(parseUnsubscribeMailto(a, KEY), { msgId: ID, idx: 123456, domain: 'bounce.example' });
  assert.equal(parseUnsubscribeMailto(a.toUpperCase(), KEY), { msgId: ID, idx: 123456, domain: 'bounce.example' });
  assert.is(parseUnsubscribeMailto(unsubscribeMailtoAddress(ID, 7, 'bounce.example', randomBytes(32)), KEY), undefined, 'another key');
  assert.is(parseUnsubscribeMailto(a.replace('-123456-', '-123457-'), KEY), undefined, 'another recipient');
  // The return path's tag does not make an unsubscribe address, nor the other way round.
  const verpTag = /-([0-9a-z]{8})@/.exec(verpAddress(ID, 7, 'bounce.example', KEY))?.[1];
  assert.is(parseUnsubscribeMailto(`u-${ID}-7-${verpTag}@bounce.example`, KEY), undefined);
  const uTag = /-([0-9a-z]{8})@/.exec(unsubscribeMailtoAddress(ID, 7, 'bounce.example', KEY))?.[1];
  assert.is(parseVerp(`b-${ID}-7-${uTag}@bounce.example`, KEY), undefined);
});

test('indexes past a million (a campaign to a big list numbers its copies by contact) round-trip in both forms', () => {
  for (const idx of [1_000_000, 123_456_789]) {
    assert.equal(parseVerp(verpAddress(ID, idx, 'bounce.example', KEY), KEY), { msgId: ID, idx, domain: 'bounce.example' });
    assert.equal(parseUnsubscribeMailto(unsubscribeMailtoAddress(ID, idx, 'bounce.example', KEY), KEY), { msgId: ID, idx, domain: 'bounce.example' });
  }
});

test.run();
