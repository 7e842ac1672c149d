import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/recordTrackingEvent-4.lua; idx '' is anonymous mode (counted, no mark). */
    recordTrackingEvent(
      marks: string, links: string, stats: string, meta: string, kind: string, idx: number | '', link: number, now: number, burstMs: number, ttlMs: number, cls: '' | 'm', burstLinks: number, rcpt?: number,
    ): Result<[number, number, string | null, number, number, number], Context>;
  }
}

/**
 * A message's engagement counters, one HASH per message under its hash tag:
 *
 *   {m:<id>}:stats  opens_human         opens not classified as a machine's
 *                   opens_unique_human  recipients with at least one human open (full mode only)
 *                   machine_opens       opens by a proxy or scanner (Apple MPP, HEAD, …)
 *                   clicks_human, clicks_unique_human, machine_clicks   the same for clicks
 *                   unsubscribes        recipients who unsubscribed (a repeat is not counted)
 *
 * The tracking scripts (recordTrackingOpens-3.lua, recordTrackingEvent-4.lua) increment them in the
 * same call that sets the per-recipient marks, so counting costs no round trip of its own. They count
 * in 'anonymous' mode too, where no per-recipient mark exists: there the unique counts stay 0, since
 * "unique" needs to know who, which that mode must not keep. Fields that were never incremented are
 * absent from the hash and read as 0. The raw totals (`opens`, `clicks`: people and machines) are
 * the sums human + machine, not counters of their own: one Redis call less per open.
 */
export interface Engagement {
  readonly opens: number;
  readonly opensHuman: number;
  readonly opensUniqueHuman: number;
  readonly machineOpens: number;
  readonly clicks: number;
  readonly clicksHuman: number;
  readonly clicksUniqueHuman: number;
  readonly machineClicks: number;
  readonly unsubscribes: number;
}

/** The counters kept in the HASH, and their field names (the names the Lua scripts use). */
type Stored = Exclude<keyof Engagement, 'opens' | 'clicks'>;
export const ENGAGEMENT_FIELDS: { readonly [K in Stored]: string } = {
  opensHuman: 'opens_human',
  opensUniqueHuman: 'opens_unique_human',
  machineOpens: 'machine_opens',
  clicksHuman: 'clicks_human',
  clicksUniqueHuman: 'clicks_unique_human',
  machineClicks: 'machine_clicks',
  unsubscribes: 'unsubscribes',
};

const STORED = Object.keys(ENGAGEMENT_FIELDS) as Stored[];
const NAMES: readonly (keyof Engagement)[] = ['opens', 'clicks', ...STORED];

export const NO_ENGAGEMENT: Engagement = Object.freeze(Object.fromEntries(NAMES.map((n) => [n, 0])) as unknown as Engagement);

/** The counters of a stats HASH as read (HGETALL); a missing or malformed field counts 0. Pure. */
export function toEngagement(hash: Readonly<Record<string, string>>): Engagement {
  const out = {} as Record<keyof Engagement, number>;
  for (const n of STORED) {
    const v = Number(hash[ENGAGEMENT_FIELDS[n]] ?? 0);
    out[n] = Number.isSafeInteger(v) && v > 0 ? v : 0;
  }
  out.opens = out.opensHuman + out.machineOpens;
  out.clicks = out.clicksHuman + out.machineClicks;
  return out;
}

/** The sum of many messages' counters (a campaign's, an account's day). Pure. */
export function sumEngagement(all: Iterable<Engagement>): Engagement {
  const out = { ...NO_ENGAGEMENT } as Record<keyof Engagement, number>;
  for (const e of all) for (const n of NAMES) out[n] += e[n];
  return out;
}

/** One message's counters (all 0 when nothing was recorded or the record expired). */
export async function readEngagement(redis: RedisClient, keys: Keys, msgId: string): Promise<Engagement> {
  return toEngagement(await redis.hgetall(keys.msgStats(msgId)));
}

/**
 * Marks a recipient's unsubscribe and counts it in the message's `unsubscribes` (a repeat is not
 * counted): what the tracking server's one-click does through tracking/record.ts mark(), for the
 * roles that unsubscribe otherwise (mail to the List-Unsubscribe mailto address). True when it is
 * the recipient's first. `ttlMs`: how long the mark is kept (config retention.records).
 */
export async function markUnsubscribe(redis: RedisClient, keys: Keys, msgId: string, idx: number, now: number, ttlMs: number): Promise<boolean> {
  // The burst arguments only matter to clicks.
  const [first] = await redis.recordTrackingEvent(keys.trackMarks(msgId), keys.links(msgId), keys.msgStats(msgId), keys.msgMeta(msgId), 'u', idx, 0, now, 0, ttlMs, '', 0);
  return first === 1;
}
