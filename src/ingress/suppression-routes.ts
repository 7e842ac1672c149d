import { z } from 'zod';
import { SluiceError } from '../core/errors.js';
import { normaliseDomain, parseAddress } from '../core/address.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { addSuppression, GLOBAL_LIST, listSuppressions, removeSuppression, suppressionOf, type SuppressionEntry } from '../store/suppression.js';
import { listPaused, operatorPaused, pauseByOperator, resumeSender, type PauseRecord } from '../store/reputation.js';
import { addressRef } from '../store/audit.js';
import type { IncomingMessage } from 'node:http';
import { importSuppressions, type SuppressionFormat } from '../store/suppression-import.js';
import type { SuppressionReason } from '../store/suppression.js';
import { fieldErrors } from './http-schema.js';
import { isScanCursor, MAX_ADDRESS, methodNotAllowed, pageQuery, pathAddress, splitUrl, type RouteAnswer } from './http-route.js';

/**
 * The suppression and sender routes of the HTTP API, always scoped to the authenticated account:
 *
 *   GET    /v1/suppressions?cursor=&limit=  a page of the account's list → 200 { suppressions, cursor }
 *   GET    /v1/suppressions/:email          why the address is suppressed (the account's entry, else
 *                                           the global list's) → 200, or 404 when it is not
 *   POST   /v1/suppressions {email, reason?}  → 201 added, 200 when it was there already (kept as it was)
 *   DELETE /v1/suppressions/:email          → 204, 404 when not on the account's list, 403 when only
 *                                           on the global list (addresses that do not exist: read-only)
 *   POST   /v1/suppressions/import?reason=R  a whole list: body text/csv, application/x-ndjson or
 *                                           text/plain (one address per line), read as it arrives
 *                                           (importSuppressionsRoute) → 200 with the counts
 *   GET    /v1/sender                       the account's paused senders → 200 { paused }
 *   POST   /v1/sender/pause {domain?, reason?}  operator keys only (?account=ID): pauses that sending
 *                                           domain, or the whole account, as sluice sender pause → 200 { paused }
 *   POST   /v1/sender/resume {domain?}      → 200 { resumed }: that domain, or every pause of the account;
 *                                           an operator's pause only with an operator's key (else kept,
 *                                           as keptByOperator, or 403 when nothing else was paused)
 *
 * Another account's list is never read or written: an address it suppressed is a 404 here. The
 * global list is not listed either (its addresses came from every account's mail); a lookup shows
 * its entry only for the address asked about, and its evidence only to the account whose mail made it. The module leaves authentication and body reading to
 * http-api.ts and answers plain { status, body } values.
 */
export interface SuppressionRouteDeps {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly eventsMaxLen: number;
  readonly now?: (() => number) | undefined;
  /** The caller is an operator (acting for the account): it may pause a sender, and lift an operator's pause. */
  readonly operator?: boolean;
  /** Who calls, as the audit log names it (operator:<id> or account:<id>). */
  readonly actor?: string;
  /** sluice_suppressions_added_total: `n` addresses put on the account's list for `reason`. */
  readonly suppressed?: ((reason: SuppressionReason, n: number) => void) | undefined;
}

export interface OwnRoute {
  /** For the sluice_http_requests_total route label. */
  readonly name: 'suppressions' | 'sender';
  /** Whether the route reads a JSON body (http-api reads it, bounded by MAX_SUPPRESSION_BODY_BYTES). */
  readonly hasBody: boolean;
  run(deps: SuppressionRouteDeps, account: string, input: unknown): Promise<RouteAnswer>;
}

/** An address and a reason, or a domain: a few hundred bytes; 16 KiB leaves room and bounds memory. */
export const MAX_SUPPRESSION_BODY_BYTES = 16 * 1024;

const ACCOUNT_REASONS = ['manual', 'unsubscribe', 'complaint', 'hardbounce', 'softbounce'] as const;
const addSchema = z.object({ email: z.string().min(3).max(MAX_ADDRESS), reason: z.enum(ACCOUNT_REASONS).optional() }).strict();
const resumeSchema = z.object({ domain: z.string().min(1).max(253).nullable().optional() }).strict();
const pauseSchema = z.object({ domain: z.string().min(1).max(253).nullable().optional(), reason: z.string().max(200).optional() }).strict();

