import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { trimSortedSetBefore } from '../store/retention.js';
import { SluiceError } from '../core/errors.js';
import { createRecord } from '../store/record-io.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/claimFeedback-1.lua */
    claimFeedback(pending: string, now: number, leaseMs: number, limit: number): Result<string[], Context>;
  }
}

/**
 * Every mail the inbound MX accepts is stored raw before it is answered 250, so nothing a receiver
 * told us is lost to a crash or a classifier bug, and it can be processed again:
 *
 *   {f:<id>}:raw            HASH  raw (bytes), rcpts (JSON string[]), mailFrom, receivedAt (ms),
 *                                 outcome ('' until processed, then a FeedbackOutcome), attempts (failed
 *                                 processings), ev:<msgId>:<idx> (the event it appended about a copy)
 *                                 TTL = retention
 *   feedback:unprocessed    ZSET  id → receivedAt, for mail kept but not acted on (unparsed, unmatched,
 *                                 ambiguous, failed) and mail to postmaster: what an operator looks at;
 *                                 trimmed to the retention window
 *   feedback:pending        ZSET  id → when its processing is due: from its receipt (+ PENDING_GRACE_MS)
 *                                 until an outcome other than 'failed' is recorded; a failure makes it
 *                                 due again later (retryDelayMs), up to MAX_ATTEMPTS. So a mail answered
 *                                 250 is acted on even when the process died before processing it, or
 *                                 Redis failed during it (inbound-mx.ts takes the due ones)
 *
 * 'ambiguous': a report that names a message of several recipients by its Message-ID only, and no
 * copy of it (feedback/process.ts): not acted on, since any of them could have written it.
 * 'account-deleted': about a message of an account whose deletion is due or done (its record, or once
 * it is deleted its tombstone, store/tombstone.ts): not acted on, and the mail is dropped rather than
 * stored with this outcome (unless it went to postmaster too).
 */
export type FeedbackOutcome = 'processed' | 'unparsed' | 'unmatched' | 'ambiguous' | 'account-deleted' | 'failed';

export interface StoredFeedback {
  readonly id: string;
  readonly raw: Buffer;
  readonly rcpts: readonly string[];
  readonly mailFrom: string;
  readonly receivedAt: number;
  readonly outcome: FeedbackOutcome | '';
}

/**
 * Stores a received mail under its id, only if the id is free: false when another mail has it (drawn
 * twice in one millisecond), and then nothing is written and the caller takes another id.
 */
export async function storeFeedback(
  redis: RedisClient,
  keys: Keys,
  mail: { id: string; raw: Buffer; rcpts: readonly string[]; mailFrom: string; receivedAt: number },
  retentionMs: number,
): Promise<boolean> {
  try {
    // Due first, stored second: a crash between leaves an id with no mail, which the taker drops.
    await redis.zadd(keys.feedbackPending(), mail.receivedAt + PENDING_GRACE_MS, mail.id);
    return await createRecord(
      redis,
      keys.feedbackRaw(mail.id),
      { raw: mail.raw, rcpts: JSON.stringify(mail.rcpts), mailFrom: mail.mailFrom, receivedAt: mail.receivedAt, outcome: '' },
      Math.max(1, Math.floor(retentionMs)),
    );
  } catch (err) {
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the feedback mail could not be stored', { cause: err });
  }
}

/**
 * A stored mail is processed at once after its 250; one still pending this long after its receipt
 * was not (the process died first), and is taken by the next look (inbound-mx.ts).
 */
export const PENDING_GRACE_MS = 5 * 60_000;
/** Processing attempts of one mail at most; after the last failure it stays 'failed', listed for the operator. */
export const MAX_ATTEMPTS = 8;

/** The wait before attempt n + 1 (n ≥ 1 attempts failed): base, 2 × base, 4 × base, … (1 min base: ~4 h in all). */
export function retryDelayMs(failed: number, baseMs: number): number {
  return baseMs * 2 ** Math.max(0, failed - 1);
}

/**
 * After a failed processing: due again after retryDelayMs, or, after MAX_ATTEMPTS, no more (it stays
 * 'failed' and listed). Returns whether it will be tried again.
 */
/**
 * Writes a field of a stored mail while it is stored: an HSET on an expired key would make it again,
 * without a TTL.
 */
async function setStoredField(redis: RedisClient, keys: Keys, id: string, field: string, value: string): Promise<void> {
  const key = keys.feedbackRaw(id);
  if ((await redis.exists(key)) === 1) await redis.hset(key, field, value);
}

/** The id of the event a processing of mail `id` appended about copy (msgId, idx), or null: a retry appends none (process.ts). */
export async function appendedEvent(redis: RedisClient, keys: Keys, id: string, msgId: string, idx: number): Promise<string | null> {
  return redis.hget(keys.feedbackRaw(id), `ev:${msgId}:${idx}`);
}

export async function keepAppendedEvent(redis: RedisClient, keys: Keys, id: string, msgId: string, idx: number, eventId: string): Promise<void> {
  await setStoredField(redis, keys, id, `ev:${msgId}:${idx}`, eventId);
}

