import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { listDestination, type DestinationListing, type ListedRecipient } from '../queue/listing.js';
import { getMessage } from '../store/messages.js';
import type { Config } from '../config/schema.js';
import { heldView, readHolds, type HoldView } from '../queue/holds.js';
import { resolveRecordedShaping } from '../queue/shaping.js';

/** A listed recipient with what its message says of it: account, sender, address (null when the message is gone). */
export type DescribedRecipient = ListedRecipient & { readonly account: string | null; readonly from: string | null; readonly to: string | null };

/**
 * The recipients queued at each destination (queue/listing.ts, at most `limit` each), with their
 * messages' account, sender and the recipient's address, and the operator's hold that keeps the
 * destination waiting, if any (by its own name, or by the rule the dispatcher resolved for it):
 * what `sluice queue list` and GET /v1/queue/:domain show. Each message is read once, however many
 * of its recipients are listed.
 */
export async function describeDestinations(redis: RedisClient, keys: Keys, shaping: Config['shaping'], domains: readonly string[], limit: number): Promise<(Omit<DestinationListing, 'recipients'> & { recipients: DescribedRecipient[]; held: HoldView | null })[]> {
  const now = Date.now();
  const holds = await readHolds(redis, keys, now);
  const messages = new Map<string, ReturnType<typeof getMessage>>();
  const messageOf = (id: string) => {
    let m = messages.get(id);
    if (!m) messages.set(id, (m = getMessage(redis, keys, id)));
    return m;
  };
  return Promise.all(domains.map(async (d) => {
    const [l, recorded] = await Promise.all([listDestination(redis, keys, d, limit), holds.length > 0 ? redis.get(keys.destinationRule(d)) : null]);
    const recipients = await Promise.all(l.recipients.map(async (r): Promise<DescribedRecipient> => {
      const meta = (await messageOf(r.msgId))?.meta;
      return { ...r, account: meta?.account ?? null, from: meta?.from ?? null, to: meta?.rcpts[r.idx]?.address ?? null };
    }));
    return { ...l, recipients, held: heldView(holds, d, resolveRecordedShaping(shaping, d, recorded).rule, now) };
  }));
}
