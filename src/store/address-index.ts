import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { digestKey, digestWith } from './address-digest.js';

/**
 * Where an address's data is, so export and erase (store/privacy.ts) find it without walking every
 * message: per address (named by its salted digest, never the address)
 *
 *   {r:<digest>}:refs  ZSET  "m:<msgId>:<idx>"  → accepted (ms)   recipient idx of a message
 *                            "c:<campaignId>:<no>" → deleted (ms) a campaign copy of a deleted contact
 *                      TTL  the longest the referenced data can live (ingress/persist.ts refsTtlMs), renewed on each write
 *
 * A reference lives that long from its score, and no longer: each write also trims the references
 * scored before that (queue/lua/lib/addRef.lua, at most 100 a write), so an address mailed daily for
 * years holds its last refsTtlMs of references, not all it ever had. The score is when the data's
 * lifetime began: its acceptance, or for a message that finished late (held mail released long after
 * its acceptance) its finish, moved there by keepRefsOfLateFinish.
 *
 * Campaign copies are not indexed when sent: they are found through the contact lists' address index
 * ({l:<id>}:emails), so a million-contact campaign costs nothing here. Only when a contact is deleted
 * are the copies it received indexed ("c:"), so an erasure still finds them (store/privacy.ts
 * keepCopiesFindable). A reference whose data is gone (purged, expired) is harmless: the reader
 * skips it.
 *
 * Cost at acceptance: one ZADD, one PEXPIRE and one ZCOUNT per recipient (~100 B of memory per
 * reference), in the message's own write (ingress/persist.ts: its script on a single server,
 * pipelined with it on a cluster), so no extra round trip on the accept path.
 */

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/addRef-1.lua */
    addRef(refs: string, at: number, member: string, ttlMs: number): Result<number, Context>;
  }
}

export interface AddressRef {
  /** 'm': recipient idx of a message; 'c': contact number idx of a campaign's copies. */
  readonly kind: 'm' | 'c';
  readonly msgId: string;
  readonly idx: number;
}

export function refMember(ref: AddressRef): string {
  return `${ref.kind}:${ref.msgId}:${ref.idx}`;
}

export function parseRefMember(member: string): AddressRef | null {
  const m = /^([mc]):(.+):(\d+)$/.exec(member);
  return m ? { kind: m[1] as 'm' | 'c', msgId: m[2] as string, idx: Number(m[3]) } : null;
}

/**
 * Adds references for (address, ref) pairs (any number of distinct addresses), or moves existing ones
 * later (a score never moves earlier), trimming each address's expired ones (addRef-1.lua). One call
 * per reference, which ioredis auto-pipelines per node: the addresses' keys live in different slots,
 * and an explicit pipeline across slots is refused on Redis Cluster.
 */
export async function indexAddresses(redis: RedisClient, keys: Keys, refs: readonly { readonly address: string; readonly ref: AddressRef; readonly at: number }[], ttlMs: number): Promise<void> {
  if (refs.length === 0) return;
  const key = await digestKey(redis, keys);
  const ttl = Math.max(1, Math.floor(ttlMs));
  await Promise.all(refs.map((r) => redis.addRef(keys.addressRefs(digestWith(key, r.address)), Math.floor(r.at), refMember(r.ref), ttl)));
}

/** The references of an address (all of them: an address's messages within the retention period). */
export async function readAddressRefs(redis: RedisClient, keys: Keys, digest: string): Promise<{ ref: AddressRef; member: string; at: number }[]> {
  const flat = await redis.zrange(keys.addressRefs(digest), 0, -1, 'WITHSCORES');
  const out: { ref: AddressRef; member: string; at: number }[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const ref = parseRefMember(flat[i] as string);
    if (ref) out.push({ ref, member: flat[i] as string, at: Number(flat[i + 1]) });
  }
  return out;
}
