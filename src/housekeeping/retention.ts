import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { idTime, isId } from '../core/ids.js';
import { listClosed, markDeleted } from '../store/account-state.js';
import { deleteWebhook, listWebhooks } from '../store/webhooks.js';
import { pausedScopes } from '../store/reputation.js';
import { deleteList, listLists } from '../store/contacts.js';
import { campaignListIds } from '../store/campaigns.js';
import { dropFeedback } from '../store/feedback-stored.js';
import { Ticker } from '../core/ticker.js';
import { streamField, streamIdTime } from '../store/events.js';
import { HOUR } from '../core/time.js';
import {
  beginPass, holdLock, purgeMessage, readSweepState, releaseLock, saveEventsCursor, saveNodeCursor, scanNodes, trimSortedSetBefore, trimStreamBefore,
} from '../store/retention.js';

/**
 * Retention: nothing is kept longer than its configured period, and a closed account's data goes
 * once its window has passed (DESIGN §7). Every step does bounded work and never blocks Redis:
 *
 *   step ─► lock (one process at a time) ─► trim event stream and audit log by age (≤ scanCount each)
 *        ─► trim the unprocessed-feedback index ─► detach due closed accounts (webhooks, pauses)
 *        ─► one SCAN page (COUNT scanCount) of the keyspace, cursor in Redis ─► judge each key
 *        ─► after the keyspace: walk the event stream (XRANGE pages) for due accounts' entries and
 *           those no export can find any more
 *        ─► pass complete: the accounts due when it began are deleted
 *
 * What the key walk removes (the rest expires by its own TTL, set when the data was written):
 *   {m:<id>}:meta (+ body, links, marks, counters)  of a due closed account (its marks left as the
 *                                   tombstone x:* = 'a' for retention.records, store/tombstone.ts); kept without a TTL
 *                                   (never finished: lost entries, held mail) past retention.records;
 *                                   or finished (its finishedAt) before retention.records, also when
 *                                   the period was shortened after the record's TTL was set
 *                                   (a campaign's record is not aged out: its account deletes it)
 *   {m:<id>}:<other part>           with its meta, as above; without its meta (an orphan of a crash)
 *                                   and without a TTL, after an hour
 *   {d:<domain>}:rs:<msgId>:<idx>   without a TTL past retention.records (pending for ever); finished
 *                                   (its updatedAt) before retention.records, as a message is; while
 *                                   an account is due, of its messages or campaigns, or without its meta
 *   {f:<id>}:raw                    received before retention.rawBounces (also when the period was
 *                                   shortened after the mail's TTL was set); named by a due
 *                                   account's events (the event walk)
 *   {a:<id>}:*, {x:<id>}:*          every key of a due closed account
 *   {m:<id>}:gone fields            a campaign's deleted contacts kept (store/privacy.ts keepCopiesFindable)
 *                                   longer than `refsMs` from their deletion (keepGone-3.lua: each
 *                                   deletion trims them too, but a campaign may have none for long)
 *   {l:<id>}:emails                 of a deleted list, kept for its campaigns' copies: its TTL cut to
 *                                   `refsMs` (its deletion time is not kept, so from this pass)
 * These apply a lowered retention to what was stored under the longer one.
 * What the event walk removes, with the raw feedback mail the entries name:
 *   a due closed account's entries
 *   entries about a message accepted more than `refsMs` ago whose record is gone: an open or a
 *                                   complaint comes after delivery, so retention.events may keep it
 *                                   past the address's reference to the message (store/address-index.ts),
 *                                   and then no export or erasure of the address can find it. Not an
 *                                   unsubscribe (a link that outlives the record writes one, found
 *                                   through its suppression's evidence, store/privacy.ts), nor one
 *                                   appended within the last hour (the webhook dispatcher may not have
 *                                   routed it yet)
 * Message ages come from the time inside their ids (core/ids.ts), so no read is needed to judge one
 * accepted within retention.records: nothing of it can have finished before the period began. Only
 * an older one's record is read, for when it finished: its TTL ran from then, and the period it ran
 * for may since have been lowered, so a shortened retention.records applies to data already stored
 * within one pass of the walk. A message accepted long ago may have finished recently (a scheduled
 * campaign, mail held while its account was closed): it is kept retention.records from its finish.
 */
