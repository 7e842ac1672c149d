import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { Metrics } from '../observability/metrics.js';
import { getCampaign, markCampaignQueued, markListGone, recordEnqueueChunk, recordEnqueuePlan, snapshotCampaignList, type CampaignRecord } from '../store/campaigns.js';
import { getList, lastContactNo, readContactRange } from '../store/contacts.js';
import { suppressionsOf } from '../store/suppression.js';
import { controlCampaignQueue, dropCancelledQueue, pushCampaignChunk, startCampaign } from '../queue/campaign.js';
import { Ticker } from '../core/ticker.js';
import { holdLock, keepRenewing, releaseLock } from '../store/locks.js';


/**
 * The campaign enqueuer (run by housekeeping processes): turns a due campaign's list into queue
 * entries, a chunk of contacts at a time, so a million-contact campaign starts sending after its
 * first chunk rather than after its last, and no process holds the list in memory.
 *
 *   campaigns:due ─► lock ─► scheduled → sending ─► chunk: read contacts n…n+999 ─► drop the
 *   unsubscribed, bounced, complained and suppressed ─► push per destination ─► record cursor ─► …
 *   ─► whole list queued: markCampaignQueued (completes at once when nothing is pending)
 *
 * Restart-safe: the cursor is recorded after each chunk, and a chunk pushed again after a crash is a
 * no-op per destination (pushCampaign-3.lua). One enqueuer per campaign across processes (a lock key
 * with a lease), bounded work per turn, after which the campaign waits behind the others due, so
 * that huge campaigns cannot starve a small one.
 */
export interface EnqueuerOptions {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly shards: number;
  readonly logger: Logger;
  readonly metrics?: Metrics | undefined;
  /** Contacts read per chunk. */
  readonly chunkSize?: number;
  /** Chunks one campaign gets per turn before the next due campaign's turn. */
  readonly chunksPerTurn?: number;
  /** How often due campaigns are looked for when nothing wakes the enqueuer. */
  readonly intervalMs?: number;
  /** Called after a chunk is queued (the dispatcher of this process can look at once). */
  readonly onQueued?: () => void;
  /** A campaign's lock while one process queues it (default LOCK_MS; tests shorten it). */
  readonly lockMs?: number;
  readonly now?: () => number;
}

/**
 * A turn holds its campaign's lock this long, renewed every third of it while the turn runs: a turn
 * that outlasted its lock (a slow Redis, a list of huge chunks) ran beside another process's, both
 * pushing the same contacts and counting them twice as skipped.
 */
const LOCK_MS = 60_000;
const CAMPAIGNS_PER_TICK = 16;

export class CampaignEnqueuer {
  private readonly o: EnqueuerOptions;
  private readonly now: () => number;
  private readonly chunkSize: number;
  private readonly chunksPerTurn: number;
  private readonly ticker: Ticker;
  private stopping = false;

  constructor(opts: EnqueuerOptions) {
    this.o = opts;
    this.now = opts.now ?? Date.now;
    this.chunkSize = opts.chunkSize ?? 1000;
    this.chunksPerTurn = opts.chunksPerTurn ?? 20;
    // A campaign with contacts left to queue makes the next pass come at once.
    this.ticker = new Ticker(async () => (await this.tick()) > 0, opts.intervalMs ?? 1000, (err) => opts.logger.error({ err }, 'campaign enqueuer tick failed'));
  }

  start(): void {
    this.ticker.start(0);
  }

  /** A campaign was scheduled or resumed in this process: look now. */
  wake(): void {
    this.ticker.wake();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.ticker.stop();
  }

