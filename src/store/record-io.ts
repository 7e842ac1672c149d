import type { ChainableCommander } from 'ioredis';
import { SluiceError } from '../core/errors.js';

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

/** A stored JSON field, or `fallback` when it is absent or not JSON. */
export function jsonOr<T>(text: string | undefined, fallback: T): T {
  if (text === undefined) return fallback;
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}
