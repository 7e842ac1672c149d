import type { RedisClient } from '../redis/client.js';
import { shardOf, type Keys } from '../redis/keys.js';
import { eachDestinationPage } from './stats.js';

/**
 * Operator holds: delivery to a destination domain, or to every destination of a shaping rule (a
 * provider such as 'microsoft'), stops until the hold is released or runs out, and the mail waits in
 * the queue meanwhile. This is what an operator does while a provider blocks the sending IPs (a
 * 5.7.x block would otherwise bounce every copy, and more attempts only lengthen the block) or while
 * a customer's domain has broken DNS (NXDOMAIN bounces): Postfix's defer_transports, for one
 * destination at a time.
 *
 * Kept in one HASH (keys.holds()): field 'domain:<d>' or 'rule:<name>' → JSON Hold. A handful of
 * fields at most; every dispatcher reads it whole, about once a second (HoldCache), so a hold or a
 * release reaches every delivery process within a second of the command.
 *
 * What a hold does (delivery/dispatcher.ts): a held destination gets no new connection, and a
 * connection that is sending to it claims nothing more after its current batch; the destination is
 * looked at again when the hold runs out or HOLD_RECHECK_MS later, whichever comes first (a release
 * by `sluice queue release` makes it due at once). Nothing is
 * attempted, deferred or bounced meanwhile (the attempt count does not move). Mail keeps its age:
 * what is older than the rule's maxAge when the hold ends expires at its next claim, as in any queue.
 */
export interface Hold {
  readonly kind: 'domain' | 'rule';
  /** A destination domain (lower-case A-label) or a shaping rule's name ('default' included). */
  readonly name: string;
  /** ms; null = until released. */
  readonly until: number | null;
  readonly reason: string;
  /** Who placed it (the audit log's actor). */
  readonly by: string;
  /** ms, when it was placed. */
  readonly at: number;
}

/** A hold as a destination's listing shows it (`sluice queue`, `queue list`, the queue routes). */
export interface HoldView { readonly kind: Hold['kind']; readonly name: string; readonly until: number | null; readonly reason: string }

/** The hold that stops delivery to `domain` under `rule` at `now`, as a listing shows it; null when none. */
export function heldView(holds: readonly Hold[], domain: string, rule: string | null, now: number): HoldView | null {
  const h = holdOf(holds, domain, rule, now);
  return h === null ? null : { kind: h.kind, name: h.name, until: h.until, reason: h.reason };
}

/** How soon a held destination is looked at again (a rule's release is seen by then; a domain's at once). */
export const HOLD_RECHECK_MS = 10_000;

/** How long a dispatcher trusts its copy of the holds. */
export const HOLD_CACHE_MS = 1_000;

/** Longest reason kept. */
export const HOLD_REASON_MAX = 200;

const field = (kind: Hold['kind'], name: string): string => `${kind}:${name}`;

function parseHold(f: string, json: string): Hold | null {
  const colon = f.indexOf(':');
  const kind = f.slice(0, colon);
  if (kind !== 'domain' && kind !== 'rule') return null;
  try {
    const v = JSON.parse(json) as { until?: unknown; reason?: unknown; by?: unknown; at?: unknown };
    return {
      kind, name: f.slice(colon + 1),
      until: typeof v.until === 'number' ? v.until : null,
      reason: typeof v.reason === 'string' ? v.reason : '',
      by: typeof v.by === 'string' ? v.by : '',
      at: typeof v.at === 'number' ? v.at : 0,
    };
  } catch {
    return null;
  }
}

const active = (h: Hold, now: number): boolean => h.until === null || h.until > now;

/** The holds in force at `now`, domains first, each kind by name. */
export async function readHolds(redis: RedisClient, keys: Keys, now: number): Promise<Hold[]> {
  const all = await redis.hgetall(keys.holds());
  const out: Hold[] = [];
  for (const [f, json] of Object.entries(all)) {
    const h = parseHold(f, json);
    if (h && active(h, now)) out.push(h);
  }
  return out.sort((a, b) => (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === 'domain' ? -1 : 1));
}

/**
 * Places (or replaces) a hold on each target; holds that have run out are removed on the way.
 * Returns the holds as written.
 */
export async function placeHolds(
  redis: RedisClient, keys: Keys,
  targets: readonly { kind: Hold['kind']; name: string }[],
  opts: { until: number | null; reason: string; by: string; now: number },
): Promise<Hold[]> {
  const reason = opts.reason.replace(/\s+/g, ' ').trim().slice(0, HOLD_REASON_MAX);
  const holds = targets.map((t): Hold => ({ kind: t.kind, name: t.name, until: opts.until, reason, by: opts.by, at: opts.now }));
  if (holds.length === 0) return [];
  await pruneHolds(redis, keys, opts.now);
  await redis.hset(keys.holds(), ...holds.flatMap((h) => [field(h.kind, h.name), JSON.stringify({ until: h.until, reason: h.reason, by: h.by, at: h.at })]));
  return holds;
}

