import { SluiceError, type FieldError } from '../core/errors.js';
import { ACCOUNT_ID } from '../config/schema.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { AccountRegistry } from '../accounts/registry.js';
import { closeAccount, closedRecord, reopenAccount, type ClosedAccount } from '../store/account-state.js';
import { readAudit, type AuditRecord } from '../store/audit.js';
import { methodNotAllowed, splitUrl } from './http-route.js';
import type { Config } from '../config/schema.js';
import { normaliseDomain } from '../core/address.js';
import { parseDuration } from '../core/time.js';
import { placeHolds, readHolds, releaseHolds, type Hold } from '../queue/holds.js';
import { resolveRecordedShaping } from '../queue/shaping.js';
import { queueOverview } from '../queue/overview.js';
import { describeDestinations } from './queue-view.js';

/**
 * The operator-only routes of the HTTP API (an operator key, `op_…`; an account key gets 403):
 *
 *   GET  /v1/accounts/:id         the account's state → 200 { account, state, closedAt?, purgeAt?, deletedAt? }
 *   POST /v1/accounts/:id/close   stops its sending now, deletes its data after retention.closedAccounts
 *                                 → 200 { …state } (closing a closed account changes nothing)
 *   POST /v1/accounts/:id/reopen  → 200 { …state }, 404 when it was not closed
 *   GET  /v1/audit?account=&limit=  the audit log, newest first → 200 { entries }
 *   GET  /v1/queue?limit=         the busiest destinations as `sluice queue --json` shows them → 200 { destinations }
 *   GET  /v1/queue/:domain?limit= its recipients one by one as `sluice queue list` → 200 { destination }
 *                                 (addresses: audited as queue.list)
 *   GET  /v1/holds                the operator holds in force (queue/holds.ts) → 200 { holds }
 *   POST /v1/holds {domain | rule, for?, reason?}  holds a destination or a shaping rule's
 *                                 destinations (as sluice queue hold) → 201 { hold }
 *   DELETE /v1/holds/domain/:d, /v1/holds/rule/:name  releases it, its destinations due at once
 *                                 → 200 { released }, 404 when it was not held
 *
 * Accounts are those of the configuration: an unknown id is a 404 (SLUICE_ACCOUNT_UNKNOWN).
 */
export interface AdminRouteDeps {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly registry: AccountRegistry;
  readonly closeAfterMs: number;
  readonly now: () => number;
  /** For the holds and the queue: the rules, the schedule's shards, delivery's TLS and backoff settings. */
  readonly shaping: Config['shaping'];
  readonly shards: number;
  readonly delivery: Config['delivery'];
}

export interface AdminAnswer {
  readonly status: number;
  readonly body: unknown;
  /** What changed, for the audit log (undefined for reads and for requests that changed nothing). */
  readonly audit?: { readonly action: string; readonly account: string; readonly target?: string } | undefined;
}

