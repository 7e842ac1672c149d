import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { getMessage } from '../store/messages.js';
import { recipientStates, type RecipientStatus } from '../queue/status.js';

export interface MessageStatus {
  id: string;
  account: string;
  acceptedAt: number;
  recipients: ({ address: string } & RecipientStatus)[];
}

/**
 * The delivery state of each recipient, or null when the message does not exist OR belongs to
 * another account: the two answers are indistinguishable, so ids cannot be probed across accounts.
 */
export async function messageStatus(redis: RedisClient, keys: Keys, id: string, accountId: string): Promise<MessageStatus | null> {
  const msg = await getMessage(redis, keys, id);
  if (!msg || msg.meta.account !== accountId) return null;
  const states = await recipientStates(redis, keys, id, msg.meta.rcpts.map((r, idx) => ({ idx, domain: r.domain })));
  return {
    id,
    account: msg.meta.account,
    acceptedAt: msg.meta.acceptedAt,
    recipients: states.map((s) => ({ address: msg.meta.rcpts[s.idx]?.address ?? '', ...s })),
  };
}
