import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { listDomains, scheduleDestinations } from './enqueue.js';
import { byDomain, memberTokens, type QueueEntry } from './entry.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/pushCampaign-3.lua */
    pushCampaign(queue: string, pushed: string, ready: string, campaignId: string, chunk: number, dueAt: number, addPointer: '0' | '1', ...nos: number[]): Result<number, Context>;
    /** src/queue/lua/campaignControl-3.lua */
    campaignControl(ready: string, queue: string, pushed: string, op: CampaignQueueOp, campaignId: string, now: number): Result<number, Context>;
    /** src/queue/lua/campaignHold-3.lua */
    campaignHold(leases: string, ready: string, queue: string, campaignId: string, pointerAt: number | '', holdUntil: number, ...members: string[]): Result<number, Context>;
  }
}

/**
 * A campaign's recipients in the queue (DESIGN §2 "render late", §3):
 *
 *   {d:<dest>}:cq:<campaignId>  LIST  contact numbers waiting at the destination, in list order
 *   {d:<dest>}:ready            ZSET  one pointer "@<campaignId>" stands for the whole LIST
 *   {d:<dest>}:cqpos            HASH  campaignId → last enqueue chunk pushed (makes re-pushing a no-op)
 *
 * A waiting recipient costs a few bytes of a LIST node instead of a sorted-set member (~140 B):
 * the claim script turns numbers into ordinary lease entries "<campaignId>:<no>:0" only when a
 * connection is ready to send them. From there on (lease, retry, reap, ack, bounce) a campaign
 * recipient is an entry like any other.
 */
export type CampaignQueueOp = 'pause' | 'resume' | 'cancel' | 'seal';

/**
 * Queues one chunk of recipients, grouped by destination. `chunk` must grow with each call for the
 * campaign; a chunk pushed again (after a crash, before the caller recorded its cursor) is skipped
 * per destination and counts what it queued the first time. Returns how many recipients the chunk
 * queued in all.
 *
 * The destinations join the campaign's destination set before anything is pushed there, so a pause
 * or cancel finds every queue, even one pushed by a process that died before it went on. `redo`
 * says the chunk may have been pushed in part before (the caller planned it and never recorded it):
 * the contacts read again may have changed since (unsubscribed, moved), so every destination the
 * campaign has is asked for what this chunk queued there, not only the ones the chunk reads now, or
 * copies queued the first time would go uncounted.
 */
export async function pushCampaignChunk(
  redis: RedisClient,
  keys: Keys,
  shards: number,
  o: { campaignId: string; chunk: number; dueAt: number; sending: boolean; byDomain: ReadonlyMap<string, readonly number[]>; redo?: boolean },
): Promise<number> {
  const push = (domain: string, nos: readonly number[]) =>
    redis.pushCampaign(keys.campaignQueue(domain, o.campaignId), keys.campaignPushed(domain), keys.ready(domain), o.campaignId, o.chunk, o.dueAt, o.sending ? '1' : '0', ...nos);
  // Listed before anything is queued there (enqueue.ts phase 0): a crash before the schedule is
  // written leaves work that repairSchedule() finds.
  if (o.byDomain.size > 0) await Promise.all([redis.sadd(keys.campaignDomains(o.campaignId), ...o.byDomain.keys()), listDomains(redis, keys, shards, o.byDomain.keys())]);
  const domains = [...o.byDomain.keys()];
  const counts = await Promise.all([...o.byDomain].map(([domain, nos]) => push(domain, nos)));
  if (o.redo) {
    let cursor = '0';
    do {
      const [next, found] = await redis.sscan(keys.campaignDomains(o.campaignId), cursor, 'COUNT', 200);
      cursor = next;
      const others = found.filter((d) => !o.byDomain.has(d));
      domains.push(...others);
      counts.push(...(await Promise.all(others.map((d) => push(d, [])))));
    } while (cursor !== '0');
  }
  // Every destination this chunk queued at, those the redo found pushed by a process that died
  // before it scheduled them too (else nothing would look at them until other mail came).
  const queuedAt = domains.filter((_, i) => (counts[i] ?? 0) > 0);
  if (queuedAt.length > 0 && o.sending) await scheduleDestinations(redis, keys, shards, new Map(queuedAt.map((d) => [d, o.dueAt])));
  // Not sending (scheduled or paused): no schedule yet, but listed again after the push, for a
  // forgetDestination that ran between the listing above and the push (enqueue.ts phase 2 does so).
  else if (queuedAt.length > 0) await listDomains(redis, keys, shards, queuedAt);
  return counts.reduce((a, b) => a + b, 0);
}

