import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { fromBase32, idTime, isId, newId, toBase32 } from '../../src/core/ids.js';

const test = suite('core/ids');

test('ids are 16 base32 characters, sortable by time, and carry their creation time', () => {
  const a = newId(Date.UTC(2026, 0, 1));
  const b = newId(Date.UTC(2026, 0, 2));
  assert.ok(isId(a) && isId(b));
  assert.ok(a < b, 'time-ordered');
  assert.is(idTime(a), Date.UTC(2026, 0, 1));
  assert.is.not(newId(0), newId(0), 'random tail');
});

test('base32 round-trips 40-bit numbers at fixed width', () => {
  for (const n of [0, 1, 31, 32, 2 ** 40 - 1, 123_456_789_012]) {
    const s = toBase32(n, 8);
    assert.is(s.length, 8);
    assert.is(fromBase32(s, 0, 8), n);
  }
  assert.is(toBase32(0, 3), '000');
});

test.run();
