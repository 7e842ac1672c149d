import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { toMeta, type MessageDsn, type MessageSource as Source } from './messages.js';
import { ByteLru } from '../core/lru.js';
import { CAMPAIGN_KIND, toCampaign, type CampaignState, type CampaignTracking } from './campaigns.js';
import { keepRefsOfLateFinish } from './address-index.js';
import { countCopy, type CopyCounted } from './copy-count.js';

/**
 * What delivery needs from the message store: the message of a queue entry, and a way to say one of
 * its recipients is finished (finishCopy-5.lua, once per copy: when the last one is, the body is deleted and the
 * record kept for `recordsTtlMs`, retention.records, so status queries keep answering; and when that
 * is later than its recipients' address index covers, the index is renewed: keepRefsOfLateFinish).
 */
export interface LoadedMessage {
  readonly id: string;
  readonly account: string;
  readonly kind: 'raw' | 'spec' | 'campaign';
  /** How a message came in (a campaign: undefined). */
  readonly source?: Source;
  /** SMTP submissions: the envelope sender ('' for <>), whom a failure is reported to. */
  readonly returnPath?: string;
  /** SMTP submissions that gave DSN parameters (RFC 3461): what their notices honour. */
  readonly dsn?: MessageDsn;
  /** Domain of the From header: selects the DKIM keys. */
  readonly fromDomain: string | null;
  /** The recipients of a message; empty for a campaign (its recipients are contacts of `campaign.listId`). */
  readonly rcpts: readonly { readonly address: string; readonly domain: string }[];
  /**
   * When the message was accepted (its retries expire counted from it), or the campaign started
   * sending (a campaign copy's expire counted from its own first attempt: dispatcher retriedSince).
   */
  readonly acceptedAt: number;
  /** Raw MIME, a JSON MessageSpec, or a campaign's prepared template. */
  readonly body: Buffer | string;
  /** Campaigns only: what delivery needs to know about the campaign, as of `loadedAt`. */
  readonly campaign?: LoadedCampaign;
}

export interface LoadedCampaign {
  readonly listId: string;
  readonly state: CampaignState;
  readonly tracking: CampaignTracking;
  readonly throttlePerHour: number | null;
  /** Recipients the campaign queued, once its whole list is queued; null before (the count still grows). */
  readonly recipients: number | null;
  /** While `recipients` is null: it will be at least this many (CampaignRecord.atLeast). */
  readonly atLeast: number;
}

export interface MessageSource {
  /** null when the message is no longer stored (purged, erased, or all recipients finished). */
  load(msgId: string): Promise<LoadedMessage | null>;
  /**
   * Instead of countCopy(), when the caller finished the recipient at `now` in a script of its own (ack
   * on a single server, queue/outcome.ts ackAndFinish) and got the message's pending count back.
   */
  finishedElsewhere(msgId: string, pending: number, now: number): Promise<void>;
  /**
   * Counts copy `idx`'s final outcome (delivered, bounced, expired, …) on its message or campaign
   * once, however often it is asked (store/copy-count.ts countCopy), the outcome having noted the
   * count as owed.
   */
  countCopy(copy: { readonly msgId: string; readonly idx: number }, c: { readonly counter: string; readonly reason?: string | undefined; readonly hard?: boolean }, now: number): Promise<CopyCounted>;
}

/**
 * Loaded messages kept on the delivery thread: a message with many recipients (a 1,000-recipient
 * submission, a campaign) is read from Redis and parsed once, not once per recipient.
 */
const CACHE_ENTRIES = 512;
const CACHE_BYTES = 64 * 1024 * 1024;
/**
 * A campaign's state can change under delivery (pause, cancel): a cached campaign is read again after
 * this long, which bounds how long claims already made keep sending after a pause (new claims stop at
 * once: pausing removes the campaign's pointers from the ready sets).
 */
const CAMPAIGN_FRESH_MS = 500;

