import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { scheduleDestinations } from './enqueue.js';
import { entryMember, type QueueEntry } from './entry.js';

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
export type CampaignQueueOp = 'pause' | 'resume' | 'cancel';

/**
 * Queues one chunk of recipients, grouped by destination. `chunk` must grow with each call for the
 * campaign; a chunk pushed again (after a crash, before the caller recorded its cursor) is skipped
 * per destination. Returns how many recipients the chunk queued in all.
 */
export async function pushCampaignChunk(
  redis: RedisClient,
  keys: Keys,
  shards: number,
  o: { campaignId: string; chunk: number; dueAt: number; sending: boolean; byDomain: ReadonlyMap<string, readonly number[]> },
): Promise<number> {
  const counts = await Promise.all(
    [...o.byDomain].map(([domain, nos]) =>
      redis.pushCampaign(keys.campaignQueue(domain, o.campaignId), keys.campaignPushed(domain), keys.ready(domain), o.campaignId, o.chunk, o.dueAt, o.sending ? '1' : '0', ...nos),
    ),
  );
  if (o.byDomain.size > 0) {
    await redis.sadd(keys.campaignDomains(o.campaignId), ...o.byDomain.keys());
    if (o.sending) await scheduleDestinations(redis, keys, shards, new Map([...o.byDomain.keys()].map((d) => [d, o.dueAt])));
  }
  return counts.reduce((a, b) => a + b, 0);
}

/**
 * Pauses, resumes or cancels a campaign at every destination it has recipients queued at, walking
 * its destination set with SSCAN (bounded work per call). Returns the recipients waiting (cancel:
 * dropped) over all destinations.
 */
export async function controlCampaignQueue(redis: RedisClient, keys: Keys, shards: number, campaignId: string, op: CampaignQueueOp, now: number): Promise<number> {
  let cursor = '0';
  let total = 0;
  do {
    const [next, domains] = await redis.sscan(keys.campaignDomains(campaignId), cursor, 'COUNT', 200);
    cursor = next;
    const waiting = await Promise.all(domains.map((d) => redis.campaignControl(keys.ready(d), keys.campaignQueue(d, campaignId), keys.campaignPushed(d), op, campaignId, now)));
    total += waiting.reduce((a, b) => a + b, 0);
    if (op === 'resume') {
      const due = domains.filter((_, i) => (waiting[i] ?? 0) > 0);
      if (due.length > 0) await scheduleDestinations(redis, keys, shards, new Map(due.map((d) => [d, now])));
    }
  } while (cursor !== '0');
  return total;
}

/**
 * Gives claimed entries of one campaign back without an attempt: first attempts to the head of the
 * campaign's queue, retries to ready at `holdUntil`. `pointerAt` null (paused): the pointer goes and
 * resume brings it back; a time (throttled): the pointer waits until then.
 */
export async function holdCampaignEntries(
  redis: RedisClient,
  keys: Keys,
  campaignId: string,
  entries: readonly QueueEntry[],
  o: { pointerAt: number | null; holdUntil: number },
): Promise<number> {
  const byDomain = new Map<string, string[]>();
  for (const e of entries) {
    const list = byDomain.get(e.domain);
    if (list) list.push(entryMember(e));
    else byDomain.set(e.domain, [entryMember(e)]);
  }
  const moved = await Promise.all(
    [...byDomain].map(([d, members]) => redis.campaignHold(keys.leases(d), keys.ready(d), keys.campaignQueue(d, campaignId), campaignId, o.pointerAt ?? '', o.holdUntil, ...members)),
  );
  return moved.reduce((a, b) => a + b, 0);
}

/** Recipients of a campaign waiting (not yet claimed) at one destination. */
export async function campaignWaiting(redis: RedisClient, keys: Keys, campaignId: string, domain: string): Promise<number> {
  return redis.llen(keys.campaignQueue(domain, campaignId));
}
