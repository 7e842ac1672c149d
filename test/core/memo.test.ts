import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { memoize } from '../../src/core/memo.js';

const test = suite('core/memo');

test('computes once per key, remembers undefined too, and starts afresh past its bound', () => {
  const calls: string[] = [];
  const f = memoize((k: string) => (calls.push(k), k === 'none' ? undefined : k.length), 2);
  assert.is(f('abc'), 3);
  assert.is(f('abc'), 3);
  assert.is(f('none'), undefined);
  assert.is(f('none'), undefined);
  assert.equal(calls, ['abc', 'none'], 'each key computed once');
  assert.is(f('x'), 1); // the third key: the memory starts afresh with it
  assert.is(f('abc'), 3);
  assert.equal(calls, ['abc', 'none', 'x', 'abc']);
});

test.run();
