import type { Result } from 'ioredis';
import type { TokenPayload } from '../core/tokens.js';
import { appendEvent } from '../store/events.js';
import { anonymizeIp } from './anonymize-ip.js';
import { BURST_LINKS, BURST_WINDOW_MS, type MachineReason } from './classify.js';
import { DEFAULT_EVENTS_MAX_LEN, DEFAULT_RETENTION_MS, type TrackingDeps, type TrackingMode } from './deps.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/recordTrackingEvent-3.lua; idx '' is anonymous mode (counted, no mark). */
    recordTrackingEvent(
      marks: string, links: string, stats: string, kind: string, idx: number | '', link: number, now: number, burstMs: number, ttlMs: number, cls: '' | 'm', burstLinks: number,
    ): Result<[number, number, string | null], Context>;
  }
}

export interface Mark {
  readonly first: boolean;
  /** Distinct links the recipient clicked within the burst window (clicks only). */
  readonly burst: number;
  /** The link's URL (clicks only); null when the table holds no such link. */
  readonly url: string | null;
}

/**
 * Marks an open, click or unsubscribe in the message's marks hash: first or repeat, and for a click
 * the URL to redirect to, and counts it in the message's engagement counters, in one round trip. In
 * anonymous mode nothing per recipient is kept: the event is counted, nothing is "first". In off mode
 * a click only reads its URL. A `knownMachine` (classified before the mark: HEAD, a scanner's user
 * agent, a proxy) is marked apart, so it never uses up the recipient's first human event.
 * An unsubscribe is personal in every mode (see deps.ts).
 */
export async function mark(deps: TrackingDeps, p: TokenPayload, mode: TrackingMode, now: number, knownMachine = false): Promise<Mark> {
  if (mode === 'off' && p.kind !== 'u') {
    const url = p.kind === 'c' ? await deps.redis.lindex(deps.keys.links(p.msgId), p.link ?? 0) : null;
    return { first: false, burst: 0, url };
  }
  const personal = mode === 'full' || p.kind === 'u';
  const [first, burst, url] = await deps.redis.recordTrackingEvent(
    deps.keys.trackMarks(p.msgId), deps.keys.links(p.msgId), deps.keys.msgStats(p.msgId), p.kind, personal ? p.idx : '', p.link ?? 0, now,
    BURST_WINDOW_MS, deps.retentionMs ?? DEFAULT_RETENTION_MS, knownMachine ? 'm' : '', BURST_LINKS,
  );
  return { first: first === 1, burst, url: url ?? null };
}

export const TYPES = { o: 'opened', c: 'clicked', u: 'unsubscribed' } as const;
/** User agents are stored for diagnosis, not as data: 256 characters tell any client apart. */
const MAX_USER_AGENT_CHARS = 256;

/** What an event of a verified token is recorded with (besides the token's own ids). */
export interface EventContext {
  readonly now: number;
  readonly mode: TrackingMode;
  readonly first: boolean;
  readonly machine: MachineReason | null;
  readonly userAgent: string;
  readonly ip: string;
  readonly via?: string;
}

/**
 * The stream fields of a tracking event (after `type`). Fields are ids, classification and client
 * traits, never an address. Anonymous mode keeps only what aggregate counts need.
 */
export function eventFields(deps: TrackingDeps, p: TokenPayload, ctx: EventContext): Record<string, string | number> {
  const fields: Record<string, string | number> = { at: ctx.now, account: p.account, msgId: p.msgId };
  const personal = ctx.mode === 'full' || p.kind === 'u';
  if (personal) fields['idx'] = p.idx;
  if (p.link !== undefined) fields['link'] = p.link;
  if (ctx.mode === 'full') fields['first'] = ctx.first ? 1 : 0;
  fields['machine'] = ctx.machine ? 1 : 0;
  if (ctx.machine) fields['reason'] = ctx.machine;
  if (ctx.via) fields['via'] = ctx.via;
  if (personal) {
    const ip = anonymizeIp(ctx.ip, deps.anonymizeIp?.(p.account) ?? 'none');
    if (ip) fields['ip'] = ip;
    if (ctx.userAgent) fields['ua'] = ctx.userAgent.slice(0, MAX_USER_AGENT_CHARS);
  }
  return fields;
}

/** The `sluice_tracking_events_total` class of an event. */
export function eventClass(ctx: Pick<EventContext, 'first' | 'machine'>): 'machine' | 'human_first' | 'human' {
  return ctx.machine ? 'machine' : ctx.first ? 'human_first' : 'human';
}

/**
 * Appends one event of a verified token to the stream at once, and returns its id: for the rare
 * events whose caller needs the id (an unsubscribe). Opens and clicks go through event-batch.ts.
 */
export async function appendTrackingEvent(deps: TrackingDeps, p: TokenPayload, ctx: EventContext): Promise<string> {
  const id = await appendEvent(deps.redis, deps.keys, TYPES[p.kind], eventFields(deps, p, ctx), deps.eventsMaxLen ?? DEFAULT_EVENTS_MAX_LEN);
  deps.metrics?.events.inc({ type: TYPES[p.kind], class: eventClass(ctx) });
  return id;
}
