import { Cluster } from 'ioredis';
import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import type { Config, TlsPolicy } from '../config/schema.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { Metrics } from '../observability/metrics.js';
import type { RenderPool } from '../render/pool.js';
import type { DataBlock } from '../render/data-block.js';
import type { RenderResult, RenderTask, TrackingMode } from '../render/protocol.js';
import type { QueueEntry } from '../queue/entry.js';
import { entryMember } from '../queue/entry.js';
import { claim } from '../queue/claim.js';
import { BackoffGauges } from './backoff-gauges.js';
import { ack, ackAndFinish, retry, bounce, hold, release, extendLeases, type CampaignCount, type OutcomeEvent } from '../queue/outcome.js';
import { clearOwed, owedMember, type OwedCount } from '../redis/owed.js';
import { packEvent, type EventType } from '../store/events.js';
import { reapExpired } from '../queue/reap.js';
import { dueDestinations, reschedule, postpone } from '../queue/schedule.js';
import { sourceFor } from './bind.js';
import { hasSendingLimits, takeSending, returnSending, type SendingCounted, type SendingLimits, type SendingTake } from '../accounts/limits.js';
import { returnPathsOf } from '../accounts/registry.js';
import { normaliseDomain } from '../core/address.js';
import { takeTokens, refundTokens, acquireConnection, renewConnection, releaseConnection, yieldConnection, unlimited, type Rate } from '../queue/throttle.js';
import { recordThrottleSignal, recordSuccess, backoffState, applyBackoff, backoffKeepMs, type BackoffConfig } from '../queue/backoff.js';
import { resolveShaping, retryDelay, tlsPolicyOf, type EffectiveShaping } from '../queue/shaping.js';
import { idTime, isId, shortId } from '../core/ids.js';
import { Semaphore } from '../core/semaphore.js';
import { verpAddress } from '../core/verp.js';
import { noticeId, noticeToSender, type NoticeAction, type NoticeSender } from './failure-notice.js';
import { formatDuration } from '../core/time.js';
import { addSuppression, GLOBAL_LIST, suppressionsOf } from '../store/suppression.js';
import { copyErased } from '../store/privacy.js';
import { DeliveryMarks, recordSoftBounce } from '../store/soft-bounces.js';
import { verdictOf } from '../bounces/verdict.js';
import { isHardBounce } from '../bounces/reasons.js';
import { noteCampaignWait, recordCampaignOutcome, type CampaignCounter, type CampaignWait } from '../store/campaigns.js';
import { holdCampaignEntries } from '../queue/campaign.js';
import { OUTCOME } from '../queue/outcome-codes.js';
import type { ReputationRecorder } from '../store/reputation.js';
import { ACCOUNT_CLOSED_REASON } from '../store/account-state.js';
import { firstFeedback } from '../store/recipients.js';
import { setContactStatus } from '../store/contacts.js';
import type { LoadedMessage, MessageSource } from '../store/message-source.js';
import type { MxResolver, Route, RouteHost } from './mx.js';
import { SmtpClient, SmtpConnectError, localOutcome, type SmtpOutcome } from './smtp-client.js';
import { ExpiringLru } from '../core/lru.js';
import { DestinationRuleRecorder } from '../queue/destination-rule.js';
import { HoldCache, holdOf, recheckAt, type Hold } from '../queue/holds.js';

/**
 * The dispatcher: finds destinations with due work, opens SMTP connections to them within the
 * shaping limits, claims recipients in small batches, renders and signs each copy in the worker pool
 * right before its transaction, and applies every outcome with one Lua call.
 *
 *   tick ─► dueDestinations(shard) ─► serve(domain)
 *   serve: reap ─► route (MX / transport) ─► shaping ─► backoff? ─► connection slot ─► connect
 *          └─ loop: tokens ─► claim(batch) ─► render all (pool, in parallel) ─► send one by one
 *                   ─► ack / retry / bounce ─► event
 *
 * Several workers may serve one destination at once (one per connection), in this process and in
 * others; the connection limit is held in Redis, so it holds across processes. A worker that claims
 * a full batch starts another one for its destination until the connection limit is reached.
 */

export type EventSink = (type: EventType, fields: Record<string, string | number>) => void;

export interface ReplyClassifier {
  (code: number | null, enhanced: string | null, text: string): { reason: string; hardbounce: boolean };
}

export interface DispatcherOptions {
  redis: RedisClient;
  keys: Keys;
  config: Config;
  logger: Logger;
  metrics?: Metrics | undefined;
  pool: RenderPool;
  resolver: MxResolver;
  messages: MessageSource;
  events: EventSink;
  /**
   * The event stream, for outcome scripts to append their state change in the same step (single
   * server; on a cluster the stream is in another slot and `events` appends it afterwards).
   * `appended` is told each event so written (for the metric).
   */
  eventStream?: { readonly key: string; readonly maxLen: number; readonly appended: (type: string) => void } | undefined;
  classify: ReplyClassifier;
  /** Sender reputation: outcomes are counted, and a paused sender's mail waits (never bounces). */
  reputation?: ReputationRecorder | undefined;
  /** Key of the VERP tags (core/verp.ts), shared with the inbound MX. */
  verpKey?: Buffer | undefined;
  /** Campaign recipients: contacts of the campaign's list, by contact number (store/contacts.ts). */
  contacts?: CampaignContacts | undefined;
  /**
   * Queues a notice (failure-notice.ts) to an SMTP sender (config delivery.failureNotices;
   * app/notices.ts persists it as ingress does a message; the feedback role queues through the same one).
   */
  sendNotice?: NoticeSender | undefined;
  now?: () => number;
}

/** A campaign recipient as delivery needs it; null when the contact is no longer in the list. */
export interface CampaignContact {
  readonly email: string;
  /** 'subscribed' is the only status mailed. */
  readonly status: string;
  readonly fields: Readonly<Record<string, string>>;
}

export interface CampaignContacts {
  read(listId: string, nos: readonly number[]): Promise<(CampaignContact | null)[]>;
}

/** How many due destinations one tick takes from each schedule shard. */
const DESTINATIONS_PER_SHARD = 64;
/** Recipients deferred or bounced per Redis round trip when a whole destination fails at once. */
const BULK_BATCH = 100;
/**
 * Copies rendered per worker task: large enough to amortise the hand-off to a thread, small enough
 * that the first copy of a batch is on the wire soon.
 */
const RENDER_CHUNK = 8;
const CLAIM_WAIT_MS = 5;
/**
 * Copies rendered (or being rendered) and not yet sent, over all connections of this process. A
 * connection renders its whole claim ahead so the pool signs copy i+1 while copy i is on the wire;
 * unbounded, 200 connections × 50 claimed × ~20 KB held ~200 MB of finished copies waiting for their
 * turn (bench/campaign.ts). 256 keep two render threads busy for well over 100 ms of work.
 */
const MAX_RENDERED = 256;
/** Longest a worker waits in-process for tokens before giving its connection up. */
const MAX_TOKEN_WAIT_MS = 2_000;
/** Prepared.paused of a copy whose account the configuration no longer names. */
const ACCOUNT_UNCONFIGURED = 'unconfigured';
/**
 * A campaign copy's delivery record field: its account's quota and rates counted it (a transaction
 * that kept the count was made), so its retries are not counted again (throttleCampaigns).
 */
const QUOTA_COUNTED = 'quota';
/** A copy's hold reason: its account no longer has its From domain (a reload removed it or gave it to another account). */
const DOMAIN_NOT_OWNED = 'domain-not-owned';
/** A closed account's copies are looked at again this often (reopening resumes them within it). */
const CLOSED_HOLD_MS = 5 * 60_000;
/**
 * 'anonymous' tracking needs a crowd: an API message to fewer recipients is sent untracked (see
 * specTrackingMode). Ten keeps a single open or click among at least ten people.
 */
export const ANONYMOUS_MIN_RECIPIENTS = 10;
/** A copy of a sender paused by the reputation guard is looked at again this often (resume takes effect within it). */
const PAUSED_SENDER_HOLD_MS = 60_000;
/** Whether a throttle scope is shared by several destinations (a provider rule's: its scope is the rule's name). */
function shared(shaping: EffectiveShaping): boolean {
  return shaping.scope === shaping.rule;
}
/**
 * How late after its maxAge a copy's claim may come and still make the attempt due at maxAge (its
 * last): a tenth of the maxAge, within these bounds. Later, it waited (held, behind a rate) and
 * expires unsent.
 */
const MAX_AGE_LATE_MS = 5 * 60_000;
const MAX_AGE_LATE_MIN_MS = 2_000;
/** Retries of a paused campaign claimed anyway (they sit in ready, not behind its pointer) wait this long. */
const PAUSED_HOLD_MS = 60_000;
/**
 * A host whose STARTTLS broke (handshake failed, or the session died in the EHLO after it) is sent
 * to in plain text for this long, without trying TLS on every connection, then TLS is tried again.
 * Likewise a host that offered CHUNKING but did not know BDAT gets DATA for this long.
 */
const PLAIN_FALLBACK_MS = 60 * 60_000;
/** Hosts remembered that way at most (oldest forgotten first), per fallback: a bound, not a working size. */
const PLAIN_FALLBACK_HOSTS = 10_000;
/**
 * The commands whose refusal is a verdict on the recipient. RFC 5321 §3.3: the reply to MAIL is about
 * the reverse-path (our bounce address), and those to the greeting, EHLO or STARTTLS about the session;
 * only RCPT (and DATA/BDAT, where some servers check the recipient after the content) speak of the
 * address. "550 5.1.1 Sender address rejected: User unknown" at MAIL FROM must not suppress the recipient.
 */
const RECIPIENT_COMMANDS: ReadonlySet<string> = new Set(['RCPT TO', 'DATA', 'BDAT']);

interface Prepared {
  msg: LoadedMessage | null;
  result: RenderResult | null;
  /** The recipient's address (a message's recipient, or a campaign's contact); undefined when unknown. */
  address?: string | undefined;
  /** The recipient is on a suppression list (or, in a campaign, no longer subscribed): dropped without rendering. */
  suppressed?: { list: string; reason: string };
  /** The sender (account or From domain) is paused by the reputation guard: the copy waits. */
  paused?: string;
  /** Given back to its campaign (paused, or over its own throttle): nothing to send or settle now. */
  held?: true;
  /** Its campaign was cancelled: dropped. */
  cancelled?: true;
}

interface BatchResult {
  attempted: number;
  /** Mean time of the batch's transactions (ms), null when it had none. */
  paceMs: number | null;
  succeeded: boolean;
  /** the last slow-down answer (421, 4.7.x) of the batch, null when there was none */
  throttledReply: string | null;
  /** The session of the next host, which took every copy this one deferred: the connection goes on with it. */
  session?: Session;
}

/** A session and the attempt it belongs to. */
interface Session {
  readonly client: SmtpClient;
  readonly walk: HostWalk;
}

/** A rendered copy as SmtpClient.send takes it: framed by the worker (a DATA block or a BDAT chunk), or as it is. */
function onWire(result: Extract<RenderResult, { ok: true }>): Uint8Array | DataBlock {
  return result.framed
    ? { bytes: Buffer.from(result.message.buffer, result.message.byteOffset, result.message.byteLength), eightBit: result.eightBit === true, chunked: result.chunked === true, ...(result.size !== undefined ? { size: result.size } : {}) }
    : result.message;
}

/** A copy on its way to the attempt's next host (Dispatcher.sendOnward), with the answer it has so far. */
interface Onward {
  readonly entry: QueueEntry;
  readonly msg: LoadedMessage;
  readonly result: Extract<RenderResult, { ok: true }>;
  readonly address: string;
  readonly from: string;
  outcome: SmtpOutcome;
}

interface DestinationState {
  workers: number;
}

/** One attempt's way down a destination's addresses (MxResolver.attemptHosts), session after session. */
interface HostWalk {
  readonly hosts: readonly RouteHost[];
  /** The address the next session is sought from. */
  next: number;
  /** Sessions that came up in this attempt (past EHLO and STARTTLS). */
  sessions: number;
}

/** A campaign's own throttle (campaign.throttle.perHour) as a rate for throttle.ts: bucket campaign:<id>. */
const campaignRate = (perHour: number): Rate => ({ perSecond: null, perMinute: null, perHour });

/** What one copy of a claim took as its chunk was rendered: its campaign's throttle token, its account's sending count. */
interface Took {
  campaign: { id: string; perHour: number } | null;
  account: SendingCounted | null;
}

/** Throttle tokens and sending counts to give back, summed by campaign and by the account's counters. */
interface Refund {
  campaigns: Map<string, { perHour: number; n: number }>;
  accounts: Map<string, { counted: SendingCounted; n: number }>;
}

/** n copies' worth of what `t` took. */
function refundOf(t: Took, n: number): Refund {
  const r: Refund = { campaigns: new Map(), accounts: new Map() };
  addRefund(r, t, n);
  return r;
}

function addRefund(r: Refund, t: Took, n: number): void {
  if (t.campaign) {
    const c = r.campaigns.get(t.campaign.id);
    if (c) c.n += n;
    else r.campaigns.set(t.campaign.id, { perHour: t.campaign.perHour, n });
  }
  if (t.account) {
    const a = r.accounts.get(t.account.id);
    if (a) a.n += n;
    else r.accounts.set(t.account.id, { counted: t.account, n });
  }
}

