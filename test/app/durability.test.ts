import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis } from '../helpers/redis.js';
import { startSluiceFixture } from '../helpers/sluice.js';
import { isSluiceError } from '../../src/core/errors.js';

const test = suite('app/durability');

test('strict durability is refused at start on a server that neither fsyncs every write nor has WAITAOF', async () => {
  const redis = await startRedis({ appendfsync: 'everysec' });
  try {
    await startSluiceFixture(redis, { redis: { durability: 'strict' } });
    assert.unreachable('start should fail');
  } catch (err) {
    assert.ok(isSluiceError(err, 'SLUICE_CONFIG_INVALID'), String(err));
    assert.match((err as Error).message, 'appendfsync always');
  } finally {
    await redis.stop();
  }
});

test('strict durability runs on a server with appendfsync always and accepts mail', async () => {
  const redis = await startRedis({ appendfsync: 'always' });
  const s = await startSluiceFixture(redis, { redis: { durability: 'strict' }, roles: ['ingress'] });
  try {
    const r = await s.api('/v1/messages', { body: { from: 'a@acme.example', to: 'b@one.test', subject: 's', text: 't' } });
    assert.is(r.status, 202, JSON.stringify(r.body));
  } finally {
    await s.stop();
    await redis.stop();
  }
});

test.run();
