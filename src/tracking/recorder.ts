import { Worker } from 'node:worker_threads';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TokenCodecOptions, TokenPayload } from '../core/tokens.js';
import type { EventBatch, RawOpen } from './event-batch.js';
import type { TrackingMetrics, TrackingSettings } from './deps.js';
import type { EventContext } from './record.js';
import { type FromRecorder, type OpenTuples, type RecorderInit, type ToRecorder } from './recorder-protocol.js';

/**
 * The main thread's side of the recorder thread: the tracking server answers a pixel and hands the
 * request here; everything else an open costs (HMAC, classification, marks, the stream entry, the
 * Redis client's work) happens in recorder-worker.ts, so the thread that answers HTTP does little
 * more than a server that records nothing.
 *
 *   request ─► answer ─► open tuples (this turn) ──postMessage once per turn──► recorder thread
 *                                                                                 │ event-batch.ts
 *   pending = queued here + sent and not yet flushed ◄── 'flushed' (entries, counter increments)
 *
 * Bounded: beyond maxPending events waiting, new ones are shed (counted as result 'shed').
 * If the thread dies (it should not: event-batch.ts catches Redis errors), what it held is reported
 * lost and a new thread is started after a second; requests are answered all along.
 */
export interface Recorder extends Omit<EventBatch, 'releaseHeld'> {
  /** New per-account settings for what is sent from now on (a thread started later gets them too). */
  updateSettings(settings: TrackingSettings): void;
  /** New token keys for the opens sent from now on (a thread started later gets them too). */
  updateCodec(codec: TokenCodecOptions): void;
  /**
   * Writes what it holds and stops the thread; rejects when the thread had to be stopped (after
   * CLOSE_GRACE_MS) with events answered and not written (counted result 'lost').
   */
  close(): Promise<void>;
}

