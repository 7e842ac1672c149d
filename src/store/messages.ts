import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { Result } from 'ioredis';
import { SluiceError } from '../core/errors.js';
import { jsonOr } from './record-io.js';

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
  /** A tracked message's link table (store/links.ts), written with the record. */
  readonly links?: readonly string[] | undefined;
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/storeMessage-3.lua: the message part. */
    storeMessage(meta: string, body: string, links: string, ...args: (string | number | Buffer)[]): Result<number, Context>;
    /** src/queue/lua/storeMessage-3.lua with more keys: the message, then the rest of its acceptance (ingress/persist.ts). */
    storeMessageKeys(numKeys: number, ...keysThenArgs: (string | number | Buffer)[]): Result<number, Context>;
  }
}

/**
 * Writes meta, body and link table in one script (same hash tag: atomic on a cluster too; one command
 * on the ingress thread instead of a MULTI of four and another for the links). Queueing the
 * recipients is the caller's next step (ingress/persist.ts): the store knows records, not queues.
 *
 * Returns false, having written nothing, when the id is already in use (another message or a
 * campaign minted it in the same millisecond: see storeMessage-3.lua); the caller mints another.
 */
export async function storeMessage(redis: RedisClient, keys: Keys, msg: NewMessage): Promise<boolean> {
  const w = messageWrite(keys, msg);
  return storeResult(redis.storeMessage(w.keys[0], w.keys[1], w.keys[2], ...w.args));
}

/**
 * The message part of a storeMessage-3.lua call: its three keys and its arguments, to which a caller
 * on a single server appends the rest of the acceptance (ingress/persist.ts).
 */
export function messageWrite(keys: Keys, msg: NewMessage): { keys: [string, string, string]; args: (string | number | Buffer)[] } {
  const links = msg.links ?? [];
  const meta = [
    'account', msg.account,
    'source', msg.source,
    'kind', msg.kind,
    'from', msg.from,
    'fromDomain', msg.fromDomain,
    'rcpts', JSON.stringify(msg.rcpts.map((r) => ({ address: r.address, domain: r.domain }))),
    'acceptedAt', msg.acceptedAt,
    'tags', JSON.stringify(msg.tags),
    'metadata', JSON.stringify(msg.metadata),
    'pending', msg.rcpts.length,
  ];
  return { keys: [keys.msgMeta(msg.id), keys.msgBody(msg.id), keys.links(msg.id)], args: [msg.body, links.length, meta.length, ...links, ...meta] };
}

/** A storeMessage-3.lua call's answer: stored (true) or the id taken (false); a failure as SLUICE_REDIS_UNAVAILABLE. */
export async function storeResult(call: Promise<number>): Promise<boolean> {
  try {
    return (await call) === 1;
  } catch (err) {
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the message could not be stored', { cause: err });
  }
}

/** Removes a message's record, body and link table (a submission that could not be queued). */
export async function deleteMessage(redis: RedisClient, keys: Keys, id: string): Promise<void> {
  await redis.del(keys.msgMeta(id), keys.msgBody(id), keys.links(id));
}

export function toMeta(id: string, h: Record<string, string>): MessageMeta | null {
  const account = h['account'];
  // A campaign shares the {m:<id>} layout (store/campaigns.ts) but is not a message.
  if (!account || h['kind'] === 'campaign') return null;
  return {
    id,
    account,
    source: h['source'] === 'http' ? 'http' : 'smtp',
    kind: h['kind'] === 'spec' ? 'spec' : 'raw',
    from: h['from'] ?? '',
    fromDomain: h['fromDomain'] ?? '',
    rcpts: jsonOr<StoredRecipient[]>(h['rcpts'], []),
    acceptedAt: Number(h['acceptedAt'] ?? 0),
    tags: jsonOr<string[]>(h['tags'], []),
    metadata: jsonOr<Record<string, string | number | boolean>>(h['metadata'], {}),
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
