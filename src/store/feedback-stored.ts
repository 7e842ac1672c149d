import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { SluiceError } from '../core/errors.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/reserveFeedbackBytes-1.lua: 1 counted, 0 no room. */
    reserveFeedbackBytes(stored: string, day: number, oldest: number, bytes: number, cap: number): Result<number, Context>;
  }
}

/**
 * The bytes of inbound feedback mail kept in Redis (feedback.maxStored), counted by the day it came
 * in `feedback:stored` (HASH day number → bytes): reserved before a mail is stored
 * (feedback/inbound-mx.ts), given back when one is dropped before its time (dropFeedback);
 * a day's count goes when every mail of that day has expired (retention.rawBounces).
 */
const DAY_MS = 86_400_000;

/**
 * Counts `bytes` of feedback mail received at `now` against `cap`, the bytes of feedback mail kept at
 * most (feedback.maxStored; each is kept retentionMs): SLUICE_FEEDBACK_STORAGE_FULL (452 4.3.1, its
 * sender retries later) when there is no room, before anything is written.
 */
export async function reserveFeedbackStorage(redis: RedisClient, keys: Keys, bytes: number, now: number, o: { readonly retentionMs: number; readonly cap: number }): Promise<void> {
  const day = Math.floor(now / DAY_MS);
  let counted: number;
  try {
    counted = await redis.reserveFeedbackBytes(keys.feedbackStored(), day, day - Math.ceil(o.retentionMs / DAY_MS), bytes, o.cap);
  } catch (err) {
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the feedback mail could not be stored', { cause: err });
  }
  if (counted !== 1) throw new SluiceError('SLUICE_FEEDBACK_STORAGE_FULL');
}

/**
 * Drops stored feedback mail `id` before its time: one that must not be kept (about an erased
 * person, or a deleted account's recipient: feedback/process.ts, store/privacy.ts, the retention of
 * a deleted account), with its id in both indexes (an earlier failed attempt listed it), and gives
 * its bytes back to its day's count. Three slots: separate commands, not a MULTI (refused across
 * slots on a cluster). Returns 1 when it was stored.
 */
export async function dropFeedback(redis: RedisClient, keys: Keys, id: string): Promise<number> {
  const [gone] = await Promise.all([deleteRaw(redis, keys, id), redis.zrem(keys.feedbackUnprocessed(), id), redis.zrem(keys.feedbackPending(), id)]);
  return gone;
}

async function deleteRaw(redis: RedisClient, keys: Keys, id: string): Promise<number> {
  const key = keys.feedbackRaw(id);
  const r = await redis.multi().hstrlen(key, 'raw').hget(key, 'receivedAt').del(key).exec();
  const bytes = Number(r?.[0]?.[1] ?? 0);
  const at = Number(r?.[1]?.[1] ?? 0);
  const gone = Number(r?.[2]?.[1] ?? 0);
  if (gone === 1 && bytes > 0 && at > 0) {
    const field = String(Math.floor(at / DAY_MS));
    // Only a day still counted (one that left the retention is gone, and must not come back negative).
    if ((await redis.hexists(keys.feedbackStored(), field)) === 1) await redis.hincrby(keys.feedbackStored(), field, -bytes);
  }
  return gone;
}
