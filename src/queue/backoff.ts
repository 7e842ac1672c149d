import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { NO_TIME } from './outcome-codes.js';
import type { EffectiveShaping } from './shaping.js';
import { unlimited, type Rate } from './throttle.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/recordThrottleSignal-1.lua */
    recordThrottleSignal(backoff: string, now: number, threshold: number, windowMs: number, suspendMs: number, maxSuspendMs: number, maxLevel: number, keepMs: number, reason: string): Result<[number, number], Context>;
    /** src/queue/lua/recordSuccess-1.lua */
    recordSuccess(backoff: string, now: number, recoverMs: number, keepMs: number): Result<number, Context>;
  }
}

/**
 * Adaptive backoff of a throttle scope. `threshold` "slow down" answers (421, 4.7.x) within
 * `windowMs` are a trigger: the scope is suspended briefly (suspendMs, doubling with the level up to
 * maxSuspendMs, as PowerMTA's backoff mode) and its slowdown level rises by one, up to maxLevel.
 * Each level halves the scope's connections (min 1) and its rate; a rule without a rate gets one of
 * `ratePerConnection` msg/s per connection, halved the same way. One level is removed after each
 * `recoverMs` of good answers without a slow-down answer, so the scope comes back gradually.
 */
export interface BackoffConfig {
  threshold: number;
  windowMs: number;
  suspendMs: number;
  maxSuspendMs: number;
  maxLevel: number;
  recoverMs: number;
  ratePerConnection: number;
}

export interface BackoffState {
  /** suspension end; null when not suspended at `now` */
  suspendedUntil: number | null;
  /** slowdown level, 0 = normal */
  level: number;
  /** the last slow-down answer while the scope is slowed or suspended, else null */
  reason: string | null;
}

/**
 * Longest reason kept: an SMTP reply line is at most 512 octets (RFC 5321 §4.5.3.1.5); the first
 * 200 characters hold the code, the enhanced status and the provider's explanation or URL.
 */
export const REASON_MAX = 200;

/** How long an untouched scope keeps its state: a full window, the longest suspension, and time to recover every level. */
export const backoffKeepMs = (cfg: BackoffConfig): number => cfg.windowMs + Math.max(cfg.suspendMs, cfg.maxSuspendMs) + maxLevelOf(cfg) * cfg.recoverMs;
const maxLevelOf = (cfg: BackoffConfig): number => Math.max(1, Math.floor(cfg.maxLevel));

/**
 * Counts one slow-down answer (`reply`: its text, kept as the reason); returns the suspension end
 * while the scope is suspended, and the slowdown level.
 */
export async function recordThrottleSignal(redis: RedisClient, keys: Keys, scope: string, cfg: BackoffConfig, now: number, reply = ''): Promise<{ suspendedUntil: number | null; level: number }> {
  const reason = reply.replace(/\s+/g, ' ').trim().slice(0, REASON_MAX);
  const [until, level] = await redis.recordThrottleSignal(keys.backoff(scope), now, Math.max(1, cfg.threshold), cfg.windowMs, cfg.suspendMs, Math.max(cfg.suspendMs, cfg.maxSuspendMs), maxLevelOf(cfg), backoffKeepMs(cfg), reason);
  return { suspendedUntil: until === NO_TIME ? null : until, level };
}

/** A delivery in the scope succeeded: removes one level once the scope has been quiet for recoverMs. Returns the level. */
export async function recordSuccess(redis: RedisClient, keys: Keys, scope: string, cfg: BackoffConfig, now: number): Promise<number> {
  return redis.recordSuccess(keys.backoff(scope), now, cfg.recoverMs, backoffKeepMs(cfg));
}

/** The scope's backoff as it stands at `now`. */
export async function backoffState(redis: RedisClient, keys: Keys, scope: string, now: number): Promise<BackoffState> {
  const [until, level, reason] = await redis.hmget(keys.backoff(scope), 'until', 'level', 'reason');
  const u = Number(until ?? 0);
  const suspendedUntil = u > now ? u : null;
  const lvl = Number(level ?? 0) || 0;
  return { suspendedUntil, level: lvl, reason: lvl > 0 || suspendedUntil !== null ? reason || null : null };
}

/** Windows of a Rate, shortest first, each with the next longer window and how many times longer it is. */
const WINDOWS = [
  ['perSecond', 'perMinute', 60],
  ['perMinute', 'perHour', 60],
  ['perHour', null, 1],
] as const;

/**
 * A rate slowed down `level` times: every limit halved per level. Token buckets hold `limit` tokens
 * and a grant needs a whole one, so a window whose share falls below 1 keeps a limit of 1 (a burst
 * of one) and hands the real pace to the next longer window (0.5/s → 1/s and 30/min); the floor of
 * it all is 1 message per hour. A rate with no limit at all is first given `connections ×
 * perConnection` msg/s, so that an unlimited rule slows down too.
 */
export function slowedRate(rate: Rate, level: number, connections: number, perConnection: number): Rate {
  if (level <= 0) return { ...rate };
  const base: Rate = unlimited(rate) ? { perSecond: connections * perConnection, perMinute: null, perHour: null } : rate;
  const factor = 2 ** level;
  const scaled: Record<keyof Rate, number | null> = { perSecond: null, perMinute: null, perHour: null };
  for (const [field] of WINDOWS) scaled[field] = base[field] === null ? null : (base[field] as number) / factor;
  const out: Rate = { perSecond: null, perMinute: null, perHour: null };
  for (const [field, longer, ratio] of WINDOWS) {
    const share = scaled[field];
    if (share === null) continue;
    if (share >= 1 || longer === null) {
      out[field] = Math.max(1, Math.floor(share));
      continue;
    }
    out[field] = 1;
    const carried = share * ratio;
    const existing = scaled[longer];
    scaled[longer] = existing === null ? carried : Math.min(existing, carried);
  }
  return out;
}

/**
 * The shaping a scope gets at slowdown `level`: connections halved per level (at least one) and the
 * rate slowed as slowedRate does. Level 0 returns the shaping unchanged.
 */
export function applyBackoff(shaping: EffectiveShaping, level: number, cfg: Pick<BackoffConfig, 'ratePerConnection'>): EffectiveShaping {
  if (level <= 0) return shaping;
  return {
    ...shaping,
    connections: Math.max(1, Math.floor(shaping.connections / 2 ** level)),
    rate: slowedRate(shaping.rate, level, shaping.connections, cfg.ratePerConnection),
  };
}
