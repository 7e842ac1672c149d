import type { ChainableCommander, Result } from 'ioredis';
import { SluiceError } from '../core/errors.js';
import type { RedisClient } from '../redis/client.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/createHash-1.lua: 1 written, 0 the key was taken. */
    createHash(key: string, ttlMs: number, ...fieldsAndValues: (string | number | Buffer)[]): Result<number, Context>;
  }
}

/**
 * The two steps every store module repeats when it writes or reads a record: a MULTI that must
 * succeed whole (ioredis reports a failed command inside the result array, not as a rejection), and
 * a JSON field read leniently (a damaged field reads as its fallback, never throws on a read path).
 */

/** Runs the MULTI; throws SLUICE_REDIS_UNAVAILABLE (`what` as the message) when any command failed. */
export async function execAll(tx: ChainableCommander, what: string): Promise<void> {
  const res = await tx.exec();
  const failed = res?.find(([err]) => err);
  if (!res || failed) throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', what, { cause: failed?.[0] ?? undefined });
}

/**
 * Writes a new record's hash, with its expiry (0: none), only if the key is free: false when another
 * record has it, and then nothing is written. For records named by a random id (core/ids.ts withFreeId).
 */
export async function createRecord(redis: RedisClient, key: string, fields: Readonly<Record<string, string | number | Buffer>>, ttlMs = 0): Promise<boolean> {
  return (await redis.createHash(key, Math.max(0, Math.floor(ttlMs)), ...flatFields(fields))) === 1;
}

/** A record's fields as a script takes them: field, value, field, value, … */
export function flatFields<V>(fields: Readonly<Record<string, V>>): (string | V)[] {
  const flat: (string | V)[] = [];
  for (const [k, v] of Object.entries(fields)) flat.push(k, v);
  return flat;
}

/** A stored JSON field, or `fallback` when it is absent or not JSON. */
export function jsonOr<T>(text: string | undefined, fallback: T): T {
  if (text === undefined) return fallback;
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}
