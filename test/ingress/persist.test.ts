import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { getMessage, messageWrite, storeWithBody } from '../../src/store/messages.js';
import { persistMessage } from '../../src/ingress/persist.js';
import { messageStatus } from '../../src/ingress/message-status.js';
import { createMessageSource } from '../../src/store/message-source.js';
import { appendEvent } from '../../src/store/events.js';
import { newId } from '../../src/core/ids.js';
import { shardOf } from '../../src/redis/keys.js';
import { indexAddresses, readAddressRefs } from '../../src/store/address-index.js';
import { digestKey, digestWith } from '../../src/store/address-digest.js';
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

test("the store's MULTI sent again (ioredis resends a command whose reply a dropped connection lost, after Redis ran it) answers stored, not taken: the caller would store it again under a new id and mail its recipients twice", async () => {
  const { keys } = redis.fresh();
  const id = newId(NOW);
  const msg = sample(id);
  const w = messageWrite(keys, msg);
  assert.is(await storeWithBody(client, keys, msg, 3, [...w.keys, ...w.args]), true);
  assert.is(await storeWithBody(client, keys, msg, 3, [...w.keys, ...w.args]), true, 'the same write again: stored');
  assert.is(await client.get(keys.msgBody(id)), 'Subject: hi\r\n\r\nbody\r\n', 'its body kept');
  // Another message drawn the same id (another account, or other recipients) is refused as before.
  for (const other of [{ ...sample(id), account: 'globex' }, { ...sample(id), rcpts: sample(id).rcpts.slice(1) }]) {
    const o = messageWrite(keys, other);
    assert.is(await storeWithBody(client, keys, other, 3, [...o.keys, ...o.args]), false);
  }
  assert.is(await client.hget(keys.msgMeta(id), 'account'), 'acme');
  // The single server's whole acceptance (record, queue, index, event in one script) sent again: nothing twice.
  const id2 = newId(NOW);
  assert.is((await persistMessage(client, keys, 4, sample(id2), undefined, 1000)).stored, true);
  assert.is((await persistMessage(client, keys, 4, sample(id2), undefined, 1000)).stored, true);
  assert.equal(await client.zrange(keys.ready('gmail.com'), 0, -1), [`${id2}:0:0`, `${id2}:2:0`]);
  assert.is((await client.xrange(keys.events(), '-', '+')).filter(([, f]) => f.includes(id2)).length, 1, 'one accepted event');
});

for (const [count, path] of [[2000, 'one script'], [9000, 'chunked commands']] as const) {
  test(`${count} recipients (${path}): the address index and the schedule are written with the message`, async () => {
    const { keys } = redis.fresh();
    const id = newId(NOW);
    const rcpts = Array.from({ length: count }, (_, i) => ({ address: `u${i}@d${i % 3}.test`, domain: `d${i % 3}.test` }));
    // The most a message has (render/links.ts MAX_TRACKED_LINKS).
    const links = Array.from({ length: 1000 }, (_, i) => `https://acme.example/${i}`);
    assert.is((await persistMessage(client, keys, 4, { ...sample(id), rcpts, links }, 3_600_000)).stored, true);
    assert.is(await client.hget(keys.msgMeta(id), 'pending'), String(count));
    assert.is(await client.llen(keys.links(id)), 1000);
    assert.is(await client.lindex(keys.links(id), 999), 'https://acme.example/999');
    for (const d of ['d0.test', 'd1.test', 'd2.test']) {
      assert.is(await client.zcard(keys.ready(d)), rcpts.filter((r) => r.domain === d).length, d);
      const shard = shardOf(d, 4);
      assert.ok(await client.sismember(keys.destinations(shard), d), d);
      assert.is(await client.zscore(keys.schedule(shard), d), String(NOW), d);
    }
    const last = count - 1;
    assert.is(await client.zscore(keys.ready(`d${last % 3}.test`), `${id}:${last}:0`), String(NOW));
    const key = await digestKey(client, keys);
    for (const i of [0, 1234, last]) {
      const digest = digestWith(key, `u${i}@d${i % 3}.test`);
      assert.equal((await readAddressRefs(client, keys, digest)).map((r) => [r.member, r.at]), [[`m:${id}:${i}`, NOW]]);
      const ttl = await client.pttl(keys.addressRefs(digest));
      assert.ok(ttl > 3_500_000 && ttl <= 3_600_000, `ref TTL ${ttl}`);
    }
  });
}