export type PurgeKind = 'events' | 'audit' | 'messages' | 'records' | 'raw_bounces' | 'account_keys' | 'account_events' | 'accounts' | 'webhook_dead_letters';

export interface RetentionPeriods {
  readonly recordsMs: number;
  readonly eventsMs: number;
  readonly rawBouncesMs: number;
  readonly auditMs: number;
}

/**
 * Deletes what another store keeps for an account (contact lists, campaigns) when its deletion
 * begins; called once per step while the account is due, so it must be idempotent and bounded.
 * Returns how many records it removed (counted as 'account_keys').
 */
export type AccountPurger = (account: string) => Promise<number>;

export interface RetentionOptions {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly periods: RetentionPeriods;
  readonly intervalMs: number;
  readonly scanCount: number;
  readonly logger: Logger;
  readonly onPurged?: ((kind: PurgeKind, count: number) => void) | undefined;
  /** Stores outside the key walk's reach (their keys are not under {a:<id>} / {x:<id>}). */
  readonly accountPurgers?: readonly AccountPurger[] | undefined;
  /**
   * The longest a recipient stays queued (the largest shaping maxAge): a record finished before its
   * finish time was kept (no finishedAt) counts as finished this long after acceptance.
   */
  readonly queueMaxAgeMs: number;
  /** How long an address's reference to a message lives from its acceptance (ingress/persist.ts refsTtlMs). */
  readonly refsMs: number;
  readonly now?: (() => number) | undefined;
}

export interface StepResult {
  /** False when another process holds the lock (nothing was done). */
  readonly ran: boolean;
  readonly purged: Partial<Record<PurgeKind, number>>;
  /** True when this step finished a pass over the whole keyspace. */
  readonly passCompleted: boolean;
}

const MESSAGE_TAG = /^\{m:([^}]+)\}:(.+)$/;
/**
 * A message key without its meta is an orphan only when the message is older than this: the link
 * table is written just before the meta (ingress/accept.ts), so a fresh one briefly stands alone.
 */
const ORPHAN_GRACE_MS = HOUR;
/** The parts purgeMessage deletes; a store may add others under the tag (a campaign's domain set). */
const MESSAGE_PARTS = new Set(['meta', 'body', 'links', 'track', 'stats', 'gone', 'goneAt']);
const RECORD_TAG = /^\{d:[^}]+\}:rs:([^:]+):\d+$/;
const FEEDBACK_TAG = /^\{f:([^}]+)\}:raw$/;
/** An endpoint's dead-letter list: batches of events, which retention.events bounds as it bounds the stream. */
const WEBHOOK_DEAD_TAG = /^\{a:([^}]+)\}:wh:[^:]+:dead$/;
/**
 * Dead letters looked at per list and step, read DEAD_LETTERS_PAGE at a time from the head: they are
 * oldest first, so the walk nearly always stops at the first page (a batch may be 100 KB of JSON).
 */
const DEAD_LETTERS_PER_STEP = 1_000;
const DEAD_LETTERS_PAGE = 8;
const LIST_EMAILS_TAG = /^\{l:([^}]+)\}:emails$/;
const ACCOUNT_TAG = /^\{[ax]:([^}]+)\}:/;

/** What the walk judges a message by: its owner, kind, finish time (ms) and TTL (ms; -1 none, -2 gone). */
interface MetaFacts {
  readonly account: string | null;
  readonly kind: string | null;
  readonly finishedAt: number | null;
  readonly ttl: number;
}

async function readMeta(redis: RedisClient, key: string): Promise<MetaFacts> {
  const [[account, kind, finishedAt], ttl] = await Promise.all([redis.hmget(key, 'account', 'kind', 'finishedAt'), redis.pttl(key)]);
  return { account: account ?? null, kind: kind ?? null, finishedAt: finishedAt ? Number(finishedAt) : null, ttl };
}

