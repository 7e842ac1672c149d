import type { RedisClient } from '../redis/client.js';
import { shardOf, type Keys } from '../redis/keys.js';
import { MINUTE } from '../core/time.js';

/**
 * The schedule tells dispatchers which destinations to look at, without scanning:
 *
 *   {s:<n>}:due    ZSET  member = domain, score = when a dispatcher should next look (ms)
 *   {s:<n>}:dests  SET   the domains of shard n with queued work, and for a while those whose work
 *                        is done (the reaper forgets them: forgetDestination); repair, `sluice queue`
 *   {s:<n>}:postponed  HASH  domain = the score postpone() gave it (a wait on purpose, which repair keeps)
 *
 * The schedule lives in other slots than the destinations' ready/lease sets, so it cannot change
 * atomically with them. Its one invariant: for every destination with work, the schedule score is
 * at most the earliest ready score or lease expiry (or is lowered to it soon: by the enqueuer's ZADD
 * LT, by reschedule()'s re-check, or by repairSchedule()), unless postpone() set it later on purpose.
 * Domains are never removed on the hot path.
 */

/** A destination with nothing queued is looked at again after this long (cheap: one claim call). */
export const IDLE_RECHECK_MS = 5 * MINUTE;

/** Destinations due at or before `now` in one shard, earliest first. */
export async function dueDestinations(redis: RedisClient, keys: Keys, shard: number, now: number, limit: number): Promise<string[]> {
  if (limit <= 0) return [];
  return redis.zrange(keys.schedule(shard), '-inf', now, 'BYSCORE', 'LIMIT', 0, Math.floor(limit));
}

/** The lowest score of a sorted set (a destination's earliest due time or lease expiry), or null when it is empty. */
export async function lowestScore(redis: RedisClient, key: string): Promise<number | null> {
  const r = await redis.zrange(key, 0, 0, 'WITHSCORES');
  return r[1] === undefined ? null : Number(r[1]);
}

/** Earliest ready score or lease expiry of a destination, or null when it holds no entry. */
async function earliestWork(redis: RedisClient, keys: Keys, domain: string): Promise<number | null> {
  const [ready, lease] = await Promise.all([lowestScore(redis, keys.ready(domain)), lowestScore(redis, keys.leases(domain))]);
  if (ready === null) return lease;
  return lease === null ? ready : Math.min(ready, lease);
}

/**
 * Sets when a destination is next looked at, after a claim told us `nextAt` (null: nothing left, so
 * an idle re-check in IDLE_RECHECK_MS). It must not lose work that an enqueuer adds meanwhile. The
 * enqueuer writes ready (E1) then ZADD LT the schedule (E2); we ZADD the schedule (R1) then read the
 * ready set (R2). Every interleaving ends with the schedule no later than the new entry's due time:
 *
 *   E1 E2 R1 R2   R1 overwrites E2's earlier score, but R2 sees the entry and lowers it again
 *   E1 R1 E2 R2   E2 (LT) lowers R1's score; R2 sees the entry and keeps it low
 *   E1 R1 R2 E2   R2 sees the entry; E2 lowers too
 *   R1 E1 E2 R2   E2 lowers R1's score
 *   R1 E1 R2 E2   R2 sees the entry; E2 lowers too
 *   R1 R2 E1 E2   E2 lowers R1's score
 *
 * The same holds for retry/release/reap writing ready while we reschedule. The re-check lowers the
 * score to the earliest ready entry whenever that is earlier than what we set, so it also catches an
 * entry enqueued for a later time.
 *
 * Use postpone() instead when the destination has due work that must wait on purpose (backoff,
 * rate or connection limits): reschedule() would pull it straight back to now.
 */
export async function reschedule(redis: RedisClient, keys: Keys, shards: number, domain: string, nextAt: number | null, now: number): Promise<void> {
  const key = keys.schedule(shardOf(domain, shards));
  const score = nextAt ?? now + IDLE_RECHECK_MS;
  // Nothing queued: an idle re-check while the destination is scheduled (XX), not one that puts
  // back a destination forgetDestination took out meanwhile (the re-check below does, if work came);
  // and one no longer listed (forgotten, then put back in the schedule by a plain write that raced
  // with the forget: a postpone, a reschedule) leaves the schedule, or it would be looked at every
  // IDLE_RECHECK_MS for good. Work queued meanwhile lists it first (enqueue.ts phase 0), so a
  // destination not listed has none the re-check below would miss.
  let dropped = false;
  if (nextAt === null) {
    const shard = shardOf(domain, shards);
    if ((await redis.sismember(keys.destinations(shard), domain)) === 1) await redis.zadd(key, 'XX', score, domain);
    else {
      // With its postponed note, as forgetDestination does (one slot: the shard's).
      await redis.multi().zrem(key, domain).hdel(keys.postponed(shard), domain).exec();
      dropped = true;
    }
  } else await redis.zadd(key, score, domain);
  // Work queued meanwhile: due no later than it is (also work due later than `score`, whose enqueue's
  // schedule entry the ZREM above may have taken).
  const earliest = await lowestScore(redis, keys.ready(domain));
  if (earliest !== null && (dropped || earliest < score)) await redis.zadd(key, 'LT', earliest, domain);
}

/**
 * Holds a destination back until `until` although it has due work (operator hold, suspended scope,
 * no token or connection slot left). No re-check: work enqueued meanwhile waits for the same reason.
 * An enqueue racing with this may still make the destination due at once; the dispatcher then finds
 * the same limit and postpones again, so the race costs one look, never work.
 *
 * The score is also noted in the shard's postponed hash: repairSchedule() leaves a score that
 * matches it alone (else it would pull every held or suspended destination back to now each lap,
 * and log it as repaired). Both writes go in one transaction (one slot); should the note be missing
 * all the same, the repair costs one look.
 */
