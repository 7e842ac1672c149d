import { Cluster, type Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { addressDigest, digestKey, digestWith } from './address-digest.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/recordSoftBounce-1.lua: the address's current run of soft bounces. */
    recordSoftBounce(history: string, member: string, now: number, windowMs: number): Result<number, Context>;
    /** src/queue/lua/markDelivered-1.lua: how many copies were marked (their address has a history). */
    markDelivered(history: string, member: string, now: number): Result<number, Context>;
    markDeliveredKeys(numberOfKeys: number, ...keysThenArgs: (string | number)[]): Result<number, Context>;
  }
}

/**
 * The soft-bounce history of an address: its recent soft bounces, one member per message recipient
 * ("<msgId>:<idx>"), so a DSN that arrives twice for the same copy (a relay retrying, a provider
 * sending a second notice) counts once; and the 250s its copies got since ("d:<msgId>:<idx>",
 * written by the dispatcher through DeliveryMarks). Only consecutive soft bounces count: a copy
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

/** Marks gathered before they are written: at most this long… */
const MARKS_DELAY_MS = 50;
/** …or this many. */
const MARKS_BATCH = 500;

/**
 * Notes 250s for copies (markDelivered-1.lua): each address's run of soft bounces ends unless that
 * copy bounces by mail later. The dispatcher notes every 250: the marks of the copies delivered within
 * MARKS_DELAY_MS go to Redis together, in one script call on a single server (one call per copy on a
 * cluster, where the histories are in different slots). One call per delivery cost ~10 % of the
 * delivered rate in bench/e2e.ts (a write, a Redis wake-up and a reply each). A mark not yet written
 * when the process dies is lost: the address's next soft bounce then counts as consecutive with the
 * one before (at worst it is suppressed one soft bounce early).
 */
export class DeliveryMarks {
  #pending: { address: string; member: string; now: number }[] = [];
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    private readonly onError: (err: unknown) => void,
  ) {}

  add(address: string, member: string, now: number): void {
    this.#pending.push({ address, member, now });
    if (this.#pending.length >= MARKS_BATCH) void this.flush();
    else this.#timer ??= setTimeout(() => void this.flush(), MARKS_DELAY_MS);
  }

  /** Writes what is gathered; resolves once every mark added before the call is written (or failed). */
  flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#pending;
    this.#pending = [];
    if (batch.length > 0) this.#writing = this.#writing.then(() => this.#write(batch)).catch(this.onError);
    return this.#writing;
  }

  async #write(batch: readonly { address: string; member: string; now: number }[]): Promise<void> {
    const key = await digestKey(this.redis, this.keys);
    const histories = batch.map((m) => this.keys.softBounces(digestWith(key, m.address)));
    if (this.redis instanceof Cluster) {
      await Promise.all(batch.map((m, i) => this.redis.markDelivered(histories[i] as string, m.member, m.now)));
      return;
    }
    await this.redis.markDeliveredKeys(batch.length, ...histories, ...batch.flatMap((m) => [m.member, m.now]));
  }
}

/** A member of the history that marks a 250 rather than a soft bounce. */
export function isDeliveryMark(member: string): boolean {
  return member.startsWith('d:');
}
