import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { BackoffGauges } from '../../src/delivery/backoff-gauges.js';

/** sluice_backoff_active / _level per provider, over the provider's throttle scopes. */
const test = suite('delivery/backoff-gauges');

const KEEP = 3_600_000; // how long Redis keeps an untouched scope's backoff state (backoffKeepMs)

test('one scope served at full speed does not hide another suspended scope of the same provider', () => {
  const g = new BackoffGauges(KEEP);
  const now = 1_000_000;
  // A rule scoped by domain: a.test suspended for 10 minutes at level 2, then b.test served.
  g.note('yahoo', 'yahoo:a.test', 2, now + 600_000, now);
  g.note('yahoo', 'yahoo:b.test', 0, null, now);
  g.note('google', 'google', 1, null, now);
  assert.equal(g.read(now), [{ provider: 'yahoo', active: 1, level: 2 }, { provider: 'google', active: 0, level: 1 }]);
  // The suspension ends with no visit (nothing more queued there): no longer active, still slowed.
  assert.equal(g.read(now + 600_001)[0], { provider: 'yahoo', active: 0, level: 2 });
  // Recovered: the provider reads 0, and is still listed.
  g.note('yahoo', 'yahoo:a.test', 0, null, now);
  g.note('google', 'google', 0, null, now);
  assert.equal(g.read(now), [{ provider: 'yahoo', active: 0, level: 0 }, { provider: 'google', active: 0, level: 0 }]);
});

test('a slowed scope never visited again (its domain got no more mail) leaves the gauges when Redis lets its state go', () => {
  const g = new BackoffGauges(KEEP);
  const now = 1_000_000;
  g.note('default', 'default:slow.test', 2, null, now);
  g.note('default', 'default:other.test', 0, null, now + 5000);
  assert.equal(g.read(now + KEEP - 1), [{ provider: 'default', active: 0, level: 2 }]);
  assert.equal(g.read(now + KEEP), [{ provider: 'default', active: 0, level: 0 }], 'full speed again, as in Redis');
});

test.run();
