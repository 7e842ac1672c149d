import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { getMessage } from '../store/messages.js';
import { readEngagement, type Engagement } from '../store/engagement.js';
import { recipientStates, type RecipientStatus } from '../queue/status.js';

export interface MessageStatus {
  id: string;
  account: string;
  acceptedAt: number;
  recipients: ({ address: string } & RecipientStatus)[];
  /** Opens, clicks and unsubscribes so far: raw, human, unique human and machine counts. */
  engagement: Engagement;
}

/**
 * The delivery state of each recipient, or null when the message does not exist OR belongs to
 * another account: the two answers are indistinguishable, so ids cannot be probed across accounts.
 */
export async function messageStatus(redis: RedisClient, keys: Keys, id: string, accountId: string): Promise<MessageStatus | null> {
  // Both reads in one round trip (auto-pipelined; same slot). A foreign message's counters are read
  // and dropped: cheaper than a second round trip for every status query.
  const [msg, engagement] = await Promise.all([getMessage(redis, keys, id), readEngagement(redis, keys, id)]);
  if (!msg || msg.meta.account !== accountId) return null;
  const states = await recipientStates(redis, keys, id, msg.meta.rcpts.map((r, idx) => ({ idx, domain: r.domain })));
  return {
    id,
    account: msg.meta.account,
    acceptedAt: msg.meta.acceptedAt,
    recipients: states.map((s) => ({ address: msg.meta.rcpts[s.idx]?.address ?? '', ...s })),
    engagement,
  };
}