  /**
   * One pass over the due campaigns; returns how many this process left with contacts to queue. A
   * campaign another process is queueing is not counted: it is no work for this one, and counted it
   * made the ticker come again at once, round after round, for as long as the other's turn lasted.
   */
  async tick(): Promise<number> {
    const { redis, keys } = this.o;
    let unfinished = 0;
    try {
      const due = await redis.zrangebyscore(keys.campaignsDue(), '-inf', this.now(), 'LIMIT', 0, CAMPAIGNS_PER_TICK);
      for (const id of due) {
        if (this.stopping) break;
        try {
          if ((await this.turn(id)) === 'more') unfinished++;
        } catch (err) {
          // One campaign's failure is its own: the campaigns due after it still get their turn (they
          // waited behind it for good when it failed every time). Tried again at the next interval,
          // after them: CAMPAIGNS_PER_TICK failing every time would otherwise take every pass.
          this.o.logger.error({ err, campaign: id }, 'campaign enqueuer turn failed');
          await this.behindOthers(id).catch(() => undefined);
        }
      }
    } catch (err) {
      this.o.logger.error({ err }, 'campaign enqueuer tick failed');
    }
    return unfinished;
  }

  /** One turn of one campaign. Returns true when the campaign needs nothing more from the enqueuer. */
  async advance(id: string): Promise<boolean> {
    return (await this.turn(id)) === 'done';
  }

  /** One turn: 'done' (nothing more to queue), 'more', or 'locked' (another process has the turn). */
  private async turn(id: string): Promise<'done' | 'more' | 'locked'> {
    const { redis, keys } = this.o;
    const lock = keys.campaignLock(id);
    const token = randomBytes(8).toString('hex');
    const lockMs = this.o.lockMs ?? LOCK_MS;
    if (!(await holdLock(redis, lock, token, lockMs))) return 'locked';
    // Renewed while the turn runs; once it lapsed or went to another token, the turn ends before its next chunk.
    const renewal = keepRenewing(redis, lock, token, lockMs);
    try {
      let c = await getCampaign(redis, keys, null, id);
      if (c?.state === 'scheduled') {
        await startCampaign(redis, keys, id, this.now());
        c = await getCampaign(redis, keys, null, id);
        if (c) this.o.logger.info({ campaign: id, account: c.account }, 'campaign started sending');
      }
      if (!c || (c.state !== 'sending' && c.state !== 'paused') || c.enqueued) {
        await redis.zrem(keys.campaignsDue(), id);
        return 'done';
      }
      const done = await this.queueChunks(c, () => renewal.held);
      if (done) await redis.zrem(keys.campaignsDue(), id);
      else await this.behindOthers(id);
      return done ? 'done' : 'more';
    } finally {
      await renewal.end();
      await releaseLock(redis, lock, token).catch(() => undefined);
    }
  }

  /**
   * A campaign whose turn ended with contacts left goes back on the schedule as due now, behind the
   * campaigns that were due before its turn: every due campaign gets a turn within ⌈due /
   * CAMPAIGNS_PER_TICK⌉ passes, however long the lists before it (a campaign kept its send time, so
   * the first CAMPAIGNS_PER_TICK held the passes until their lists were queued whole). XX: never
   * brings back one a cancel took off.
   */
  private async behindOthers(id: string): Promise<void> {
    await this.o.redis.zadd(this.o.keys.campaignsDue(), 'XX', this.now(), id);
  }

