import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { getMessage } from '../../src/store/messages.js';
import { persistMessage } from '../../src/ingress/persist.js';
import { messageStatus } from '../../src/ingress/message-status.js';
import { createMessageSource } from '../../src/store/message-source.js';
import { appendEvent } from '../../src/store/events.js';
import { newId } from '../../src/core/ids.js';
import { shardOf } from '../../src/redis/keys.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';

const test = suite('ingress/persist');
let redis: TestRedis;
let client: RedisClient;
const NOW = Date.UTC(2026, 0, 15, 12);

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});
test.after(() => redis.stop());

const sample = (id: string) => ({
  id, account: 'acme', source: 'smtp' as const, kind: 'raw' as const, from: 'a@acme.example', fromDomain: 'acme.example',
  rcpts: [{ address: 'x@gmail.com', domain: 'gmail.com' }, { address: 'y@example.org', domain: 'example.org' }, { address: 'z@gmail.com', domain: 'gmail.com' }],
  acceptedAt: NOW, tags: ['t1'], metadata: { k: 'v', n: 1 }, body: Buffer.from('Subject: hi\r\n\r\nbody\r\n'),
});

test('persist writes meta and body, then queues every recipient at its index', async () => {
  const { keys } = redis.fresh();
  const id = newId(NOW);
  await persistMessage(client, keys, 4, sample(id));
  const meta = await client.hgetall(keys.msgMeta(id));
  assert.is(meta['account'], 'acme');
  assert.is(meta['kind'], 'raw');
  assert.is(meta['pending'], '3');
  assert.equal(JSON.parse(meta['rcpts'] as string)[1], { address: 'y@example.org', domain: 'example.org' });
  assert.is(await client.get(keys.msgBody(id)), 'Subject: hi\r\n\r\nbody\r\n');
  assert.equal(await client.zrange(keys.ready('gmail.com'), 0, -1), [`${id}:0:0`, `${id}:2:0`]);
  assert.equal(await client.zrange(keys.ready('example.org'), 0, -1, 'WITHSCORES'), [`${id}:1:0`, String(NOW)]);
  assert.ok(await client.sismember(keys.destinations(shardOf('gmail.com', 4)), 'gmail.com'));

  const msg = await getMessage(client, keys, id);
  assert.ok(msg);
  assert.equal(msg.meta.metadata, { k: 'v', n: 1 });
  assert.equal(msg.meta.tags, ['t1']);
  assert.is((await msg.body())?.toString(), 'Subject: hi\r\n\r\nbody\r\n');
});

test('status: every recipient queued; unknown id and another account both give null', async () => {
  const { keys } = redis.fresh();
  const id = newId(NOW);
  await persistMessage(client, keys, 4, sample(id));
  const st = await messageStatus(client, keys, id, 'acme');
  assert.ok(st);
  assert.equal(st.recipients.map((r) => [r.idx, r.address, r.state]), [[0, 'x@gmail.com', 'queued'], [1, 'y@example.org', 'queued'], [2, 'z@gmail.com', 'queued']]);
  assert.is(await messageStatus(client, keys, id, 'other'), null);
  assert.is(await messageStatus(client, keys, newId(NOW), 'acme'), null);
});

test('message source: loads for delivery; the last finished recipient drops the body and expires the meta', async () => {
  const { keys } = redis.fresh();
  const id = newId(NOW);
  await persistMessage(client, keys, 4, { ...sample(id), links: ['https://example.org/a'] });
  const src = createMessageSource(client, keys, 60_000);
  const loaded = await src.load(id);
  assert.ok(loaded);
  assert.ok(Buffer.isBuffer(loaded.body));
  assert.is(loaded.fromDomain, 'acme.example');
  await src.finished(id);
  await src.finished(id);
  assert.is(await client.exists(keys.msgBody(id)), 1);
  await src.finished(id);
  assert.is(await client.exists(keys.msgBody(id)), 0);
  const ttl = await client.pttl(keys.msgMeta(id));
  assert.ok(ttl > 0 && ttl <= 60_000);
  const linksTtl = await client.pttl(keys.links(id));
  assert.ok(linksTtl > 0 && linksTtl <= 60_000, 'the link table expires with the record');
  assert.is(await src.load(id), null);
  await src.finished(newId(NOW));
  assert.is(await client.exists(keys.msgMeta('nothing')), 0);
});

test('events: XADD with type and id fields, trimmed approximately', async () => {
  const { keys } = redis.fresh();
  for (let i = 0; i < 300; i++) await appendEvent(client, keys, 'delivered', { msgId: 'm', idx: i, account: 'acme' }, 100);
  const len = await client.xlen(keys.events());
  // MAXLEN ~ trims whole nodes (100 entries each by default): between the bound and one node above it
  assert.ok(len >= 100 && len < 300, String(len));
  const last = await client.xrevrange(keys.events(), '+', '-', 'COUNT', 1);
  assert.equal(last[0]?.[1], ['type', 'delivered', 'msgId', 'm', 'idx', '299', 'account', 'acme']);
});

test.run();
