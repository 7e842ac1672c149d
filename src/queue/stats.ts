import { Cluster, type Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { backoffState } from './backoff.js';
import { lowestScore } from './schedule.js';
import type { Rate } from './throttle.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/queueDepth-4.lua: [ready, waiting, leased, recorded rule or ''] a destination */
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
export async function eachDestinationPage(redis: RedisClient, keys: Keys, shards: number, visit: (domains: string[], shard: number) => Promise<void>): Promise<void> {
  for (let shard = 0; shard < shards; shard++) {
    let cursor = '0';
    do {
      const [next, page] = await redis.sscan(keys.destinations(shard), cursor, 'COUNT', SCAN_COUNT);
      if (page.length > 0) await visit(page, shard);
      cursor = next;
    } while (cursor !== '0');
  }
}

/** What a destination holds (queueDepth-4.lua). */
interface Depth {
  /** entries of its ready set other than campaign pointers */
  ready: number;
  /** campaign recipients waiting behind the pointers (paused campaigns' included) */
  waiting: number;
  leased: number;
  /** the recorded shaping rule, null when none */
  rule: string | null;
}

/** Destinations per queueDepth call on a single Redis server. */
const DEPTH_CHUNK = 100;

/**
 * queueDepth of each of `domains`, in order. A cluster spreads the destinations over its slots: one
 * call each. A single server takes them DEPTH_CHUNK at a time (a call then holds Redis for ~2 ms,
 * not a whole SSCAN page's ~10).
 */
async function depths(redis: RedisClient, keys: Keys, domains: readonly string[]): Promise<Depth[]> {
  const keysOf = (d: string): string[] => [keys.ready(d), keys.leases(d), keys.campaignPushed(d), keys.destinationRule(d)];
  const chunk = redis instanceof Cluster ? 1 : DEPTH_CHUNK;
  const calls: Promise<(number | string)[]>[] = [];
  for (let i = 0; i < domains.length; i += chunk) {
    const part = domains.slice(i, i + chunk);
    calls.push(redis.queueDepthKeys(4 * part.length, ...part.flatMap(keysOf)));
  }
  const replies = (await Promise.all(calls)).flat();
  return domains.map((_, i) => {
    const rule = String(replies[4 * i + 3]);
    return { ready: Number(replies[4 * i]), waiting: Number(replies[4 * i + 1]), leased: Number(replies[4 * i + 2]), rule: rule === '' ? null : rule };
  });
}

/**
 * Queue figures per destination, for `sluice queue`: every destination in the destination sets
 * (all shards) is read, then they are sorted busiest first (due, then ready + leased, then name) and
 * at most `limit` are returned when given: the limit bounds the output, not the reads. Destinations
 * with nothing queued are left out. Per SSCAN page: the queueDepth calls of queueTotals, and three
 * single-key reads a destination (due count, earliest entry, schedule score), auto-pipelined.
 */
export async function destinationStats(redis: RedisClient, keys: Keys, shards: number, now: number, limit?: number): Promise<DestinationStats[]> {
  const busy: DestinationStats[] = [];
  await eachDestinationPage(redis, keys, shards, async (domains, shard) => {
    const [held, page] = await Promise.all([
      depths(redis, keys, domains),
      Promise.all(domains.map((domain) => Promise.all([redis.zcount(keys.ready(domain), '-inf', now), lowestScore(redis, keys.ready(domain)), redis.zscore(keys.schedule(shard), domain)]))),
    ]);
    domains.forEach((domain, i) => {
      const d = held[i] as Depth;
      const [due, nextAt, scheduled] = page[i] as [number, number | null, string | null];
      // A campaign's pointer in the ready set stands for its recipients, counted in `campaigns`.
      if (d.ready + d.waiting + d.leased > 0) busy.push({ domain, ready: d.ready, campaigns: d.waiting, due, leased: d.leased, nextAt, scheduledAt: scheduled === null ? null : Number(scheduled), recordedRule: d.rule });
    });
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
 * call (queueDepth-4.lua, see depths) per DEPTH_CHUNK destinations of an SSCAN page of 500, or per
 * destination on a cluster. `npm run bench:queue-gauges` with 100,000 destinations (redis-server 7.0, this 2-CPU
 * machine): ~2 s, 0.7–1.0 s of client CPU and 1.3–1.6 s of Redis CPU per call, against 10–13 s,
 * ~6 s and ~0.6 s with the four pipelined reads a destination it replaced (client-bound: ioredis
 * spends ~15 µs a command). The gauges' sampler (app/start.ts) reuses a slow result for a while.
 * Groups with nothing queued are absent.
 */
export async function queueTotals(redis: RedisClient, keys: Keys, shards: number, groupOf: (domain: string, recordedRule: string | null) => string): Promise<Map<string, QueueTotals>> {
  const totals = new Map<string, QueueTotals>();
  await eachDestinationPage(redis, keys, shards, async (domains) => {
    (await depths(redis, keys, domains)).forEach((d, i) => {
      const recipients = d.ready + d.waiting;
      if (recipients + d.leased === 0) return;
      const group = groupOf(domains[i] as string, d.rule);
      const t = totals.get(group) ?? { recipients: 0, leased: 0 };
      t.recipients += recipients;
      t.leased += d.leased;
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
