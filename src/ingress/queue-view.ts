import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { listDestination, type DestinationListing, type ListedRecipient } from '../queue/listing.js';
import { getMessage } from '../store/messages.js';

/** A listed recipient with what its message says of it: account, sender, address (null when the message is gone). */
export type DescribedRecipient = ListedRecipient & { readonly account: string | null; readonly from: string | null; readonly to: string | null };

/**
 * The recipients queued at each destination (queue/listing.ts, at most `limit` each), with their
 * messages' account, sender and the recipient's address: what `sluice queue list` and GET
 * /v1/queue/:domain show. Each message is read once, however many of its recipients are listed.
 */
export async function describeDestinations(redis: RedisClient, keys: Keys, domains: readonly string[], limit: number): Promise<(Omit<DestinationListing, 'recipients'> & { recipients: DescribedRecipient[] })[]> {
  const messages = new Map<string, ReturnType<typeof getMessage>>();
  const messageOf = (id: string) => {
    let m = messages.get(id);
    if (!m) messages.set(id, (m = getMessage(redis, keys, id)));
    return m;
  };
  return Promise.all(domains.map(async (d) => {
    const l = await listDestination(redis, keys, d, limit);
    const recipients = await Promise.all(l.recipients.map(async (r): Promise<DescribedRecipient> => {
      const meta = (await messageOf(r.msgId))?.meta;
      return { ...r, account: meta?.account ?? null, from: meta?.from ?? null, to: meta?.rcpts[r.idx]?.address ?? null };
    }));
    return { ...l, recipients };
  }));
}