/**
 * Pauses, resumes, cancels or seals (its list is queued whole) a campaign at every destination it has recipients queued at, walking
 * its destination set with SSCAN (bounded work per call). Returns the recipients waiting (cancel:
 * dropped) over all destinations.
 */
export async function controlCampaignQueue(redis: RedisClient, keys: Keys, shards: number, campaignId: string, op: CampaignQueueOp, now: number): Promise<number> {
  let cursor = '0';
  let total = 0;
  do {
    const [next, domains] = await redis.sscan(keys.campaignDomains(campaignId), cursor, 'COUNT', 200);
    cursor = next;
    total += await controlAt(redis, keys, shards, campaignId, op, domains, now);
  } while (cursor !== '0');
  return total;
}

/** controlCampaignQueue at the given destinations only. */
async function controlAt(redis: RedisClient, keys: Keys, shards: number, campaignId: string, op: CampaignQueueOp, domains: readonly string[], now: number): Promise<number> {
  const waiting = await Promise.all(domains.map((d) => redis.campaignControl(keys.ready(d), keys.campaignQueue(d, campaignId), keys.campaignPushed(d), op, campaignId, now)));
  if (op === 'resume') {
    const due = domains.filter((_, i) => (waiting[i] ?? 0) > 0);
    if (due.length > 0) await scheduleDestinations(redis, keys, shards, new Map(due.map((d) => [d, now])));
  }
  return waiting.reduce((a, b) => a + b, 0);
}

/**
 * Gives claimed entries of one campaign back without an attempt: first attempts to the head of the
 * campaign's queue, retries to ready at `holdUntil`. `pointerAt` null (paused): the pointer goes and
 * resume brings it back; a time (throttled): the pointer waits until then.
 *
 * A hold for a pause can land after the resume: delivery decided on the state it read a moment
 * earlier (and keeps for up to 500 ms, store/message-source.ts), and the resume's pointers went
 * before this hold took them away again. The state is read once more after the hold, and a campaign
 * sending again gets its pointers back here; else its recipients would wait behind no pointer. A
 * campaign cancelled meanwhile has what the hold gave back dropped and counted, as the cancel does.
 */
export async function holdCampaignEntries(
  redis: RedisClient,
  keys: Keys,
  shards: number,
  campaignId: string,
  entries: readonly QueueEntry[],
  o: { pointerAt: number | null; holdUntil: number; now: number },
): Promise<number> {
  const groups = [...byDomain(entries)];
  const moved = await Promise.all(
    groups.map(([d, list]) => redis.campaignHold(keys.leases(d), keys.ready(d), keys.campaignQueue(d, campaignId), campaignId, o.pointerAt ?? '', o.holdUntil, ...memberTokens(list))),
  );
  const state = await redis.hget(keys.msgMeta(campaignId), 'state');
  if (o.pointerAt === null && state === 'sending') {
    await controlAt(redis, keys, shards, campaignId, 'resume', groups.map(([d]) => d), o.now);
  }
  // Likewise a cancel that ran while these were claimed: it dropped the queue before they came back
  // to it, so they would wait there for good (behind no pointer), pending and never counted.
  if (state === 'cancelled') await dropCancelledQueue(redis, keys, shards, campaignId, o.now, groups.map(([d]) => d));
  return moved.reduce((a, b) => a + b, 0);
}

/**
 * The lifecycle moves that touch the queue. The state (in the campaign's meta, see store/campaigns.ts)
 * changes first, atomically and only from the states allowed; the queue follows. A claim racing the
 * change is caught by delivery, which reads the state of every campaign entry it claimed.
 */
export type LifecycleResult = { ok: true; from: string } | { ok: false; state: string | null };

async function transition(redis: RedisClient, keys: Keys, id: string, to: string, field: string, now: number, from: readonly string[]): Promise<LifecycleResult> {
  const before = await redis.campaignTransition(keys.msgMeta(id), to as never, field, now, ...(from as never[]));
  if (before === '') return { ok: false, state: null };
  return from.includes(before) ? { ok: true, from: before } : { ok: false, state: before };
}