test("an address's references older than their lifetime are trimmed by its next write, at most 100 a write; younger ones stay", async () => {
  const { keys } = redis.fresh();
  const DAY = 86_400_000;
  const ttl = 10 * DAY;
  const address = 'regular@example.org';
  const digest = digestWith(await digestKey(client, keys), address);
  const refs = keys.addressRefs(digest);
  // An index as the earlier release left it: every reference the address ever had (250 from a year
  // ago), and two within the lifetime (9 days and 1 day old).
  for (let i = 0; i < 250; i++) await client.zadd(refs, NOW - 365 * DAY + i, `m:${newId(NOW - 365 * DAY + i)}:0`);
  const young = [`m:${newId(NOW - 9 * DAY)}:1`, `m:${newId(NOW - DAY)}:0`];
  await client.zadd(refs, NOW - 9 * DAY, young[0]!, NOW - DAY, young[1]!);
  const members = async () => (await readAddressRefs(client, keys, digest)).map((r) => r.member);

  const one = (at: number) => ({ ...sample(newId(at)), acceptedAt: at, rcpts: [{ address, domain: 'example.org' }] });
  const first = one(NOW);
  await persistMessage(client, keys, 4, first, ttl);
  assert.is((await members()).length, 150 + 2 + 1, 'a write trims at most 100 stale references');
  // The general path (a cluster, a message of thousands of recipients, a deleted contact's copies).
  await indexAddresses(client, keys, [{ address, ref: { kind: 'c', msgId: 'camp', idx: 7 }, at: NOW }], ttl);
  await persistMessage(client, keys, 4, one(NOW + 1), ttl);
  assert.equal((await members()).slice(0, 2), young, 'the backlog is gone after two more writes; the young ones stay');
  assert.is((await members()).length, 5);

  // A reference written again later keeps the later score (ZADD GT): an older write never moves it back.
  await indexAddresses(client, keys, [{ address, ref: { kind: 'm', msgId: first.id, idx: 0 }, at: NOW + 5 * DAY }], ttl);
  await indexAddresses(client, keys, [{ address, ref: { kind: 'm', msgId: first.id, idx: 0 }, at: NOW }], ttl);
  assert.is(Number(await client.zscore(refs, `m:${first.id}:0`)), NOW + 5 * DAY);
  // 12 days on: the 9-day-old, the 1-day-old and the first messages are past the lifetime; the one
  // moved to NOW + 5 days is not.
  await persistMessage(client, keys, 4, one(NOW + 12 * DAY), ttl);
  const left = await members();
  assert.not.ok(left.includes(young[0]!) || left.includes(young[1]!));
  assert.ok(left.includes(`m:${first.id}:0`));
  const ttlLeft = await client.pttl(refs);
  assert.ok(ttlLeft > ttl - 60_000 && ttlLeft <= ttl, `TTL ${ttlLeft}`);
});

test('a later message never moves a destination\'s schedule later (ZADD LT); an earlier one moves it earlier', async () => {
  const { keys } = redis.fresh();
  const at = (t: number) => ({ ...sample(newId(t)), acceptedAt: t, rcpts: [{ address: `v${t}@d0.test`, domain: 'd0.test' }] });
  const score = () => client.zscore(keys.schedule(shardOf('d0.test', 4)), 'd0.test');
  await persistMessage(client, keys, 4, at(NOW));
  await persistMessage(client, keys, 4, at(NOW + 60_000));
  assert.is(await score(), String(NOW));
  await persistMessage(client, keys, 4, at(NOW - 60_000));
  assert.is(await score(), String(NOW - 60_000));
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
  const src = createMessageSource(client, keys, 60_000, 3_600_000);
  const loaded = await src.load(id);
  assert.ok(loaded);
  assert.ok(Buffer.isBuffer(loaded.body));
  assert.is(loaded.fromDomain, 'acme.example');
  // Bytes as stored (not UTF-8: 8-bit MIME), and the record's text decoded as UTF-8.
  const eightBit = newId(NOW);
  const raw = Buffer.concat([Buffer.from('Subject: x\r\n\r\n'), Buffer.from([0xe9, 0xff, 0x00, 0x80]), Buffer.from('\r\n')]);
  await persistMessage(client, keys, 4, { ...sample(eightBit), body: raw, rcpts: [{ address: 'zoë@example.org', domain: 'example.org' }] });
  const loaded8 = await src.load(eightBit);
  assert.ok(loaded8 && Buffer.isBuffer(loaded8.body) && loaded8.body.equals(raw));
  assert.equal(loaded8.rcpts, [{ address: 'zoë@example.org', domain: 'example.org' }]);
  const finish = (msgId: string, idx: number) => src.countCopy({ msgId, idx }, { counter: 'delivered' }, NOW);
  assert.equal(await finish(id, 0), { kind: 'message', pending: 2 });
  assert.equal(await finish(id, 1), { kind: 'message', pending: 1 });
  // The same copy again (a call ioredis sent twice after a lost reply, or the reaper after the dispatcher): counted once.
  assert.equal(await finish(id, 1), { kind: 'before' });
  assert.is(await client.exists(keys.msgBody(id)), 1);
  assert.equal(await finish(id, 2), { kind: 'message', pending: 0 });
  assert.is(await client.exists(keys.msgBody(id)), 0);
  const ttl = await client.pttl(keys.msgMeta(id));
  assert.ok(ttl > 0 && ttl <= 60_000);
  const linksTtl = await client.pttl(keys.links(id));
  assert.ok(linksTtl > 0 && linksTtl <= 60_000, 'the link table expires with the record');
  assert.is(await src.load(id), null);
  assert.equal(await finish(newId(NOW), 0), { kind: 'gone' });
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
