import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { flatFields, jsonOr } from './record-io.js';
import { toEngagement, type Engagement } from './engagement.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/campaignTransition-1.lua */
    campaignTransition(meta: string, to: CampaignState, field: string, now: number, ...from: CampaignState[]): Result<string, Context>;
    /** src/queue/lua/markCampaignQueued-1.lua */
    markCampaignQueued(meta: string, now: number): Result<string, Context>;
    /** src/queue/lua/recordEnqueueChunk-1.lua: 1 recorded, 0 recorded before. */
    recordEnqueueChunk(meta: string, chunk: number, next: number, queued: number, skipped: number): Result<number, Context>;
    /** src/queue/lua/finishCampaign-2.lua */
    finishCampaign(meta: string, stats: string, counter: string, reason: string, final: '0' | '1', now: number, hard: '0' | '1', undoDelivered: '0' | '1'): Result<string, Context>;
    /** src/queue/lua/createCampaign-3.lua: 1 stored, 0 the id was taken. */
    createCampaign(meta: string, body: string, links: string, template: string, linksJson: string, ...metaFieldsAndValues: (string | number)[]): Result<number, Context>;
  }
}

/**
 * A campaign is stored like a message, under its own hash tag, so the tracking server, the link
 * table, engagement counters and delivery records work for it unchanged (its id is the message id in
 * every token and queue entry; a recipient's index is their contact number in the campaign's list):
 *
 *   {m:<id>}:meta     HASH  kind=campaign, account, name, state, listId, from, fromDomain, subject,
 *                           tracking (JSON), tags (JSON), throttle (per hour, '' = none), times
 *                           (createdAt, sendAt, startedAt, pausedAt, cancelledAt, completedAt),
 *                           enqueuer progress (cursor = next contact number, chunk, enqueued),
 *                           counts (queued, skipped, pending), atLeast (recipients the enqueuer
 *                           is about to have queued, written before each chunk is pushed),
 *                           listGoneAt (the enqueuer found the list deleted before it was queued whole)
 *   {m:<id>}:body     STRING the prepared template (render/campaign.ts), rendered per recipient in the pool
 *   {m:<id>}:links    LIST  the template's click targets, extracted once
 *   {m:<id>}:stats    HASH  engagement counters (store/engagement.ts) and delivery counters (below)
 *   {m:<id>}:domains  SET   destinations with recipients queued (queue/campaign.ts)
 *   {a:<account>}:campaigns  ZSET id → createdAt
 *   campaigns:due            ZSET id → when the enqueuer should look at it
 *
 * Lifecycle:  draft ─► scheduled ─► sending ─► completed
 *                 │         │          │ ▲
 *                 │         │          ▼ │
 *                 │         │        paused ─► completed (when nothing is left)
 *                 └─────────┴──────────┴──────► cancelled
 */
export type CampaignState = 'draft' | 'scheduled' | 'sending' | 'paused' | 'completed' | 'cancelled';

export const CAMPAIGN_KIND = 'campaign';

export interface CampaignTracking {
  readonly opens: boolean;
  readonly clicks: boolean;
}

export interface CampaignRecord {
  readonly id: string;
  readonly account: string;
  readonly name: string;
  readonly state: CampaignState;
  readonly listId: string;
  readonly from: string;
  readonly fromDomain: string;
  readonly subject: string;
  readonly tracking: CampaignTracking;
  readonly tags: readonly string[];
  /** Messages per hour the campaign may send at most (over all destinations); null = no limit of its own. */
  readonly throttlePerHour: number | null;
  readonly createdAt: number;
  readonly sendAt: number | null;
  readonly startedAt: number | null;
  readonly pausedAt: number | null;
  readonly cancelledAt: number | null;
  readonly completedAt: number | null;
  /** The enqueuer's position: the next contact number to queue. */
  readonly cursor: number;
  /**
   * The list's last contact number when sending began: the campaign goes to the list as it was then
   * (contacts added while it sends are not part of it). null until the enqueuer's first chunk.
   */
  readonly lastNo: number | null;
  readonly chunk: number;
  /** The whole list has been queued. */
  readonly enqueued: boolean;
  /** Recipients queued so far. */
  readonly queued: number;
  /**
   * Recipients queued once the chunk being pushed is (written before the push, so never behind what
   * delivery can claim): a lower bound of the campaign's recipients while its list is still queueing.
   */
  readonly atLeast: number;
  /** Contacts left out when queueing: unsubscribed, bounced, complained or suppressed. */
  readonly skipped: number;
  /** Queued recipients not yet in a final state. */
  readonly pending: number;
  /**
   * When the enqueuer found the list deleted before it had queued it whole (null: it did not): the
   * campaign went to the recipients queued by then, maybe none.
   */
  readonly listGoneAt: number | null;
  /** Why the reputation guard paused it (null when it did not, or after a resume). */
  readonly guardPause: CampaignGuardPause | null;
  /** The counts the guard judges from (set at resume: a resumed campaign is judged on what it sends next). */
  readonly guardBase: { delivered: number; hardbounces: number; complaints: number } | null;
}

