import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { replyLosingRelay, scriptSha, startRedis, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';
import { newId, withFreeId } from '../../src/core/ids.js';
import { createWebhook, listWebhooks } from '../../src/store/webhooks.js';
import { createList, listLists } from '../../src/store/contacts.js';
import { createCampaign, listCampaigns } from '../../src/store/campaigns.js';
import { IdempotencyStore } from '../../src/ingress/idempotency.js';

/**
 * Records made under a fresh random id, when Redis ran the write and a dropped connection lost its
 * reply: ioredis sends the write again, which finds the id taken. Taken as "another record drew
 * this id", the caller wrote a second record under a new id and left the first behind: a second
 * webhook endpoint (every event went out twice, signed with a secret nobody had), a list and a
 * scheduled campaign nobody could list. The write finds the record its own and answers as the first
 * run did.
 */
const test = suite('store/lost-reply');
let redis: TestRedis;
let relay: Awaited<ReturnType<typeof replyLosingRelay>>;
let lossy: RedisClient;
let direct: RedisClient;

test.before(async () => {
  redis = await startRedis();
  relay = await replyLosingRelay(redis);
  lossy = relay.redis.client();
  direct = redis.client();
});
test.after(async () => {
  await relay.close();
  await redis.stop();
});

/** Runs `write` with the reply of the first request carrying `sha` lost; asserts one was. */
async function losing<T>(sha: string, write: () => Promise<T>): Promise<T> {
  const before = relay.lost;
  relay.lose((req) => req.includes(sha));
  const r = await write();
  assert.is(relay.lost - before, 1, 'a reply was lost');
  return r;
}

test('a webhook registration run twice registers one endpoint, the one answered', async () => {
  const { keys } = redis.fresh();
  const r = await losing(scriptSha('addWebhook'), () => createWebhook(lossy, keys, 'acme', { url: 'https://hooks.example.com/x', events: ['delivered'] }));
  assert.equal((await listWebhooks(direct, keys, 'acme')).map((e) => e.id), [r.endpoint.id]);
});

test('a contact list created twice is one list, listed', async () => {
  const { keys } = redis.fresh();
  const list = await losing(scriptSha('createHash'), () => createList(lossy, keys, 'acme', 'news'));
  assert.equal((await listLists(direct, keys, 'acme')).map((l) => l.id), [list.id]);
  assert.equal(await direct.keys(`${keys.prefix}{l:*}:meta`), [keys.listMeta(list.id)]);
});

test('a campaign stored twice is one campaign, listed and due', async () => {
  const { keys } = redis.fresh();
  const now = Date.now();
  const c = await losing(scriptSha('createCampaign'), () =>
    withFreeId(() => newId(now), (id) => createCampaign(lossy, keys, {
      id, account: 'acme', name: 'n', listId: 'l1', from: 'news@acme.example', fromDomain: 'acme.example', subject: 's',
      tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: now, sendAt: now + 60_000, body: '{"t":1}', links: [],
    })),
  );
  assert.equal((await listCampaigns(direct, keys, 'acme')).campaigns.map((x) => x.id), [c.id]);
  assert.equal(await direct.zrange(keys.campaignsDue(), 0, -1), [c.id]);
  assert.is((await direct.keys(`${keys.prefix}{m:*}:meta`)).length, 1, 'no campaign left behind');
});

test("an Idempotency-Key's first request whose claim was run twice is that request's, not a conflict", async () => {
  const { keys } = redis.fresh();
  const store = new IdempotencyStore(lossy, keys, 86_400_000);
  const before = relay.lost;
  relay.lose((req) => /\bNX\b/.test(req) && req.includes(':idem:'));
  const r = await store.begin('acme', 'key-1', 'hash-1');
  assert.is(relay.lost - before, 1, 'a reply was lost');
  assert.is(r.kind, 'new');
  if (r.kind === 'new') await r.lease.end();
});

test.run();