  /** Queues up to chunksPerTurn chunks while `holding()`; true when the whole list is queued. */
  private async queueChunks(start: CampaignRecord, holding: () => boolean): Promise<boolean> {
    const { redis, keys, shards, logger } = this.o;
    const list = await getList(redis, keys, start.account, start.listId);
    // The recipients are the list as it was when sending began; contacts added since wait for the next campaign.
    const lastNo = start.lastNo ?? (list ? await snapshotCampaignList(redis, keys, start.id, await lastContactNo(redis, keys, start.listId)) : 0);
    let cursor = start.cursor;
    let chunk = start.chunk;
    let state = start.state;
    let queuedSoFar = start.queued;
    // A chunk planned (atLeast said before its push) but never recorded: its process died while
    // pushing it, so this turn's first chunk is a redo (pushCampaignChunk's `redo`).
    let redo = start.atLeast > start.queued;
    let finished = false;
    for (let n = 0; n < this.chunksPerTurn && !this.stopping; n++) {
      if (!list) break;
      if (!holding()) {
        logger.warn({ campaign: start.id }, 'campaign lock lost during a turn: another process queues the campaign now');
        return false;
      }
      const { contacts, next } = await readContactRange(redis, keys, start.listId, cursor, this.chunkSize, lastNo);
      const subscribed = contacts.filter((c) => c.status === 'subscribed');
      const blocked = await suppressionsOf(redis, keys, start.account, subscribed.map((c) => c.email));
      const byDomain = new Map<string, number[]>();
      subscribed.forEach((c, i) => {
        if (blocked[i]) return;
        const nos = byDomain.get(c.domain);
        if (nos) nos.push(c.no);
        else byDomain.set(c.domain, [c.no]);
      });
      chunk++;
      cursor = next ?? cursor + this.chunkSize;
      // Said before the push: delivery may claim these copies before recordEnqueueChunk counts them.
      let planned = 0;
      for (const nos of byDomain.values()) planned += nos.length;
      if (planned > 0) await recordEnqueuePlan(redis, keys, start.id, queuedSoFar + planned);
      const queued = await pushCampaignChunk(redis, keys, shards, { campaignId: start.id, chunk, dueAt: this.now(), sending: state === 'sending', byDomain, redo });
      redo = false;
      if (!(await recordEnqueueChunk(redis, keys, start.id, { next: cursor, chunk, queued, skipped: contacts.length - queued }))) {
        // Recorded before: by another process that took the campaign over while this one was cut
        // off from Redis past its lock (it pushed the same contacts; the queues hold each once), or
        // by this call sent again after a lost reply. The next turn goes on from what is recorded.
        logger.warn({ campaign: start.id, chunk }, 'campaign chunk recorded already: the turn ends here');
        return false;
      }
      queuedSoFar += queued;
      this.o.metrics?.campaignRecipientsQueued.inc(queued);
      if (queued > 0) this.o.onQueued?.();
      // A pause, resume or cancel that landed while this chunk was pushed did not see it: apply it again.
      const now = await getCampaign(redis, keys, null, start.id);
      if (!now || now.state === 'cancelled') {
        // Counted for a cancelled campaign, as the cancel counts what it drops; a campaign that is
        // gone (erased) has nothing left to count in.
        if (now) await dropCancelledQueue(redis, keys, shards, start.id, this.now());
        else await controlCampaignQueue(redis, keys, shards, start.id, 'cancel', this.now());
        return true;
      }
      // Likewise a pause that did not see this chunk's pointers, or a resume that did not see its
      // queues (pushed without pointers while paused): those would wait for a pointer forever.
      if (now.state === 'paused' && state === 'sending') await controlCampaignQueue(redis, keys, shards, start.id, 'pause', this.now());
      if (now.state === 'sending' && state === 'paused') await controlCampaignQueue(redis, keys, shards, start.id, 'resume', this.now());
      state = now.state;
      if (next === null) {
        finished = true;
        break;
      }
    }
    if (list && !finished) return false;
    if (!list) {
      // Deleted under the campaign (the route refuses that, but a delete racing the campaign's
      // creation gets through): said on the campaign, else it completed short, or empty, without a word.
      await markListGone(redis, keys, start.id, this.now());
      logger.warn({ campaign: start.id, account: start.account, list: start.listId, queued: queuedSoFar }, 'campaign list deleted before it was queued whole');
    }
    // No chunk can follow: the per-destination chunk records can go once their queues drain.
    await controlCampaignQueue(redis, keys, shards, start.id, 'seal', this.now());
    const after = await markCampaignQueued(redis, keys, start.id, this.now());
    const c = await getCampaign(redis, keys, null, start.id);
    logger.info({ campaign: start.id, queued: c?.queued, skipped: c?.skipped, state: after, listGone: !list }, 'campaign list queued');
    return true;
  }
}