export interface CampaignGuardPause {
  readonly reason: 'complaints' | 'hardbounces';
  readonly at: number;
  readonly threshold: number;
  readonly delivered: number;
  readonly hardbounces: number;
  readonly complaints: number;
}

/** What a new campaign is stored with: its settings, the prepared template (the body) and its link table. */
export type NewCampaign = Pick<CampaignRecord, 'id' | 'account' | 'name' | 'listId' | 'from' | 'fromDomain' | 'subject' | 'tracking' | 'tags' | 'throttlePerHour' | 'createdAt'> & {
  /** null: a draft. A time: scheduled for then (now or earlier: sending at once). */
  readonly sendAt: number | null;
  /** The prepared template, stored as the body. */
  readonly body: string;
  readonly links: readonly string[];
};

const STATES: readonly CampaignState[] = ['draft', 'scheduled', 'sending', 'paused', 'completed', 'cancelled'];

function num(v: string | undefined): number | null {
  if (v === undefined || v === '') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

export function toCampaign(id: string, h: Readonly<Record<string, string>>): CampaignRecord | null {
  if (h['kind'] !== CAMPAIGN_KIND || !h['account']) return null;
  const state = STATES.includes(h['state'] as CampaignState) ? (h['state'] as CampaignState) : 'draft';
  return {
    id,
    account: h['account'],
    name: h['name'] ?? '',
    state,
    listId: h['listId'] ?? '',
    from: h['from'] ?? '',
    fromDomain: h['fromDomain'] ?? '',
    subject: h['subject'] ?? '',
    tracking: jsonOr<CampaignTracking>(h['tracking'], { opens: false, clicks: false }),
    tags: jsonOr<string[]>(h['tags'], []),
    throttlePerHour: num(h['throttle']),
    createdAt: num(h['createdAt']) ?? 0,
    sendAt: num(h['sendAt']),
    startedAt: num(h['startedAt']),
    pausedAt: num(h['pausedAt']),
    cancelledAt: num(h['cancelledAt']),
    completedAt: num(h['completedAt']),
    cursor: num(h['cursor']) ?? 1,
    lastNo: num(h['lastNo']),
    chunk: num(h['chunk']) ?? 0,
    enqueued: h['enqueued'] === '1',
    queued: num(h['queued']) ?? 0,
    atLeast: Math.max(num(h['atLeast']) ?? 0, num(h['queued']) ?? 0),
    skipped: num(h['skipped']) ?? 0,
    pending: num(h['pending']) ?? 0,
    listGoneAt: num(h['listGoneAt']),
    guardPause: jsonOr<CampaignGuardPause | null>(h['guardPause'], null),
    guardBase: jsonOr<CampaignRecord['guardBase']>(h['guardBase'], null),
  };
}

/**
 * Stores a new campaign, in one step and only under a free id: null when `c.id` is taken (an accepted
 * message or another campaign drew it too), and then nothing is written; the caller takes another id.
 */
export async function createCampaign(redis: RedisClient, keys: Keys, c: NewCampaign): Promise<CampaignRecord | null> {
  const state: CampaignState = c.sendAt === null ? 'draft' : 'scheduled';
  const meta: Record<string, string | number> = {
    kind: CAMPAIGN_KIND,
    account: c.account,
    name: c.name,
    state,
    listId: c.listId,
    from: c.from,
    fromDomain: c.fromDomain,
    subject: c.subject,
    tracking: JSON.stringify(c.tracking),
    tags: JSON.stringify(c.tags),
    throttle: c.throttlePerHour ?? '',
    createdAt: c.createdAt,
    sendAt: c.sendAt ?? '',
    cursor: 1,
    chunk: 0,
    enqueued: 0,
    queued: 0,
    skipped: 0,
    pending: 0,
  };
  // The account's index and the schedule are in other slots than the campaign ({a:…}, none), so no
  // one script writes all three. They are written first: a process killed after the campaign but
  // before them left it unlisted, and scheduled for ever with no enqueuer ever looking. Killed
  // before the campaign, it leaves an entry naming no campaign: listing passes over it and the
  // enqueuer drops it. NX: an id that turns out taken keeps its own entries.
  const listed = await redis.zadd(keys.accountCampaigns(c.account), 'NX', c.createdAt, c.id);
  const due = c.sendAt !== null ? await redis.zadd(keys.campaignsDue(), 'NX', c.sendAt, c.id) : 0;
  const stored = await redis.createCampaign(keys.msgMeta(c.id), keys.msgBody(c.id), keys.links(c.id), c.body, JSON.stringify(c.links), ...flatFields(meta));
  if (stored !== 1) {
    if (listed === 1) await redis.zrem(keys.accountCampaigns(c.account), c.id);
    if (due === 1) await redis.zrem(keys.campaignsDue(), c.id);
    return null;
  }
  // Once more: an enqueuer that looked before the script ran found no campaign and dropped the entry.
  if (c.sendAt !== null) await redis.zadd(keys.campaignsDue(), 'NX', c.sendAt, c.id);
  return toCampaign(c.id, await redis.hgetall(keys.msgMeta(c.id))) as CampaignRecord;
}

/** The campaign, if it exists and belongs to `account` (another account's id reads as unknown). */
export async function getCampaign(redis: RedisClient, keys: Keys, account: string | null, id: string): Promise<CampaignRecord | null> {
  const c = toCampaign(id, await redis.hgetall(keys.msgMeta(id)));
  if (!c || (account !== null && c.account !== account)) return null;
  return c;
}

/**
 * Every campaign of an account with the list it was sent to (its meta's listId, one HGET each,
 * auto-pipelined): what a list's deletion, an erasure and an account's purge need to find the
 * campaigns of a list without reading whole records.
 */
export async function campaignListIds(redis: RedisClient, keys: Keys, account: string): Promise<{ id: string; listId: string }[]> {
  const ids = await redis.zrange(keys.accountCampaigns(account), 0, -1);
  const listIds = await Promise.all(ids.map((id) => redis.hget(keys.msgMeta(id), 'listId')));
  return ids.flatMap((id, i) => (listIds[i] ? [{ id, listId: listIds[i] as string }] : []));
}

/** Every campaign of `account` sent (or to be sent) to `listId`. */
export async function campaignsOfList(redis: RedisClient, keys: Keys, account: string, listId: string): Promise<CampaignRecord[]> {
  const ids = (await campaignListIds(redis, keys, account)).filter((c) => c.listId === listId);
  const all = await Promise.all(ids.map((c) => getCampaign(redis, keys, account, c.id)));
  return all.filter((c): c is CampaignRecord => c !== null);
}

/**
 * The campaign will still read its list: not yet begun (a draft, scheduled), or its list not yet
 * queued whole. Its list deleted, it would complete with fewer recipients, or none, and say nothing.
 */
export function readsListYet(c: CampaignRecord): boolean {
  return c.state === 'draft' || c.state === 'scheduled' || ((c.state === 'sending' || c.state === 'paused') && !c.enqueued);
}

/** A page of an account's campaigns and where the next one starts (null after the last). */
export interface CampaignPage {
  readonly campaigns: CampaignRecord[];
  readonly cursor: string | null;
}

/**
 * A campaigns page's cursor: the creation time and id of the page's last campaign (its place in
 * {a:<account>}:campaigns, which orders by time, then id). It holds even when campaigns are added
 * meanwhile: a page starts right after the last one seen.
 */
const CAMPAIGN_CURSOR = /^(\d{1,16})-([0-9a-hjkmnp-tv-z]{16})$/;

export function isCampaignCursor(cursor: string): boolean {
  return CAMPAIGN_CURSOR.test(cursor);
}

/**
 * An account's campaigns, newest first: `limit` of them after `cursor` (a previous page's; none for
 * the first page), read with bounded ZREVRANGEBYSCORE … LIMIT calls. Campaigns created in the same
 * millisecond as the cursor's come in reverse id order, as the index keeps them.
 */
export async function listCampaigns(redis: RedisClient, keys: Keys, account: string, page: { limit?: number; cursor?: string | null } = {}): Promise<CampaignPage> {
  const limit = Math.max(1, Math.floor(page.limit ?? 100));
  const m = page.cursor ? CAMPAIGN_CURSOR.exec(page.cursor) : null;
  const after = m ? { at: Number(m[1]), id: m[2] as string } : null;
  const key = keys.accountCampaigns(account);
  // One more than the page, to tell whether another follows. Those of the cursor's millisecond that
  // come before it (ids at or above its own) are passed over: a few at most.
  const rows: { id: string; at: number }[] = [];
  for (let offset = 0; ; ) {
    const want = limit + 1 - rows.length;
    const flat = await redis.zrevrangebyscore(key, after ? after.at : '+inf', '-inf', 'WITHSCORES', 'LIMIT', offset, want);
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const id = flat[i] as string;
      const at = Number(flat[i + 1]);
      if (after && at === after.at && id >= after.id) continue;
      rows.push({ id, at });
    }
    offset += flat.length / 2;
    if (flat.length / 2 < want || rows.length > limit) break;
  }
  const shown = rows.slice(0, limit);
  const last = shown[shown.length - 1];
  const all = await Promise.all(shown.map((r) => getCampaign(redis, keys, account, r.id)));
  return { campaigns: all.filter((c): c is CampaignRecord => c !== null), cursor: rows.length > limit && last ? `${last.at}-${last.id}` : null };
}

