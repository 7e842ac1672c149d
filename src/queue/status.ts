import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { entryMember } from './entry.js';

export type RecipientState = 'queued' | 'sending' | 'deferred' | 'delivered' | 'bounced' | 'expired' | 'suppressed' | 'cancelled' | 'unknown';

export interface RecipientStatus {
  idx: number;
  state: RecipientState;
  attempts: number;
  nextAttemptAt: number | null;
  code: number | null;
  enhanced: string | null;
  response: string | null;
  reason: string | null;
  updatedAt: number | null;
}

const FINAL = new Set(['delivered', 'bounced', 'expired', 'suppressed', 'cancelled']);
const RS_FIELDS = ['state', 'attempts', 'code', 'enhanced', 'response', 'reason', 'nextAt', 'updatedAt'] as const;

/** A number field of a Redis record; null when missing, empty or not a number. */
export const num = (v: string | null | undefined): number | null => {
  if (v === null || v === undefined || v === '') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
};

/**
 * Where each recipient of a message stands. Two auto-pipelined round trips, single-key commands only
 * (the recipients' keys span many destination slots, so this also works on a Cluster):
 *   1. the delivery record (HMGET): final states come from it alone, and it says how many attempts
 *      were made, which names the queue member of the next one;
 *   2. that member's score in ready (queued / deferred, due then) and in leases (sending now).
 * A recipient with neither record nor entry is 'unknown' (never queued, or its record expired).
 */
export async function recipientStates(redis: RedisClient, keys: Keys, msgId: string, rcpts: readonly { idx: number; domain: string }[]): Promise<RecipientStatus[]> {
  const records = await Promise.all(rcpts.map((r) => redis.hmget(keys.rcptState(r.domain, msgId, r.idx), ...RS_FIELDS)));

  return Promise.all(
    rcpts.map(async (r, i): Promise<RecipientStatus> => {
      const [state, attempts, code, enhanced, response, reason, nextAt, updatedAt] = records[i] as (string | null)[];
      const made = num(attempts) ?? 0;
      const base: RecipientStatus = {
        idx: r.idx,
        state: 'unknown',
        attempts: made,
        nextAttemptAt: num(nextAt),
        code: num(code),
        enhanced: enhanced ?? null,
        response: response ?? null,
        reason: reason ?? null,
        updatedAt: num(updatedAt),
      };
      if (state && FINAL.has(state)) return { ...base, state: state as RecipientState, nextAttemptAt: null };

      const member = entryMember({ msgId, idx: r.idx, attempt: made });
      const [due, lease] = await Promise.all([redis.zscore(keys.ready(r.domain), member), redis.zscore(keys.leases(r.domain), member)]);
      const deferred = state === 'deferred';
      if (lease !== null) return { ...base, state: 'sending', nextAttemptAt: null };
      if (due !== null) return { ...base, state: deferred ? 'deferred' : 'queued', nextAttemptAt: Number(due) };
      // A deferred record whose entry is momentarily in neither set (an outcome being applied between
      // our two reads) still tells the truth as of its update.
      return deferred ? { ...base, state: 'deferred' } : base;
    }),
  );
}
