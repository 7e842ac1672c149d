import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { ByteBudget } from '../core/read-bounded.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { Metrics } from '../observability/metrics.js';
import { SluiceError, toSluiceError, type FieldError } from '../core/errors.js';
import { parseAddress } from '../core/address.js';
import { newId, withFreeId } from '../core/ids.js';
import type { Account, AccountRegistry } from '../accounts/registry.js';
import { reserveSending } from '../accounts/limits.js';
import type { MessageDsn, MessageKind, MessageSource, StoredRecipient } from '../store/messages.js';
import { persistMessage, refsTtlMs } from './persist.js';
import { cancelMessage } from './message-cancel.js';
import { withMessageId } from '../render/spec-record.js';
import type { ClosedAccounts } from '../store/account-state.js';

/**
 * The one acceptance path of SMTP submission and the HTTP API. Order matters: checks that cost
 * nothing (addresses, ownership, count) come first; the quota/rate reservation is the first Redis
 * write and is given back if persisting fails; the answer is returned only once the message is
 * persisted and queued.
 */
export interface AcceptDeps {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly config: Config;
  readonly registry: AccountRegistry;
  readonly metrics?: Metrics | undefined;
  readonly logger?: Logger | undefined;
  readonly now?: (() => number) | undefined;
  /** Called after each acceptance (e.g. to wake this process's dispatcher). Must not throw. */
  readonly onAccepted?: ((source: MessageSource, recipients: number) => void) | undefined;
  /**
   * Strict durability (redis.durability: strict): resolves once the write is on disk (WAITAOF);
   * rejects when it cannot be confirmed in time, and then the submission is refused with a 4xx so
   * the client retries, and its copies are withdrawn (confirmOrWithdraw). Undefined when every write is durable already (appendfsync always) or in
   * 'everysec' mode.
   */
  readonly confirmDurable?: (() => Promise<void>) | undefined;
  /** Closed accounts (`sluice account close`): their submissions are refused with SLUICE_ACCOUNT_CLOSED. */
  readonly closedAccounts?: ClosedAccounts | undefined;
  /**
   * Bytes of submitted mail held in memory at once, shared by the SMTP and HTTP servers
   * (ingress.maxBuffered); each server makes its own when none is given.
   */
  readonly buffered?: ByteBudget | undefined;
}

/**
 * Throws SLUICE_ACCOUNT_CLOSED when the account is closed: it may not send, whatever the interface
 * (nor, on the HTTP API, add or change data: `refused` says which).
 */
export async function checkOpen(deps: Pick<AcceptDeps, 'closedAccounts'>, account: Account, refused = 'cannot send'): Promise<void> {
  const closed = await deps.closedAccounts?.get(account.id);
  if (closed) {
    throw new SluiceError('SLUICE_ACCOUNT_CLOSED', `Account ${account.id} was closed on ${new Date(closed.closedAt).toISOString()} and ${refused}; an operator can reopen it`);
  }
}

export interface Submission {
  readonly account: Account;
  readonly source: MessageSource;
  readonly kind: MessageKind;
  /** The From address (header From; for SMTP without one, the envelope sender). */
  readonly from: string;
  /** Envelope recipients as given; duplicates are sent once. */
  readonly recipients: readonly string[];
  /** SMTP submissions: the envelope sender ('' for <>), stored so a failure can be reported to it. */
  readonly returnPath?: string | undefined;
  /** SMTP submissions that gave DSN parameters: `rcpts` in the order of `recipients`. */
  readonly dsn?: MessageDsn | undefined;
  /** The body, or a function of the new message id (an API spec embeds its Message-ID). */
  readonly body: Buffer | string | ((id: string) => Buffer | string);
  readonly tags?: readonly string[] | undefined;
  readonly metadata?: Readonly<Record<string, string | number | boolean>> | undefined;
  /** A tracked message's link table (render/links.ts order), stored with the message. */
  readonly links?: readonly string[] | undefined;
  /** Dotted path prefix for field errors ('to' for the API), or undefined to name addresses only. */
  readonly recipientPaths?: readonly string[] | undefined;
  /**
   * The message's id and acceptance time when the caller made them already (the HTTP API does, to
   * encode its body before the first await: see http-api.ts prepareMessage); else made here.
   */
  readonly id?: string | undefined;
  readonly acceptedAt?: number | undefined;
}

