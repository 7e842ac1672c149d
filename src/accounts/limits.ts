import { createHash, randomBytes } from 'node:crypto';
import type { Result } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { SluiceError, type ErrorCode } from '../core/errors.js';
import { DAY, HOUR, MINUTE, SECOND } from '../core/time.js';
import type { Account } from './registry.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/takeSending-1.lua over numberOfKeys counters: [granted, room per counter]. */
    takeSendingKeys(numberOfKeys: number, ...keysThenArgs: (string | number)[]): Result<number[], Context>;
    /** src/queue/lua/returnSending-1.lua over numberOfKeys counters: the counters decremented. */
    returnSendingKeys(numberOfKeys: number, ...keysThenArgs: (string | number)[]): Result<number, Context>;
  }
}

/**
 * Per-account sending limits, in Redis so they hold across every ingress process:
 *
 *   {a:<account>}:quota:<YYYY-MM-DD>     STRING  recipients accepted that UTC day
 *   {a:<account>}:rate:<s|m|h>:<window>  STRING  recipients accepted in that fixed window
 *   {a:<account>}:took:<random id>       STRING  one counting call's answer, kept 2 min (a resent call counts nothing)
 *
 * All counters of one account share its hash tag, so one script updates them on one slot. Fixed
 * windows (not a sliding log) because they cost one INCRBY each; the price is that a burst straddling
 * a window boundary may reach twice the limit for an instant, which is acceptable for a sending rate.
 * Reservations count before the message is persisted and are given back if persisting fails, so
 * a failed submission costs nothing and concurrent submissions cannot overshoot together.
 */

/** A refusal that tells the client when trying again makes sense (HTTP Retry-After). */
export class LimitError extends SluiceError {
  readonly retryAfterMs: number;
  constructor(code: ErrorCode, message: string, retryAfterMs: number) {
    super(code, message);
    this.retryAfterMs = retryAfterMs;
  }
}

export interface Reservation {
  /** Gives the reserved recipients back (persisting failed). Safe to call more than once. */
  release(): Promise<void>;
}

const WINDOWS = [
  { name: 'perSecond', tag: 's', size: SECOND },
  { name: 'perMinute', tag: 'm', size: MINUTE },
  { name: 'perHour', tag: 'h', size: HOUR },
] as const;

/** A rejection handler: Redis's own error becomes SLUICE_REDIS_UNAVAILABLE (retryable), its cause kept for the log. */
function redisRefused(what: string): (cause: unknown) => never {
  return (cause) => {
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', what, { cause });
  };
}

/** The UTC day of `now` as YYYY-MM-DD, the quota key's suffix. */
export function utcDay(now: number): string {
  return new Date(now).toISOString().slice(0, 10);
}

interface Counter {
  key: string;
  limit: number;
  /** The limit's config key: dailyQuota, rateLimit.perSecond … */
  name: SendingLimitName;
  /** The limit as the account's configuration names it, for a message it can never fit. */
  what: string;
  ttlMs: number;
  code: ErrorCode;
  message: string;
  retryAfterMs: number;
}

function countersFor(keys: Keys, account: SendingLimits, now: number): Counter[] {
  const out: Counter[] = [];
  if (account.dailyQuota !== null) {
    const nextMidnight = Math.floor(now / DAY) * DAY + DAY;
    out.push({
      key: keys.quota(account.id, utcDay(now)),
      limit: account.dailyQuota,
      name: 'dailyQuota',
      // Two days: the key outlives its day even when process clocks disagree a little.
      ttlMs: 2 * DAY,
      what: `its daily quota of ${account.dailyQuota}`,
      code: 'SLUICE_INGRESS_QUOTA_EXCEEDED',
      message: `Daily quota of ${account.dailyQuota} recipients reached; it resets at 00:00 UTC`,
      retryAfterMs: nextMidnight - now,
    });
  }
  for (const w of WINDOWS) {
    const limit = account.rateLimit[w.name];
    if (limit === null) continue;
    const window = Math.floor(now / w.size);
    out.push({
      key: `${keys.accountRate(account.id)}:${w.tag}:${window}`,
      limit,
      name: `rateLimit.${w.name}`,
      ttlMs: 2 * w.size,
      what: `its rate limit of ${limit} ${w.name.replace('per', 'per ').toLowerCase()}`,
      code: 'SLUICE_INGRESS_RATE_LIMITED',
      message: `Sending rate limit of ${limit} recipients ${w.name.replace('per', 'per ').toLowerCase()} reached, slow down`,
      retryAfterMs: (window + 1) * w.size - now,
    });
  }
  return out;
}

