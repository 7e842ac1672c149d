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

export interface Renewal {
  /** False for good once a renewal found the key no longer holding the value (it lapsed, or went to another holder). */
  readonly held: boolean;
  /** Stops renewing; resolves once the renewal in flight, if any, has landed (so none comes after the caller's next step). */
  end(): Promise<void>;
}

/**
 * Renews `key` (holding `value`) every third of ttlMs until end(), with renewLease: never re-creates
 * a key that lapsed, which another process may have taken and released meanwhile. A renewal that
 * fails (Redis unreachable) is tried again at the next tick. The timer does not hold the process open.
 */
export function keepRenewing(redis: RedisClient, key: string, value: string, ttlMs: number): Renewal {
  let held = true;
  let renewal: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    renewal = renewLease(redis, key, value, ttlMs).then(
      (ok) => (held &&= ok),
      () => undefined,
    );
  }, Math.max(1, Math.floor(ttlMs / 3)));
  timer.unref();
  let ended: Promise<void> | undefined;
  return {
    get held() {
      return held;
    },
    end: () => {
      ended ??= (async () => {
        clearInterval(timer);
        await renewal;
      })();
      return ended;
    },
  };
}
