import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ByteLru } from '../../src/core/lru.js';

const test = suite('core/lru');
const v = (n: number): { byteLength: number } => ({ byteLength: n });

test('evicts the least recently used entry when the entry bound is passed', () => {
  const lru = new ByteLru<{ byteLength: number }>(2, 1000);
  lru.set('a', v(1));
  lru.set('b', v(1));
  assert.ok(lru.get('a')); // a is now the most recent
  lru.set('c', v(1));
  assert.ok(lru.get('a'));
  assert.is(lru.get('b'), undefined);
  assert.ok(lru.get('c'));
  assert.is(lru.size, 2);
});

test('evicts by total bytes, refuses a value larger than the whole bound, and replaces keys in place', () => {
  const lru = new ByteLru<{ byteLength: number }>(10, 100);
  lru.set('a', v(40));
  lru.set('b', v(40));
  lru.set('c', v(40));
  assert.is(lru.get('a'), undefined);
  assert.is(lru.bytes, 80);
  lru.set('huge', v(101));
  assert.is(lru.get('huge'), undefined);
  assert.is(lru.bytes, 80, 'a refused value evicts nothing');
  lru.set('b', v(10));
  assert.is(lru.bytes, 50);
  assert.is(lru.size, 2);
});

test.run();
