import type { Logger } from 'pino';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { Metrics } from '../observability/metrics.js';
import { reapAndCount } from '../queue/reap.js';
import { clearOwed, parseOwedMember } from '../redis/owed.js';
import { countOwedCopy } from '../store/copy-count.js';
import { forgetDestination, repairSchedule } from '../queue/schedule.js';
import { Ticker } from '../core/ticker.js';

/**
 * The safety net under the dispatcher. Dispatchers reap expired leases of the destinations they
 * serve; this job also reaches destinations nobody is serving (their process died) and repairs the
 * schedule where a crash fell between writing a recipient and scheduling its destination. Work per
 * tick is bounded: one SSCAN page per shard, so a million destinations never block Redis.
 *
 * A destination found with nothing queued on two visits in a row (a pass apart) is taken out of the
 * destination sets (forgetDestination): without that the sets, and so the time a pass takes, would
 * grow with every domain ever mailed, and leases at a dead process's destination would wait longer
 * and longer to be reaped.
 *
 * On a Redis Cluster a copy's final outcome and its count on its message or campaign are two calls
 * (two slots); the outcome notes the count as owed (queue/lua/lib/owed.lua). A count still owed
 * counts.graceMs (the delivery lease) after its outcome was written (a process died between the
 * two, or its count failed) is made here, once (store/copy-count.ts), so a campaign completes and a
 * message's body goes.
 */
export interface ReaperOptions {
  redis: RedisClient;
  keys: Keys;
  shards: number;
  intervalMs: number;
  logger: Logger;
  metrics?: Metrics | undefined;
  now?: () => number;
  /**
   * For the owed counts it makes: the retention of a finished message's record and of its address
   * references (retention.records, refsTtlMs), and how long after its outcome a count may still be on
   * its way from the dispatcher that wrote it (delivery.lease: a live holder counts at once; one
   * stalled longer has lost its leases too). Counting early costs nothing but the work: a copy is
   * counted once, whoever comes first.
   */
  counts: { readonly recordsMs: number; readonly refsMs: number; readonly graceMs?: number };
}

/** How long after its outcome a count may still be on its way from the dispatcher that wrote it (when counts.graceMs is not given). */
export const OWED_GRACE_MS = 60_000;
/** Owed counts made per destination per visit. */
const OWED_PER_VISIT = 100;

/** Destinations visited per shard per tick. */
const SCAN_COUNT = 200;
/** Expired leases returned per reap call, and calls per destination per visit (see reapAll). */
const REAP_CALL = 1000;
const REAP_CALLS = 20;

export class Reaper {
  private readonly cursors: string[];
  /** Destinations found with nothing queued on the last visit: forgotten if still so on the next. */
  private readonly emptyBefore = new Set<string>();
  private readonly now: () => number;
  private readonly ticker: Ticker;
  private stopped = false;

  constructor(private readonly o: ReaperOptions) {
    this.cursors = Array.from({ length: o.shards }, () => '0');
    this.now = o.now ?? Date.now;
    this.ticker = new Ticker(() => this.tick(), o.intervalMs, (err) => o.logger.error({ err }, 'reaper tick failed'));
  }

  start(): void {
    this.ticker.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.ticker.stop();
  }

  /**
   * Every expired lease of a destination back to ready, REAP_CALL at a time (one script call holds
   * Redis for ~10 ms at 1,000), REAP_CALLS calls at most a visit: a dead process's leases at one
   * destination (up to its delivery.maxClaimed) are back in one visit, not one REAP_CALL a lap.
   */
  private async reapAll(domain: string): Promise<{ moved: number; left: number; owed: number }> {
    let moved = 0;
    let owed = 0;
    for (let call = 0; ; call++) {
      const now = this.now();
      const r = await reapAndCount(this.o.redis, this.o.keys, domain, now, REAP_CALL, call === 0 ? { before: now - (this.o.counts.graceMs ?? OWED_GRACE_MS), limit: OWED_PER_VISIT } : undefined);
      moved += r.moved;
      for (const member of r.owed) if (await this.countOwed(domain, member, now)) owed++;
      if (r.moved < REAP_CALL || call + 1 >= REAP_CALLS || this.stopped) return { moved, left: r.left, owed };
    }
  }

  /**
   * Makes a count a crash left owed, then forgets it; true when this call counted it. A count that
   * fails (its message's master refuses writes, is out of reach) stays owed, moved behind the others
   * of its destination, and the pass goes on: the other destinations' leases do not wait on that master.
   */
  private async countOwed(domain: string, member: string, now: number): Promise<boolean> {
    const { redis, keys } = this.o;
    const c = parseOwedMember(member);
    let counted = false;
    try {
      if (c) {
        const kind = (await countOwedCopy(redis, keys, domain, c, c, now, this.o.counts)).kind;
        counted = kind === 'campaign' || kind === 'message';
      } else {
        this.o.logger.warn({ domain, member }, 'an owed count that is not one: dropped');
        await clearOwed(redis, keys, domain, member);
      }
    } catch (err) {
      this.o.logger.warn({ err, domain, msgId: c?.msgId }, 'an owed count could not be made: tried again on a later pass');
      await redis.zadd(keys.owed(domain), 'XX', now, member).catch(() => undefined);
    }
    return counted;
  }

  /** One pass: every shard's next page of destinations. Returns leases reaped, domains rescheduled and forgotten. */
  async tick(): Promise<{ reaped: number; repaired: number; forgotten: number; counted: number }> {
    const { redis, keys } = this.o;
    let reaped = 0;
    let forgotten = 0;
    let counted = 0;
    for (let shard = 0; shard < this.o.shards && !this.stopped; shard++) {
      const [cursor, domains] = await redis.sscan(keys.destinations(shard), this.cursors[shard] as string, 'COUNT', SCAN_COUNT);
      this.cursors[shard] = cursor;
      const counts = await Promise.all(domains.map((d) => this.reapAll(d)));
      const idle: string[] = [];
      counts.forEach(({ moved, left, owed }, i) => {
        reaped += moved;
        counted += owed;
        const domain = domains[i] as string;
        if (left > 0) this.emptyBefore.delete(domain);
        else if (this.emptyBefore.delete(domain)) idle.push(domain);
        else this.emptyBefore.add(domain);
      });
      forgotten += (await Promise.all(idle.map((d) => forgetDestination(redis, keys, this.o.shards, d, this.now())))).filter(Boolean).length;
    }
    // Said before the repair, which may fail: the leases are back in the queue whatever it does.
    if (counted > 0) this.o.logger.warn({ counted }, 'final outcomes a crash left uncounted counted on their messages and campaigns');
    if (reaped > 0) {
      this.o.metrics?.leasesReaped.inc(reaped);
      this.o.logger.info({ reaped }, 'expired leases returned to the queue');
    }
    const repaired = await repairSchedule(redis, keys, this.o.shards, this.now(), SCAN_COUNT);
    if (repaired > 0) this.o.logger.warn({ repaired }, 'destinations with unscheduled work rescheduled');
    if (forgotten > 0) this.o.logger.debug({ forgotten }, 'destinations with nothing queued forgotten');
    return { reaped, repaired, forgotten, counted };
  }
}