export interface RecorderOptions {
  readonly maxPending: number;
  /** Called whenever the thread reports a flush (pending went down). */
  readonly onFlushed?: () => void;
  /** close(): how long the thread gets to write what it holds (default CLOSE_GRACE_MS). */
  readonly closeGraceMs?: number;
  readonly metrics: TrackingMetrics | undefined;
  readonly logger: { warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

// Same extension as this file: '.ts' under tsx (worker threads inherit `--import tsx`), '.js' in dist/.
const WORKER_URL = new URL(`./recorder-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url).href;
/**
 * The thread's entry imports the module. Run from source, tsx's ESM hooks (`--import tsx`) do not
 * reach a worker thread on Node 20, so the entry registers them first; the built code needs none.
 */
const WORKER_ENTRY = `${WORKER_URL.endsWith('.ts') ? "import('tsx/esm/api').then((tsx) => tsx.register())" : 'Promise.resolve()'}
  .then(() => import(${JSON.stringify(WORKER_URL)}))
  .catch((err) => process.nextTick(() => { throw err; }));`;
const RESTART_DELAY_MS = 1_000;
/** Dropped events are logged at most once a second, with how many since the last line. */
const SHED_LOG_INTERVAL_MS = 1_000;
/** close(): how long the thread gets to write what it holds before it is stopped. */
const CLOSE_GRACE_MS = 10_000;
/** Young generation of the thread's heap: its garbage is short-lived batches (see render/pool.ts). */
const YOUNG_GENERATION_MB = 16;

export function startRecorder(start: RecorderInit, opts: RecorderOptions): Recorder {
  /** What a thread is started with: the settings of the latest reload. */
  let init = start;
  let opens: OpenTuples = [];
  let events: { p: TokenPayload; ctx: EventContext }[] = [];
  let queued = 0;
  let sent = 0;
  let scheduled = false;
  let closing = false;
  let idleWaiters: (() => void)[] = [];
  /** Started with the first event: a tracking role that gets no traffic costs no thread (~30 MB of RSS, measured from dist/). */
  let worker: Worker | null = null;
  /** False until then, and from the thread's exit until its replacement starts: messages wait here meanwhile. */
  let alive = false;

  const settle = (): void => {
    if (queued + sent > 0 || scheduled) return;
    const waiters = idleWaiters;
    idleWaiters = [];
    for (const w of waiters) w();
  };

  const send = (): void => {
    scheduled = false;
    if (queued === 0) return settle();
    if (!alive || !worker) return;
    const m: ToRecorder = { t: 'record', opens, events };
    worker.postMessage(m);
    sent += queued;
    queued = 0;
    opens = [];
    events = [];
  };

  const spawn = (): Worker => {
    const w = new Worker(WORKER_ENTRY, { eval: true, workerData: init, resourceLimits: { maxYoungGenerationSizeMb: YOUNG_GENERATION_MB } });
    alive = true;
    w.on('message', (m: FromRecorder) => {
      if (m.t === 'log') {
        opts.logger.warn({ err: m.err === undefined ? undefined : { message: m.err }, events: m.events }, m.msg);
        return;
      }
      sent -= m.entries;
      for (const [endpoint, result, n] of m.requests) opts.metrics?.requests.inc({ endpoint, result }, n);
      for (const [type, cls, n] of m.events) opts.metrics?.events.inc({ type, class: cls }, n);
      settle();
      opts.onFlushed?.();
    });
    w.on('error', (err) => opts.logger.error({ err }, 'tracking recorder thread failed'));
    w.on('exit', (code) => {
      alive = false;
      if (closing) return;
      opts.logger.error({ code, lost: sent }, 'tracking recorder thread exited; restarting it');
      if (sent > 0) opts.metrics?.requests.inc({ endpoint: 'open', result: 'lost' }, sent);
      sent = 0;
      settle();
      setTimeout(() => {
        if (closing) return;
        worker = spawn();
        if (queued > 0 && !scheduled) {
          scheduled = true;
          setImmediate(send);
        }
      }, RESTART_DELAY_MS).unref();
    });
    return w;
  };

  /**
   * A reload's message goes after the events answered before it (this turn's too, sent first) and
   * before any answered later: the thread decides each under the settings and keys of its answer. A
   * thread not started (or being restarted) gets them with its workerData.
   */
  const reload = (m: Extract<ToRecorder, { t: 'settings' | 'codec' }>): void => {
    if (!alive || !worker) return;
    if (queued > 0) send();
    worker.postMessage(m);
  };

  /**
   * Drops since the last warning: one line a second at most, however many are dropped (a flood of them
   * would take the CPU the writes need); the drops after a line are told a second after it.
   */
  let shed = 0;
  let shedLoggedAt = 0;
  let shedTimer: NodeJS.Timeout | null = null;
  const logShed = (): void => {
    shedTimer = null;
    if (shed === 0) return;
    opts.logger.warn({ pending: queued + sent, dropped: shed }, 'tracking events dropped: too many writes waiting');
    shed = 0;
    shedLoggedAt = Date.now();
  };
  const take = (endpoint: 'open' | 'click'): boolean => {
    if (worker === null && !closing) worker = spawn();
    if (queued + sent >= opts.maxPending) {
      opts.metrics?.requests.inc({ endpoint, result: 'shed' });
      shed++;
      const wait = shedLoggedAt + SHED_LOG_INTERVAL_MS - Date.now();
      if (wait <= 0) logShed();
      else shedTimer ??= setTimeout(logShed, wait).unref();
      return false;
    }
    queued++;
    if (!scheduled) {
      scheduled = true;
      // After this turn's other requests: they go in the same message.
      setImmediate(send);
    }
    return true;
  };

  return {
    updateSettings(settings) {
      init = { ...init, settings };
      reload({ t: 'settings', settings });
    },
    updateCodec(codec) {
      init = { ...init, codec };
      reload({ t: 'codec', codec });
    },
    open(raw: RawOpen) {
      if (take('open')) opens.push(raw.token, raw.at, raw.method, raw.userAgent, raw.ip);
    },
    event(p, ctx) {
      if (take('click')) events.push({ p, ctx });
    },
    get pending() {
      return queued + sent;
    },
    idle: () => (queued + sent === 0 && !scheduled ? Promise.resolve() : new Promise((resolve) => idleWaiters.push(resolve))),
    async close() {
      if (scheduled) send();
      closing = true;
      let lost = 0;
      let why = '';
      if (!alive || !worker) {
        // No thread to write them (it died and its restart is not due yet): what waits for it is lost.
        lost = queued;
        why = 'closed while its thread was down';
        queued = 0;
        opens = [];
        events = [];
      } else {
        const w = worker;
        const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
        w.postMessage({ t: 'close' } satisfies ToRecorder);
        let cutOff = false;
        const cut = setTimeout(() => {
          cutOff = true;
          void w.terminate();
        }, opts.closeGraceMs ?? CLOSE_GRACE_MS);
        await exited;
        clearTimeout(cut);
        if (cutOff) {
          // Redis did not take them within the grace.
          lost = sent;
          why = `stopped after ${(opts.closeGraceMs ?? CLOSE_GRACE_MS) / 1000} s`;
        }
        sent = 0;
      }
      if (shedTimer) logShed();
      settle();
      if (lost === 0) return;
      // Answered, never written: counted and said, and the shutdown is incomplete (app/start.ts), not a clean stop.
      opts.metrics?.requests.inc({ endpoint: 'open', result: 'lost' }, lost);
      throw new Error(`tracking recorder ${why} with ${lost} answered events not written to Redis`);
    },
  };
}
