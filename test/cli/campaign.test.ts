/**
 * `sluice campaign` against a real Redis: list, status (text and JSON), pause / resume / cancel with
 * the state machine's refusals, and usage errors.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { newId } from '../../src/core/ids.js';
import { createCampaign, getCampaign, recordCampaignOutcome } from '../../src/store/campaigns.js';
import { createList } from '../../src/store/contacts.js';
import { pushCampaignChunk, startCampaign } from '../../src/queue/campaign.js';
import { sluice, startCliRedis, type CliRedis } from './run-cli.js';

const test = suite('cli/campaign');
let cli: CliRedis;
let client: RedisClient;
let keys: Keys;
let cfg: string;

test.before(async () => {
  cli = await startCliRedis({ redis: { scheduleShards: 4 } });
  ({ client, keys, cfg } = cli);
});
test.after(async () => {
  await cli?.stop();
});

/** A sending campaign with 3 recipients queued at one destination and 1 delivered. */
async function sending(): Promise<string> {
  const list = await createList(client, keys, 'acme', `l ${newId()}`);
  const id = newId();
  await createCampaign(client, keys, {
    id, account: 'acme', name: 'Spring sale', listId: list.id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 'Hi',
    tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: Date.now(), sendAt: Date.now(), body: '{}', links: [],
  });
  assert.ok((await startCampaign(client, keys, id, Date.now())).ok);
  await pushCampaignChunk(client, keys, 4, { campaignId: id, chunk: 1, dueAt: Date.now(), sending: true, byDomain: new Map([['dest.test', [1, 2, 3]]]) });
  await client.hset(keys.msgMeta(id), 'queued', 4, 'pending', 3);
  await recordCampaignOutcome(client, keys, id, { counter: 'delivered', final: false, now: Date.now() });
  return id;
}

test('status prints the counts; --json carries them as fields', async () => {
  const id = await sending();
  const text = await sluice(['campaign', 'status', id, '--config', cfg]);
  assert.is(text.code, 0, text.err);
  assert.match(text.out, `campaign ${id}  Spring sale`);
  assert.match(text.out, /state\s+sending/);
  assert.match(text.out, /delivered\s+1 \(25\.0%\)/);
  const json = JSON.parse((await sluice(['campaign', 'status', id, '--json', '--config', cfg])).out);
  assert.equal([json.state, json.queued, json.delivered, json.pending], ['sending', 4, 1, 3]);
  const list = await sluice(['campaign', 'list', '--account', 'acme', '--config', cfg]);
  assert.match(list.out, new RegExp(`^${id}  sending`, 'm'));
});

test('list prints every campaign, in pages of 1000 (the newest first); --limit N the N newest', async () => {
  const list = await createList(client, keys, 'paged', `l ${newId()}`);
  const t0 = Date.now() - 3_600_000;
  const ids = await Promise.all(Array.from({ length: 1002 }, async (_, i) => {
    const id = newId(t0 + i);
    await createCampaign(client, keys, {
      id, account: 'paged', name: `c${i}`, listId: list.id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 'Hi',
      tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: t0 + i, sendAt: null, body: '{}', links: [],
    });
    return id;
  }));
  const all = await sluice(['campaign', 'list', '--account', 'paged', '--json', '--config', cfg]);
  assert.is(all.code, 0, all.err);
  assert.equal(all.out.trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id), [...ids].reverse());
  const newest = await sluice(['campaign', 'list', '--account', 'paged', '--limit', '3', '--config', cfg]);
  assert.equal(newest.out.trim().split('\n').map((l) => l.slice(0, 16)), ids.slice(-3).reverse());
});

test('pause, resume and cancel move the campaign and its queue; a move its state refuses exits 1', async () => {
  const id = await sending();
  const paused = await sluice(['campaign', 'pause', id, '--config', cfg]);
  assert.is(paused.code, 0, paused.err);
  assert.is(paused.out.trim(), `campaign ${id}: sending → paused`);
  assert.is(await client.zscore(keys.ready('dest.test'), `@${id}`), null, 'no pointer: nothing more is claimed');
  const again = await sluice(['campaign', 'pause', id, '--config', cfg]);
  assert.is(again.code, 1);
  assert.match(again.err, `campaign ${id} is paused: it cannot pause`);
  assert.is((await sluice(['campaign', 'resume', id, '--config', cfg])).code, 0);
  assert.ok(await client.zscore(keys.ready('dest.test'), `@${id}`), 'the pointer is back');
  const cancelled = await sluice(['campaign', 'cancel', id, '--config', cfg]);
  assert.is(cancelled.code, 0, cancelled.err);
  const c = await getCampaign(client, keys, 'acme', id);
  assert.is(c?.state, 'cancelled');
  assert.is(await client.llen(keys.campaignQueue('dest.test', id)), 0, 'what waited is dropped');
  assert.is(await client.hget(keys.msgStats(id), 'cancelled'), '3');
});

test('unknown campaign exits 1; bad usage exits 2', async () => {
  const unknown = await sluice(['campaign', 'status', '0000000000000000', '--config', cfg]);
  assert.is(unknown.code, 1);
  assert.match(unknown.err, 'no campaign 0000000000000000');
  assert.is((await sluice(['campaign', 'status', 'not-an-id', '--config', cfg])).code, 2);
  assert.is((await sluice(['campaign', 'explode', '--config', cfg])).code, 2);
  assert.is((await sluice(['campaign', 'list', '--config', cfg])).code, 2, 'list needs --account');
  // A reader: an account with no campaigns (or a mistyped one) is no error, but is said on stderr.
  const none = await sluice(['campaign', 'list', '--account', 'acme-typo', '--config', cfg]);
  assert.equal([none.code, none.out], [0, '']);
  assert.match(none.err, "account 'acme-typo' has no campaigns (and no account of that id is in the configuration)");
  const help = await sluice(['campaign', '--help']);
  assert.is(help.code, 0);
  assert.match(help.out, 'Usage: sluice campaign');
});

test.run();
