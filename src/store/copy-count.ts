import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { keepRefsOfLateFinish } from './address-index.js';
import { clearOwed, owedMember, type OwedCount } from '../redis/owed.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/finishCopy-5.lua */
    finishCopy(meta: string, body: string, links: string, stats: string, counted: string, idx: number, counter: string, reason: string, hard: '1' | '0', now: number, ttlMs: number): Result<[number] | [number, number | string], Context>;
  }
}

/** What countCopy did: nothing (the message is gone, or the copy was counted before), or counted it. */
export type CopyCounted =
  | { readonly kind: 'gone' }
  | { readonly kind: 'before' }
  | { readonly kind: 'campaign'; readonly state: string }
  | { readonly kind: 'message'; readonly pending: number };

/**
 * Counts a copy's final outcome on its message or campaign, once per copy however often it is asked
 * (finishCopy-5.lua): the outcome was written in the destination's slot and noted there as owed
 * (queue/lua/lib/owed.lua); the dispatcher counts it at once, the reaper what a crash (or a lost
 * reply: the outcome sent again answers NOOP) left owed. A campaign copy counts under `counter` (and a bounce's `reason`, `hard`)
 * and comes off the campaign's pending; a message's recipient comes off its pending, and with the
 * last the body goes and the address references are kept as for a late finish (keepRefsOfLateFinish).
 */
export async function countCopy(
  redis: RedisClient,
  keys: Keys,
  copy: { readonly msgId: string; readonly idx: number },
  c: { readonly counter: string; readonly reason?: string | undefined; readonly hard?: boolean },
  now: number,
  ttl: { readonly recordsMs: number; readonly refsMs: number },
): Promise<CopyCounted> {
  const id = copy.msgId;
  const r = await redis.finishCopy(keys.msgMeta(id), keys.msgBody(id), keys.links(id), keys.msgStats(id), keys.copiesCounted(id), copy.idx, c.counter, c.reason ?? '', c.hard === true ? '1' : '0', now, ttl.recordsMs);
  if (r[0] === -1) return { kind: 'gone' };
  if (r[0] === -2) return { kind: 'before' };
  if (r[0] === 1) return { kind: 'campaign', state: String(r[1]) };
  const pending = Number(r[1]);
  if (pending === 0) await keepRefsOfLateFinish(redis, keys, id, now, ttl);
  return { kind: 'message', pending };
}

/**
 * countCopy for a copy whose count its outcome (or erasure) noted owed at destination `domain`
 * (queue/lua/lib/owed.lua), then the note taken out: the count is made, or was before.
 */
export async function countOwedCopy(
  redis: RedisClient,
  keys: Keys,
  domain: string,
  copy: { readonly msgId: string; readonly idx: number },
  c: OwedCount,
  now: number,
  ttl: { readonly recordsMs: number; readonly refsMs: number },
): Promise<CopyCounted> {
  const r = await countCopy(redis, keys, copy, c, now, ttl);
  await clearOwed(redis, keys, domain, owedMember(copy, c));
  return r;
}