/** sending → paused: no new claims at once; copies already being sent finish. */
export async function pauseCampaign(redis: RedisClient, keys: Keys, shards: number, id: string, now: number): Promise<LifecycleResult> {
  const r = await transition(redis, keys, id, 'paused', 'pausedAt', now, ['sending']);
  if (r.ok) await controlCampaignQueue(redis, keys, shards, id, 'pause', now);
  return r;
}

/** paused → sending: the waiting recipients are due again now. */
export async function resumeCampaign(redis: RedisClient, keys: Keys, shards: number, id: string, now: number): Promise<LifecycleResult> {
  const r = await transition(redis, keys, id, 'sending', 'resumedAt', now, ['paused']);
  if (r.ok) {
    // The reputation guard judges a resumed campaign on what it sends from now on, not again on the
    // outcomes that paused it.
    const [delivered, hardbounces, complaints] = await redis.hmget(keys.msgStats(id), 'delivered', 'hardbounces', 'complaints');
    const base = { delivered: Number(delivered ?? 0), hardbounces: Number(hardbounces ?? 0), complaints: Number(complaints ?? 0) };
    await redis.multi().hset(keys.msgMeta(id), 'guardBase', JSON.stringify(base)).hdel(keys.msgMeta(id), 'guardPause').exec();
    await controlCampaignQueue(redis, keys, shards, id, 'resume', now);
    // The enqueuer may have stopped at a pause before queueing the whole list.
    await redis.zadd(keys.campaignsDue(), now, id);
  }
  return r;
}

/**
 * draft | scheduled | sending | paused → cancelled: what still waits in the queue is dropped and
 * counted as cancelled; copies in flight finish; retries met later are dropped by delivery.
 */
export async function cancelCampaign(redis: RedisClient, keys: Keys, shards: number, id: string, now: number): Promise<LifecycleResult & { dropped?: number }> {
  const r = await transition(redis, keys, id, 'cancelled', 'cancelledAt', now, ['draft', 'scheduled', 'sending', 'paused']);
  if (!r.ok) return r;
  const dropped = await dropCancelledQueue(redis, keys, shards, id, now);
  await redis.zrem(keys.campaignsDue(), id);
  return { ...r, dropped };
}

/**
 * Drops what a cancelled campaign still has waiting in the queue and counts it: cancelled, and no
 * longer pending. Cancel does it, and so does the enqueuer for a chunk it pushed while the cancel
 * ran (the cancel did not see that chunk's queues), and a hold that gave claimed copies back after it
 * (at `domains` only). Returns the number dropped.
 */
export async function dropCancelledQueue(redis: RedisClient, keys: Keys, shards: number, id: string, now: number, domains?: readonly string[]): Promise<number> {
  const dropped = domains ? await controlAt(redis, keys, shards, id, 'cancel', domains, now) : await controlCampaignQueue(redis, keys, shards, id, 'cancel', now);
  if (dropped > 0) {
    await redis.multi().hincrby(keys.msgMeta(id), 'pending', -dropped).hincrby(keys.msgStats(id), 'cancelled', dropped).exec();
  }
  return dropped;
}

/** draft → scheduled (for `sendAt`, now or later): the enqueuer starts it when it is due. */
export async function scheduleCampaign(redis: RedisClient, keys: Keys, id: string, sendAt: number, now: number): Promise<LifecycleResult> {
  // On the schedule before the state changes (the schedule is in another slot: no one script does
  // both): a process killed between the two left a campaign scheduled that no enqueuer ever saw.
  // Killed before the change, the entry names a draft, which the enqueuer drops. NX: a campaign
  // already scheduled or sending keeps its place.
  const added = await redis.zadd(keys.campaignsDue(), 'NX', sendAt, id);
  const r = await transition(redis, keys, id, 'scheduled', 'scheduledAt', now, ['draft']);
  if (r.ok) {
    // Once more: an enqueuer that looked before the change saw a draft and dropped the entry.
    await redis.zadd(keys.campaignsDue(), 'NX', sendAt, id);
    await redis.hset(keys.msgMeta(id), 'sendAt', sendAt);
  } else if (added === 1 && r.state !== 'scheduled' && r.state !== 'sending' && r.state !== 'paused') {
    await redis.zrem(keys.campaignsDue(), id);
  }
  return r;
}

/** scheduled → sending, when the send time has come (the enqueuer). */
export async function startCampaign(redis: RedisClient, keys: Keys, id: string, now: number): Promise<LifecycleResult> {
  return transition(redis, keys, id, 'sending', 'startedAt', now, ['scheduled']);
}
