import { randomBytes } from 'node:crypto';
import { HOUR } from '../core/time.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { appendEvent } from './events.js';
import type { Result } from 'ioredis';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/liftPause-1.lua: the record removed, null when none, 0 when an operator's was kept. */
    liftPause(paused: string, scope: string, keepOperator: '1' | '0'): Result<string | null | 0, Context>;
    /** src/queue/lua/countReputation-2.lua: 1 counted, 0 the write id was counted before. */
    countReputation(bucket: string, call: string, ttlMs: number, keepMs: number, ...fieldIncrements: (string | number)[]): Result<number, Context>;
  }
}

/**
 * The reputation guard's records: rolling outcome counts and pause records of senders. The policy
 * (thresholds, when to pause) is feedback/reputation.ts; these records are here, one level down, so
 * that ingress (the API's resume) and delivery (the pause check at claim time) can read them too.
 *
 *   {a:<account>}:rep:<bucketStart>  HASH  "<scope>|<kind>" → count         (TTL: window + one bucket)
 *   {a:<account>}:repdone:<id>       STRING  a count made, by its call's id (countReputation-2.lua; TTL: its keep)
 *   {a:<account>}:paused             HASH  scope → JSON PauseRecord
 *   senders:paused                   ZSET  "<account>|<scope>" → paused at (ms)
 *
 * The index and a record may live on different Cluster slots, so no one step writes both. They are
 * ordered so that no crash between the two writes hides a pause: the index entry is written before
 * the record on pause and removed after it on resume. What a crash can leave is a phantom entry (no
 * record behind it), which the readers of the index (listPaused, pausedCount) check for and drop.
 *
 * A scope is '*' (the whole account) or a sending (From) domain. Buckets are one hour: a window of
 * W hours sums the current bucket, the W - 1 before it, and the share of the one before those that
 * the window still covers (the part of the hour not yet elapsed in the current bucket, rounded):
 * a sliding window of W hours, its oldest hour taken as evenly spread. A bucket lives W + 1 hours
 * from its start, so that oldest one is there. A count costs one HINCRBY per scope whatever the
 * volume. All keys of one account share its hash tag, so a record is one script on one slot, on Redis
 * Cluster too.
 */
export const ACCOUNT_SCOPE = '*';
export const BUCKET_MS = HOUR;
/** The longest window (7 days): resume clears this many buckets, whatever window the guard uses. */
export const MAX_WINDOW_HOURS = 168;

export type OutcomeKind = 'delivered' | 'hardbounce' | 'complaint';
const KINDS: readonly OutcomeKind[] = ['delivered', 'hardbounce', 'complaint'];

export interface Figures {
  readonly delivered: number;
  readonly hardbounces: number;
  readonly complaints: number;
  /** delivered + hard bounces: the mail that reached a receiver's verdict. */
  readonly sent: number;
  /** hardbounces / sent (0 when nothing was sent). */
  readonly hardBounceRate: number;
  /** complaints / delivered (complaints can only be about delivered mail). */
  readonly complaintRate: number;
}

/** Why a sender is paused: by the reputation guard for its rates, or by an operator's hand ('operator'). */
export type PauseReason = GuardReason | 'operator';
/** The reputation guard's reasons: the rate that crossed its threshold. */
export type GuardReason = 'complaints' | 'hardbounces';

export interface PauseRecord {
  readonly account: string;
  /** '*' (the whole account) or a sending domain. */
  readonly scope: string;
  readonly reason: PauseReason;
  /** ms since epoch */
  readonly at: number;
  readonly figures: Figures;
  /** The threshold that was crossed (a ratio, 0–1) and the window it was measured over (0 for an operator's pause). */
  readonly threshold: number;
  readonly windowHours: number;
  /** An operator's pause: who placed it (the audit log's actor) and why, in their words. */
  readonly by?: string;
  readonly note?: string;
}

export interface EventOptions {
  readonly now: number;
  readonly eventsMaxLen: number;
}

function bucketOf(now: number): number {
  return Math.floor(now / BUCKET_MS) * BUCKET_MS;
}

function scopeOf(domain: string | null): string {
  return domain === null || domain === '' ? ACCOUNT_SCOPE : domain.toLowerCase();
}

