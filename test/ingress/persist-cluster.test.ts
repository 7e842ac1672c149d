import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { persistedWhole, persistMessage } from '../../src/ingress/persist.js';
import { storeMessage } from '../../src/store/messages.js';
import { readAddressRefs } from '../../src/store/address-index.js';
import { digestKey, digestWith } from '../../src/store/address-digest.js';
import { newId } from '../../src/core/ids.js';
import { startCluster, type TestCluster } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';

/**
 * Acceptance on a real 3-master Redis Cluster: a message's recipients' address-index keys live in
 * different slots (one per address), so they must not be written as one explicit pipeline (ioredis
 * refuses a pipeline across slots on a cluster). Regression test for exactly that.
 */
const test = suite('ingress/persist (Redis Cluster)');
let cluster: TestCluster;
let client: RedisClient;

test.before(async () => {
  cluster = await startCluster();
  client = cluster.client();
});
test.after(() => cluster?.stop());

test('a message to many addresses is stored, queued and indexed per address', async () => {
  const { keys } = cluster.fresh();
  const id = newId();
  const rcpts = Array.from({ length: 12 }, (_, i) => ({ address: `user${i}@d${i % 3}.test`, domain: `d${i % 3}.test` }));
  const persisted = await persistMessage(client, keys, 4, {
    id, account: 'acme', source: 'http', kind: 'raw', from: 'a@acme.example', fromDomain: 'acme.example',
    rcpts, acceptedAt: Date.now(), tags: [], metadata: {}, body: 'Subject: hi\r\n\r\nbody\r\n',
  }, undefined, 1000);
  assert.equal(persisted, { stored: true });
  assert.is(await client.hget(keys.msgMeta(id), 'pending'), '12');
  // The id is taken now: a second message under it is refused and changes nothing.
  const again = await persistMessage(client, keys, 4, {
    id, account: 'other', source: 'http', kind: 'raw', from: 'b@other.example', fromDomain: 'other.example',
    rcpts: [{ address: 'x@d9.test', domain: 'd9.test' }], acceptedAt: Date.now(), tags: [], metadata: {}, body: 'other',
  }, undefined, 1000);
  assert.equal(again, { stored: false });
  const events = (await client.xrange(keys.events(), '-', '+')).map(([, f]) => f);
  assert.equal(events, [['type', 'accepted', 'msgId', id, 'account', 'acme', 'source', 'http', 'recipients', '12']], 'one accepted event, none for the refused message');
  assert.is(await client.hget(keys.msgMeta(id), 'account'), 'acme');
  assert.is(await client.get(keys.msgBody(id)), 'Subject: hi\r\n\r\nbody\r\n');
  assert.is(await client.zcard(keys.ready('d9.test')), 0);
  assert.is(await client.zcard(keys.ready('d0.test')), 4);
  assert.ok(await persistedWhole(client, keys, id, rcpts.length), 'marked persisted whole once queued');
  // A record whose process died before its queue (stored in a step of its own here) is not.
  const orphan = newId();
  await storeMessage(client, keys, { id: orphan, account: 'acme', source: 'http', kind: 'raw', from: 'a@acme.example', fromDomain: 'acme.example', rcpts: rcpts.slice(0, 1), acceptedAt: Date.now(), tags: [], metadata: {}, body: 'x' });
  assert.not.ok(await persistedWhole(client, keys, orphan, 1), 'an Idempotency-Key retry must not answer for it');
  const key = await digestKey(client, keys);
  for (const [i, r] of rcpts.entries()) {
    const refs = await readAddressRefs(client, keys, digestWith(key, r.address));
    assert.equal(refs.map((x) => x.member), [`m:${id}:${i}`], r.address);
  }
});

test('masters that forgot their scripts (SCRIPT FLUSH on each): the store loads them and writes once', async () => {
  const { keys } = cluster.fresh();
  for (const node of (client as import('ioredis').Cluster).nodes('master')) await node.script('FLUSH');
  // Several ids: their {m:<id>} slots fall on different masters.
  const ids = Array.from({ length: 6 }, () => newId());
  for (const id of ids) {
    const persisted = await persistMessage(client, keys, 4, {
      id, account: 'acme', source: 'http', kind: 'raw', from: 'a@acme.example', fromDomain: 'acme.example',
      rcpts: [{ address: 'x@d1.test', domain: 'd1.test' }], acceptedAt: Date.now(), tags: [], metadata: {}, body: `Subject: ${id}\r\n\r\nbody\r\n`,
    });
    assert.equal(persisted, { stored: true });
    assert.is(await client.get(keys.msgBody(id)), `Subject: ${id}\r\n\r\nbody\r\n`);
    assert.is(await client.hget(keys.msgMeta(id), 'pending'), '1');
  }
  assert.is(await client.zcard(keys.ready('d1.test')), 6);
});

test.run();