const LIST_PATH = '/v1/suppressions';
const ONE_PATH = /^\/v1\/suppressions\/([^/]+)$/;

/** The route for this request, null when the path is not one of these; throws 405 for a wrong method. */
export function matchSuppressionRoute(method: string, url: string): OwnRoute | null {
  const { path, query } = splitUrl(url);
  if (path === LIST_PATH) {
    if (method === 'GET') return { name: 'suppressions', hasBody: false, run: (d, a) => list(d, a, query) };
    if (method === 'POST') return { name: 'suppressions', hasBody: true, run: add };
    throw methodNotAllowed('GET, POST');
  }
  const m = ONE_PATH.exec(path);
  if (m) {
    const raw = m[1] as string;
    if (method === 'GET') return { name: 'suppressions', hasBody: false, run: (d, a) => lookup(d, a, pathAddress(raw)) };
    if (method === 'DELETE') return { name: 'suppressions', hasBody: false, run: (d, a) => remove(d, a, pathAddress(raw)) };
    throw methodNotAllowed('GET, DELETE');
  }
  if (path === '/v1/sender') {
    if (method === 'GET') return { name: 'sender', hasBody: false, run: status };
    throw methodNotAllowed('GET');
  }
  if (path === '/v1/sender/resume') {
    if (method === 'POST') return { name: 'sender', hasBody: true, run: resume };
    throw methodNotAllowed('POST');
  }
  if (path === '/v1/sender/pause') {
    if (method === 'POST') return { name: 'sender', hasBody: true, run: pause };
    throw methodNotAllowed('POST');
  }
  return null;
}

function entryJson(address: string, e: SuppressionEntry): Record<string, unknown> {
  return { email: address, reason: e.reason, at: e.at > 0 ? new Date(e.at).toISOString() : null, evidence: e.evidence };
}

async function list(deps: SuppressionRouteDeps, account: string, query: URLSearchParams): Promise<RouteAnswer> {
  // HSCAN's COUNT is a hint, so a page may hold a little more or less than the limit.
  const { cursor, limit } = pageQuery(query, isScanCursor);
  const page = await listSuppressions(deps.redis, deps.keys, account, cursor ?? '0', limit);
  return {
    status: 200,
    body: { suppressions: page.entries.map((e) => entryJson(e.address, e)), cursor: page.cursor === '0' ? null : page.cursor },
  };
}

async function lookup(deps: SuppressionRouteDeps, account: string, address: string): Promise<RouteAnswer> {
  const hit = await suppressionOf(deps.redis, deps.keys, account, address);
  if (!hit) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', 'The address is not suppressed for this account');
  if (hit.list !== GLOBAL_LIST) return { status: 200, body: { ...entryJson(address, hit), list: 'account' } };
  // The global entry's reason and time are the address's; its evidence (event, message and feedback
  // ids) is the account's whose mail made it, shown only to that account (as the export does).
  const { evidence, ...rest } = entryJson(address, hit);
  return { status: 200, body: { ...rest, ...((await madeByOwnMail(deps, account, hit.evidence)) ? { evidence } : {}), list: 'global' } };
}

/** Whether suppression evidence names a message or campaign of `account` (its meta says so). */
async function madeByOwnMail(deps: SuppressionRouteDeps, account: string, evidence: SuppressionEntry['evidence'] | undefined): Promise<boolean> {
  const msgId = evidence?.['msgId'];
  return typeof msgId === 'string' && (await deps.redis.hget(deps.keys.msgMeta(msgId), 'account')) === account;
}

