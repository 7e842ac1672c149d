import { Cluster, type Result } from 'ioredis';
import type { TokenPayload } from '../core/tokens.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { BURST_WINDOW_MS, classifyOpen, type TrackingRequest } from './classify.js';
import { DEFAULT_EVENTS_MAX_LEN, DEFAULT_RETENTION_MS, type TrackingDeps, type TrackingMode } from './deps.js';
import { eventClass, packTrackingEvent, storedIp, TYPES, type EventContext } from './record.js';
import { appendEventBatch, EVENTS_PER_CALL } from '../store/events.js';
import { OPENS_PER_RECIPIENT_MINUTE, RepeatLimit } from './repeat-limit.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/recordTrackingOpens-3.lua: one message's marks and counters (its record's TTL read). */
    recordTrackingOpens(marks: string, stats: string, meta: string, ttlMs: number, quads: string): Result<number[], Context>;
    /** The same script defined with a key count per call, for many messages on one server (see markOpens). */
    recordTrackingOpensKeys(numKeys: number, ...keysThenArgs: (string | number)[]): Result<number[], Context>;
  }
}

/**
 * Opens and clicks are written to Redis in batches, after their answer:
 *
 *   request ─► answer ─► verify an open (keys, mode, address kept: as of now)
 *                          ─► queue [open, open, click, open, …]   (bounded: maxPending, else shed)
 *                          │ one flush at a time: as soon as the previous one is done, or under
 *                          │ load LINGER_MS after it began
 *                          ▼
 *              classify the opens
 *              one recordTrackingOpens call per message (Cluster) or for all (single server) ─► first / repeat,
 *                                                                                 engagement counters
 *              one appendEvents call on the stream key, entries in arrival order
 *
 * Per open that is a share of two script calls instead of two round trips of its own, which is what
 * lets the pixel keep up with a bare node:http server. Under load a flush starts no sooner than
 * LINGER_MS after the one before began (unless a full batch waits): each script call has a fixed
 * cost in Redis and here, and back-to-back flushes carried only ~75 events at 30,000 opens/s. The
 * marks and the stream are in different cluster slots, so they are never one script. While a flush
 * is in flight new events gather, so a batch grows with load (and with Redis latency) and costs
 * nothing extra when traffic is light: the first event after a quiet spell is flushed on the next
 * turn of the event loop.
 */
export interface RawOpen extends TrackingRequest {
  /** The token text as it came in the URL, not verified yet: the GIF answer did not need it. */
  readonly token: string;
  /** ms since epoch of the request. */
  readonly at: number;
}

export interface EventBatch {
  /** Queues an answered pixel request, verified now (see OpenEntry): classified, marked and appended in the next flush. */
  open(raw: RawOpen): void;
  /**
   * Queues the event of a verified token whose marks are already made (a click). A person's first
   * click on a link is held for the burst window first (see CLICK_HOLD_MS).
   */
  event(p: TokenPayload, ctx: EventContext): void;
  /** Events queued, held or being written. */
  readonly pending: number;
  /** Resolves when every queued event has been written (or has failed), held clicks included. */
  idle(): Promise<void>;
  /** Queues the held clicks at once, as they are (closing). */
  releaseHeld(): void;
}

export interface EventBatchOptions {
  /** Events queued or in flight at most; beyond, new ones are dropped (counted as result 'shed'). */
  readonly maxPending: number;
  /** Verifies an open token (kind 'o') as of `at` (the request's time), or null; with the keys in force, when the open is queued. */
  readonly verifyOpen: (token: string, at: number) => TokenPayload | null;
  /** An account's tracking mode in force, asked when an open is queued (its IP anonymisation is deps.settings's then). */
  readonly modeOf: (account: string) => TrackingMode;
  /** Events per script call at most (default MAX_BATCH). */
  readonly maxBatch?: number;
  /** Under load, the least time from one flush's start to the next (default LINGER_MS). */
  readonly lingerMs?: number;
  /** Called after each flush, written or failed, with how many queued entries it settled. */
  readonly onFlushed?: (entries: number) => void;
  /** How long a person's first click on a link is held before it is queued (default CLICK_HOLD_MS; 0 = none). */
  readonly clickHoldMs?: number;
  /** Clicks held at most (default MAX_HELD); beyond, a click is queued at once. */
  readonly maxHeld?: number;
  /** Opens of one recipient recorded per minute (default OPENS_PER_RECIPIENT_MINUTE, repeat-limit.ts); beyond, 'throttled'. */
  readonly opensPerRecipientMinute?: number;
}

