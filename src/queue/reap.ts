import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/reap-3.lua */
    reap(leases: string, ready: string, owed: string, now: number, limit: number, owedBefore?: number | '', owedLimit?: number): Result<[number, number, ...string[]], Context>;
  }
}

/**
 * Returns up to `limit` entries whose lease expired at or before `now` to ready, due now, without
 * counting an attempt. Returns how many moved; call again while it returns `limit`.
 */
export async function reapExpired(redis: RedisClient, keys: Keys, domain: string, now: number, limit: number): Promise<number> {
  return (await reapAndCount(redis, keys, domain, now, limit)).moved;
}

/**
 * reapExpired, and how many entries (ready + leased + copies owed a count) the destination holds
 * after it; with `owed`, also the copies owed a count since before `owed.before` (a crash between a
 * copy's outcome and its count left them, lib/owed.lua), `owed.limit` at most.
 */
export async function reapAndCount(
  redis: RedisClient, keys: Keys, domain: string, now: number, limit: number, owed?: { before: number; limit: number },
): Promise<{ moved: number; left: number; owed: string[] }> {
  const [moved, left, ...members] = await redis.reap(keys.leases(domain), keys.ready(domain), keys.owed(domain), now, Math.max(0, Math.floor(limit)), owed?.before ?? '', owed?.limit ?? 0);
  return { moved, left, owed: members };
}