/**
 * How long a count's write id is kept (countReputation-2.lua), when the caller gives none of its own:
 * the client sends a write again as soon as it is connected again, so this covers a Redis out of
 * reach for that long after it ran the first. ~900 keys an account at one flush a second.
 */
export const WRITE_ID_KEEP_MS = 15 * 60_000;

/**
 * Counts one outcome for the account and, when given, its sending domain; once per `id` (kept `keepMs`)
 * however often it is sent. Without an id, a random one: a write the client sends again after a lost
 * reply counts once. Returns false when the id was counted before.
 */
export async function recordOutcome(
  redis: RedisClient,
  keys: Keys,
  o: { readonly account: string; readonly domain: string | null; readonly kind: OutcomeKind; readonly now: number; readonly count?: number; readonly undoDelivered?: boolean; readonly id?: string; readonly keepMs?: number },
  windowHours: number,
): Promise<boolean> {
  const bucket = bucketOf(o.now);
  const n = o.count ?? 1;
  const fields: (string | number)[] = [`${ACCOUNT_SCOPE}|${o.kind}`, n];
  const scope = scopeOf(o.domain);
  if (scope !== ACCOUNT_SCOPE) fields.push(`${scope}|${o.kind}`, n);
  // undoDelivered: these were counted delivered before (in this hour or an earlier one of the window).
  if (o.undoDelivered) {
    fields.push(`${ACCOUNT_SCOPE}|delivered`, -n);
    if (scope !== ACCOUNT_SCOPE) fields.push(`${scope}|delivered`, -n);
  }
  // Relative to `now`, so a pinned clock in the past never makes an already-expired key.
  const ttlMs = bucket + (windowHours + 1) * BUCKET_MS - o.now;
  const id = o.id ?? randomBytes(12).toString('base64url');
  return (await redis.countReputation(keys.reputation(o.account, bucket), keys.reputationDone(o.account, id), ttlMs, o.keepMs ?? WRITE_ID_KEEP_MS, ...fields)) === 1;
}

export function figuresOf(counted: number, hardbounces: number, complaints: number): Figures {
  // Hard bounces by mail take their copy off the delivered count; one delivered before the window leaves it short.
  const delivered = Math.max(0, counted);
  const sent = delivered + hardbounces;
  return {
    delivered,
    hardbounces,
    complaints,
    sent,
    hardBounceRate: sent === 0 ? 0 : hardbounces / sent,
    // Complaints about mail delivered before the window can outnumber deliveries in it: bound the
    // divisor below by one so the rate stays finite (and large, which is the truth).
    complaintRate: complaints === 0 ? 0 : complaints / Math.max(1, delivered),
  };
}

/** The figures of each scope over the window ending at `now`: one HMGET per bucket, pipelined. */
export async function readFigures(redis: RedisClient, keys: Keys, account: string, scopes: readonly string[], now: number, windowHours: number): Promise<Map<string, Figures>> {
  const fields = scopes.flatMap((s) => KINDS.map((k) => `${s}|${k}`));
  const last = bucketOf(now);
  const hours = Math.min(Math.max(1, Math.ceil(windowHours)), MAX_WINDOW_HOURS);
  // The W hours' buckets, and the one before them, of which the window still covers the rest of an hour.
  const rows = await Promise.all(Array.from({ length: hours + 1 }, (_, i) => redis.hmget(keys.reputation(account, last - i * BUCKET_MS), ...fields)));
  const covered = 1 - (now - last) / BUCKET_MS;
  const sums = new Array<number>(fields.length).fill(0);
  rows.forEach((row, r) => {
    const weight = r < hours ? 1 : covered;
    row.forEach((v, i) => (sums[i] = (sums[i] as number) + weight * (v === null ? 0 : Number(v) || 0)));
  });
  for (let i = 0; i < sums.length; i++) sums[i] = Math.round(sums[i] as number);
  const out = new Map<string, Figures>();
  scopes.forEach((s, i) => out.set(s, figuresOf(sums[3 * i] as number, sums[3 * i + 1] as number, sums[3 * i + 2] as number)));
  return out;
}