/**
 * The most recipients one message of this account can ever be counted for (its smallest limit), or
 * null when it has no limit. SMTP refuses RCPT TO past it, so that a client splits the message.
 */
export function recipientCap(account: Account): number | null {
  const limits = [account.dailyQuota, ...WINDOWS.map((w) => account.rateLimit[w.name])].filter((l): l is number => l !== null);
  return limits.length === 0 ? null : Math.min(...limits);
}

/**
 * Counts `count` recipients against the account's daily quota and rate windows, or throws a
 * LimitError (quota first: it lasts longer, so it is the more useful answer) and counts nothing.
 * A message with more recipients than a limit allows is SLUICE_INGRESS_TOO_MANY_RECIPIENTS: no
 * window will ever take it, so a 429 with Retry-After would have the client retry it for ever.
 */
export async function reserveSending(redis: RedisClient, keys: Keys, account: Account, count: number, now: number): Promise<Reservation> {
  const counters = countersFor(keys, account, now);
  if (counters.length === 0 || count <= 0) return { release: async () => {} };
  // The smallest limit (the quota first on a tie: it lasts longer).
  const cap = counters.reduce((min, c) => (c.limit < min.limit ? c : min));
  if (count > cap.limit) {
    throw new SluiceError('SLUICE_INGRESS_TOO_MANY_RECIPIENTS', `Too many recipients: ${count}, this account may send at most ${cap.limit} recipients per message (${cap.what}); split it`);
  }
  // All or nothing, in one script (takeSending-1.lua): a submission that does not fit counts nothing,
  // so it never uses up, even for a moment, room that another one fits in. A Redis refusing writes
  // (maxmemory, MISCONF) counts nothing either, and the client is told to retry (503 / 451), as when
  // the message cannot be stored.
  const res = await redis
    .takeSendingKeys(counters.length + 1, keys.sendingTook(account.id, writeId()), ...counters.map((c) => c.key), count, ...counters.map((c) => c.limit), ...counters.map((c) => c.ttlMs), '1', WRITE_ANSWER_KEEP_MS)
    .catch(redisRefused('the sending quota could not be counted'));
  let exceeded: Counter | undefined;
  if (Number(res[0]) < count) {
    // Every limit without room for all of them could be named: the quota first (it lasts longer).
    counters.forEach((c, i) => {
      if (Number(res[i + 1]) < count && (exceeded === undefined || exceeded.code !== 'SLUICE_INGRESS_QUOTA_EXCEEDED')) exceeded = c;
    });
    exceeded ??= counters[0];
  }
  let released = false;
  // As a campaign's copies are given back (returnSending-1.lua): a counter whose window ended
  // meanwhile (a persist that failed seconds later) is left alone; a DECRBY recreated it at -count,
  // with no TTL, kept for good.
  const release = async (): Promise<void> => {
    if (released) return;
    released = true;
    await redis.returnSendingKeys(counters.length, ...counters.map((c) => c.key), count);
  };
  if (exceeded) throw new LimitError(exceeded.code, exceeded.message, exceeded.retryAfterMs);
  return { release };
}

/**
 * How long a takeSending-1.lua call's answer is kept, for the same call sent again by the Redis client
 * after a lost reply (it is sent as soon as the connection is back). ~100 B a call while kept: 12 MB
 * at 1,000 submissions a second of accounts with limits (an accepted 10 KB message keeps ~14 KB).
 */
const WRITE_ANSWER_KEEP_MS = 120_000;

function writeId(): string {
  return randomBytes(12).toString('base64url');
}

/** An account's sending limit by its config key. */
export type SendingLimitName = 'dailyQuota' | 'rateLimit.perSecond' | 'rateLimit.perMinute' | 'rateLimit.perHour';

