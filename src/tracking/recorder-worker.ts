import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { createTokenCodec } from '../core/tokens.js';
import { createRedis } from '../redis/client.js';
import { createKeys } from '../redis/keys.js';
import { modeOf } from './deps.js';
import { createEventBatch, type EventBatchDeps } from './event-batch.js';
import { OPEN_FIELDS, type Counts, type FromRecorder, type RecorderInit, type ToRecorder } from './recorder-protocol.js';

/**
 * The tracking server's recorder thread: verifies, classifies, marks and appends the opens and
 * clicks the main thread has already answered (event-batch.ts, on a Redis connection of its own).
 * The main thread only answers requests; all the per-event work is here, on the other core.
 */
const init = workerData as RecorderInit;
const port = parentPort;
if (!port) throw new Error('recorder-worker.ts runs as a worker thread');

const post = (m: FromRecorder): void => port.postMessage(m);

/**
 * Below the answering thread's priority (nice init.nice, config tracking.recorderNice): on a machine
 * with more runnable threads than cores, the scheduler lets the main thread answer first, and this
 * thread's writes catch up in larger batches. Linux applies a nice value per thread, named by its
 * id, which /proc/thread-self gives; elsewhere (no /proc) the thread keeps the process's priority.
 */
function lowerPriority(nice: number): void {
  if (nice <= 0) return;
  let tid: number;
  try {
    tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
  } catch {
    return;
  }
  try {
    setPriority(tid, nice);
  } catch (err) {
    post({ t: 'log', msg: 'tracking recorder thread keeps its priority', err: String((err as Error).message), events: undefined });
  }
}
lowerPriority(init.nice);
const redis = createRedis({ ...init.connect, name: 'sluice-tracking-recorder' });
// ioredis reconnects by itself; the main thread's connection reports outages, so only note them here.
redis.on('error', () => undefined);
/** Verifies the opens: the start's keys, then each reload's ({ t: 'codec' }). */
let codec = createTokenCodec(init.codec);

// Counter increments since the last report, keyed "label\tlabel".
const requests = new Map<string, number>();
const events = new Map<string, number>();
const bump = (m: Map<string, number>, key: string, n: number): void => void m.set(key, (m.get(key) ?? 0) + n);
const drain = (m: Map<string, number>): Counts => {
  const out: Counts = [];
  for (const [k, n] of m) {
    const tab = k.indexOf('\t');
    out.push([k.slice(0, tab), k.slice(tab + 1), n]);
  }
  m.clear();
  return out;
};

/** The accounts' tracking settings: the start's, then each reload's ({ t: 'settings' }). */
let settings = init.settings;
// createEventBatch reads deps.settings per event: a reload replaces it here.
const batchDeps: { -readonly [K in keyof EventBatchDeps]: EventBatchDeps[K] } = {
  redis,
  keys: createKeys(init.prefix),
  settings,
  eventsMaxLen: init.eventsMaxLen,
  retentionMs: init.retentionMs,
  logger: {
    warn: (obj, msg) => {
      const o = obj as { err?: unknown; events?: number };
      post({ t: 'log', msg, err: o.err === undefined ? undefined : String((o.err as Error)?.message ?? o.err), events: o.events });
    },
  },
  metrics: {
    requests: { inc: (l, n = 1) => bump(requests, `${l.endpoint}\t${l.result}`, n) },
    events: { inc: (l, n = 1) => bump(events, `${l.type}\t${l.class}`, n) },
    duration: { observe: () => undefined },
  },
};

const batch = createEventBatch(batchDeps, {
  // The main thread bounds what is pending; here everything it sends is taken.
  maxPending: Number.MAX_SAFE_INTEGER,
  clickHoldMs: init.clickHoldMs,
  opensPerRecipientMinute: init.opensPerRecipientMinute,
  modeOf: (account) => modeOf(settings, account),
  verifyOpen: (token, at) => codec.verify(token, at, 'o'),
  onFlushed: (entries) => post({ t: 'flushed', entries, requests: drain(requests), events: drain(events) }),
});

port.on('message', (m: ToRecorder) => {
  if (m.t === 'codec') {
    codec = createTokenCodec(m.codec);
    return;
  }
  if (m.t === 'settings') {
    settings = m.settings;
    batchDeps.settings = m.settings;
    return;
  }
  if (m.t === 'close') {
    // Closing: held clicks are written now, as they are, not after their hold.
    batch.releaseHeld();
    void batch
      .idle()
      .then(() => redis.quit())
      .catch(() => redis.disconnect())
      .finally(() => port.close());
    return;
  }
  const o = m.opens;
  for (let i = 0; i + OPEN_FIELDS <= o.length; i += OPEN_FIELDS) {
    batch.open({ token: o[i] as string, at: o[i + 1] as number, method: o[i + 2] as string, userAgent: o[i + 3] as string, ip: o[i + 4] as string });
  }
  for (const e of m.events) batch.event(e.p, e.ctx);
});