async function add(deps: SuppressionRouteDeps, account: string, input: unknown): Promise<RouteAnswer> {
  const parsed = addSchema.safeParse(input);
  if (!parsed.success) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The suppression is invalid', { errors: fieldErrors(parsed.error) });
  const address = parseAddress(parsed.data.email)?.address;
  if (address === undefined) throw new SluiceError('SLUICE_INGRESS_BAD_ADDRESS', 'The address is not valid', { errors: [{ path: 'email', message: 'not a valid email address' }] });
  const existing = await suppressionOf(deps.redis, deps.keys, account, address);
  // An entry already on the account's list keeps its reason and evidence (a complaint stays a
  // complaint). One only on the global list is shadowed by the account's own, which is added.
  if (existing && existing.list !== GLOBAL_LIST) return { status: 200, body: { ...entryJson(address, existing), list: 'account' } };
  const entry: SuppressionEntry = { reason: parsed.data.reason ?? 'manual', at: deps.now?.() ?? Date.now(), evidence: { source: 'api' } };
  await addSuppression(deps.redis, deps.keys, account, address, entry);
  deps.suppressed?.(entry.reason, 1);
  return { status: 201, body: { ...entryJson(address, entry), list: 'account' }, audit: { action: 'suppression.add', target: await addressRef(deps.redis, deps.keys, address) } };
}

async function remove(deps: SuppressionRouteDeps, account: string, address: string): Promise<RouteAnswer> {
  if (await removeSuppression(deps.redis, deps.keys, account, address)) return { status: 204, body: undefined, audit: { action: 'suppression.remove', target: await addressRef(deps.redis, deps.keys, address) } };
  const hit = await suppressionOf(deps.redis, deps.keys, account, address);
  if (hit?.list === GLOBAL_LIST) throw new SluiceError('SLUICE_SUPPRESSION_GLOBAL_READ_ONLY');
  throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', "The address is not on this account's suppression list");
}

function pauseJson(p: PauseRecord): Record<string, unknown> {
  return {
    domain: p.scope === '*' ? null : p.scope,
    reason: p.reason,
    pausedAt: p.at > 0 ? new Date(p.at).toISOString() : null,
    // An operator's pause says who and why; the guard's, the figures that crossed its threshold.
    ...(p.reason === 'operator' ? { by: p.by ?? null, note: p.note ?? '' } : { threshold: p.threshold, windowHours: p.windowHours, figures: p.figures }),
  };
}

async function status(deps: SuppressionRouteDeps, account: string): Promise<RouteAnswer> {
  return { status: 200, body: { paused: (await listPaused(deps.redis, deps.keys, account)).map(pauseJson) } };
}

/** A body's sending domain, normalised; null (the whole account) when none is given. */
function senderDomain(text: string | null | undefined): string | null {
  if (typeof text !== 'string') return null;
  const domain = normaliseDomain(text);
  if (domain === undefined) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The request is invalid', { errors: [{ path: 'domain', message: 'not a valid domain' }] });
  return domain;
}

async function pause(deps: SuppressionRouteDeps, account: string, input: unknown): Promise<RouteAnswer> {
  // An account pausing itself would be a pause it could not lift: this is the operator's tool.
  if (deps.operator !== true) throw new SluiceError('SLUICE_ADMIN_REQUIRED');
  const parsed = pauseSchema.safeParse(input ?? {});
  if (!parsed.success) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The request is invalid', { errors: fieldErrors(parsed.error) });
  const domain = senderDomain(parsed.data.domain);
  const p = await pauseByOperator(deps.redis, deps.keys, account, domain, { by: deps.actor ?? 'operator', note: parsed.data.reason ?? '' }, { now: deps.now?.() ?? Date.now(), eventsMaxLen: deps.eventsMaxLen });
  return { status: 200, body: { paused: pauseJson(p) }, audit: { action: 'sender.pause', target: p.scope } };
}