/**
 * Fixes the campaign's recipients to the list as it is now (its last contact number), once: a
 * second call, after a restart or from another process, gets the number the first one recorded.
 */
export async function snapshotCampaignList(redis: RedisClient, keys: Keys, id: string, lastNo: number): Promise<number> {
  const meta = keys.msgMeta(id);
  await redis.hsetnx(meta, 'lastNo', Math.max(0, Math.floor(lastNo)));
  return num((await redis.hget(meta, 'lastNo')) ?? undefined) ?? lastNo;
}

/**
 * Before a chunk is pushed: the campaign will have at least `n` recipients queued (those counted so
 * far and the chunk's). Delivery may claim the chunk's copies before recordEnqueueChunk counts them;
 * the tracking mode of an anonymous campaign needs to know by then that it is not sent to a few.
 * The same `n` again after a crash mid-chunk: idempotent.
 */
export async function recordEnqueuePlan(redis: RedisClient, keys: Keys, id: string, n: number): Promise<void> {
  await redis.hset(keys.msgMeta(id), 'atLeast', n);
}

/**
 * Records one enqueue chunk: cursor and counts move together, once per chunk number (one script:
 * a chunk sent again, by ioredis after a lost reply or by a second process, is not counted twice).
 * Returns whether this call recorded it.
 */
