import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { SluiceError } from '../core/errors.js';
import { isId } from '../core/ids.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import {
  checkAddress, createList, CONTACT_STATUSES, deleteContact, deleteList, findContact, getList, listFieldNames, listListPage, patchContact, renameList,
  type Contact, type ContactList,
} from '../store/contacts.js';
import { ImportAborted, importContacts, type ImportLimits, type ListFormat } from '../store/contact-import.js';
import { exportContacts } from '../store/contact-export.js';
import { addressRef } from '../store/audit.js';
import { keepCopiesFindable } from '../store/privacy.js';
import { campaignsOfList, readsListYet } from '../store/campaigns.js';
import { fieldErrors } from './http-schema.js';
import { decodeSegment, isScanCursor, JSON_TYPE, methodNotAllowed, pageQuery, splitUrl, type RouteAnswer } from './http-route.js';

/**
 * The contact list routes of the HTTP API, scoped to the authenticated account:
 *
 *   GET    /v1/lists?cursor=&limit=           a page of the account's lists → 200 { lists: [list], cursor }
 *   POST   /v1/lists  { name }                → 201 list
 *   GET    /v1/lists/:id                      → 200 list with its field names
 *   PATCH  /v1/lists/:id  { name }            → 200 list
 *   DELETE /v1/lists/:id                      → 200 { id, deleted: true }
 *   POST   /v1/lists/:id/contacts             import: body text/csv or application/x-ndjson, read as it
 *                                             arrives → 200 { imported, created, updated, duplicates,
 *                                             suppressed, invalid, errors: [{ line, reason }], lines, … }
 *   GET    /v1/lists/:id/contacts?format=csv|ndjson   export, streamed (default csv)
 *   GET    /v1/lists/:id/contacts/:email      → 200 contact
 *   PATCH  /v1/lists/:id/contacts/:email  { fields?: { name: value | null }, status? } → 200 contact
 *   DELETE /v1/lists/:id/contacts/:email      → 200 { email, deleted: true }
 *
 * Another account's list id is answered exactly like an unknown one (404 SLUICE_LIST_NOT_FOUND) on
 * every route. An import that stops midway (size or row limit, a broken record, the list deleted)
 * answers the error with `result`: the counts so far and the last line written.
 */
export interface ListRouteContext {
  readonly redis: RedisClient;
  readonly keys: Keys;
  /** The caller's account (throws SLUICE_AUTH_* when there is none). */
  authenticate(): Promise<{ readonly id: string }>;
  /** Reads the request body (at most maxBytes) and parses it as JSON. */
  readJson(maxBytes: number): Promise<unknown>;
  /** lists.maxImportBytes and lists.maxImportRows. */
  readonly limits: ImportLimits;
  /**
   * How long a deleted contact's campaign copies stay findable by an erasure (ingress/persist.ts
   * refsTtlMs: as long as their data can live); see store/privacy.ts keepCopiesFindable.
   */
  readonly copiesTtlMs: number;
  readonly now?: (() => number) | undefined;
}

/** A JSON answer for http-api to send, or 'sent' when the route streamed its answer itself. */
export type ListAnswer = RouteAnswer | 'sent';

// A list name, or a contact's fields (100 × 1 KiB at most, store/contacts.ts): 256 KiB is ample.
export const LIST_MAX_JSON_BYTES = 256 * 1024;
const COLLECTION = '/v1/lists';
const ONE = /^\/v1\/lists\/([^/]+)$/;
const CONTACTS = /^\/v1\/lists\/([^/]+)\/contacts$/;
const CONTACT = /^\/v1\/lists\/([^/]+)\/contacts\/([^/]+)$/;
const CSV_TYPE = /^text\/csv\s*(?:;|$)/i;
const NDJSON_TYPE = /^application\/(?:x-ndjson|ndjson|jsonl|x-jsonlines)\s*(?:;|$)/i;

const nameSchema = z.object({ name: z.string() }).strict();
const patchSchema = z
  .object({
    fields: z.record(z.string(), z.string().nullable()).optional(),
    status: z.enum(CONTACT_STATUSES as [string, ...string[]]).optional(),
  })
  .strict();

const iso = (ms: number) => new Date(ms).toISOString();

function listView(l: ContactList, fields?: string[]): Record<string, unknown> {
  return { id: l.id, name: l.name, count: l.count, statuses: l.statuses, ...(fields ? { fields } : {}), created: iso(l.created), updated: iso(l.updated) };
}

function contactView(c: Contact): Record<string, unknown> {
  return { no: c.no, email: c.email, status: c.status, fields: c.fields, created: iso(c.created), updated: iso(c.updated) };
}

