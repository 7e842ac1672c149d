import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { distantClient, redisSuite } from '../helpers/redis.js';
import { CampaignEnqueuer } from '../../src/campaigns/enqueuer.js';
import { campaignStats, createCampaign, getCampaign, listCampaigns, recordEnqueuePlan } from '../../src/store/campaigns.js';
import { cancelCampaign, holdCampaignEntries, pauseCampaign, pushCampaignChunk, scheduleCampaign, startCampaign } from '../../src/queue/campaign.js';
import { claim } from '../../src/queue/claim.js';
import { shardOf, type Keys } from '../../src/redis/keys.js';
import type { RedisClient } from '../../src/redis/client.js';
import { createList, deleteList, setContactStatus, upsertContacts } from '../../src/store/contacts.js';
import { newId } from '../../src/core/ids.js';
import { createLogger } from '../../src/observability/logger.js';
import { holdLock, releaseLock } from '../../src/store/locks.js';

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

/**
 * `sluice campaign <op> ID` run to its end by another process, synchronously: called from the
 * enqueuer's clock, it lands exactly between the enqueuer reading the campaign's state and pushing
 * the chunk it read (the window an operator's pause, resume or cancel can hit at any time).
 */
function operatorMove(prefix: string, op: 'resume' | 'cancel', id: string): void {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-enq-'));
  try {
    const cfg = join(dir, 'sluice.yaml');
    writeFileSync(cfg, YAML.stringify({ redis: { url: env.redis.url, prefix } }));
    const child = fileURLToPath(new URL('../helpers/sluice-child.ts', import.meta.url));
    const r = spawnSync(process.execPath, ['--import', 'tsx', child, 'campaign', op, id, '--config', cfg], { cwd: fileURLToPath(new URL('../..', import.meta.url)), env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '' }, encoding: 'utf8', timeout: 60_000 });
    assert.is(r.status, 0, `sluice campaign ${op}: ${r.stdout}${r.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function sendingCampaign(keys: Keys, n: number): Promise<string> {
  const list = await createList(env.client, keys, 'acme', 'news', T);
  await upsertContacts(env.client, keys, 'acme', list.id, rows(1, n), T);
  const id = newId(T);
  await createCampaign(env.client, keys, {
    id, account: 'acme', name: 'moves', listId: list.id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 's',
    tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: T, sendAt: T, body: '{}', links: [],
  });
  assert.ok((await startCampaign(env.client, keys, id, T)).ok);
  return id;
}

/** An enqueuer whose clock, read first right before a chunk is pushed, runs `move` once. */
function enqueuerWith(keys: Keys, move: () => void): CampaignEnqueuer {
  let armed = true;
  const now = () => {
    if (armed) {
      armed = false;
      move();
    }
    return T;
  };
  return new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), chunkSize: 100, now });
}

test('a cancel that lands while a chunk is pushed: what the enqueuer drops after it is counted as cancelled', async () => {
  const { prefix, keys } = env.redis.fresh();
  const id = await sendingCampaign(keys, 6);
  assert.is(await enqueuerWith(keys, () => operatorMove(prefix, 'cancel', id)).advance(id), true);
  const c = await getCampaign(env.client, keys, null, id);
  assert.is(c?.state, 'cancelled');
  for (const d of ['dest0.test', 'dest1.test', 'dest2.test']) assert.is(await env.client.llen(keys.campaignQueue(d, id)), 0, `nothing waits at ${d}`);
  const s = await campaignStats(env.client, keys, c!);
  assert.equal({ queued: s.queued, cancelled: s.cancelled, pending: s.pending }, { queued: 6, cancelled: 6, pending: 0 });
});

test('a resume that lands while a paused campaign\'s chunk is pushed: the chunk\'s recipients get their pointers', async () => {
  const { prefix, keys } = env.redis.fresh();
  const id = await sendingCampaign(keys, 6);
  assert.ok((await pauseCampaign(env.client, keys, 2, id, T)).ok);
  assert.is(await enqueuerWith(keys, () => operatorMove(prefix, 'resume', id)).advance(id), true);
  assert.is((await getCampaign(env.client, keys, null, id))?.state, 'sending');
  for (const d of ['dest0.test', 'dest1.test', 'dest2.test']) {
    assert.is(await env.client.llen(keys.campaignQueue(d, id)), 2, `two recipients wait at ${d}`);
    assert.ok((await env.client.zscore(keys.ready(d), `@${id}`)) !== null, `the pointer at ${d} lets them be claimed`);
  }
});

test('a turn longer than its lock keeps the lock: a second process cannot queue the campaign meanwhile, and every contact is counted once', async () => {
  const { keys } = env.redis.fresh();
  const list = await createList(env.client, keys, 'acme', 'long', T);
  const N = 300;
  await upsertContacts(env.client, keys, 'acme', list.id, rows(1, N), T);
  const id = newId(T);
  await createCampaign(env.client, keys, {
    id, account: 'acme', name: 'long turn', listId: list.id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 's',
    tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: T, sendAt: T, body: '{}', links: [],
  });
  // One contact a chunk, the whole list in one turn, every round trip 5 ms long (a Redis at a
  // distance): 300 chunks of at least one round trip each outlast the 1 s lock on any machine, so
  // the turn must renew the lock to keep it. The lock is renewed every third of it: 1 s leaves a
  // loaded machine (the suite beside other work) room for a late renewal, which 300 ms did not.
  const LOCK_MS = 1_000;
  const DELAY_MS = 5;
  const far = await distantClient(env.redis, DELAY_MS);
  const opts = { keys, shards: 2, logger: createLogger('silent'), chunkSize: 1, chunksPerTurn: 100_000, lockMs: LOCK_MS, now: () => T };
  const first = new CampaignEnqueuer({ ...opts, redis: far.client });
  const second = new CampaignEnqueuer({ ...opts, redis: env.client });
  let finished = false;
  const started = performance.now();
  const turn = first.advance(id).finally(() => (finished = true));
  try {
    while (((await getCampaign(env.client, keys, null, id))?.queued ?? 0) === 0) await new Promise((r) => setTimeout(r, 5));
    let tries = 0;
    while (!finished) {
      // Refused while the first turn holds the lock (true only once that turn is over and the whole
      // list is queued: the lock is free then); a second turn beside the first pushes contacts twice.
      await second.advance(id);
      tries++;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.is(await turn, true, 'the first turn queued the whole list');
    // Not a timing target: the relay makes this hold by construction; it says the test tested something.
    assert.ok(performance.now() - started > LOCK_MS, 'the turn outlasted its lock');
    assert.ok(tries > 0);
    const c = await getCampaign(env.client, keys, null, id);
    assert.is(c?.queued, N);
    assert.is(c?.skipped, 0, 'no contact pushed twice (a second push counts its contacts as skipped)');
  } finally {
    // A failed assertion above leaves the first turn running: it ends before its client closes.
    await turn.catch(() => undefined);
    await far.close();
  }
});

test('a process killed while pushing a chunk, and a contact unsubscribed before the restart: the copies queued the first time are still counted', async () => {
  const { keys } = env.redis.fresh();
  const id = await sendingCampaign(keys, 6); // c1..c6 at dest1, dest2, dest0, dest1, dest2, dest0
  // What the killed process did of chunk 1: said its plan, pushed dest1's two contacts, died.
  await recordEnqueuePlan(env.client, keys, id, 6);
  assert.is(await pushCampaignChunk(env.client, keys, 2, { campaignId: id, chunk: 1, dueAt: T, sending: true, byDomain: new Map([['dest1.test', [1, 4]]]) }), 2);
  // …and died before it scheduled dest1 (its push and its schedule are separate calls).
  await env.client.zrem(keys.schedule(shardOf('dest1.test', 2)), 'dest1.test');
  await env.client.srem(keys.destinations(shardOf('dest1.test', 2)), 'dest1.test');
  // Before the restart, both dest1 contacts unsubscribe: the chunk read again has no dest1 contact.
  const list = (await getCampaign(env.client, keys, null, id))!.listId;
  for (const no of [1, 4]) assert.ok(await setContactStatus(env.client, keys, list, no, 'unsubscribed', T + 1));
  const enqueuer = new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), chunkSize: 100, now: () => T + 2 });
  assert.is(await enqueuer.advance(id), true);
  const waiting = (await Promise.all(['dest0.test', 'dest1.test', 'dest2.test'].map((d) => env.client.llen(keys.campaignQueue(d, id))))).reduce((a, b) => a + b, 0);
  assert.is(waiting, 6, 'dest1 keeps the two copies pushed before the kill, the others get theirs');
  const c = await getCampaign(env.client, keys, null, id);
  assert.is(c?.queued, waiting, 'every queued copy is counted');
  assert.is(c?.pending, waiting);
  assert.ok((await env.client.zscore(keys.schedule(shardOf('dest1.test', 2)), 'dest1.test')) !== null, 'dest1 is scheduled, so its copies are sent');
});

test("a campaign whose turn fails does not hold back the campaigns due after it", async () => {
  const { keys } = env.redis.fresh();
  const make = async (name: string, sendAt: number): Promise<{ id: string; listId: string }> => {
    const list = await createList(env.client, keys, 'acme', name, T);
    await upsertContacts(env.client, keys, 'acme', list.id, rows(1, 3), T);
    const id = newId(T);
    await createCampaign(env.client, keys, {
      id, account: 'acme', name, listId: list.id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 's',
      tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: T, sendAt, body: '{}', links: [],
    });
    return { id, listId: list.id };
  };
  // Due first, as many as a pass takes, and their lists unreadable (a key of the wrong type: every read of it fails).
  const broken: string[] = [];
  for (let i = 0; i < 16; i++) {
    const b = await make(`broken${i}`, T - 1000 + i);
    await env.client.del(keys.listContacts(b.listId));
    await env.client.set(keys.listContacts(b.listId), 'not a hash');
    broken.push(b.id);
  }
  const fine = await make('fine', T - 1);
  const enqueuer = new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), now: () => T });
  await enqueuer.tick();
  await enqueuer.tick();
  const c = await getCampaign(env.client, keys, null, fine.id);
  assert.is(c?.queued, 3, 'the campaign due after the failing ones is queued in the next pass');
  assert.ok(c?.enqueued);
  for (const id of broken) assert.ok((await env.client.zscore(keys.campaignsDue(), id)) !== null, 'the failing ones stay due, to be tried again');
});

test("a pause's hold that lands after a cancel: the copies it gives back are dropped and counted, not left waiting", async () => {
  const { keys } = env.redis.fresh();
  const id = await sendingCampaign(keys, 6);
  const enqueuer = new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), now: () => T });
  assert.is(await enqueuer.advance(id), true);
  // Delivery claims dest0.test's two copies, then reads the campaign as paused (its state is kept
  // up to 500 ms) and holds them; the cancel runs in between.
  const claimed = await claim(env.client, keys, { domain: 'dest0.test', max: 10, leaseMs: 60_000, now: T });
  assert.is(claimed.entries.length, 2);
  assert.ok((await pauseCampaign(env.client, keys, 2, id, T)).ok);
  const cancelled = await cancelCampaign(env.client, keys, 2, id, T);
  assert.equal([cancelled.ok, cancelled.dropped], [true, 4], 'the cancel drops what waits at the other two destinations');
  assert.is(await holdCampaignEntries(env.client, keys, 2, id, claimed.entries, { pointerAt: null, holdUntil: T + 60_000, now: T }), 2);
  assert.is(await env.client.llen(keys.campaignQueue('dest0.test', id)), 0, 'nothing left waiting behind no pointer');
  const c = await getCampaign(env.client, keys, null, id);
  const s = await campaignStats(env.client, keys, c!);
  assert.equal({ state: c?.state, cancelled: s.cancelled, pending: s.pending }, { state: 'cancelled', cancelled: 6, pending: 0 });
});

/**
 * env.client as seen by a process killed right after `command` landed: that call completes, every
 * call after it fails and writes nothing (the crash point of a write made in several steps).
 */
function killedAfter(command: string): RedisClient {
  let dead = false;
  return new Proxy(env.client, {
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        if (dead) return Promise.reject(new Error('process killed'));
        const r: unknown = (v as (...a: unknown[]) => unknown).apply(target, args);
        if (prop === command) dead = true;
        return r;
      };
    },
  });
}

/** A draft of a list of three contacts. */
async function draftOf(keys: Keys): Promise<string> {
  const list = await createList(env.client, keys, 'acme', 'news', T);
  await upsertContacts(env.client, keys, 'acme', list.id, rows(1, 3), T);
  const id = newId(T);
  await createCampaign(env.client, keys, {
    id, account: 'acme', name: 'draft', listId: list.id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 's',
    tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: T, sendAt: null, body: '{}', links: [],
  });
  return id;
}

test('a process killed right after a campaign is written leaves it listed and due: the enqueuer queues it', async () => {
  const { keys } = env.redis.fresh();
  const list = await createList(env.client, keys, 'acme', 'news', T);
  await upsertContacts(env.client, keys, 'acme', list.id, rows(1, 3), T);
  const id = newId(T);
  const made = createCampaign(killedAfter('createCampaign'), keys, {
    id, account: 'acme', name: 'crash', listId: list.id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 's',
    tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: T, sendAt: T, body: '{}', links: [],
  });
  await made.catch(() => undefined);
  assert.is((await getCampaign(env.client, keys, null, id))?.state, 'scheduled', 'the campaign was written');
  assert.equal((await listCampaigns(env.client, keys, 'acme')).campaigns.map((c) => c.id), [id], "in the account's list");
  await new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), now: () => T }).tick();
  const c = await getCampaign(env.client, keys, null, id);
  assert.equal([c?.state, c?.queued], ['sending', 3], 'the enqueuer found it and queued its list');
});

test('a process killed right after a draft became scheduled leaves it due: the enqueuer queues it', async () => {
  const { keys } = env.redis.fresh();
  const id = await draftOf(keys);
  await scheduleCampaign(killedAfter('campaignTransition'), keys, id, T, T).catch(() => undefined);
  assert.is((await getCampaign(env.client, keys, null, id))?.state, 'scheduled');
  await new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), now: () => T }).tick();
  const c = await getCampaign(env.client, keys, null, id);
  assert.equal([c?.state, c?.queued], ['sending', 3], 'the enqueuer found it and queued its list');
});

test('a draft put on the schedule by a process killed before it changed state is dropped from it; scheduled later, it is sent', async () => {
  const { keys } = env.redis.fresh();
  const id = await draftOf(keys);
  await scheduleCampaign(killedAfter('zadd'), keys, id, T, T).catch(() => undefined);
  const enqueuer = new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), now: () => T });
  await enqueuer.tick();
  assert.equal([(await getCampaign(env.client, keys, null, id))?.state, await env.client.zscore(keys.campaignsDue(), id)], ['draft', null], 'a draft is not sent');
  assert.ok((await scheduleCampaign(env.client, keys, id, T, T)).ok);
  await enqueuer.tick();
  assert.is((await getCampaign(env.client, keys, null, id))?.queued, 3);
});

test('a small campaign due after 16 big ones gets its turn within two passes, while theirs are still queueing', async () => {
  const { keys } = env.redis.fresh();
  const make = async (name: string, contacts: number, sendAt: number): Promise<string> => {
    const list = await createList(env.client, keys, 'acme', name, T);
    await upsertContacts(env.client, keys, 'acme', list.id, rows(1, contacts), T);
    const id = newId(T);
    await createCampaign(env.client, keys, {
      id, account: 'acme', name, listId: list.id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 's',
      tracking: { opens: false, clicks: false }, tags: [], throttlePerHour: null, createdAt: T, sendAt, body: '{}', links: [],
    });
    return id;
  };
  // One contact a chunk, one chunk a turn: each big list takes 10 turns; a pass takes 16 campaigns.
  const big: string[] = [];
  for (let i = 0; i < 16; i++) big.push(await make(`big${i}`, 10, T - 1000 + i));
  const small = await make('urgent', 1, T - 1);
  const enqueuer = new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), chunkSize: 1, chunksPerTurn: 1, now: () => T });
  let passes = 0;
  while (!(await getCampaign(env.client, keys, null, small))?.enqueued && passes < 20) {
    await enqueuer.tick();
    passes++;
  }
  assert.is((await getCampaign(env.client, keys, null, small))?.queued, 1, 'the small campaign is queued');
  assert.ok(passes <= 2, `queued after ${passes} passes (17 due, 16 a pass)`);
  const bigs = await Promise.all(big.map((id) => getCampaign(env.client, keys, null, id)));
  assert.ok(bigs.every((c) => c && !c.enqueued && c.queued > 0), 'the big ones are still queueing, each has had a turn');
});

test('a campaign another process is queueing is no work left for this one: its pass does not ask to come again at once', async () => {
  const { keys } = env.redis.fresh();
  const id = await draftOf(keys);
  assert.ok((await scheduleCampaign(env.client, keys, id, T, T)).ok);
  const enqueuer = new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), chunkSize: 1, chunksPerTurn: 1, now: () => T });
  // Another process's turn (its lock): counted as left to do, the ticker came again at once, round after round.
  assert.ok(await holdLock(env.client, keys.campaignLock(id), 'another process', 60_000));
  assert.is(await enqueuer.tick(), 0, 'nothing this process can do now');
  assert.is((await getCampaign(env.client, keys, null, id))?.queued, 0);
  await releaseLock(env.client, keys.campaignLock(id), 'another process');
  assert.is(await enqueuer.tick(), 1, 'its own turn left contacts to queue: it comes again at once');
  assert.is((await getCampaign(env.client, keys, null, id))?.queued, 1);
});

test('a campaign whose list was deleted before it was queued whole says so (listGoneAt), not only that it completed', async () => {
  const { keys } = env.redis.fresh();
  const id = await draftOf(keys);
  assert.ok((await scheduleCampaign(env.client, keys, id, T, T)).ok);
  // A delete that got past the route's check (it raced the campaign's creation).
  assert.ok(await deleteList(env.client, keys, 'acme', (await getCampaign(env.client, keys, null, id))!.listId));
  await new CampaignEnqueuer({ redis: env.client, keys, shards: 2, logger: createLogger('silent'), now: () => T }).tick();
  const c = await getCampaign(env.client, keys, null, id);
  assert.equal({ state: c?.state, queued: c?.queued, listGoneAt: c?.listGoneAt }, { state: 'completed', queued: 0, listGoneAt: T });
});

test.run();