async function resume(deps: SuppressionRouteDeps, account: string, input: unknown): Promise<RouteAnswer> {
  const parsed = resumeSchema.safeParse(input ?? {});
  if (!parsed.success) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The request is invalid', { errors: fieldErrors(parsed.error) });
  const domain = senderDomain(parsed.data.domain);
  const keepOperator = deps.operator !== true;
  const resumed = await resumeSender(deps.redis, deps.keys, account, domain, 'api', { now: deps.now?.() ?? Date.now(), eventsMaxLen: deps.eventsMaxLen, keepOperator });
  // What an operator paused stays paused for the account's own key (sluice sender pause).
  const kept = keepOperator ? await operatorPaused(deps.redis, deps.keys, account, domain) : [];
  if (resumed.length === 0 && kept.length > 0) throw new SluiceError('SLUICE_SENDER_PAUSED_BY_OPERATOR', `An operator paused ${kept.map((s) => (s === '*' ? 'the whole account' : s)).join(', ')}: only an operator resumes it`);
  if (resumed.length === 0) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', domain === null ? 'No sender of this account is paused' : `The sender domain ${domain} is not paused`);
  return {
    status: 200,
    body: { resumed: resumed.map((s) => (s === '*' ? null : s)), ...(kept.length > 0 ? { keptByOperator: kept.map((s) => (s === '*' ? null : s)) } : {}) },
    audit: { action: 'sender.resume', target: resumed.join(',') },
  };
}

/** The path of a bulk import (http-api routes it before the JSON-bodied routes above). */
export const SUPPRESSION_IMPORT_PATH = '/v1/suppressions/import';

const IMPORT_TYPES: readonly [RegExp, SuppressionFormat][] = [
  [/^text\/csv\s*(?:;|$)/i, 'csv'],
  [/^application\/(?:x-ndjson|ndjson|jsonl|x-jsonlines)\s*(?:;|$)/i, 'ndjson'],
  [/^text\/plain\s*(?:;|$)/i, 'text'],
];

/**
 * POST /v1/suppressions/import: a whole suppression list into the account's (store/suppression-import.ts:
 * CSV with an address column and an optional reason, NDJSON, or one address per line), as a sender
 * moving here brings its unsubscribes, complaints and bounces; ?reason= for rows that name none
 * (default manual). The body is read as it arrives, up to `maxBytes` (lists.maxImportBytes): past
 * it, 413 with the counts of what came before, which was written. A broken file: 400 with the
 * counts. An address already on the list keeps its entry.
 */
export async function importSuppressionsRoute(req: IncomingMessage, deps: SuppressionRouteDeps & { readonly maxBytes: number; readonly by: string }, account: string): Promise<RouteAnswer> {
  const type = req.headers['content-type'] ?? '';
  const format = IMPORT_TYPES.find(([re]) => re.test(type))?.[1];
  if (!format) throw new SluiceError('SLUICE_INGRESS_UNSUPPORTED_MEDIA', 'Content-Type must be text/csv, application/x-ndjson or text/plain');
  const reasonText = splitUrl(req.url ?? '/').query.get('reason') ?? 'manual';
  if (!(ACCOUNT_REASONS as readonly string[]).includes(reasonText)) {
    throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The request is invalid', { errors: [{ path: 'reason', message: `must be one of ${ACCOUNT_REASONS.join(', ')}` }] });
  }
  if (Number(req.headers['content-length'] ?? 0) > deps.maxBytes) {
    throw new SluiceError('SLUICE_LIST_IMPORT_TOO_LARGE', `The import exceeds ${deps.maxBytes} bytes (lists.maxImportBytes)`);
  }
  // destroyOnReturn: false: stopped early, the request stays open for the answer (http-api closes
  // the connection after it, the body unread).
  const body = req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>;
  const r = await importSuppressions(deps.redis, deps.keys, account, body, { format, reason: reasonText as SuppressionReason, now: deps.now?.() ?? Date.now(), by: deps.by, maxBytes: deps.maxBytes });
  for (const [reason, n] of Object.entries(r.addedBy)) deps.suppressed?.(reason as SuppressionReason, n);
  const counts = { rows: r.rows, added: r.added, existing: r.existing, invalid: r.invalid, errors: r.errors };
  const audit = r.added > 0 || r.stopped === null ? { action: 'suppression.import', target: `${r.added} added` } : undefined;
  if (r.tooLarge) return { status: 413, body: { code: 'SLUICE_LIST_IMPORT_TOO_LARGE', message: r.stopped, ...counts }, audit };
  if (r.stopped !== null) return { status: 400, body: { code: 'SLUICE_INGRESS_BAD_REQUEST', message: `The import stopped: ${r.stopped}`, ...counts }, audit };
  return { status: 200, body: counts, audit };
}