export interface AdminRoute {
  /** The route reads a JSON body (http-api reads it, bounded, and passes it as `input`). */
  readonly hasBody?: boolean;
  run(deps: AdminRouteDeps, operator: string, input?: unknown): Promise<AdminAnswer>;
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
  if (path === '/v1/queue') {
    if (method !== 'GET') throw methodNotAllowed('GET');
    return { run: async (d) => ({ status: 200, body: { destinations: await queueOverview(d.redis, d.keys, d, d.shards, d.now(), limitOf(query, 50, 1000)) } }) };
  }
  const queued = QUEUE_PATH.exec(path);
  if (queued) {
    if (method !== 'GET') throw methodNotAllowed('GET');
    const domain = normaliseDomain(decodeURIComponent(queued[1] as string));
    if (domain === undefined) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The request is invalid', { errors: [{ path: 'domain', message: 'must be a domain name' }] });
    const limit = limitOf(query, 100, 1000);
    return {
      run: async (d) => {
        const [destination] = await describeDestinations(d.redis, d.keys, d.shaping, [domain], limit);
        // It shows recipients' addresses: who read them is in the audit log, as for the CLI.
        return { status: 200, body: { destination }, audit: { action: 'queue.list', account: '', target: domain } };
      },
    };
  }
  if (path === '/v1/holds') {
    if (method === 'GET') return { run: async (d) => ({ status: 200, body: { holds: (await readHolds(d.redis, d.keys, d.now())).map(holdJson) } }) };
    if (method === 'POST') return { hasBody: true, run: (d, operator, input) => placeHold(d, operator, input) };
    throw methodNotAllowed('GET, POST');
  }
  const held = HOLD_PATH.exec(path);
  if (held) {
    if (method !== 'DELETE') throw methodNotAllowed('DELETE');
    const kind = held[1] as Hold['kind'];
    const name = kind === 'domain' ? normaliseDomain(decodeURIComponent(held[2] as string)) : decodeURIComponent(held[2] as string);
    return { run: (d) => releaseHold(d, kind, name) };
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

const HOLD_PATH = /^\/v1\/holds\/(domain|rule)\/([^/]{1,300})$/;

export function holdJson(h: Hold): Record<string, unknown> {
  return { kind: h.kind, name: h.name, until: h.until === null ? null : new Date(h.until).toISOString(), reason: h.reason, by: h.by, at: new Date(h.at).toISOString() };
}

async function placeHold(d: AdminRouteDeps, operator: string, input: unknown): Promise<AdminAnswer> {
  const o = (typeof input === 'object' && input !== null && !Array.isArray(input) ? input : {}) as Record<string, unknown>;
  const errors: FieldError[] = [];
  const rules = new Set(['default', ...d.shaping.rules.map((r) => r.name)]);
  let target: { kind: Hold['kind']; name: string } | null = null;
  if ((o['domain'] === undefined) === (o['rule'] === undefined)) errors.push({ path: 'domain', message: 'give exactly one of domain and rule' });
  else if (o['domain'] !== undefined) {
    const dom = typeof o['domain'] === 'string' ? normaliseDomain(o['domain']) : undefined;
    if (dom === undefined) errors.push({ path: 'domain', message: 'must be a domain name' });
    else target = { kind: 'domain', name: dom };
  } else if (typeof o['rule'] !== 'string' || !rules.has(o['rule'])) errors.push({ path: 'rule', message: `must be a shaping rule of the configuration (${[...rules].join(', ')})` });
  else target = { kind: 'rule', name: o['rule'] };
  let forMs: number | null = null;
  if (o['for'] !== undefined && o['for'] !== null) {
    const ms = typeof o['for'] === 'string' ? parseDuration(o['for']) : undefined;
    if (ms === undefined || ms <= 0) errors.push({ path: 'for', message: "must be a duration such as '30m', '2h' or '1d'" });
    else forMs = ms;
  }
  if (o['reason'] !== undefined && typeof o['reason'] !== 'string') errors.push({ path: 'reason', message: 'must be a string' });
  const extra = Object.keys(o).find((k) => !['domain', 'rule', 'for', 'reason'].includes(k));
  if (extra !== undefined) errors.push({ path: extra, message: 'unknown field' });
  if (errors.length > 0 || target === null) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The request is invalid', { errors });
  const now = d.now();
  const [hold] = await placeHolds(d.redis, d.keys, [target], { until: forMs === null ? null : now + forMs, reason: (o['reason'] as string | undefined) ?? '', by: `operator:${operator}`, now });
  return { status: 201, body: { hold: holdJson(hold as Hold) }, audit: { action: 'queue.hold', account: '', target: `${target.kind}:${target.name}` } };
}

async function releaseHold(d: AdminRouteDeps, kind: Hold['kind'], name: string | undefined): Promise<AdminAnswer> {
  if (name === undefined) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', 'No such hold');
  const gone = await releaseHolds(d.redis, d.keys, d.shards, [{ kind, name }], d.now(), (dom, recorded) => resolveRecordedShaping(d.shaping, dom, recorded).rule);
  if (gone.length === 0) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', `${kind} ${name} is not held`);
  return { status: 200, body: { released: holdJson(gone[0] as Hold) }, audit: { action: 'queue.release', account: '', target: `${kind}:${name}` } };
}

const QUEUE_PATH = /^\/v1\/queue\/([^/]{1,300})$/;

/** ?limit=N, a whole number from 1 to `max`; `dflt` when absent. */
function limitOf(query: URLSearchParams, dflt: number, max: number): number {
  const text = query.get('limit');
  if (text === null) return dflt;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The query is invalid', { errors: [{ path: 'limit', message: `must be a whole number from 1 to ${max}` }] });
  return n;
}
