import type { RedisClient } from './client.js';
import type { Keys } from './keys.js';

/**
 * The count a copy's final outcome owes its message or campaign, written in another script than the
 * outcome (on a Redis Cluster their keys are in another slot; an erasure's queue step and its count
 * are two calls anywhere): noted in the destination's owed set by the outcome's own script when it
 * applies (queue/lua/lib/owed.lua), taken out once store/copy-count.ts has counted it. What a crash
 * left there the reaper counts (housekeeping/reaper.ts).
 */
export interface OwedCount {
  /** The campaign stats counter ('delivered', 'bounced', 'expired', 'suppressed', 'cancelled'). */
  readonly counter: string;
  readonly reason?: string | undefined;
  /** A hard bounce of the address ('hardbounces'). */
  readonly hard?: boolean;
}

/** The owed set's member for copy `e` (lib/owed.lua): "<msgId>:<idx>|<counter>|<reason>|<hard>". */
export function owedMember(e: { readonly msgId: string; readonly idx: number }, c: OwedCount): string {
  return `${e.msgId}:${e.idx}|${c.counter}|${c.reason ?? ''}|${c.hard === true ? '1' : '0'}`;
}

/** The copy and count an owed member names, or null for a member that is not one. */
export function parseOwedMember(member: string): ({ msgId: string; idx: number } & Required<OwedCount>) | null {
  const m = /^([^:|]+):(\d+)\|([a-z]+)\|([^|]*)\|([01])$/.exec(member);
  if (!m) return null;
  return { msgId: m[1] as string, idx: Number(m[2]), counter: m[3] as string, reason: m[4] as string, hard: m[5] === '1' };
}

/** Takes a copy out of its destination's owed set once its count is made (store/copy-count.ts). */
export async function clearOwed(redis: RedisClient, keys: Keys, domain: string, member: string): Promise<void> {
  await redis.zrem(keys.owed(domain), member);
}