/**
 * What the campaign copies of one claim took (Took), by the copy's place in the claim. It is taken
 * as each chunk is rendered (throttleCampaigns), before the copy's turn on the wire; a copy given
 * back unsent (the claim window, the session lost before its transaction, the connection broken,
 * shutdown) or dealt with without reaching a server gets it back. A give-back is always the claim's
 * tail, from some place on: a copy there takes nothing any more, and one that took it meanwhile (its
 * chunk's takeTokens was under way) has it refunded at once. What is handed back leaves the ledger,
 * so nothing is refunded twice; a refund lost in a crash is not made (the bucket refills with time,
 * the counters' windows end), never one granted twice.
 */
class CampaignTokens {
  private readonly taken = new Map<number, Took>();
  private backFrom = Number.POSITIVE_INFINITY;
  /** Copies done with unsent one by one (takeBack), before backFrom. */
  private readonly backAt = new Set<number>();

  /** Copy i was given back, or settled unsent: it takes nothing. */
  isBack(i: number): boolean {
    return i >= this.backFrom || this.backAt.has(i);
  }

  /** Notes what copy i took; false when the copy was given back meanwhile (it goes back at once). */
  took(i: number, t: Took): boolean {
    if (this.isBack(i)) return false;
    this.taken.set(i, t);
    return true;
  }

  /** Whether copy i took (and still holds) an account's sending count. */
  tookAccount(i: number): boolean {
    return this.taken.get(i)?.account != null;
  }

  /** The copies from `from` on go back: what they took (and out of the ledger). */
  giveBack(from: number): Refund {
    this.backFrom = Math.min(this.backFrom, from);
    return this.out((i) => i >= from);
  }

  /** Copies `places` were settled, held or lost without reaching a server: what they took, as giveBack. */
  takeBack(places: readonly number[]): Refund {
    for (const i of places) this.backAt.add(i);
    return this.out((i) => this.backAt.has(i));
  }

  private out(back: (i: number) => boolean): Refund {
    const r: Refund = { campaigns: new Map(), accounts: new Map() };
    for (const [i, t] of this.taken) {
      if (!back(i)) continue;
      this.taken.delete(i);
      addRefund(r, t, 1);
    }
    return r;
  }
}

export class Dispatcher {
  /** Its options; setShaping replaces `config.shaping` (a reload). */
  private o: DispatcherOptions;
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly destinations = new Map<string, DestinationState>();
  private readonly backoffGauges: BackoffGauges;
  private readonly inflight = new Set<Promise<void>>();
  private readonly clients = new Set<SmtpClient>();
  /** Fired when a stop's grace is over: connects still under way (a host holding its greeting) end. */
  private readonly connectsAborted = new AbortController();
  /** 'host:port' of hosts whose connections skip STARTTLS, each for PLAIN_FALLBACK_MS. */
  private readonly plainText = new ExpiringLru<true>(PLAIN_FALLBACK_HOSTS);
  /** 'host:port' of hosts sent to with DATA although they offer CHUNKING (BDAT was refused), each for PLAIN_FALLBACK_MS. */
  private readonly dataOnly = new ExpiringLru<true>(PLAIN_FALLBACK_HOSTS);
  private readonly backoffCfg: BackoffConfig;
  /** Writes each destination's resolved rule for `sluice queue` and the queue gauges (when it changes, at most hourly otherwise). */
  private readonly rules: DestinationRuleRecorder;
  /** Operator holds (sluice queue hold), read about once a second. */
  private readonly holds: HoldCache;
  /** The 250s noted in the recipients' soft-bounce histories, written in batches. */
  private readonly deliveryMarks: DeliveryMarks;
  private readonly renderSlots = new Semaphore(MAX_RENDERED);
  /** Campaign throttle and account sending refunds made outside a batch's own steps (CampaignTokens): stop() waits for them. */
  private readonly refunding = new Set<Promise<void>>();
  /** Accounts with a daily quota or a rate limit, by id: their campaign copies count against them as they are sent. */
  private sendingLimits: ReadonlyMap<string, SendingLimits> = new Map();
  /** accounts[].tracking.mode by account id: each API message's copy is rendered for its recipient. */
  private trackingModes: ReadonlyMap<string, TrackingMode> = new Map();
  /** Each configured account's sending domains, normalised (the From domains it may send). */
  private ownedDomains: ReadonlyMap<string, ReadonlySet<string>> = new Map();
  /** Sending domain → its envelope sender's domain, where the account gives one (else delivery.bounceDomain). */
  private returnPaths: ReadonlyMap<string, string> = new Map();
  private totalWorkers = 0;
  /** Recipients claimed and not yet settled, over all connections of this process. */
  private claimed = 0;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private wakeRequested = false;
  private stopping = false;
  private shardCursor = 0;

  constructor(opts: DispatcherOptions) {
    // One listener per connect under way (maxConnections of them): not a leak, no warning past 10.
    setMaxListeners(0, this.connectsAborted.signal);
    this.o = opts;
    this.now = opts.now ?? Date.now;
    this.log = opts.logger;
    const b = opts.config.delivery.backoff;
    this.backoffCfg = {
      threshold: b.threshold, windowMs: b.window, suspendMs: b.suspend, maxSuspendMs: b.maxSuspend,
      maxLevel: b.maxLevel, recoverMs: b.recoverAfter, ratePerConnection: b.ratePerConnection,
    };
    this.setAccounts(opts.config.accounts);
    this.holds = new HoldCache(
      opts.redis, opts.keys,
      (holds) => {
        this.o.metrics?.holds.set({ kind: 'domain' }, holds.filter((h) => h.kind === 'domain').length);
        this.o.metrics?.holds.set({ kind: 'rule' }, holds.filter((h) => h.kind === 'rule').length);
      },
      (err) => this.log.warn({ err }, 'could not read the operator holds; the last ones read still apply'),
    );
    this.rules = new DestinationRuleRecorder(opts.redis, opts.keys, (err) => this.log.warn({ err }, 'could not record a destination\'s shaping rule'));
    this.deliveryMarks = new DeliveryMarks(opts.redis, opts.keys, (err) => this.log.warn({ err }, 'could not mark deliveries in the soft-bounce histories'));
    this.backoffGauges = new BackoffGauges(backoffKeepMs(this.backoffCfg));
    const m = opts.metrics;
    m?.sampleOn('backoff', () => {
      for (const g of this.backoffGauges.read(this.now())) {
        m.backoffActive.set({ provider: g.provider }, g.active);
        m.backoffLevel.set({ provider: g.provider }, g.level);
      }
    });
  }

  /**
   * The accounts' tracking modes and sending limits, from the configuration (a reload passes the
   * new one's accounts): copies claimed from now on are rendered and counted by them.
   */
  /**
   * Reloaded shaping rules: each destination served from now on is matched and limited by them; a
   * connection already open keeps the limits it started with until it ends (messagesPerConnection).
   */
  setShaping(shaping: Config['shaping']): void {
    this.o = { ...this.o, config: { ...this.o.config, shaping } };
  }

  setAccounts(accounts: Config['accounts']): void {
    this.trackingModes = new Map(accounts.map((a) => [a.id, a.tracking.mode]));
    this.ownedDomains = new Map(accounts.map((a) => [a.id, new Set(a.domains.map((d) => normaliseDomain(d.domain) ?? d.domain))]));
    this.returnPaths = returnPathsOf(accounts);
    this.sendingLimits = new Map(accounts.filter(hasSendingLimits).map((a) => [a.id, { id: a.id, dailyQuota: a.dailyQuota, rateLimit: a.rateLimit }]));
  }

  start(): void {
    this.schedule(0);
  }

  /** Per copy at claim time: a From domain as ingress stored it (normalised) is found as it is; normalised only when it is not. */
  private owns(account: string, domain: string): boolean {
    const owned = this.ownedDomains.get(account);
    if (!owned) return false;
    if (owned.has(domain)) return true;
    const d = normaliseDomain(domain);
    return d !== undefined && owned.has(d);
  }

  /** New mail was accepted in this process: look for work now rather than at the next poll. */
  wake(): void {
    if (this.stopping) return;
    if (this.ticking) {
      this.wakeRequested = true;
      return;
    }
    this.schedule(0);
  }

  get activeConnections(): number {
    return this.totalWorkers;
  }

  /**
   * Graceful stop: no new claims; every worker finishes the transaction it is in, returns the
   * recipients it claimed but did not attempt, and quits its connection. After graceMs, open
   * connections are closed; what they were sending is retried (at-least-once).
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    const all = Promise.allSettled([...this.inflight]);
    const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
    if ((await Promise.race([all, timeout])) === 'timeout') {
      this.log.warn({ connections: this.clients.size }, 'grace period over: closing outbound connections');
      this.connectsAborted.abort();
      for (const c of this.clients) c.close();
      await all;
    }
    // Tokens of copies given back while their render took them: handed back before Redis closes.
    await Promise.allSettled([...this.refunding]);
    await this.deliveryMarks.flush();
  }

  private schedule(delayMs: number): void {
    if (this.stopping) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tick(), delayMs);
  }

  private async tick(): Promise<void> {
    if (this.stopping) return;
    this.ticking = true;
    this.wakeRequested = false;
    try {
      const shards = this.o.config.redis.scheduleShards;
      const now = this.now();
      // Keeps the holds gauge current while no destination is visited (one read a second at most).
      void this.holds.get(now);
      const start = this.shardCursor++ % shards;
      for (let i = 0; i < shards && !this.stopping; i++) {
        if (this.totalWorkers >= this.o.config.delivery.maxConnections) break;
        const shard = (start + i) % shards;
        const due = await dueDestinations(this.o.redis, this.o.keys, shard, now, DESTINATIONS_PER_SHARD);
        for (const domain of due) {
          if (this.totalWorkers >= this.o.config.delivery.maxConnections) break;
          const st = this.destinations.get(domain);
          if (st && st.workers > 0) continue; // being served; workers ramp up themselves
          this.startWorker(domain);
        }
      }
    } catch (err) {
      this.log.error({ err }, 'dispatcher tick failed');
    } finally {
      this.ticking = false;
      this.schedule(this.wakeRequested ? 0 : this.o.config.delivery.pollInterval);
    }
  }

  private startWorker(domain: string): void {
    let st = this.destinations.get(domain);
    if (!st) {
      st = { workers: 0 };
      this.destinations.set(domain, st);
    }
    st.workers++;
    this.totalWorkers++;
    const p = this.serve(domain)
      .catch((err: unknown) => this.log.error({ err, domain }, 'destination worker failed'))
      .finally(() => {
        this.inflight.delete(p);
        this.totalWorkers--;
        const s = this.destinations.get(domain);
        if (s && --s.workers <= 0) this.destinations.delete(domain);
      });
    this.inflight.add(p);
  }

  /**
   * True when an operator hold (queue/holds.ts) stops delivery to `domain` (by its own hold, or by
   * its `rule`'s when one is given): the destination is then postponed until the hold runs out or
   * is looked at again (recheckAt), and nothing of its mail is touched.
   */
  private async held(domain: string, rule: string | null): Promise<boolean> {
    let now = this.now();
    if (holdOf(await this.holds.get(now), domain, rule, now) === null) return false;
    // Held by the copy: read again before postponing, or a release just made would be undone.
    now = this.now();
    const h: Hold | null = holdOf(await this.holds.get(now, true), domain, rule, now);
    if (h === null) return false;
    const { redis, keys, config } = this.o;
    await postpone(redis, keys, config.redis.scheduleShards, domain, recheckAt(h, now));
    this.o.metrics?.held.inc({ kind: h.kind });
    this.log.debug({ domain, hold: `${h.kind}:${h.name}`, until: h.until, reason: h.reason }, 'destination held by the operator');
    return true;
  }

