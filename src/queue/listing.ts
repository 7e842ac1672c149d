import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { parseMember } from './entry.js';
import { num } from './status.js';

/**
 * The recipients queued at one destination, one by one, for an operator's `sluice queue list`
 * (Postfix's mailq, for one destination): those being sent first (lease order), then those waiting,
 * the soonest due first, each with its delivery record (attempts, last answer). A campaign's
 * recipients wait behind one pointer ("@<campaignId>", queue/campaign.ts) and are listed as one row
 * with their count. Single-key reads only (the destination's keys share a slot): works on a Cluster.
 */
export interface ListedRecipient {
  readonly msgId: string;
  readonly idx: number;
  readonly state: 'sending' | 'queued' | 'deferred';
  /** Due time (waiting) or lease expiry (sending), ms. */
  readonly at: number;
  readonly attempts: number;
  readonly code: number | null;
  readonly enhanced: string | null;
  /** The last remote answer (or local reason) of a deferred recipient; null before its first attempt. */
  readonly response: string | null;
  readonly updatedAt: number | null;
}

export interface ListedCampaign {
  readonly campaignId: string;
  /** Recipients waiting behind the pointer. */
  readonly waiting: number;
  /** When the pointer is due (a throttled campaign's is later); null while the campaign is paused. */
  readonly at: number | null;
}

export interface DestinationListing {
  readonly domain: string;
  /** Up to the limit, sending first. */
  readonly recipients: ListedRecipient[];
  readonly campaigns: ListedCampaign[];
  /** Entries in the ready and lease sets (campaign pointers not counted), listed or not. */
  readonly waiting: number;
  readonly sending: number;
}

export async function listDestination(redis: RedisClient, keys: Keys, domain: string, limit: number): Promise<DestinationListing> {
  // The campaigns that queued recipients here (the hash of their last pushed chunk, queue/campaign.ts);
  // a paused one has no pointer in ready but its recipients wait all the same.
  const campaignIds = await redis.hkeys(keys.campaignPushed(domain));
  const [leased, ready, readyCount, leasedCount, pointers] = await Promise.all([
    redis.zrange(keys.leases(domain), 0, limit - 1, 'WITHSCORES'),
    // Pointers sort by their time among the entries: read enough to find `limit` entries past them.
    redis.zrange(keys.ready(domain), 0, limit + campaignIds.length - 1, 'WITHSCORES'),
    redis.zcard(keys.ready(domain)),
    redis.zcard(keys.leases(domain)),
    Promise.all(campaignIds.map(async (id): Promise<ListedCampaign & { pointer: boolean }> => {
      const [waiting, at] = await Promise.all([redis.llen(keys.campaignQueue(domain, id)), redis.zscore(keys.ready(domain), `@${id}`)]);
      return { campaignId: id, waiting, at: at === null ? null : Number(at), pointer: at !== null };
    })),
  ]);
  const rows: { member: string; at: number; sending: boolean }[] = [];
  for (let i = 0; i < leased.length; i += 2) rows.push({ member: leased[i] as string, at: Number(leased[i + 1]), sending: true });
  for (let i = 0; i < ready.length && rows.length < limit; i += 2) {
    const member = ready[i] as string;
    if (!member.startsWith('@')) rows.push({ member, at: Number(ready[i + 1]), sending: false });
  }
  const entries = rows.flatMap((r) => {
    const e = parseMember(domain, r.member);
    return e ? [{ ...r, e }] : [];
  }).slice(0, limit);
  const records = await Promise.all(entries.map((r) => redis.hmget(keys.rcptState(domain, r.e.msgId, r.e.idx), 'state', 'attempts', 'code', 'enhanced', 'response', 'updatedAt')));
  const recipients = entries.map((r, i): ListedRecipient => {
    const [state, attempts, code, enhanced, response, updatedAt] = records[i] as (string | null)[];
    return {
      msgId: r.e.msgId, idx: r.e.idx, at: r.at,
      state: r.sending ? 'sending' : state === 'deferred' ? 'deferred' : 'queued',
      attempts: num(attempts) ?? r.e.attempt, code: num(code), enhanced: enhanced ?? null, response: response ?? null, updatedAt: num(updatedAt),
    };
  });
  const campaigns = pointers.filter((c) => c.waiting > 0 || c.pointer).map(({ pointer: _p, ...c }) => c);
  return { domain, recipients, campaigns, waiting: readyCount - pointers.filter((c) => c.pointer).length, sending: leasedCount };
}