export class RetentionJob {
  private readonly token = randomBytes(12).toString('base64url');
  private readonly now: () => number;
  private readonly ticker: Ticker;

  constructor(private readonly o: RetentionOptions) {
    this.now = o.now ?? Date.now;
    this.ticker = new Ticker(() => this.step(), o.intervalMs, (err) => o.logger.error({ err }, 'retention step failed'));
  }

  start(): void {
    this.ticker.start();
  }

  async stop(): Promise<void> {
    await this.ticker.stop();
    await releaseLock(this.o.redis, this.o.keys, this.token).catch(() => undefined);
  }

  /** One bounded step. Tests call it directly; start() calls it every intervalMs. */
  async step(): Promise<StepResult> {
    const { redis, keys, periods, scanCount } = this.o;
    const purged: Partial<Record<PurgeKind, number>> = {};
    const count = (kind: PurgeKind, n: number) => {
      if (n <= 0) return;
      purged[kind] = (purged[kind] ?? 0) + n;
      this.o.onPurged?.(kind, n);
    };
    // The lock outlives a few missed steps, so a process that died hands over within seconds.
    if (!(await holdLock(redis, keys, this.token, Math.max(10_000, this.o.intervalMs * 5)))) return { ran: false, purged, passCompleted: false };
    const now = this.now();

    count('events', await trimStreamBefore(redis, keys.events(), now - periods.eventsMs, scanCount));
    count('audit', await trimStreamBefore(redis, keys.audit(), now - periods.auditMs, scanCount));
    await trimSortedSetBefore(redis, keys.feedbackUnprocessed(), now - periods.rawBouncesMs, scanCount);

    const closed = (await listClosed(redis, keys)).filter((r) => r.deletedAt === null);
    const due = closed.filter((r) => r.purgeAt <= now);
    const dueIds = new Set(due.map((r) => r.account));
    // Closed, not yet due: their held mail never expires, and goes with the account (or is sent after a reopen).
    const heldIds = new Set(closed.filter((r) => r.purgeAt > now).map((r) => r.account));
    for (const r of due) count('account_keys', await this.detach(r.account));

    let state = await readSweepState(redis, keys);
    if (state.passStartedAt === 0) {
      await beginPass(redis, keys, now);
      state = await readSweepState(redis, keys);
    }
    const node = (await scanNodes(redis)).find((n) => state.cursors.get(n.name) !== 'done');
    if (node) {
      const [next, found] = await node.node.scan(state.cursors.get(node.name) ?? '0', 'MATCH', `${keys.prefix}*`, 'COUNT', scanCount);
      for (const [kind, n] of await this.judge(found, dueIds, heldIds, now)) count(kind, n);
      await saveNodeCursor(redis, keys, node.name, next === '0' ? 'done' : next);
      return { ran: true, purged, passCompleted: false };
    }
    if (state.eventsCursor !== 'done') {
      const from = state.eventsCursor === '' ? '-' : `(${state.eventsCursor}`;
      const page = (await redis.xrange(keys.events(), from, '+', 'COUNT', scanCount)) as [string, string[]][];
      const doomed = page.filter(([, flat]) => {
        const account = streamField(flat, 'account');
        return account !== undefined && dueIds.has(account);
      });
      const unfindable = await this.unfindable(page.filter((e) => !doomed.includes(e)), now);
      // The raw feedback mail its events name (bounces and complaints of its mail, which quote its
      // recipients) goes with it, though rawBounces may outlast the account's window or the reference.
      for (const fb of new Set([...doomed, ...unfindable].map(([, flat]) => streamField(flat, 'feedbackId')).filter((id): id is string => id !== undefined && id !== ''))) {
        count('raw_bounces', await dropFeedback(redis, keys, fb));
      }
      if (doomed.length > 0) count('account_events', await redis.xdel(keys.events(), ...doomed.map(([id]) => id)));
      if (unfindable.length > 0) count('events', await redis.xdel(keys.events(), ...unfindable.map(([id]) => id)));
      const last = page[page.length - 1];
      await saveEventsCursor(redis, keys, page.length < scanCount || !last ? 'done' : last[0]);
      return { ran: true, purged, passCompleted: false };
    }
    // The pass is over: an account due when it began has had every key and event looked at.
    for (const r of due) {
      if (r.purgeAt <= state.passStartedAt && (await markDeleted(redis, keys, r, now))) {
        count('accounts', 1);
        this.o.logger.info({ account: r.account, closedAt: new Date(r.closedAt).toISOString() }, 'closed account deleted');
      }
    }
    await beginPass(redis, keys, now);
    return { ran: true, purged, passCompleted: true };
  }