  private async serve(domain: string): Promise<void> {
    const { redis, keys, config } = this.o;
    await reapExpired(redis, keys, domain, this.now(), 1000).then((n) => n > 0 && this.o.metrics?.leasesReaped.inc(n));
    // A held domain is not even looked up: its DNS may be what is broken (NXDOMAIN would bounce it all).
    if (await this.held(domain, null)) return;
    // Nothing due (an idle re-check, a look a racing reschedule asked for): no DNS lookup, and no
    // SMTP session that would only say EHLO and QUIT, which receivers take for a bot's probe.
    const peek = await claim(redis, keys, { domain, max: 0, leaseMs: config.delivery.lease, now: this.now() });
    if (peek.nextAt === null || peek.nextAt > this.now()) {
      await reschedule(redis, keys, config.redis.scheduleShards, domain, peek.nextAt, this.now());
      return;
    }
    const route = await this.o.resolver.resolve(domain);
    const configured = resolveShaping(config.shaping, domain, route.kind === 'hosts' ? route.mxHosts : []);
    // Only a route with MX hosts says which rule the destination has; a DNS failure must not undo that.
    if (route.kind === 'hosts') this.rules.record(domain, configured.rule, this.now());
    // A held rule holds its destinations whatever their DNS says (null MX and NXDOMAIN bounce below).
    if (await this.held(domain, configured.rule)) return;

    // Bulk outcomes below need no connection or rate: the configured shaping serves them.
    let shaping = configured;
    if (route.kind === 'nullmx') {
      return this.settleAll(domain, shaping, { result: 'bounced', code: 556, enhanced: '5.1.10', response: `556 5.1.10 ${domain} does not accept mail (null MX, RFC 7505)`, command: 'MX', throttled: false, connectionUsable: false }, 'notaccept');
    }
    if (route.kind === 'loopback') {
      // Our own verdict, not the address's: it suppresses nothing (the domain's DNS may be fixed).
      return this.settleAll(domain, shaping, { result: 'bounced', code: 554, enhanced: '5.4.6', response: `554 5.4.6 mail for ${domain} loops back to this host (MX ${route.hosts.join(', ')} has only loopback addresses)`, command: 'MX', throttled: false, connectionUsable: false }, 'systemerror');
    }
    if (route.kind === 'private') {
      // Not followed (delivery.dns.privateMx): an MX into a private network is a misconfiguration or
      // an attempt at the operator's network, neither of which waiting mends. Our verdict, as above.
      return this.settleAll(domain, shaping, { result: 'bounced', code: 554, enhanced: '5.4.4', response: `554 5.4.4 mail for ${domain} is not routed to private or reserved addresses (MX ${route.hosts.join(', ')} has no other)`, command: 'MX', throttled: false, connectionUsable: false }, 'systemerror');
    }
    if (route.kind === 'nxdomain') {
      return this.settleAll(domain, shaping, { result: 'bounced', code: 550, enhanced: '5.1.2', response: `550 5.1.2 ${domain}: domain does not exist (NXDOMAIN)`, command: 'MX', throttled: false, connectionUsable: false }, 'hostunknown');
    }
    if (route.kind === 'tempfail') {
      return this.settleAll(domain, shaping, localOutcome('deferred', '4.4.3', `DNS lookup for ${domain} failed: ${route.error}`, 'MX', false));
    }

    const bo = await backoffState(redis, keys, shaping.scope, this.now());
    const suspended = bo.suspendedUntil !== null && bo.suspendedUntil > this.now();
    this.backoffGauges.note(shaping.provider, shaping.scope, bo.level, suspended ? bo.suspendedUntil : null, this.now());
    if (suspended) {
      await postpone(redis, keys, config.redis.scheduleShards, domain, bo.suspendedUntil as number);
      return;
    }
    // A slowed scope gets fewer connections and a lower rate: from here on, the slowed shaping is the limit.
    shaping = applyBackoff(configured, bo.level, this.backoffCfg);

    const connId = shortId();
    const connTtl = config.delivery.lease;
    const st = this.destinations.get(domain);
    const first = !st || st.workers <= 1;
    // A provider rule's slots are shared by its domains: they take turns (acquireConnection-1.lua).
    const turn = shared(shaping) ? { domain, join: first } : undefined;
    if (!(await acquireConnection(redis, keys, shaping.scope, connId, shaping.connections, connTtl, this.now(), turn))) {
      // Every connection slot of this scope is held (maybe by other processes), or others wait for
      // the next one before this destination; look again shortly.
      if (first) await postpone(redis, keys, config.redis.scheduleShards, domain, this.now() + 1000);
      return;
    }
    // The slot lives a lease: it is renewed every third of one for as long as the connection runs
    // (connecting through slow hosts, sending, idling), or it would lapse and let another connection
    // past the scope's limit while this one still works. A slot that lapsed all the same (Redis out
    // of reach for longer than a lease) may be another connection's now: this one claims nothing
    // more and ends after what it holds, so the scope is not over its limit for longer than that.
    const scope = shaping.scope;
    const slot = { lost: false, id: connId };
    const renewing = setInterval(() => {
      void renewConnection(redis, keys, scope, connId, connTtl, this.now()).then(
        (held) => {
          if (held || slot.lost) return;
          slot.lost = true;
          this.log.warn({ domain, scope }, 'connection slot lapsed (not renewed in time): this connection ends after the copies it holds');
        },
        () => undefined,
      );
    }, Math.max(1000, Math.floor(connTtl / 3)));
    try {
      await this.runConnection(domain, route, shaping, bo.level, slot);
    } finally {
      clearInterval(renewing);
      await releaseConnection(redis, keys, scope, connId).catch(() => undefined);
    }
  }

  /**
   * Walks on from `walk.next` down the attempt's addresses (MxResolver.attemptHosts: at most
   * delivery.maxAddresses) until one gives a session; else the most telling failure (moreTelling),
   * which defers the destination. A failed setup (connect, greeting, EHLO, STARTTLS) moves on to the next address;
   * once a session is up, a 4xx to MAIL, RCPT or DATA that is not a slow-down sends that copy on to
   * the next address (deliverBatch's sendOnward, in a session of its own), else defers it. Only a
   * session that is over before its first transaction (lost before it got under way included:
   * SmtpOutcome.sessionLost) has runConnection seek another here, from the
   * next address, up to delivery.maxSessions (Postfix's smtp_mx_session_limit, which likewise counts
   * only sessions past the EHLO and TLS handshake). A retry of a broken STARTTLS in plain text is the
   * same address again, not another one.
   * Connecting may take long (each address is allowed delivery.timeouts.connect and .greeting): the
   * caller's connection slot is renewed meanwhile by its holder (see the slot's timer above).
   */
  private async tryHosts(walk: HostWalk, shaping: EffectiveShaping): Promise<SmtpClient | SmtpOutcome> {
    const d = this.o.config.delivery;
    const provider = shaping.provider;
    // The destination's rule, else delivery.tls. Mandatory TLS (encrypt, verify) is never given up
    // for plain text: a host that fails it is skipped for the next, as any failed session setup.
    const policy = tlsPolicyOf(shaping, d.tls);
    let last: SmtpOutcome | undefined;
    while (walk.next < walk.hosts.length) {
      const h = walk.hosts[walk.next++] as RouteHost;
      const key = `${h.host}:${h.port}`;
      // A host in plainText broke the STARTTLS of an opportunistic session: a mandatory one tries TLS all the same.
      let tls: TlsPolicy = policy === 'may' && this.plainText.get(key, this.now()) !== undefined ? 'none' : policy;
      for (;;) {
        try {
          const client = await SmtpClient.connect({
            host: h.host,
            port: h.port,
            // The rule's source address of the host's family, else delivery.bindAddress / bindAddress6.
            ...sourceFor(h.host, { v4: shaping.bind?.v4 ?? d.bindAddress, v6: shaping.bind?.v6 ?? d.bindAddress6 }),
            ehloName: shaping.ehloName ?? d.ehloName ?? this.o.config.instance.hostname,
            tls,
            tlsName: h.mx,
            timeouts: { connectMs: d.timeouts.connect, greetingMs: d.timeouts.greeting, commandMs: d.timeouts.command, dataBlockMs: d.timeouts.dataBlock, dataMs: d.timeouts.data },
            chunking: d.chunking && this.dataOnly.get(key, this.now()) === undefined,
            signal: this.connectsAborted.signal,
          });
          this.o.metrics?.smtpConnectionsOpened.inc({ provider, result: 'ok', tls: client.secure ? 'yes' : 'no' });
          this.o.metrics?.smtpConnections.inc({ provider });
          walk.sessions++;
          return client;
        } catch (err) {
          // Opportunistic TLS only (RFC 3207 §4.1 lets a client deliver in plain text): under a
          // mandatory policy (encrypt, verify) plain text would be the downgrade it exists to prevent.
          if (err instanceof SmtpConnectError && err.tlsFailed && tls === 'may') {
            this.o.metrics?.smtpConnectionsOpened.inc({ provider, result: 'tls_failed', tls: 'no' });
            this.log.warn({ host: h.host, port: h.port, mx: h.mx, error: err.outcome.response }, 'STARTTLS failed: delivering to this host in plain text for an hour');
            this.plainText.set(key, true, this.now() + PLAIN_FALLBACK_MS);
            tls = 'none';
            continue;
          }
          // The policy alone refused the host (STARTTLS not offered or refused, handshake or certificate
          // failed; 'may' fell back above): counted apart, so operators can alert on it.
          const policyFailed = err instanceof SmtpConnectError && (err.tlsNotStarted || err.tlsFailed);
          this.o.metrics?.smtpConnectionsOpened.inc({ provider, result: policyFailed ? 'tls_required' : 'failed', tls: 'no' });
          const outcome = (err as { outcome?: SmtpOutcome }).outcome ?? localOutcome('deferred', '4.4.1', `connect to ${h.host}:${h.port} failed: ${(err as Error).message}`, 'CONN', false);
          // Shutting down past the grace: no next host (runConnection leaves the queue as it is).
          if (this.connectsAborted.signal.aborted) return outcome;
          last = moreTelling(last, outcome);
          // A 5xx greeting is the host's final word for this connection, not for the recipient; try the next MX.
          break;
        }
      }
    }
    return last ?? localOutcome('deferred', '4.4.1', 'no host to connect to', 'CONN', false);
  }

  /** A new attempt's addresses: drawn afresh (MxResolver.attemptHosts), none tried yet. */
  private walk(route: Extract<Route, { kind: 'hosts' }>): HostWalk {
    return { hosts: this.o.resolver.attemptHosts(route), next: 0, sessions: 0 };
  }

  /**
   * `level`: the scope's slowdown level when the connection was set up (already applied to `shaping`).
   * `slot.lost`: the connection's slot lapsed; it claims nothing more.
   */
  private async runConnection(domain: string, route: Extract<Route, { kind: 'hosts' }>, shaping: EffectiveShaping, level: number, slot: { readonly lost: boolean; readonly id: string }): Promise<void> {
    const { redis, keys, config } = this.o;
    const shards = config.redis.scheduleShards;
    let walk = this.walk(route);
    const conn = await this.tryHosts(walk, shaping);
    if (!(conn instanceof SmtpClient) && this.connectsAborted.signal.aborted) {
      // Cut off by the end of a stop's grace, not refused: nothing was attempted, nothing is deferred.
      await reschedule(redis, keys, shards, domain, this.now(), this.now());
      return;
    }
    if (!(conn instanceof SmtpClient)) {
      // Nothing reachable: every due recipient of the destination is deferred (or expires).
      if (conn.throttled) await this.throttled(shaping, conn.response);
      return this.settleAll(domain, shaping, { ...conn, result: 'deferred' });
    }
    let client: SmtpClient = conn;
    this.clients.add(client);
    /** The session has carried a transaction: it answered for its recipients. */
    let carried = false;
    let sent = 0;
    let idleSince: number | undefined;
    /** The last claim got less than it was granted and left nothing due: the queue is likely empty. */
    let drained = false;
    let slowdown = level;
    /** Mean transaction time of the last batch that had one (ms): it sizes the claims (claimSize). */
    let paceMs: number | null = null;
    try {
      for (;;) {
        if (this.stopping || slot.lost) {
          await reschedule(redis, keys, shards, domain, this.now(), this.now());
          return;
        }
        // After a batch, a slot of a provider rule others wait for goes to them, one connection per
        // waiting domain (yieldConnection-1.lua): a domain with a backlog (or idling on its
        // connection) would otherwise keep the rule's slots until it has sent everything, while the
        // provider's other domains wait. The head of the line is due at once; this domain asks again, in its turn.
        if (sent > 0 && shared(shaping)) {
          const head = await yieldConnection(redis, keys, shaping.scope, slot.id, domain, shaping.connections, this.now());
          if (head !== null) {
            if (head !== '') await postpone(redis, keys, shards, head, this.now());
            await reschedule(redis, keys, shards, domain, this.now(), this.now());
            this.wake();
            return;
          }
        }
        // Held while this connection sends: it claims nothing more (what it holds was sent above).
        if (await this.held(domain, shaping.rule)) return;
        const maxClaimed = config.delivery.maxClaimed;
        if (this.claimed >= maxClaimed) {
          // Enough is claimed to keep the render pool and every connection busy; claiming more would
          // only hold leases and message bodies in memory while they wait for a worker thread.
          await sleep(CLAIM_WAIT_MS);
          continue;
        }
        const size = this.claimSize(paceMs);
        const want = Math.min(size, shaping.messagesPerConnection - sent, maxClaimed - this.claimed);
        if (want <= 0) {
          // This connection has carried its share; the destination stays due and a fresh worker takes over.
          await reschedule(redis, keys, shards, domain, this.now(), this.now());
          return;
        }
        // Idle after an empty claim, polling for mail that trickles in: look before taking rate tokens.
        // Taken and given back around an empty claim, they were missing from the bucket meanwhile, every
        // poll, for the other connections of the scope (a provider rule's domains, other processes).
        // So after a claim that got less than it asked for: the queue had nothing more due then.
        const peek: { nextAt: number | null } | null = (idleSince !== undefined || drained) && !unlimited(shaping.rate) ? await claim(redis, keys, { domain, max: 0, leaseMs: config.delivery.lease, now: this.now() }) : null;
        const nothingDue: boolean = peek !== null && (peek.nextAt === null || peek.nextAt > this.now());
        // An unlimited rate grants `want` without a Redis call (throttle.ts).
        const { granted, retryAt }: { granted: number; retryAt: number | null } = nothingDue ? { granted: 0, retryAt: null } : await takeTokens(redis, keys, shaping.scope, shaping.rate, want, this.now());
        if (granted === 0 && !nothingDue) {
          const at = retryAt ?? this.now() + 1000;
          if (at - this.now() <= MAX_TOKEN_WAIT_MS) {
            await sleep(at - this.now());
            continue;
          }
          await postpone(redis, keys, shards, domain, at);
          return;
        }
        const leaseStart = this.now();
        const { entries, nextAt }: { entries: QueueEntry[]; nextAt: number | null } = nothingDue ? { entries: [], nextAt: peek?.nextAt ?? null } : await claim(redis, keys, { domain, max: granted, leaseMs: config.delivery.lease, now: leaseStart });
        if (entries.length < granted) await refundTokens(redis, keys, shaping.scope, shaping.rate, granted - entries.length, this.now());
        // A claim takes every due entry up to its size: one cut short left nothing due.
        drained = entries.length < granted;
        if (entries.length === 0) {
          // Keep a connection that just carried mail open for a while: mail that trickles in for
          // this destination then goes without a new TCP + TLS handshake. One idle connection per
          // destination is enough; the others leave at once.
          const st = this.destinations.get(domain);
          idleSince ??= this.now();
          if (sent > 0 && st?.workers === 1 && this.now() - idleSince < config.delivery.timeouts.idle && client.usable && !this.stopping) {
            await sleep(config.delivery.pollInterval);
            continue;
          }
          await reschedule(redis, keys, shards, domain, nextAt, this.now());
          return;
        }
        idleSince = undefined;
        // A full claim means more is due, so another connection helps; a claim cut down to a slow
        // peer's pace is full with little due, and more is due only if the queue says so.
        const backlog = size < config.delivery.claimBatch ? nextAt !== null && nextAt <= leaseStart : true;
        if (entries.length === granted && backlog && !this.stopping) this.rampUp(domain, shaping);

        const r = await this.deliverBatch(client, domain, shaping, entries, walk);
        if (r.session) {
          this.log.info({ domain, host: client.peer, next: r.session.client.peer }, 'this host deferred every copy of a claim and the next host took them: the connection goes on with the next');
          this.closeClient(client, shaping.provider, true);
          client = r.session.client;
          walk = r.session.walk;
        }
        if (r.paceMs !== null) paceMs = r.paceMs;
        sent += r.attempted;
        if (r.attempted > 0) carried = true;
        if (r.succeeded && r.throttledReply === null && slowdown > 0) {
          // Good answers only: recovery removes a level once the scope has been quiet long enough.
          const after = await recordSuccess(redis, keys, shaping.scope, this.backoffCfg, this.now());
          if (after < slowdown) {
            this.log.info({ domain, provider: shaping.provider, scope: shaping.scope, slowdownLevel: after }, 'remote answers well again: slowdown level lowered');
            this.backoffGauges.note(shaping.provider, shaping.scope, after, null, this.now());
          }
          slowdown = after;
        }
        if (r.throttledReply !== null) {
          const s = await this.throttled(shaping, r.throttledReply);
          if (s.suspendedUntil !== null) {
            this.log.warn({ domain, provider: shaping.provider, scope: shaping.scope, slowdownLevel: s.level, reason: r.throttledReply, until: new Date(s.suspendedUntil).toISOString() }, 'remote asked us to slow down: scope suspended and slowed');
            await postpone(redis, keys, shards, domain, s.suspendedUntil);
            return;
          }
        }
        if (!client.usable) {
          this.closeClient(client, shaping.provider, false);
          if (this.stopping) continue; // the copies not sent went back to the queue
          if (carried) walk = this.walk(route); // the copies still due get an attempt of their own
          else if (walk.sessions >= config.delivery.maxSessions || walk.next >= walk.hosts.length) {
            // Its copies went back unsent (deliverBatch): taken again by another session of this
            // attempt, and another, a server that hangs up after EHLO would have them forever.
            const why = `session with ${client.peer} over before a transaction: ${client.closeReason ?? 'connection closed'}`;
            await this.settleAll(domain, shaping, localOutcome('deferred', '4.4.2', why, 'CONN', false));
            return;
          }
          const next = await this.tryHosts(walk, shaping);
          if (!(next instanceof SmtpClient)) {
            await this.settleAll(domain, shaping, { ...next, result: 'deferred' });
            return;
          }
          client = next;
          carried = false;
          this.clients.add(client);
        }
      }
    } finally {
      this.closeClient(client, shaping.provider, true);
    }
  }

