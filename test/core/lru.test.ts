import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ByteLru, ExpiringLru } from '../../src/core/lru.js';

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

test('ExpiringLru: an entry lives until its expiry, the least recently used goes first beyond the bound', () => {
  const lru = new ExpiringLru<string>(2);
  lru.set('a', 'A', 100);
  lru.set('b', 'B', 200);
  assert.is(lru.get('a', 99), 'A');
  assert.is(lru.get('a', 100), undefined, 'expired at its expiry time');
  assert.is(lru.size, 1, 'an expired entry is dropped when read');
  lru.set('a', 'A2', 300);
  assert.is(lru.get('b', 0), 'B'); // b is now the most recently used
  lru.set('c', 'C', 300);
  assert.is(lru.get('a', 0), undefined, 'a was the least recently used');
  assert.equal([lru.get('b', 0), lru.get('c', 0)], ['B', 'C']);
  lru.set('c', 'C2', 50);
  assert.is(lru.get('c', 60), undefined, 'set replaces the expiry too');
  lru.delete('b');
  assert.is(lru.size, 0);
});

test.run();