/**
 * Removes the holds on the targets (all of them with 'all') and makes each released destination that
 * has queued mail due in the schedule now, so its mail goes at once rather than at the dispatcher's
 * next look (HOLD_RECHECK_MS): a released domain, and, when `ruleOf` is given, every destination
 * whose rule it says is a released one (it gets each destination's recorded rule, see
 * queue/destination-rule.ts; shaping.ts resolveRecordedShaping gives the rule as `sluice queue`
 * shows it). Returns the holds that were in force and are now gone.
 */
export async function releaseHolds(
  redis: RedisClient, keys: Keys, shards: number,
  targets: readonly { kind: Hold['kind']; name: string }[] | 'all', now: number,
  ruleOf?: (domain: string, recordedRule: string | null) => string,
): Promise<Hold[]> {
  const before = await readHolds(redis, keys, now);
  const gone = targets === 'all' ? before : before.filter((h) => targets.some((t) => t.kind === h.kind && t.name === h.name));
  if (targets === 'all') await redis.del(keys.holds());
  else if (targets.length > 0) await redis.hdel(keys.holds(), ...targets.map((t) => field(t.kind, t.name)));
  // XX: only a destination that is in the schedule (has work); LT: never later than it already is.
  const dueNow = (domain: string) => redis.zadd(keys.schedule(shardOf(domain, shards)), 'XX', 'LT', now, domain);
  const domains = new Set(gone.filter((h) => h.kind === 'domain').map((h) => h.name));
  for (const d of domains) await dueNow(d);
  const rules = new Set(gone.filter((h) => h.kind === 'rule').map((h) => h.name));
  if (rules.size > 0 && ruleOf) {
    await eachDestinationPage(redis, keys, shards, async (page) => {
      const recorded = await Promise.all(page.map((d) => redis.get(keys.destinationRule(d))));
      await Promise.all(page.map((d, i) => (!domains.has(d) && rules.has(ruleOf(d, recorded[i] ?? null)) ? dueNow(d) : null)));
    });
  }
  return gone;
}

/** Deletes the holds that have run out (they are ignored already; this keeps the hash small). */
export async function pruneHolds(redis: RedisClient, keys: Keys, now: number): Promise<number> {
  const all = await redis.hgetall(keys.holds());
  const stale = Object.entries(all).filter(([f, json]) => {
    const h = parseHold(f, json);
    return h === null || !active(h, now);
  }).map(([f]) => f);
  if (stale.length > 0) await redis.hdel(keys.holds(), ...stale);
  return stale.length;
}

/** The hold that stops delivery to `domain` under `rule` at `now`: the domain's own first, else its rule's. */
export function holdOf(holds: readonly Hold[], domain: string, rule: string | null, now: number): Hold | null {
  let byRule: Hold | null = null;
  for (const h of holds) {
    if (!active(h, now)) continue;
    if (h.kind === 'domain' && h.name === domain) return h;
    if (h.kind === 'rule' && rule !== null && h.name === rule) byRule = h;
  }
  return byRule;
}

/** When to look at a destination held by `h` again. */
export const recheckAt = (h: Hold, now: number): number => Math.min(h.until ?? Infinity, now + HOLD_RECHECK_MS);

/**
 * A delivery process's copy of the holds, read again when it is older than HOLD_CACHE_MS (one read
 * in flight at a time), or at once when the caller asks for a fresh one: the dispatcher does before
 * it postpones a destination its copy says is held, so a release (which makes the destination due)
 * is never met with a stale hold and a postponement. A failed read keeps the last copy (holds are
 * rare, and Redis being away stops delivery anyway) and is reported through `onError`.
 */
export class HoldCache {
  private holds: readonly Hold[] = [];
  private readAt = -Infinity;
  private reading: Promise<readonly Hold[]> | null = null;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    private readonly onRead: (holds: readonly Hold[]) => void = () => undefined,
    private readonly onError: (err: unknown) => void = () => undefined,
    private readonly maxAgeMs = HOLD_CACHE_MS,
  ) {}

  async get(now: number, fresh = false): Promise<readonly Hold[]> {
    if (!fresh && now - this.readAt < this.maxAgeMs) return this.holds;
    // A read already under way may have started before what the caller must see.
    if (fresh && this.reading) await this.reading;
    this.reading ??= readHolds(this.redis, this.keys, now)
      .then((h) => {
        this.holds = h;
        this.readAt = now;
        this.onRead(h);
        return h;
      })
      .catch((err: unknown) => {
        this.onError(err);
        return this.holds;
      })
      .finally(() => {
        this.reading = null;
      });
    return this.reading;
  }
}