  /** One slow-down answer from the scope: counted by the backoff, and the gauges follow its state. */
  private async throttled(shaping: EffectiveShaping, reply: string): Promise<{ suspendedUntil: number | null; level: number }> {
    const s = await recordThrottleSignal(this.o.redis, this.o.keys, shaping.scope, this.backoffCfg, this.now(), reply);
    this.backoffGauges.note(shaping.provider, shaping.scope, s.level, s.suspendedUntil, this.now());
    return s;
  }

  private closeClient(client: SmtpClient, provider: string, graceful: boolean): void {
    if (!this.clients.delete(client)) return;
    this.o.metrics?.smtpConnections.dec({ provider });
    if (graceful && client.usable) void client.quit().catch(() => client.close());
    else client.close();
  }

  /** A worker that found a full batch brings one more connection to its destination, within the limits. */
  private rampUp(domain: string, shaping: EffectiveShaping): void {
    const st = this.destinations.get(domain);
    if (!st || st.workers >= shaping.connections) return;
    if (this.totalWorkers >= this.o.config.delivery.maxConnections) return;
    this.startWorker(domain);
  }

  /**
   * Copies one claim of a connection takes: delivery.claimBatch, or fewer when its transactions are
   * slow, as many as it sends in delivery.claimWindow (at least one). What a connection claims waits,
   * leased and counted against delivery.maxClaimed, until its turn: a peer that answers slowly (a
   * tarpit holds each reply up to the timeouts, minutes) would otherwise hold claimBatch copies for
   * claimBatch of its transactions, and with enough such connections the whole budget, while every
   * other destination's connections wait for it.
   */
  private claimSize(paceMs: number | null): number {
    const d = this.o.config.delivery;
    if (paceMs === null || paceMs * d.claimBatch <= d.claimWindow) return d.claimBatch;
    return Math.max(1, Math.floor(d.claimWindow / paceMs));
  }

  /**
   * Loads and renders the copies of a claimed batch, RENDER_CHUNK per worker task, and returns one
   * promise per entry, so that copy i goes on the wire as soon as its chunk is signed while later
   * chunks are still in the pool.
   */
  private renderAll(entries: readonly QueueEntry[], chunked: boolean, tokens: CampaignTokens): Promise<Prepared>[] {
    const out: Promise<Prepared>[] = [];
    for (let i = 0; i < entries.length; i += RENDER_CHUNK) {
      const chunk = entries.slice(i, i + RENDER_CHUNK);
      const done = (async (): Promise<Prepared[]> => {
        // Given back one by one as deliverBatch sends or settles each copy.
        await this.renderSlots.acquire(chunk.length);
        const msgs = await Promise.all(chunk.map((e) => this.o.messages.load(e.msgId)));
        // A paused or cancelled campaign's entries go back (or are dropped) before anything is read for them.
        const holds = await this.holdStoppedCampaigns(chunk, msgs);
        const contacts = await this.campaignContacts(chunk, msgs.map((m, j) => (holds[j] === undefined ? m : null)));
        const addresses = chunk.map((e, j) => {
          const msg = msgs[j];
          if (!msg || holds[j] !== undefined) return undefined;
          // An erased recipient (store/privacy.ts) is a tombstone with an empty address: nobody to send to.
          return msg.kind === 'campaign' ? contacts[j]?.email : msg.rcpts[e.idx]?.address || undefined;
        });
        // Not known: nobody to send to, or held above (addresses[j] is undefined then).
        const known = (j: number): boolean => msgs[j] != null && addresses[j] !== undefined;
        // Suppression is checked at claim time, so an unsubscribe or a hard bounce that arrived
        // after acceptance still stops the copy, before it costs a render.
        const [blocks, pauses] = await Promise.all([
          this.suppressions(chunk.map((_, j) => (known(j) ? { account: (msgs[j] as LoadedMessage).account, address: addresses[j] as string } : null))),
          Promise.all(msgs.map((msg, j) => {
            if (!known(j) || !msg) return null;
            // An account the configuration no longer names (a reload removed it): its DKIM keys and
            // tracking settings went with it, so its copies are held as a paused sender's, not sent
            // unsigned and tracked by default; configured again, they go.
            if (!this.trackingModes.has(msg.account)) return { reason: ACCOUNT_UNCONFIGURED };
            // Nor one whose From domain a reload took from its account: its key (if any) is now
            // another account's, or no one's; sent when the account has the domain again. Not a
            // notice to an SMTP sender (source 'dsn'): it is From MAILER-DAEMON@instance.hostname,
            // which is no account's domain.
            if (msg.source !== 'dsn' && msg.fromDomain !== null && !this.owns(msg.account, msg.fromDomain)) return { reason: DOMAIN_NOT_OWNED };
            return this.o.reputation ? this.o.reputation.check(msg.account, msg.fromDomain) : null;
          })),
        ]);
        const unsubscribed = (j: number): string | undefined => {
          const c = contacts[j];
          return c && c.status !== 'subscribed' ? c.status : undefined;
        };
        // Only copies that would go now take a campaign's throttle tokens: a suppressed one is not sent.
        // A copy given back meanwhile (its place in the claim is `i + j`) is not sent by this claim either.
        await this.throttleCampaigns(chunk, msgs, holds, (j) => tokens.isBack(i + j) || !known(j) || blocks[j] != null || pauses[j] != null || unsubscribed(j) !== undefined, (j) => i + j, tokens);
        const live = (j: number): boolean => known(j) && holds[j] === undefined;
        const tasks: RenderTask[] = [];
        chunk.forEach((entry, j) => {
          const msg = msgs[j];
          if (!msg || !live(j) || blocks[j] || pauses[j] || unsubscribed(j)) return;
          if (msg.kind === 'campaign') {
            tasks.push(this.campaignTask(msg, entry, contacts[j] as CampaignContact, chunked));
            return;
          }
          const task: RenderTask = { msgId: msg.id, kind: msg.kind, source: msg.body, signingDomain: msg.fromDomain, acceptedAt: msg.acceptedAt, frame: true, chunked, single: msg.rcpts.length === 1 };
          if (msg.kind === 'spec') {
            const address = addresses[j];
            task.tracking = { account: msg.account, idx: entry.idx, mode: this.trackingMode(msg.account, msg.rcpts.length), ...(address !== undefined ? { address } : {}) };
          }
          tasks.push(task);
        });
        const t0 = performance.now();
        const results = await this.o.pool.renderMany(tasks);
        const seconds = (performance.now() - t0) / 1000;
        let k = 0;
        return msgs.map((msg, j): Prepared => {
          if (!msg) return { msg: null, result: null };
          const hold = holds[j];
          if (hold === 'held') return { msg, result: null, held: true };
          if (hold === 'cancelled') return { msg, result: null, cancelled: true };
          const address = addresses[j];
          if (address === undefined) return { msg, result: null };
          const block = blocks[j];
          if (block) return { msg, result: null, address, suppressed: { list: block.list, reason: block.reason } };
          const status = unsubscribed(j);
          if (status) return { msg, result: null, address, suppressed: { list: 'contact', reason: status } };
          const pause = pauses[j];
          if (pause) return { msg, result: null, address, paused: pause.reason };
          this.o.metrics?.renderDuration.observe(seconds);
          return { msg, result: results[k++] ?? null, address };
        });
      })();
      done.catch(() => undefined);
      chunk.forEach((_, j) => out.push(done.then((r) => r[j] as Prepared)));
    }
    return out;
  }

  /** The suppression entry blocking each recipient of a chunk (null: none, or no recipient): two HMGETs per account in the chunk. */
  private async suppressions(rcpts: readonly ({ account: string; address: string } | null)[]): Promise<(Awaited<ReturnType<typeof suppressionsOf>>[number])[]> {
    const out: Awaited<ReturnType<typeof suppressionsOf>>[number][] = rcpts.map(() => null);
    const byAccount = new Map<string, number[]>();
    rcpts.forEach((r, j) => {
      if (!r) return;
      const js = byAccount.get(r.account);
      if (js) js.push(j);
      else byAccount.set(r.account, [j]);
    });
    await Promise.all(
      [...byAccount].map(async ([account, js]) => {
        const hits = await suppressionsOf(this.o.redis, this.o.keys, account, js.map((j) => (rcpts[j] as { address: string }).address));
        js.forEach((j, i) => (out[j] = hits[i] ?? null));
      }),
    );
    return out;
  }

  /** The contacts of the campaign entries of a chunk (one read per campaign); undefined for other entries. */
  private async campaignContacts(chunk: readonly QueueEntry[], msgs: readonly (LoadedMessage | null)[]): Promise<(CampaignContact | null | undefined)[]> {
    const out: (CampaignContact | null | undefined)[] = chunk.map(() => undefined);
    const reader = this.o.contacts;
    if (!reader) return out;
    const byCampaign = campaignPositions(msgs);
    await Promise.all(
      [...byCampaign.values()].map(async (js) => {
        const listId = (msgs[js[0] as number] as LoadedMessage).campaign?.listId ?? '';
        const found = await reader.read(listId, js.map((j) => (chunk[j] as QueueEntry).idx));
        js.forEach((j, i) => (out[j] = found[i] ?? null));
      }),
    );
    return out;
  }

