import { createHash } from 'node:crypto';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { loadScripts } from '../../src/redis/scripts.js';

/**
 * The Lua scripts as ioredis commands, on a real server. Regression: a command defined lazily (on
 * first use) was missing from an auto-pipeline created earlier in the same tick, and ioredis then
 * died with an uncaught "results[i] is not iterable" — it took the tracking server down on its first
 * batch of opens when another command happened to share the tick.
 */
const test = suite('redis/scripts');
let redis: TestRedis;

test.before(async () => {
  redis = await startRedis();
});
test.after(async () => {
  await redis?.stop();
});

test('every script and its <name>Keys variant exist on a client as soon as it is made', () => {
  const client = redis.client() as unknown as Record<string, unknown>;
  const scripts = loadScripts();
  assert.ok(scripts.length > 20, 'the scripts were found');
  for (const s of scripts) {
    assert.type(client[s.name], 'function', s.name);
    assert.type(client[`${s.name}Keys`], 'function', `${s.name}Keys`);
  }
});

test('an --@include line is replaced by its lib/ file: every script Redis gets is whole and compiles', async () => {
  const client = redis.client();
  const scripts = loadScripts();
  assert.not.ok(scripts.some((s) => s.name === 'finishMessage'), 'lib/ files are not commands of their own');
  for (const s of scripts) {
    assert.not.match(s.lua, /^--@include/m, `${s.name}: no directive left`);
    // SCRIPT LOAD compiles the text: a missing function or a syntax error would be refused here.
    assert.is(await client.script('LOAD', s.lua), createHash('sha1').update(s.lua).digest('hex'), s.name);
  }
  const users = scripts.filter((s) => s.lua.includes('local function finishMessage(')).map((s) => s.name).sort();
  assert.equal(users, ['ack', 'finishCopy']);
});

test('a script variant called in the same tick as another command is pipelined with it and both answer', async () => {
  const client = redis.client();
  const { keys } = redis.fresh();
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown) => uncaught.push(err);
  process.on('uncaughtException', onUncaught);
  try {
    await client.hset(keys.msgMeta('m1'), 'account', 'acme');
    // Same tick: the GET opens the auto-pipeline, the script joins it.
    const [missing, firsts] = await Promise.all([
      client.get(`${keys.prefix}nothing`),
      client.recordTrackingOpensKeys(3, keys.trackMarks('m1'), keys.msgStats('m1'), keys.msgMeta('m1'), 60_000, `[[1,"","0","${Date.now()}"]]`),
    ]);
    assert.is(missing, null);
    assert.equal(firsts, [1], 'the first open of recipient 0 is its first');
    await new Promise((r) => setImmediate(r));
    assert.equal(uncaught, []);
  } finally {
    process.off('uncaughtException', onUncaught);
  }
});

test('a script the server no longer knows (SCRIPT FLUSH: a restart or a failover) is loaded again by its next call', async () => {
  const client = redis.client();
  const { keys } = redis.fresh();
  const leases = keys.leases('flush.example');
  await client.zadd(leases, 1000, 'm1:0:0');
  assert.equal(await client.extendLeases(leases, 5000, 'm1:0:0', ''), [1], 'known to the server');
  await client.script('FLUSH');
  assert.equal(await client.extendLeases(leases, 9000, 'm1:0:0', '', 'gone:0:0', ''), [1, 0], 'answers after the flush');
  assert.is(await client.zscore(leases, 'm1:0:0'), '9000');
});

test.run();
