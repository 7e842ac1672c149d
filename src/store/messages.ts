import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { SluiceError } from '../core/errors.js';
import { enqueueRecipients } from '../queue/enqueue.js';
import { recipientStates, type RecipientStatus } from '../queue/status.js';

/**
 * A message is stored once, under its own hash tag, and referenced by every queue entry:
 *
 *   {m:<id>}:meta  HASH    account, source, kind, from, fromDomain, rcpts (JSON [{address, domain}]),
 *                          acceptedAt (ms), tags (JSON string[]), metadata (JSON object), pending
 *   {m:<id>}:body  STRING  raw MIME bytes (kind 'raw') or the JSON MessageSpec (kind 'spec')
 *
 * Recipient i of the message is queue entry "<id>:<i>:<attempt>" in the ready set of its domain.
 */
export type MessageSource = 'smtp' | 'http';
export type MessageKind = 'raw' | 'spec';

export interface StoredRecipient {
  readonly address: string;
  /** Normalised (A-label, lower-case) destination domain: the queue the recipient goes to. */
  readonly domain: string;
}

export interface MessageMeta {
  readonly id: string;
  readonly account: string;
  readonly source: MessageSource;
  readonly kind: MessageKind;
  readonly from: string;
  readonly fromDomain: string;
  readonly rcpts: readonly StoredRecipient[];
  readonly acceptedAt: number;
  readonly tags: readonly string[];
  readonly metadata: Readonly<Record<string, string | number | boolean>>;
  /** Recipients not yet in a final state. */
  readonly pending: number;
}

export interface NewMessage extends Omit<MessageMeta, 'pending'> {
  readonly body: Buffer | string;
}

/**
 * Writes meta and body in one MULTI (same hash tag: atomic on a cluster too), then queues every
 * recipient, and only then resolves: the caller's 250/202 means "persisted and queued" (DESIGN §2).
 * If queueing fails the message record is removed again (best effort) before the error propagates,
 * so a refused submission leaves no orphan for the client's retry to duplicate; a queue entry that
 * did get written then finds no message and is dropped by delivery.
 */
export async function persistMessage(redis: RedisClient, keys: Keys, shards: number, msg: NewMessage): Promise<void> {
  const metaKey = keys.msgMeta(msg.id);
  const bodyKey = keys.msgBody(msg.id);
  const res = await redis
    .multi()
    .hset(metaKey, {
      account: msg.account,
      source: msg.source,
      kind: msg.kind,
      from: msg.from,
      fromDomain: msg.fromDomain,
      rcpts: JSON.stringify(msg.rcpts.map((r) => ({ address: r.address, domain: r.domain }))),
      acceptedAt: msg.acceptedAt,
      tags: JSON.stringify(msg.tags),
      metadata: JSON.stringify(msg.metadata),
      pending: msg.rcpts.length,
    })
    .set(bodyKey, msg.body)
    .exec();
  const failed = res?.find(([err]) => err);
  if (!res || failed) throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the message could not be stored', { cause: failed?.[0] ?? undefined });
  try {
    await enqueueRecipients(
      redis,
      keys,
      shards,
      msg.rcpts.map((r, idx) => ({ msgId: msg.id, idx, domain: r.domain, dueAt: msg.acceptedAt })),
    );
  } catch (err) {
    await redis.del(metaKey, bodyKey).catch(() => undefined);
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the message could not be queued', { cause: err });
  }
}

function parseJson<T>(text: string | undefined, fallback: T): T {
  if (text === undefined) return fallback;
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}

function toMeta(id: string, h: Record<string, string>): MessageMeta | null {
  const account = h['account'];
  if (!account) return null;
  return {
    id,
    account,
    source: h['source'] === 'http' ? 'http' : 'smtp',
    kind: h['kind'] === 'spec' ? 'spec' : 'raw',
    from: h['from'] ?? '',
    fromDomain: h['fromDomain'] ?? '',
    rcpts: parseJson<StoredRecipient[]>(h['rcpts'], []),
    acceptedAt: Number(h['acceptedAt'] ?? 0),
    tags: parseJson<string[]>(h['tags'], []),
    metadata: parseJson<Record<string, string | number | boolean>>(h['metadata'], {}),
    pending: Number(h['pending'] ?? 0),
  };
}

export interface StoredMessage {
  readonly meta: MessageMeta;
  /** Reads the body on demand (it can be megabytes; a status query never needs it). */
  body(): Promise<Buffer | null>;
}

export async function getMessage(redis: RedisClient, keys: Keys, id: string): Promise<StoredMessage | null> {
  const meta = toMeta(id, await redis.hgetall(keys.msgMeta(id)));
  if (!meta) return null;
  return { meta, body: () => redis.getBuffer(keys.msgBody(id)) };
}

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
