import type { Logger } from 'pino';
import type { ConnectOptions, RedisClient } from '../redis/client.js';
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
  /** sluice_tracking_connections_refused_total{reason}: client_limit, server_limit */
  readonly connectionsRefused?: { inc(labels: { reason: 'client_limit' | 'server_limit' }): void };
  /** sluice_tracking_pixels_held_total: pixel answers held back while the recorder is behind (server.ts). */
  readonly pixelsHeld?: { inc(): void };
  /** sluice_suppressions_added_total{list,reason}: a one-click unsubscribe suppresses for the account. */
  readonly suppressed?: { inc(labels: { list: 'account'; reason: 'unsubscribe' }): void };
}

export interface TrackingDeps {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly codec: TokenCodec;
  readonly logger: Logger;
  readonly metrics?: TrackingMetrics;
  /** ms since epoch; tests pin it. */
  readonly now?: () => number;
  /** Per-account tracking mode and IP anonymisation: plain data, so the recorder thread gets a copy. */
  readonly settings?: TrackingSettings;
  /** How the recorder thread (recorder.ts) opens a connection of its own to the same Redis. */
  readonly connect: ConnectOptions;
  /** XADD MAXLEN of the event stream (config retention.eventsMaxLen). */
  readonly eventsMaxLen?: number;
  /** How long per-recipient marks are kept (config retention.records). */
  readonly retentionMs?: number;
}

/** Tracking settings: `mode` and `anonymizeIp` for every account not listed in `accounts`. */
export interface TrackingSettings {
  readonly mode?: TrackingMode;
  readonly anonymizeIp?: IpAnonymization;
  readonly accounts?: ReadonlyMap<string, { readonly mode: TrackingMode; readonly anonymizeIp: IpAnonymization }>;
}

/** The per-account settings of a configuration's accounts. */
export function trackingSettingsOf(accounts: readonly { readonly id: string; readonly tracking: { readonly mode: TrackingMode; readonly anonymizeIp: IpAnonymization } }[]): TrackingSettings {
  return { accounts: new Map(accounts.map((a) => [a.id, { mode: a.tracking.mode, anonymizeIp: a.tracking.anonymizeIp }])) };
}

/**
 * An account the configuration does not name (a reload removed it since its mail went out) gets the
 * most private settings, never the permissive ones (trackingSettingsOf sets no default): its tokens
 * still verify (a click still leads to its link, an unsubscribe still works), but nothing about its
 * recipients is recorded.
 */
export function modeOf(settings: TrackingSettings | undefined, account: string): TrackingMode {
  return settings?.accounts?.get(account)?.mode ?? settings?.mode ?? (settings?.accounts ? 'off' : 'full');
}

export function anonymizationOf(settings: TrackingSettings | undefined, account: string): IpAnonymization {
  return settings?.accounts?.get(account)?.anonymizeIp ?? settings?.anonymizeIp ?? (settings?.accounts ? 'drop' : 'none');
}

/** The config defaults, for callers that do not pass them. */
export { DEFAULT_EVENTS_MAX_LEN } from '../store/events.js';
export const DEFAULT_RETENTION_MS = 90 * DAY;
