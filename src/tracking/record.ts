import { memoize } from '../core/memo.js';
import type { TokenPayload } from '../core/tokens.js';
import { appendEvent } from '../store/events.js';
import { anonymizeIp } from './anonymize-ip.js';
import { BURST_LINKS, BURST_WINDOW_MS, type MachineReason } from './classify.js';
import { anonymizationOf, DEFAULT_EVENTS_MAX_LEN, DEFAULT_RETENTION_MS, type TrackingDeps, type TrackingMode, type TrackingSettings } from './deps.js';

export interface Mark {
  readonly first: boolean;
  /** Distinct links the recipient clicked within the burst window (clicks only). */
  readonly burst: number;
  /** The link's URL (clicks only); null when the table holds no such link. */
  readonly url: string | null;
  /** Distinct links in the window from which a click is a burst (fewer for a mail with fewer links). */
  readonly burstLimit: number;
  /** The recipient was erased: nothing was written, and no event may be. */
  readonly erased: boolean;
  /** Start (ms) of the recipient's burst window (a person's click), else 0: see EventContext.burstSince. */
  readonly burstSince: number;
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
    return { first: false, burst: 0, url, burstLimit: BURST_LINKS, erased: false, burstSince: 0 };
  }
  const personal = mode === 'full' || p.kind === 'u';
  const [first, burst, url, burstLimit, erased, burstSince] = await deps.redis.recordTrackingEvent(
    deps.keys.trackMarks(p.msgId), deps.keys.links(p.msgId), deps.keys.msgStats(p.msgId), deps.keys.msgMeta(p.msgId), p.kind, personal ? p.idx : '', p.link ?? 0, now,
    BURST_WINDOW_MS, deps.retentionMs ?? DEFAULT_RETENTION_MS, knownMachine ? 'm' : '', BURST_LINKS, p.idx,
  );
  return { first: first === 1, burst, url: url ?? null, burstLimit: burstLimit ?? BURST_LINKS, erased: erased === 1, burstSince: burstSince ?? 0 };
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
  /**
   * The client's address as it may be stored: anonymised (storedIp) by whoever made the context,
   * under the account's setting when the request was answered; '' stores none.
   */
  readonly ip: string;
  readonly via?: string;
  /**
   * A click classified 'burst': the start (ms) of the window whose clicks made the burst. The
   * recipient's earlier first clicks from then on, held back for that reason (event-batch.ts), are
   * written as the scanner's too. Not written itself.
   */
  readonly burstSince?: number;
}

/**
 * The stream fields of a tracking event (after `type`), flat: [field, value, field, value, …]. Fields
 * are ids, classification and client traits, never an address. Anonymous mode keeps only what
 * aggregate counts need. Flat strings because a batch of thousands a second is packed straight from
 * them (packTrackingEvent).
 */
/**
 * The client address an event of `account` may keep, by the account's IP anonymisation in `settings`:
 * applied when the request is answered (or reaches the recorder thread, in the order it was
 * answered), so that a reload that loosens the setting never reaches events taken under the old one.
 */
export function storedIp(settings: TrackingSettings | undefined, account: string, ip: string): string {
  return anonymizeIp(ip, anonymizationOf(settings, account));
}

export function eventFlat(p: TokenPayload, ctx: EventContext): string[] {
  const f: string[] = ['at', String(ctx.now), 'account', p.account, 'msgId', p.msgId];
  const personal = ctx.mode === 'full' || p.kind === 'u';
  if (personal) f.push('idx', String(p.idx));
  if (p.link !== undefined) f.push('link', String(p.link));
  if (ctx.mode === 'full') f.push('first', ctx.first ? '1' : '0');
  f.push('machine', ctx.machine ? '1' : '0');
  if (ctx.machine) f.push('reason', ctx.machine);
  if (ctx.via) f.push('via', ctx.via);
  if (personal) {
    if (ctx.ip) f.push('ip', ctx.ip);
    if (ctx.userAgent) f.push('ua', ctx.userAgent.slice(0, MAX_USER_AGENT_CHARS));
  }
  return f;
}

/** eventFlat as an object, for appendEvent. */
export function eventFields(p: TokenPayload, ctx: EventContext): Record<string, string> {
  const flat = eventFlat(p, ctx);
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
  return fields;
}

/**
 * One tracking event as appendEvents-2.lua takes it (store/events.ts packEvent's format):
 * JSON.stringify(['type', type, ...eventFlat(…)]), written out directly. It is the costliest step of
 * recording an open after the MAC, so the JSON is built as a string, with the escaped forms of the
 * strings that repeat (accounts, user agents) kept in a small cache. test/tracking/record.test.ts
 * checks it equals the JSON of eventFlat for every mode and kind.
 *
 * No lone-surrogate scan (packEvent's) is needed: the user agent is an HTTP header, which Node
 * decodes as latin1 (code units 0–255); the account was decoded from the token's UTF-8 (invalid
 * sequences become U+FFFD); everything else is digits, ids and fixed words.
 */
export function packTrackingEvent(p: TokenPayload, ctx: EventContext): string {
  const personal = ctx.mode === 'full' || p.kind === 'u';
  // msgId is base32 (the token decoder makes it): no escaping.
  let out = `["type","${TYPES[p.kind]}","at","${ctx.now}","account",${quoted(p.account)},"msgId","${p.msgId}"`;
  if (personal) out += `,"idx","${p.idx}"`;
  if (p.link !== undefined) out += `,"link","${p.link}"`;
  if (ctx.mode === 'full') out += ctx.first ? ',"first","1"' : ',"first","0"';
  out += ctx.machine ? `,"machine","1","reason",${quoted(ctx.machine)}` : ',"machine","0"';
  if (ctx.via) out += `,"via",${quoted(ctx.via)}`;
  if (personal) {
    if (ctx.ip) out += `,"ip",${JSON.stringify(ctx.ip)}`;
    if (ctx.userAgent) out += `,"ua",${quoted(ctx.userAgent.slice(0, MAX_USER_AGENT_CHARS))}`;
  }
  return out + ']';
}

/** JSON string forms of recurring values (accounts, user agents, reasons). */
const quoted = memoize((s: string) => JSON.stringify(s), 1024);

/** The `sluice_tracking_events_total` class of an event. */
export function eventClass(ctx: Pick<EventContext, 'first' | 'machine'>): 'machine' | 'human_first' | 'human' {
  return ctx.machine ? 'machine' : ctx.first ? 'human_first' : 'human';
}

/**
 * Appends one event of a verified token to the stream at once, and returns its id: for the rare
 * events whose caller needs the id (an unsubscribe). Opens and clicks go through event-batch.ts.
 */
export async function appendTrackingEvent(deps: TrackingDeps, p: TokenPayload, ctx: EventContext): Promise<string> {
  const id = await appendEvent(deps.redis, deps.keys, TYPES[p.kind], eventFields(p, ctx), deps.eventsMaxLen ?? DEFAULT_EVENTS_MAX_LEN);
  // '' when dropped (the copy is being erased): not an event written, so not counted as one.
  if (id !== '') deps.metrics?.events.inc({ type: TYPES[p.kind], class: eventClass(ctx) });
  return id;
}
