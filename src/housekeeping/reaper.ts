import type { Logger } from 'pino';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { Metrics } from '../observability/metrics.js';
import { reapExpired } from '../queue/reap.js';
import { repairSchedule } from '../queue/schedule.js';
import { Ticker } from '../core/ticker.js';

/**
 * The safety net under the dispatcher. Dispatchers reap expired leases of the destinations they
 * serve; this job also reaches destinations nobody is serving (their process died) and repairs the
 * schedule where a crash fell between writing a recipient and scheduling its destination. Work per
 * tick is bounded: one SSCAN page per shard, so a million destinations never block Redis.
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

export class Reaper {
  private readonly cursors: string[];
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

  /** One pass: every shard's next page of destinations. Returns leases reaped and domains rescheduled. */
  async tick(): Promise<{ reaped: number; repaired: number }> {
    const { redis, keys } = this.o;
    let reaped = 0;
    for (let shard = 0; shard < this.o.shards && !this.stopped; shard++) {
      const [cursor, domains] = await redis.sscan(keys.destinations(shard), this.cursors[shard] as string, 'COUNT', SCAN_COUNT);
      this.cursors[shard] = cursor;
      const counts = await Promise.all(domains.map((d) => reapExpired(redis, keys, d, this.now(), 1000)));
      reaped += counts.reduce((a, b) => a + b, 0);
    }
    const repaired = await repairSchedule(redis, keys, this.o.shards, this.now(), SCAN_COUNT);
    if (reaped > 0) {
      this.o.metrics?.leasesReaped.inc(reaped);
      this.o.logger.info({ reaped }, 'expired leases returned to the queue');
    }
    if (repaired > 0) this.o.logger.warn({ repaired }, 'destinations with unscheduled work rescheduled');
    return { reaped, repaired };
  }
}
