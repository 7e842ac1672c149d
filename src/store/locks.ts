import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/holdLock-1.lua */
    holdLock(lock: string, token: string, ttlMs: number): Result<number, Context>;
    /** src/queue/lua/releaseLock-1.lua */
    releaseLock(lock: string, token: string): Result<number, Context>;
    /** src/queue/lua/renewLease-1.lua */
    renewLease(key: string, value: string, ttlMs: number): Result<number, Context>;
  }
}

/**
 * A lease lock for background jobs that one process at a time should run (retention, a campaign's
 * enqueuer): a key holding the holder's token with a TTL, so a holder that dies frees it by itself.
 * Taking, renewing and releasing are each one script, so a lock that expired and went to another
 * process is never renewed or deleted by the old holder.
 */
export async function holdLock(redis: RedisClient, key: string, token: string, ttlMs: number): Promise<boolean> {
  return (await redis.holdLock(key, token, Math.max(1, Math.floor(ttlMs)))) === 1;
}

export async function releaseLock(redis: RedisClient, key: string, token: string): Promise<void> {
  await redis.releaseLock(key, token);
}

/** Extends `key`'s TTL while it still holds exactly `value`; never re-creates it. True when renewed. */
export async function renewLease(redis: RedisClient, key: string, value: string, ttlMs: number): Promise<boolean> {
  return (await redis.renewLease(key, value, Math.max(1, Math.floor(ttlMs)))) === 1;
}
