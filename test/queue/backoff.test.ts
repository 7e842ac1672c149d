import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { loadConfig } from '../../src/config/load.js';
import { resolveShaping } from '../../src/queue/shaping.js';
import { applyBackoff, slowedRate } from '../../src/queue/backoff.js';

/** The slowdown arithmetic (pure); the Redis side is in flows.ts, run on a server and a cluster. */
const test = suite('queue/backoff');

const none = { perSecond: null, perMinute: null, perHour: null };

test('each level halves every limit of the rate', () => {
  const r = { perSecond: 40, perMinute: 1200, perHour: 20_000 };
  assert.equal(slowedRate(r, 0, 10, 1), r);
  assert.equal(slowedRate(r, 1, 10, 1), { perSecond: 20, perMinute: 600, perHour: 10_000 });
  assert.equal(slowedRate(r, 3, 10, 1), { perSecond: 5, perMinute: 150, perHour: 2500 });
});

test('a share below one token moves to the next longer window, down to 1 per hour', () => {
  assert.equal(slowedRate({ perSecond: 1, perMinute: null, perHour: null }, 1, 10, 1), { perSecond: 1, perMinute: 30, perHour: null }, '0.5/s = 30/min');
  assert.equal(slowedRate({ perSecond: 1, perMinute: 20, perHour: null }, 1, 10, 1), { perSecond: 1, perMinute: 10, perHour: null }, 'the tighter window wins');
  assert.equal(slowedRate({ perSecond: null, perMinute: 1, perHour: null }, 2, 10, 1), { perSecond: null, perMinute: 1, perHour: 15 });
  assert.equal(slowedRate({ perSecond: null, perMinute: null, perHour: 3 }, 4, 10, 1), { perSecond: null, perMinute: null, perHour: 1 }, 'never below 1/h');
});

test('a rule without a rate is given connections × ratePerConnection msg/s before halving', () => {
  assert.equal(slowedRate(none, 0, 10, 1), none, 'full speed stays unlimited');
  assert.equal(slowedRate(none, 1, 10, 1), { perSecond: 5, perMinute: null, perHour: null });
  assert.equal(slowedRate(none, 2, 10, 0.5), { perSecond: 1, perMinute: null, perHour: null }, '1.25/s rounds down: slower, never faster');
  assert.equal(slowedRate(none, 3, 10, 0.5), { perSecond: 1, perMinute: 37, perHour: null }, '0.625/s = 37.5/min');
});

test('applyBackoff halves connections (at least one) and slows the rate of the resolved shaping', () => {
  const cfg = loadConfig({ env: {}, overrides: { shaping: { rules: [{ name: 'big', match: { domains: ['big.test'], mx: [] }, connections: 12, rate: { perSecond: 50, perMinute: null, perHour: null } }] } } });
  const s = resolveShaping(cfg.shaping, 'big.test', []);
  assert.is(applyBackoff(s, 0, cfg.delivery.backoff), s);
  const l1 = applyBackoff(s, 1, cfg.delivery.backoff);
  assert.equal([l1.connections, l1.rate.perSecond, l1.scope, l1.messagesPerConnection], [6, 25, s.scope, s.messagesPerConnection]);
  const l4 = applyBackoff(s, 4, cfg.delivery.backoff);
  assert.equal([l4.connections, l4.rate.perSecond], [1, 3]);
  assert.equal(s.connections, 12, 'the resolved shaping is not modified');
});

test.run();