  /**
   * What of a due account lives outside its own keys: registrations in shared indexes (the webhook
   * dispatcher's endpoint set, the paused-senders index), its contact lists, and what other stores
   * register as accountPurgers. Idempotent; runs before the key walk can delete the indexes.
   */
  private async detach(account: string): Promise<number> {
    const { redis, keys } = this.o;
    let n = 0;
    for (const w of await listWebhooks(redis, keys, account)) if (await deleteWebhook(redis, keys, account, w.id)) n++;
    const scopes = await pausedScopes(redis, keys, account);
    if (scopes.length > 0) await redis.zrem(keys.pausedSenders(), ...scopes.map((s) => `${account}|${s}`));
    // Contact lists live under their own tags ({l:<id>}); the account's index names them.
    for (const list of await listLists(redis, keys, account)) if (await deleteList(redis, keys, account, list.id)) n++;
    // A deleted list that campaigns were sent to keeps its address index (contacts.ts deleteList):
    // its campaigns name it, and it goes with the account, before they do.
    for (const { listId } of await campaignListIds(redis, keys, account)) {
      if ((await redis.exists(keys.listMeta(listId))) === 0) n += await redis.unlink(keys.listEmails(listId));
    }
    for (const purge of this.o.accountPurgers ?? []) n += await purge(account);
    return n;
  }

  /**
   * Trims a campaign's deleted contacts kept past refsMs (keepGone-3.lua, at most 100 a call): calls
   * until one finds nothing more, or the step's bound (scanCount fields) is reached. Returns the
   * fields trimmed.
   */
  private async trimGone(campaignId: string, now: number): Promise<number> {
    const { redis, keys } = this.o;
    let trimmed = 0;
    for (;;) {
      const n = await redis.keepGone(keys.campaignGone(campaignId), keys.campaignGoneAt(campaignId), keys.trackMarks(campaignId), '', '', '', Math.floor(now), Math.max(1, Math.floor(this.o.refsMs)));
      trimmed += n;
      if (n === 0 || trimmed >= this.o.scanCount) return trimmed;
    }
  }

  /**
   * The entries about a message accepted more than refsMs ago whose record is gone (see the module
   * comment); a campaign's record is kept while its account keeps it, and a message finished late
   * keeps its record longer. One EXISTS per such message of the page (auto-pipelined).
   */
  private async unfindable(page: readonly [string, string[]][], now: number): Promise<[string, string[]][]> {
    const before = now - this.o.refsMs;
    const old = page.filter(([entry, flat]) => {
      const id = streamField(flat, 'msgId');
      return id !== undefined && isId(id) && idTime(id) < before && streamIdTime(entry) < now - ORPHAN_GRACE_MS && streamField(flat, 'type') !== 'unsubscribed';
    });
    const ids = [...new Set(old.map(([, flat]) => streamField(flat, 'msgId') as string))];
    const exists = await Promise.all(ids.map((id) => this.o.redis.exists(this.o.keys.msgMeta(id))));
    const gone = new Set(ids.filter((_, i) => exists[i] === 0));
    return old.filter(([, flat]) => gone.has(streamField(flat, 'msgId') as string));
  }

