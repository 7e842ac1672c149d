import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';

/**
 * What is left of a message once its record was removed by an erasure or an account deletion: the
 * mail that names it can still come (a DSN or an ARF report days later, to its VERP address, its
 * mailto unsubscribe address or with its Message-ID quoted), and must be known for what it is about
 * — a person who was erased, or an account deleted — rather than kept as mail about nothing, which
 * would carry the person's address (the VERP envelope, Final-Recipient, the returned headers) past
 * their erasure. One field of the message's tracking marks, under its hash tag, with no address and
 * no content:
 *
 *   {m:<id>}:track  x:*      '1'  every recipient was erased: eraseRecipient-5.lua deleted the record
 *                            'a'  its account was deleted: the retention walk's purgeMessage
 *                                 (purgeMessage-7.lua), which keeps the x:<idx> marks there and an
 *                                 x:* of '1' (an erased recipient stays erased)
 *                   x:<idx>  '1'  recipient idx was erased (eraseRecipient-5.lua), the others kept;
 *                                 it may outlive the record, whose own TTL ran from its finish. A
 *                                 campaign's erased contact leaves its list: this mark is then all
 *                                 that says so (keepGone-3.lua writes it for a deleted contact too,
 *                                 whose address {m:<id>}:gone keeps, so that one is still found)
 *
 * The key lives retention.records from the erasure or deletion (the marks' TTL): as long as the
 * record, had it been kept, would have matched such mail, since the record lives that long from its
 * finish, and the finish comes first (an erasure finishes the copies it removes). The tracking
 * scripts read the same fields (recordTrackingEvent-4.lua, recordTrackingOpens-3.lua).
 *
 * A record removed at the end of its life (its TTL, or the retention walk past retention.records)
 * leaves nothing: that is no erasure, and mail about it after that is kept as unmatched, listed for
 * the operator until retention.rawBounces, as mail about any unknown message is.
 */
export const ALL_ERASED = 'x:*';
/** The value of ALL_ERASED for a message whose account was deleted. */
export const ACCOUNT_DELETED = 'a';
/** The value an erasure writes (x:* when every recipient was erased, x:<idx> for one). */
export const ERASED = '1';

/** Why a message (or its recipient idx) whose record is gone is gone; null when nothing says so. */
export type Tombstone = 'erased' | 'account-deleted';

/**
 * The tombstone of message `msgId`, or of its recipient `idx` (undefined: the message as a whole,
 * as a Message-ID names it). One HMGET. Read once the record is gone; while a message's is kept,
 * its recipients say who was erased (store/recipients.ts liveAddress), but not a campaign's.
 *
 * A deleted account's message named by its Message-ID alone, when one of its recipients had been
 * erased, is 'erased': the mail may be about that person, and nothing tells which copy it is about.
 * Found with HSCAN of the x:<idx> marks, only on that path (the marks may hold a field per recipient).
 */
export async function tombstoneOf(redis: RedisClient, keys: Keys, msgId: string, idx: number | undefined): Promise<Tombstone | null> {
  const marks = keys.trackMarks(msgId);
  const [all, one] = await redis.hmget(marks, ALL_ERASED, idx === undefined ? ALL_ERASED : `x:${idx}`);
  // An erased person first: their account's later deletion does not make mail about them the account's.
  if (idx !== undefined && one != null) return 'erased';
  if (all === ACCOUNT_DELETED) return idx === undefined && (await anyErased(redis, marks)) ? 'erased' : 'account-deleted';
  return all != null ? 'erased' : null;
}

/** Whether the marks hold an erased recipient's x:<idx>. */
async function anyErased(redis: RedisClient, marks: string): Promise<boolean> {
  let cursor = '0';
  do {
    const [next, flat] = await redis.hscan(marks, cursor, 'MATCH', 'x:[0-9]*', 'COUNT', 1000);
    if (flat.length > 0) return true;
    cursor = next;
  } while (cursor !== '0');
  return false;
}