interface Cached {
  readonly msg: LoadedMessage;
  readonly byteLength: number;
  readonly loadedAt: number;
}

/**
 * `refsTtlMs`: how long an address's reference lives from its score (ingress/persist.ts refsTtlMs),
 * to tell a message that finished too late for the references written at its acceptance.
 */
export function createMessageSource(redis: RedisClient, keys: Keys, recordsTtlMs: number, refsTtlMs: number): MessageSource {
  const cache = new ByteLru<Cached>(CACHE_ENTRIES, CACHE_BYTES);
  const ttl = { recordsMs: recordsTtlMs, refsMs: refsTtlMs };
  /** The message's pending count after a recipient finished at `now`: 0 when it was the last. */
  async function after(msgId: string, pending: number, now: number): Promise<void> {
    if (pending <= 0) cache.delete(msgId);
    if (pending === 0) await keepRefsOfLateFinish(redis, keys, msgId, now, ttl);
  }
  const loading = new Map<string, Promise<LoadedMessage | null>>();

  async function read(msgId: string): Promise<LoadedMessage | null> {
    // Record and body: two commands in one write (auto-pipelined; same slot, so the same node). Not a
    // script: Redis copies every argument and reply of a script through Lua strings, which made a
    // 10 KB body's load cost ~40 µs of Redis CPU against ~12 µs for the two plain commands (~260
    // against ~65 µs at 100 KB). If the last recipient finishes in between, the body is gone and the
    // message reads as no longer stored, as it would a moment later. The body stays bytes.
    const [metaHash, body] = await Promise.all([redis.hgetall(keys.msgMeta(msgId)), redis.getBuffer(keys.msgBody(msgId))]);
    if (metaHash['kind'] === CAMPAIGN_KIND) {
      const c = toCampaign(msgId, metaHash);
      if (!c || !body) return null;
      return {
        id: c.id,
        account: c.account,
        kind: 'campaign',
        fromDomain: c.fromDomain || null,
        rcpts: [],
        acceptedAt: c.startedAt ?? c.createdAt,
        // Bytes: the pool copies a body shared by a batch's tasks once, a string once per task.
        body,
        campaign: { listId: c.listId, state: c.state, tracking: c.tracking, throttlePerHour: c.throttlePerHour, recipients: c.enqueued ? c.queued : null, atLeast: c.atLeast },
      };
    }
    const m = toMeta(msgId, metaHash);
    if (!m || !body) return null;
    return {
      id: m.id,
      account: m.account,
      kind: m.kind,
      source: m.source,
      ...(m.returnPath !== undefined ? { returnPath: m.returnPath } : {}),
      ...(m.dsn !== undefined ? { dsn: m.dsn } : {}),
      fromDomain: m.fromDomain || null,
      rcpts: m.rcpts,
      acceptedAt: m.acceptedAt,
      // Bytes for both kinds: a spec's JSON is decoded in the render worker, not on this thread.
      body,
    };
  }

  return {
    async load(msgId) {
      const hit = cache.get(msgId);
      if (hit && (hit.msg.kind !== 'campaign' || Date.now() - hit.loadedAt < CAMPAIGN_FRESH_MS)) return hit.msg;
      // Concurrent loads of one message (its recipients in one claimed batch) share one read.
      let p = loading.get(msgId);
      if (!p) {
        p = read(msgId).finally(() => loading.delete(msgId));
        loading.set(msgId, p);
      }
      const msg = await p;
      if (msg && (msg.rcpts.length > 1 || msg.kind === 'campaign')) cache.set(msgId, { msg, byteLength: msg.body.length + msg.rcpts.length * 64, loadedAt: Date.now() });
      return msg;
    },
    finishedElsewhere: after,
    async countCopy(copy, c, now) {
      const r = await countCopy(redis, keys, copy, c, now, ttl);
      if (r.kind === 'message' && r.pending <= 0) cache.delete(copy.msgId);
      return r;
    },
  };
}
