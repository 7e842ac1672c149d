import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';

/**
 * A message's link table: the URLs its body really contains, in order, so a click token carries only
 * an index and the tracking server redirects only to what the sender wrote (never to a URL taken from
 * the request: no open redirect).
 *
 *   {m:<id>}:links  LIST  URL 0, URL 1, …   (same hash tag as the message: one slot with its marks)
 *
 * Written with the message's record (store/messages.ts storeMessage), in the same script.
 */

/** URL number `index` of the message, or null when there is no such link. */
export async function linkAt(redis: RedisClient, keys: Keys, msgId: string, index: number): Promise<string | null> {
  if (!Number.isSafeInteger(index) || index < 0) return null;
  return redis.lindex(keys.links(msgId), index);
}