/** What takeSending needs of an account: its id and limits. */
export type SendingLimits = Pick<Account, 'id' | 'dailyQuota' | 'rateLimit'>;

/** The counters a takeSending call counted on, for returnSending. */
export interface SendingCounted {
  readonly keys: readonly string[];
  /** The keys as one string: refunds of one claim are summed by it. */
  readonly id: string;
}

export interface SendingTake {
  /** Copies counted, at most the number asked for. */
  readonly granted: number;
  /** When the counters that stopped the rest have room again (the end of their window); null when all were granted. */
  readonly retryAt: number | null;
  /** The limit that stopped the rest, as the configuration names it, in words. */
  readonly what: string | null;
  /** The same: its config key and value. */
  readonly stoppedBy: { readonly name: SendingLimitName; readonly limit: number } | null;
  /** Null when the account has no limit (nothing was counted). */
  readonly counters: SendingCounted | null;
}

/**
 * Counts up to `want` campaign copies against the account's daily quota and rate windows, the same
 * counters its submissions count on (reserveSending), as they are about to be sent: as many as every
 * counter has room for (queue/lua/takeSending-1.lua, one step). The rest wait for `retryAt`. A
 * campaign's copies are counted when sent, not when it is launched, so one larger than a day's quota
 * goes over several days at the quota's pace instead of being refused.
 */
export async function takeSending(redis: RedisClient, keys: Keys, account: SendingLimits, want: number, now: number): Promise<SendingTake> {
  const counters = countersFor(keys, account, now);
  if (counters.length === 0 || want <= 0) return { granted: Math.max(0, want), retryAt: null, what: null, stoppedBy: null, counters: null };
  const names = counters.map((c) => c.key);
  const res = await redis
    .takeSendingKeys(counters.length + 1, keys.sendingTook(account.id, writeId()), ...names, want, ...counters.map((c) => c.limit), ...counters.map((c) => c.ttlMs), '', WRITE_ANSWER_KEEP_MS)
    .catch(redisRefused('the sending quota could not be counted'));
  const granted = Number(res[0]);
  // Every counter with no more room than was granted stops the rest: they go when the last of them resets.
  let by: Counter | null = null;
  if (granted < want) {
    for (const [i, c] of counters.entries()) {
      if (Number(res[i + 1]) <= granted && (by === null || c.retryAfterMs > by.retryAfterMs)) by = c;
    }
  }
  return {
    granted,
    retryAt: by ? now + by.retryAfterMs : null,
    what: by?.what ?? null,
    stoppedBy: by ? { name: by.name, limit: by.limit } : null,
    counters: granted === 0 ? null : { keys: names, id: names.join(' ') },
  };
}

/** Gives back `n` copies counted by takeSending and not sent; a counter whose window is over is left alone (as reserveSending's release). */
export async function returnSending(redis: RedisClient, counted: SendingCounted, n: number): Promise<void> {
  if (n <= 0) return;
  await redis.returnSendingKeys(counted.keys.length, ...counted.keys, n);
}

/** Whether the account has a daily quota or a rate limit at all (takeSending counts nothing otherwise). */
export function hasSendingLimits(account: SendingLimits): boolean {
  return account.dailyQuota !== null || WINDOWS.some((w) => account.rateLimit[w.name] !== null);
}

export interface AuthThrottleOptions {
  /** Failures (per IP or per user) after which every further answer is delayed. */
  delayAfter: number;
  /** Failures after which attempts are refused outright until the window passes. */
  refuseAfter?: number;
  /** How long failures are remembered, counted from the latest one. */
  windowMs?: number;
  /** Delay after the first failure past delayAfter; doubles with each further failure. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /**
   * Whether a user's failures refuse it from every IP (default true). Off for credentials no one can
   * guess (API keys, 190 bits): the lock-out would protect nothing, and anyone could stop an account's
   * API by sending refuseAfter wrong keys naming it. Its failures still delay wrong answers.
   */
  lockUsers?: boolean;
}

/** An attempt begin() let go to its check: end() it once answered. `id` null: not counted (Redis refused the write). */
export interface PendingAttempt extends AuthVerdict {
  readonly id: string | null;
  readonly ip: string;
  readonly user: string | undefined;
}

