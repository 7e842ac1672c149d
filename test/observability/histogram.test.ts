import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Histogram, Registry } from 'prom-client';
import { FastHistogram } from '../../src/observability/histogram.js';
import { createMetrics } from '../../src/observability/metrics.js';

/**
 * FastHistogram against prom-client's own Histogram as the reference: the same observations on
 * both, in registries of their own, must give the same /metrics text (the Prometheus exposition
 * format prom-client writes), for a histogram with one label, with two, and with none.
 */
const test = suite('observability/histogram');

const BUCKETS = [0.0001, 0.001, 0.01, 0.1, 1];
/** On bounds, between them, below the first and above the last: each lands in the bucket `le` says. */
const VALUES = [0, 0.0001, 0.00010001, 0.0005, 0.001, 0.0099, 0.01, 0.5, 1, 1.0001, 7, 3e-7];

async function pair<L extends string>(labelNames: readonly L[], feed: (observe: (labels: Record<L, string> | null, v: number) => void) => void) {
  const [ours, theirs] = [new Registry(), new Registry()];
  const fast = new FastHistogram({ name: 'x_seconds', help: 'a histogram', labelNames, buckets: BUCKETS, registers: [ours] });
  const ref = new Histogram({ name: 'x_seconds', help: 'a histogram', labelNames: labelNames as L[], buckets: BUCKETS, registers: [theirs] });
  feed((labels, v) => {
    if (labels === null) {
      (fast as FastHistogram<string>).observe(v);
      (ref as Histogram<string>).observe(v);
    } else {
      fast.observe(labels, v);
      ref.observe(labels as never, v);
    }
  });
  return { fast, ours: await ours.metrics(), theirs: await theirs.metrics(), reset: () => [ours.resetMetrics(), theirs.resetMetrics()] };
}

test('one label: the same exposition text as prom-client, per series, in first-seen order', async () => {
  const r = await pair(['endpoint'], (observe) => {
    for (const v of VALUES) observe({ endpoint: 'open' }, v);
    for (const v of VALUES.slice(0, 5)) observe({ endpoint: 'click' }, v * 3);
    observe({ endpoint: 'we"ird\\label\n' }, 0.02);
  });
  assert.ok(r.ours.includes('x_seconds_bucket{le="0.001",endpoint="open"} 6'), r.ours);
  assert.ok(r.ours.includes('x_seconds_bucket{le="+Inf",endpoint="open"} 12'), r.ours);
  assert.ok(r.ours.includes('x_seconds_count{endpoint="click"} 5'), r.ours);
  assert.is(r.ours, r.theirs);
});

test('two labels and no label: the same text as prom-client', async () => {
  const two = await pair(['result', 'provider'], (observe) => {
    VALUES.forEach((v, i) => observe({ result: i % 2 ? 'ok' : 'failed', provider: i % 3 ? 'gmail' : 'default' }, v));
  });
  assert.is(two.ours, two.theirs);
  assert.ok(two.ours.includes('provider="gmail"'));

  const none = await pair([], (observe) => {
    for (const v of VALUES) observe(null, v);
  });
  assert.is(none.ours, none.theirs);
  assert.ok(none.ours.includes(`x_seconds_sum ${VALUES.reduce((a, b) => a + b, 0)}\n`), none.ours);
});

test('a histogram without observations exports what prom-client does; reset() empties it', async () => {
  const empty = await pair([], () => undefined);
  assert.is(empty.ours, empty.theirs);
  assert.ok(empty.ours.includes('x_seconds_count 0'));
  const labelled = await pair(['endpoint'], (observe) => observe({ endpoint: 'open' }, 0.5));
  labelled.reset();
  assert.not.ok((await labelled.fast.get()).values.length, 'no series after reset');
});

test('bad input is refused: a missing or unknown label, a value that is not a finite number', () => {
  const h = new FastHistogram({ name: 'y_seconds', help: 'h', labelNames: ['endpoint'], buckets: BUCKETS });
  assert.throws(() => h.observe({} as never, 1), /label "endpoint" missing/);
  assert.throws(() => h.observe({ endpoint: 'a', other: 'b' } as never, 1), /unknown label "other"/);
  assert.throws(() => h.observe({ endpoint: 'a' }, Number.NaN), /not a finite number/);
  assert.throws(() => h.observe({ endpoint: 'a' }, Number.POSITIVE_INFINITY), /not a finite number/);
  assert.throws(() => new FastHistogram({ name: 'z', help: 'h', buckets: [1, 1] }), /ascending/);
  assert.equal(h.get().values, [], 'nothing was counted by the refused calls');
});

test("Sluice's registry exports its histograms under their names, with observations", async () => {
  const m = createMetrics();
  m.trackingDuration.observe({ endpoint: 'open' }, 0.00003);
  m.renderDuration.observe(0.002);
  const text = await m.registry.metrics();
  assert.ok(text.includes('# TYPE sluice_tracking_request_duration_seconds histogram'));
  assert.ok(text.includes('sluice_tracking_request_duration_seconds_bucket{le="0.0001",endpoint="open"} 1'), text);
  assert.ok(text.includes('sluice_render_duration_seconds_bucket{le="0.0025"} 1'));
  assert.ok(text.includes('sluice_render_duration_seconds_bucket{le="0.001"} 0'));
  assert.ok(text.includes('# HELP sluice_dkim_sign_duration_seconds Time of one DKIM signature'));
});

test.run();