export async function recordEnqueueChunk(redis: RedisClient, keys: Keys, id: string, o: { next: number; chunk: number; queued: number; skipped: number }): Promise<boolean> {
  return (await redis.recordEnqueueChunk(keys.msgMeta(id), o.chunk, o.next, o.queued, o.skipped)) === 1;
}

/** The enqueuer found the campaign's list deleted before it was queued whole (the first time is kept). */
export async function markListGone(redis: RedisClient, keys: Keys, id: string, now: number): Promise<void> {
  await redis.hsetnx(keys.msgMeta(id), 'listGoneAt', now);
}

/** The list is queued whole; returns the state after (completed when nothing is pending). */
export async function markCampaignQueued(redis: RedisClient, keys: Keys, id: string, now: number): Promise<CampaignState | null> {
  const s = await redis.markCampaignQueued(keys.msgMeta(id), now);
  return s === '' ? null : (s as CampaignState);
}

/** Delivery counters of a campaign's stats HASH (the engagement counters live in the same HASH). */
export type CampaignCounter = 'delivered' | 'deferred' | 'bounced' | 'expired' | 'suppressed' | 'cancelled' | 'complaints';

/**
 * Counts one outcome of a recipient (`reason` for bounces) and, when final, takes it off the pending
 * count; the last one completes the campaign. Returns the state after (null when not stored).
 */
