import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { BackoffGauges } from '../../src/delivery/backoff-gauges.js';

/** sluice_backoff_active / _level per provider, over the provider's throttle scopes. */
const test = suite('delivery/backoff-gauges');

test('one scope served at full speed does not hide another suspended scope of the same provider', () => {
  const g = new BackoffGauges();
  const now = 1_000_000;
  // A rule scoped by domain: a.test suspended for 10 minutes at level 2, then b.test served.
  g.note('yahoo', 'yahoo:a.test', 2, now + 600_000);
  g.note('yahoo', 'yahoo:b.test', 0, null);
  g.note('google', 'google', 1, null);
  assert.equal(g.read(now), [{ provider: 'yahoo', active: 1, level: 2 }, { provider: 'google', active: 0, level: 1 }]);
  // The suspension ends with no visit (nothing more queued there): no longer active, still slowed.
  assert.equal(g.read(now + 600_001)[0], { provider: 'yahoo', active: 0, level: 2 });
  // Recovered: the provider reads 0, and is still listed.
  g.note('yahoo', 'yahoo:a.test', 0, null);
  g.note('google', 'google', 0, null);
  assert.equal(g.read(now), [{ provider: 'yahoo', active: 0, level: 0 }, { provider: 'google', active: 0, level: 0 }]);
});

test.run();
