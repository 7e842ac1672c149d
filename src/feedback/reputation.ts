import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { HOUR } from '../core/time.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import {
  ACCOUNT_SCOPE,
  figuresOf,
  isPaused,
  listPaused,
  MAX_WINDOW_HOURS,
  pauseSender,
  pausedScopes,
  readFigures,
  recordOutcome,
  resumeSender,
  pauseByOperator,
  type Figures,
  type OutcomeKind,
  type GuardReason,
  type PauseRecord,
  BUCKET_MS,
  resumedSince,
} from '../store/reputation.js';
import { appendEvent } from '../store/events.js';
import { campaignStats, getCampaign, type CampaignGuardPause } from '../store/campaigns.js';
import { pauseCampaign } from '../queue/campaign.js';

/**
 * The reputation guard: rolling hard-bounce and complaint rates per account and per sending domain,
 * and an automatic pause when one crosses its threshold. Mailbox providers judge a sender on these
 * two rates: Gmail and Yahoo's bulk-sender rules draw the complaint line at 0.3 %, and a hard-bounce
 * rate above a few percent means a list that was bought, scraped or left to rot. Pausing costs the
 * sender a few hours; sending on through the problem can cost it the provider for weeks.
 *
 * Deliveries only lower the rates, so only a hard bounce or a complaint triggers an evaluation — the
 * common outcome costs one MULTI and nothing more. The pause check at claim time is cached per
 * sender for `checkCacheMs`, so a busy dispatcher asks Redis about each sender about once a second.
 */
export interface ReputationOptions {
  /** Complaints / delivered above this pause the sender (ratio 0–1). Default 0.003 (0.3 %). */
  readonly complaintRate: number;
  /** Hard bounces / sent above this pause the sender (ratio 0–1). Default 0.05 (5 %). */
  readonly hardBounceRate: number;
  /** Below this many sent (delivered + hard bounces) in the window a sender is never paused: one complaint out of 20 messages is noise, not a rate. Default 500. */
  readonly minVolume: number;
  /** The rolling window, in whole hours (1–168). Default 24. */
  readonly windowHours: number;
  /** How long a pause check's answer is reused. Default 1000 ms; 0 = ask Redis every time. */
  readonly checkCacheMs: number;
  /** Deliveries are counted in memory and written this often; 0 = one write per delivery. Default 0. */
  readonly deliveredFlushMs: number;
}

export const DEFAULT_REPUTATION_OPTIONS: ReputationOptions = {
  complaintRate: 0.003,
  hardBounceRate: 0.05,
  minVolume: 500,
  windowHours: 24,
  checkCacheMs: 1000,
  deliveredFlushMs: 0,
};

/**
 * The guard's options from the config's `reputation` section: one reading for the daemon and the
 * CLI, so that `sluice sender status` judges the figures over the window the daemon pauses on.
 */
export function reputationOptionsOf(cfg: Config['reputation']): Partial<ReputationOptions> {
  return {
    complaintRate: cfg.complaintRate,
    hardBounceRate: cfg.hardBounceRate,
    minVolume: cfg.minVolume,
    windowHours: Math.max(1, Math.round(cfg.window / HOUR)),
    deliveredFlushMs: cfg.countFlush,
  };
}

export interface ReputationDeps {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly eventsMaxLen: number;
  readonly logger?: Logger | undefined;
  readonly now?: (() => number) | undefined;
  /** Called once per new pause (e.g. to log, count, or wake a webhook). Must not throw. */
  readonly onPaused?: ((pause: PauseRecord) => void) | undefined;
  /** Schedule shards (redis.scheduleShards): pausing a campaign walks its destinations. Default 16. */
  readonly shards?: number | undefined;
}

export interface OutcomeRecord {
  readonly account: string;
  /** The sending (From) domain; null when unknown (then only the account's figures count it). */
  readonly domain: string | null;
  readonly kind: OutcomeKind;
  /**
   * A hard bounce by mail (a DSN) of a copy counted delivered when the remote server took it: it
   * leaves the delivered count as it joins the hard bounces, or it would sit in both, and the rate's
   * divisor too (1,000 delivered and 52 bounced later read 4.9 %, under a 5 % threshold).
   */
  readonly wasDelivered?: boolean;
  /**
   * For a complaint or a hard bounce by mail: when its copy was delivered (its delivery record's
   * time). A copy delivered before the sender's last resume counts nothing (the resume cleared the
   * figures of the mail the pause judged: its late reports would pause it again for that same mail),
   * and one delivered before the window leaves no delivery to take back.
   */
  readonly deliveredAt?: number | undefined;
  /**
   * What is counted, for a count that may be asked again (a feedback mail's processing retried after
   * a failure or a crash between its count and the note of it): counted once per id over the window.
   */
  readonly id?: string;
  /** Default: deps.now(). */
  readonly now?: number | undefined;
}

