import type { RedisClient } from '../redis/client.js';
import { shardOf, type Keys } from '../redis/keys.js';
import { entryMember } from './entry.js';

export interface EnqueueItem {
  msgId: string;
  idx: number;
  domain: string;
  dueAt: number;
}

/**
 * Members per ZADD: big enough that a 10,000-recipient campaign is a handful of commands, small
 * enough that one command never blocks the server for more than a few milliseconds.
 */
const ZADD_CHUNK = 1000;

/**
 * Queues recipients (attempt 0). Three phases, each one auto-pipelined round trip however many
 * destinations the items span (ioredis groups the commands per node, also on a Cluster):
 *
 *   0. listed       SADD <destinations(shard)> domain…
 *   1. ready sets   ZADD NX <ready(domain)> dueAt member…    (NX: enqueuing twice never moves an entry)
 *   2. schedule     SADD <destinations(shard)> domain…  +  ZADD LT <schedule(shard)> minDue domain…
 *
 * Each phase starts only after the one before is written: ready and schedule keys live in different
 * slots, so they cannot be written atomically, and in this order a crash between 1 and 2 leaves at
 * worst a listed destination with work but a late (or no) schedule entry, which repairSchedule()
 * (walking the destination sets) fixes; a crash between 0 and 1 a listed destination with nothing,
 * which the reaper forgets. A destination with nothing queued is in neither the sets nor the schedule
 * (forgetDestination), so without phase 0 nothing would ever look at such work. Phase 2 lists it
 * again, for a forgetDestination that ran between 0 and 1. ZADD LT only ever moves a destination
 * earlier, so a racing enqueue can only make a dispatcher look sooner; see reschedule() for why a
 * racing reschedule cannot push the new work back.
 */
export async function enqueueRecipients(redis: RedisClient, keys: Keys, shards: number, items: readonly EnqueueItem[]): Promise<void> {
  if (items.length === 0) return;
  const plan = planEnqueue(items, shards);
  await listDestinations(redis, keys, plan.schedule);
  const writes: Promise<unknown>[] = [];
  for (const [domain, args] of plan.ready) {
    const key = keys.ready(domain);
    for (let i = 0; i < args.length; i += ZADD_CHUNK * 2) {
      writes.push(redis.zadd(key, 'NX', ...args.slice(i, i + ZADD_CHUNK * 2)));
    }
  }
  await Promise.all(writes);
  await writeSchedule(redis, keys, plan.schedule);
}

/**
 * What an enqueue writes, by key: per destination the ready set's `score member …` arguments, and per
 * schedule shard its destinations (with `minDue domain …` for its schedule). enqueueRecipients writes
 * it in two phases; ingress/persist.ts writes it with the message in one script on a single server.
 */
export interface EnqueuePlan {
  readonly ready: Map<string, (string | number)[]>;
  readonly schedule: Map<number, { domains: string[]; scores: (string | number)[] }>;
}

export function planEnqueue(items: readonly EnqueueItem[], shards: number): EnqueuePlan {
  const ready = new Map<string, (string | number)[]>();
  const minDue = new Map<string, number>();
  for (const it of items) {
    let args = ready.get(it.domain);
    if (!args) ready.set(it.domain, (args = []));
    args.push(it.dueAt, entryMember({ msgId: it.msgId, idx: it.idx, attempt: 0 }));
    const due = minDue.get(it.domain);
    if (due === undefined || it.dueAt < due) minDue.set(it.domain, it.dueAt);
  }
  return { ready, schedule: planSchedule(minDue, shards) };
}

function planSchedule(minDue: ReadonlyMap<string, number>, shards: number): EnqueuePlan['schedule'] {
  const byShard: EnqueuePlan['schedule'] = new Map();
  for (const [domain, due] of minDue) {
    const shard = shardOf(domain, shards);
    let s = byShard.get(shard);
    if (!s) byShard.set(shard, (s = { domains: [], scores: [] }));
    s.domains.push(domain);
    s.scores.push(due, domain);
  }
  return byShard;
}

/**
 * Phase 2 of an enqueue, after the work is written: lists the destinations and moves each one's
 * schedule entry no later than `minDue` (ZADD LT), one auto-pipelined round trip.
 */
export async function scheduleDestinations(redis: RedisClient, keys: Keys, shards: number, minDue: ReadonlyMap<string, number>): Promise<void> {
  await writeSchedule(redis, keys, planSchedule(minDue, shards));
}

/**
 * Phase 0 of an enqueue, before the work is written: puts the destinations in their shards' sets,
 * where repairSchedule() finds work whose schedule entry a crash left unwritten.
 */
export async function listDestinations(redis: RedisClient, keys: Keys, byShard: EnqueuePlan['schedule']): Promise<void> {
  await Promise.all([...byShard].map(([shard, s]) => redis.sadd(keys.destinations(shard), ...s.domains)));
}

/** listDestinations for the given domains. */
export async function listDomains(redis: RedisClient, keys: Keys, shards: number, domains: Iterable<string>): Promise<void> {
  await listDestinations(redis, keys, planSchedule(new Map([...domains].map((d) => [d, 0])), shards));
}

async function writeSchedule(redis: RedisClient, keys: Keys, byShard: EnqueuePlan['schedule']): Promise<void> {
  const schedule: Promise<unknown>[] = [];
  for (const [shard, s] of byShard) {
    schedule.push(redis.sadd(keys.destinations(shard), ...s.domains));
    schedule.push(redis.zadd(keys.schedule(shard), 'LT', ...s.scores));
  }
  await Promise.all(schedule);
}
