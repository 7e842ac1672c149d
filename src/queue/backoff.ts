import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { NO_TIME } from './outcome-codes.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/recordThrottleSignal-1.lua */
    recordThrottleSignal(backoff: string, now: number, threshold: number, windowMs: number, suspendMs: number, maxSuspendMs: number): Result<number, Context>;
    /** src/queue/lua/recordSuccess-1.lua */
    recordSuccess(backoff: string, now: number, keepMs: number): Result<number, Context>;
  }
}

/**
 * Adaptive backoff of a throttle scope (PowerMTA's backoff mode): `threshold` "slow down" answers
 * (421, 4.7.x) within `windowMs` suspend the scope for suspendMs; each new trigger before it has
 * recovered doubles the suspension up to maxSuspendMs; each success after a suspension halves it back.
 */
export interface BackoffConfig {
  threshold: number;
  windowMs: number;
  suspendMs: number;
  maxSuspendMs: number;
}

/** Counts one slow-down answer; returns the suspension end while the scope is suspended. */
export async function recordThrottleSignal(redis: RedisClient, keys: Keys, scope: string, cfg: BackoffConfig, now: number): Promise<{ suspendedUntil: number | null }> {
  const until = await redis.recordThrottleSignal(keys.backoff(scope), now, Math.max(1, cfg.threshold), cfg.windowMs, cfg.suspendMs, Math.max(cfg.suspendMs, cfg.maxSuspendMs));
  return { suspendedUntil: until === NO_TIME ? null : until };
}

/** A delivery in the scope succeeded: steps the backoff level down by one (outside a suspension). */
export async function recordSuccess(redis: RedisClient, keys: Keys, scope: string, cfg: BackoffConfig, now: number): Promise<void> {
  await redis.recordSuccess(keys.backoff(scope), now, cfg.windowMs + Math.max(cfg.suspendMs, cfg.maxSuspendMs));
}

/** The scope's suspension end (null when not suspended at `now`) and its level (0 = normal). */
export async function backoffState(redis: RedisClient, keys: Keys, scope: string, now: number): Promise<{ suspendedUntil: number | null; level: number }> {
  const [until, level] = await redis.hmget(keys.backoff(scope), 'until', 'level');
  const u = Number(until ?? 0);
  return { suspendedUntil: u > now ? u : null, level: Number(level ?? 0) || 0 };
}
