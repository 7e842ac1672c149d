/**
 * Records named by a random id never overwrite one another, against a real Redis: when a list,
 * webhook, campaign or feedback mail draws an id that is taken (two processes, one millisecond,
 * 1 in 2^30 a pair), nothing of the existing record changes and the new one takes another id.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { newId } from '../../src/core/ids.js';
import { createList, getList } from '../../src/store/contacts.js';
import { createWebhook, getWebhook, listWebhooks } from '../../src/store/webhooks.js';
import { createCampaign, getCampaign, type NewCampaign } from '../../src/store/campaigns.js';
import { loadFeedback, storeFeedback } from '../../src/feedback/raw-store.js';
import { createRecord } from '../../src/store/record-io.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';

const test = suite('store/fresh-ids');
let redis: TestRedis;
let client: RedisClient;
let keys: Keys;

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});
test.before.each(() => {
  keys = redis.fresh().keys;
});
test.after(async () => {
  await redis.stop();
});

/** Hands out the given ids in order, and counts how many were asked for. */
function minter(...ids: string[]): { mint: () => string; asked: () => number } {
  let n = 0;
  return { mint: () => ids[n++] ?? newId(), asked: () => n };
}

test('createRecord writes a hash only under a free key, with its TTL when given one', async () => {
  const key = keys.feedbackRaw(newId());
  assert.is(await createRecord(client, key, { a: '1', b: Buffer.from([0, 255]) }, 60_000), true);
  assert.is(await createRecord(client, key, { a: '2', c: '3' }, 60_000), false);
  assert.is(await client.hget(key, 'a'), '1');
  assert.equal(await client.hgetBuffer(key, 'b'), Buffer.from([0, 255]));
  assert.is(await client.hget(key, 'c'), null, 'nothing of the refused write');
  const ttl = await client.pttl(key);
  assert.ok(ttl > 0 && ttl <= 60_000, `ttl ${ttl}`);
  const forever = keys.listMeta(newId());
  assert.is(await createRecord(client, forever, { a: '1' }), true);
  assert.is(await client.pttl(forever), -1, 'no TTL when none is given');
});

test('a list that draws a taken id takes another; the existing list is untouched', async () => {
  const first = await createList(client, keys, 'acme', 'customers');
  const m = minter(first.id);
  const second = await createList(client, keys, 'globex', 'leads', Date.now(), m.mint);
  assert.is(m.asked(), 2);
  assert.is.not(second.id, first.id);
  assert.equal((await getList(client, keys, 'acme', first.id))?.name, 'customers');
  assert.is(await getList(client, keys, 'globex', first.id), null, "the other account's list is not reachable by the new owner");
  assert.equal((await getList(client, keys, 'globex', second.id))?.name, 'leads');
});

test('three taken ids in a row are refused with SLUICE_INTERNAL, and nothing is written', async () => {
  const taken = await createList(client, keys, 'acme', 'customers');
  try {
    await createList(client, keys, 'globex', 'leads', Date.now(), () => taken.id);
    assert.unreachable('should have thrown');
  } catch (err) {
    assert.is((err as { code?: string }).code, 'SLUICE_INTERNAL');
  }
  assert.equal((await getList(client, keys, 'acme', taken.id))?.name, 'customers');
  assert.is(await client.scard(keys.accountLists('globex')), 0);
});

test('a webhook that draws an id its account already uses takes another; the existing endpoint keeps its URL and secret', async () => {
  const first = await createWebhook(client, keys, 'acme', { url: 'https://a.example/hook', events: ['*'] });
  const before = await getWebhook(client, keys, 'acme', first.endpoint.id);
  const m = minter(first.endpoint.id);
  const second = await createWebhook(client, keys, 'acme', { url: 'https://b.example/hook', events: ['opened'] }, { mint: m.mint });
  assert.is(m.asked(), 2);
  assert.is.not(second.endpoint.id, first.endpoint.id);
  assert.equal(await getWebhook(client, keys, 'acme', first.endpoint.id), before);
  assert.equal((await listWebhooks(client, keys, 'acme')).map((e) => e.url).sort(), ['https://a.example/hook', 'https://b.example/hook']);
});

function campaign(id: string, name: string): NewCampaign {
  return {
    id, account: 'acme', name, listId: newId(), from: 'news@acme.example', fromDomain: 'acme.example', subject: 'Hi',
    tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: Date.now(), sendAt: null, body: `{"t":"${name}"}`, links: ['https://acme.example/1'],
  };
}

test('a campaign is not stored under the id of an accepted message or of another campaign', async () => {
  // A message's record under the same keys a campaign would use.
  const msgId = newId();
  await client.hset(keys.msgMeta(msgId), { account: 'globex', kind: 'api' });
  await client.set(keys.msgBody(msgId), 'the accepted message');
  assert.is(await createCampaign(client, keys, { ...campaign(msgId, 'spring'), sendAt: 1 }), null);
  assert.equal(await client.hgetall(keys.msgMeta(msgId)), { account: 'globex', kind: 'api' });
  assert.equal([await client.zscore(keys.accountCampaigns('acme'), msgId), await client.zscore(keys.campaignsDue(), msgId)], [null, null], 'not listed nor scheduled');
  assert.is(await client.get(keys.msgBody(msgId)), 'the accepted message');
  assert.is(await client.exists(keys.links(msgId)), 0);

  const id = newId();
  const stored = await createCampaign(client, keys, campaign(id, 'spring'));
  assert.is(stored?.name, 'spring');
  assert.equal(await client.lrange(keys.links(id), 0, -1), ['https://acme.example/1']);
  const listedAt = await client.zscore(keys.accountCampaigns('acme'), id);
  assert.ok(listedAt !== null);
  assert.is(await createCampaign(client, keys, { ...campaign(id, 'autumn'), createdAt: 1, sendAt: 1 }), null);
  assert.is((await getCampaign(client, keys, 'acme', id))?.name, 'spring');
  assert.equal([await client.zscore(keys.accountCampaigns('acme'), id), await client.zscore(keys.campaignsDue(), id)], [listedAt, null], 'the draft stays listed as it was, not scheduled');
  assert.is(await client.get(keys.msgBody(id)), '{"t":"spring"}');
  assert.is(await client.llen(keys.links(id)), 1);
});

test('a campaign with thousands of links stores them all, in order', async () => {
  const id = newId();
  const links = Array.from({ length: 2_345 }, (_, i) => `https://acme.example/p/${i}`);
  assert.ok(await createCampaign(client, keys, { ...campaign(id, 'big'), links }));
  assert.equal(await client.lrange(keys.links(id), 0, -1), links);
});

test('feedback mail stored under a taken id is refused; the mail already there is untouched', async () => {
  const id = newId();
  const mail = { id, raw: Buffer.from('first mail'), rcpts: ['fbl@bounces.example'], mailFrom: 'isp@example.net', receivedAt: Date.now() };
  assert.is(await storeFeedback(client, keys, mail, 86_400_000), true);
  assert.is(await storeFeedback(client, keys, { ...mail, raw: Buffer.from('second mail'), mailFrom: 'other@example.org' }, 86_400_000), false);
  const kept = await loadFeedback(client, keys, id);
  assert.equal(kept?.raw, Buffer.from('first mail'));
  assert.is(kept?.mailFrom, 'isp@example.net');
  assert.ok((await client.pttl(keys.feedbackRaw(id))) > 0, 'kept for its retention');
});

test.run();