  /**
   * Campaign entries that must not be sent now because of their campaign's state: a paused campaign's
   * go back to it (its first attempts to the head of its queue, where resume finds them), a cancelled
   * one's are dropped. The state comes with the loaded message, so a running campaign costs no read.
   */
  private async holdStoppedCampaigns(chunk: readonly QueueEntry[], msgs: readonly (LoadedMessage | null)[]): Promise<('held' | 'cancelled' | undefined)[]> {
    const out: ('held' | 'cancelled' | undefined)[] = chunk.map(() => undefined);
    for (const [id, js] of campaignPositions(msgs)) {
      const c = (msgs[js[0] as number] as LoadedMessage).campaign;
      if (!c || c.state === 'sending' || c.state === 'completed') continue;
      if (c.state === 'cancelled') {
        for (const j of js) out[j] = 'cancelled';
        continue;
      }
      const now = this.now();
      await holdCampaignEntries(this.o.redis, this.o.keys, this.o.config.redis.scheduleShards, id, js.map((j) => chunk[j] as QueueEntry), { pointerAt: null, holdUntil: now + PAUSED_HOLD_MS, now });
      for (const j of js) out[j] = 'held';
    }
    return out;
  }

  /**
   * Entries over their campaign's own throttle, or over their account's daily quota or rate limit
   * (accounts/limits.ts takeSending: the counters its submissions count on too), go back until the
   * bucket refills or the counter's window ends (marked 'held' in `holds`). `unsent(j)`: entry j will
   * not be sent now whatever this decides (held already, suppressed, unsubscribed, its sender paused,
   * nobody to send to, given back), so it takes nothing. What is taken goes in `tokens` by the entry's
   * place in its claim (`place(j)`), to be refunded if the copy is given back unsent.
   */
  private async throttleCampaigns(chunk: readonly QueueEntry[], msgs: readonly (LoadedMessage | null)[], holds: ('held' | 'cancelled' | undefined)[], unsent: (j: number) => boolean, place: (j: number) => number, tokens: CampaignTokens): Promise<void> {
    const { redis, keys } = this.o;
    for (const [id, js] of campaignPositions(msgs)) {
      const msg = msgs[js[0] as number] as LoadedMessage;
      const c = msg.campaign;
      const limits = this.sendingLimits.get(msg.account);
      const sending = js.filter((j) => holds[j] === undefined && !unsent(j));
      if (!c || sending.length === 0 || (c.throttlePerHour === null && !limits)) continue;
      const now = this.now();
      let granted = sending.length;
      let at: number | null = null;
      let campaign: Took['campaign'] = null;
      /** What the copies not granted wait for, for the campaign's stats. */
      let waitBy: Omit<CampaignWait, 'until'> | null = null;
      if (c.throttlePerHour !== null) {
        campaign = { id, perHour: c.throttlePerHour };
        const t = await takeTokens(redis, keys, `campaign:${id}`, campaignRate(c.throttlePerHour), granted, now);
        granted = t.granted;
        at = t.retryAt;
        if (granted < sending.length) waitBy = { by: 'throttle.perHour', limit: c.throttlePerHour };
      }
      let account: SendingCounted | null = null;
      let go = sending.slice(0, granted);
      let over = sending.slice(granted);
      // The account's quota and rates count the recipients it sends to, as its submissions' count
      // their accepted recipients: once a copy, not again for a retry after a transaction that kept
      // its count (deferred, 4xx: its record notes it, QUOTA_COUNTED), as an API message's retries do
      // not. A copy deferred without reaching a server (no route, connection refused) gave its count
      // back, or never took one: it is counted when it is next tried.
      const retried = limits ? go.filter((j) => (chunk[j] as QueueEntry).attempt > 0) : [];
      const counted = new Set<number>();
      if (retried.length > 0) {
        const marks = await Promise.all(retried.map((j) => { const e = chunk[j] as QueueEntry; return redis.hget(keys.rcptState(e.domain, e.msgId, e.idx), QUOTA_COUNTED); }));
        retried.forEach((j, k) => marks[k] !== null && counted.add(j));
      }
      const firsts = limits ? go.filter((j) => !counted.has(j)) : [];
      if (limits && firsts.length > 0) {
        // Copies the account's count did not take give back the campaign tokens they just took: over
        // its limit, or all of them when Redis refused the count (the chunk then fails and they go
        // back to the queue); else the campaign would wait for its bucket to refill.
        const uncounted = (n: number): void => void (campaign && this.refundTaken(refundOf({ campaign, account: null }, n)));
        let a: SendingTake;
        try {
          a = await takeSending(redis, keys, limits, firsts.length, now);
        } catch (err) {
          uncounted(go.length);
          throw err;
        }
        if (a.granted < firsts.length) {
          uncounted(firsts.length - a.granted);
          const until = a.retryAt ?? now + 1000;
          if (at === null || until >= at) waitBy = a.stoppedBy ? { by: a.stoppedBy.name, limit: a.stoppedBy.limit } : waitBy;
          at = Math.max(at ?? 0, until);
          const waiting = new Set(firsts.slice(a.granted));
          this.log.info({ campaign: id, account: msg.account, copies: over.length + waiting.size, until: new Date(at).toISOString(), limit: a.what }, "campaign copies wait for the account's sending limit");
          go = go.filter((j) => !waiting.has(j));
          over = [...over, ...waiting];
        }
        account = a.counters;
      }
      // Given back while they were being taken: not sent by this claim, so what they took goes back now
      // (a copy counted before took no account count).
      const back: Refund = { campaigns: new Map(), accounts: new Map() };
      for (const j of go) {
        const took: Took = { campaign, account: counted.has(j) ? null : account };
        if (!tokens.took(place(j), took)) addRefund(back, took, 1);
      }
      this.refundTaken(back);
      if (over.length === 0) continue;
      const until = at ?? now + 1000;
      await holdCampaignEntries(redis, keys, this.o.config.redis.scheduleShards, id, over.map((j) => chunk[j] as QueueEntry), { pointerAt: until, holdUntil: until, now });
      for (const j of over) holds[j] = 'held';
      if (waitBy) {
        this.o.metrics?.campaignCopiesHeld.inc({ by: waitBy.by }, over.length);
        await noteCampaignWait(redis, keys, id, { ...waitBy, until }).catch((err: unknown) => this.log.warn({ err, campaign: id }, 'campaign wait not noted'));
      }
    }
  }

  /**
   * Refunds what campaign copies given back unsent, or dealt with without reaching a server, took
   * (CampaignTokens): campaign throttle tokens and account sending counts. A failure is logged (the
   * bucket refills with time, the counter's window ends). stop() waits for refunds under way.
   */
  private refundTaken(r: Refund): Promise<void> {
    if (r.campaigns.size === 0 && r.accounts.size === 0) return Promise.resolve();
    const { redis, keys } = this.o;
    const p = Promise.all([
      ...[...r.campaigns].map(([id, { perHour, n }]) =>
        refundTokens(redis, keys, `campaign:${id}`, campaignRate(perHour), n, this.now()).catch((err: unknown) => this.log.warn({ err, campaign: id }, 'campaign throttle tokens not refunded')),
      ),
      ...[...r.accounts.values()].map(({ counted, n }) => returnSending(redis, counted, n).catch((err: unknown) => this.log.warn({ err, counters: counted.id }, 'account sending counts not refunded'))),
    ]).then(() => undefined);
    this.refunding.add(p);
    void p.finally(() => this.refunding.delete(p));
    return p;
  }

  /**
   * The tracking mode of a message's or campaign's copies. In 'anonymous' mode only aggregate counts
   * are kept, and mail to fewer than ANONYMOUS_MIN_RECIPIENTS people has no aggregate to hide in
   * (the one recipient of a message is its counts): it is sent untracked, as in 'off', keeping its
   * List-Unsubscribe. `recipients` null: not known yet (a campaign still queueing its list); then
   * `atLeast`, what it will have at least, must show the crowd, or the copy goes untracked: a small
   * campaign's copies were tracked while its list was being queued.
   */
  private trackingMode(account: string, recipients: number | null, atLeast = 0): TrackingMode {
    // An account not configured (any more) is held before it gets here; 'off' keeps nothing of its recipients.
    const mode = this.trackingModes.get(account) ?? 'off';
    if (mode !== 'anonymous') return mode;
    return (recipients ?? atLeast) < ANONYMOUS_MIN_RECIPIENTS ? 'off' : mode;
  }

  /** The render task of one campaign recipient: the template is compiled once per worker, the copy is theirs. */
  private campaignTask(msg: LoadedMessage, entry: QueueEntry, contact: CampaignContact, chunked: boolean): RenderTask {
    return {
      msgId: msg.id,
      kind: 'campaign',
      source: msg.body,
      signingDomain: msg.fromDomain,
      acceptedAt: msg.acceptedAt,
      frame: true,
      chunked,
      campaign: {
        recipient: { no: entry.idx, address: contact.email, fields: { ...contact.fields } },
        account: msg.account,
        mode: this.trackingMode(msg.account, msg.campaign?.recipients ?? null, msg.campaign?.atLeast ?? 0),
      },
    };
  }

  /**
   * One transaction of a rendered copy on `client`'s session, its time observed. A server that offered
   * CHUNKING and did not know BDAT gets DATA for an hour from the next connection (this one is over;
   * the copy is deferred).
   */
  private async sendCopy(client: SmtpClient, from: string, to: string, result: Extract<RenderResult, { ok: true }>): Promise<SmtpOutcome> {
    const t0 = performance.now();
    const outcome = await client.send({ from, to }, onWire(result));
    this.o.metrics?.smtpTransactionDuration.observe({ result: outcome.result }, (performance.now() - t0) / 1000);
    if (outcome.chunkingRefused) {
      this.dataOnly.set(client.peer, true, this.now() + PLAIN_FALLBACK_MS);
      this.log.warn({ host: client.peer, response: outcome.response }, 'BDAT refused although CHUNKING was offered: sending to this host with DATA for an hour');
    }
    return outcome;
  }

  /**
   * A copy goes on to the attempt's next host (Postfix's smtp_trouble.c keeps a recipient for the
   * next server after a 4xx from one that is not the last): when this host answered it with a 4xx
   * that is not a slow-down, and the attempt has an address left and may open another session
   * (delivery.maxSessions). A slow-down (421, or 450/451/4.7.x with THROTTLE_PATTERNS' words) goes to
   * the provider's backoff instead: its other hosts would be asked to take the same mail faster. A
   * drop or a timeout mid-transaction does not move on either: the message may have arrived.
   */
  private movesOn(outcome: SmtpOutcome, walk: HostWalk): boolean {
    return outcome.result === 'deferred' && outcome.code !== null && outcome.code >= 400 && outcome.code < 500 && !outcome.throttled
      && walk.next < walk.hosts.length && walk.sessions < this.o.config.delivery.maxSessions;
  }

  /**
   * Sends the copies a host answered 4xx (movesOn) to the attempt's next hosts, one session each,
   * walking on from where `walk` stopped; it does not move `walk` itself, whose session stays up for
   * the connection's next claims. A copy settles with the answer of the last host that had it: the
   * first that takes or refuses it for good, or the last one asked when none will. With no host left
   * to connect to, or once Sluice is stopping, they settle with their own host's 4xx. The copies'
   * leases are renewed by the batch's timer until each settles. With `adopt` (the first host deferred
   * every copy it was sent), a session that delivered and settled every copy left is returned instead
   * of closed, for the connection to go on with.
   */
  private async sendOnward(
    domain: string,
    shaping: EffectiveShaping,
    walk: HostWalk,
    onward: Onward[],
    leaseLost: (e: QueueEntry) => Promise<boolean>,
    adopt: boolean,
  ): Promise<{ succeeded: boolean; throttledReply: string | null; session?: Session }> {
    const fork: HostWalk = { hosts: walk.hosts, next: walk.next, sessions: walk.sessions };
    let succeeded = false;
    let throttledReply: string | null = null;
    let session: Session | undefined;
    const settle = async (o: Onward): Promise<void> => {
      onward.splice(onward.indexOf(o), 1);
      await this.settle(o.entry, shaping, o.msg, o.outcome, undefined, o.address);
    };
    while (onward.length > 0 && !this.stopping && this.movesOn(onward[0]!.outcome, fork)) {
      const next = await this.tryHosts(fork, shaping);
      if (!(next instanceof SmtpClient)) break;
      this.clients.add(next);
      this.log.info({ domain, host: next.peer, copies: onward.length, response: onward[0]?.outcome.response }, 'sending copies a host deferred on to the next MX host');
      let delivered = 0;
      let done = false;
      try {
        for (const o of [...onward]) {
          if (!next.usable || this.stopping) break;
          if (await leaseLost(o.entry)) {
            onward.splice(onward.indexOf(o), 1);
            continue;
          }
          const outcome = await this.sendCopy(next, o.from, o.address, o.result);
          // Lost before the transaction got under way: nothing was said, and the copy keeps its host's answer.
          if (outcome.sessionLost) break;
          if (outcome.result === 'delivered') {
            succeeded = true;
            delivered++;
          }
          if (outcome.throttled) throttledReply = outcome.response;
          o.outcome = outcome;
          if (this.movesOn(outcome, fork)) {
            this.o.metrics?.deliveryMovedOn.inc({ provider: shaping.provider });
            continue;
          }
          await settle(o);
        }
        done = true;
      } finally {
        // Every copy of the batch went on (adopt) and this host took them: the connection goes on with it.
        if (done && adopt && delivered > 0 && onward.length === 0 && next.usable && !this.stopping) session = { client: next, walk: { ...fork } };
        else this.closeClient(next, shaping.provider, true);
      }
    }
    for (const o of [...onward]) await settle(o);
    return { succeeded, throttledReply, ...(session ? { session } : {}) };
  }

