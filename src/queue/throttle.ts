import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { NO_TIME } from './outcome-codes.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/takeTokens-1.lua */
    takeTokens(bucket: string, now: number, want: number, perSecond: number, perMinute: number, perHour: number): Result<[number, number], Context>;
    /** src/queue/lua/refundTokens-1.lua */
    refundTokens(bucket: string, now: number, n: number, perSecond: number, perMinute: number, perHour: number): Result<number, Context>;
    /** src/queue/lua/acquireConnection-1.lua */
    acquireConnection(conns: string, connId: string, max: number, now: number, ttlMs: number, domain?: string, waitTtlMs?: number, join?: '1' | ''): Result<number, Context>;
    /** src/queue/lua/renewConnection-1.lua */
    renewConnection(conns: string, connId: string, now: number, ttlMs: number): Result<number, Context>;
    /** src/queue/lua/yieldConnection-1.lua */
    yieldConnection(conns: string, connId: string, domain: string, max: number, now: number, waitTtlMs: number): Result<[0] | [1, string], Context>;
  }
}

/** Messages per window; null = no limit in that window. */
export interface Rate {
  perSecond: number | null;
  perMinute: number | null;
  perHour: number | null;
}

/** The windows a rate limits, as the scripts take them (0 = none). */
const limits = (r: Rate): [number, number, number] => [r.perSecond ?? 0, r.perMinute ?? 0, r.perHour ?? 0];
/** True when the rate limits no window: callers skip the buckets (takeTokens grants all, refundTokens does nothing). */
export const unlimited = (r: Rate): boolean => r.perSecond === null && r.perMinute === null && r.perHour === null;

/**
 * Takes up to `want` sending tokens of a throttle scope: one token bucket per limited window
 * (capacity = the limit, refilled at limit/window), one script, and the grant is the minimum over
 * the windows. When fewer than `want` are granted, `retryAt` is when every bucket holds a token again.
 */
export async function takeTokens(redis: RedisClient, keys: Keys, scope: string, rate: Rate, want: number, now: number): Promise<{ granted: number; retryAt: number | null }> {
  const n = Math.max(0, Math.floor(want));
  if (n === 0 || unlimited(rate)) return { granted: n, retryAt: null };
  const [granted, retryAt] = await redis.takeTokens(keys.bucket(scope), now, n, ...limits(rate));
  return { granted, retryAt: retryAt === NO_TIME ? null : retryAt };
}

/** Returns tokens taken but not used (fewer entries were due than granted); never above capacity. */
export async function refundTokens(redis: RedisClient, keys: Keys, scope: string, rate: Rate, n: number, now: number): Promise<void> {
  const count = Math.floor(n);
  if (count <= 0 || unlimited(rate)) return;
  await redis.refundTokens(keys.bucket(scope), now, count, ...limits(rate));
}

/**
 * Takes one of `max` connection slots of a scope, shared by every process (ZSET connId → expiry;
 * expired slots do not count, so a crashed process's slots come back after ttlMs). True when held.
 */
export async function acquireConnection(redis: RedisClient, keys: Keys, scope: string, connId: string, max: number, ttlMs: number, now: number, turn?: SlotTurn): Promise<boolean> {
  const reply = turn
    ? await redis.acquireConnection(keys.conns(scope), connId, max, now, ttlMs, turn.domain, turn.waitTtlMs ?? WAIT_TTL_MS, turn.join ? '1' : '')
    : await redis.acquireConnection(keys.conns(scope), connId, max, now, ttlMs);
  return reply === 1;
}

/**
 * In a scope several destinations share (a provider rule's), slots go to them in turn
 * (acquireConnection-1.lua): `domain` asks; `join`: refused, it waits its turn (false for one more
 * connection of a destination that has one already).
 */
export interface SlotTurn {
  readonly domain: string;
  readonly join: boolean;
  /** A destination that has not asked again for this long no longer waits (default WAIT_TTL_MS). */
  readonly waitTtlMs?: number;
}

/** A destination refused a slot asks again within a second or so (dispatcher): not asked for 5 s, it no longer waits. */
export const WAIT_TTL_MS = 5_000;

/**
 * After a batch: gives connection `connId`'s slot of `scope` up when more other destinations wait
 * for one than there are slots free (yieldConnection-1.lua), so the scope's destinations take
 * turns; one connection leaves per waiting destination. Returns null (carry on), or the destination
 * at the head of the line ('' when none still asks) once the slot is given up: the caller makes it
 * due at once.
 */
export async function yieldConnection(redis: RedisClient, keys: Keys, scope: string, connId: string, domain: string, max: number, now: number, waitTtlMs = WAIT_TTL_MS): Promise<string | null> {
  const r = await redis.yieldConnection(keys.conns(scope), connId, domain, max, now, waitTtlMs);
  return r[0] === 1 ? r[1] : null;
}

/** Extends a slot we hold to now + ttlMs; a slot that already expired is not taken back (false). */
export async function renewConnection(redis: RedisClient, keys: Keys, scope: string, connId: string, ttlMs: number, now: number): Promise<boolean> {
  return (await redis.renewConnection(keys.conns(scope), connId, now, ttlMs)) === 1;
}

export async function releaseConnection(redis: RedisClient, keys: Keys, scope: string, connId: string): Promise<void> {
  await redis.zrem(keys.conns(scope), connId);
}
