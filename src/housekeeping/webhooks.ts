import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { LookupAddress, LookupOptions } from 'node:dns';
import type { Resolver } from 'node:dns/promises';
import { createResolver } from '../core/dns-resolver.js';
import { Agent, request } from 'undici';
import { ReplyError, type Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { streamField, streamFields, streamIdTime } from '../store/events.js';
import { endpointRef, loadWebhooks, openSecret, parseEndpointRef, type SealedEndpoint } from '../store/webhooks.js';
import { notErased } from '../store/privacy.js';
import { Ticker } from '../core/ticker.js';
import { isPublicAddress, nonPublicHost } from '../core/public-address.js';
import { HOUR, SECOND } from '../core/time.js';

/**
 * Webhook dispatch: the event stream → each account's endpoints, signed, at least once.
 *
 *   events stream ──XREADGROUP/XAUTOCLAIM──► route by account + type ──ZADD score=now──► outbox ZSET
 *        ▲ XACK once every batch of an entry is in an outbox            (one per endpoint)   │
 *        └─────────────────────────────────────────────────────────────────────────────────────┘
 *   outbox ZSET ──due, claimed with a lease──► POST (undici, timeouts) ──2xx──► ZREM
 *                                                      └── failure ──► re-ZADD at now + backoff
 *                                                      └── past maxAttemptsWindowMs ──► dead LIST
 *   (an outbox holding maxOutbox events takes no new batch: it goes to the dead LIST at once)
 *
 * Nothing is acknowledged on the stream before it is durable in an outbox (or a dead-letter list, when
 * the outbox is full; an endpoint whose keys Redis refuses is logged and passed over), and nothing
 * leaves an outbox before a 2xx, so a crash anywhere repeats work and never loses it. A claimed batch keeps
 * its outbox entry with a score pushed one lease ahead: if this process dies mid-POST the batch comes
 * due again when the lease ends. Receivers de-duplicate on each event's `id` (its stream id).
 * What the stream no longer holds when the dispatcher gets to it (trimmed at retention.eventsMaxLen
 * or retention.events while the dispatcher was down or behind) is lost: counted (metrics.eventsLost)
 * and logged, see readEvents-1.lua.
 *
 * Isolation: a tick only reads Redis and starts POSTs; it never awaits one. Each endpoint has its own
 * in-flight limit and request timeout, so a slow or failing endpoint holds its own slots, not the
 * stream, and not another endpoint's.
 *
 * Signature: `Sluice-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
 * Receivers recompute it over the raw body and should refuse a `t` older than
 * SIGNATURE_TOLERANCE_SECONDS: a captured request then cannot be replayed later (verifyWebhookSignature).
 *
 * An outbox member is the JSON batch {b: batch id, n: failed attempts, f: first queued (ms), e: events};
 * `b` keeps two identical batches distinct members.
 */
export interface WebhookDispatcherOptions {
  redis: RedisClient;
  keys: Keys;
  logger: Logger;
  metrics?:
    | {
        deliveries: { inc(labels: { result: string }): void };
        lagSeconds?: { set(v: number): void };
        /** Events trimmed from the stream before they were routed to any endpoint. */
        eventsLost?: { inc(n?: number): void };
        /** Dead-lettered batches dropped (the oldest) to keep an endpoint's list at deadLetterMax. */
        deadLettersDropped?: { inc(n?: number): void };
        /** New batches put straight into dead letters: their endpoint's outbox held maxOutbox events. */
        outboxFull?: { inc(n?: number): void };
      }
    | undefined;
  now?: () => number;
  /** Consumer group on the event stream. Default 'webhooks'. */
  group?: string;
  /** This process's consumer name in the group. Default '<hostname>:<pid>'. */
  consumer?: string;
  /** AES-256 key (32 bytes) that opens endpoint secrets sealed at registration; none = secrets stored plain. */
  secretKey?: Buffer | undefined;
  /** How long a batch is retried before it goes to the dead-letter list. Default 24 h. */
  maxAttemptsWindowMs?: number;
  /** First retry delay, doubled per failure. Default 30 s. */
  retryBaseMs?: number;
  /** Longest delay between two attempts. Default 1 h. */
  retryMaxDelayMs?: number;
  /** Whole-request limit (connect, headers and body) of one POST. Default 10 s. */
  requestTimeoutMs?: number;
  /** Events in one POST. Default 100. */
  maxBatchEvents?: number;
  /** Stream entries read per tick. Default 500. */
  readCount?: number;
  /** POSTs in flight per endpoint. Default 2. */
  perEndpointInFlight?: number;
  /** POSTs in flight per process. Default 256. */
  maxInFlight?: number;
  /** Pause between ticks when idle. Default 500 ms. */
  pollIntervalMs?: number;
  /** Stream entries pending this long in a (dead) consumer are taken over. Default 60 s. */
  claimIdleMs?: number;
  /**
   * Another consumer of the group idle this long, with nothing pending, is deleted (a process that
   * stopped: each start adds a consumer '<hostname>:<pid>'). Default 1 h.
   */
  deadConsumerIdleMs?: number;
  /**
   * How long an account's endpoint list is cached. Default 5 s. Registering or removing an endpoint
   * clears every dispatcher's cache at its next pass anyway; this bounds what other writes to the
   * lists (an account's erasure) take to be seen.
   */
  endpointCacheMs?: number;
  /** Dead-letter batches kept per endpoint (the oldest go first). Default 10,000. */
  deadLetterMax?: number;
  /**
   * Events an endpoint's outbox may hold (config webhooks.maxOutbox); new batches beyond go to its
   * dead-letter list. Default 1,000,000.
   */
  maxOutbox?: number;
  /**
   * Connect to endpoints on loopback, private, link-local or other non-public addresses (config
   * webhooks.allowPrivateTargets). Off by default: a URL naming such an address, or a name that
   * resolves to one, fails as a network error (retried, then dead-lettered) and nothing is sent.
   */
  allowPrivateTargets?: boolean;
  /** DNS servers endpoint names are resolved with unless allowPrivateTargets (delivery.dns.servers); none = the system's. */
  dnsServers?: readonly string[];
}

type LookupCallback = (err: Error | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A dns.lookup for the webhook connections, refusing non-public answers. The check is on the address
 * the socket will connect to, so a name that resolves to a private address only at delivery time
 * (DNS rebinding) is refused too. Node's net.connect calls it with `all` set when it tries several
 * addresses (autoSelectFamily), else without: both answers are checked.
 *
 * The name is asked of `resolver` (c-ares: A and AAAA in DNS), not of dns.lookup: getaddrinfo runs
 * on libuv's thread pool (4 threads, shared with file and crypto work), and a lookup whose name
 * server never answers holds a thread for the system resolver's whole timeout, past the request's.
 * Any account could register names like that and hold every thread, so every other account's
 * lookups timed out waiting for one. c-ares waits on its sockets in the event loop. Names are DNS
 * names only (no /etc/hosts, no search domains): an endpoint on the public Internet has one.
 */
export function publicOnlyLookup(resolver: Resolver): (hostname: string, options: LookupOptions, callback: LookupCallback) => void {
  return (hostname, options, callback) => {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family;
    const ask = (v: 4 | 6): Promise<LookupAddress[]> =>
      family !== undefined && family !== 0 && family !== v ? Promise.resolve([]) : (v === 4 ? resolver.resolve4(hostname) : resolver.resolve6(hostname)).then((list) => list.map((address) => ({ address, family: v })));
    void Promise.allSettled([ask(4), ask(6)]).then(([a, aaaa]) => {
      const addresses = [...(a.status === 'fulfilled' ? a.value : []), ...(aaaa.status === 'fulfilled' ? aaaa.value : [])];
      if (addresses.length === 0) {
        // Neither family answered: the A question's error (ENOTFOUND, ETIMEOUT…), as lookup would give.
        const failed = a.status === 'rejected' ? a : aaaa.status === 'rejected' ? aaaa : undefined;
        if (failed) return callback(failed.reason as Error, '');
      }
      const bad = addresses.find((x) => !isPublicAddress(x.address));
      if (bad || addresses.length === 0) {
        const e = new Error(`webhook endpoint ${hostname} resolves to ${bad?.address ?? 'nothing'}, not a public address (webhooks.allowPrivateTargets)`);
        return callback(Object.assign(e, { code: 'SLUICE_WEBHOOK_PRIVATE_TARGET' }), '');
      }
      if (options.all) return callback(null, addresses);
      const first = addresses[0] as LookupAddress;
      callback(null, first.address, first.family);
    });
  };
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/moveBatch-4.lua: [1 settled (delivered, retry, dead letter or dropped unreadable) or 0 the batch changed meanwhile, dead letters dropped for room]. */
    moveBatch(outbox: string, dead: string, ages: string, events: string, member: string, next: string, score: number | 'dead' | 'delivered' | 'dropped', deadMax: number, batchId: string, n: number): Result<[number, number], Context>;
    /** src/queue/lua/queueBatch-4.lua: [1 queued or 0 dead-lettered (the outbox is full), dead letters dropped for room]. */
    queueBatch(outbox: string, ages: string, dead: string, events: string, score: number, member: string, batchId: string, oldest: number, n: number, maxOutbox: number, deadMax: number): Result<[number, number], Context>;
    /** src/queue/lua/claimBatch-1.lua: 1 taken for a POST, 0 no longer due (taken by another, or gone). */
    claimBatch(outbox: string, member: string, now: number, leaseUntil: number): Result<number, Context>;
    /** src/queue/lua/replayDeadPage-4.lua: 1 moved, 0 the dead-letter list's head changed meanwhile. */
    replayDeadPage(dead: string, outbox: string, ages: string, events: string, score: number, start: number, n: number, mask: string, ...itemsThenBatches: (string | number)[]): Result<number, Context>;
    /** src/queue/lua/readEvents-1.lua: [entries lost to trimming before the group read them, entries read]. */
    readEvents(events: string, group: string, consumer: string, count: number, create: 0 | 1): Result<[number, [string, string[]][]], Context>;
  }
}

/** A receiver should refuse signatures older than this: 5 minutes covers clock skew and queuing. */
export const SIGNATURE_TOLERANCE_SECONDS = 300;
export const SIGNATURE_HEADER = 'sluice-signature';

// Defaults, with their reasons.
const DEFAULT_WINDOW_MS = 24 * HOUR; // a receiver down for a working day still gets everything
const DEFAULT_RETRY_BASE_MS = 30 * SECOND; // a restart of the receiver usually takes longer than seconds
const DEFAULT_RETRY_MAX_MS = HOUR; // hourly once it has been down for ~1 h: ~30 attempts in 24 h
const DEFAULT_TIMEOUT_MS = 10_000; // what Stripe and GitHub allow a receiver; slower ones are failing
const DEFAULT_BATCH = 100; // ~30 KB of JSON: one cheap request, small enough for any receiver's limit
const DEFAULT_READ = 500;
const DEFAULT_PER_ENDPOINT = 2;
const DEFAULT_MAX_IN_FLIGHT = 256; // sockets; 128 endpoints all hanging at once still leave none waiting
const DEFAULT_POLL_MS = 500;
/** Dead consumers are looked for at most this often (XINFO CONSUMERS), after a whole walk of the pending entries. */
const CONSUMER_SWEEP_MS = 10 * 60_000;
const DEFAULT_DEAD_CONSUMER_IDLE_MS = HOUR;
const DEFAULT_CLAIM_IDLE_MS = 60_000; // far beyond one tick's Redis work, so only a dead consumer's entries
const DEFAULT_CACHE_MS = 5_000;
const DEFAULT_DEAD_MAX = 10_000; // 1,000,000 events at the default batch size; beyond, the oldest are dropped (counted)
// As many as the event stream keeps (retention.eventsMaxLen): one endpoint never holds more than the stream.
const DEFAULT_MAX_OUTBOX = 1_000_000;
// Endpoints visited per tick for due retries (one SSCAN page); new events' endpoints are visited at once.
const SCAN_COUNT = 200;
// The lag gauge forgets an endpoint not read for this long: the SSCAN walk reaches every endpoint
// far sooner (200 a pass, 2 passes a second when idle), so it was deleted. A backstop: a deletion
// moves the generation, and the next pass reads every age again.
const AGE_STALE_MS = 5 * 60_000;
// An endpoint's connection pool is closed after this long unused (its sockets are idle by then anyway).
const AGENT_IDLE_MS = 5 * 60_000;
// The response body is read only to free the socket; nobody needs more than this of it.
const RESPONSE_LIMIT_BYTES = 64 * 1024;
// Jitter of ±20 % spreads the retries of many batches that failed together (one receiver outage).
const JITTER = 0.2;
// A claimed batch is hidden this much longer than the request may take, so it never comes due mid-POST.
const LEASE_MARGIN_MS = 30_000;
/** Batches waiting out a backoff that one success makes due (wakeWaiting): one bounded command. */
const WAKE_BATCHES = 1_000;
// What is met on every pass (2 a second) about one endpoint, a broken record or a full outbox, is
// logged once per this long for it, not each time (the metrics count every time).
const ENDPOINT_LOG_MS = 10 * 60_000;

export interface WebhookEvent {
  /** The stream id: unique and ordered; the de-duplication key for receivers. */
  readonly id: string;
  readonly type: string;
  /** ISO time the event was appended. */
  readonly time: string;
  readonly [field: string]: string;
}

interface Batch {
  b: string;
  n: number;
  f: number;
  e: WebhookEvent[];
}

/** The v1 signature: hex HMAC-SHA256(secret, "<t>.<body>"), the one definition signer and verifier share. */
function v1Mac(secret: string, body: string, unixSeconds: number): string {
  return createHmac('sha256', secret).update(`${unixSeconds}.${body}`).digest('hex');
}

/** The `Sluice-Signature` header value for a body sent at `unixSeconds`. */
export function signWebhook(secret: string, body: string, unixSeconds: number): string {
  return `t=${unixSeconds},v1=${v1Mac(secret, body, unixSeconds)}`;
}

/**
 * A receiver's check, in constant time: the header is well formed, `t` is within `toleranceSeconds`
 * of `nowSeconds`, and a v1 signature matches the raw body.
 */
export function verifyWebhookSignature(header: string, body: string, secret: string, nowSeconds: number, toleranceSeconds = SIGNATURE_TOLERANCE_SECONDS): boolean {
  let t: number | undefined;
  const sigs: string[] = [];
  for (const part of header.split(',')) {
    const [k, v] = part.trim().split('=', 2);
    if (k === 't' && v && /^\d{1,12}$/.test(v)) t = Number(v);
    else if (k === 'v1' && v && /^[0-9a-f]{64}$/.test(v)) sigs.push(v);
  }
  if (t === undefined || sigs.length === 0 || Math.abs(nowSeconds - t) > toleranceSeconds) return false;
  const want = Buffer.from(v1Mac(secret, body, t));
  return sigs.some((s) => timingSafeEqual(Buffer.from(s), want));
}

function parseBatch(member: string): Batch | undefined {
  try {
    const b = JSON.parse(member) as Batch;
    return typeof b.b === 'string' && Number.isInteger(b.n) && Number.isFinite(b.f) && Array.isArray(b.e) ? b : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What can still be read of an unreadable batch, to take it off the ages and the event count: its id
 * (`b` is its first key, as newBatch and every rewrite write it, so a batch cut short keeps it), and
 * its events if they parse. '' and 0 when not even that is left.
 */
function unreadableBatch(member: string): { id: string; events: number } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(member);
  } catch {
    return { id: /^\{"b":"([\w-]{1,64})"/.exec(member)?.[1] ?? '', events: 0 };
  }
  const b = typeof parsed === 'object' && parsed !== null ? (parsed as Partial<Record<keyof Batch, unknown>>) : {};
  return { id: typeof b.b === 'string' ? b.b : '', events: Array.isArray(b.e) ? b.e.length : 0 };
}

/**
 * A new batch of `events` (in stream order): its JSON, its id, the time of its oldest event, how many.
 * The id begins with its oldest event's stream id, zero-padded: batches due at the same time (one
 * pass's, or those an endpoint back from an outage makes due together, wakeWaiting) have the same
 * score, and the outbox orders them by member, so by that id: oldest first, in stream order. A random
 * id sent them in any order.
 */
function newBatch(events: WebhookEvent[], now: number): { member: string; id: string; oldest: number; events: number } {
  const [ms = '0', seq = '0'] = (events[0]?.id ?? String(now)).split('-');
  const id = `${ms.padStart(16, '0')}-${seq.padStart(8, '0')}_${randomBytes(6).toString('base64url')}`;
  return { member: JSON.stringify({ b: id, n: 0, f: now, e: events } satisfies Batch), id, oldest: oldestEvent(events, now), events: events.length };
}

function oldestEvent(events: readonly { id: string }[], fallback: number): number {
  let oldest = fallback;
  for (const e of events) oldest = Math.min(oldest, streamIdTime(e.id));
  return oldest;
}

type StreamEntry = [id: string, fields: string[]];

function toEvent(id: string, fields: string[]): { account: string | undefined; event: WebhookEvent } {
  const o = streamFields(fields);
  const { type = 'unknown', ...rest } = o;
  const event: WebhookEvent = { ...rest, id, type, time: new Date(streamIdTime(id)).toISOString() };
  return { account: o['account'], event };
}

function matches(ep: SealedEndpoint, type: string, at: number): boolean {
  return at >= ep.created && (ep.events.includes('*') || ep.events.includes(type));
}

function failureKind(err: unknown): 'timeout' | 'network_error' {
  const e = err as { code?: string; name?: string };
  const timeout = e.name === 'TimeoutError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT' || e.code === 'UND_ERR_CONNECT_TIMEOUT';
  return timeout ? 'timeout' : 'network_error';
}

export class WebhookDispatcher {
  private readonly o: WebhookDispatcherOptions;
  private readonly now: () => number;
  private readonly group: string;
  private readonly consumer: string;
  /**
   * One connection pool per endpoint, as wide as its in-flight limit: endpoints of different
   * accounts often share a host (a webhook relay service), and a pool per origin would let one
   * endpoint's hanging requests hold the sockets the other's wait for.
   */
  private readonly agents = new Map<string, { agent: Agent; usedAt: number }>();
  private readonly timeoutMs: number;
  private readonly perEndpoint: number;
  private readonly maxInFlight: number;
  /** The endpoints' connect lookup (publicOnlyLookup), unless private targets are allowed. */
  private readonly lookup: ReturnType<typeof publicOnlyLookup> | undefined;
  private readonly cache = new Map<string, { at: number; list: SealedEndpoint[] }>();
  /** Per endpoint ref: its outbox's oldest event (ms) when last read, for the lag gauge. */
  private readonly ages = new Map<string, { oldest: number; readAt: number }>();
  /** keys.webhookGeneration() when the cache was last valid. */
  private generation: string | null = null;
  /** Endpoint ref → POSTs in flight. */
  private readonly inFlight = new Map<string, number>();
  /** "<ref> <message>" → when it was last logged (see ENDPOINT_LOG_MS). */
  private readonly logged = new Map<string, number>();
  private readonly deliveries = new Set<Promise<void>>();
  private totalInFlight = 0;
  /** The global limit kept an endpoint from slots it had free since the last pass began (see refill). */
  private heldBack = false;
  private started = false;
  private groupReady = false;
  private claimCursor = '0-0';
  /** When dead consumers were last looked for (0: not yet). */
  private sweptAt = 0;
  private scanCursor = '0';
  /** Runs pass() again at once after a full page (more is waiting), else every pollIntervalMs. */
  private readonly ticker: Ticker;
  private stopping: Promise<void> | undefined;

  constructor(opts: WebhookDispatcherOptions) {
    this.o = opts;
    this.now = opts.now ?? Date.now;
    this.group = opts.group ?? 'webhooks';
    this.consumer = opts.consumer ?? `${hostname()}:${process.pid}`;
    this.timeoutMs = opts.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.perEndpoint = opts.perEndpointInFlight ?? DEFAULT_PER_ENDPOINT;
    this.maxInFlight = opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (!opts.allowPrivateTargets) {
      // Answered or given up within about the request's time.
      this.lookup = publicOnlyLookup(createResolver(opts.dnsServers, this.timeoutMs));
    }
    this.ticker = new Ticker(() => this.pass(), opts.pollIntervalMs ?? DEFAULT_POLL_MS, (err) => opts.logger.error({ err }, 'webhook tick failed'));
  }

  start(): void {
    this.started = true;
    this.ticker.start(0);
  }

  /** Stops reading, lets POSTs in flight finish (each is bounded by the request timeout), closes sockets. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.ticker.stop();
      await this.drain();
      await Promise.all([...this.agents.values()].map((a) => a.agent.close()));
      this.agents.clear();
    })();
    return this.stopping;
  }

  /** One pass: read and route new events, then start the POSTs that are due. Does not wait for them. */
  async tick(): Promise<void> {
    await this.pass();
  }

  /** Resolves when every POST started so far has finished (for tests and shutdown). */
  async drain(): Promise<void> {
    while (this.deliveries.size > 0) await Promise.allSettled([...this.deliveries]);
  }

  /**
   * The stream or its consumer group was deleted under a running dispatcher (DEL, FLUSHDB, XGROUP
   * DESTROY): the next read creates the group again, from the stream's start (its entries, if any,
   * are delivered again: at least once). Before, every pass failed with NOGROUP until a restart.
   */
  private groupGone(): void {
    this.groupReady = false;
    this.claimCursor = '0-0';
    this.o.logger.warn({ group: this.group }, 'the event stream or its webhook consumer group is gone (deleted?): creating it again');
  }

  private async pass(): Promise<boolean> {
    const { redis, keys } = this.o;
    const stream = keys.events();
    const readCount = this.o.readCount ?? DEFAULT_READ;
    const noGroupYet = (err: Error): [string, StreamEntry[], string[]] => {
      // The first pass's read creates the group; before it nothing can be pending.
      if (!/NOGROUP/.test(err.message)) throw err;
      if (this.groupReady) this.groupGone();
      return ['0-0', [], []];
    };
    const claimed = (await redis.xautoclaim(stream, this.group, this.consumer, this.o.claimIdleMs ?? DEFAULT_CLAIM_IDLE_MS, this.claimCursor, 'COUNT', readCount).catch(noGroupYet)) as [string, (StreamEntry | null)[], string[]?];
    this.claimCursor = claimed[0];
    // The pending entries have been walked whole: a dead consumer has none left (taken over above).
    if (this.groupReady && this.claimCursor === '0-0' && this.now() - this.sweptAt >= CONSUMER_SWEEP_MS) {
      this.sweptAt = this.now();
      await this.dropDeadConsumers().catch((err: unknown) => this.o.logger.warn({ err }, 'could not look for dead webhook consumers'));
    }
    const entries: StreamEntry[] = [];
    for (const e of claimed[1]) if (e) entries.push(e);
    // Entries trimmed from the stream while pending in a consumer that died (Redis 7 lists them; an
    // erasure's XDEL of one would be listed too): acknowledged, and lost.
    const gone = claimed[2] ?? [];
    // New entries, after counting those trimmed before the group got to them. The first pass creates
    // the group from '0': an endpoint registered before the dispatcher first ran still gets the
    // events appended since its registration (older ones are filtered by `created`).
    const read = await (redis.readEvents(stream, this.group, this.consumer, readCount, this.groupReady ? 0 : 1) as Promise<[number, StreamEntry[]]>).catch((err: Error) => {
      if (!/NOGROUP/.test(err.message)) throw err;
      this.groupGone();
      return null;
    });
    // The group went between the two reads: the next pass creates it.
    if (read === null) return false;
    const [lostUnread, fresh] = read;
    this.groupReady = true;
    // Counted at once: the script has already moved the group's counter past them.
    this.countLost(Number(lostUnread));
    entries.push(...fresh);
    // Read after the entries: an endpoint registered before any of them was appended has moved the
    // generation by now, so its account's cached list (perhaps empty) is not used for them.
    const generation = await redis.get(keys.webhookGeneration());
    // An endpoint deleted elsewhere (the API, an account's deletion) leaves the walk, so its age
    // would never be read again: the lag gauge kept its backlog for AGE_STALE_MS. Every endpoint
    // with an age is read again on a change instead (the deleted one's ages key is gone with it).
    const recheck = generation !== this.generation ? [...this.ages.keys()] : [];
    if (generation !== this.generation) {
      this.cache.clear();
      this.generation = generation;
    }

    const touched = await this.route(entries);
    const ids = [...entries.map((e) => e[0]), ...gone];
    if (ids.length > 0) await redis.xack(stream, this.group, ...ids);
    // After the XACK: a pass that failed before it lists them again.
    this.countLost(gone.length);

    const now = this.now();
    let oldest = entries.length > 0 ? Math.min(...entries.map((e) => streamIdTime(e[0]))) : now;
    const [cursor, page] = await redis.sscan(keys.webhookEndpoints(), this.scanCursor, 'COUNT', SCAN_COUNT);
    this.scanCursor = cursor;
    const visit = [...new Set([...touched, ...page])];
    this.heldBack = false;
    // One endpoint failing (Redis refusing its keys) is its own problem: the others still start.
    for (const ref of visit) await this.startDue(ref, now).catch((err: unknown) => this.logOnce('error', ref, { err }, 'starting its due webhook batches failed'));
    // The ages after the claims (a claimed batch stays in the ages until it is settled), all at once:
    // one auto-pipelined burst of small reads instead of a round trip per endpoint.
    await Promise.all([...new Set([...visit, ...recheck])].map((ref) => this.readAge(ref)));
    this.o.metrics?.lagSeconds?.set(Math.max(0, now - Math.min(oldest, this.oldestAwaited())) / 1000);
    this.closeIdleAgents();
    return fresh.length === readCount;
  }

  /**
   * Deletes the group's consumers other than this one that have nothing pending and have been idle
   * for deadConsumerIdleMs: stopped processes. Nothing pending, so nothing is lost (a live one
   * deleted by mistake is made again by its next read).
   */
  private async dropDeadConsumers(): Promise<void> {
    const { redis, keys } = this.o;
    const limit = this.o.deadConsumerIdleMs ?? DEFAULT_DEAD_CONSUMER_IDLE_MS;
    const info = (await redis.xinfo('CONSUMERS', keys.events(), this.group)) as (string | number)[][];
    for (const row of info) {
      const f = new Map<string, string | number>();
      for (let i = 0; i + 1 < row.length; i += 2) f.set(String(row[i]), row[i + 1] as string | number);
      const name = String(f.get('name') ?? '');
      if (name === '' || name === this.consumer || Number(f.get('pending')) !== 0 || Number(f.get('idle')) < limit) continue;
      await redis.xgroup('DELCONSUMER', keys.events(), this.group, name);
      this.o.logger.info({ consumer: name }, 'dead webhook consumer removed from the group');
    }
  }

  /**
   * Events that left the stream (trimmed: retention.eventsMaxLen or retention.events) before they
   * were routed: no endpoint will get them. Said loudly, since at-least-once ends there.
   */
  private countLost(n: number): void {
    if (n <= 0) return;
    this.o.metrics?.eventsLost?.inc(n);
    this.o.logger.warn({ lost: n }, 'webhook events were trimmed from the event stream before they were routed (retention.eventsMaxLen, retention.events)');
  }

  /**
   * Reads the oldest event an endpoint's outbox still holds (in flight, due or waiting for a retry)
   * into `ages`. Every endpoint is read in turn (SSCAN pages), those with new events at once.
   */
  private async readAge(ref: string): Promise<void> {
    const parsed = parseEndpointRef(ref);
    if (!parsed) return;
    const [, score] = await this.o.redis.zrange(this.o.keys.webhookAges(parsed.account, parsed.id), 0, 0, 'WITHSCORES');
    if (score === undefined) this.ages.delete(ref);
    else this.ages.set(ref, { oldest: Number(score), readAt: Date.now() });
  }

  /** The oldest undelivered event over every endpoint read recently (Infinity: none). */
  private oldestAwaited(): number {
    const stale = Date.now() - AGE_STALE_MS;
    let oldest = Number.POSITIVE_INFINITY;
    for (const [ref, a] of this.ages) {
      // Not read for a while: the endpoint is gone from the index (deleted), not merely far in the walk.
      if (a.readAt < stale) this.ages.delete(ref);
      else oldest = Math.min(oldest, a.oldest);
    }
    return oldest;
  }

  /** Puts each entry's event into the outbox of every endpoint that wants it. Returns the endpoints touched. */
  private async route(entries: StreamEntry[]): Promise<Set<string>> {
    const perEndpoint = new Map<string, { ep: SealedEndpoint; events: WebhookEvent[] }>();
    for (const [id, raw] of entries) {
      const fields = Array.isArray(raw) ? raw : [];
      // Most events belong to accounts without endpoints: they are passed over on two field reads,
      // without building the event (at 2+ events per recipient, that was a measurable share of the
      // ingress thread's CPU and garbage in bench/e2e.ts).
      const account = streamField(fields, 'account');
      if (!account) continue;
      const endpoints = this.cachedEndpoints(account) ?? (await this.endpointsOf(account));
      if (endpoints.length === 0) continue;
      const type = streamField(fields, 'type') ?? 'unknown';
      const at = streamIdTime(id);
      let event: WebhookEvent | undefined;
      for (const ep of endpoints) {
        if (!matches(ep, type, at)) continue;
        event ??= toEvent(id, fields).event;
        const ref = endpointRef(account, ep.id);
        let slot = perEndpoint.get(ref);
        if (!slot) perEndpoint.set(ref, (slot = { ep, events: [] }));
        slot.events.push(event);
      }
    }
    if (perEndpoint.size === 0) return new Set();
    const { redis, keys } = this.o;
    const now = this.now();
    const size = this.o.maxBatchEvents ?? DEFAULT_BATCH;
    const maxOutbox = this.o.maxOutbox ?? DEFAULT_MAX_OUTBOX;
    const deadMax = this.o.deadLetterMax ?? DEFAULT_DEAD_MAX;
    const queue = async (ref: string, ep: SealedEndpoint, events: WebhookEvent[]): Promise<void> => {
      const k = [keys.webhookOutbox(ep.account, ep.id), keys.webhookAges(ep.account, ep.id), keys.webhookDead(ep.account, ep.id), keys.webhookOutboxEvents(ep.account, ep.id)] as const;
      const writes: Promise<[number, number]>[] = [];
      const sizes: number[] = [];
      for (let i = 0; i < events.length; i += size) {
        const batch = newBatch(events.slice(i, i + size), now);
        sizes.push(batch.events);
        // One script (every key under the account's tag): a batch is in the ages exactly while it is
        // in the outbox, and the outbox's bound holds whichever dispatchers write at once.
        writes.push(redis.queueBatch(...k, now, batch.member, batch.id, batch.oldest, batch.events, maxOutbox, deadMax));
      }
      // Keeps the walk's index whole even if a registration died before indexing itself.
      const [results] = await Promise.all([Promise.all(writes), redis.sadd(keys.webhookEndpoints(), ref)]);
      let full = 0;
      let turnedAway = 0;
      let dropped = 0;
      results.forEach(([queued, d], j) => {
        dropped += Number(d);
        if (Number(queued) === 1) return;
        full++;
        turnedAway += sizes[j] ?? 0;
      });
      if (full === 0) return;
      this.o.metrics?.outboxFull?.inc(full);
      if (dropped > 0) this.o.metrics?.deadLettersDropped?.inc(dropped);
      this.logOnce('warn', ref, { batches: full, events: turnedAway, maxOutbox, deadLettersDropped: dropped }, 'webhook outbox full (webhooks.maxOutbox): new batches go to the dead-letter list (replay them once the endpoint is back)');
    };
    const failed = await Promise.all(
      [...perEndpoint].map(([ref, { ep, events }]) =>
        queue(ref, ep, events).then(
          () => false,
          (err: unknown) => {
            // Redis refused this endpoint's keys (WRONGTYPE: something else is stored there): its own
            // problem, logged, and its events are not sent to it. Anything else (connection lost, OOM,
            // cluster down) fails the pass, and the entries are read again.
            if (!(err instanceof Error && err.message.startsWith('WRONGTYPE'))) throw err;
            this.logOnce('error', ref, { err, events: events.length }, 'queueing webhook events failed: Redis refuses the endpoint\'s keys; they are not sent to it');
            return true;
          },
        ),
      ),
    );
    return new Set([...perEndpoint.keys()].filter((_, i) => !failed[i]));
  }

  /** The account's endpoints if the cache has them fresh (no await: route() asks once per event). */
  private cachedEndpoints(account: string): SealedEndpoint[] | undefined {
    // Wall-clock, not this.now: a pinned test clock must not freeze the cache.
    const hit = this.cache.get(account);
    return hit && Date.now() - hit.at < (this.o.endpointCacheMs ?? DEFAULT_CACHE_MS) ? hit.list : undefined;
  }

  private async endpointsOf(account: string): Promise<SealedEndpoint[]> {
    const cached = this.cachedEndpoints(account);
    if (cached) return cached;
    const t = Date.now();
    let list: SealedEndpoint[];
    try {
      list = await loadWebhooks(this.o.redis, this.o.keys, account, (id) => this.logOnce('error', endpointRef(account, id), {}, 'unreadable webhook endpoint record skipped (delete it: DELETE /v1/webhooks/:id)'));
    } catch (err) {
      // Redis refuses the account's endpoint list (not a hash: written by hand): this account gets
      // nothing, every other one its events; thrown, it failed the whole pass, each pass again.
      if (!(err instanceof ReplyError)) throw err;
      this.logOnce('error', endpointRef(account, '*'), { err }, "the account's webhook endpoints cannot be read: its events are not sent");
      list = [];
    }
    // Bounded: an event storm over many accounts must not grow this without limit.
    if (this.cache.size >= 10_000) this.cache.clear();
    this.cache.set(account, { at: t, list });
    return list;
  }

  /**
   * Claims the endpoint's due batches, up to its free slots, and starts their POSTs. The slots are
   * held from the start: a refill (after a POST) may run beside a pass, and the limits hold whatever
   * the two interleave.
   */
  private async startDue(ref: string, now: number): Promise<void> {
    const own = this.perEndpoint - (this.inFlight.get(ref) ?? 0);
    const free = Math.min(own, this.maxInFlight - this.totalInFlight);
    if (free < own) this.heldBack = true;
    if (free <= 0) return;
    const parsed = parseEndpointRef(ref);
    const { redis, keys } = this.o;
    if (!parsed) {
      await redis.srem(keys.webhookEndpoints(), ref);
      return;
    }
    this.hold(ref, free);
    let unused = free;
    try {
      const outbox = keys.webhookOutbox(parsed.account, parsed.id);
      const due = await redis.zrangebyscore(outbox, '-inf', now, 'LIMIT', 0, free);
      if (due.length === 0) return;
      const ep = (await this.endpointsOf(parsed.account)).find((e) => e.id === parsed.id) ?? (await this.reload(parsed.account, parsed.id));
      if (!ep) {
        // Deleted: nothing is left to deliver to.
        await redis.del(outbox, keys.webhookAges(parsed.account, parsed.id), keys.webhookOutboxEvents(parsed.account, parsed.id));
        this.ages.delete(ref);
        await redis.srem(keys.webhookEndpoints(), ref);
        return;
      }
      const leaseUntil = now + this.timeoutMs + LEASE_MARGIN_MS;
      for (const member of due) {
        // Only if still due: not a batch another dispatcher, or a pass beside a refill, took or
        // finished since it was read.
        if (Number(await redis.claimBatch(outbox, member, now, leaseUntil)) !== 1) continue;
        const batch = parseBatch(member);
        if (!batch) {
          this.o.logger.error({ endpoint: parsed.id }, 'unreadable webhook batch dropped');
          // With its age (one script): a plain ZREM left it in the ages for good, and the lag gauge
          // reported it, older each pass. An age whose id cannot be read goes when the outbox empties.
          const { id, events } = unreadableBatch(member);
          await redis.moveBatch(outbox, keys.webhookDead(parsed.account, parsed.id), keys.webhookAges(parsed.account, parsed.id), keys.webhookOutboxEvents(parsed.account, parsed.id), member, '', 'dropped', this.o.deadLetterMax ?? DEFAULT_DEAD_MAX, id, events);
          // Counted, not only logged: its events reach no one, and an alert on the results sees it.
          this.o.metrics?.deliveries.inc({ result: 'unreadable' });
          continue;
        }
        unused--;
        this.launch(ref, ep, outbox, member, batch);
      }
    } finally {
      this.release(ref, unused);
    }
  }

  /** Logs `msg` about one endpoint, at most once per ENDPOINT_LOG_MS for it. */
  private logOnce(level: 'warn' | 'error', ref: string, fields: Record<string, unknown>, msg: string): void {
    const key = `${ref} ${msg}`;
    const t = Date.now();
    if (t - (this.logged.get(key) ?? Number.NEGATIVE_INFINITY) < ENDPOINT_LOG_MS) return;
    // Bounded: many broken endpoints must not grow this without limit.
    if (this.logged.size >= 10_000) this.logged.clear();
    this.logged.set(key, t);
    const parsed = parseEndpointRef(ref);
    this.o.logger[level]({ account: parsed?.account, endpoint: parsed?.id ?? ref, ...fields }, msg);
  }

  private hold(ref: string, n: number): void {
    this.inFlight.set(ref, (this.inFlight.get(ref) ?? 0) + n);
    this.totalInFlight += n;
  }

  private release(ref: string, n: number): void {
    if (n <= 0) return;
    const left = (this.inFlight.get(ref) ?? n) - n;
    if (left <= 0) this.inFlight.delete(ref);
    else this.inFlight.set(ref, left);
    this.totalInFlight -= n;
  }

  private async reload(account: string, id: string): Promise<SealedEndpoint | undefined> {
    this.cache.delete(account);
    return (await this.endpointsOf(account)).find((e) => e.id === id);
  }

  /** Runs one POST in a slot startDue holds; when it ends the slot is freed and refilled. */
  private launch(ref: string, ep: SealedEndpoint, outbox: string, member: string, batch: Batch): void {
    const p: Promise<void> = this.deliver(ep, outbox, member, batch)
      .catch((err: unknown) => this.o.logger.error({ err, endpoint: ep.id }, 'webhook delivery bookkeeping failed'))
      .then(() => {
        this.release(ref, 1);
        return this.refill(ref);
      })
      .catch((err: unknown) => this.o.logger.error({ err, endpoint: ep.id }, 'webhook refill failed'))
      .finally(() => this.deliveries.delete(p));
    this.deliveries.add(p);
  }

  /**
   * A POST ended (2xx or not): its slot is used at once, not at the next pass. Waiting for the pass
   * (pollIntervalMs apart when the stream is idle) held an endpoint to perEndpointInFlight batches a
   * pass, ~650 events/s. The endpoint's next due batch takes the slot; with none due this is one
   * ZRANGEBYSCORE. While the global limit holds endpoints back, this one would take the freed slot
   * from them again and again: then a pass is woken instead, to hand slots out in its own order.
   * Nothing new starts once stop() was called.
   */
  private async refill(ref: string): Promise<void> {
    if (this.stopping) return;
    if (!this.heldBack) return this.startDue(ref, this.now());
    if (this.started) this.ticker.wake();
  }

  /** The endpoint's connection pool (see `agents`), made on first use. */
  private agentFor(ref: string): Agent {
    let a = this.agents.get(ref);
    if (!a) {
      const agent = new Agent({
        connections: this.perEndpoint,
        connect: { timeout: this.timeoutMs, ...(this.lookup ? { lookup: this.lookup } : {}) },
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      });
      this.agents.set(ref, (a = { agent, usedAt: Date.now() }));
    }
    a.usedAt = Date.now();
    return a.agent;
  }

  /** Closes the pools of endpoints with nothing in flight that have not been used for AGENT_IDLE_MS. */
  private closeIdleAgents(): void {
    const cutoff = Date.now() - AGENT_IDLE_MS;
    for (const [ref, a] of this.agents) {
      if (a.usedAt >= cutoff || (this.inFlight.get(ref) ?? 0) > 0) continue;
      this.agents.delete(ref);
      a.agent.close().catch(() => undefined);
    }
  }

  /**
   * The endpoint took a batch: it is back. Its batches waiting out a retry's backoff are made due now,
   * WAKE_BATCHES at a time (each success wakes the next), and go oldest first (newBatch): each failed
   * batch had its own backoff, up to retryMaxDelay, so those that had waited longest came due last,
   * up to an hour after newer ones. A batch scored past a lease from now is waiting, not being POSTed
   * (claimBatch-1.lua scores one in flight at most a lease ahead); ZADD XX leaves alone one settled
   * or rewritten meanwhile.
   */
  private async wakeWaiting(outbox: string): Promise<void> {
    const { redis } = this.o;
    const now = this.now();
    const waiting = await redis.zrangebyscore(outbox, `(${now + this.timeoutMs + LEASE_MARGIN_MS}`, '+inf', 'LIMIT', 0, WAKE_BATCHES);
    if (waiting.length === 0) return;
    await redis.zadd(outbox, 'XX', ...waiting.flatMap((m) => [now, m]));
  }

  private async deliver(ep: SealedEndpoint, outbox: string, member: string, batch: Batch): Promise<void> {
    const { redis, keys, logger } = this.o;
    const deadMax = this.o.deadLetterMax ?? DEFAULT_DEAD_MAX;
    /** Settles the batch (moveBatch-4.lua): delivered, dead-lettered as `next`, or put back as `next` at a retry time. */
    const settle = (next: string, score: number | 'dead' | 'delivered'): Promise<[number, number]> =>
      redis.moveBatch(outbox, keys.webhookDead(ep.account, ep.id), keys.webhookAges(ep.account, ep.id), keys.webhookOutboxEvents(ep.account, ep.id), member, next, score, deadMax, batch.b, batch.e.length);
    // A recipient erased since the batch was made: its events go before anything is sent (store/privacy.ts notErased).
    const kept = await notErased(redis, keys, batch.e);
    if (kept.length < batch.e.length) {
      await settle(kept.length === 0 ? '' : JSON.stringify({ ...batch, e: kept }), kept.length === 0 ? 'delivered' : this.now());
      logger.info({ endpoint: ep.id, dropped: batch.e.length - kept.length }, 'webhook events of erased recipients dropped before sending');
      return;
    }
    const body = JSON.stringify({ events: batch.e });
    let result: 'success' | 'http_error' | 'timeout' | 'network_error' | 'secret_error';
    let detail: string;
    try {
      const signature = signWebhook(openSecret(ep, this.o.secretKey), body, Math.floor(this.now() / 1000));
      try {
        // An IP literal is connected to without a lookup: checked here (registration refuses new ones,
        // but an endpoint registered while private targets were allowed may remain).
        const why = this.o.allowPrivateTargets ? null : nonPublicHost(new URL(ep.url).hostname);
        if (why) throw Object.assign(new Error(`webhook endpoint host is ${why} (webhooks.allowPrivateTargets)`), { code: 'SLUICE_WEBHOOK_PRIVATE_TARGET' });
        const res = await request(ep.url, {
          method: 'POST',
          dispatcher: this.agentFor(endpointRef(ep.account, ep.id)),
          body,
          headers: { 'content-type': 'application/json', 'user-agent': 'Sluice-Webhooks/1', [SIGNATURE_HEADER]: signature, 'sluice-webhook-id': ep.id },
          headersTimeout: this.timeoutMs,
          bodyTimeout: this.timeoutMs,
          // The whole exchange, connect to last byte: the per-phase timeouts alone let a trickling receiver hold a slot.
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        await res.body.dump({ limit: RESPONSE_LIMIT_BYTES }).catch(() => undefined);
        result = res.statusCode >= 200 && res.statusCode < 300 ? 'success' : 'http_error';
        detail = `HTTP ${res.statusCode}`;
      } catch (err) {
        result = failureKind(err);
        detail = (err as Error).message;
      }
    } catch (err) {
      result = 'secret_error';
      detail = (err as Error).message;
    }

    if (result === 'success') {
      await settle('', 'delivered');
      this.o.metrics?.deliveries.inc({ result });
      await this.wakeWaiting(outbox).catch((err: unknown) => logger.warn({ err, endpoint: ep.id }, 'webhook batches waiting to retry not made due'));
      return;
    }
    const now = this.now();
    const attempts = batch.n + 1;
    if (now - batch.f >= (this.o.maxAttemptsWindowMs ?? DEFAULT_WINDOW_MS)) {
      // Conditional: a batch an erasure rewrote while it was POSTed is not put back as it was.
      const [, dropped] = await settle(JSON.stringify({ ...batch, n: attempts, lastError: detail }), 'dead');
      this.o.metrics?.deliveries.inc({ result: 'dead_letter' });
      logger.warn({ endpoint: ep.id, attempts, events: batch.e.length, error: detail }, 'webhook batch moved to dead letters');
      // The list is full: its oldest batches are gone for good, which a replay would otherwise find out.
      if (Number(dropped) > 0) {
        this.o.metrics?.deadLettersDropped?.inc(Number(dropped));
        logger.warn({ account: ep.account, endpoint: ep.id, dropped: Number(dropped), deadLetterMax: deadMax }, 'the oldest dead-lettered webhook batches were dropped: the dead-letter list is full (replay it)');
      }
      return;
    }
    const base = this.o.retryBaseMs ?? DEFAULT_RETRY_BASE_MS;
    // Jittered within the cap: retryMaxDelay is the longest wait, as documented (jitter after the cap reached 1.2×).
    const delay = Math.min(base * 2 ** Math.min(attempts - 1, 30) * (1 - JITTER + 2 * JITTER * Math.random()), (this.o.retryMaxDelayMs ?? DEFAULT_RETRY_MAX_MS) * (1 - JITTER * Math.random()));
    const next: Batch = { ...batch, n: attempts };
    await settle(JSON.stringify(next), Math.round(now + delay));
    this.o.metrics?.deliveries.inc({ result });
    logger.info({ endpoint: ep.id, attempts, retryInMs: Math.round(delay), error: detail }, 'webhook delivery failed; will retry');
  }
}

/**
 * Moves dead-lettered batches back into their outboxes as fresh batches (a new retry window), for
 * one endpoint or every endpoint of the account. Returns the batches moved, and the unreadable ones
 * (not JSON batches: a hand edit, a damaged restore) left where they are for the operator. Safe
 * while dispatchers run: they append at the tail, this takes from the head.
 */
export async function replayDeadLetters(redis: RedisClient, keys: Keys, account: string, endpointId?: string, now: number = Date.now()): Promise<{ moved: number; unreadable: number }> {
  const ids = endpointId !== undefined ? [endpointId] : (await loadWebhooks(redis, keys, account)).map((e) => e.id);
  // Pages of 100 batches: each page is one script call, small enough not to stall Redis.
  const PAGE = 100;
  let moved = 0;
  let unreadable = 0;
  for (const id of ids) {
    const dead = keys.webhookDead(account, id);
    const outbox = keys.webhookOutbox(account, id);
    let queued = false;
    // The unreadable items kept so far, at the head of the list: the next page begins after them.
    let kept = 0;
    for (;;) {
      const items = await redis.lrange(dead, kept, kept + PAGE - 1);
      if (items.length === 0) break;
      const parsed = items.map((item) => parseBatch(item));
      const batches = parsed.flatMap((b) => (b ? [newBatch(b.e, now)] : []));
      const mask = parsed.map((b) => (b ? '1' : '0')).join('');
      // Compare and move: a page that changed since it was read (a dispatcher pushed and trimmed,
      // an erasure rewrote) is read again rather than trimmed by count.
      const args = batches.flatMap((b) => [b.member, b.id, b.oldest, b.events]);
      if (Number(await redis.replayDeadPage(dead, outbox, keys.webhookAges(account, id), keys.webhookOutboxEvents(account, id), now, kept, items.length, mask, ...items, ...args)) !== 1) continue;
      moved += batches.length;
      kept += items.length - batches.length;
      queued ||= batches.length > 0;
    }
    unreadable += kept;
    if (queued) await redis.sadd(keys.webhookEndpoints(), endpointRef(account, id));
  }
  return { moved, unreadable };
}