  /**
   * `walk`: the attempt `client`'s session belongs to. A copy this host answers with a 4xx that is not
   * a slow-down (movesOn) goes on to the attempt's next host once the batch is through (sendOnward).
   */
  private async deliverBatch(
    client: SmtpClient,
    domain: string,
    shaping: EffectiveShaping,
    entries: readonly QueueEntry[],
    walk: HostWalk,
  ): Promise<BatchResult> {
    const { redis, keys, config } = this.o;
    // The leases of the copies not sent yet are kept alive on a timer for
    // as long as the batch runs: one transaction may outlast a lease (timeouts.data is 10 min, the
    // lease 5, and a slow link may take longer still to carry the message), and a lease that runs out is reaped and its copy claimed and sent again. A copy whose
    // lease was lost anyway (Redis unreachable for longer than the lease) is not sent by this holder.
    let next = 0;
    /** Copies from here on are no longer this batch's (given back): not sent, renewed or released by it. */
    let end = entries.length;
    /** Takes the copies from `from` on out of the batch, to be given back: it no longer sends or renews them. */
    const rest = (from: number): QueueEntry[] => {
      const out = entries.slice(from, end);
      end = Math.min(end, from);
      return out;
    };
    // Counted against delivery.maxClaimed until settled or given back.
    let holding = entries.length;
    this.claimed += holding;
    const lost = new Set<string>();
    const leaseMs = config.delivery.lease;
    /** Until when the leases of the copies left are known held: the claim's, then each renewal's (it was made just before this batch). */
    let heldUntil = this.now() + leaseMs;
    /** Copies this host answered with a 4xx that sends them on to the attempt's next host (movesOn): leased until settled. */
    const onward: Onward[] = [];
    let session: Session | undefined;
    /** One renewal at a time: the timer's and one a copy waits for share it. */
    let renewing: Promise<void> | undefined;
    const renew = (): Promise<void> =>
      (renewing ??= (async () => {
        const now = this.now();
        const leased = [...onward.map((o) => o.entry), ...entries.slice(next, end)];
        const gone = await extendLeases(redis, keys, domain, leased, now + leaseMs);
        gone.forEach((m) => lost.add(m));
        heldUntil = Math.max(heldUntil, now + leaseMs);
      })().finally(() => (renewing = undefined)));
    const keepAlive = setInterval(() => {
      renew().catch((err: unknown) => this.log.warn({ err, domain }, 'leases could not be extended'));
    }, Math.max(1000, Math.floor(leaseMs / 3)));
    /**
     * True when this holder may no longer send `entry`: its lease was reaped (and its copy perhaps
     * claimed and sent by another), or cannot be shown to be held. The timer above renews every third
     * of a lease; renewals that fell behind (the process stalled: a VM pause, swap, a blocked event
     * loop; or Redis was slow) are made now, before the copy goes out: after a stall the timer's
     * renewal runs only once the I/O that waited meanwhile is handled, and the copy would be sent first.
     */
    const leaseLost = async (entry: QueueEntry): Promise<boolean> => {
      if (!lost.has(entryMember(entry)) && this.now() >= heldUntil - leaseMs / 2) {
        await renew().catch((err: unknown) => this.log.warn({ err, domain }, 'leases could not be extended'));
        if (this.now() >= heldUntil) lost.add(entryMember(entry));
      }
      if (!lost.has(entryMember(entry))) return false;
      this.log.warn({ domain, msgId: entry.msgId, idx: entry.idx }, 'lease lost before sending (reaped, or not renewed in time): not sent by this holder');
      return true;
    };
    // Start every render now: the pool signs later copies while copy i is on the wire. Framed by the
    // worker for this session: BDAT chunks when the server offers CHUNKING, else DATA blocks.
    const campaignTokens = new CampaignTokens();
    const rendered = this.renderAll(entries, client.chunking, campaignTokens);
    for (const p of rendered) p.catch(() => undefined);
    // Copy j's render slot (and bytes) goes as its render settles.
    const slotBack = (j: number): void => void (rendered[j] as Promise<Prepared>).then(() => this.renderSlots.release(1), () => this.renderSlots.release(1));
    /** Copies from here on had their render slots handed back with them (giveBack). */
    let slotsTo = entries.length;
    let attempted = 0;
    /** The copies this loop dealt with (0..handled-1, given back ones excluded) and those of them that went to the server. */
    let handled = 0;
    const wentOut = new Set<number>();
    let txMs = 0;
    let succeeded = false;
    let throttledReply: string | null = null;
    let freed = 0;
    // A claim still on the wire delivery.claimWindow after its first transaction began is slow (the
    // peer holds its replies): the copies it has not started go back, due at once and no attempt
    // counted, so they wait neither behind it nor against delivery.maxClaimed, which every other
    // destination draws on. Its next claims are sized to its pace (claimSize).
    let windowTimer: NodeJS.Timeout | undefined;
    let givingBack: Promise<void> | undefined;
    /**
     * Copies that go back to the queue unsent (the connection broke, the session was lost before its
     * transaction, shutdown): their rate tokens are refunded, as a claim window's give-back does, for
     * nothing reached a server, and so are their campaign throttle tokens. A copy already sent or
     * attempted is not among them. `from`: the first copy given back (the rest of the claim goes with it).
     */
    const giveBackUnsent = async (from: number): Promise<void> => {
      const back = rest(from);
      const moved = await release(redis, keys, back, this.now());
      await this.refundCopies(domain, shaping, moved, campaignTokens.giveBack(from));
    };
    const giveBack = (): void => {
      const from = next + 1;
      const back = rest(from);
      if (back.length === 0) return;
      holding -= back.length;
      this.claimed -= back.length;
      // Their render slots too (MAX_RENDERED is shared by every connection as the claim budget is).
      for (let j = from; j < from + back.length; j++) slotBack(j);
      slotsTo = from;
      this.log.info({ domain, host: client.peer, copies: back.length }, 'slow transactions: the copies of the claim not started go back to the queue');
      const taken = campaignTokens.giveBack(from);
      givingBack = release(redis, keys, back, this.now()).then(
        (moved) => this.refundCopies(domain, shaping, moved, taken),
        (err: unknown) => this.log.warn({ err, domain }, 'copies could not be given back: they return when their leases run out'),
      );
    };
    try {
      for (let i = 0; i < end; i++) {
        // Copies before i are sent or settled: their render slots (and bytes) can go. None at i = 0:
        // release(0) gives one permit back (Semaphore takes and gives at least one).
        if (i > freed) this.renderSlots.release(i - freed);
        freed = i;
        const entry = entries[i] as QueueEntry;
        next = i;
        if (this.stopping || !client.usable) {
          await giveBackUnsent(i);
          break;
        }
        handled = i + 1;
        if (await leaseLost(entry)) continue;
        let prepared: Prepared;
        try {
          prepared = await (rendered[i] as Promise<Prepared>);
        } catch (err) {
          this.log.error({ err, msgId: entry.msgId }, 'loading or rendering failed');
          await this.settle(entry, shaping, null, localOutcome('deferred', '4.3.0', `internal error before sending: ${(err as Error).message}`, 'RENDER', true));
          continue;
        }
        const { msg, result, suppressed, paused, address } = prepared;
        if (prepared.held) continue;
        if (msg && prepared.cancelled) {
          await this.settle(entry, shaping, msg, localOutcome('bounced', '5.0.0', 'not sent: the campaign was cancelled', 'CAMPAIGN', true), 'cancelled');
          continue;
        }
        if (msg && paused === ACCOUNT_CLOSED_REASON) {
          // Held: no attempt is spent and the copy never expires while the account is closed;
          // reopening resumes it, deleting the account's messages drops it at its next claim.
          await hold(redis, keys, entry, { now: this.now(), nextAt: this.now() + CLOSED_HOLD_MS, enhanced: '4.7.0', response: 'held: the account is closed' });
          continue;
        }
        if (msg && paused) {
          // Held without an attempt, so a resumed sender's mail goes within PAUSED_SENDER_HOLD_MS
          // rather than on the retry schedule's longest delay; it still expires at the rule's maxAge
          // (a campaign copy not tried yet never does, as while its campaign is paused: retriedSince).
          const until = (await this.retriedSince(entry, msg, this.now())) + shaping.maxAge;
          const why = paused === ACCOUNT_UNCONFIGURED
            ? [`account '${msg.account}' is not in the configuration (a reload removed it)`, 'sent when it is configured again']
            : paused === DOMAIN_NOT_OWNED
              ? [`account '${msg.account}' no longer has the From domain ${msg.fromDomain ?? ''} (a reload removed it)`, 'sent when it has it again']
              : paused === 'operator' ? ['sender paused by the operator (sluice sender pause)', 'resumes when an operator resumes it'] : [`sender paused by the reputation guard (${paused})`, 'resumes when an operator resumes it'];
          if (this.now() >= until) {
            await this.settle(entry, shaping, msg, localOutcome('deferred', '4.7.0', `${why[0]} until the message expired`, 'REPUTATION', true));
          } else {
            await hold(redis, keys, entry, { now: this.now(), nextAt: Math.min(this.now() + PAUSED_SENDER_HOLD_MS, until), enhanced: '4.7.0', response: `held: ${why[0]}; ${why[1]}` });
          }
          continue;
        }
        if (msg && suppressed) {
          await this.settle(entry, shaping, msg, localOutcome('bounced', '5.7.1', suppressed.list === 'contact' ? `not sent: the contact is ${suppressed.reason}` : `not sent: the address is on the ${suppressed.list === '*' ? 'global' : "account's"} suppression list (${suppressed.reason})`, 'SUPPRESSION', true), 'suppressed');
          continue;
        }
        if (!msg) {
          await this.settle(entry, shaping, null, localOutcome('bounced', '5.3.0', 'message is no longer stored (purged or erased)', 'LOAD', true), 'undefined');
          continue;
        }
        if (address === undefined && msg.kind === 'campaign') {
          // The contact (or its list) was deleted after the campaign queued it: nobody to send to, as
          // after an erasure. A bounce would count against the campaign's bounce rate, and tell the
          // webhooks this address failed hard.
          await this.settle(entry, shaping, msg, localOutcome('bounced', '5.1.3', `not sent: contact ${entry.idx} was deleted from the campaign's list`, 'CAMPAIGN', true), 'cancelled');
          continue;
        }
        if (address === undefined) {
          await this.settle(entry, shaping, msg, localOutcome('bounced', '5.1.3', `recipient ${entry.idx} is not in message ${entry.msgId}`, 'LOAD', true), 'undefined');
          continue;
        }
        if (!result) {
          await this.settle(entry, shaping, msg, localOutcome('bounced', '5.3.0', 'message could not be prepared', 'LOAD', true), 'undefined');
          continue;
        }
        if (await this.waitedPastMaxAge(entry, msg, shaping)) {
          // Held (sluice queue hold), or behind a rate or a backoff, past its maxAge: expired unsent,
          // as the README promises, not sent days late.
          await this.settle(entry, shaping, msg, localOutcome('deferred', '4.4.7', `not sent: it waited in the queue past its maxAge (${formatDuration(shaping.maxAge)})`, 'MAXAGE', true));
          continue;
        }
        // Lost while it waited for its render: another holder may be sending it now.
        if (await leaseLost(entry)) continue;
        if (!result.ok) {
          // The content's fault bounces; a signing key's (4.7.5) or the host's (a worker that died: 4.3.0) is tried again.
          const fatal = result.code === 'SLUICE_RENDER_FAILED';
          const status = fatal ? '5.6.0' : result.code === 'SLUICE_RENDER_WORKER_FAILED' ? '4.3.0' : '4.7.5';
          await this.settle(entry, shaping, msg, localOutcome(fatal ? 'bounced' : 'deferred', status, `${result.code}: ${result.message}`, 'RENDER', true), fatal ? 'contenterror' : undefined);
          continue;
        }
        const t0 = performance.now();
        windowTimer ??= setTimeout(giveBack, config.delivery.claimWindow);
        // A notice goes with the null reverse-path (RFC 5321 §4.5.5): nothing may answer it.
        // The sending domain's own return-path domain, when it has one (SPF then aligns for DMARC).
        const from = msg.source === 'dsn' ? '' : verpAddress(entry.msgId, entry.idx, (msg.fromDomain ? this.returnPaths.get(msg.fromDomain) : undefined) ?? config.delivery.bounceDomain, this.o.verpKey);
        const outcome = await this.sendCopy(client, from, address, result);
        if (outcome.sessionLost) {
          // No attempt: the session was lost before this transaction got under way. The copy goes
          // back with the rest, and runConnection seeks another session (the next address, when this
          // one carried no transaction), as after a drop between two transactions.
          this.log.info({ domain, host: client.peer, msgId: entry.msgId, idx: entry.idx, response: outcome.response }, 'session lost before the transaction: the copy goes back unattempted');
          handled = i;
          await giveBackUnsent(i);
          break;
        }
        attempted++;
        wentOut.add(i);
        // A campaign copy that keeps its account count (it reached a server) and will be tried again:
        // its retries count nothing more (throttleCampaigns). Before the outcome is written.
        if (outcome.result === 'deferred' && campaignTokens.tookAccount(i)) await this.o.redis.hset(this.o.keys.rcptState(entry.domain, entry.msgId, entry.idx), QUOTA_COUNTED, '1');
        txMs += performance.now() - t0;
        if (outcome.result === 'delivered') succeeded = true;
        if (outcome.throttled) throttledReply = outcome.response;
        if (this.movesOn(outcome, walk)) {
          // Per copy at debug: outcomes are events, not log lines; sendOnward logs each session it opens with the answer.
          this.log.debug({ domain, host: client.peer, msgId: entry.msgId, idx: entry.idx, response: outcome.response }, 'temporary failure: the copy goes on to the next MX host in this attempt');
          onward.push({ entry, msg, result, address, from, outcome });
          this.o.metrics?.deliveryMovedOn.inc({ provider: shaping.provider });
          continue;
        }
        await this.settle(entry, shaping, msg, outcome, undefined, address);
      }
      if (onward.length > 0) {
        // This host deferred every copy it was sent (a greylister, a host in trouble): the next host
        // that takes them all takes the connection's next claims too, as Postfix's session cache
        // hands its later deliveries the backup's session.
        const r = await this.sendOnward(domain, shaping, walk, onward, leaseLost, onward.length === attempted);
        if (r.succeeded) succeeded = true;
        if (r.throttledReply !== null) throttledReply = r.throttledReply;
        if (r.session) session = r.session;
      }
    } finally {
      clearInterval(keepAlive);
      clearTimeout(windowTimer);
      this.claimed -= holding;
      // Copies whose turn never came (the connection broke, shutdown): their slots go as their render settles.
      for (let j = freed; j < slotsTo; j++) slotBack(j);
      await givingBack;
      // Copies dealt with here without reaching a server: what they took at the claim and render goes back.
      const unsent: number[] = [];
      for (let j = 0; j < handled; j++) if (!wentOut.has(j)) unsent.push(j);
      await this.refundCopies(domain, shaping, unsent.length, campaignTokens.takeBack(unsent));
    }
    return { attempted, paceMs: attempted > 0 ? txMs / attempted : null, succeeded, throttledReply, ...(session ? { session } : {}) };
  }