function parsePause(account: string, scope: string, json: string | null): PauseRecord | null {
  if (json === null) return null;
  try {
    return { ...(JSON.parse(json) as PauseRecord), account, scope };
  } catch {
    // A damaged record still pauses: sending on through a reputation problem is the worse error.
    return { account, scope, reason: 'complaints', at: 0, figures: figuresOf(0, 0, 0), threshold: 0, windowHours: 0 };
  }
}

/**
 * Pauses a sender (the whole account when `domain` is null) unless it is paused already, and appends
 * a 'sender_paused' event with the figures. Returns the new record, or null when it was paused before.
 */
export async function pauseSender(
  redis: RedisClient,
  keys: Keys,
  account: string,
  domain: string | null,
  reason: GuardReason,
  figures: Figures,
  detail: { readonly threshold: number; readonly windowHours: number },
  opts: EventOptions,
): Promise<PauseRecord | null> {
  const scope = scopeOf(domain);
  const record: PauseRecord = { account, scope, reason, at: opts.now, figures, threshold: detail.threshold, windowHours: detail.windowHours };
  const member = `${account}|${scope}`;
  // The index entry first (see the top): NX keeps an existing entry's time, and heals a missing one.
  await redis.zadd(keys.pausedSenders(), 'NX', opts.now, member);
  if ((await redis.hsetnx(keys.senderPaused(account), scope, JSON.stringify(record))) === 0) return null;
  // Again after the record: a reader that found no record yet may have dropped the entry meanwhile.
  await redis.zadd(keys.pausedSenders(), 'NX', opts.now, member);
  await appendEvent(redis, keys, 'sender_paused', {
    account,
    scope,
    ...(scope === ACCOUNT_SCOPE ? {} : { domain: scope }),
    reason,
    delivered: figures.delivered,
    hardbounces: figures.hardbounces,
    complaints: figures.complaints,
    sent: figures.sent,
    hardBounceRate: round(figures.hardBounceRate),
    complaintRate: round(figures.complaintRate),
    threshold: detail.threshold,
    windowHours: detail.windowHours,
  }, opts.eventsMaxLen);
  return record;
}

/**
 * An operator pauses a sender (the whole account when `domain` is null) by hand: abuse under
 * investigation, a customer's list that must not go out. Replaces a guard's pause of the same scope,
 * so that the account, which may lift the guard's pauses itself (POST /v1/sender/resume), cannot lift
 * this one: only an operator resumes it (resumeSender without keepOperator). Its mail waits, held
 * as for any pause. Appends a 'sender_paused' event (reason operator, by, note).
 */
export async function pauseByOperator(redis: RedisClient, keys: Keys, account: string, domain: string | null, who: { readonly by: string; readonly note: string }, opts: EventOptions): Promise<PauseRecord> {
  const scope = scopeOf(domain);
  const note = who.note.replace(/\s+/g, ' ').trim().slice(0, 200);
  const record: PauseRecord = { account, scope, reason: 'operator', at: opts.now, figures: figuresOf(0, 0, 0), threshold: 0, windowHours: 0, by: who.by, note };
  const member = `${account}|${scope}`;
  await redis.zadd(keys.pausedSenders(), 'NX', opts.now, member);
  await redis.hset(keys.senderPaused(account), scope, JSON.stringify(record));
  await redis.zadd(keys.pausedSenders(), 'NX', opts.now, member);
  await appendEvent(redis, keys, 'sender_paused', { account, scope, ...(scope === ACCOUNT_SCOPE ? {} : { domain: scope }), reason: 'operator', by: who.by, ...(note ? { note } : {}) }, opts.eventsMaxLen);
  return record;
}

/** The scopes of `account` (the one of `domain`, or all when null) that an operator paused. */
export async function operatorPaused(redis: RedisClient, keys: Keys, account: string, domain: string | null): Promise<string[]> {
  const all = await redis.hgetall(keys.senderPaused(account));
  return Object.entries(all)
    .filter(([scope, json]) => (domain === null || scope === scopeOf(domain)) && parsePause(account, scope, json)?.reason === 'operator')
    .map(([scope]) => scope);
}

/** Six significant decimals: enough for a 0.3 % threshold, short in the event. */
function round(ratio: number): number {
  return Math.round(ratio * 1e6) / 1e6;
}

