/**
 * The main-thread side of rendering: a piscina pool of render workers (worker.ts). The main thread
 * only posts tasks and receives finished bytes; it never hashes or signs.
 *
 * Backpressure: piscina holds at most `threads × queuePerThread` waiting tasks (`maxQueue`). A
 * caller that finds the queue full waits in a FIFO here instead of getting piscina's "queue at
 * limit" error; waiters are let in, in order, on piscina's 'drain' and whenever a task settles.
 * They are started synchronously from that loop, so the queue can never overshoot.
 *
 * Coalescing: renderMany calls made in one turn of the event loop (the dispatcher's connections
 * whose claims answered in the same Redis reply) go to the workers together, a few worker tasks for
 * all of them, like ioredis's auto-pipelining: a worker task costs ~100 µs of CPU in postMessage and
 * structured clone whatever it carries, and claims while mail trickles in hold one or two copies.
 */
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { SluiceError } from '../core/errors.js';
import type { DkimAlgorithm, RenderResult, RenderTask, WorkerInit } from './protocol.js';

export interface RenderPoolOptions {
  /** Worker threads; 0 = one per CPU. */
  threads: number;
  /** Waiting tasks allowed per thread before renderAndSign waits for room. */
  queuePerThread: number;
  init: WorkerInit;
  /** Called once per signature made, with the time the worker spent signing the message. */
  onSigned?: (algorithm: DkimAlgorithm, seconds: number) => void;
  /** A worker error not tied to a task (piscina replaces the worker); tasks report their own. */
  onError?: (err: unknown) => void;
}

