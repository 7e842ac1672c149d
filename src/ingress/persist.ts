import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { Config } from '../config/schema.js';
import { SluiceError } from '../core/errors.js';
import { storeMessage, deleteMessage, type NewMessage } from '../store/messages.js';
import { indexAddresses } from '../store/address-index.js';
import { enqueueRecipients } from '../queue/enqueue.js';

/**
 * How long an address's reference to a message must live (store/address-index.ts): the longest a
 * recipient can stay queued (the largest maxAge of any shaping rule), then the longest its records,
 * events or raw bounces are kept.
 */
export function refsTtlMs(config: Pick<Config, 'shaping' | 'retention'>): number {
  const maxAge = Math.max(config.shaping.default.maxAge, ...config.shaping.rules.map((r) => r.maxAge ?? 0));
  const r = config.retention;
  return maxAge + Math.max(r.records, r.events, r.rawBounces);
}

/** refsTtlMs of the default configuration (72 h maxAge + 90 d records), for callers without a config. */
const DEFAULT_INDEX_TTL_MS = (72 + 90 * 24) * 3_600_000;

/**
 * Persist, then enqueue — and only then resolve: the caller's 250/202 means "persisted and queued"
 * (DESIGN §2). The recipients' address index (for export and erasure) is written alongside the
 * message, in parallel, so it costs no extra round trip; a message is never accepted without it. If
 * any write fails the message record is removed again (best effort) before the error propagates, so a
 * refused submission leaves no orphan for the client's retry to duplicate; a queue entry that did get
 * written then finds no message and is dropped by delivery, and a stray index entry is skipped.
 *
 * Resolves false, having stored and queued nothing, when the id is already another message's (see
 * storeMessage): that record is left alone, and the caller persists again under a new id. The index
 * entries written meanwhile name the other message with this message's addresses, and are skipped
 * like any stray entry (store/privacy.ts checks the address at the index).
 */
export async function persistMessage(redis: RedisClient, keys: Keys, shards: number, msg: NewMessage, indexTtlMs: number = DEFAULT_INDEX_TTL_MS): Promise<boolean> {
  const refs = msg.rcpts.map((r, idx) => ({ address: r.address, ref: { kind: 'm' as const, msgId: msg.id, idx }, at: msg.acceptedAt }));
  const [stored, indexed] = await Promise.allSettled([storeMessage(redis, keys, msg), indexAddresses(redis, keys, refs, indexTtlMs)]);
  const ours = stored.status === 'fulfilled' && stored.value;
  if (stored.status === 'rejected' || indexed.status === 'rejected') {
    if (ours || stored.status === 'rejected') await deleteMessage(redis, keys, msg.id).catch(() => undefined);
    if (stored.status === 'rejected') throw stored.reason;
    if (ours) throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the message could not be indexed', { cause: (indexed as PromiseRejectedResult).reason });
  }
  if (!ours) return false;
  try {
    await enqueueRecipients(
      redis,
      keys,
      shards,
      msg.rcpts.map((r, idx) => ({ msgId: msg.id, idx, domain: r.domain, dueAt: msg.acceptedAt })),
    );
  } catch (err) {
    await deleteMessage(redis, keys, msg.id).catch(() => undefined);
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the message could not be queued', { cause: err });
  }
  return true;
}
