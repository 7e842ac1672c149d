/**
 * app/reload.ts's one list of reloadable keys: each path names a key the configuration has (a typo
 * would make a changed key neither applied nor named as needing a restart), and what is compared for
 * restartNeeded holds none of them and every other key.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { RELOADABLE, restartOnly } from '../../src/app/reload.js';
import { changedPaths } from '../../src/config/diff.js';
import { loadConfig } from '../../src/config/load.js';

const test = suite('app/reload-paths');

const at = (tree: unknown, path: string): unknown => path.split('.').reduce<unknown>((node, k) => (node !== null && typeof node === 'object' && k in node ? (node as Record<string, unknown>)[k] : undefined), tree);

test('every reloadable path is a key of the configuration', () => {
  const config = loadConfig({ env: {} });
  // A key present with the value undefined is not one of its keys either.
  const missing = RELOADABLE.filter((path) => {
    const keys = path.split('.');
    const parent = at(config, keys.slice(0, -1).join('.')) ?? (keys.length === 1 ? config : undefined);
    return parent === undefined || !Object.prototype.hasOwnProperty.call(parent, keys[keys.length - 1] as string);
  });
  assert.equal(missing, []);
});

test('restartOnly drops exactly the reloadable keys, and leaves the configuration as it was', () => {
  const config = loadConfig({ env: {} });
  const left = restartOnly(config);
  for (const path of RELOADABLE) assert.is(at(left, path), undefined, path);
  assert.equal(changedPaths(config, left).sort(), [...RELOADABLE].sort(), 'what differs from the whole is the list');
  assert.ok(at(config, 'log.level') !== undefined && at(config, 'ingress.smtp.port') !== undefined, 'the configuration itself is untouched');
  assert.is(at(left, 'ingress.smtp.port'), at(config, 'ingress.smtp.port'), 'a restart-only neighbour of a reloadable key stays');
});

test.run();
