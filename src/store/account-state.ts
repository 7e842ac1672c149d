import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { ReputationRecorder } from './reputation.js';

/**
 * The lifecycle of an account beyond the configuration: accounts are defined in the config file,
 * but closing one is an operator's action that must take effect at once, in every process, without
 * a config reload. The record lives outside the account's own hash tag, because deleting the
 * account's data deletes everything under {a:<id>} and the record must survive that:
 *
 *   accounts:closed  HASH  account id → JSON ClosedAccount
 *
 *   close ──► closed (sending refused at ingress, queued mail held by delivery)
 *     │            │ purgeAt passes
 *     │ reopen     ▼
 *     └──────◄── deleting (housekeeping/retention.ts removes the data, incrementally)
 *                  │ one whole keyspace pass done
 *                  ▼
 *                deleted (deletedAt set; the record stays, so the account still cannot send nor
 *                         write data (ingress/http-api.ts) while the config names it; reopen starts
 *                         it afresh, with no data)
 */
export interface ClosedAccount {
  readonly account: string;
  /** ms since epoch */
  readonly closedAt: number;
  /** When the account's data is deleted (closedAt + retention.closedAccounts). */
  readonly purgeAt: number;
  /** Who closed it: 'cli' or 'operator:<id>'. */
  readonly by: string;
  /** When the deletion finished; null while the data is kept or being deleted. */
  readonly deletedAt: number | null;
}

function parse(account: string, json: string | null | undefined): ClosedAccount | null {
  if (json === null || json === undefined) return null;
  try {
    const o = JSON.parse(json) as Partial<ClosedAccount>;
    return { account, closedAt: Number(o.closedAt ?? 0), purgeAt: Number(o.purgeAt ?? 0), by: String(o.by ?? ''), deletedAt: o.deletedAt == null ? null : Number(o.deletedAt) };
  } catch {
    // A damaged record still closes: sending on for an account an operator closed is the worse error.
    return { account, closedAt: 0, purgeAt: Number.MAX_SAFE_INTEGER, by: '', deletedAt: null };
  }
}

function serialise(r: ClosedAccount): string {
  return JSON.stringify({ closedAt: r.closedAt, purgeAt: r.purgeAt, by: r.by, deletedAt: r.deletedAt });
}

/**
 * Closes an account: from now on it cannot send, and its data is deleted `windowMs` from now.
 * Closing a closed account changes nothing (the first close's deletion date stands); `created` says
 * which happened.
 */
export async function closeAccount(
  redis: RedisClient,
  keys: Keys,
  account: string,
  o: { readonly now: number; readonly windowMs: number; readonly by: string },
): Promise<{ record: ClosedAccount; created: boolean }> {
  const record: ClosedAccount = { account, closedAt: o.now, purgeAt: o.now + o.windowMs, by: o.by, deletedAt: null };
  if ((await redis.hsetnx(keys.closedAccounts(), account, serialise(record))) === 1) return { record, created: true };
  return { record: (await closedRecord(redis, keys, account)) ?? record, created: false };
}

/** Reopens a closed account (its sending resumes); null when it was not closed. */
export async function reopenAccount(redis: RedisClient, keys: Keys, account: string): Promise<ClosedAccount | null> {
  const was = await closedRecord(redis, keys, account);
  if (!was) return null;
  return (await redis.hdel(keys.closedAccounts(), account)) === 1 ? was : null;
}

export async function closedRecord(redis: RedisClient, keys: Keys, account: string): Promise<ClosedAccount | null> {
  return parse(account, await redis.hget(keys.closedAccounts(), account));
}

/**
 * Whether nothing may be written for the account any more: its deletion is due (purgeAt passed) or
 * done (deletedAt set). The retention walk removes its keys in keyspace order, so a write reaching a
 * key the walk has already passed (its suppression list, the event stream's entries about it) would
 * outlive the deletion. Until then a closed account's data is kept, and what is written goes with it.
 */
export async function deletionDue(redis: RedisClient, keys: Keys, account: string, now: number): Promise<boolean> {
  const closed = await closedRecord(redis, keys, account);
  return closed !== null && (closed.deletedAt !== null || closed.purgeAt <= now);
}

/** Every closed account (one HGETALL: closed accounts are few, a few hundred bytes each). */
export async function listClosed(redis: RedisClient, keys: Keys): Promise<ClosedAccount[]> {
  const flat = await redis.hgetall(keys.closedAccounts());
  return Object.entries(flat).map(([a, json]) => parse(a, json) as ClosedAccount).sort((x, y) => x.closedAt - y.closedAt);
}

/**
 * Records that the deletion finished, unless the account was reopened (or closed anew) meanwhile:
 * the record is replaced only when it is still the one the deletion started from.
 */
export async function markDeleted(redis: RedisClient, keys: Keys, record: ClosedAccount, at: number): Promise<boolean> {
  const current = await closedRecord(redis, keys, record.account);
  if (!current || current.closedAt !== record.closedAt || current.deletedAt !== null) return false;
  await redis.hset(keys.closedAccounts(), record.account, serialise({ ...current, deletedAt: at }));
  return true;
}

/**
 * "Is this account closed?" for the hot paths (every submission, every claimed copy). The whole
 * record set is read at most once per `cacheMs` per process (one HGETALL for all accounts), so a
 * close takes effect everywhere within that time — one second by default — at the cost of one
 * round trip per second, not one per message.
 */
export class ClosedAccounts {
  #snapshot: Map<string, ClosedAccount> = new Map();
  #until = 0;
  #loading: Promise<void> | undefined;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    private readonly cacheMs = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  /** The account's record when it is closed (or deleted), else null. */
  async get(account: string): Promise<ClosedAccount | null> {
    if (this.cacheMs <= 0) return closedRecord(this.redis, this.keys, account);
    if (this.now() >= this.#until) {
      this.#loading ??= listClosed(this.redis, this.keys)
        .then((all) => {
          this.#snapshot = new Map(all.map((r) => [r.account, r]));
          this.#until = this.now() + this.cacheMs;
        })
        .finally(() => {
          this.#loading = undefined;
        });
      await this.#loading;
    }
    return this.#snapshot.get(account) ?? null;
  }

  /** Drops the cached answer (this process just closed or reopened an account). */
  forget(): void {
    this.#until = 0;
  }
}

/** The pause reason delivery sees for a closed account's mail: it holds the copies (see holdClosed). */
export const ACCOUNT_CLOSED_REASON = 'account closed';

/**
 * Delivery checks one thing per copy at claim time: may this sender send now? A closed account may
 * not, whatever its reputation, so its answer comes first; the dispatcher holds such copies (no
 * attempt spent, no expiry) until the account is reopened or its messages are deleted.
 */
export function holdClosed(reputation: ReputationRecorder | undefined, closed: ClosedAccounts): ReputationRecorder {
  return {
    record: (o) => reputation?.record(o) ?? Promise.resolve(),
    check: async (account, domain) => ((await closed.get(account)) ? { reason: ACCOUNT_CLOSED_REASON } : (reputation?.check(account, domain) ?? null)),
    judgeCampaign: (campaignId) => reputation?.judgeCampaign?.(campaignId) ?? Promise.resolve(),
  };
}