export async function retryLater(redis: RedisClient, keys: Keys, id: string, now: number, baseMs: number): Promise<boolean> {
  const key = keys.feedbackRaw(id);
  const failed = (await redis.exists(key)) === 1 ? await redis.hincrby(key, 'attempts', 1) : MAX_ATTEMPTS;
  if (failed >= MAX_ATTEMPTS) {
    await redis.zrem(keys.feedbackPending(), id);
    return false;
  }
  await redis.zadd(keys.feedbackPending(), now + retryDelayMs(failed, baseMs), id);
  return true;
}

/** Ids whose processing is due, each taken for leaseMs (claimFeedback-1.lua). */
export async function claimDue(redis: RedisClient, keys: Keys, now: number, leaseMs: number, limit: number): Promise<string[]> {
  return redis.claimFeedback(keys.feedbackPending(), now, leaseMs, limit);
}


/** A mail that needs no (more) processing: gone, or its outcome recorded. */
export async function dropPending(redis: RedisClient, keys: Keys, id: string): Promise<void> {
  await redis.zrem(keys.feedbackPending(), id);
}

/** Ids of expired mail taken out of the unprocessed index per step (one ZRANGE … LIMIT and one ZREM). */
export const TRIM_STEP = 1000;

/**
 * Records what processing made of a stored mail; mail `listed` (by default: not acted on; also mail
 * to postmaster, acted on or not) goes to the unprocessed index, which loses the ids received more
 * than the retention before it, TRIM_STEP at a time: after a quiet spell (or a shorter retention)
 * many may have expired at once, and one command removing them all would hold Redis for as long.
 */
export async function recordOutcome(
  redis: RedisClient,
  keys: Keys,
  id: string,
  outcome: FeedbackOutcome,
  receivedAt: number,
  retentionMs: number,
  listed = outcome !== 'processed',
): Promise<void> {
  await setStoredField(redis, keys, id, 'outcome', outcome);
  // Processed for good (a failure is retried: retryLater); a retry that succeeds unlists the failure.
  if (outcome !== 'failed') await redis.zrem(keys.feedbackPending(), id);
  if (!listed) {
    await redis.zrem(keys.feedbackUnprocessed(), id);
    return;
  }
  const index = keys.feedbackUnprocessed();
  await redis.zadd(index, receivedAt, id);
  // An id read here and re-added meanwhile keeps its score (its mail's receipt): still expired.
  while ((await trimSortedSetBefore(redis, index, receivedAt - retentionMs, TRIM_STEP)) === TRIM_STEP);
}

export async function loadFeedback(redis: RedisClient, keys: Keys, id: string): Promise<StoredFeedback | null> {
  const key = keys.feedbackRaw(id);
  const [raw, fields] = await Promise.all([redis.hgetBuffer(key, 'raw'), redis.hmget(key, ...ENVELOPE_FIELDS)]);
  return raw === null ? null : { id, raw, ...envelopeOf(fields) };
}

/** What a stored mail's listing shows: its envelope and size, not its bytes (up to feedback.maxMessageSize each). */
export type FeedbackSummary = Omit<StoredFeedback, 'raw'> & { readonly bytes: number };

/**
 * Summaries of stored mail, in the order of `ids`; null where the mail has expired. Plain commands,
 * which ioredis auto-pipelines per node: each mail's key is in its own slot, and an explicit pipeline
 * across slots is refused on Redis Cluster.
 */
export async function summarizeFeedback(redis: RedisClient, keys: Keys, ids: readonly string[]): Promise<(FeedbackSummary | null)[]> {
  return Promise.all(
    ids.map(async (id) => {
      const key = keys.feedbackRaw(id);
      const [bytes, fields] = await Promise.all([redis.hstrlen(key, 'raw'), redis.hmget(key, ...ENVELOPE_FIELDS)]);
      return bytes === 0 ? null : { id, bytes, ...envelopeOf(fields) };
    }),
  );
}

const ENVELOPE_FIELDS = ['rcpts', 'mailFrom', 'receivedAt', 'outcome'] as const;

function envelopeOf(fields: readonly (string | null)[]): Omit<StoredFeedback, 'id' | 'raw'> {
  const [rcpts, mailFrom, receivedAt, outcome] = fields;
  let list: string[] = [];
  try {
    const parsed: unknown = JSON.parse(rcpts ?? '[]');
    if (Array.isArray(parsed)) list = parsed.filter((x): x is string => typeof x === 'string');
  } catch {
    list = [];
  }
  return {
    rcpts: list,
    mailFrom: mailFrom ?? '',
    receivedAt: Number(receivedAt ?? 0),
    outcome: (outcome ?? '') as FeedbackOutcome | '',
  };
}

/** Ids of mail kept but not acted on, oldest first, or newest first (a page). */
export async function listUnprocessed(redis: RedisClient, keys: Keys, limit = 100, order: 'oldest' | 'newest' = 'oldest'): Promise<{ id: string; receivedAt: number }[]> {
  const index = keys.feedbackUnprocessed();
  const flat = order === 'oldest' ? await redis.zrange(index, 0, limit - 1, 'WITHSCORES') : await redis.zrevrange(index, 0, limit - 1, 'WITHSCORES');
  const out: { id: string; receivedAt: number }[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push({ id: flat[i] as string, receivedAt: Number(flat[i + 1]) });
  return out;
}
