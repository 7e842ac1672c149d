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
 * Queues recipients (attempt 0). Two phases, each one auto-pipelined round trip however many
 * destinations the items span (ioredis groups the commands per node, also on a Cluster):
 *
 *   1. ready sets   ZADD NX <ready(domain)> dueAt member…    (NX: enqueuing twice never moves an entry)
 *   2. schedule     SADD <destinations(shard)> domain…  +  ZADD LT <schedule(shard)> minDue domain…
 *
 * Phase 2 starts only after phase 1 is written: ready and schedule keys live in different slots, so
 * they cannot be written atomically, and in this order a crash in between leaves at worst a
 * destination with work but a late (or no) schedule entry, which repairSchedule() fixes. ZADD LT only
 * ever moves a destination earlier, so a racing enqueue can only make a dispatcher look sooner; see
 * reschedule() for why a racing reschedule cannot push the new work back.
 */
export async function enqueueRecipients(redis: RedisClient, keys: Keys, shards: number, items: readonly EnqueueItem[]): Promise<void> {
  if (items.length === 0) return;

  const byDomain = new Map<string, { args: (string | number)[]; minDue: number }>();
  for (const it of items) {
    let d = byDomain.get(it.domain);
    if (!d) byDomain.set(it.domain, (d = { args: [], minDue: it.dueAt }));
    d.args.push(it.dueAt, entryMember({ msgId: it.msgId, idx: it.idx, attempt: 0 }));
    if (it.dueAt < d.minDue) d.minDue = it.dueAt;
  }

  const writes: Promise<unknown>[] = [];
  for (const [domain, d] of byDomain) {
    const key = keys.ready(domain);
    for (let i = 0; i < d.args.length; i += ZADD_CHUNK * 2) {
      writes.push(redis.zadd(key, 'NX', ...d.args.slice(i, i + ZADD_CHUNK * 2)));
    }
  }
  await Promise.all(writes);

  await scheduleDestinations(redis, keys, shards, new Map([...byDomain].map(([domain, d]) => [domain, d.minDue])));
}

/**
 * Phase 2 of an enqueue, after the work is written: lists the destinations and moves each one's
 * schedule entry no later than `minDue` (ZADD LT), one auto-pipelined round trip.
 */
export async function scheduleDestinations(redis: RedisClient, keys: Keys, shards: number, minDue: ReadonlyMap<string, number>): Promise<void> {
  const byShard = new Map<number, { domains: string[]; scores: (string | number)[] }>();
  for (const [domain, due] of minDue) {
    const shard = shardOf(domain, shards);
    let s = byShard.get(shard);
    if (!s) byShard.set(shard, (s = { domains: [], scores: [] }));
    s.domains.push(domain);
    s.scores.push(due, domain);
  }
  const schedule: Promise<unknown>[] = [];
  for (const [shard, s] of byShard) {
    schedule.push(redis.sadd(keys.destinations(shard), ...s.domains));
    schedule.push(redis.zadd(keys.schedule(shard), 'LT', ...s.scores));
  }
  await Promise.all(schedule);
}
