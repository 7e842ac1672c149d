import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Readable } from 'node:stream';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { placeHolds, releaseHolds } from '../../src/queue/holds.js';
import { createList } from '../../src/store/contacts.js';
import { importContacts } from '../../src/store/contact-import.js';

/**
 * A campaign copy whose campaign cannot be loaded when it is sent (its template gone) settles as
 * "no longer stored", and is counted as the campaign's copy: by what the record says it is. It was
 * counted off as a plain message's recipient, which took the campaign's pending down without a
 * counter or its completion, and set the campaign's record to expire.
 */
const test = suite('e2e/campaign-unloaded');

let redis: TestRedis;
let peer: CapturePeer;
let s: SluiceFixture;

test.before(async () => {
  redis = await startRedis();
  peer = await startCapturePeer();
  s = await startSluiceFixture(redis, { delivery: { transport: { '*': `127.0.0.1:${peer.port}` } } }, { tracking: true });
});

test.after(async () => {
  await s?.stop();
  await peer?.close();
  await redis?.stop();
});

test('a campaign whose template is gone when its copy is sent counts the copy bounced, completes, and keeps its record', async () => {
  const client = s.app.redis.client;
  const keys = s.app.keys;
  const list = await createList(client, keys, 'acme', 'unloaded');
  await importContacts(client, keys, 'acme', list.id, Readable.from([Buffer.from(JSON.stringify({ email: 'ann@gone.test' }))]), { format: 'ndjson', limits: { maxBytes: 10_000, maxRows: 10 } });
  await placeHolds(client, keys, [{ kind: 'domain', name: 'gone.test' }], { until: null, reason: 'test', by: 'test', now: Date.now() });
  const created = await s.api('/v1/campaigns', { body: { from: 'news@acme.example', subject: 'unloaded', text: 'hi', listId: list.id, sendAt: 'now' } });
  assert.is(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  for (let i = 0; i < 400 && (await client.hget(keys.msgMeta(id), 'enqueued')) !== '1'; i++) await new Promise((r) => setTimeout(r, 50));
  assert.is(await client.hget(keys.msgMeta(id), 'enqueued'), '1', 'the list is queued');
  await client.del(keys.msgBody(id));
  await releaseHolds(client, keys, s.config.redis.scheduleShards, [{ kind: 'domain', name: 'gone.test' }], Date.now());
  let stats: { state?: string; pending?: number; bounced?: number } = {};
  for (const until = Date.now() + 20_000; stats.state !== 'completed' && Date.now() < until; await new Promise((r) => setTimeout(r, 100))) {
    stats = (await s.api(`/v1/campaigns/${id}/stats`)).body;
  }
  assert.equal([stats.state, stats.pending, stats.bounced], ['completed', 0, 1], JSON.stringify(stats));
  assert.is(await client.pttl(keys.msgMeta(id)), -1, 'the campaign record is kept (it is a campaign, not a finished message)');
  assert.is(peer.messages.filter((m) => m.raw.toString('latin1').includes('unloaded')).length, 0, 'nothing sent');
});

test.run();
