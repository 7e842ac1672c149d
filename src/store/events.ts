import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';

/**
 * The event stream: one Redis Stream that every role appends to and consumers (webhooks, reputation)
 * read with consumer groups. Entries carry ids (msgId, idx, account) and outcome codes, never message
 * content or addresses, so trimming and erasure requests stay simple.
 */
export type EventType =
  | 'accepted'
  | 'delivered'
  | 'deferred'
  | 'bounced'
  | 'expired'
  | 'suppressed'
  | 'complained'
  | 'unsubscribed'
  | 'opened'
  | 'clicked'
  // Other roles may add types of their own without editing this list.
  | (string & {});

/**
 * XADD with `MAXLEN ~ maxLen`: the approximate trim lets Redis drop whole radix-tree nodes, which is
 * O(1) amortised, where an exact trim would cut inside nodes on every append. Returns the entry id.
 */
export async function appendEvent(
  redis: RedisClient,
  keys: Keys,
  type: EventType,
  fields: Readonly<Record<string, string | number>>,
  maxLen: number,
): Promise<string> {
  const args: (string | number)[] = ['type', type];
  for (const [k, v] of Object.entries(fields)) args.push(k, v);
  const id = await redis.xadd(keys.events(), 'MAXLEN', '~', maxLen, '*', ...args);
  return id as string;
}