/** What a batch needs of TrackingDeps: the recorder thread builds these without a pino logger. */
export type EventBatchDeps = Pick<TrackingDeps, 'redis' | 'keys' | 'metrics' | 'settings' | 'eventsMaxLen' | 'retentionMs'> & {
  readonly logger: { warn(obj: object, msg: string): void };
};

/** Events per flush: store/events.ts's per-call bound; at 50,000 opens/s a flush every 10 ms keeps up. */
export const MAX_BATCH = EVENTS_PER_CALL;

/** 10 ms: at 30,000 opens/s a flush carries ~300 events, not the ~75 that back-to-back flushes gather. */
export const LINGER_MS = 10;

/**
 * A person's first click on a link (full mode) waits this long before it is queued: a link scanner
 * clicks every link of a mail within BURST_WINDOW_MS, and only the click that makes the burst shows
 * it (recordTrackingEvent-4.lua). That click carries the window's start (EventContext.burstSince), and
 * the recipient's clicks held from then on are written as the scanner's ('burst') with it, as the
 * counters already moved them; so the stream and the webhooks say what the counters say. Other
 * events are not held: a repeat click or a machine's cannot turn out otherwise. The hold is from the
 * event's arrival here, by this process's clock, and 500 ms longer than the window: the click that
 * makes the burst may reach this thread later after its own mark than an earlier one did.
 */
export const CLICK_HOLD_MS = BURST_WINDOW_MS + 500;
/**
 * Held clicks at most: half the tracking server's bound on pending events (server.ts
 * MAX_PENDING_RECORDS), so ~2,500 first clicks a second held for 2 s leave the rest for opens.
 */
export const MAX_HELD = 5_000;
/** The tracking server's endpoint of each token kind (sluice_tracking_requests_total's `endpoint`). */
const ENDPOINTS = { o: 'open', c: 'click', u: 'unsubscribe' } as const;

/** A held click: queued at `until`, or earlier with a burst. */
interface Held {
  readonly key: string;
  readonly p: TokenPayload;
  readonly ctx: EventContext;
  readonly until: number;
  done: boolean;
}

/**
 * An open is decided when it arrives, under the keys and settings in force then (the main thread
 * sends opens and reloads in the order it answered and took them): verified (null: a bad token), its
 * account's mode, and the address it may keep. A reload before its flush changes none of that.
 */
interface OpenEntry {
  readonly raw: RawOpen;
  readonly p: TokenPayload | null;
  readonly mode: TrackingMode;
  readonly ip: string;
  /** Past its recipient's limit (RepeatLimit): answered, recorded nowhere. */
  readonly throttled?: true;
}
/** `held`: a click released from its hold, whose recipient may have been erased meanwhile. */
type Entry = OpenEntry | { readonly p: TokenPayload; readonly ctx: EventContext; readonly held?: true };

interface Ready {
  readonly p: TokenPayload;
  ctx: EventContext;
}