  /**
   * Gives back what `n` copies of a claim took without reaching a server: a destination rate token
   * each (taken at the claim), and `taken`, their campaigns' throttle tokens and accounts' sending
   * counts (taken as they were rendered). For copies given back to the queue unsent (the claim window,
   * a session lost before its transaction, a broken connection, shutdown) and for those settled, held
   * or lost to another holder without a transaction (suppressed, cancelled, not stored, not rendered,
   * a paused sender, a closed account, a campaign's throttle): a suppressed address or a failing
   * render does not spend a destination's hourly rate on mail that never went. Failures are logged.
   */
  private async refundCopies(domain: string, shaping: EffectiveShaping, n: number, taken: Refund): Promise<void> {
    const { redis, keys } = this.o;
    await Promise.all([
      refundTokens(redis, keys, shaping.scope, shaping.rate, n, this.now()).catch((err: unknown) => this.log.warn({ err, domain }, 'rate tokens not refunded')),
      this.refundTaken(taken),
    ]);
  }

  /**
   * Whether a copy claimed now waited longer than its maxAge, and more than MAX_AGE_LATE_MS beyond it:
   * a copy's last retry is due at its maxAge (settle), and a claim a little late still makes it.
   * No read for a message's copy; a campaign copy's first attempt is read only for a retry.
   */
  private async waitedPastMaxAge(entry: QueueEntry, msg: LoadedMessage, shaping: EffectiveShaping): Promise<boolean> {
    const now = this.now();
    const late = Math.min(MAX_AGE_LATE_MS, Math.max(MAX_AGE_LATE_MIN_MS, shaping.maxAge / 10));
    if (msg.kind !== 'campaign' ? now <= msg.acceptedAt + shaping.maxAge + late : entry.attempt === 0) return false;
    return now > (await this.retriedSince(entry, msg, now)) + shaping.maxAge + late;
  }

  /**
   * Since when a copy's retries count towards shaping.maxAge: a message's since its acceptance, a
   * campaign copy's since its own first attempt (firstAt in its delivery record, written by
   * retry-3.lua at the first deferral), not since the campaign started: a campaign throttled, paused
   * or queued for longer than maxAge has copies first tried days after its start, and each of those
   * expired at its first 4xx (a greylisting) with no retry at all. A copy not tried yet starts now.
   */
  private async retriedSince(entry: QueueEntry, msg: LoadedMessage | null, now: number): Promise<number> {
    if (msg !== null && msg.kind !== 'campaign') return msg.acceptedAt;
    if (msg !== null && entry.attempt === 0) return now;
    const first = Number(await this.o.redis.hget(this.o.keys.rcptState(entry.domain, entry.msgId, entry.idx), 'firstAt'));
    if (first > 0) return first;
    // Deferred before firstAt was written: counted from the campaign's start, as it was then.
    if (msg !== null) return msg.acceptedAt;
    // Not loaded (it failed before sending, again and again): from the id's time (a message id is
    // its acceptance's millisecond, a campaign's its creation's), not from now, which would push the
    // maximum age back at every attempt and retry it for ever.
    return isId(entry.msgId) ? Math.min(now, idTime(entry.msgId)) : now;
  }

  /**
   * Applies one outcome: one Lua call, an event, metrics. `address`: the recipient the remote server
   * answered about. The remote server's verdict on it counts as the same answer in a DSN does
   * (feedback/process.ts, by bounces/verdict.ts): an address-level hard bounce (5.1.1 user unknown …)
   * puts it on the global suppression list; a soft one (5.2.2 mailbox full …), and a copy that
   * expired after its last remote answer was the mailbox's (not the sender's: no 4.7.x block), counts
   * in its soft-bounce history, and a run of feedback.softBounceLimit suppresses it globally too.
   * An outcome with no remote reply code (a local refusal, a drop, a timeout) counts for neither.
   * The suppression is written before the outcome: whoever sees the recipient final (the API, a
   * webhook, the next send to the address) sees the suppression too, and a crash between the two
   * leaves the copy to be claimed again (and found suppressed, if it was) rather than an address
   * bounced for good but never suppressed. Both writes are idempotent per copy (the soft-bounce
   * history counts "<msgId>:<idx>" once), so an outcome that turns out a no-op (another holder
   * settled the entry) changes nothing there.
   */
  private async settle(entry: QueueEntry, shaping: EffectiveShaping, msg: LoadedMessage | null, outcome: SmtpOutcome, reason?: string, address?: string): Promise<void> {
    const { redis, keys, config } = this.o;
    const now = this.now();
    const recordTtlMs = config.retention.records;
    const base = { now, code: outcome.code, enhanced: outcome.enhanced, response: outcome.response };
    const account = msg?.account ?? '';
    const fields = { msgId: entry.msgId, idx: entry.idx, account, domain: entry.domain, attempt: entry.attempt + 1, code: outcome.code ?? 0, enhanced: outcome.enhanced ?? '' };
    const m = this.o.metrics;
    let final = false;
    let applied: number = OUTCOME.NOOP;
    let counter: CampaignCounter = 'bounced';
    let bounceReason: string | undefined;
    let addressBounce = false;

    // The state change's event: appended by the outcome's own script on a single server (so a crash
    // cannot separate the two), else afterwards; either way only when the outcome applied (a no-op
    // outcome's entry was settled, and its event written, by another holder).
    const single = !(redis instanceof Cluster);
    const stream = single ? this.o.eventStream : undefined;
    let event: { type: EventType; fields: Record<string, string | number> } | undefined;
    const eventOf = (type: EventType, f: Record<string, string | number>): OutcomeEvent | undefined => {
      event = { type, fields: f };
      return stream ? { stream: stream.key, maxLen: stream.maxLen, packed: packEvent(type, f) } : undefined;
    };
    // A campaign copy's final outcome is counted by the outcome's own script on a single server (one
    // step: a kill between two calls lost the count, and the campaign never completed); on a cluster
    // the campaign's keys are in another slot, and recordCampaignOutcome counts it below.
    const countedHere = msg?.kind === 'campaign' && single ? msg.id : undefined;
    const campaignCount = (counter: string, reason?: string, hard?: boolean): { campaign?: CampaignCount } =>
      countedHere === undefined ? {} : { campaign: { campaignId: countedHere, counter, reason, hard: hard === true } };
    // A final outcome not counted in its own script (all on a cluster, where the message or campaign
    // is in another slot; on a single server, but a campaign's copy and a delivered message's) notes
    // the count it owes, counted below once per copy and then forgotten; what a crash leaves owed,
    // or an outcome ioredis sent again after a lost reply (the repeat answers NOOP), the reaper
    // counts (lib/owed.lua).
    let owed: OwedCount | undefined;
    const owe = (counter: string, reason?: string, hard?: boolean): { owe?: OwedCount } => {
      if (countedHere !== undefined) return {};
      owed = { counter, reason, hard: hard === true };
      return { owe: owed };
    };
    if (outcome.result === 'delivered') {
      if (msg?.dsn) await this.reportToSender(entry, msg, address, outcome, '2.0.0', 'That server does not report delivery to the mailbox: this is the last report on it.', 'relayed');
      const ev = eventOf('delivered', fields);
      // Not for a copy whose message could not be loaded: its record may be a campaign's (counted below by what it is).
      if (msg !== null && msg.kind !== 'campaign' && single) {
        // One script for the ack and the message's pending count (a campaign counts elsewhere).
        const r = await ackAndFinish(redis, keys, entry, { ...base, recordTtlMs, messageTtlMs: recordTtlMs, ...(ev ? { event: ev } : {}) });
        applied = r.reply;
        if (applied !== OUTCOME.NOOP) await this.o.messages.finishedElsewhere(entry.msgId, r.pending, now).catch((err: unknown) => this.log.warn({ err, msgId: entry.msgId }, 'could not renew the address index of a late message'));
      } else applied = await ack(redis, keys, entry, { ...base, recordTtlMs, ...(ev ? { event: ev } : {}), ...campaignCount('delivered'), ...owe('delivered') });
      counter = 'delivered';
      // Ends the address's run of soft bounces, unless this copy bounces by mail later (store/soft-bounces.ts):
      // written with the other 250s of the next few ms, an EXISTS each for addresses without soft bounces.
      if (address !== undefined) this.deliveryMarks.add(address, `${entry.msgId}:${entry.idx}`, now);
      m?.deliveryAttempts.inc({ result: 'delivered', provider: shaping.provider });
      m?.messagesDelivered.inc({ provider: shaping.provider });
      final = true;
    } else if (outcome.result === 'deferred') {
      const attemptsMade = entry.attempt + 1;
      const retryUntil = (await this.retriedSince(entry, msg, now)) + shaping.maxAge;
      // Tried until maxAge, the last time at maxAge itself (the Will-Retry-Until of a delay notice):
      // a retry due after it comes at it. Expired when an attempt at or after maxAge fails.
      const nextAt = Math.min(now + retryDelay(shaping, attemptsMade), retryUntil);
      if (now >= retryUntil) {
        // The last remote answer says whose failure it was: the mailbox's own (4.2.2 full) counts; a
        // drop or timeout with no answer (code null) says nothing about the address.
        // The notice first: when it cannot be queued, nothing of this outcome is written (reportToSender).
        await this.reportToSender(entry, msg, address, outcome, '4.4.7', `It could not be delivered within ${formatDuration(shaping.maxAge)}, the longest a message is retried.`);
        if (address !== undefined && outcome.code !== null && RECIPIENT_COMMANDS.has(outcome.command) && verdictOf({ ...this.o.classify(outcome.code, outcome.enhanced, outcome.response), hardbounce: false, action: 'failed', feedbacktype: null }) === 'soft') {
          await this.suppressAfter(entry, outcome, address, 'softbounce', now);
        }
        const ev = eventOf('expired', { ...fields, reason: 'expired' });
        applied = await bounce(redis, keys, entry, { ...base, state: 'expired', reason: 'expired', recordTtlMs, ...(ev ? { event: ev } : {}), ...campaignCount('expired'), ...owe('expired') });
        counter = 'expired';
        m?.deliveryAttempts.inc({ result: 'expired', provider: shaping.provider });
        m?.bounces.inc({ reason: 'expired', hard: 'false' });
        final = true;
      } else {
        await this.warnSender(entry, msg, address, outcome, retryUntil, now);
        const ev = eventOf('deferred', { ...fields, nextAt });
        applied = await retry(redis, keys, entry, { ...base, nextAt, ...(ev ? { event: ev } : {}) });
        counter = 'deferred';
        m?.deliveryAttempts.inc({ result: 'deferred', provider: shaping.provider });
      }
    } else if (reason === 'suppressed' || reason === 'cancelled') {
      if (reason === 'suppressed') await this.reportToSender(entry, msg, address, outcome, '5.7.1', 'The address is on the suppression list (it unsubscribed, complained or bounced before), so it was not sent.');
      const ev = eventOf(reason, fields);
      applied = await bounce(redis, keys, entry, { ...base, state: reason, reason, recordTtlMs, ...(ev ? { event: ev } : {}), ...campaignCount(reason), ...owe(reason) });
      counter = reason;
      m?.deliveryAttempts.inc({ result: reason, provider: shaping.provider });
      final = true;
    } else {
      // Our own reasons are hard as the classifier's are (isHardBounce): a null MX or NXDOMAIN is, a
      // loop to this host, a message no longer stored or one that could not be rendered is not.
      let verdict = reason ? { reason, hardbounce: isHardBounce(reason, outcome.enhanced ?? '', String(outcome.code ?? '')) } : this.o.classify(outcome.code, outcome.enhanced, outcome.response);
      // Only a remote server's verdict on the address counts against the sender (not our own drops).
      // A local refusal (no code: the client would not send it) is no remote verdict on the address.
      let about = reason || outcome.code === null ? null : verdictOf({ ...verdict, action: 'failed', feedbacktype: null });
      // A refusal of our envelope sender or of the session, worded as an address failure, is the
      // sender's problem: Sisimai's 'rejected' (the sender address was refused), never suppressed.
      if ((about === 'hard' || about === 'soft') && !RECIPIENT_COMMANDS.has(outcome.command)) {
        verdict = { ...verdict, reason: 'rejected', hardbounce: false };
        about = 'sender';
      }
      addressBounce = about === 'hard';
      // The notice first: when it cannot be queued, nothing of this outcome is written (reportToSender),
      // and the next attempt is refused as this one was, not found suppressed by this one.
      await this.reportToSender(entry, msg, address, outcome, '5.0.0', outcome.code !== null ? 'The recipient\'s mail server refused it.' : `It was refused before sending: ${outcome.response}`);
      if (address !== undefined && (about === 'hard' || about === 'soft')) await this.suppressAfter(entry, outcome, address, addressBounce ? 'hardbounce' : 'softbounce', now);
      const ev = eventOf('bounced', { ...fields, reason: verdict.reason, hard: verdict.hardbounce ? 1 : 0 });
      applied = await bounce(redis, keys, entry, { ...base, state: 'bounced', reason: verdict.reason, recordTtlMs, ...(ev ? { event: ev } : {}), ...campaignCount('bounced', verdict.reason, addressBounce), ...owe('bounced', verdict.reason, addressBounce) });
      bounceReason = verdict.reason;
      m?.deliveryAttempts.inc({ result: 'bounced', provider: shaping.provider });
      m?.bounces.inc({ reason: verdict.reason, hard: verdict.hardbounce ? 'true' : 'false' });
      final = true;
    }
    // Counted once: when another holder of the entry settled it first (a reaped lease), this outcome
    // changed nothing and must not take the recipient off the pending count a second time, nor count
    // in the sender's figures.
    if (applied === OUTCOME.NOOP) return;
    if (counter === 'delivered') this.recordReputation(msg, 'delivered');
    if (addressBounce) await this.firstHardBounce(entry, msg, now, recordTtlMs);
    if (event) {
      if (stream) stream.appended(event.type);
      else this.o.events(event.type, event.fields);
    }
    if (owed) {
      // Counted once on its message or campaign (finishCopy-5.lua reads which it is: also for a copy
      // whose message could not be loaded), then no longer owed. A count that fails stays owed, for
      // the reaper.
      const c = owed;
      const counted = await this.o.messages.countCopy(entry, c, now).then(
        () => true,
        (err: unknown) => (this.log.warn({ err, msgId: entry.msgId, idx: entry.idx }, 'could not count the outcome on its message or campaign: the reaper will'), false),
      );
      // Not waited for: a note left by a failure costs the reaper a count that finds the copy counted.
      if (counted) void clearOwed(redis, keys, entry.domain, owedMember(entry, c)).catch((err: unknown) => this.log.warn({ err, domain: entry.domain }, 'could not clear an owed count (counted once all the same)'));
      if (msg?.kind === 'campaign' && addressBounce) await this.o.reputation?.judgeCampaign?.(msg.id).catch((err: unknown) => this.log.warn({ err, campaign: msg.id }, 'campaign not judged'));
    } else if (msg?.kind === 'campaign') {
      if (!(final && countedHere !== undefined)) await recordCampaignOutcome(redis, keys, msg.id, { counter, reason: bounceReason, final, now, hardbounce: addressBounce }).catch((err: unknown) => this.log.warn({ err, campaign: msg.id }, 'could not count the campaign outcome'));
      if (addressBounce) await this.o.reputation?.judgeCampaign?.(msg.id).catch((err: unknown) => this.log.warn({ err, campaign: msg.id }, 'campaign not judged'));
    }
  }

