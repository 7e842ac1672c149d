import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { ExpiringLru } from '../core/lru.js';
import { HOUR } from '../core/time.js';

/**
 * The shaping rule of a destination, as the dispatcher resolved it with the destination's MX hosts.
 *
 * A rule can match a destination by its MX hosts only (the default `google` rule: `mx: ['*.google.com']`),
 * and only the dispatcher looks those up. So that `sluice queue` and the queue gauges put such a
 * destination under the same rule (and provider label) as its deliveries, the dispatcher records the
 * rule it resolved in `{d:<domain>}:rule` (a STRING: the rule name, or 'default'); the readers fall
 * back to matching the domain alone while nothing is recorded (queue/shaping.ts resolveRecordedShaping).
 *
 * Lifecycle: the key lives under the destination's own hash tag, holds a rule name only (no address,
 * nothing personal, so erasure and retention leave it alone), and expires RULE_TTL_S after the last
 * write. A destination the dispatcher no longer visits loses its record within a week; one it visits
 * has it refreshed at most every REWRITE_MS.
 */

/** Seconds a record is kept after its last write: longer than any pause between two visits of a destination with queued mail. */
export const RULE_TTL_S = 7 * 24 * 3600;
/** A record unchanged is written again after this long: its TTL is renewed, and one lost (a flush) comes back. */
export const REWRITE_MS = HOUR;
/** Destinations whose last write a dispatcher remembers (oldest forgotten first, then written again on their next visit). */
const REMEMBERED = 100_000;

/**
 * Records each destination's rule from the dispatcher's hot path without a write per visit: a write
 * only when the rule differs from the one this process last wrote, or REWRITE_MS after it. The write
 * is not awaited; a failed one is forgotten, so the next visit tries again.
 */
export class DestinationRuleRecorder {
  private readonly written = new ExpiringLru<string>(REMEMBERED);

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  record(domain: string, rule: string, now: number): void {
    if (this.written.get(domain, now) === rule) return;
    this.written.set(domain, rule, now + REWRITE_MS);
    this.redis.set(this.keys.destinationRule(domain), rule, 'EX', RULE_TTL_S).catch((err: unknown) => {
      this.written.delete(domain);
      this.onError(err);
    });
  }
}
