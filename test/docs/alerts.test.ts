import { readFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';
import { parser } from '@prometheus-io/lezer-promql';
import { parseDuration } from '../../src/core/time.js';
import { createMetrics } from '../../src/observability/metrics.js';

/**
 * The alerting rules shipped for operators (docker/alerts.yml, loaded by docker/prometheus.yml):
 * every expression parses with the PromQL grammar the Prometheus project publishes (the parser of
 * its own web UI), every rule has the fields Prometheus needs, and every Sluice metric it names
 * exists, so a renamed metric cannot leave an alert watching nothing. Their behaviour on synthetic
 * series is in test/fixtures/alerts.test.yml, for Prometheus's own `promtool test rules` (not in
 * this suite: Debian's promtool comes with a Prometheus server that would start on install).
 */
const test = suite('docs/alerts');

interface Rule { alert?: string; expr?: unknown; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
const file = readFileSync(new URL('../../docker/alerts.yml', import.meta.url), 'utf8');
const doc = YAML.parse(file) as { groups: { name: string; rules: Rule[] }[] };
const rules = doc.groups.flatMap((g) => g.rules);

/** PromQL syntax errors in `expr` (the grammar's error nodes), as positions; [] when it parses. */
function promqlErrors(expr: string): number[] {
  const at: number[] = [];
  parser.parse(expr).iterate({ enter: (n) => void (n.type.isError && at.push(n.from)) });
  return at;
}

test('the grammar catches a broken expression (so a pass below means something)', () => {
  assert.equal(promqlErrors('max by (instance) (sluice_delivery_holds) > 0'), []);
  assert.ok(promqlErrors('max by (instance (sluice_delivery_holds) > 0').length > 0);
  assert.ok(promqlErrors('rate(sluice_events_total[15m]) and').length > 0);
});

test('every rule: a unique alert name, an expression that parses as PromQL, a valid for, a severity, a summary', () => {
  assert.ok(rules.length >= 6);
  const names = rules.map((r) => r.alert);
  assert.equal(new Set(names).size, names.length, 'alert names unique');
  for (const r of rules) {
    assert.type(r.alert, 'string');
    assert.type(r.expr, 'string', `${r.alert}: expr`);
    assert.equal(promqlErrors(r.expr as string), [], `${r.alert}: ${String(r.expr)}`);
    if (r.for !== undefined) assert.ok(parseDuration(r.for) !== undefined, `${r.alert}: for ${r.for}`);
    assert.ok(['warning', 'critical'].includes(r.labels?.['severity'] ?? ''), `${r.alert}: severity`);
    assert.type(r.annotations?.['summary'], 'string');
  }
});

test('every Sluice metric the rules name exists; the Prometheus config loads the file', async () => {
  const named = new Set(file.match(/\bsluice_[a-z_]+/g) ?? []);
  assert.ok(named.size >= 6, `metrics named: ${[...named].join(', ')}`);
  const known = new Set((await createMetrics().registry.getMetricsAsJSON()).map((m) => m.name));
  assert.equal([...named].filter((n) => !known.has(n)), []);
  const prom = YAML.parse(readFileSync(new URL('../../docker/prometheus.yml', import.meta.url), 'utf8')) as { rule_files?: string[] };
  assert.equal(prom.rule_files, ['alerts.yml']);
  assert.match(readFileSync(new URL('../../docker/compose.yaml', import.meta.url), 'utf8'), './alerts.yml:/etc/prometheus/alerts.yml:ro');
});

test.run();
