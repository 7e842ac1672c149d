import { Cluster, type Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { backoffState } from './backoff.js';
import { lowestScore } from './schedule.js';
import type { Rate } from './throttle.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/queueDepth-4.lua: [recipients, leased, recorded rule or ''] a destination */
    queueDepth(ready: string, leases: string, cqpos: string, rule: string): Result<(number | string)[], Context>;
    queueDepthKeys(numberOfKeys: number, ...keys: string[]): Result<(number | string)[], Context>;
  }
}

export interface DestinationStats {
  domain: string;
  /** recipients in the ready set (due now or later); campaigns' pointers there are left out (their recipients are `campaigns`) */
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
  /** the shaping rule the dispatcher last resolved for it with its MX hosts (destination-rule.ts); null when none is recorded */
  recordedRule: string | null;
}

/** Domains read per SSCAN step: a hint to the server; it bounds one reply, not the walk. */
const SCAN_COUNT = 500;

/**
 * Calls `visit` with each page of the destinations ever enqueued and not yet forgotten (every
 * shard's set, SSCAN), one page at a time: the reads a caller makes per page stay bounded however
 * many destinations there are.
 */
async function eachDestinationPage(redis: RedisClient, keys: Keys, shards: number, visit: (domains: string[], shard: number) => Promise<void>): Promise<void> {
  for (let shard = 0; shard < shards; shard++) {
    let cursor = '0';
    do {
      const [next, page] = await redis.sscan(keys.destinations(shard), cursor, 'COUNT', SCAN_COUNT);
      if (page.length > 0) await visit(page, shard);
      cursor = next;
    } while (cursor !== '0');
  }
}

/**
 * Campaign recipients waiting at a destination, and how many of its campaigns' pointers
 * ("@<campaignId>", queue/campaign.ts) are in its ready set: entries of the set that are not recipients.
 */
async function campaignsAt(redis: RedisClient, keys: Keys, domain: string): Promise<{ waiting: number; pointers: number }> {
  const ids = await redis.hkeys(keys.campaignPushed(domain));
  if (ids.length === 0) return { waiting: 0, pointers: 0 };
  const [waiting, scores] = await Promise.all([
    Promise.all(ids.map((id) => redis.llen(keys.campaignQueue(domain, id)))),
    Promise.all(ids.map((id) => redis.zscore(keys.ready(domain), `@${id}`))),
  ]);
  return { waiting: waiting.reduce((a, b) => a + b, 0), pointers: scores.filter((x) => x !== null).length };
}

/**
 * Queue figures per destination, for `sluice queue`: every destination in the destination sets
 * (all shards) is read, then they are sorted busiest first (due, then ready + leased, then name) and
 * at most `limit` are returned when given: the limit bounds the output, not the reads. Destinations
 * with nothing queued are left out. One round trip per SSCAN page plus auto-pipelined batches of
 * single-key reads (7 per destination, more with campaigns), one batch per page.
 */
export async function destinationStats(redis: RedisClient, keys: Keys, shards: number, now: number, limit?: number): Promise<DestinationStats[]> {
  const busy: DestinationStats[] = [];
  await eachDestinationPage(redis, keys, shards, async (domains, shard) => {
    const page = await Promise.all(
      domains.map(async (domain): Promise<DestinationStats> => {
        const [ready, due, leased, nextAt, scheduled, campaigns, recordedRule] = await Promise.all([
          redis.zcard(keys.ready(domain)),
          redis.zcount(keys.ready(domain), '-inf', now),
          redis.zcard(keys.leases(domain)),
          lowestScore(redis, keys.ready(domain)),
          redis.zscore(keys.schedule(shard), domain),
          campaignsAt(redis, keys, domain),
          redis.get(keys.destinationRule(domain)),
        ]);
        // A campaign's pointer in the ready set stands for its recipients, counted in `campaigns`.
        return { domain, ready: ready - campaigns.pointers, campaigns: campaigns.waiting, due, leased, nextAt, scheduledAt: scheduled === null ? null : Number(scheduled), recordedRule };
      }),
    );
    for (const s of page) if (s.ready + s.campaigns + s.leased > 0) busy.push(s);
  });
  busy.sort((a, b) => b.due - a.due || b.ready + b.campaigns + b.leased - (a.ready + a.campaigns + a.leased) || (a.domain < b.domain ? -1 : a.domain > b.domain ? 1 : 0));
  return limit === undefined ? busy : busy.slice(0, Math.max(0, limit));
}

export interface QueueTotals {
  /** recipients waiting: ready entries plus campaign recipients behind their pointers */
  recipients: number;
  /** recipients leased (being delivered) */
  leased: number;
}

/**
 * Queue depth per group over every destination, for the queue gauges: `groupOf` names each
 * destination's group (a provider label: bounded) from its domain and its recorded rule (null when
 * none). No destination is left out, so the totals are complete; the cost grows with the number of
 * destinations in the sets (those with queued mail: the reaper takes idle ones out): a read-only script
 * call (queueDepth-4.lua) per DEPTH_CHUNK destinations of an SSCAN page of 500, or per destination on
 * a cluster. `npm run bench:queue-gauges` with 100,000 destinations (redis-server 7.0, this 2-CPU
 * machine): ~2 s, 0.7–1.0 s of client CPU and 1.3–1.6 s of Redis CPU per call, against 10–13 s,
 * ~6 s and ~0.6 s with the four pipelined reads a destination it replaced (client-bound: ioredis
 * spends ~15 µs a command). The gauges' sampler (app/start.ts) reuses a slow result for a while.
 * Groups with nothing queued are absent.
 */
/** Destinations per queueDepth call on a single Redis server. */
const DEPTH_CHUNK = 100;

export async function queueTotals(redis: RedisClient, keys: Keys, shards: number, groupOf: (domain: string, recordedRule: string | null) => string): Promise<Map<string, QueueTotals>> {
  const totals = new Map<string, QueueTotals>();
  const keysOf = (d: string): string[] => [keys.ready(d), keys.leases(d), keys.campaignPushed(d), keys.destinationRule(d)];
  await eachDestinationPage(redis, keys, shards, async (domains) => {
    // A cluster spreads the destinations over its slots: one call each. A single server takes them
    // DEPTH_CHUNK at a time (a call then holds Redis for ~2 ms, not the whole page's ~10).
    const chunk = redis instanceof Cluster ? 1 : DEPTH_CHUNK;
    const calls: Promise<(number | string)[]>[] = [];
    for (let i = 0; i < domains.length; i += chunk) {
      const part = domains.slice(i, i + chunk);
      calls.push(redis.queueDepthKeys(4 * part.length, ...part.flatMap(keysOf)));
    }
    const replies = (await Promise.all(calls)).flat();
    domains.forEach((domain, i) => {
      const recipients = Number(replies[3 * i]);
      const leased = Number(replies[3 * i + 1]);
      const rule = String(replies[3 * i + 2]);
      if (recipients + leased === 0) return;
      const group = groupOf(domain, rule === '' ? null : rule);
      const t = totals.get(group) ?? { recipients: 0, leased: 0 };
      t.recipients += recipients;
      t.leased += leased;
      totals.set(group, t);
    });
  });
  return totals;
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
