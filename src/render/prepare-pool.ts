/**
 * Campaign preparation off the ingress thread (POST /v1/campaigns): validating and compiling a
 * campaign's templates (render/campaign.ts) costs 0.3–0.7 s of CPU at the template limits, and on
 * the ingress thread every other request of the process (the API, SMTP submission) waited for it.
 * The work runs in prepare-worker.ts instead; the main thread only posts the input and receives the
 * prepared template.
 *
 * One thread: a flood of campaign creations then takes one core, not the render workers' or the
 * ingress thread's. It is started by the first preparation and ended after PREPARE_IDLE_MS without
 * one (campaigns are created now and then; an idle worker is memory for nothing). At most one
 * preparation runs and `queue` wait; one more is refused at once with SLUICE_INGRESS_BUSY (503 with
 * Retry-After), rather than holding its request for a wait without bound.
 */
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { SluiceError } from '../core/errors.js';
import type { CampaignInput, PreparedCampaign } from './campaign.js';
import type { PrepareResult } from './protocol.js';

export interface PreparePoolOptions {
  /** Preparations that may wait while one runs; default PREPARE_QUEUE. */
  queue?: number;
  /**
   * The worker's heap limit, MB (V8's old generation): a preparation that needs more fails alone
   * (its worker ends, the next preparation starts another) instead of taking the process's memory.
   * Default PREPARE_HEAP_MB.
   */
  maxHeapMb?: number;
  /** A preparation whose worker failed (crashed, ran out of heap, or threw something not a SluiceError). */
  onFailed?: (err: unknown) => void;
}

// Same extension as this file: '.ts' when run from source under tsx, '.js' when compiled (as pool.ts).
const WORKER_URL = new URL(`./prepare-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url).href;

/** Waiting preparations: at ~0.5 s each at the limits, the last one admitted waits a few seconds. */
const PREPARE_QUEUE = 4;
/** The worker ends after this long without a preparation. */
const PREPARE_IDLE_MS = 60_000;
/**
 * Four times what a template at the limits needs (render/campaign.ts MAX_*: a 1 MB one of 1,000
 * expressions, 900 links and 50 nested blocks is prepared within 32 MB, and not within 16 MB).
 */
const PREPARE_HEAP_MB = 128;

export class PreparePool {
  readonly #piscina: Piscina;
  readonly #admits: number;
  readonly #onFailed: PreparePoolOptions['onFailed'];
  /** Preparations admitted and not settled (the one running and those waiting), each with its abort. */
  readonly #active = new Set<AbortController>();
  #closing: Promise<void> | null = null;
  #idle: (() => void) | null = null;

  constructor(opts: PreparePoolOptions = {}) {
    this.#admits = 1 + Math.max(0, opts.queue ?? PREPARE_QUEUE);
    this.#onFailed = opts.onFailed;
    this.#piscina = new Piscina({
      filename: WORKER_URL,
      minThreads: 0,
      maxThreads: 1,
      idleTimeout: PREPARE_IDLE_MS,
      resourceLimits: { maxOldGenerationSizeMb: opts.maxHeapMb ?? PREPARE_HEAP_MB },
    });
    // A worker that failed with no task on it: one that could not start (it ran out of heap, or its
    // code failed to load). piscina keeps the waiting tasks for a worker that starts, which may be
    // never: they fail now instead, and the next preparation tries a new worker.
    this.#piscina.on('error', (err: unknown) => {
      this.#onFailed?.(err);
      for (const abort of this.#active) abort.abort(err);
    });
  }

  /**
   * The campaign validated and prepared (render/campaign.ts prepareCampaign), in the worker. Rejects
   * with what prepareCampaign throws (SLUICE_TEMPLATE_INVALID with every field's error), with
   * SLUICE_INGRESS_BUSY when `queue` preparations already wait, SLUICE_SHUTTING_DOWN once close()
   * was called, and SLUICE_RENDER_FAILED when the worker failed.
   */
  prepare(input: CampaignInput): Promise<PreparedCampaign> {
    if (this.#closing) return Promise.reject(new SluiceError('SLUICE_SHUTTING_DOWN', 'campaign preparation is closed'));
    if (this.#active.size >= this.#admits) return Promise.reject(new SluiceError('SLUICE_INGRESS_BUSY', 'Too many campaigns are being prepared at once, try again later'));
    const abort = new AbortController();
    this.#active.add(abort);
    return (this.#piscina.run(input, { signal: abort.signal }) as Promise<PrepareResult>).then(
      (r) => {
        this.#settled(abort);
        if (!r.ok) throw new SluiceError(r.code, r.message, { errors: r.errors });
        return { template: r.template, links: r.links };
      },
      (err: unknown) => {
        this.#settled(abort);
        // Aborted above: the worker's own error is the reason.
        const cause = abort.signal.aborted ? (abort.signal.reason as unknown) : err;
        if (!abort.signal.aborted) this.#onFailed?.(err);
        throw new SluiceError('SLUICE_RENDER_FAILED', `The campaign could not be prepared: its worker failed (${(cause as Error)?.message ?? String(cause)})`, { cause });
      },
    );
  }

  /** Refuses new preparations, lets the admitted ones finish, then ends the worker. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#active.size > 0) await new Promise<void>((resolve) => (this.#idle = resolve));
      await this.#piscina.close();
    })();
    return this.#closing;
  }

  #settled(abort: AbortController): void {
    this.#active.delete(abort);
    if (this.#active.size === 0 && this.#idle) {
      this.#idle();
      this.#idle = null;
    }
  }
}