/** How long an attempt being checked counts at most (a process that died while checking it leaves it behind). */
const PENDING_TTL_MS = 60 * SECOND;
/** How long an attempt waits for room among those being checked before it is refused. */
const BEGIN_WAIT_MS = 10 * SECOND;

export interface AuthVerdict {
  /** Wait this long before answering (tarpit), 0 for none. */
  readonly delayMs: number;
  /** Recent failures counted against the user (0 when none was named): a success need clear only these. */
  readonly userFailures: number;
}

/**
 * Slows down password guessing across every process: failures are counted in Redis per client IP and
 * per user name (hashed: user names come from the network and are not key material). After
 * `delayAfter` failures each answer is delayed (250 ms doubling to 5 s: a person retyping a password
 * barely notices, a guesser's rate drops by orders of magnitude); after `refuseAfter` (default 20)
 * attempts are refused with SLUICE_AUTH_THROTTLED until `windowMs` (default 15 min) passes (a
 * user's, only with lockUsers).
 */
export class AuthThrottle {
  private readonly refuseAfter: number;
  private readonly windowMs: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    private readonly opts: AuthThrottleOptions,
  ) {
    this.refuseAfter = opts.refuseAfter ?? 20;
    this.windowMs = opts.windowMs ?? 15 * MINUTE;
    this.baseDelayMs = opts.baseDelayMs ?? 250;
    this.maxDelayMs = opts.maxDelayMs ?? 5 * SECOND;
  }

  /** The failure counts' keys of this IP and user; with `suffix` '-pending', those of the attempts being checked (begin). */
  private subjects(ip: string, user?: string, suffix = ''): string[] {
    const out = [this.keys.authFailures(`ip${suffix}`, ip)];
    if (user !== undefined && user !== '') {
      out.push(this.keys.authFailures(`user${suffix}`, createHash('sha256').update(user).digest('base64url').slice(0, 22)));
    }
    return out;
  }

  private verdict(failures: number, userFailures: number): AuthVerdict {
    if (failures >= this.refuseAfter) throw new SluiceError('SLUICE_AUTH_THROTTLED');
    if (failures < this.opts.delayAfter) return { delayMs: 0, userFailures };
    return { delayMs: Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (failures - this.opts.delayAfter)), userFailures };
  }

  /** Before checking credentials: throws SLUICE_AUTH_THROTTLED when this IP or user is locked out. */
  async check(ip: string, user?: string): Promise<AuthVerdict> {
    const { failures, verdict } = await this.failures(ip, user);
    if (failures >= this.refuseAfter) throw new SluiceError('SLUICE_AUTH_THROTTLED');
    return verdict;
  }

  /** Records a failure; the verdict says how long to delay the failure's answer. */
  async fail(ip: string, user?: string): Promise<AuthVerdict> {
    const counts = await Promise.all(
      this.subjects(ip, user).map(async (k) => {
        // A failure Redis will not count is answered 503 / 451 (retry later), not as a wrong password:
        // that would let a guesser go on unthrottled for as long as Redis refuses writes.
        const res = await this.redis.multi().incr(k).pexpire(k, this.windowMs).exec().catch(redisRefused('the failed login could not be counted'));
        return Number(res?.[0]?.[1] ?? 0);
      }),
    );
    const failures = Math.max(0, ...counts);
    try {
      return this.verdict(failures, counts[1] ?? 0);
    } catch {
      // The attempt that crosses the line still gets the usual "wrong credentials" answer, late.
      return { delayMs: this.maxDelayMs, userFailures: counts[1] ?? 0 };
    }
  }

  /**
   * Lets an attempt at a password a guesser could find (SMTP) go to its check, or not. Checked then
   * counted (check(), then fail()), every attempt of a burst began before the first failures were
   * counted: 40 guesses sent at once from 40 addresses were all checked against a limit of 20. So
   * the attempts being checked are counted too, apart from the failures (a sorted set per IP and
   * user, each attempt a member that lapses after PENDING_TTL_MS, so a process that dies leaves no
   * count behind): an attempt goes ahead while failures + attempts being checked stay within
   * refuseAfter, else it waits for those to be answered — a burst of right passwords (an
   * application's connection pool) only waits a moment — and is refused once the failures alone
   * reach the limit, or after BEGIN_WAIT_MS. While Redis refuses writes the attempts are not counted
   * and the check goes ahead as check() lets it (a right password is still taken). end() must follow
   * the answer; a wrong answer is fail()'s to count, as before.
   */
  async begin(ip: string, user?: string): Promise<PendingAttempt> {
    const id = randomBytes(8).toString('base64url');
    const pending = this.subjects(ip, user, '-pending');
    const deadline = Date.now() + BEGIN_WAIT_MS;
    for (;;) {
      // The slot first, then the failures: an attempt checked beside this one is then either still in
      // its count, or over, and its failure (counted before its end()) in the read that follows.
      // The other order let one end between the two reads and be seen in neither: twice the limit.
      const now = Date.now();
      let counts: number[] | null;
      try {
        counts = await Promise.all(
          pending.map(async (k) => {
            const res = await this.redis.multi().zremrangebyscore(k, '-inf', now - PENDING_TTL_MS).zadd(k, now, id).zcard(k).pexpire(k, PENDING_TTL_MS).exec();
            const err = res?.find(([e]) => e !== null)?.[0];
            if (err) throw err;
            return Number(res?.[2]?.[1] ?? 0);
          }),
        );
      } catch {
        await this.forget(pending, id);
        counts = null;
      }
      const { failures, verdict } = await this.failures(ip, user).catch(async (err: unknown) => {
        await this.forget(pending, id);
        throw err;
      });
      if (failures >= this.refuseAfter) {
        await this.forget(pending, id);
        throw new SluiceError('SLUICE_AUTH_THROTTLED');
      }
      // Redis refused the write: not counted, the check goes ahead as check() lets it.
      if (counts === null) return { ...verdict, id: null, ip, user };
      const [ipPending = 0, userPending = 0] = counts;
      const inFlight = this.opts.lockUsers === false ? ipPending : Math.max(ipPending, userPending);
      if (failures + inFlight <= this.refuseAfter) return { ...verdict, id, ip, user };
      await this.forget(pending, id);
      if (Date.now() >= deadline) throw new SluiceError('SLUICE_AUTH_THROTTLED');
      await new Promise((r) => setTimeout(r, 25 + Math.floor(Math.random() * 50)));
    }
  }

  /** The attempt begin() let through was answered (after fail() or succeed()): it is no longer being checked. */
  async end(attempt: PendingAttempt): Promise<void> {
    if (attempt.id !== null) await this.forget(this.subjects(attempt.ip, attempt.user, '-pending'), attempt.id);
  }

  private async forget(keys: readonly string[], id: string): Promise<void> {
    await Promise.all(keys.map((k) => this.redis.zrem(k, id).catch(() => 0)));
  }

  /** The failures counted against this IP and user (the larger, with lockUsers), and check()'s verdict on them. */
  private async failures(ip: string, user?: string): Promise<{ failures: number; verdict: AuthVerdict }> {
    // Separate GETs: the keys have no common hash tag (an IP and a user are unrelated), so one
    // MULTI could span two cluster slots.
    const counts = (await Promise.all(this.subjects(ip, user).map((k) => this.redis.get(k)))).map((c) => Number(c ?? 0));
    const [ipFailures = 0, userFailures = 0] = counts;
    const failures = this.opts.lockUsers === false ? ipFailures : Math.max(ipFailures, userFailures);
    if (failures >= this.refuseAfter) return { failures, verdict: { delayMs: this.maxDelayMs, userFailures } };
    return { failures, verdict: this.verdict(failures, userFailures) };
  }

  /**
   * A success clears the user's count (not the IP's: one valid login must not reset a guesser's IP).
   * When Redis refuses the DEL (MISCONF, no replicas) the count is left to expire with its window:
   * the right credentials must not be refused while reads (a message's status) still work.
   */
  async succeed(user: string): Promise<void> {
    const [, userKey] = this.subjects('-', user);
    if (userKey) await this.redis.del(userKey).catch(() => undefined);
  }
}