export async function recordCampaignOutcome(
  redis: RedisClient,
  keys: Keys,
  id: string,
  o: { counter: CampaignCounter | null; reason?: string | undefined; final: boolean; now: number; hardbounce?: boolean; undoDelivered?: boolean },
): Promise<CampaignState | null> {
  const s = await redis.finishCampaign(keys.msgMeta(id), keys.msgStats(id), o.counter ?? '', o.reason ?? '', o.final ? '1' : '0', o.now, o.hardbounce === true ? '1' : '0', o.undoDelivered === true ? '1' : '0');
  return s === '' ? null : (s as CampaignState);
}

export interface CampaignStats {
  readonly recipients: number;
  readonly queued: number;
  readonly skipped: number;
  readonly pending: number;
  readonly delivered: number;
  /** Deferrals (attempts answered 4xx); a recipient deferred twice counts twice. */
  readonly deferred: number;
  readonly bounced: number;
  readonly bouncedByReason: Readonly<Record<string, number>>;
  readonly expired: number;
  readonly suppressed: number;
  readonly cancelled: number;
  readonly complaints: number;
  /** Hard bounces saying the address does not exist (at delivery or by mail later): what the reputation guard judges. */
  readonly hardbounces: number;
  readonly engagement: Engagement;
  /** Copies wait for a limit (noteCampaignWait) until then; null when none does now. */
  readonly waiting: CampaignWait | null;
}

/**
 * Why a campaign's copies wait behind its pointers: its own throttle or its account's quota or rate
 * limit (by config key), the limit, and until when (ms). Delivery notes it when it holds copies back.
 */
export interface CampaignWait {
  /** The campaign's own throttle, or the account's limit by its config key (accounts/limits.ts SendingLimitName: layers below may not import each other). */
  readonly by: 'throttle.perHour' | 'dailyQuota' | 'rateLimit.perSecond' | 'rateLimit.perMinute' | 'rateLimit.perHour';
  readonly limit: number;
  readonly until: number;
}

const WAIT_FIELDS = ['wait:by', 'wait:limit', 'wait:until'] as const;

/** Notes why and until when a campaign's copies wait (in its stats HASH; the latest hold wins). */
export async function noteCampaignWait(redis: RedisClient, keys: Keys, id: string, w: CampaignWait): Promise<void> {
  await redis.hset(keys.msgStats(id), WAIT_FIELDS[0], w.by, WAIT_FIELDS[1], w.limit, WAIT_FIELDS[2], w.until);
}

function waitOf(h: Record<string, string>, now: number): CampaignWait | null {
  const until = Number(h[WAIT_FIELDS[2]]);
  const limit = Number(h[WAIT_FIELDS[1]]);
  const by = h[WAIT_FIELDS[0]];
  if (!(until > now) || !by) return null;
  return { by: by as CampaignWait['by'], limit: Number.isFinite(limit) ? limit : 0, until };
}

export async function campaignStats(redis: RedisClient, keys: Keys, c: CampaignRecord, now = Date.now()): Promise<CampaignStats> {
  const h = await redis.hgetall(keys.msgStats(c.id));
  const n = (f: string): number => {
    const v = Number(h[f] ?? 0);
    return Number.isSafeInteger(v) && v > 0 ? v : 0;
  };
  const bouncedByReason: Record<string, number> = {};
  for (const [f, v] of Object.entries(h)) if (f.startsWith('bounced:')) bouncedByReason[f.slice(8)] = Number(v) || 0;
  return {
    recipients: c.queued + c.skipped,
    queued: c.queued,
    skipped: c.skipped,
    pending: Math.max(0, c.pending),
    delivered: n('delivered'),
    deferred: n('deferred'),
    bounced: n('bounced'),
    bouncedByReason,
    expired: n('expired'),
    suppressed: n('suppressed'),
    cancelled: n('cancelled'),
    complaints: n('complaints'),
    hardbounces: n('hardbounces'),
    engagement: toEngagement(h),
    // Only while it lasts, and only for a campaign still sending.
    waiting: c.state === 'sending' ? waitOf(h, now) : null,
  };
}
