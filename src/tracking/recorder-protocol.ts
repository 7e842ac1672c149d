import type { TokenCodecOptions, TokenPayload } from '../core/tokens.js';
import type { ConnectOptions } from '../redis/client.js';
import type { TrackingSettings } from './deps.js';
import type { EventContext } from './record.js';

/**
 * The messages between the tracking server's main thread and its recorder thread (recorder.ts,
 * recorder-worker.ts). Plain data only: they cross by structured clone.
 */

/** What the recorder thread is started with (workerData). */
export interface RecorderInit {
  readonly connect: ConnectOptions;
  readonly prefix: string;
  readonly codec: TokenCodecOptions;
  readonly settings: TrackingSettings | undefined;
  readonly eventsMaxLen: number | undefined;
  readonly retentionMs: number | undefined;
  /** The thread's nice value (0 = the process's own). */
  readonly nice: number;
  /** event-batch.ts clickHoldMs. */
  readonly clickHoldMs: number;
  /** event-batch.ts opensPerRecipientMinute. */
  readonly opensPerRecipientMinute: number;
}

/**
 * Answered pixel requests, flattened: OPEN_FIELDS values per open (token, at, method, user agent,
 * ip). One array of strings and numbers clones in a fraction of the time an array of objects takes.
 */
export type OpenTuples = (string | number)[];
export const OPEN_FIELDS = 5;

/** Main → recorder. */
export type ToRecorder =
  | { readonly t: 'record'; readonly opens: OpenTuples; readonly events: readonly { readonly p: TokenPayload; readonly ctx: EventContext }[] }
  | { readonly t: 'settings'; readonly settings: TrackingSettings }
  | { readonly t: 'codec'; readonly codec: TokenCodecOptions }
  | { readonly t: 'close' };

/** Counter increments the recorder made, as [label, label, count]: applied to prom-client by the main thread. */
export type Counts = [string, string, number][];

/** Recorder → main. */
export type FromRecorder =
  | { readonly t: 'flushed'; readonly entries: number; readonly requests: Counts; readonly events: Counts }
  | { readonly t: 'log'; readonly msg: string; readonly err: string | undefined; readonly events: number | undefined };