  /**
   * Whether a message's record (accepted at `born`) is past retention.records: finished before
   * `before`. One kept without a TTL has not finished: it may be queued until the queue's maximum
   * age (retried, or held by an operator), so it counts as finished then at the latest; mail held by
   * a closed account (`held`) never expires and goes with the account. A record finished before
   * finishedAt was kept counts as finished at the queue's maximum age too.
   */
  private finishedBefore(meta: MetaFacts, born: number, before: number, held: ReadonlySet<string>): boolean {
    if (meta.ttl === -1 && meta.account !== null && held.has(meta.account)) return false;
    if (meta.ttl === -1) return born + this.o.queueMaxAgeMs < before;
    return (meta.finishedAt ?? born + this.o.queueMaxAgeMs) < before;
  }

  /** Judges one SCAN page; returns what it deleted, by kind. */
  private async judge(found: readonly string[], dueIds: ReadonlySet<string>, heldIds: ReadonlySet<string>, now: number): Promise<Map<PurgeKind, number>> {
    const { redis, keys, periods } = this.o;
    const out = new Map<PurgeKind, number>();
    const add = (kind: PurgeKind, n: number) => out.set(kind, (out.get(kind) ?? 0) + n);
    const p = keys.prefix.length;
    const recordsBefore = now - periods.recordsMs;
    // A message's keys are several of one page, its records many (a campaign's, thousands): its meta
    // is read once per page.
    const metas = new Map<string, Promise<MetaFacts>>();
    const metaOf = (msgId: string): Promise<MetaFacts> => {
      let facts = metas.get(msgId);
      if (!facts) metas.set(msgId, (facts = readMeta(redis, keys.msgMeta(msgId))));
      return facts;
    };
    await Promise.all(
      found.map(async (key) => {
        const rest = key.slice(p);
        const msg = MESSAGE_TAG.exec(rest);
        if (msg) {
          const [, id, part] = msg as unknown as [string, string, string];
          if (!isId(id)) return;
          const born = idTime(id);
          if (dueIds.size === 0 && born >= recordsBefore) {
            // Stale only as an orphan (a key without its meta, older than the grace): nothing to read
            // for a younger message, nor for the meta itself, which the walk just found. Most keys
            // are one of those, and this runs over the whole keyspace all the time.
            if (born >= now - ORPHAN_GRACE_MS || part === 'meta') return;
            if ((await redis.exists(keys.msgMeta(id))) === 0 && (await redis.pttl(key)) === -1) add('messages', await redis.del(key));
            return;
          }
          const meta = await metaOf(id);
          if (meta.account !== null) {
            // A campaign's record is its account's object, kept until the account deletes it (or is deleted).
            const stale = dueIds.has(meta.account) || (meta.kind !== 'campaign' && born < recordsBefore && this.finishedBefore(meta, born, recordsBefore, heldIds));
            if (!stale) {
              if (part === 'goneAt' && meta.kind === 'campaign') add('records', await this.trimGone(id, now));
              return;
            }
            // One message counts once, whichever of its keys the walk met first. A due account's
            // leaves its tombstone (store/tombstone.ts), for retention.records: a bounce or complaint
            // about it that comes later is dropped, not kept as mail about nothing with its
            // recipient's address in it. One past retention.records leaves none: that is its end of
            // life, not a deletion (mail about it later is unmatched, as about any unknown message).
            const n = (await purgeMessage(redis, keys, id, dueIds.has(meta.account) ? periods.recordsMs : undefined)) + (MESSAGE_PARTS.has(part) ? 0 : await redis.del(key));
            if (n > 0) add('messages', 1);
            return;
          }
          if (born < now - ORPHAN_GRACE_MS && (await redis.pttl(key)) === -1) add('messages', await redis.del(key));
          return;
        }
        const rec = RECORD_TAG.exec(rest);
        if (rec) {
          const msgId = rec[1] as string;
          if (!isId(msgId)) return;
          if (idTime(msgId) < recordsBefore) {
            // Pending for ever (no TTL, and no attempt within the period and the queue's maximum age
            // after it: a campaign's copy is tried long after the campaign's id was made, when it
            // begins sending, and a copy may wait between attempts or under a hold; one held by a
            // closed account waits for the account), or final since before the period began: its
            // TTL ran from updatedAt, for the period of that time, which may have been longer.
            const [ttl, updatedAt] = await Promise.all([redis.pttl(key), redis.hget(key, 'updatedAt')]);
            const before = updatedAt === null || Number(updatedAt) < recordsBefore;
            const dead = ttl === -1 && (updatedAt === null || Number(updatedAt) + this.o.queueMaxAgeMs < recordsBefore);
            if ((dead && !heldIds.has((await metaOf(msgId)).account ?? '')) || (ttl > 0 && updatedAt !== null && before)) {
              add('records', await redis.del(key));
              return;
            }
          }
          if (dueIds.size > 0) {
            // A due account's records name its recipients (the remote's answers) and keep a TTL of
            // retention.records, which may outlast the account's window: they go with it. The meta
            // (a message's or campaign's) says whose a record is; one without its meta is an orphan
            // (a message's meta outlives its records), as when the walk took the meta first.
            const { account } = await metaOf(msgId);
            if (account === null ? idTime(msgId) < now - ORPHAN_GRACE_MS : dueIds.has(account)) add('records', await redis.del(key));
          }
          return;
        }
        if (FEEDBACK_TAG.test(rest)) {
          const receivedAt = Number((await redis.hget(key, 'receivedAt')) ?? 0);
          if (receivedAt < now - periods.rawBouncesMs) add('raw_bounces', await redis.del(key));
          return;
        }
        const dead = WEBHOOK_DEAD_TAG.exec(rest);
        if (dead && !dueIds.has(dead[1] as string)) {
          add('webhook_dead_letters', await trimDeadLetters(redis, key, now - periods.eventsMs));
          return;
        }
        const list = LIST_EMAILS_TAG.exec(rest);
        if (list) {
          if ((await redis.exists(keys.listMeta(list[1] as string))) === 0 && (await redis.pttl(key)) > this.o.refsMs) await redis.pexpire(key, this.o.refsMs);
          return;
        }
        const acct = ACCOUNT_TAG.exec(rest);
        if (acct && dueIds.has(acct[1] as string)) add('account_keys', await redis.del(key));
      }),
    );
    return out;
  }
}