// Same extension as this file: '.ts' when run from source under tsx (worker threads inherit the
// `--import tsx` of process.execArgv), '.js' when compiled to dist/.
const WORKER_URL = new URL(`./worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url).href;

/** Young-generation cap of each render worker's heap (see the constructor). */
const WORKER_YOUNG_GENERATION_MB = 16;
/**
 * Copies per coalesced worker task at most: the work of one task is done by one thread, in order,
 * so a larger task only delays its last copy (the dispatcher asks for 8 at a time).
 */
const COALESCED_TASK_MAX = 16;

/** renderMany calls waiting for the end of the event-loop turn. */
interface Pending {
  readonly tasks: readonly RenderTask[];
  readonly resolve: (results: RenderResult[]) => void;
}

/** One set of worker threads, started with one WorkerInit (replaceInit starts another). */
interface Generation {
  readonly piscina: Piscina;
  /** Tasks sent to these threads and not settled yet. */
  inFlight: number;
}

export class RenderPool {
  #gen: Generation;
  /** Generations replaced by replaceInit, ending once their tasks are done (awaited by close()). */
  readonly #retired = new Set<Promise<void>>();
  readonly #maxQueue: number;
  readonly #onError: (err: unknown) => void;
  readonly #onSigned: RenderPoolOptions['onSigned'];
  readonly #waiting: (() => void)[] = [];
  #inFlight = 0;
  readonly #threads: number;
  /** Time the workers reported spending on tasks since the last utilization() reading, ms. */
  #busyMs = 0;
  #readAt = performance.now();
  #closing: Promise<void> | null = null;
  #idle: (() => void) | null = null;
  #pending: Pending[] = [];

  constructor(opts: RenderPoolOptions) {
    const threads = opts.threads > 0 ? opts.threads : availableParallelism();
    this.#threads = threads;
    this.#maxQueue = threads * Math.max(1, opts.queuePerThread);
    this.#onSigned = opts.onSigned;
    this.#onError = opts.onError ?? (() => {});
    this.#gen = this.#start(opts.init);
  }

  #start(init: WorkerInit): Generation {
    const piscina = new Piscina({
      filename: WORKER_URL,
      minThreads: this.#threads,
      maxThreads: this.#threads,
      maxQueue: this.#maxQueue,
      workerData: init,
      // Workers hold parsed keys and the message cache; keep them for the life of the pool.
      idleTimeout: Number.POSITIVE_INFINITY,
      // A render's garbage is a copy or two (tens of KB): V8's default young generation (~48 MB
      // committed per worker, measured by bench/campaign.ts) buys nothing but resident memory.
      resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB },
    });
    piscina.on('drain', () => this.#pump());
    piscina.on('error', this.#onError);
    return { piscina, inFlight: 0 };
  }

  /**
   * New worker threads started with `init` (a configuration reload's DKIM keys) take every task from
   * now on. The threads they replace finish the tasks they were given (copies already claimed are
   * rendered with the keys in force when they were sent) and then end; close() waits for them too.
   */
  replaceInit(init: WorkerInit): void {
    if (this.#closing) throw new SluiceError('SLUICE_SHUTTING_DOWN', 'the render pool is closed');
    const old = this.#gen;
    this.#gen = this.#start(init);
    this.#retire(old);
  }

  #retire(gen: Generation): void {
    if (gen.inFlight > 0) return; // #settled retires it with its last task
    const ended: Promise<void> = gen.piscina
      .close()
      .catch((err: unknown) => this.#onError(err))
      .finally(() => this.#retired.delete(ended));
    this.#retired.add(ended);
  }

  /**
   * Renders and signs one message in a worker. Resolves with `{ ok: false, code }` for bad input or
   * a failed worker; rejects only with SLUICE_SHUTTING_DOWN once close() has been called.
   */
  renderAndSign(task: RenderTask): Promise<RenderResult> {
    return this.#admit(() => this.#run(task));
  }

  /**
   * Renders several messages, in as few worker tasks as the calls of this event-loop turn need
   * (see Coalescing above). Resolves with one result per task, in order; the same failure rules as
   * renderAndSign.
   */
  renderMany(tasks: readonly RenderTask[]): Promise<RenderResult[]> {
    if (this.#closing) return Promise.reject(new SluiceError('SLUICE_SHUTTING_DOWN', 'the render pool is closed'));
    if (tasks.length === 0) return Promise.resolve([]);
    return new Promise((resolve) => {
      if (this.#pending.length === 0) setImmediate(() => this.#flush());
      this.#pending.push({ tasks, resolve });
    });
  }

  /**
   * Share of the worker threads' time spent rendering and signing since the last reading, 0–1: the
   * sum of the times the workers report per copy over (elapsed × threads). (piscina's own figure is
   * a mean over its whole life and read near 0 while the threads were saturated.)
   */
  utilization(): number {
    const now = performance.now();
    const elapsed = now - this.#readAt;
    const busy = this.#busyMs;
    this.#readAt = now;
    this.#busyMs = 0;
    return elapsed <= 0 ? 0 : Math.min(1, busy / (elapsed * this.#threads));
  }

  /** Tasks waiting for a worker (in piscina's queue, in the backpressure FIFO, and calls of this turn not sent yet). */
  queueSize(): number {
    return this.#gen.piscina.queueSize + this.#waiting.length + this.#pending.length;
  }

  /**
   * Stops taking tasks, lets every accepted task finish, then ends the threads. Idempotent.
   * (piscina's own close() waits only for tasks already on a thread and aborts its queue.)
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#inFlight > 0 || this.#waiting.length > 0 || this.#pending.length > 0) await new Promise<void>((resolve) => (this.#idle = resolve));
      await this.#gen.piscina.close();
      await Promise.all([...this.#retired]);
    })();
    return this.#closing;
  }

  /** Starts `start` now when piscina's queue has room and nobody waits, else in FIFO order (see #pump). */
  #admit<T>(start: () => Promise<T>): Promise<T> {
    if (this.#closing) return Promise.reject(new SluiceError('SLUICE_SHUTTING_DOWN', 'the render pool is closed'));
    return this.#enqueue(start);
  }

  #enqueue<T>(start: () => Promise<T>): Promise<T> {
    if (this.#waiting.length === 0 && this.#gen.piscina.queueSize < this.#maxQueue) return start();
    return new Promise((resolve) => this.#waiting.push(() => resolve(start())));
  }

  /**
   * Sends the calls of this turn as worker tasks: callers are packed whole, in order, into tasks of
   * about total ÷ threads copies (so every thread gets a share), at most COALESCED_TASK_MAX. They were
   * accepted before any close(), so they are run even if the pool is closing now.
   */
  #flush(): void {
    const calls = this.#pending;
    this.#pending = [];
    const total = calls.reduce((n, c) => n + c.tasks.length, 0);
    const size = Math.max(1, Math.min(COALESCED_TASK_MAX, Math.ceil(total / this.#threads)));
    for (let i = 0; i < calls.length; ) {
      const group: Pending[] = [calls[i] as Pending];
      let n = (calls[i] as Pending).tasks.length;
      for (i++; i < calls.length && n + (calls[i] as Pending).tasks.length <= size; i++) {
        group.push(calls[i] as Pending);
        n += (calls[i] as Pending).tasks.length;
      }
      const tasks = group.length === 1 ? (group[0] as Pending).tasks : group.flatMap((c) => c.tasks);
      const answer = (results: RenderResult[]): void => {
        let at = 0;
        for (const c of group) {
          c.resolve(results.slice(at, at + c.tasks.length));
          at += c.tasks.length;
        }
      };
      // This runs from setImmediate: nothing may escape as an exception, every caller gets an answer.
      const failed = (err: unknown): void => answer(tasks.map(() => workerFailed(err)));
      try {
        this.#enqueue(() => this.#runBatch(tasks)).then(answer, failed);
      } catch (err) {
        failed(err);
      }
    }
  }

  #run(task: RenderTask): Promise<RenderResult> {
    const gen = this.#gen;
    this.#inFlight++;
    gen.inFlight++;
    // piscina.run enqueues synchronously, so #pump sees the new queue size at once.
    return (gen.piscina.run(task) as Promise<RenderResult>).then(
      (r) => {
        this.#settled(gen);
        return this.#received(r);
      },
      (err: unknown) => {
        this.#settled(gen);
        return workerFailed(err);
      },
    );
  }

  #runBatch(tasks: readonly RenderTask[]): Promise<RenderResult[]> {
    const gen = this.#gen;
    this.#inFlight++;
    gen.inFlight++;
    // Message bytes move to the worker rather than being cloned: a Buffer read from a socket is
    // usually a view into a larger ArrayBuffer, and a structured clone copies all of that. One
    // exact-size copy here, then a transfer (measured: the clone was ~15 % of the delivery thread
    // at 100 KB per message). Tasks sharing one source (a campaign's template, one per recipient)
    // share one copy: it crosses once, and the worker sees the same bytes for each.
    const transferList: ArrayBuffer[] = [];
    const owned = new Map<Uint8Array, Uint8Array<ArrayBuffer>>();
    const sent = tasks.map((t) => {
      if (typeof t.source === 'string') return t;
      let own = owned.get(t.source);
      if (own === undefined) {
        own = new Uint8Array(t.source.byteLength);
        own.set(t.source);
        owned.set(t.source, own);
        transferList.push(own.buffer);
      }
      return { ...t, source: own };
    });
    return (gen.piscina.run(sent, { name: 'renderBatch', transferList }) as Promise<RenderResult[]>).then(
      (results) => {
        this.#settled(gen);
        return results.map((r) => this.#received(r));
      },
      (err: unknown) => {
        // The worker died (out of memory, most likely) with copies of several callers, messages and
        // connections on it: each is run again on its own, so only one that kills a worker again
        // fails (and is deferred, not bounced: workerFailed). Started before this batch settles, so
        // a close() waiting for the pool to drain waits for them too.
        // Through the backpressure FIFO (#enqueue): straight to piscina, a full queue refused them at once.
        const alone = tasks.length > 1 ? Promise.all(tasks.map((t) => this.#enqueue(() => this.#run(t)))) : null;
        this.#settled(gen);
        if (alone) return alone;
        const failed = workerFailed(err);
        return tasks.map(() => failed);
      },
    );
  }

  #settled(gen: Generation): void {
    this.#inFlight--;
    gen.inFlight--;
    if (gen !== this.#gen && gen.inFlight === 0) this.#retire(gen);
    this.#pump();
    if (this.#idle && this.#inFlight === 0 && this.#waiting.length === 0 && this.#pending.length === 0) {
      this.#idle();
      this.#idle = null;
    }
  }

  #pump(): void {
    while (this.#waiting.length > 0 && this.#gen.piscina.queueSize < this.#maxQueue) (this.#waiting.shift() as () => void)();
  }

  #received(r: RenderResult): RenderResult {
    if (!r.ok) return r;
    this.#busyMs += r.renderMs;
    for (let i = 0; i < r.signMs.length; i++) {
      const ms = r.signMs[i] as number;
      this.#busyMs += ms;
      this.#onSigned?.(r.signatures[i] as DkimAlgorithm, ms / 1000);
    }
    // A Buffer view over the transferred memory (no copy), for callers that write it to a socket.
    const m = r.message;
    return { ...r, message: Buffer.from(m.buffer, m.byteOffset, m.byteLength) };
  }
}

/**
 * The result of a task whose worker failed (crashed, ran out of memory, or was terminated) instead of
 * answering: a failure of this host, not of the message's content, so its copy is tried again later.
 */
function workerFailed(err: unknown): RenderResult {
  return { ok: false, code: 'SLUICE_RENDER_WORKER_FAILED', message: `render worker failed: ${(err as Error)?.message ?? String(err)}` };
}
