import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import { shardOf, type Keys } from '../redis/keys.js';
import { eachDestinationPage } from './stats.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/flushReady-1.lua: [entries looked at, entries made due, score reached, pointers at it] */
    flushReady(ready: string, now: number, limit: number, from: string, skip: number): Result<[number, number, string, number], Context>;
  }
}

/** Entries one flushReady call looks at: bounds the time Redis spends in one script. */
const FLUSH_STEP = 1000;

/**
 * Makes a destination's waiting recipients due now (deferred ones, and those held for a closed
 * account or a paused sender, which delivery then holds again), in steps of FLUSH_STEP, and the
 * destination due in the schedule, so that a dispatcher that postponed it (a failed connection, a
 * backoff) looks at it at once. Throttles still apply: rate and connection limits, a provider's
 * backoff, a campaign's own throttle (its pointer is left where it is). Returns how many were made due.
 */
export async function flushDestination(redis: RedisClient, keys: Keys, shards: number, domain: string, now: number): Promise<number> {
  const ready = keys.ready(domain);
  let moved = 0;
  let cursor: FlushCursor | null = null;
  do {
    const step: FlushStep = await flushStep(redis, ready, now, cursor);
    moved += step.moved;
    cursor = step.next;
  } while (cursor);
  if ((await redis.zcard(ready)) > 0) await redis.zadd(keys.schedule(shardOf(domain, shards)), 'LT', now, domain);
  return moved;
}

/** Where a flush of one ready set goes on from (opaque to callers): a score, and the pointers there already looked at. */
export interface FlushCursor {
  readonly from: string;
  readonly skip: number;
}

export interface FlushStep {
  readonly moved: number;
  /** null when the walk is done. */
  readonly next: FlushCursor | null;
}

/** One call of flushReady: up to `limit` entries looked at, from `cursor` (null: the start). */
export async function flushStep(redis: RedisClient, ready: string, now: number, cursor: FlushCursor | null, limit = FLUSH_STEP): Promise<FlushStep> {
  const [looked, moved, from, skip] = await redis.flushReady(ready, now, limit, cursor?.from ?? `(${now}`, cursor?.skip ?? 0);
  return { moved, next: looked < limit ? null : { from, skip } };
}

/** flushDestination for every destination with queued mail; returns those it made anything due at. */
export async function flushAll(redis: RedisClient, keys: Keys, shards: number, now: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await eachDestinationPage(redis, keys, shards, async (domains) => {
    // SSCAN may return a member twice (a set rehashed meanwhile): each destination is flushed once.
    const fresh = domains.filter((d) => !out.has(d));
    const moved = await Promise.all(fresh.map((d) => flushDestination(redis, keys, shards, d, now)));
    fresh.forEach((d, i) => out.set(d, moved[i] as number));
  });
  for (const [d, n] of out) if (n === 0) out.delete(d);
  return out;
}