export function createEventBatch(deps: EventBatchDeps, opts: EventBatchOptions): EventBatch {
  const maxBatch = opts.maxBatch ?? MAX_BATCH;
  const lingerMs = opts.lingerMs ?? LINGER_MS;
  const holdMs = opts.clickHoldMs ?? CLICK_HOLD_MS;
  const maxHeld = opts.maxHeld ?? MAX_HELD;
  const repeats = new RepeatLimit(opts.opensPerRecipientMinute ?? OPENS_PER_RECIPIENT_MINUTE);
  const log = deps.logger;
  let queue: Entry[] = [];
  let inFlight = 0;
  let flushing = false;
  let scheduled = false;
  let idleWaiters: (() => void)[] = [];
  /** Held clicks by recipient ("<msgId>:<idx>"), and all of them in order of `until` from holdHead on. */
  const held = new Map<string, Held[]>();
  let holdQueue: Held[] = [];
  let holdHead = 0;
  let heldCount = 0;
  let holdTimer: ReturnType<typeof setTimeout> | null = null;

  const pendingCount = (): number => queue.length + inFlight + heldCount;

  /** Room for one more event, else it is dropped and counted. */
  const admit = (endpoint: 'open' | 'click'): boolean => {
    if (pendingCount() < opts.maxPending) return true;
    deps.metrics?.requests.inc({ endpoint, result: 'shed' });
    log.warn({ pending: pendingCount() }, 'tracking event dropped: too many writes waiting');
    return false;
  };

  const enqueue = (entry: Entry): void => {
    queue.push(entry);
    if (!flushing && !scheduled) {
      scheduled = true;
      // After this turn's other requests: they join the same batch.
      setImmediate(run);
    }
  };

  const settle = (): void => {
    if (flushing || scheduled || queue.length > 0 || heldCount > 0) return;
    const waiters = idleWaiters;
    idleWaiters = [];
    for (const w of waiters) w();
  };

  /** Queues a held click (as it is, or as the scanner's), once. */
  const unhold = (h: Held, asBurst: boolean): void => {
    if (h.done) return;
    h.done = true;
    heldCount--;
    const list = held.get(h.key);
    if (list) {
      list.splice(list.indexOf(h), 1);
      if (list.length === 0) held.delete(h.key);
    }
    enqueue({ p: h.p, ctx: asBurst ? { ...h.ctx, machine: 'burst' } : h.ctx, held: true });
  };

  const releaseDue = (): void => {
    holdTimer = null;
    const now = Date.now();
    while (holdHead < holdQueue.length) {
      const h = holdQueue[holdHead] as Held;
      if (!h.done && h.until > now) break;
      holdHead++;
      unhold(h, false);
    }
    // Drop what was released (in bulk, not one shift per click).
    if (holdHead > 1024 && holdHead * 2 > holdQueue.length) {
      holdQueue = holdQueue.slice(holdHead);
      holdHead = 0;
    }
    const next = holdQueue[holdHead];
    if (next) holdTimer = setTimeout(releaseDue, Math.max(1, next.until - now));
    settle();
  };

  const hold = (p: TokenPayload, ctx: EventContext): void => {
    const h: Held = { key: `${p.msgId}:${p.idx}`, p, ctx, until: Date.now() + holdMs, done: false };
    const list = held.get(h.key);
    if (list) list.push(h);
    else held.set(h.key, [h]);
    holdQueue.push(h);
    heldCount++;
    holdTimer ??= setTimeout(releaseDue, holdMs);
  };

  /** A burst-making click: the recipient's clicks held from the window's start are the scanner's. */
  const releaseBurst = (key: string, since: number): void => {
    for (const h of [...(held.get(key) ?? [])]) unhold(h, h.ctx.now >= since);
  };

  const run = async (): Promise<void> => {
    scheduled = false;
    flushing = true;
    while (queue.length > 0) {
      const started = Date.now();
      const batch = queue.length <= maxBatch ? queue : queue.slice(0, maxBatch);
      queue = queue.length <= maxBatch ? [] : queue.slice(maxBatch);
      inFlight = batch.length;
      try {
        await flush(batch);
      } catch (err) {
        log.warn({ err, events: batch.length }, 'tracking events not recorded');
      }
      inFlight = 0;
      opts.onFlushed?.(batch.length);
      // Under load (events arrived during the flush), let the next batch gather until lingerMs after
      // this one started, unless it is full already: fewer, larger script calls.
      const wait = lingerMs - (Date.now() - started);
      if (queue.length > 0 && queue.length < maxBatch && wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
    flushing = false;
    settle();
  };

  const flush = async (batch: readonly Entry[]): Promise<void> => {
    let ready: Ready[] = [];
    const opens: OpenMark[] = [];
    /** The event of each open, and whether the marks decide its first/repeat (full mode). */
    const marked: { event: Ready; full: boolean }[] = [];
    // Counted per batch, not per request: a labelled counter costs a label lookup per call.
    let ok = 0;
    let invalid = 0;
    let throttled = 0;
    /** The held clicks' events: see write(). */
    const heldReady: Ready[] = [];
    for (const entry of batch) {
      if (!('raw' in entry)) {
        const r: Ready = { p: entry.p, ctx: entry.ctx };
        ready.push(r);
        if ('held' in entry && entry.held === true) heldReady.push(r);
        continue;
      }
      const { raw, p, mode } = entry;
      if (entry.throttled) {
        throttled++;
        continue;
      }
      if (!p) {
        invalid++;
        continue;
      }
      ok++;
      if (mode === 'off') continue;
      // Classified by the address as seen (Apple's proxies by their ranges), stored as the account allows.
      const machine = classifyOpen(raw);
      const event: Ready = { p, ctx: { now: raw.at, mode, first: false, machine, userAgent: raw.userAgent, ip: entry.ip } };
      ready.push(event);
      // Anonymous mode keeps no per-recipient marks (nothing is "first"), but the open is counted.
      opens.push({ msgId: p.msgId, cls: machine ? 'm' : '', idx: mode === 'full' ? p.idx : '', at: raw.at, rcpt: p.idx });
      marked.push({ event, full: mode === 'full' });
    }
    if (invalid > 0) deps.metrics?.requests.inc({ endpoint: 'open', result: 'invalid' }, invalid);
    if (throttled > 0) deps.metrics?.requests.inc({ endpoint: 'open', result: 'throttled' }, throttled);
    try {
      await write(opens, marked, ready, heldReady);
    } catch (err) {
      unrecorded(batch);
      throw err;
    }
    if (ok > 0) deps.metrics?.requests.inc({ endpoint: 'open', result: 'ok' }, ok);
  };

  /**
   * A batch whose write Redis refused (maxmemory, MISCONF, READONLY, NOREPLICAS) or that failed: its
   * events are not written, and are counted so. An open counts `unrecorded` instead of `ok`; a click
   * or unsubscribe, counted when it was answered, counts here too (its marks and counters may stand
   * without its event).
   */
  const unrecorded = (batch: readonly Entry[]): void => {
    const lost = new Map<string, number>();
    let untracked = 0;
    for (const e of batch) {
      // An open of an account that tracks nothing had nothing to write: it was served, `ok`.
      if ('raw' in e && e.p && e.mode === 'off') untracked++;
      const endpoint = 'raw' in e ? (e.p && e.mode !== 'off' ? 'open' : null) : ENDPOINTS[e.p.kind];
      if (endpoint !== null) lost.set(endpoint, (lost.get(endpoint) ?? 0) + 1);
    }
    if (untracked > 0) deps.metrics?.requests.inc({ endpoint: 'open', result: 'ok' }, untracked);
    for (const [endpoint, n] of lost) deps.metrics?.requests.inc({ endpoint, result: 'unrecorded' }, n);
  };

  /** Marks and counts the opens, then appends the events that remain (those of erased recipients go). */
  const write = async (opens: OpenMark[], marked: { event: Ready; full: boolean }[], ready: Ready[], heldReady: Ready[]): Promise<void> => {
    // Held clicks were marked up to ~2.5 s ago: a recipient erased since (an x:<idx> or x:* mark,
    // eraseRecipient-5.lua) gets no event, as recordTrackingEvent would have decided then.
    if (heldReady.length > 0) {
      const erased = new Set(await erasedOf(deps.redis, deps.keys, heldReady));
      if (erased.size > 0) ready = ready.filter((e) => !erased.has(e));
    }
    if (opens.length > 0) {
      const firsts = await markOpens(deps.redis, deps.keys, opens, deps.retentionMs ?? DEFAULT_RETENTION_MS);
      let erased: Set<Ready> | undefined;
      marked.forEach(({ event, full }, i) => {
        // -1: an erased recipient's old pixel, or one of a message whose record is gone (any mode);
        // nothing was marked or counted, and no event is written.
        if (firsts[i] === -1) (erased ??= new Set()).add(event);
        else if (full) event.ctx = { ...event.ctx, first: firsts[i] === 1 };
      });
      const gone = erased;
      if (gone) ready = ready.filter((e) => !gone.has(e));
    }
    if (ready.length === 0) return;
    const entries = ready.map(({ p, ctx }) => packTrackingEvent(p, ctx));
    await appendEventBatch(deps.redis, deps.keys, deps.eventsMaxLen ?? DEFAULT_EVENTS_MAX_LEN, entries);
    const counts = new Map<string, { type: string; cls: string; n: number }>();
    for (const { p, ctx } of ready) {
      const type = TYPES[p.kind];
      const cls = eventClass(ctx);
      const c = counts.get(`${type}|${cls}`);
      if (c) c.n++;
      else counts.set(`${type}|${cls}`, { type, cls, n: 1 });
    }
    for (const c of counts.values()) deps.metrics?.events.inc({ type: c.type, class: c.cls }, c.n);
  };

  return {
    open: (raw) => {
      if (!admit('open')) return;
      const p = opts.verifyOpen(raw.token, raw.at);
      // A verified open past its recipient's limit (one pixel URL fetched over and over) is not
      // recorded; queued all the same, as a bad token's is, so that its flush counts it off what the
      // main thread holds pending.
      if (p && repeats.over(`${p.msgId}:${p.idx}`, raw.at)) return enqueue({ raw, p: null, mode: 'off', ip: '', throttled: true });
      const mode = p ? opts.modeOf(p.account) : 'off';
      enqueue({ raw, p, mode, ip: p && mode !== 'off' ? storedIp(deps.settings, p.account, raw.ip) : '' });
    },
    event: (p, ctx) => {
      if (!admit('click')) return;
      // Beyond maxHeld, a click is written at once (a burst may then leave it a person's): held
      // clicks never push out opens and other clicks while Redis keeps up.
      if (holdMs > 0 && heldCount < maxHeld && p.kind === 'c' && ctx.mode === 'full' && ctx.first && ctx.machine === null) return hold(p, ctx);
      if (ctx.machine === 'burst' && ctx.burstSince !== undefined) releaseBurst(`${p.msgId}:${p.idx}`, ctx.burstSince);
      enqueue({ p, ctx });
    },
    get pending() {
      return pendingCount();
    },
    idle: () => (!flushing && !scheduled && queue.length === 0 && heldCount === 0 ? Promise.resolve() : new Promise((resolve) => idleWaiters.push(resolve))),
    releaseHeld() {
      for (let i = holdHead; i < holdQueue.length; i++) unhold(holdQueue[i] as Held, false);
      holdQueue = [];
      holdHead = 0;
      if (holdTimer) clearTimeout(holdTimer);
      holdTimer = null;
      settle();
    },
  };
}

/** The entries whose recipient was erased (the message's x:<idx> or x:* mark), one HMGET each (auto-pipelined). */
async function erasedOf<E extends { readonly p: TokenPayload }>(redis: RedisClient, keys: Keys, entries: readonly E[]): Promise<E[]> {
  const marks = await Promise.all(entries.map((e) => redis.hmget(keys.trackMarks(e.p.msgId), `x:${e.p.idx}`, 'x:*')));
  return entries.filter((_, i) => marks[i]?.some((v) => v !== null));
}

/** One verified open for recordTrackingOpens: idx '' in anonymous mode (counted, no mark), unless its recipient was erased. */
interface OpenMark {
  readonly msgId: string;
  readonly cls: '' | 'm';
  readonly idx: number | '';
  readonly at: number;
  /** The recipient index in every mode (the erasure check: an erased recipient's open is not counted either). */
  readonly rcpt: number;
}


/**
 * Marks and counts the opens (in order) and returns 1 for each that is its recipient's first, else
 * 0. On a single server one call carries every message of the batch; on a cluster the messages live
 * in different slots, so it is one call per message (ioredis pipelines them to their nodes).
 */
async function markOpens(redis: RedisClient, keys: Keys, opens: readonly OpenMark[], ttlMs: number): Promise<number[]> {
  const single = !(redis instanceof Cluster);
  const order: { group: string; pos: number }[] = [];
  // One group per call: its key triples (marks, stats, meta; each message once) and its quadruples.
  const calls = new Map<string, { keys: string[]; index: Map<string, number>; quads: string[]; count: number }>();
  for (const o of opens) {
    const name = single ? '' : o.msgId;
    let c = calls.get(name);
    if (!c) calls.set(name, (c = { keys: [], index: new Map(), quads: [], count: 0 }));
    let k = c.index.get(o.msgId);
    if (k === undefined) {
      c.keys.push(keys.trackMarks(o.msgId), keys.msgStats(o.msgId), keys.msgMeta(o.msgId));
      c.index.set(o.msgId, (k = c.keys.length / 3));
    }
    // [k, cls, idx, at, rcpt]: digits, '' or 'm', so no JSON escaping is needed.
    c.quads.push(`[${k},"${o.cls}","${o.idx}","${o.at}","${o.rcpt}"]`);
    order.push({ group: name, pos: c.count++ });
  }
  const results = new Map<string, number[]>();
  await Promise.all(
    [...calls].map(async ([name, c]) => {
      // On a cluster the key comes first: ioredis's auto-pipelining routes a call by its first argument.
      const firsts = single
        ? await redis.recordTrackingOpensKeys(c.keys.length, ...c.keys, ttlMs, `[${c.quads.join(',')}]`)
        : await redis.recordTrackingOpens(c.keys[0] as string, c.keys[1] as string, c.keys[2] as string, ttlMs, `[${c.quads.join(',')}]`);
      results.set(name, firsts);
    }),
  );
  return order.map(({ group, pos }) => results.get(group)?.[pos] ?? 0);
}
