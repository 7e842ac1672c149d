import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { addressDigest } from './address-digest.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/recordSoftBounce-1.lua: the address's current run of soft bounces. */
    recordSoftBounce(history: string, member: string, now: number, windowMs: number): Result<number, Context>;
    /** src/queue/lua/markDelivered-1.lua: 1 marked, 0 the address has no history. */
    markDelivered(history: string, member: string, now: number): Result<number, Context>;
  }
}

/**
 * The soft-bounce history of an address: its recent soft bounces, one member per message recipient
 * ("<msgId>:<idx>"), so a DSN that arrives twice for the same copy (a relay retrying, a provider
 * sending a second notice) counts once; and the 250s its copies got since ("d:<msgId>:<idx>",
 * written by the dispatcher through markDelivered). Only consecutive soft bounces count: a copy
 * that was delivered and did not bounce ends the run. A 250 alone proves nothing, since a remote MX
 * may accept a copy and bounce it by mail later, so the copy's own bounce takes its mark away
 * (recordSoftBounce-1.lua).
 *
 *   {r:<digest>}:soft   ZSET  "<msgId>:<idx>" → bounce time, "d:<msgId>:<idx>" → 250 time (ms)   TTL = window
 *
 * named by the address's salted digest (store/address-digest.ts), so the key name holds no address.
 */

/** Records a soft bounce of a copy; returns the address's consecutive soft bounces within the window. */
export async function recordSoftBounce(
  redis: RedisClient,
  keys: Keys,
  address: string,
  member: string,
  now: number,
  windowMs: number,
): Promise<number> {
  const key = keys.softBounces(await addressDigest(redis, keys, address));
  return redis.recordSoftBounce(key, member, now, Math.max(1, Math.floor(windowMs)));
}

/** Notes a 250 for a copy: the address's run of soft bounces ends unless this copy bounces by mail later. */
export async function markDelivered(redis: RedisClient, keys: Keys, address: string, member: string, now: number): Promise<void> {
  await redis.markDelivered(keys.softBounces(await addressDigest(redis, keys, address)), member, now);
}

/** A member of the history that marks a 250 rather than a soft bounce. */
export function isDeliveryMark(member: string): boolean {
  return member.startsWith('d:');
}
