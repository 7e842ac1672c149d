import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The layout rules of STYLE.md, checked on the real import graph of src/:
 * imports point down (cli → app → roles → services → infrastructure → core), roles never import
 * each other, the worker imports only pure render modules and core, and there are no cycles.
 */
const test = suite('docs/layers');
const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const graph = new Map<string, string[]>();
for (const f of files(SRC)) {
  const text = readFileSync(f, 'utf8');
  const deps = [...text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'(\.{1,2}\/[^']+)'/gm)]
    .map((m) => relative(SRC, resolve(dirname(f), (m[1] as string).replace(/\.js$/, '.ts'))));
  graph.set(relative(SRC, f), deps);
}
const folder = (p: string) => p.split('/')[0] as string;

const ROLES = ['ingress', 'delivery', 'tracking', 'feedback', 'housekeeping', 'campaigns'];
const LEVEL: Record<string, number> = {
  cli: 6, app: 5,
  ingress: 4, delivery: 4, tracking: 4, feedback: 4, housekeeping: 4, campaigns: 4,
  queue: 3, store: 3, render: 3, bounces: 3, accounts: 3,
  redis: 2, observability: 2, config: 2,
  core: 1,
};

test('the import graph was read', () => {
  assert.ok(graph.size > 40);
});

test('imports point down the layers and roles never import each other', () => {
  const bad: string[] = [];
  for (const [file, deps] of graph) {
    const from = folder(file);
    for (const d of deps) {
      const to = folder(d);
      if (to === from) continue;
      if (LEVEL[from] === undefined || LEVEL[to] === undefined) bad.push(`${file} → ${d}: folder not in the layer table`);
      else if (LEVEL[to]! >= LEVEL[from]! && !(from === 'app' && to === 'cli')) bad.push(`${file} → ${d}`);
      if (ROLES.includes(from) && ROLES.includes(to)) bad.push(`${file} → ${d} (role imports role)`);
    }
  }
  assert.equal(bad, []);
});

test('core imports nothing from src/ outside core', () => {
  const bad = [...graph].filter(([f]) => folder(f) === 'core').flatMap(([f, deps]) => deps.filter((d) => folder(d) !== 'core').map((d) => `${f} → ${d}`));
  assert.equal(bad, []);
});

test('the render worker imports only pure render modules and core', () => {
  const seen = new Set<string>();
  const walk = (f: string) => {
    if (seen.has(f)) return;
    seen.add(f);
    for (const d of graph.get(f) ?? []) walk(d);
  };
  walk('render/worker.ts');
  const bad = [...seen].filter((f) => !(folder(f) === 'render' || folder(f) === 'core') || f === 'render/pool.ts');
  assert.equal(bad, []);
});

test('there are no import cycles', () => {
  const state = new Map<string, 1 | 2>();
  const cycles: string[] = [];
  const visit = (f: string, path: string[]) => {
    if (state.get(f) === 2) return;
    if (state.get(f) === 1) {
      cycles.push([...path.slice(path.indexOf(f)), f].join(' → '));
      return;
    }
    state.set(f, 1);
    for (const d of graph.get(f) ?? []) visit(d, [...path, f]);
    state.set(f, 2);
  };
  for (const f of graph.keys()) visit(f, []);
  assert.equal(cycles, []);
});

test.run();
