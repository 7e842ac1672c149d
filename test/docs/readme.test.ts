import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { ERRORS } from '../../src/core/errors.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { DEFAULT_CONFIG_FILE } from '../../src/config/load.js';

/** The README is the operator's reference: it must name every config key, metric and error code. */
const test = suite('docs/readme');
const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

function keyPaths(tree: unknown, prefix = ''): string[] {
  if (tree && typeof tree === 'object' && !Array.isArray(tree) && Object.keys(tree).length > 0) {
    return Object.entries(tree).flatMap(([k, v]) => keyPaths(v, prefix ? `${prefix}.${k}` : k));
  }
  return [prefix];
}

test('every config key of config/default.yaml is documented', () => {
  const paths = keyPaths(YAML.parse(readFileSync(DEFAULT_CONFIG_FILE, 'utf8')));
  assert.ok(paths.length > 50, 'the walk found the keys');
  const missing = paths.filter((p) => !readme.includes(`\`${p}\``));
  assert.equal(missing, [], `README misses config keys: ${missing.join(', ')}`);
});

test('every metric is documented', async () => {
  // prom-client's default metrics are documented by their prefixes, not one by one.
  const defaults = new Registry();
  collectDefaultMetrics({ register: defaults, prefix: 'sluice_' });
  const defaultNames = new Set((await defaults.getMetricsAsJSON()).map((m) => m.name));
  assert.ok(defaultNames.has('sluice_process_cpu_seconds_total') && defaultNames.has('sluice_nodejs_eventloop_lag_seconds'));
  assert.ok(readme.includes('`sluice_process_*`') && readme.includes('`sluice_nodejs_*`'));
  const all = (await createMetrics().registry.getMetricsAsJSON()).map((m) => m.name);
  for (const n of defaultNames) assert.ok(all.includes(n), `${n} is served`);
  const names = all.filter((n) => !defaultNames.has(n));
  assert.ok(names.length > 10);
  const missing = names.filter((n) => !readme.includes(`\`${n}`));
  assert.equal(missing, [], `README misses metrics: ${missing.join(', ')}`);
});

test('every error code is documented', () => {
  const missing = Object.keys(ERRORS).filter((c) => !readme.includes(`\`${c}\``));
  assert.equal(missing, [], `README misses error codes: ${missing.join(', ')}`);
});

test('the README begins with the two commands', () => {
  const blocks = [...readme.matchAll(/```sh\n([^`]+)```/g)].map((m) => (m[1] as string).trim());
  assert.match(blocks[0] ?? '', /apt-get install -y redis-server.*npm ci && npm start/);
  for (const pkg of ['redis-server', 'python3-dkim', 'chromium', 'postfix']) assert.ok((blocks[0] ?? '').includes(pkg), `first command installs ${pkg}`);
  assert.is(blocks[1], 'npm test');
});

test('Sluice is started with the same node flags everywhere, as the README says', () => {
  const read = (path: string): string => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');
  const flagsOf = (text: string | undefined): string => (text ?? '').match(/--[a-z0-9-]+=\d+/g)?.join(' ') ?? '';
  const shebang = flagsOf(read('bin/sluice.js').split('\n')[0]);
  assert.match(shebang, /--max-semi-space-size=\d+ .*--v8-pool-size=\d+/);
  const start = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts['start'];
  assert.is(flagsOf(start), shebang, 'package.json start');
  assert.is(flagsOf(read('docker/Dockerfile').split('\n').find((l) => l.startsWith('ENTRYPOINT'))?.replace(/", "/g, ' ')), shebang, 'the Dockerfile');
  assert.ok(readme.includes(`node ${shebang} bin/sluice.js start`), 'the README');
});

test.run();
