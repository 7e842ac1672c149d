import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { digestKey, digestWith } from './address-digest.js';
import { getMessage } from './messages.js';
import { idTime, isId } from '../core/ids.js';

/**
 * Where an address's data is, so export and erase (store/privacy.ts) find it without walking every
 * message: per address (named by its salted digest, never the address)
 *
 *   {r:<digest>}:refs  ZSET  "m:<msgId>:<idx>"  → accepted (ms)   recipient idx of a message
 *                            "c:<campaignId>:<no>" → deleted (ms) a campaign copy of a deleted contact
 *                            "n:<noticeId>:0"   → queued (ms)   a failure notice to a sender that names
 *                                                              the address (its failed recipient: app/notices.ts)
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
  /** 'm': recipient idx of a message; 'c': contact number idx of a campaign's copies; 'n': a notice naming the address (idx 0). */
  readonly kind: 'm' | 'c' | 'n';
  readonly msgId: string;
  readonly idx: number;
}

export function refMember(ref: AddressRef): string {
  return `${ref.kind}:${ref.msgId}:${ref.idx}`;
}

export function parseRefMember(member: string): AddressRef | null {
  const m = /^([mcn]):(.+):(\d+)$/.exec(member);
  return m ? { kind: m[1] as AddressRef['kind'], msgId: m[2] as string, idx: Number(m[3]) } : null;
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

/**
 * Keeps the references of a message that finished just now (its last recipient) as long as its
 * record: the record is kept `recordsTtlMs` from now, its references `refsTtlMs` from acceptance,
 * which covers a finish up to the longest queue age after it. A message that finished later (mail
 * held while its account was closed or its sender paused, released days later; a queue backlog) would
 * otherwise outlive its references, and an export or erasure would miss it while it is still kept.
 * Its recipients' references are written again scored now (erased recipients are skipped: their
 * tombstone has no address). The age is in the id (core/ids.ts), so a message finished in time, all
 * but a few, costs no read. Returns the references written.
 */
export async function keepRefsOfLateFinish(redis: RedisClient, keys: Keys, msgId: string, now: number, ttl: { readonly recordsMs: number; readonly refsMs: number }): Promise<number> {
  if (!isId(msgId) || now + ttl.recordsMs <= idTime(msgId) + ttl.refsMs) return 0;
  const msg = await getMessage(redis, keys, msgId);
  if (!msg) return 0;
  const refs = msg.meta.rcpts.flatMap((r, idx) => (r.address ? [{ address: r.address, ref: { kind: 'm' as const, msgId, idx }, at: now }] : []));
  await indexAddresses(redis, keys, refs, ttl.refsMs);
  return refs.length;
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
