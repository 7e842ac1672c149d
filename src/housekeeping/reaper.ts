import type { Logger } from 'pino';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { Metrics } from '../observability/metrics.js';
import { reapAndCount } from '../queue/reap.js';
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
 */
export interface ReaperOptions {
  redis: RedisClient;
  keys: Keys;
  shards: number;
  intervalMs: number;
  logger: Logger;
  metrics?: Metrics | undefined;
  now?: () => number;
}

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
  private async reapAll(domain: string): Promise<{ moved: number; left: number }> {
    let moved = 0;
    for (let call = 0; ; call++) {
      const r = await reapAndCount(this.o.redis, this.o.keys, domain, this.now(), REAP_CALL);
      moved += r.moved;
      if (r.moved < REAP_CALL || call + 1 >= REAP_CALLS || this.stopped) return { moved, left: r.left };
    }
  }

  /** One pass: every shard's next page of destinations. Returns leases reaped, domains rescheduled and forgotten. */
  async tick(): Promise<{ reaped: number; repaired: number; forgotten: number }> {
    const { redis, keys } = this.o;
    let reaped = 0;
    let forgotten = 0;
    for (let shard = 0; shard < this.o.shards && !this.stopped; shard++) {
      const [cursor, domains] = await redis.sscan(keys.destinations(shard), this.cursors[shard] as string, 'COUNT', SCAN_COUNT);
      this.cursors[shard] = cursor;
      const counts = await Promise.all(domains.map((d) => this.reapAll(d)));
      const idle: string[] = [];
      counts.forEach(({ moved, left }, i) => {
        reaped += moved;
        const domain = domains[i] as string;
        if (left > 0) this.emptyBefore.delete(domain);
        else if (this.emptyBefore.delete(domain)) idle.push(domain);
        else this.emptyBefore.add(domain);
      });
      forgotten += (await Promise.all(idle.map((d) => forgetDestination(redis, keys, this.o.shards, d, this.now())))).filter(Boolean).length;
    }
    // Said before the repair, which may fail: the leases are back in the queue whatever it does.
    if (reaped > 0) {
      this.o.metrics?.leasesReaped.inc(reaped);
      this.o.logger.info({ reaped }, 'expired leases returned to the queue');
    }
    const repaired = await repairSchedule(redis, keys, this.o.shards, this.now(), SCAN_COUNT);
    if (repaired > 0) this.o.logger.warn({ repaired }, 'destinations with unscheduled work rescheduled');
    if (forgotten > 0) this.o.logger.debug({ forgotten }, 'destinations with nothing queued forgotten');
    return { reaped, repaired, forgotten };
  }
}
