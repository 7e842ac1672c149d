import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { addressDigest } from '../store/address-digest.js';

/**
 * The soft-bounce history of an address: a sliding window of its recent soft bounces, one member
 * per message recipient ("<msgId>:<idx>"), so a DSN that arrives twice for the same copy (a relay
 * retrying, a provider sending a second notice) counts once. "Consecutive" holds because a delivery
 * clears the history (clearSoftBounces, called by whoever sees the 250).
 *
 *   {x:*}:soft:<digest>  ZSET  "<msgId>:<idx>" → bounce time (ms)   TTL = window
 *
 * named by the address's salted digest (store/address-digest.ts), so the key name holds no address.
 */
export async function recordSoftBounce(
  redis: RedisClient,
  keys: Keys,
  address: string,
  member: string,
  now: number,
  windowMs: number,
): Promise<number> {
  const key = keys.softBounces(await addressDigest(redis, keys, address));
  const res = await redis
    .multi()
    .zadd(key, 'NX', now, member)
    .zremrangebyscore(key, '-inf', `(${now - windowMs}`)
    .zcard(key)
    .pexpire(key, Math.max(1, Math.floor(windowMs)))
    .exec();
  const count = res?.[2]?.[1];
  return typeof count === 'number' ? count : 0;
}

/** Forgets an address's soft bounces: it accepted mail, so the next ones start a new run. */
export async function clearSoftBounces(redis: RedisClient, keys: Keys, address: string): Promise<void> {
  await redis.del(keys.softBounces(await addressDigest(redis, keys, address)));
}
