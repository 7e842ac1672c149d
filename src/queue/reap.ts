import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/reap-2.lua */
    reap(leases: string, ready: string, now: number, limit: number): Result<[number, number], Context>;
  }
}

/**
 * Returns up to `limit` entries whose lease expired at or before `now` to ready, due now, without
 * counting an attempt. Returns how many moved; call again while it returns `limit`.
 */
export async function reapExpired(redis: RedisClient, keys: Keys, domain: string, now: number, limit: number): Promise<number> {
  return (await reapAndCount(redis, keys, domain, now, limit)).moved;
}

/** reapExpired, and how many entries (ready + leased) the destination holds after it. */
export async function reapAndCount(redis: RedisClient, keys: Keys, domain: string, now: number, limit: number): Promise<{ moved: number; left: number }> {
  const [moved, left] = await redis.reap(keys.leases(domain), keys.ready(domain), now, Math.max(0, Math.floor(limit)));
  return { moved, left };
}
