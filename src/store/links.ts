import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { execAll } from './record-io.js';

/**
 * A message's link table: the URLs its body really contains, in order, so a click token carries only
 * an index and the tracking server redirects only to what the sender wrote (never to a URL taken from
 * the request: no open redirect).
 *
 *   {m:<id>}:links  LIST  URL 0, URL 1, …   (same hash tag as the message: one slot with its marks)
 */

/** Writes the table once (replacing any earlier one) in one MULTI. */
export async function storeLinks(redis: RedisClient, keys: Keys, msgId: string, urls: readonly string[]): Promise<void> {
  const key = keys.links(msgId);
  const tx = redis.multi().del(key);
  if (urls.length > 0) tx.rpush(key, ...urls);
  await execAll(tx, 'the link table could not be stored');
}

/** URL number `index` of the message, or null when there is no such link. */
export async function linkAt(redis: RedisClient, keys: Keys, msgId: string, index: number): Promise<string | null> {
  if (!Number.isSafeInteger(index) || index < 0) return null;
  return redis.lindex(keys.links(msgId), index);
}