function parseBody<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  const r = schema.safeParse(input);
  if (!r.success) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', `The ${what} is invalid`, { errors: fieldErrors(r.error) });
  return r.data;
}

async function readJsonBody(req: IncomingMessage, ctx: ListRouteContext): Promise<unknown> {
  if (Number(req.headers['content-length'] ?? 0) > LIST_MAX_JSON_BYTES) throw new SluiceError('SLUICE_INGRESS_TOO_LARGE', `The request body exceeds ${LIST_MAX_JSON_BYTES} bytes`);
  if (!JSON_TYPE.test(req.headers['content-type'] ?? '')) throw new SluiceError('SLUICE_INGRESS_UNSUPPORTED_MEDIA');
  return ctx.readJson(LIST_MAX_JSON_BYTES);
}

/** The account's list, or 404 for an unknown id and another account's alike. */
async function ownList(ctx: ListRouteContext, account: string, id: string): Promise<ContactList> {
  const list = isId(id) ? await getList(ctx.redis, ctx.keys, account, id) : null;
  if (!list) throw new SluiceError('SLUICE_LIST_NOT_FOUND');
  return list;
}

/** Answers a /v1/lists route; undefined when the path is not one of them. */
export async function listRoute(method: string, url: string, req: IncomingMessage, res: ServerResponse, ctx: ListRouteContext): Promise<ListAnswer | undefined> {
  const { path, query } = splitUrl(url);
  const now = ctx.now ?? Date.now;

  if (path === COLLECTION) {
    if (method !== 'GET' && method !== 'POST') throw methodNotAllowed('GET, POST');
    const account = await ctx.authenticate();
    if (method === 'GET') {
      // SSCAN's COUNT is a hint, so a page may hold a little more or less than the limit.
      const { cursor, limit } = pageQuery(query, isScanCursor);
      const page = await listListPage(ctx.redis, ctx.keys, account.id, cursor ?? '0', limit);
      return { status: 200, body: { lists: page.lists.map((l) => listView(l)), cursor: page.cursor === '0' ? null : page.cursor } };
    }
    const input = parseBody(nameSchema, await readJsonBody(req, ctx), 'list');
    const list = await createList(ctx.redis, ctx.keys, account.id, input.name, now());
    return { status: 201, body: listView(list), audit: { action: 'list.create', target: list.id } };
  }

  let m = ONE.exec(path);
  if (m) {
    if (method !== 'GET' && method !== 'PATCH' && method !== 'DELETE') throw methodNotAllowed('GET, PATCH, DELETE');
    const account = await ctx.authenticate();
    const list = await ownList(ctx, account.id, m[1] as string);
    if (method === 'GET') return { status: 200, body: listView(list, await listFieldNames(ctx.redis, ctx.keys, list.id)) };
    if (method === 'DELETE') {
      const campaigns = await campaignsOfList(ctx.redis, ctx.keys, account.id, list.id);
      // Deleted under a campaign that has yet to read it, the list went and the campaign completed
      // with fewer recipients, or none, without a word: refused until those campaigns are cancelled.
      const reading = campaigns.filter(readsListYet);
      if (reading.length > 0) {
        const named = reading.slice(0, 10).map((c) => `${c.id} (${c.state})`).join(', ') + (reading.length > 10 ? `, and ${reading.length - 10} more` : '');
        throw new SluiceError('SLUICE_LIST_IN_USE', `Campaigns that have not queued the list yet use it: ${named}; cancel them first`, {
          errors: reading.slice(0, 100).map((c) => ({ path: 'campaigns', message: `${c.id} is ${c.state}` })),
        });
      }
      // A list that campaigns were sent to keeps its address index, alone, so an erasure still finds the copies.
      const sent = campaigns.some((c) => c.startedAt !== null);
      if (!(await deleteList(ctx.redis, ctx.keys, account.id, list.id, sent ? ctx.copiesTtlMs : 0))) throw new SluiceError('SLUICE_LIST_NOT_FOUND');
      return { status: 200, body: { id: list.id, deleted: true }, audit: { action: 'list.delete', target: list.id } };
    }
    const input = parseBody(nameSchema, await readJsonBody(req, ctx), 'list');
    const renamed = await renameList(ctx.redis, ctx.keys, account.id, list.id, input.name, now());
    if (!renamed) throw new SluiceError('SLUICE_LIST_NOT_FOUND');
    return { status: 200, body: listView(renamed), audit: { action: 'list.rename', target: list.id } };
  }

  m = CONTACTS.exec(path);
  if (m) {
    if (method !== 'GET' && method !== 'POST') throw methodNotAllowed('GET, POST');
    const account = await ctx.authenticate();
    const list = await ownList(ctx, account.id, m[1] as string);
    if (method === 'POST') {
      const audit = { action: 'list.import', target: list.id };
      try {
        return { status: 200, body: await importBody(req, ctx, account.id, list.id), audit };
      } catch (err) {
        // Stopped midway: the rows before the stop are in the list, a change audited as a whole import is.
        if (err instanceof ImportAborted && err.result.imported > 0) return { status: err.http, body: err.toJSON(), audit };
        throw err;
      }
    }
    const format = query.get('format') ?? 'csv';
    if (format !== 'csv' && format !== 'ndjson') {
      throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'Unknown export format', { errors: [{ path: 'format', message: "must be 'csv' or 'ndjson'" }] });
    }
    res.statusCode = 200;
    res.setHeader('content-type', format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson; charset=utf-8');
    res.setHeader('content-disposition', `attachment; filename="${list.id}.${format}"`);
    res.setHeader('cache-control', 'no-store');
    // pipeline waits for 'drain' between pages: a slow client slows the reads from Redis.
    await pipeline(Readable.from(exportContacts(ctx.redis, ctx.keys, list.id, format)), res);
    return 'sent';
  }

  m = CONTACT.exec(path);
  if (!m) return undefined;
  if (method !== 'GET' && method !== 'PATCH' && method !== 'DELETE') throw methodNotAllowed('GET, PATCH, DELETE');
  const account = await ctx.authenticate();
  const list = await ownList(ctx, account.id, m[1] as string);
  const email = contactAddress(m[2] as string);
  if (method === 'GET') {
    const c = await findContact(ctx.redis, ctx.keys, list.id, email);
    if (!c) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', 'No such contact');
    return { status: 200, body: contactView(c) };
  }
  if (method === 'DELETE') {
    // Indexed before it goes, so an erasure still finds the campaign copies it received.
    const held = await findContact(ctx.redis, ctx.keys, list.id, email);
    if (held) await keepCopiesFindable(ctx.redis, ctx.keys, account.id, list.id, held, now(), ctx.copiesTtlMs);
    const c = await deleteContact(ctx.redis, ctx.keys, account.id, list.id, email, now());
    if (!c) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', 'No such contact');
    return { status: 200, body: { email: c.email, deleted: true }, audit: { action: 'contact.delete', target: `${list.id} ${await addressRef(ctx.redis, ctx.keys, c.email)}` } };
  }
  const input = parseBody(patchSchema, await readJsonBody(req, ctx), 'contact');
  const c = await patchContact(ctx.redis, ctx.keys, account.id, list.id, email, { fields: input.fields, status: input.status as Contact['status'] | undefined }, now());
  if (!c) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', 'No such contact');
  return { status: 200, body: contactView(c), audit: { action: 'contact.update', target: `${list.id} ${await addressRef(ctx.redis, ctx.keys, c.email)}` } };
}

