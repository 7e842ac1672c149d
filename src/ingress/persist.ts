import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { SluiceError } from '../core/errors.js';
import { storeMessage, deleteMessage, type NewMessage } from '../store/messages.js';
import { enqueueRecipients } from '../queue/enqueue.js';

/**
 * Persist, then enqueue — and only then resolve: the caller's 250/202 means "persisted and queued"
 * (DESIGN §2). If queueing fails the message record is removed again (best effort) before the error
 * propagates, so a refused submission leaves no orphan for the client's retry to duplicate; a queue
 * entry that did get written then finds no message and is dropped by delivery.
 */
export async function persistMessage(redis: RedisClient, keys: Keys, shards: number, msg: NewMessage): Promise<void> {
  await storeMessage(redis, keys, msg);
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
}