export interface Accepted {
  readonly id: string;
  /** Accepted recipients in queue order (index = recipient idx), domains normalised. */
  readonly recipients: string[];
}

/**
 * Validates and normalises recipients; every bad one is named (SLUICE_INGRESS_BAD_ADDRESS). `kept`
 * receives the position in `recipients` of each one returned (duplicates are dropped).
 */
export function normaliseRecipients(recipients: readonly string[], paths?: readonly string[], kept?: number[]): StoredRecipient[] {
  const out: StoredRecipient[] = [];
  const seen = new Set<string>();
  const errors: FieldError[] = [];
  recipients.forEach((text, i) => {
    const parsed = parseAddress(text);
    if (!parsed) {
      errors.push({ path: paths?.[i] ?? `recipients.${i}`, message: `not a valid address: ${JSON.stringify(String(text).slice(0, 100))}` });
      return;
    }
    if (seen.has(parsed.address)) return;
    seen.add(parsed.address);
    out.push({ address: parsed.address, domain: parsed.domain });
    kept?.push(i);
  });
  if (errors.length > 0) {
    const first = errors[0] as FieldError;
    throw new SluiceError('SLUICE_INGRESS_BAD_ADDRESS', errors.length === 1 ? first.message : `${errors.length} invalid addresses, first: ${first.message}`, { errors });
  }
  return out;
}

/**
 * Throws SLUICE_INGRESS_FROM_NOT_OWNED unless `from` is an address in a domain the account owns.
 * `field`: the header it came from (a submitted message's Sender or Resent-From is held to the same rule).
 */
export function checkFrom(registry: AccountRegistry, account: Account, from: string, field = 'From'): { address: string; domain: string } {
  const path = field.toLowerCase();
  const parsed = parseAddress(from);
  if (!parsed) throw new SluiceError('SLUICE_INGRESS_BAD_ADDRESS', `the ${field} address is not valid: ${JSON.stringify(String(from).slice(0, 100))}`, { errors: [{ path, message: 'not a valid address' }] });
  if (!registry.ownsDomain(account.id, parsed.domain)) {
    throw new SluiceError('SLUICE_INGRESS_FROM_NOT_OWNED', `The ${field} domain ${parsed.domain} is not owned by this account`, { errors: [{ path, message: 'domain not owned by this account' }] });
  }
  return parsed;
}

/** What a copy withdrawn by confirmOrWithdraw says as its recipient's response. */
export const WITHDRAWN_RESPONSE = 'not sent: the submission was refused, its write not confirmed on disk in time (strict durability)';

/**
 * Strict durability: the write is confirmed on disk, or the submission is refused (4xx, the client
 * tries again) and nothing of it goes out: it is queued already, so its waiting copies are cancelled
 * first, each recorded as `cancelled` with WITHDRAWN_RESPONSE. A copy delivery claimed in the
 * moment between is being sent and stays so (the client's retry then sends it a second time).
 */
async function confirmOrWithdraw(deps: AcceptDeps, id: string, accountId: string, now: number): Promise<void> {
  if (!deps.confirmDurable) return;
  try {
    await deps.confirmDurable();
  } catch (err) {
    await cancelMessage(deps.redis, deps.keys, id, accountId, {
      now, recordTtlMs: deps.config.retention.records, refsTtlMs: refsTtlMs(deps.config), eventsMaxLen: deps.config.retention.eventsMaxLen, response: WITHDRAWN_RESPONSE,
    }).catch((cancelErr: unknown) => deps.logger?.error({ err: cancelErr, msgId: id }, 'a refused submission could not be withdrawn: it may still be delivered'));
    throw err;
  }
}

