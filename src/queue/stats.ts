import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { backoffState } from './backoff.js';
import { lowestScore } from './schedule.js';
import type { Rate } from './throttle.js';

export interface DestinationStats {
  domain: string;
  /** entries in the ready set (due now or later); a campaign's waiting recipients count as one pointer here */
  ready: number;
  /** campaign recipients waiting behind the campaigns' pointers (paused campaigns' included) */
  campaigns: number;
  /** of those, due at or before `now` */
  due: number;
  /** entries being delivered (leased) */
  leased: number;
  /** earliest ready entry's due time */
  nextAt: number | null;
  /** the destination's schedule score */
  scheduledAt: number | null;
}

/** Domains read per SSCAN step: a hint to the server; it bounds one reply, not the walk. */
const SCAN_COUNT = 500;

/**
 * Queue figures per destination, for `sluice queue` and the queue-depth gauges: every destination
 * ever enqueued (all shards), busiest first (due, then ready + leased, then name), at most `limit`
 * when given. Destinations with nothing queued are left out. One round trip per SSCAN page plus one
 * auto-pipelined batch of single-key reads.
 */
export async function destinationStats(redis: RedisClient, keys: Keys, shards: number, now: number, limit?: number): Promise<DestinationStats[]> {
  const domains: { domain: string; shard: number }[] = [];
  for (let shard = 0; shard < shards; shard++) {
    let cursor = '0';
    do {
      const [next, page] = await redis.sscan(keys.destinations(shard), cursor, 'COUNT', SCAN_COUNT);
      for (const domain of page) domains.push({ domain, shard });
      cursor = next;
    } while (cursor !== '0');
  }

  const all = await Promise.all(
    domains.map(async ({ domain, shard }): Promise<DestinationStats> => {
      const [ready, due, leased, nextAt, scheduled, campaignIds] = await Promise.all([
        redis.zcard(keys.ready(domain)),
        redis.zcount(keys.ready(domain), '-inf', now),
        redis.zcard(keys.leases(domain)),
        lowestScore(redis, keys.ready(domain)),
        redis.zscore(keys.schedule(shard), domain),
        redis.hkeys(keys.campaignPushed(domain)),
      ]);
      const waiting = await Promise.all(campaignIds.map((id) => redis.llen(keys.campaignQueue(domain, id))));
      const campaigns = waiting.reduce((a, b) => a + b, 0);
      return { domain, ready, campaigns, due, leased, nextAt, scheduledAt: scheduled === null ? null : Number(scheduled) };
    }),
  );
  const busy = all.filter((s) => s.ready + s.campaigns + s.leased > 0);
  busy.sort((a, b) => b.due - a.due || b.ready + b.campaigns + b.leased - (a.ready + a.campaigns + a.leased) || (a.domain < b.domain ? -1 : a.domain > b.domain ? 1 : 0));
  return limit === undefined ? busy : busy.slice(0, Math.max(0, limit));
}

const WINDOWS = [
  ['perSecond', 's', 1000],
  ['perMinute', 'm', 60_000],
  ['perHour', 'h', 3_600_000],
] as const;

/**
 * A throttle scope as it stands: live connection slots, tokens left per limited window (refilled to
 * `now`, read-only: same arithmetic as takeTokens-1.lua), and the backoff suspension end.
 */
export async function scopeStats(redis: RedisClient, keys: Keys, scope: string, rate: Rate, now: number): Promise<{ connections: number; tokens: Record<string, number>; suspendedUntil: number | null }> {
  const [connections, bucket, backoff] = await Promise.all([
    redis.zcount(keys.conns(scope), `(${now}`, '+inf'),
    redis.hgetall(keys.bucket(scope)),
    backoffState(redis, keys, scope, now),
  ]);
  const tokens: Record<string, number> = {};
  for (const [field, short, span] of WINDOWS) {
    const limit = rate[field];
    if (limit === null) continue;
    const left = Number(bucket[short]);
    const at = Number(bucket[`${short}:t`]);
    tokens[field] = Number.isFinite(left) && Number.isFinite(at) ? Math.floor(Math.min(limit, left + Math.max(0, now - at) * (limit / span))) : limit;
  }
  return { connections, tokens, suspendedUntil: backoff.suspendedUntil };
}
