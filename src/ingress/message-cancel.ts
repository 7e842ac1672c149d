import { Cluster } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { getMessage, toMeta, type MessageMeta } from '../store/messages.js';
import { appendEvent, packEvent } from '../store/events.js';
import { countOwedCopy } from '../store/copy-count.js';
import type { OwedCount } from '../redis/owed.js';
import { recipientStates, type RecipientStatus } from '../queue/status.js';
import { cancelWaiting } from '../queue/outcome.js';
import { parseMember } from '../queue/entry.js';
import { OUTCOME } from '../queue/outcome-codes.js';
import { messageStatus, type MessageStatus } from './message-status.js';

export interface CancelResult {
  /** Recipients taken out of the queue now. */
  readonly cancelled: number;
  /** Recipients being sent at that moment (leased): their delivery's outcome stands. */
  readonly sending: number;
  /** Each recipient's state after the cancel. */
  readonly status: MessageStatus;
}

interface CancelOptions {
  readonly now: number;
  readonly recordTtlMs: number;
  /** How long an address's reference lives (ingress/persist.ts refsTtlMs): see store/address-index.ts keepRefsOfLateFinish. */
  readonly refsTtlMs: number;
  readonly eventsMaxLen: number;
  /** The recipients' response (default: the message was cancelled). */
  readonly response?: string;
}

const RESPONSE = 'not sent: the message was cancelled';
/** A cancelled recipient's count on its message. */
const OWED: OwedCount = { counter: 'cancelled' };
/**
 * Cancels tried per recipient: each one that misses found the entry moved by delivery meanwhile (a
 * claim, an outcome), so a few more only happen while its copies are being tried again and again.
 */
const MAX_TRIES = 4;

/**
 * DELETE /v1/messages/:id: the recipients still waiting in the queue (queued, or deferred until their
 * next attempt) are taken out and finished as `cancelled` (no attempt counted), each with a
 * `cancelled` event, as a cancelled campaign's copies are; the message's record counts them off, so
 * it is kept retention.records like any finished message. A recipient being sent at that moment is
 * left to its delivery (deferred, it waits again: a later cancel takes it), and one already final
 * keeps its state. Null when the message does not exist
 * or is another account's (as for GET). A second cancel finds nothing left to cancel.
 */
export async function cancelMessage(redis: RedisClient, keys: Keys, id: string, accountId: string, o: CancelOptions): Promise<CancelResult | null> {
  const msg = await getMessage(redis, keys, id);
  if (!msg || msg.meta.account !== accountId) return null;
  const rcpts = recipientsOf(msg.meta);
  const counts = await cancelRecipients(redis, keys, id, accountId, rcpts, await recipientStates(redis, keys, id, rcpts), o);
  const status = await messageStatus(redis, keys, id, accountId);
  return status && { ...counts, status };
}

/** A message's recipients as recipientStates and cancelRecipients take them: index and destination. */
function recipientsOf(meta: MessageMeta): { idx: number; domain: string }[] {
  return meta.rcpts.map((r, idx) => ({ idx, domain: r.domain }));
}

/**
 * Cancels the waiting ones of `states` (the recipients' states as read before, by recipientStates).
 * Exported for tests, which move an entry between the read and the cancel.
 */
export async function cancelRecipients(
  redis: RedisClient,
  keys: Keys,
  id: string,
  accountId: string,
  rcpts: readonly { readonly idx: number; readonly domain: string }[],
  states: readonly RecipientStatus[],
  o: CancelOptions,
): Promise<{ cancelled: number; sending: number }> {
  // The outcome and its event in one script on a single server, as delivery's own outcomes are.
  const single = !(redis instanceof Cluster);
  let cancelled = 0;
  let sending = 0;
  await Promise.all(
    states.map(async (first) => {
      const rcpt = rcpts[first.idx] as { idx: number; domain: string };
      let s = first;
      for (let tries = 1; ; tries++) {
        if (s.state === 'sending') sending++;
        if (s.state !== 'queued' && s.state !== 'deferred') return;
        const fields = { msgId: id, idx: s.idx, account: accountId, domain: rcpt.domain, attempt: s.attempts, code: 0, enhanced: '', reason: 'cancelled' };
        const event = single ? { stream: keys.events(), maxLen: o.eventsMaxLen, packed: packEvent('cancelled', fields) } : undefined;
        const copy = { msgId: id, idx: s.idx, attempt: s.attempts, domain: rcpt.domain };
        const ttl = { recordsMs: o.recordTtlMs, refsMs: o.refsTtlMs };
        // The count is another call (another slot on a cluster): the cancel notes it owed (the
        // reaper makes it after a crash, or after a lost reply that ioredis sent again, whose repeat
        // answers NOOP), then it is made, once per copy, and the note cleared.
        const r = await cancelWaiting(redis, keys, copy, { now: o.now, response: o.response ?? RESPONSE, recordTtlMs: o.recordTtlMs, owe: OWED, ...(event ? { event } : {}) });
        if (r !== OUTCOME.NOOP) {
          cancelled++;
          // Counted off before the event on a cluster, so that a failed append cannot leave the
          // message pending for ever; the last one finishes it, held mail maybe long after its
          // acceptance: its references must then last as long as its record.
          await countOwedCopy(redis, keys, rcpt.domain, copy, OWED, o.now, ttl);
          if (!single) await appendEvent(redis, keys, 'cancelled', fields, o.eventsMaxLen);
          return;
        }
        // Not where the read saw it: claimed since (being sent now), or also deferred again or
        // given back, as the next attempt's member, which the read did not name. Read it again.
        if (tries === MAX_TRIES) {
          sending++;
          return;
        }
        s = (await recipientStates(redis, keys, id, [rcpt]))[0] as RecipientStatus;
      }
    }),
  );
  return { cancelled, sending };
}

