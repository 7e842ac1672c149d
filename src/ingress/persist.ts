import { Cluster } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { Config } from '../config/schema.js';
import { SluiceError } from '../core/errors.js';
import { storeMessage, deleteMessage, messageWrite, storeWithBody, type NewMessage } from '../store/messages.js';
import { indexAddresses, refMember } from '../store/address-index.js';
import { digestKey, digestWith } from '../store/address-digest.js';
import { enqueueRecipients, planEnqueue } from '../queue/enqueue.js';
import { appendEvent, eventArgs } from '../store/events.js';

/** The longest a recipient can stay queued: the largest maxAge of any shaping rule. */
export function queueMaxAgeMs(config: Pick<Config, 'shaping'>): number {
  return Math.max(config.shaping.default.maxAge, ...config.shaping.rules.map((r) => r.maxAge ?? 0));
}

/**
 * How long an address's reference to a message must live (store/address-index.ts): the longest a
 * recipient can stay queued, then the longest its records, events or raw bounces are kept.
 */
export function refsTtlMs(config: Pick<Config, 'shaping' | 'retention'>): number {
  const r = config.retention;
  return queueMaxAgeMs(config) + Math.max(r.records, r.events, r.rawBounces);
}

/** refsTtlMs of the default configuration (72 h maxAge + 90 d records), for callers without a config. */
const DEFAULT_INDEX_TTL_MS = (72 + 90 * 24) * 3_600_000;

/** What persistMessage did: see there. */
export interface Persisted {
  readonly stored: boolean;
  readonly eventError?: unknown;
}

/**
 * Persist, then enqueue — and only then resolve: the caller's 250/202 means "persisted and queued"
 * (DESIGN §2). Along with the message go its link table and the recipients' address index (for
 * export and erasure): a message is never accepted without them.
 *
 * On a single server all of it is one atomic script (persistLocal). On Redis Cluster, where the keys
 * live in many slots (and for a message of thousands of recipients), the record (with its links) and
 * the index are written in parallel, then the queue. If any write fails the record is removed again
 * (best effort) before the error propagates, so a refused submission leaves no orphan for the
 * client's retry to duplicate; a queue entry that did get written then finds no message and is
 * dropped by delivery, and a stray index entry is skipped.
 *
 * Resolves stored: false, having stored and queued nothing, when the id is already another
 * message's (see storeMessage): that record is left alone, and the caller persists again under a new
 * id. On a cluster the index entries written meanwhile name the other message with this message's
 * addresses, and are skipped like any stray entry (store/privacy.ts checks the address at the index).
 *
 * With `eventsMaxLen`, the message's `accepted` event is appended too: in the script on a single
 * server; on a cluster after the queue, where a failure is returned as `eventError` and does not
 * undo the message, which is safe and queued by then.
 */
export async function persistMessage(
  redis: RedisClient,
  keys: Keys,
  shards: number,
  msg: NewMessage,
  indexTtlMs: number = DEFAULT_INDEX_TTL_MS,
  eventsMaxLen?: number,
): Promise<Persisted> {
  const items = msg.rcpts.map((r, idx) => ({ msgId: msg.id, idx, domain: r.domain, dueAt: msg.acceptedAt }));
  if (persistsAtomically(redis, msg.rcpts.length)) return { stored: await persistLocal(redis, keys, shards, msg, items, indexTtlMs, eventsMaxLen) };
  const refs = msg.rcpts.map((r, idx) => ({ address: r.address, ref: { kind: 'm' as const, msgId: msg.id, idx }, at: msg.acceptedAt }));
  const [stored, indexed] = await Promise.allSettled([storeMessage(redis, keys, msg), indexAddresses(redis, keys, refs, indexTtlMs)]);
  const ours = stored.status === 'fulfilled' && stored.value;
  if (stored.status === 'rejected' || indexed.status === 'rejected') {
    if (ours || stored.status === 'rejected') await deleteMessage(redis, keys, msg.id).catch(() => undefined);
    if (stored.status === 'rejected') throw stored.reason;
    if (ours) throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the message could not be indexed', { cause: (indexed as PromiseRejectedResult).reason });
  }
  if (!ours) return { stored: false };
  try {
    await enqueueRecipients(redis, keys, shards, items);
    // Said once the queue has it all (see persistedWhole): a process that dies before leaves a record
    // without it, which an Idempotency-Key retry must not answer for.
    await redis.hset(keys.msgMeta(msg.id), QUEUED_FIELD, '1');
  } catch (err) {
    await deleteMessage(redis, keys, msg.id).catch(() => undefined);
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the message could not be queued', { cause: err });
  }
  if (eventsMaxLen === undefined) return { stored: true };
  return appendEvent(redis, keys, 'accepted', acceptedFields(msg), eventsMaxLen).then(
    () => ({ stored: true }),
    (eventError: unknown) => ({ stored: true, eventError }),
  );
}