/** The pause that stops `domain`'s mail of `account`: the account-wide one first, else the domain's. */
export async function isPaused(redis: RedisClient, keys: Keys, account: string, domain: string | null): Promise<PauseRecord | null> {
  const scope = scopeOf(domain);
  if (scope === ACCOUNT_SCOPE) return parsePause(account, ACCOUNT_SCOPE, await redis.hget(keys.senderPaused(account), ACCOUNT_SCOPE));
  const [all, own] = await redis.hmget(keys.senderPaused(account), ACCOUNT_SCOPE, scope);
  return parsePause(account, ACCOUNT_SCOPE, all ?? null) ?? parsePause(account, scope, own ?? null);
}

/**
 * Resumes a paused sender: the domain given, or every pause of the account when `domain` is null.
 * The figures of each resumed scope are cleared, so the guard judges the sender on what it sends
 * from now on, not again on the mail that paused it. Appends one 'sender_resumed' event per scope.
 * Returns the scopes that were paused and are not any more.
 */
export async function resumeSender(redis: RedisClient, keys: Keys, account: string, domain: string | null, by: string, opts: EventOptions & { readonly keepOperator?: boolean }): Promise<string[]> {
  const key = keys.senderPaused(account);
  const scopes = domain === null ? await redis.hkeys(key) : [scopeOf(domain)];
  const resumed: string[] = [];
  for (const scope of scopes) {
    // An operator's pause is not the account's to lift (the route for accounts keeps it): read and
    // removed in one step (liftPause-1.lua).
    const json = await redis.liftPause(key, scope, opts.keepOperator ? '1' : '0');
    if (typeof json !== 'string') continue;
    resumed.push(scope);
    const was = parsePause(account, scope, json);
    // The index entry after the record (see the top).
    await dropIndexEntry(redis, keys, account, scope, was && was.at > 0 ? was.at : opts.now);
    await clearFigures(redis, keys, account, scope, opts.now);
    await redis.multi().hset(keys.senderResumed(account), scope, opts.now).pexpire(keys.senderResumed(account), (MAX_WINDOW_HOURS + 1) * BUCKET_MS).exec();
    await appendEvent(redis, keys, 'sender_resumed', {
      account,
      scope,
      ...(scope === ACCOUNT_SCOPE ? {} : { domain: scope }),
      by,
      ...(was && was.at > 0 ? { pausedAt: was.at, reason: was.reason } : {}),
    }, opts.eventsMaxLen);
  }
  return resumed;
}

/**
 * When the sender (its account, or the From domain given) was last resumed, within the longest
 * window; 0 when not. A complaint or a bounce by mail of a copy delivered before then is about the
 * mail the pause judged, whose figures the resume cleared (feedback/reputation.ts).
 */
export async function resumedSince(redis: RedisClient, keys: Keys, account: string, domain: string | null): Promise<number> {
  const scope = scopeOf(domain);
  const [all, own] = await redis.hmget(keys.senderResumed(account), ACCOUNT_SCOPE, scope);
  return Math.max(Number(all ?? 0) || 0, scope === ACCOUNT_SCOPE ? 0 : Number(own ?? 0) || 0);
}

/**
 * Clears a scope's counts in every bucket a window can span. A domain's counts are also taken out
 * of the account's ('*'), which counted them too; resuming the account clears only its own fields,
 * since its domains were not judged guilty.
 */
async function clearFigures(redis: RedisClient, keys: Keys, account: string, scope: string, now: number): Promise<void> {
  const fields = KINDS.map((k) => `${scope}|${k}`);
  const last = bucketOf(now);
  await Promise.all(
    Array.from({ length: MAX_WINDOW_HOURS + 1 }, async (_, i) => {
      const key = keys.reputation(account, last - i * BUCKET_MS);
      const counts = await redis.hmget(key, ...fields);
      if (counts.every((c) => c === null)) return;
      const tx = redis.multi();
      if (scope !== ACCOUNT_SCOPE) {
        // HINCRBY by the negated count: increments made since the read survive.
        counts.forEach((c, k) => c !== null && tx.hincrby(key, `${ACCOUNT_SCOPE}|${KINDS[k] as OutcomeKind}`, -(Number(c) || 0)));
      }
      tx.hdel(key, ...fields);
      await tx.exec();
    }),
  );
}

