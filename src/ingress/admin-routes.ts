import { SluiceError, type FieldError } from '../core/errors.js';
import { ACCOUNT_ID } from '../config/schema.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { AccountRegistry } from '../accounts/registry.js';
import { closeAccount, closedRecord, reopenAccount, type ClosedAccount } from '../store/account-state.js';
import { readAudit, type AuditRecord } from '../store/audit.js';
import { methodNotAllowed, splitUrl } from './http-route.js';

/**
 * The operator-only routes of the HTTP API (an operator key, `op_…`; an account key gets 403):
 *
 *   GET  /v1/accounts/:id         the account's state → 200 { account, state, closedAt?, purgeAt?, deletedAt? }
 *   POST /v1/accounts/:id/close   stops its sending now, deletes its data after retention.closedAccounts
 *                                 → 200 { …state } (closing a closed account changes nothing)
 *   POST /v1/accounts/:id/reopen  → 200 { …state }, 404 when it was not closed
 *   GET  /v1/audit?account=&limit=  the audit log, newest first → 200 { entries }
 *
 * Accounts are those of the configuration: an unknown id is a 404 (SLUICE_ACCOUNT_UNKNOWN).
 */
export interface AdminRouteDeps {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly registry: AccountRegistry;
  readonly closeAfterMs: number;
  readonly now: () => number;
}

export interface AdminAnswer {
  readonly status: number;
  readonly body: unknown;
  /** What changed, for the audit log (undefined for reads and for requests that changed nothing). */
  readonly audit?: { readonly action: string; readonly account: string } | undefined;
}

export interface AdminRoute {
  run(deps: AdminRouteDeps, operator: string): Promise<AdminAnswer>;
}

const ACCOUNT_PATH = /^\/v1\/accounts\/([a-z0-9][a-z0-9_-]{0,62})(?:\/(close|reopen))?$/;
const DEFAULT_AUDIT_LIMIT = 100;
const MAX_AUDIT_LIMIT = 1000;

export function stateJson(account: string, r: ClosedAccount | null): Record<string, unknown> {
  if (!r) return { account, state: 'open' };
  const iso = (t: number) => new Date(t).toISOString();
  return {
    account,
    state: r.deletedAt !== null ? 'deleted' : 'closed',
    closedAt: iso(r.closedAt),
    purgeAt: iso(r.purgeAt),
    closedBy: r.by,
    ...(r.deletedAt !== null ? { deletedAt: iso(r.deletedAt) } : {}),
  };
}

export function auditJson(r: AuditRecord): Record<string, unknown> {
  return { id: r.id, at: new Date(r.at).toISOString(), actor: r.actor, key: r.key ?? null, action: r.action, account: r.account || null, target: r.target ?? null, from: r.from };
}

/** The admin route of this request, null when the path is not one; throws 405 for a wrong method. */
export function matchAdminRoute(method: string, url: string): AdminRoute | null {
  const { path, query } = splitUrl(url);
  if (path === '/v1/audit') {
    if (method !== 'GET') throw methodNotAllowed('GET');
    return { run: (d) => audit(d, query) };
  }
  const m = ACCOUNT_PATH.exec(path);
  if (!m) return null;
  const id = m[1] as string;
  const action = m[2];
  if (action === undefined) {
    if (method !== 'GET') throw methodNotAllowed('GET');
    return { run: async (d) => ({ status: 200, body: stateJson(known(d, id), await closedRecord(d.redis, d.keys, id)) }) };
  }
  if (method !== 'POST') throw methodNotAllowed('POST');
  if (action === 'close') {
    return {
      run: async (d, operator) => {
        const { record, created } = await closeAccount(d.redis, d.keys, known(d, id), { now: d.now(), windowMs: d.closeAfterMs, by: `operator:${operator}` });
        return { status: 200, body: stateJson(id, record), audit: created ? { action: 'account.close', account: id } : undefined };
      },
    };
  }
  return {
    run: async (d) => {
      if (!(await reopenAccount(d.redis, d.keys, known(d, id)))) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', `Account ${id} is not closed`);
      return { status: 200, body: stateJson(id, null), audit: { action: 'account.reopen', account: id } };
    },
  };
}

function known(d: AdminRouteDeps, id: string): string {
  if (!d.registry.get(id)) throw new SluiceError('SLUICE_ACCOUNT_UNKNOWN', `No account ${id} in the configuration`);
  return id;
}

async function audit(d: AdminRouteDeps, query: URLSearchParams): Promise<AdminAnswer> {
  const account = query.get('account') ?? undefined;
  const limitText = query.get('limit');
  const limit = limitText === null ? DEFAULT_AUDIT_LIMIT : Number(limitText);
  const errors: FieldError[] = [];
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_AUDIT_LIMIT) errors.push({ path: 'limit', message: `must be a whole number from 1 to ${MAX_AUDIT_LIMIT}` });
  if (account !== undefined && !ACCOUNT_ID.test(account)) errors.push({ path: 'account', message: 'must be an account id' });
  if (errors.length > 0) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The query is invalid', { errors });
  return { status: 200, body: { entries: (await readAudit(d.redis, d.keys, { account, limit })).map(auditJson) } };
}
