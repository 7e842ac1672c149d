import type { Logger } from 'pino';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { TokenCodec } from '../core/tokens.js';
import { DAY } from '../core/time.js';
import type { IpAnonymization } from './anonymize-ip.js';

/**
 * Per-account tracking modes:
 *   full       per-recipient events (recipient index, first/repeat, user agent, IP as anonymised)
 *   anonymous  aggregate counting only: events carry the message but no recipient, user agent or IP,
 *              and no per-recipient marks are kept
 *   off        nothing recorded (delivery adds no pixel and rewrites no link; old links still work)
 * An unsubscribe is personal by nature and is always honoured and recorded, in every mode.
 */
export type TrackingMode = 'full' | 'anonymous' | 'off';

/** The tracking metrics app/ passes in (prom-client Counter/Histogram fit these shapes). */
export interface TrackingMetrics {
  /** sluice_tracking_requests_total{endpoint,result} */
  readonly requests: { inc(labels: { endpoint: string; result: string }, value?: number): void };
  /** sluice_tracking_events_total{type,class} */
  readonly events: { inc(labels: { type: string; class: string }, value?: number): void };
  /** sluice_tracking_request_duration_seconds{endpoint} */
  readonly duration: { observe(labels: { endpoint: string }, seconds: number): void };
}

export interface TrackingDeps {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly codec: TokenCodec;
  readonly logger: Logger;
  readonly metrics?: TrackingMetrics;
  /** ms since epoch; tests pin it. */
  readonly now?: () => number;
  readonly anonymizeIp?: (account: string) => IpAnonymization;
  readonly mode?: (account: string) => TrackingMode;
  /** XADD MAXLEN of the event stream (config retention.eventsMaxLen). */
  readonly eventsMaxLen?: number;
  /** How long per-recipient marks are kept (config retention.records). */
  readonly retentionMs?: number;
}

/** The config defaults, for callers that do not pass them. */
export { DEFAULT_EVENTS_MAX_LEN } from '../store/events.js';
export const DEFAULT_RETENTION_MS = 90 * DAY;