export async function acceptMessage(deps: AcceptDeps, sub: Submission): Promise<Accepted> {
  try {
    const from = checkFrom(deps.registry, sub.account, sub.from);
    if (sub.recipients.length === 0) throw new SluiceError('SLUICE_INGRESS_NO_RECIPIENTS');
    // Counted before de-duplication: a request listing 10,000 copies of one address is refused too.
    const max = deps.config.ingress.maxRecipients;
    if (sub.recipients.length > max) {
      throw new SluiceError('SLUICE_INGRESS_TOO_MANY_RECIPIENTS', `Too many recipients: ${sub.recipients.length}, at most ${max}`);
    }
    const kept: number[] = [];
    const rcpts = normaliseRecipients(sub.recipients, sub.recipientPaths, kept);
    // A recipient's DSN parameters follow it to its place in the stored list.
    const given = sub.dsn?.rcpts;
    const dsn = given ? { ...sub.dsn, rcpts: kept.map((i) => given[i] ?? null) } : sub.dsn;
    await checkOpen(deps, sub.account);

    const now = sub.acceptedAt ?? (deps.now ?? Date.now)();
    const reservation = await reserveSending(deps.redis, deps.keys, sub.account, rcpts.length, now);
    const first = sub.id ?? newId(now);
    const original = typeof sub.body === 'function' ? sub.body(first) : sub.body;
    // Another process may mint the same id in the same millisecond (1 in 2^30 a pair): then nothing
    // of this message is stored, the other one is untouched, and it takes another id. A spec names
    // its id in its Message-ID, so that is rewritten with it.
    const bodyFor = (id: string): string | Buffer => {
      if (id === first) return original;
      if (typeof sub.body === 'function') return sub.body(id);
      if (sub.kind === 'spec') return withMessageId(typeof original === 'string' ? Buffer.from(original, 'utf8') : original, first, id);
      return original;
    };
    let id: string;
    try {
      const links = sub.links !== undefined && sub.links.length > 0 ? sub.links : undefined;
      id = await withFreeId(() => newId(now), async (candidate) => {
        if (candidate !== first) deps.logger?.warn({ msgId: first, next: candidate }, 'message id already in use, taking another');
        const persisted = await persistMessage(deps.redis, deps.keys, deps.config.redis.scheduleShards, {
          id: candidate,
          account: sub.account.id,
          source: sub.source,
          kind: sub.kind,
          from: from.address,
          fromDomain: from.domain,
          rcpts,
          acceptedAt: now,
          tags: sub.tags ?? [],
          metadata: sub.metadata ?? {},
          ...(sub.returnPath !== undefined ? { returnPath: sub.returnPath } : {}),
          ...(dsn !== undefined ? { dsn } : {}),
          body: bodyFor(candidate),
          // Stored with the record, before the message is queued: no copy can go out with click URLs
          // the tracking server cannot redirect yet.
          links,
        }, refsTtlMs(deps.config), deps.config.retention.eventsMaxLen);
        if (!persisted.stored) return null;
        if (persisted.eventError === undefined) deps.metrics?.eventsAppended.inc({ type: 'accepted' });
        // The message is safe already; an event-stream hiccup must not turn the answer into a failure.
        else deps.logger?.warn({ err: persisted.eventError, msgId: candidate }, 'could not append the accepted event');
        return candidate;
      }, first);
      await confirmOrWithdraw(deps, id, sub.account.id, now);
    } catch (err) {
      await reservation.release().catch(() => undefined);
      throw err;
    }

    deps.metrics?.messagesAccepted.inc({ source: sub.source });
    deps.metrics?.recipientsAccepted.inc({ source: sub.source }, rcpts.length);
    deps.onAccepted?.(sub.source, rcpts.length);
    return { id, recipients: rcpts.map((r) => r.address) };
  } catch (err) {
    const e = toSluiceError(err);
    deps.metrics?.messagesRejected.inc({ source: sub.source, code: e.code });
    rejectionCounted.add(e);
    throw e;
  }
}

/** Refusals acceptMessage has counted in sluice_messages_rejected_total: a caller counts the others. */
export const rejectionCounted = new WeakSet<Error>();