/** The scopes of the account that are paused ('*' and/or sending domains). */
export async function pausedScopes(redis: RedisClient, keys: Keys, account: string): Promise<string[]> {
  return redis.hkeys(keys.senderPaused(account));
}

/** Paused senders: one account's, or every account's (from the index, at most `limit`, oldest first). */
export async function listPaused(redis: RedisClient, keys: Keys, account?: string, limit = 1000): Promise<PauseRecord[]> {
  if (account !== undefined) {
    const flat = await redis.hgetall(keys.senderPaused(account));
    return Object.entries(flat).map(([scope, json]) => parsePause(account, scope, json) as PauseRecord).sort((a, b) => a.at - b.at);
  }
  return indexedPauses(redis, keys, limit);
}

/** How many senders are paused now (for the sluice_senders_paused gauge): the index's entries that a record confirms. */
export async function pausedCount(redis: RedisClient, keys: Keys): Promise<number> {
  return (await indexedPauses(redis, keys, Infinity)).length;
}

// Index entries read per round trip; pauses are rare, so the whole index is a page or two.
const INDEX_PAGE = 500;

/**
 * The pauses the index names, oldest first, at most `limit`: each entry is checked against its
 * record, and an entry without one (left by a pause or resume that died between its two writes, or
 * malformed) is dropped from the index as it is met, so the gauge and the listing heal on read.
 */
async function indexedPauses(redis: RedisClient, keys: Keys, limit: number): Promise<PauseRecord[]> {
  const out: PauseRecord[] = [];
  let offset = 0;
  while (out.length < limit) {
    const page = await redis.zrange(keys.pausedSenders(), offset, offset + INDEX_PAGE - 1, 'WITHSCORES');
    if (page.length === 0) break;
    const entries = Array.from({ length: page.length / 2 }, (_, i) => ({ member: page[2 * i] as string, score: Number(page[2 * i + 1]) }));
    const records = await Promise.all(
      entries.map(({ member }) => {
        const bar = member.indexOf('|');
        return bar <= 0 ? null : redis.hget(keys.senderPaused(member.slice(0, bar)), member.slice(bar + 1));
      }),
    );
    let dropped = 0;
    for (const [i, { member, score }] of entries.entries()) {
      const bar = member.indexOf('|');
      const json = records[i] ?? null;
      if (json !== null && bar > 0) {
        if (out.length < limit) out.push(parsePause(member.slice(0, bar), member.slice(bar + 1), json) as PauseRecord);
        continue;
      }
      if (bar <= 0 ? (await redis.zrem(keys.pausedSenders(), member)) > 0 : await dropIndexEntry(redis, keys, member.slice(0, bar), member.slice(bar + 1), score)) dropped++;
    }
    if (entries.length < INDEX_PAGE) break;
    offset += entries.length - dropped;
  }
  return out;
}

/**
 * Removes a sender's index entry whose record is gone, and puts it back if the record is there
 * again by then: a pause written between the caller's read and the removal (its second ZADD may
 * have come before the removal) must not be left out of the index. True when the entry stays gone.
 */
async function dropIndexEntry(redis: RedisClient, keys: Keys, account: string, scope: string, score: number): Promise<boolean> {
  const member = `${account}|${scope}`;
  await redis.zrem(keys.pausedSenders(), member);
  if ((await redis.hexists(keys.senderPaused(account), scope)) === 0) return true;
  await redis.zadd(keys.pausedSenders(), 'NX', score, member);
  return false;
}

/**
 * What delivery and feedback need of the reputation guard (feedback/reputation.ts implements it;
 * roles cannot import each other, so they take this shape from app/).
 */
export interface ReputationRecorder {
  /** wasDelivered: a hard bounce by mail of a copy counted delivered (see feedback/reputation.ts OutcomeRecord). */
  record(o: { account: string; domain: string | null; kind: 'delivered' | 'hardbounce' | 'complaint'; wasDelivered?: boolean; deliveredAt?: number | undefined; id?: string }): Promise<unknown>;
  check(account: string, domain: string | null): Promise<{ reason: string } | null>;
  /** Judges a campaign after a complaint or hard bounce of one of its recipients (pauses it past the thresholds). */
  judgeCampaign?(campaignId: string): Promise<unknown>;
}