export interface Evaluation {
  /** The figures of each scope evaluated ('*' = the account). */
  readonly figures: ReadonlyMap<string, Figures>;
  /** Pauses this evaluation created (empty when none, or when the sender was paused already). */
  readonly paused: readonly PauseRecord[];
}

/** What crosses a threshold in these figures, complaints first (the graver signal), or null. */
export function thresholdCrossed(f: Figures, o: Pick<ReputationOptions, 'complaintRate' | 'hardBounceRate' | 'minVolume'>): { reason: GuardReason; threshold: number } | null {
  if (f.sent < o.minVolume) return null;
  if (f.complaintRate > o.complaintRate) return { reason: 'complaints', threshold: o.complaintRate };
  if (f.hardBounceRate > o.hardBounceRate) return { reason: 'hardbounces', threshold: o.hardBounceRate };
  return null;
}

// Senders whose pause state is cached: far more than one process's accounts × domains, small in memory.
const MAX_CACHED_SENDERS = 10_000;

export class ReputationGuard {
  readonly options: ReputationOptions;
  readonly #cache = new Map<string, { until: number; pause: PauseRecord | null }>();
  readonly #evaluating = new Set<string>();
  /** Deliveries counted in memory, flushed every deliveredFlushMs (account|domain|hour → count). */
  readonly #delivered = new Map<string, { account: string; domain: string | null; now: number; count: number }>();
  #flushTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: ReputationDeps,
    options: Partial<ReputationOptions> = {},
  ) {
    const o = { ...DEFAULT_REPUTATION_OPTIONS, ...options };
    if (!Number.isInteger(o.windowHours) || o.windowHours < 1 || o.windowHours > MAX_WINDOW_HOURS) {
      throw new RangeError(`windowHours must be a whole number of hours from 1 to ${MAX_WINDOW_HOURS}, not ${o.windowHours}`);
    }
    this.options = o;
  }

  /** Writes the deliveries counted in memory. Called by the timer, before each evaluation, and on close. */
  async flush(): Promise<void> {
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (this.#delivered.size === 0) return;
    const pending = [...this.#delivered.entries()];
    this.#delivered.clear();
    const written = await Promise.allSettled(pending.map(([, p]) => recordOutcome(this.deps.redis, this.deps.keys, { account: p.account, domain: p.domain, kind: 'delivered', now: p.now, count: p.count }, this.options.windowHours)));
    // Deliveries are the rates' denominator: a count Redis refused goes back, written with the next
    // flush, rather than lost (the rates would rise, and could pause a sender that sends well).
    let failed: unknown;
    written.forEach((w, i) => {
      if (w.status === 'fulfilled') return;
      failed ??= w.reason;
      const [k, p] = pending[i] as (typeof pending)[number];
      const cur = this.#delivered.get(k);
      if (cur) cur.count += p.count;
      else this.#delivered.set(k, p);
    });
    if (failed === undefined) return;
    this.#scheduleFlush();
    throw failed;
  }

  /** The next flush of the deliveries counted in memory, deliveredFlushMs from now (one timer at a time). */
  #scheduleFlush(): void {
    this.#flushTimer ??= setTimeout(
      () => void this.flush().catch((err: unknown) => this.deps.logger?.warn({ err }, 'delivery counts of the reputation guard not written: tried again at the next flush')),
      this.options.deliveredFlushMs,
    );
    this.#flushTimer.unref?.();
  }

  async close(): Promise<void> {
    await this.flush();
  }

  #now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /**
   * Counts one outcome and, for a hard bounce or a complaint, evaluates the sender: the dispatcher
   * calls it for deliveries and synchronous hard bounces, the feedback processor for complaints and
   * asynchronous hard bounces. Returns the pauses it caused.
   */
  async record(o: OutcomeRecord): Promise<readonly PauseRecord[]> {
    const now = o.now ?? this.#now();
    if (o.kind === 'delivered' && this.options.deliveredFlushMs > 0) {
      // Deliveries are the bulk (one per recipient) and never trigger a pause: counted in memory and
      // written as one HINCRBY per sender and hour every deliveredFlushMs, not one transaction each.
      const k = `${o.account}|${o.domain ?? ''}|${Math.floor(now / BUCKET_MS)}`;
      const cur = this.#delivered.get(k);
      if (cur) cur.count++;
      else this.#delivered.set(k, { account: o.account, domain: o.domain, now, count: 1 });
      this.#scheduleFlush();
      return [];
    }
    // A bad outcome is judged against every delivery counted so far.
    if (o.kind !== 'delivered') await this.flush();
    let undo = o.wasDelivered === true;
    if (o.kind !== 'delivered' && o.deliveredAt !== undefined) {
      if (o.deliveredAt < (await resumedSince(this.deps.redis, this.deps.keys, o.account, o.domain))) return [];
      undo &&= o.deliveredAt >= now - this.options.windowHours * BUCKET_MS;
    }
    const id = o.id !== undefined ? { id: o.id, keepMs: (this.options.windowHours + 1) * BUCKET_MS } : {};
    await recordOutcome(this.deps.redis, this.deps.keys, { account: o.account, domain: o.domain, kind: o.kind, now, ...(undo ? { undoDelivered: true } : {}), ...id }, this.options.windowHours);
    if (o.kind === 'delivered') return [];
    // One evaluation per sender at a time: a burst of bounces would otherwise read the same window
    // once per bounce; the one in flight already sees (nearly) all of them, and the next bad outcome
    // after it evaluates again.
    const flight = `${o.account}|${o.domain ?? ACCOUNT_SCOPE}`;
    if (this.#evaluating.has(flight)) return [];
    this.#evaluating.add(flight);
    try {
      return (await this.evaluate(o.account, o.domain, now)).paused;
    } finally {
      this.#evaluating.delete(flight);
    }
  }

  /**
   * Reads the domain's and the account's figures and pauses what crossed a threshold: the domain
   * when its own figures do; the whole account only when no single domain explains it — the
   * problem then spans the account's domains (several small ones, each under the minimum volume).
   * Mail of domains paused already is left out of the account's figures: it has been acted on.
   */
  async evaluate(account: string, domain: string | null, now = this.#now()): Promise<Evaluation> {
    const { redis, keys } = this.deps;
    const own = domain === null || domain === '' ? null : domain.toLowerCase();
    const pausedNow = await pausedScopes(redis, keys, account);
    const others = pausedNow.filter((s) => s !== ACCOUNT_SCOPE && s !== own);
    const scopes = [...(own === null ? [] : [own]), ACCOUNT_SCOPE, ...others];
    const figures = await readFigures(redis, keys, account, scopes, now, this.options.windowHours);
    const paused: PauseRecord[] = [];
    const pause = async (scope: string, f: Figures, v: { reason: GuardReason; threshold: number }) => {
      const rec = await pauseSender(redis, keys, account, scope === ACCOUNT_SCOPE ? null : scope, v.reason, f, { threshold: v.threshold, windowHours: this.options.windowHours }, { now, eventsMaxLen: this.deps.eventsMaxLen });
      if (!rec) return;
      paused.push(rec);
      this.#forget(account);
      this.deps.logger?.warn({ account, scope, reason: v.reason, figures: f }, 'sender paused by the reputation guard');
      this.deps.onPaused?.(rec);
    };
    if (own !== null) {
      const f = figures.get(own) as Figures;
      const v = thresholdCrossed(f, this.options);
      // The domain crossed (now, or before and it is paused already): the account is not judged on it.
      if (v) {
        await pause(own, f, v);
        return { figures, paused };
      }
    }
    if (pausedNow.includes(ACCOUNT_SCOPE)) return { figures, paused };
    const all = figures.get(ACCOUNT_SCOPE) as Figures;
    const rest = others.reduce((acc, s) => {
      const o = figures.get(s) as Figures;
      return figuresOf(acc.delivered - o.delivered, acc.hardbounces - o.hardbounces, acc.complaints - o.complaints);
    }, all);
    const v = thresholdCrossed(rest, this.options);
    if (v) await pause(ACCOUNT_SCOPE, rest, v);
    return { figures, paused };
  }

  /**
   * The pause that stops this sender's mail now (the account-wide one, else the domain's), or null.
   * For the dispatcher at claim time: a paused sender's entries are deferred, not bounced.
   */
  async check(account: string, domain: string | null): Promise<PauseRecord | null> {
    const ttl = this.options.checkCacheMs;
    const key = `${account}|${domain?.toLowerCase() ?? ''}`;
    const now = this.#now();
    if (ttl > 0) {
      const hit = this.#cache.get(key);
      if (hit && hit.until > now) return hit.pause;
    }
    const pause = await isPaused(this.deps.redis, this.deps.keys, account, domain);
    if (ttl > 0) {
      if (this.#cache.size >= MAX_CACHED_SENDERS) this.#cache.clear();
      this.#cache.set(key, { until: now + ttl, pause });
    }
    return pause;
  }

  /** An operator pauses the domain (the whole account when null) by hand: see store/reputation.ts pauseByOperator. */
  async pauseByOperator(account: string, domain: string | null, who: { by: string; note: string }): Promise<PauseRecord> {
    const record = await pauseByOperator(this.deps.redis, this.deps.keys, account, domain, who, { now: this.#now(), eventsMaxLen: this.deps.eventsMaxLen });
    this.#forget(account);
    return record;
  }

  /** Resumes the domain's pause, or every pause of the account when `domain` is null. */
  async resume(account: string, domain: string | null, by: string): Promise<string[]> {
    const scopes = await resumeSender(this.deps.redis, this.deps.keys, account, domain, by, { now: this.#now(), eventsMaxLen: this.deps.eventsMaxLen });
    this.#forget(account);
    return scopes;
  }

  /** Paused senders (one account's, or all), each with its figures over the current window. */
  async status(account?: string): Promise<{ pause: PauseRecord; current: Figures }[]> {
    const pauses = await listPaused(this.deps.redis, this.deps.keys, account);
    const now = this.#now();
    return Promise.all(
      pauses.map(async (pause) => ({ pause, current: (await readFigures(this.deps.redis, this.deps.keys, pause.account, [pause.scope], now, this.options.windowHours)).get(pause.scope) as Figures })),
    );
  }

  /**
   * Judges one campaign on its own outcomes (hard bounces per sent, complaints per delivered, since it
   * started or was last resumed) and pauses it past the thresholds: a campaign is the unit a bad list
   * shows up in, and pausing it stops the damage without stopping the account's other mail. An event
   * ('campaign_paused', so webhooks carry it) says why, with the figures; an operator or the account
   * resumes it. Returns the pause, or null when the campaign is within the limits (or not sending).
   */
  async judgeCampaign(campaignId: string): Promise<CampaignGuardPause | null> {
    const { redis, keys } = this.deps;
    const c = await getCampaign(redis, keys, null, campaignId);
    if (!c || c.state !== 'sending') return null;
    const s = await campaignStats(redis, keys, c);
    const base = c.guardBase ?? { delivered: 0, hardbounces: 0, complaints: 0 };
    const f = figuresOf(Math.max(0, s.delivered - base.delivered), Math.max(0, s.hardbounces - base.hardbounces), Math.max(0, s.complaints - base.complaints));
    const v = thresholdCrossed(f, this.options);
    if (!v) return null;
    const now = this.#now();
    const r = await pauseCampaign(redis, keys, this.deps.shards ?? 16, campaignId, now);
    if (!r.ok) return null;
    const pause: CampaignGuardPause = { reason: v.reason, at: now, threshold: v.threshold, delivered: f.delivered, hardbounces: f.hardbounces, complaints: f.complaints };
    await redis.hset(keys.msgMeta(campaignId), 'guardPause', JSON.stringify(pause));
    await appendEvent(redis, keys, 'campaign_paused', {
      account: c.account, campaign: campaignId, reason: v.reason, threshold: v.threshold,
      delivered: f.delivered, hardbounces: f.hardbounces, complaints: f.complaints, sent: f.sent,
      hardBounceRate: Math.round(f.hardBounceRate * 1e6) / 1e6, complaintRate: Math.round(f.complaintRate * 1e6) / 1e6,
    }, this.deps.eventsMaxLen);
    this.deps.logger?.warn({ account: c.account, campaign: campaignId, reason: v.reason, figures: f }, 'campaign paused by the reputation guard');
    return pause;
  }

  #forget(account: string): void {
    for (const k of this.#cache.keys()) if (k.startsWith(`${account}|`)) this.#cache.delete(k);
  }
}
