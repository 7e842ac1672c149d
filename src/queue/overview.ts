import type { Config } from '../config/schema.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { applyBackoff, backoffState } from './backoff.js';
import { heldView, readHolds } from './holds.js';
import { resolveRecordedShaping, tlsPolicyOf } from './shaping.js';
import { destinationStats, scopeStats } from './stats.js';

/**
 * The queue as an operator reads it (`sluice queue`, GET /v1/queue): the `limit` busiest destinations,
 * each with its counts, an operator's hold, the shaping rule the dispatcher resolved for it (by the
 * domain alone while none is recorded), its STARTTLS policy, and its throttle scope's state
 * (connections, tokens, backoff level, suspension and the answer that slowed it), the limits shown
 * being the slowed ones.
 */
export async function queueOverview(redis: RedisClient, keys: Keys, cfg: Pick<Config, 'shaping' | 'delivery'>, shards: number, now: number, limit: number) {
  const dests = await destinationStats(redis, keys, shards, now, limit);
  const holds = await readHolds(redis, keys, now);
  return Promise.all(
    dests.map(async (d) => {
      const configured = resolveRecordedShaping(cfg.shaping, d.domain, d.recordedRule);
      const bo = await backoffState(redis, keys, configured.scope, now);
      const s = applyBackoff(configured, bo.level, cfg.delivery.backoff);
      const scope = await scopeStats(redis, keys, s.scope, s.rate, now);
      const { recordedRule: _recorded, ...counts } = d;
      return {
        ...counts, held: heldView(holds, d.domain, s.rule, now),
        rule: s.rule, tls: tlsPolicyOf(configured, cfg.delivery.tls), scope: s.scope, connections: scope.connections, connectionLimit: s.connections, tokens: scope.tokens, rate: s.rate,
        backoffLevel: bo.level, backoffReason: bo.reason, suspendedUntil: bo.suspendedUntil,
        configuredConnectionLimit: configured.connections, configuredRate: configured.rate,
      };
    }),
  );
}

export type QueueRow = Awaited<ReturnType<typeof queueOverview>>[number];
