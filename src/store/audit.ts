import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { addressDigest } from './address-digest.js';
import { streamFields, streamIdTime } from './events.js';

/**
 * The audit log: who did what to which account, when and from where — for admin and account
 * actions (suppression changes, sender resumes, webhook registrations, account close/reopen), not
 * for sending (a message is its own record; auditing each would drown the log).
 *
 *   audit  STREAM  actor, action, account, target, from   (entry id = time in ms)
 *
 *   actor   'account:<id>' (an account's API key), 'operator:<id>' (an operator key) or 'cli'
 *   key     the API key's id (a fingerprint of its stored hash), never the key itself
 *   from    the client IP, or 'cli'
 *   target  ids only: a webhook id, a sending domain, or an address as `addressRef` (a hash), so
 *           the log, kept longer than the data, holds no address in the clear
 *
 * Capped by XADD MAXLEN ~ (retention.auditMaxLen) and trimmed by age by housekeeping/retention.ts.
 */
export interface AuditEntry {
  readonly actor: string;
  readonly action: string;
  /** The account acted on ('' for none, e.g. an operator action on the deployment). */
  readonly account: string;
  readonly target?: string | undefined;
  readonly key?: string | undefined;
  readonly from: string;
}

export interface AuditRecord extends AuditEntry {
  /** Stream entry id; its first part is the time in ms. */
  readonly id: string;
  readonly at: number;
}

/**
 * A stable reference to an address that does not reveal it: 'hmac:' + 16 hex digits of the
 * deployment's keyed address digest (store/address-digest.ts). Keyed, unlike a plain hash: with a
 * list of candidate addresses anyone reading the log could test each against a SHA-256 and find the
 * address; without the key kept in Redis, no one can.
 */
export async function addressRef(redis: RedisClient, keys: Keys, address: string): Promise<string> {
  return `hmac:${(await addressDigest(redis, keys, address)).slice(0, 16)}`;
}

export async function appendAudit(redis: RedisClient, keys: Keys, e: AuditEntry, maxLen: number): Promise<string> {
  const fields: string[] = ['actor', e.actor, 'action', e.action, 'account', e.account, 'from', e.from];
  if (e.target !== undefined && e.target !== '') fields.push('target', e.target);
  if (e.key !== undefined && e.key !== '') fields.push('key', e.key);
  return (await redis.xadd(keys.audit(), 'MAXLEN', '~', maxLen, '*', ...fields)) as string;
}

function toRecord(id: string, flat: string[]): AuditRecord {
  const f = streamFields(flat);
  return {
    id,
    at: streamIdTime(id),
    actor: f['actor'] ?? '',
    action: f['action'] ?? '',
    account: f['account'] ?? '',
    from: f['from'] ?? '',
    ...(f['target'] !== undefined ? { target: f['target'] } : {}),
    ...(f['key'] !== undefined ? { key: f['key'] } : {}),
  };
}

/** Entries read per XREVRANGE while filtering by account. */
const PAGE = 500;
/** A filtered read stops after this many entries, so a rare account never walks a huge log at once. */
const MAX_SCANNED = 200_000;

/** The newest entries first, at most `limit`, optionally only those about one account. */
export async function readAudit(redis: RedisClient, keys: Keys, o: { readonly account?: string | undefined; readonly limit: number }): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  let end = '+';
  let scanned = 0;
  while (out.length < o.limit && scanned < MAX_SCANNED) {
    const count = o.account === undefined ? o.limit - out.length : PAGE;
    const page = (await redis.xrevrange(keys.audit(), end, '-', 'COUNT', count)) as [string, string[]][];
    for (const [id, flat] of page) {
      const r = toRecord(id, flat);
      if (o.account === undefined || r.account === o.account) out.push(r);
      if (out.length >= o.limit) break;
    }
    scanned += page.length;
    if (page.length < count) break;
    end = `(${(page[page.length - 1] as [string, string[]])[0]}`;
  }
  return out;
}
