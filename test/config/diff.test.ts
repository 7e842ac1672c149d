import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { changedPaths } from '../../src/config/diff.js';
import { loadConfig } from '../../src/config/load.js';

const test = suite('config/diff');

test('changedPaths names the leaves that differ, a list as a whole, sorted; equal trees give none', () => {
  assert.equal(changedPaths({ a: 1, b: { c: 2, d: [1, 2] } }, { a: 1, b: { c: 2, d: [1, 2] } }), []);
  assert.equal(changedPaths({ a: 1, b: { c: 2, d: [1, 2] } }, { a: 2, b: { c: 3, d: [1, 2, 3] } }), ['a', 'b.c', 'b.d']);
  assert.equal(changedPaths({ a: { x: 1 } }, { a: null }), ['a'], 'a value that changed kind');
  assert.equal(changedPaths({ a: { x: 1 } }, { a: { x: 1, y: 2 } }), ['a.y'], 'a key only one side has');
  assert.equal(changedPaths({ z: 1, a: 1 }, { z: 2, a: 2 }, 'root'), ['root.a', 'root.z']);
});

test('on loaded configurations: durations compare as the milliseconds they load to', () => {
  const base = loadConfig({ env: {}, overrides: { delivery: { pollInterval: '1s' } } });
  assert.equal(changedPaths(base, loadConfig({ env: {}, overrides: { delivery: { pollInterval: '1000ms' } } })), [], '1s is 1000ms');
  assert.equal(changedPaths(base, loadConfig({ env: {}, overrides: { delivery: { pollInterval: '2s' }, log: { level: 'debug' } } })), ['delivery.pollInterval', 'log.level']);
});

test.run();