/**
 * Drops the dead-lettered webhook batches (oldest first: the list is appended to) whose newest event
 * is older than `before`: copies of events the stream let go at retention.events. Each one by its
 * exact text (LREM): a replay that moved it meanwhile keeps what it took. An unreadable item (a hand
 * edit, a damaged restore: replay leaves it in place for the operator) is stepped over, not an end
 * of the walk, or the batches behind it would be kept for good. Returns the batches dropped.
 */
async function trimDeadLetters(redis: RedisClient, key: string, before: number): Promise<number> {
  let dropped = 0;
  // From the head: a batch dropped moves the next ones up; the unreadable ones stepped over stay
  // before the next page (`skipped`), and one young batch ends the walk.
  let skipped = 0;
  for (let looked = 0; looked < DEAD_LETTERS_PER_STEP; ) {
    const page = await redis.lrange(key, skipped, skipped + DEAD_LETTERS_PAGE - 1);
    let stale = false;
    for (const member of page) {
      looked++;
      let newest = 0;
      try {
        const batch = JSON.parse(member) as { e?: { id?: unknown }[] };
        for (const e of batch.e ?? []) if (typeof e.id === 'string') newest = Math.max(newest, streamIdTime(e.id));
      } catch {
        skipped++;
        continue;
      }
      if (newest >= before) return dropped;
      const removed = await redis.lrem(key, 1, member);
      // Taken meanwhile (a replay): the page is stale, read it again.
      if (removed === 0) {
        stale = true;
        break;
      }
      dropped += removed;
    }
    if (!stale && page.length < DEAD_LETTERS_PAGE) break;
  }
  return dropped;
}
