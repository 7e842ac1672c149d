import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { loadScript, scriptSha } from '../redis/scripts.js';
import { SluiceError } from '../core/errors.js';
import { jsonOr } from './record-io.js';

/**
 * A message is stored once, under its own hash tag, and referenced by every queue entry:
 *
 *   {m:<id>}:meta  HASH    account, source, kind, from, fromDomain, rcpts (JSON [{address, domain}]),
 *                          acceptedAt (ms), tags (JSON string[]), metadata (JSON object), pending;
 *                          returnPath (SMTP submissions: the envelope sender, '' for <>);
 *                          dsn (SMTP submissions that gave DSN parameters: JSON MessageDsn);
 *                          finishedAt (ms) once no recipient is pending (the start of its TTL)
 *   {m:<id>}:body  STRING  raw MIME bytes (kind 'raw') or the JSON MessageSpec (kind 'spec')
 *
 * Recipient i of the message is queue entry "<id>:<i>:<attempt>" in the ready set of its domain.
 */
/** 'dsn': a delivery status notification Sluice made itself (delivery/failure-notice.ts). */
export type MessageSource = 'smtp' | 'http' | 'dsn';
export type MessageKind = 'raw' | 'spec';

export interface StoredRecipient {
  readonly address: string;
  /** Normalised (A-label, lower-case) destination domain: the queue the recipient goes to. */
  readonly domain: string;
}

/** NOTIFY values of RCPT TO (RFC 3461 §4.1): NEVER alone, or any of the others. */
export type DsnNotify = 'NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY';

/**
 * The DSN parameters (RFC 3461) an SMTP submission gave, xtext-decoded, each only when given:
 * RET and ENVID of MAIL FROM, and NOTIFY and ORCPT of each recipient, in the order of `rcpts`
 * (null for a recipient that gave neither).
 */
export interface MessageDsn {
  readonly ret?: 'FULL' | 'HDRS';
  readonly envid?: string;
  readonly rcpts?: readonly ({ readonly notify?: readonly DsnNotify[]; readonly orcpt?: string } | null)[];
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
  /** SMTP submissions: the envelope sender (MAIL FROM), '' for the null reverse-path. */
  readonly returnPath?: string;
  readonly dsn?: MessageDsn;
}

export interface NewMessage extends Omit<MessageMeta, 'pending'> {
  readonly body: Buffer | string;
  /** A tracked message's link table (store/links.ts), written with the record. */
  readonly links?: readonly string[] | undefined;
}

/**
 * Writes meta and link table in one script and the body beside it, in one MULTI (same hash tag:
 * atomic on a cluster too; see storeWithBody). Queueing the
 * recipients is the caller's next step (ingress/persist.ts): the store knows records, not queues.
 *
 * Returns false, having written nothing, when the id is already in use (another message or a
 * campaign minted it in the same millisecond: see storeMessage-3.lua); the caller mints another.
 */
export async function storeMessage(redis: RedisClient, keys: Keys, msg: NewMessage): Promise<boolean> {
  const w = messageWrite(keys, msg);
  return storeWithBody(redis, keys, msg, 3, [...w.keys, ...w.args]);
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
    ...(msg.returnPath !== undefined ? ['returnPath', msg.returnPath] : []),
    ...(msg.dsn !== undefined ? ['dsn', JSON.stringify(msg.dsn)] : []),
  ];
  return { keys: [keys.msgMeta(msg.id), keys.msgBody(msg.id), keys.links(msg.id)], args: [links.length, meta.length, ...links, ...meta] };
}

/**
 * A storeMessage-3.lua call (its key count, keys and arguments) and then `SET body NX`, in one MULTI:
 * the body is written exactly when the script stored the record (it refuses an id while its record
 * or body exists, and nothing runs between the two). Not passed to the script, because Redis copies
 * a script's arguments through Lua strings: single client, 100 KB bodies, Redis CPU per store was
 * 815-840 µs with the body in the script and 574-610 µs with it outside.
 *
 * Resolves true when stored (now, or by this same write sent again), false when the id is taken (nothing of ours is left: a body the SET
 * wrote for a finished message's id, whose own body was gone, is deleted again). Any failure
 * rejects as SLUICE_REDIS_UNAVAILABLE. A server that does not know the script (first use, restart,
 * failover) answers NOSCRIPT inside the MULTI: the script is loaded and the MULTI sent again.
 */
export async function storeWithBody(redis: RedisClient, keys: Keys, msg: NewMessage, numberOfKeys: number, keysAndArgs: readonly (string | number | Buffer)[]): Promise<boolean> {
  const bodyKey = keys.msgBody(msg.id);
  const fail = (cause: unknown, what = 'the message could not be stored'): SluiceError => new SluiceError('SLUICE_REDIS_UNAVAILABLE', what, { cause });
  for (let attempt = 0; ; attempt++) {
    let replies: [Error | null, unknown][] | null;
    try {
      replies = await redis.multi().evalsha(STORE_SHA, numberOfKeys, ...keysAndArgs).set(bodyKey, msg.body, 'NX').exec();
    } catch (err) {
      throw fail(err);
    }
    const [scriptErr, stored] = replies?.[0] ?? [new Error('the transaction was aborted'), 0];
    const [setErr, set] = replies?.[1] ?? [null, null];
    // This very write, sent again after a lost reply (storeMessage-3.lua): stored, body and all.
    if (!scriptErr && stored === 2) return true;
    if (scriptErr || stored !== 1) {
      if (!setErr && set === 'OK') await redis.del(bodyKey).catch(() => undefined);
      if (!scriptErr) return false;
      if (attempt > 0 || !scriptErr.message.startsWith('NOSCRIPT')) throw fail(scriptErr);
      await loadScript(redis, 'storeMessage').catch((err: unknown) => {
        throw fail(err);
      });
      continue;
    }
    if (setErr || set !== 'OK') {
      // Cannot happen (the script saw the key free); if it did, a record without its body must not stay.
      await deleteMessage(redis, keys, msg.id).catch(() => undefined);
      throw fail(setErr ?? new Error(`SET answered ${String(set)}`), 'the message body could not be stored');
    }
    return true;
  }
}

const STORE_SHA = scriptSha('storeMessage');

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
    source: h['source'] === 'http' || h['source'] === 'dsn' ? h['source'] : 'smtp',
    kind: h['kind'] === 'spec' ? 'spec' : 'raw',
    from: h['from'] ?? '',
    fromDomain: h['fromDomain'] ?? '',
    rcpts: jsonOr<StoredRecipient[]>(h['rcpts'], []),
    acceptedAt: Number(h['acceptedAt'] ?? 0),
    tags: jsonOr<string[]>(h['tags'], []),
    metadata: jsonOr<Record<string, string | number | boolean>>(h['metadata'], {}),
    pending: Number(h['pending'] ?? 0),
    ...(h['returnPath'] !== undefined ? { returnPath: h['returnPath'] } : {}),
    ...(h['dsn'] !== undefined ? { dsn: jsonOr<MessageDsn>(h['dsn'], {}) } : {}),
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
