import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { digestKey, digestWith, normaliseAddress } from './address-digest.js';

/**
 * Suppression lists: addresses that must not be mailed. One list per account (unsubscribes,
 * complaints, the account's own additions: a recipient who leaves one customer's list has not left
 * every list) and one global list ('*') for addresses that do not exist (userunknown, hostunknown).
 *
 *   {x:<account>}:suppressed  HASH  normalised address → JSON SuppressionEntry
 *                                   "erased:<digest>"  → JSON SuppressionEntry without evidence: the
 *                                   entry of an erased address (store/privacy.ts), kept as its salted
 *                                   digest (store/address-digest.ts) so it still blocks. No field of
 *                                   this kind contains '@', so it never collides with an address.
 *
 * Addresses are compared normalised: local part as written except that it is lower-cased (almost
 * every mailbox provider treats it case-insensitively, and a false "not suppressed" is the costly
 * mistake here), domain lower-case A-label.
 */
export const GLOBAL_LIST = '*';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/updateSuppression-1.lua: 1 written, 0 not on the list. */
    updateSuppression(list: string, field: string, entry: string): Result<number, Context>;
  }
}

export type SuppressionReason = 'unsubscribe' | 'complaint' | 'hardbounce' | 'softbounce' | 'manual';

export interface SuppressionEntry {
  readonly reason: SuppressionReason;
  /** ms since epoch */
  readonly at: number;
  /** Where it came from: an event id, a message id, a bounce status — never message content. */
  readonly evidence: Readonly<Record<string, string | number>>;
}

export function normaliseForSuppression(address: string): string {
  return normaliseAddress(address);
}

/** The field under which an erased address's entry is kept: its salted digest. */
export function erasedField(digest: string): string {
  return `erased:${digest}`;
}

/**
 * Writes `address`'s entry again (with the evidence that became known after it was added, such as
 * the event's id) only while it is still on `account`'s list; false, writing nothing, when it went
 * meanwhile (erased: kept as its digest; removed by an operator). updateSuppression-1.lua.
 */
export async function attachEvidence(redis: RedisClient, keys: Keys, account: string, address: string, entry: SuppressionEntry): Promise<boolean> {
  return (await redis.updateSuppression(keys.suppression(account), normaliseForSuppression(address), JSON.stringify(entry))) === 1;
}

/** Puts (or writes again) `address` on `account`'s list; true when it was not on that list before. */
export async function addSuppression(redis: RedisClient, keys: Keys, account: string, address: string, entry: SuppressionEntry): Promise<boolean> {
  return (await redis.hset(keys.suppression(account), normaliseForSuppression(address), JSON.stringify(entry))) === 1;
}

export async function removeSuppression(redis: RedisClient, keys: Keys, account: string, address: string): Promise<boolean> {
  return (await redis.hdel(keys.suppression(account), normaliseForSuppression(address))) === 1;
}

/** The entry that blocks `address` for `account`: the account's own, else the global one. */
export async function suppressionOf(redis: RedisClient, keys: Keys, account: string, address: string): Promise<(SuppressionEntry & { list: string }) | null> {
  return (await suppressionsOf(redis, keys, account, [address]))[0] ?? null;
}

function parseEntry(json: string, list: string): SuppressionEntry & { list: string } {
  try {
    return { ...(JSON.parse(json) as SuppressionEntry), list };
  } catch {
    // A damaged record still suppresses: mailing someone who asked not to be mailed is the worse error.
    return { reason: 'manual', at: 0, evidence: {}, list };
  }
}

/** A page of an account's list (HSCAN: bounded work per call). */
export async function listSuppressions(redis: RedisClient, keys: Keys, account: string, cursor = '0', count = 100): Promise<{ cursor: string; entries: (SuppressionEntry & { address: string })[] }> {
  const [next, flat] = await redis.hscan(keys.suppression(account), cursor, 'COUNT', count);
  const entries: (SuppressionEntry & { address: string })[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    try {
      entries.push({ address: flat[i] as string, ...(JSON.parse(flat[i + 1] as string) as SuppressionEntry) });
    } catch {
      entries.push({ address: flat[i] as string, reason: 'manual', at: 0, evidence: {} });
    }
  }
  return { cursor: next, entries };
}

export async function suppressionCount(redis: RedisClient, keys: Keys, account: string): Promise<number> {
  return redis.hlen(keys.suppression(account));
}

/**
 * Whether `address` was erased with a suppression kept (store/privacy.ts): an `erased:<digest>` entry
 * on `account`'s list or the global one. Without one, nothing tells an erased address from any other.
 */
export async function erasedSuppression(redis: RedisClient, keys: Keys, account: string, address: string): Promise<boolean> {
  const { own, global } = await lookUp(redis, keys, account, [normaliseForSuppression(address)]);
  return own[1] != null || global[1] != null;
}

/**
 * The account's and the global list's values for each normalised address, then for its digest
 * (`erased:<digest>`): [a1 … an, erased1 … erasedn] from each list, two HMGETs in all.
 */
async function lookUp(redis: RedisClient, keys: Keys, account: string, norm: readonly string[]): Promise<{ own: (string | null)[]; global: (string | null)[] }> {
  const key = await digestKey(redis, keys);
  const fields = [...norm, ...norm.map((a) => erasedField(digestWith(key, a)))];
  const [own, global] = await Promise.all([redis.hmget(keys.suppression(account), ...fields), redis.hmget(keys.suppression(GLOBAL_LIST), ...fields)]);
  return { own, global };
}

/**
 * The entry that blocks each of `addresses` for `account` (its own list, else the global one), null
 * where none does: two HMGETs however many addresses (the campaign enqueuer's chunks, the
 * dispatcher's claims, an import batch). Each address is looked up with its digest too: an erased
 * address is kept only so.
 */
export async function suppressionsOf(redis: RedisClient, keys: Keys, account: string, addresses: readonly string[]): Promise<((SuppressionEntry & { list: string }) | null)[]> {
  if (addresses.length === 0) return [];
  const norm = addresses.map(normaliseForSuppression);
  const { own, global } = await lookUp(redis, keys, account, norm);
  const n = norm.length;
  return norm.map((_, i) => {
    const mine = own[i] ?? own[n + i] ?? null;
    if (mine !== null) return parseEntry(mine, account);
    const all = global[i] ?? global[n + i] ?? null;
    return all === null ? null : parseEntry(all, GLOBAL_LIST);
  });
}