  /**
   * An SMTP submission's recipient failed for good: its envelope sender gets a DSN (failure-notice.ts),
   * queued before the outcome is written, so a crash between the two repeats the notice rather than
   * losing it; the repeat, and the notice of a second holder whose outcome turns out a no-op, finds
   * the first stored under the same id (noticeId) and is not sent again. Not for a null sender, nor
   * about a notice (no loops), nor for API mail, nor against the recipient's NOTIFY (noticeToSender).
   * `status` stands in when the outcome has no enhanced code.
   *
   * With NOTIFY=SUCCESS a copy the next hop took is reported as Action: relayed (RFC 3461 §5.2.2:
   * Sluice passes no DSN parameters on. Its envelope sender is its own VERP address, so the next
   * hop's reports come to the feedback MX, which suppresses addresses by them and passes a failure
   * on to the sender: a NOTIFY=NEVER passed on would hide those). A warning of delay (Action:
   * delayed, warnSender) is queued like a report of success: when it cannot be, the outcome is
   * written all the same.
   */
  private async reportToSender(entry: QueueEntry, msg: LoadedMessage | null, address: string | undefined, outcome: SmtpOutcome, status: string, explanation: string, action: NoticeAction = 'failed', retryUntil?: number): Promise<void> {
    const send = this.o.sendNotice;
    if (!send || !this.o.config.delivery.failureNotices || !msg) return;
    const reply = outcome.code === null ? null : /^\d{3}[ -]/.test(outcome.response) ? outcome.response : `${outcome.code} ${outcome.enhanced ? `${outcome.enhanced} ` : ''}${outcome.response}`;
    const notice = noticeToSender(msg, {
      hostname: this.o.config.instance.hostname, now: this.now(), idx: entry.idx, recipient: address, action, retryUntil,
      status: action === 'delayed' ? (outcome.enhanced?.startsWith('4.') ? outcome.enhanced : status) : (outcome.enhanced ?? status),
      remoteReply: reply, explanation, original: typeof msg.body === 'string' ? Buffer.from(msg.body, 'utf8') : msg.body,
    });
    if (!notice) return;
    const queued = send(notice);
    // A report of success, or a warning, is not worth a second copy to the recipient: it may be lost.
    if (action !== 'failed') return void (await queued.catch((err: unknown) => this.log.warn({ err, msgId: entry.msgId, idx: entry.idx, action }, 'could not queue the report to the sender')));
    // A failure notice may not be (RFC 5321 §6.1): unqueued, the outcome is not written either. The
    // recipient keeps its lease, which runs out and returns it to the queue, and its next attempt
    // (the same refusal, the same expiry) queues the notice; one queued meanwhile counts once (noticeId).
    await queued.catch((err: unknown) => {
      this.log.error({ err, msgId: entry.msgId, idx: entry.idx }, 'could not queue the notice to the sender: the recipient is retried when its lease runs out');
      throw err;
    });
  }

  /**
   * A recipient of an SMTP submission deferred delivery.delayWarning or more after its acceptance:
   * its sender is warned that it is still being retried, and until when (RFC 3464 Action: delayed,
   * Will-Retry-Until), once: a later deferral finds the warning stored under its id (noticeId
   * 'delayed') and does nothing; two holders racing queue it under the same id, which the notice
   * sender finds taken and does not store again. Its NOTIFY
   * decides as for failures (noticeToSender: DELAY, or no NOTIFY). A warning that cannot be queued is
   * logged and the deferral written all the same (the next one tries again).
   */
  private async warnSender(entry: QueueEntry, msg: LoadedMessage | null, address: string | undefined, outcome: SmtpOutcome, retryUntil: number, now: number): Promise<void> {
    const after = this.o.config.delivery.delayWarning;
    if (after === null || !msg || msg.source !== 'smtp' || now - msg.acceptedAt < after) return;
    // Warned at an earlier deferral: its notice is stored under the id this one would take. Not
    // composed (and found taken by the notice sender) again at every later retry of a long outage.
    if ((await this.o.redis.exists(this.o.keys.msgMeta(noticeId(entry.msgId, entry.idx, 'delayed')))) === 1) return;
    const waited = roughly(now - msg.acceptedAt);
    await this.reportToSender(entry, msg, address, outcome, '4.0.0', `It was accepted ${waited} ago and is still being retried: Sluice keeps trying until ${new Date(retryUntil).toUTCString()}, and will tell you if it gives up.`, 'delayed', retryUntil);
  }

  /**
   * A remote server's bounce of the address: a hard one suppresses it globally at once; a soft one is
   * counted in its soft-bounce history first and suppresses it at feedback.softBounceLimit in a row.
   */
  private async suppressAfter(entry: QueueEntry, outcome: SmtpOutcome, address: string, kind: 'hardbounce' | 'softbounce', now: number): Promise<void> {
    const { redis, keys, config } = this.o;
    try {
      // Erased while in flight: the erasure took the address off every list and this copy's record;
      // its outcome is dropped (the lease is gone), and must not put the address back on a list.
      if (await copyErased(redis, keys, entry.msgId, entry.idx)) return;
      if (kind === 'softbounce') {
        const run = await recordSoftBounce(redis, keys, address, `${entry.msgId}:${entry.idx}`, now, config.feedback.softBounceWindow);
        if (run < config.feedback.softBounceLimit) return;
      }
      const evidence = { source: 'delivery', msgId: entry.msgId, idx: entry.idx, status: outcome.enhanced ?? '', code: outcome.code ?? 0 };
      await addSuppression(redis, keys, GLOBAL_LIST, address, { reason: kind, at: now, evidence });
      this.o.metrics?.suppressionsAdded.inc({ list: 'global', reason: kind });
    } catch (err) {
      this.log.warn({ err, msgId: entry.msgId }, 'could not suppress the address');
    }
  }

  /**
   * A copy refused for good at RCPT as an address that does not exist counts once, as a DSN of it
   * does (feedback/process.ts): the copy's hard-bounce mark first, so a report of it by mail as well
   * (a relay's DSN of the same refusal) counts nothing again; then the sender's figures, and a
   * campaign contact's status (a later campaign to the list leaves it out).
   */
  private async firstHardBounce(entry: QueueEntry, msg: LoadedMessage | null, now: number, ttlMs: number): Promise<void> {
    const { redis, keys } = this.o;
    const first = await firstFeedback(redis, keys, entry.msgId, entry.idx, 'hardbounce', now, ttlMs).catch((err: unknown) => {
      this.log.warn({ err, msgId: entry.msgId }, 'hard bounce not marked');
      return true;
    });
    if (!first) return;
    this.recordReputation(msg, 'hardbounce');
    const listId = msg?.kind === 'campaign' ? msg.campaign?.listId : undefined;
    if (listId !== undefined) await setContactStatus(redis, keys, listId, entry.idx, 'bounced', now).catch((err: unknown) => this.log.warn({ err, campaign: entry.msgId }, "the contact's status not set"));
  }

  private recordReputation(msg: LoadedMessage | null, kind: 'delivered' | 'hardbounce'): void {
    if (!msg || !this.o.reputation) return;
    this.o.reputation.record({ account: msg.account, domain: msg.fromDomain, kind }).catch((err: unknown) => this.log.warn({ err, msgId: msg.id }, 'reputation not recorded'));
  }

  /**
   * The whole destination failed before any transaction (DNS answer, null MX, nothing reachable):
   * every due recipient gets the same outcome, in bounded batches.
   */
  private async settleAll(domain: string, shaping: EffectiveShaping, outcome: SmtpOutcome, reason?: string): Promise<void> {
    const { redis, keys, config } = this.o;
    let nextAt: number | null = null;
    for (;;) {
      const r = await claim(redis, keys, { domain, max: BULK_BATCH, leaseMs: config.delivery.lease, now: this.now() });
      nextAt = r.nextAt;
      if (r.entries.length === 0) break;
      const msgs = await Promise.all(r.entries.map((e) => this.o.messages.load(e.msgId).catch(() => null)));
      await Promise.all(r.entries.map((e, i) => this.settle(e, shaping, msgs[i] ?? null, outcome, reason)));
      if (r.entries.length < BULK_BATCH || this.stopping) break;
    }
    await reschedule(redis, keys, config.redis.scheduleShards, domain, nextAt, this.now());
    if (outcome.result !== 'delivered') this.log.info({ domain, response: outcome.response }, 'destination failed as a whole');
  }
}

/**
 * Which of two failed session setups an attempt reports: a remote server's answer over a failure
 * without one, and a throttling answer over another, else the later. A primary's "421 too many
 * connections" says more than the backup's refused connection, and carries the throttle signal the
 * destination's backoff reads (runConnection).
 */
function moreTelling(earlier: SmtpOutcome | undefined, later: SmtpOutcome): SmtpOutcome {
  if (earlier === undefined || earlier.code === null) return later;
  if (later.code === null || (earlier.throttled && !later.throttled)) return earlier;
  return later;
}

/** Positions of a chunk's campaign entries, by campaign id. */
function campaignPositions(msgs: readonly (LoadedMessage | null)[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  msgs.forEach((m, j) => {
    if (m?.kind !== 'campaign') return;
    const list = out.get(m.id);
    if (list) list.push(j);
    else out.set(m.id, [j]);
  });
  return out;
}

function sleep(msDelay: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.max(0, msDelay)));
}

/** A duration in words for people: '5 hours', '40 minutes', '30 seconds'. */
function roughly(ms: number): string {
  const [n, unit] = ms >= 2 * 3_600_000 ? [Math.round(ms / 3_600_000), 'hour'] : ms >= 2 * 60_000 ? [Math.round(ms / 60_000), 'minute'] : [Math.max(1, Math.round(ms / 1000)), 'second'];
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}
