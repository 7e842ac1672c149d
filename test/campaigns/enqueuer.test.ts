import * as assert from 'uvu/assert';
import { redisSuite } from '../helpers/redis.js';
import { CampaignEnqueuer } from '../../src/campaigns/enqueuer.js';
import { createCampaign, getCampaign } from '../../src/store/campaigns.js';
import { createList, upsertContacts } from '../../src/store/contacts.js';
import { newId } from '../../src/core/ids.js';
import { createLogger } from '../../src/observability/logger.js';

const { test, env } = redisSuite('campaigns/enqueuer');

const T = 1_700_000_000_000;
const rows = (from: number, n: number) => Array.from({ length: n }, (_, i) => ({ email: `c${from + i}@dest${(from + i) % 3}.test`, fields: {} }));

test('a campaign goes to its list as it was when sending began: contacts added meanwhile are not queued', async () => {
  const { keys } = env.redis.fresh();
  const list = await createList(env.client, keys, 'acme', 'news', T);
  await upsertContacts(env.client, keys, 'acme', list.id, rows(1, 5), T);
  const id = newId(T);
  await createCampaign(env.client, keys, {
    id, account: 'acme', name: 'snapshot', listId: list.id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 's',
    tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: T, sendAt: T, body: '{}', links: [],
  });
  // Two contacts a chunk, one chunk a turn: the list grows between turns.
  const enqueuer = new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), chunkSize: 2, chunksPerTurn: 1, now: () => T });
  assert.is(await enqueuer.advance(id), false, 'more to queue after the first chunk');
  assert.is((await getCampaign(env.client, keys, null, id))?.lastNo, 5, 'the list had 5 contacts when sending began');
  await upsertContacts(env.client, keys, 'acme', list.id, rows(6, 4), T + 1);
  let turns = 1;
  while (!(await enqueuer.advance(id)) && turns < 20) turns++;
  const c = await getCampaign(env.client, keys, null, id);
  assert.is(c?.queued, 5, `queued ${c?.queued} of the 9 contacts the list has now`);
  assert.is(c?.lastNo, 5, 'the snapshot is kept');
  assert.ok(c?.enqueued, 'the whole (snapshotted) list is queued');
});

test('an empty list queues nothing and finishes', async () => {
  const { keys } = env.redis.fresh();
  const list = await createList(env.client, keys, 'acme', 'empty', T);
  const id = newId(T);
  await createCampaign(env.client, keys, {
    id, account: 'acme', name: 'empty', listId: list.id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 's',
    tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: T, sendAt: T, body: '{}', links: [],
  });
  const enqueuer = new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), now: () => T });
  assert.is(await enqueuer.advance(id), true);
  const c = await getCampaign(env.client, keys, null, id);
  assert.is(c?.queued, 0);
  assert.is(c?.lastNo, 0);
});

test.run();