export async function postpone(redis: RedisClient, keys: Keys, shards: number, domain: string, until: number): Promise<void> {
  const shard = shardOf(domain, shards);
  await redis.multi().zadd(keys.schedule(shard), until, domain).hset(keys.postponed(shard), domain, until).exec();
}

/**
 * Walks the destination sets with SSCAN, `batch` domains per call at most (the cursor survives
 * between calls in keys.repairCursor()), and lowers the schedule of every destination whose earliest
 * ready entry or lease expiry (or `now`, for work already due) is earlier than its schedule score,
 * or that has work but no score (a crash between an enqueue's two phases). Returns the number of destinations fixed.
 */
export async function repairSchedule(redis: RedisClient, keys: Keys, shards: number, now: number, batch: number): Promise<number> {
  if (batch <= 0 || shards <= 0) return 0;
  const saved = await redis.hmget(keys.repairCursor(), 'shard', 'cursor');
  let shard = Number(saved[0] ?? 0);
  if (!Number.isInteger(shard) || shard < 0 || shard >= shards) shard = 0;
  let cursor = saved[1] ?? '0';
  const startShard = shard;
  let seen = 0;
  let fixed = 0;

  for (;;) {
    const [next, domains] = await redis.sscan(keys.destinations(shard), cursor, 'COUNT', Math.min(batch, 1000));
    const results = await Promise.all(domains.map((d) => repairOne(redis, keys, shard, d, now)));
    fixed += results.filter(Boolean).length;
    seen += domains.length;
    cursor = next;
    if (cursor === '0') {
      shard = (shard + 1) % shards;
      // one full lap in a single call is enough, however small the sets are
      if (shard === startShard) break;
    }
    if (seen >= batch) break;
  }
  await redis.hset(keys.repairCursor(), 'shard', shard, 'cursor', cursor);
  return fixed;
}

async function repairOne(redis: RedisClient, keys: Keys, shard: number, domain: string, now: number): Promise<boolean> {
  const [work, scheduled] = await Promise.all([earliestWork(redis, keys, domain), redis.zscore(keys.schedule(shard), domain)]);
  if (work === null) return false;
  // Work that fell due in the past is due now: a repaired destination joins the queue of due
  // destinations at the back instead of jumping ahead of everything with an ancient score.
  const target = Math.max(work, now);
  if (scheduled !== null && Number(scheduled) <= target) return false;
  if (scheduled !== null) {
    // Later than its work: postponed on purpose (the score postpone() noted) or lost track of.
    const noted = await redis.hget(keys.postponed(shard), domain);
    if (noted !== null && Number(noted) === Number(scheduled)) return false;
    if (noted !== null) await redis.hdel(keys.postponed(shard), domain);
  }
  await redis.zadd(keys.schedule(shard), 'LT', target, domain);
  return true;
}

/**
 * Entries and campaign recipients a destination holds (ready, leased, waiting behind a pointer or
 * paused: queueDepth-4.lua, as `sluice queue` reads them), and copies it owes a count (lib/owed.lua:
 * the reaper's visits count what a crash left).
 */
async function queuedAt(redis: RedisClient, keys: Keys, domain: string): Promise<number> {
  const [depth, owed] = await Promise.all([
    redis.queueDepth(keys.ready(domain), keys.leases(domain), keys.campaignPushed(domain), keys.destinationRule(domain)),
    redis.zcard(keys.owed(domain)),
  ]);
  return Number(depth[0]) + Number(depth[1]) + Number(depth[2]) + owed;
}

/**
 * Takes a destination with nothing queued (no ready entry, lease or campaign recipient) out of its
 * shard's destination set and its schedule, so that the walks over those sets (the reaper,
 * repairSchedule, `sluice queue`) visit the destinations that have work, not every domain ever
 * mailed, and no dispatcher looks at it again every IDLE_RECHECK_MS for good. The next enqueue for
 * it adds it back (enqueue.ts phases 0 and 2). A paused campaign's recipients wait behind no
 * pointer: their destination is not idle, and `sluice queue` and the queue gauges must still show them.
 *
 * Safe against an enqueue racing with it, without a transaction (the sets and the queue live in
 * different slots): the queue is looked at after the SREM, and again after the schedule entry is
 * taken out; the destination goes back (listed, and due now) when work arrived meanwhile. An enqueue
 * writes its work (phase 1) before its schedule (phase 2), so a schedule entry the ZREM took away
 * was preceded by work the second look sees; one whose phase 2 comes after the second look lists and
 * schedules the destination itself. Returns true when the destination was taken out.
 */
export async function forgetDestination(redis: RedisClient, keys: Keys, shards: number, domain: string, now: number): Promise<boolean> {
  const shard = shardOf(domain, shards);
  const set = keys.destinations(shard);
  if ((await redis.srem(set, domain)) === 0) return false;
  if ((await queuedAt(redis, keys, domain)) > 0) {
    await redis.sadd(set, domain);
    return false;
  }
  // One slot (the shard's): the schedule entry and the postponed note go together.
  await redis.multi().zrem(keys.schedule(shard), domain).hdel(keys.postponed(shard), domain).exec();
  if ((await queuedAt(redis, keys, domain)) > 0) {
    await redis.multi().sadd(set, domain).zadd(keys.schedule(shard), 'LT', now, domain).exec();
    return false;
  }
  return true;
}