export interface DestinationCancel {
  /** Recipients taken out of the queue now. */
  readonly cancelled: number;
  /** Recipients of those messages being sent to the destination at that moment: left to their delivery. */
  readonly sending: number;
  /** Messages that had recipients cancelled. */
  readonly messages: number;
  /** Campaigns with copies waiting or being sent here: left alone (a campaign is paused or cancelled as a whole). */
  readonly campaigns: number;
}

/** Members one ZSCAN step asks for. */
const SCAN_COUNT = 1_000;
/** Messages cancelled at once by cancelDestination: 5,000 one-recipient messages took 4.3 s one at a time, 0.67 s 32 at a time. */
const CANCEL_CONCURRENCY = 32;

/**
 * `sluice queue cancel --domain D` (an operator's postsuper -d for a destination that will never take
 * its mail): every message recipient waiting at destination `domain` is cancelled as DELETE
 * /v1/messages/:id cancels it (cancelRecipients: `cancelled`, no attempt counted, a `cancelled` event,
 * counted off its message), whatever the account. Those being sent at that moment are left to their
 * delivery and counted in `sending`. A campaign's copies are not touched: they are counted by
 * campaign, whose pause or cancel applies to all its copies. The destination's ready and lease sets
 * are read first (ZSCAN), then each message once; mail queued for it meanwhile is not cancelled.
 */
export async function cancelDestination(redis: RedisClient, keys: Keys, domain: string, o: CancelOptions): Promise<DestinationCancel> {
  const ids = new Set<string>();
  for (const key of [keys.ready(domain), keys.leases(domain)]) {
    let cursor = '0';
    do {
      const [next, flat] = await redis.zscan(key, cursor, 'COUNT', SCAN_COUNT);
      cursor = next;
      for (let i = 0; i < flat.length; i += 2) {
        const member = flat[i] as string;
        // '@<campaign id>': a campaign's pointer (its copies not expanded yet).
        const id = member.startsWith('@') ? member.slice(1) : parseMember(domain, member)?.msgId;
        if (id !== undefined) ids.add(id);
      }
    } while (cursor !== '0');
  }
  let cancelled = 0;
  let sending = 0;
  let messages = 0;
  let campaigns = 0;
  const cancelOne = async (id: string): Promise<void> => {
    // One read of the {m:<id>} hash: a message's metadata, or a campaign's (kind campaign), or nothing (purged since).
    const h = await redis.hgetall(keys.msgMeta(id));
    const meta = toMeta(id, h);
    if (!meta) {
      if (h['kind'] === 'campaign') campaigns++;
      return;
    }
    const rcpts = recipientsOf(meta);
    const here = rcpts.filter((r) => r.domain === domain);
    const r = await cancelRecipients(redis, keys, id, meta.account, rcpts, await recipientStates(redis, keys, id, here), o);
    if (r.cancelled > 0) messages++;
    cancelled += r.cancelled;
    sending += r.sending;
  };
  // CANCEL_CONCURRENCY messages at a time: their round trips share the connection's pipeline.
  const left = [...ids];
  const worker = async (): Promise<void> => {
    for (let id = left.pop(); id !== undefined; id = left.pop()) await cancelOne(id);
  };
  await Promise.all(Array.from({ length: Math.min(CANCEL_CONCURRENCY, left.length) }, worker));
  return { cancelled, sending, messages, campaigns };
}