/** The contact address of a path segment, checked as imported addresses are (store/contacts.ts). */
function contactAddress(raw: string): string {
  const checked = checkAddress(decodeSegment(raw));
  if (!('address' in checked)) throw new SluiceError('SLUICE_INGRESS_BAD_ADDRESS', checked.reason);
  return checked.address;
}

/** The import, read from the request as it arrives (never buffered whole). */
async function importBody(req: IncomingMessage, ctx: ListRouteContext, account: string, listId: string): Promise<unknown> {
  const type = req.headers['content-type'] ?? '';
  const format: ListFormat | null = CSV_TYPE.test(type) ? 'csv' : NDJSON_TYPE.test(type) ? 'ndjson' : null;
  if (!format) throw new SluiceError('SLUICE_INGRESS_UNSUPPORTED_MEDIA', 'Content-Type must be text/csv or application/x-ndjson');
  if (Number(req.headers['content-length'] ?? 0) > ctx.limits.maxBytes) {
    throw new SluiceError('SLUICE_LIST_IMPORT_TOO_LARGE', `The import exceeds ${ctx.limits.maxBytes} bytes (lists.maxImportBytes)`);
  }
  // destroyOnReturn: false — when the import stops early the request must stay open, so that the
  // answer (413 with the progress) can still be sent; http-api closes the connection after it.
  const body = req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>;
  return importContacts(ctx.redis, ctx.keys, account, listId, body, { format, limits: ctx.limits, now: ctx.now });
}