/** The record's field the general path sets once every recipient is queued. */
const QUEUED_FIELD = 'queued';

/** Whether a message of `recipients` is stored and queued by one script (persistLocal): on a single server, up to LOCAL_MAX_RECIPIENTS. */
function persistsAtomically(redis: RedisClient, recipients: number): boolean {
  return !(redis instanceof Cluster) && recipients <= LOCAL_MAX_RECIPIENTS;
}

/**
 * Whether stored message `id` (of `recipients` recipients) was persisted whole, queue included: on a
 * single server a message of up to LOCAL_MAX_RECIPIENTS is one atomic script, so its record says so
 * by being there; else the record is written first and marked once the queue has every recipient,
 * and a process that died between the two left a record that is not.
 */
export async function persistedWhole(redis: RedisClient, keys: Keys, id: string, recipients: number): Promise<boolean> {
  if (persistsAtomically(redis, recipients)) return true;
  return (await redis.hget(keys.msgMeta(id), QUEUED_FIELD)) === '1';
}

/** The `accepted` event's fields: ids and a count, never an address. */
function acceptedFields(msg: NewMessage): Record<string, string | number> {
  return { msgId: msg.id, account: msg.account, source: msg.source, recipients: msg.rcpts.length };
}

/**
 * Recipients of a message persistLocal takes (~4 arguments each, with at most 1,000 links: ~9,000
 * arguments). A call of tens of thousands of arguments overflows the stack in ioredis (it spreads
 * them), so a larger message (ingress.maxRecipients above the default) takes the general path, whose
 * commands are chunked.
 */
const LOCAL_MAX_RECIPIENTS = 2000;

/**
 * persistMessage on a single server: record, link table, address index, queue and event in one call
 * of storeMessage-3.lua, atomic, so there is nothing to undo when it fails.
 */
async function persistLocal(
  redis: RedisClient,
  keys: Keys,
  shards: number,
  msg: NewMessage,
  items: Parameters<typeof planEnqueue>[0],
  indexTtlMs: number,
  eventsMaxLen: number | undefined,
): Promise<boolean> {
  const plan = planEnqueue(items, shards);
  let digest: Buffer;
  try {
    digest = await digestKey(redis, keys);
  } catch (err) {
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the message could not be stored', { cause: err });
  }
  const event = eventsMaxLen === undefined ? [] : eventArgs('accepted', acceptedFields(msg));
  const w = messageWrite(keys, msg);
  const keyList: string[] = w.keys;
  const args = w.args;
  args.push(msg.rcpts.length, plan.ready.size, plan.schedule.size, msg.acceptedAt, Math.max(1, Math.floor(indexTtlMs)), event.length, eventsMaxLen ?? 0, ...event);
  msg.rcpts.forEach((r, idx) => {
    keyList.push(keys.addressRefs(digestWith(digest, r.address)));
    args.push(refMember({ kind: 'm', msgId: msg.id, idx }));
  });
  for (const [domain, pairs] of plan.ready) {
    keyList.push(keys.ready(domain));
    args.push(pairs.length, ...pairs);
  }
  for (const [shard, s] of plan.schedule) {
    keyList.push(keys.destinations(shard), keys.schedule(shard));
    args.push(s.scores.length, ...s.scores);
  }
  if (event.length > 0) keyList.push(keys.events());
  return storeWithBody(redis, keys, msg, keyList.length, [...keyList, ...args]);
}
