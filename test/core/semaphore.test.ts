import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Semaphore } from '../../src/core/semaphore.js';

/** The bound on rendered-but-unsent copies in the dispatcher. */
const test = suite('core/semaphore');
const tick = () => new Promise((r) => setImmediate(r));

test('permits are taken at once while free; waiters are let in first come, first served', async () => {
  const s = new Semaphore(10);
  await s.acquire(8);
  assert.is(s.free, 2);
  const order: string[] = [];
  const big = s.acquire(8).then(() => order.push('big'));
  const small = s.acquire(1).then(() => order.push('small'));
  await tick();
  assert.equal(order, [], 'the small one waits behind the big one although a permit is free');
  s.release(8);
  await tick();
  assert.equal(order, ['big', 'small']);
  await Promise.all([big, small]);
  assert.is(s.free, 1);
});

test('a request above the total is capped, and so is its release', async () => {
  const s = new Semaphore(4);
  await s.acquire(9);
  assert.is(s.free, 0);
  s.release(9);
  assert.is(s.free, 4);
  assert.throws(() => new Semaphore(0), /positive integer/);
});

test.run();
