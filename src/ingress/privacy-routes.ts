import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { eraseAddress, exportAddress, type PrivacyScope } from '../store/privacy.js';
import { addressRef } from '../store/audit.js';
import { methodNotAllowed, pathAddress } from './http-route.js';

/**
 * Recipients' rights on the HTTP API (DESIGN §7, store/privacy.ts):
 *
 *   GET    /v1/recipients/:email/export  → 200 everything held about the address (JSON)
 *   DELETE /v1/recipients/:email         → 200 { erased: counts } — every trace removed, a suppression
 *                                          kept as a salted digest
 *
 * An account's key acts within its own account. An operator key acts on every account, or on one
 * with ?account=ID. http-api.ts authenticates and writes the audit entry (target: addressRef).
 */
export interface PrivacyRouteDeps {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly eventsMaxLen: number;
  readonly recordTtlMs: number;
  /** ingress/persist.ts refsTtlMs */
  readonly refsTtlMs: number;
}

export interface PrivacyRoute {
  readonly action: 'recipient.export' | 'recipient.erase';
  readonly address: string;
  run(deps: PrivacyRouteDeps, scope: PrivacyScope): Promise<{ status: number; body: unknown }>;
}

const EXPORT_PATH = /^\/v1\/recipients\/([^/]+)\/export$/;
const ONE_PATH = /^\/v1\/recipients\/([^/]+)$/;

/** The route for this path, null when it is not one of these; throws 405 for a wrong method. */
export function matchPrivacyRoute(method: string, path: string): PrivacyRoute | null {
  const e = EXPORT_PATH.exec(path);
  if (e) {
    if (method !== 'GET') throw methodNotAllowed('GET');
    const a = pathAddress(e[1] as string);
    return { action: 'recipient.export', address: a, run: async (d, scope) => ({ status: 200, body: await exportAddress(d.redis, d.keys, a, scope) }) };
  }
  const m = ONE_PATH.exec(path);
  if (m) {
    if (method !== 'DELETE') throw methodNotAllowed('DELETE');
    const a = pathAddress(m[1] as string);
    return {
      action: 'recipient.erase',
      address: a,
      run: async (d, scope) => ({
        status: 200,
        body: { erased: await eraseAddress(d.redis, d.keys, a, scope, { eventsMaxLen: d.eventsMaxLen, recordTtlMs: d.recordTtlMs, refsTtlMs: d.refsTtlMs, ref: await addressRef(d.redis, d.keys, a) }) },
      }),
    };
  }
  return null;
}
