import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { getMessage } from './messages.js';

/**
 * What delivery needs from the message store: the message of a queue entry, and a way to say one of
 * its recipients is finished. When the last one is, the body (the bulk of the memory) is deleted at
 * once — nothing will render it again — and the metadata is kept for `recordsTtlMs` (retention.records)
 * so status queries keep answering, then expires by itself.
 */
export interface LoadedMessage {
  readonly id: string;
  readonly account: string;
  readonly kind: 'raw' | 'spec';
  /** Domain of the From header: selects the DKIM keys. */
  readonly fromDomain: string | null;
  readonly rcpts: readonly { readonly address: string; readonly domain: string }[];
  readonly acceptedAt: number;
  readonly body: Buffer | string;
}

export interface MessageSource {
  /** null when the message is no longer stored (purged, erased, or all recipients finished). */
  load(msgId: string): Promise<LoadedMessage | null>;
  /** Called once per recipient that reached a final state (delivered, bounced, expired). */
  finished(msgId: string): Promise<void>;
}

export function createMessageSource(redis: RedisClient, keys: Keys, recordsTtlMs: number): MessageSource {
  return {
    async load(msgId) {
      const msg = await getMessage(redis, keys, msgId);
      if (!msg) return null;
      const body = await msg.body();
      if (!body) return null;
      const m = msg.meta;
      return {
        id: m.id,
        account: m.account,
        kind: m.kind,
        fromDomain: m.fromDomain || null,
        rcpts: m.rcpts,
        acceptedAt: m.acceptedAt,
        // A spec is JSON text; raw MIME stays bytes (it may not be valid UTF-8).
        body: m.kind === 'spec' ? body.toString('utf8') : body,
      };
    },
    async finished(msgId) {
      const metaKey = keys.msgMeta(msgId);
      // HINCRBY on a missing hash would create a stub without an account; only touch a stored message.
      const res = await redis.multi().exists(metaKey).hincrby(metaKey, 'pending', -1).exec();
      const existed = Number(res?.[0]?.[1] ?? 0) === 1;
      const pending = Number(res?.[1]?.[1] ?? 0);
      if (!existed) {
        await redis.del(metaKey);
        return;
      }
      if (pending <= 0) {
        await redis.multi().del(keys.msgBody(msgId)).pexpire(metaKey, recordsTtlMs).exec();
      }
    },
  };
}
