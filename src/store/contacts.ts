import type { Result } from 'ioredis';
import { SluiceError } from '../core/errors.js';
import { domainOf, parseAddress } from '../core/address.js';
import { newId, withFreeId } from '../core/ids.js';
import { HOUR } from '../core/time.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { normaliseAddress } from './address-digest.js';
import { suppressionsOf, suppressionOf, type SuppressionReason } from './suppression.js';
import { createRecord } from './record-io.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/upsertContacts-5.lua: -1, or [outcome, no] per row. */
    upsertContacts(meta: string, contacts: string, emails: string, fields: string, seen: string, account: string, now: number, seenTtlMs: number, maxFields: number, maxListFields: number, ...rows: string[]): Result<number | number[], Context>;
    /** src/queue/lua/updateContact-4.lua: -1 (no list), 0 (no contact), -2 (too many fields), -3 (too many field names in the list), or [json, no]. */
    updateContact(meta: string, contacts: string, emails: string, fieldNames: string, account: string, by: 'no' | 'key', ref: string | number, now: number, status: string, fieldsPatch: string, del: '0' | '1', key: string, maxFields: number, maxListFields: number): Result<number | [string, number], Context>;
    /** src/queue/lua/renameList-1.lua: 1 renamed, 0 no such list for the account. */
    renameList(meta: string, account: string, name: string, now: number): Result<number, Context>;
  }
}

/**
 * Contact lists: an account's recipients with their merge fields and subscription status. One list
 * is a handful of keys under its own hash tag, so one Lua call writes a whole import batch at once
 * and an import that stops midway leaves whole batches, never half a contact:
 *
 *   {a:<account>}:lists       SET   the account's list ids
 *   {l:<id>}:meta             HASH  account, name, created, updated, nextNo, count,
 *                                   subscribed, unsubscribed, bounced, complained (counters)
 *   {l:<id>}:contacts         HASH  no → {"e":email,"s":"s|u|b|c","c":created,"u":updated,"f":{fields}}
 *   {l:<id>}:emails           HASH  normalised address → no
 *   {l:<id>}:fields           HASH  field name → order of first appearance (CSV export columns)
 *
 * Contact numbers count up from 1 and are never reused, so a campaign can refer to "contact 1234 of
 * list X" compactly and walk a list in ranges (readContactRange) while it changes. The JSON keys are
 * one letter because a million contacts repeat them a million times.
 *
 * Addresses are validated with core/address.ts (domain lower-cased, IDN to A-label) and merged by
 * the same normalisation as suppression lists (the whole address lower-cased): Ann@X.org and
 * ann@x.org are one contact, as they are one suppression.
 *
 * Another account's list id is answered exactly like an unknown one: every call that names a list
 * on behalf of an account checks the list's `account`.
 */
export type ContactStatus = 'subscribed' | 'unsubscribed' | 'bounced' | 'complained';
export const CONTACT_STATUSES: readonly ContactStatus[] = ['subscribed', 'unsubscribed', 'bounced', 'complained'];

export interface Contact {
  no: number;
  email: string;
  /** ASCII (A-label) lower-case domain of `email`. */
  domain: string;
  fields: Record<string, string>;
  status: ContactStatus;
  /** ms since epoch */
  created: number;
  updated: number;
}

export interface ContactList {
  id: string;
  account: string;
  name: string;
  created: number;
  updated: number;
  /** Contacts in the list, whatever their status. */
  count: number;
  /** Contacts per status. */
  statuses: Record<ContactStatus, number>;
}

export interface ContactRow {
  /** As given: validated and normalised here. */
  email: string;
  /** String values; an empty value is no value (it never erases a stored one). */
  fields: Readonly<Record<string, string>>;
  /** Default: subscribed for a new contact, unchanged for a known one. */
  status?: ContactStatus | undefined;
}

export type UpsertOutcome =
  | { ok: true; no: number; outcome: 'created' | 'updated' | 'duplicate'; suppressed: boolean }
  | { ok: false; reason: string };

// Bounds per contact: merge fields are names and short values (a first name, a plan, a city). They
// keep one contact's JSON small and a CSV export's header readable.
export const MAX_FIELDS = 100;
/**
 * Field names of a whole list (its CSV export's columns, each written on every line): without a
 * bound, rows of new names would make an export of N contacts cost N times every name ever used.
 */
export const MAX_LIST_FIELDS = 1000;
export const MAX_FIELD_NAME_CHARS = 64;
export const MAX_FIELD_VALUE_CHARS = 1024;
export const MAX_LIST_NAME_CHARS = 200;
// RFC 5321 allows 254 octets in a path; 320 (64 + 1 + 255) admits what older software wrote.
const MAX_ADDRESS_CHARS = 320;
/** Names taken by the contact itself (CSV columns, NDJSON keys). */
const RESERVED = new Set(['email', 'status']);
const CONTROL = /[\u0000-\u001f\u007f]/;

const CODE: Record<ContactStatus, string> = { subscribed: 's', unsubscribed: 'u', bounced: 'b', complained: 'c' };
const STATUS_OF: Record<string, ContactStatus> = { s: 'subscribed', u: 'unsubscribed', b: 'bounced', c: 'complained' };
const OUTCOME = ['', 'created', 'updated', 'duplicate'] as const;

/** The status a suppressed address is stored with: never sent to, and the reason stays visible. */
const STATUS_OF_SUPPRESSION: Record<SuppressionReason, ContactStatus> = {
  unsubscribe: 'unsubscribed',
  manual: 'unsubscribed',
  complaint: 'complained',
  hardbounce: 'bounced',
  softbounce: 'bounced',
};

export function isContactStatus(s: unknown): s is ContactStatus {
  return typeof s === 'string' && (CONTACT_STATUSES as readonly string[]).includes(s);
}

/** Why a field name cannot be stored, or null when it can. */
export function fieldNameProblem(name: string): string | null {
  if (name.length === 0) return 'a field name is empty';
  if (name.length > MAX_FIELD_NAME_CHARS) return `field name '${name.slice(0, 20)}…' is longer than ${MAX_FIELD_NAME_CHARS} characters`;
  if (CONTROL.test(name)) return `field name ${JSON.stringify(name)} has control characters`;
  // A CSV header is read trimmed: ' city' would come back from an export as 'city'.
  if (name.trim() !== name) return `field name '${name.slice(0, 20)}' begins or ends with spaces`;
  if (RESERVED.has(name.toLowerCase())) return `'${name}' is not a field name (it is the contact's own)`;
  return null;
}

const TOO_MANY_FIELDS = `the contact would have more than ${MAX_FIELDS} fields`;
const TOO_MANY_LIST_FIELDS = `the list would have more than ${MAX_LIST_FIELDS} field names`;

function tooManyFields(): SluiceError {
  return new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The contact fields are invalid', { errors: [{ path: 'fields', message: TOO_MANY_FIELDS }] });
}

/** Why a row's fields cannot be stored, or null: names checked, values bounded. */
export function fieldsProblem(fields: Readonly<Record<string, string>>): string | null {
  const names = Object.keys(fields);
  if (names.length > MAX_FIELDS) return `more than ${MAX_FIELDS} fields`;
  for (const name of names) {
    const p = fieldNameProblem(name);
    if (p) return p;
    if ((fields[name] as string).length > MAX_FIELD_VALUE_CHARS) return `field '${name}' is longer than ${MAX_FIELD_VALUE_CHARS} characters`;
  }
  return null;
}

/** A validated address, or why it is not one. */
export function checkAddress(text: string): { address: string } | { reason: string } {
  const t = text.trim();
  if (t === '') return { reason: 'no email address' };
  if (t.length > MAX_ADDRESS_CHARS) return { reason: `the email address is longer than ${MAX_ADDRESS_CHARS} characters` };
  const parsed = parseAddress(t);
  if (!parsed) return { reason: `'${t.length > 80 ? `${t.slice(0, 80)}…` : t}' is not a valid email address` };
  return { address: parsed.address };
}

function decodeContact(no: number, raw: string): Contact {
  const c = JSON.parse(raw) as { e: string; s: string; c: number; u: number; f: Record<string, string> | unknown[] };
  return {
    no,
    email: c.e,
    domain: domainOf(c.e),
    // Lua's cjson writes an empty table as {}, but be lenient with [] all the same.
    fields: Array.isArray(c.f) ? {} : c.f,
    status: STATUS_OF[c.s] ?? 'unsubscribed',
    created: c.c,
    updated: c.u,
  };
}

function toList(id: string, h: Record<string, string>): ContactList {
  const n = (k: string) => Number(h[k] ?? 0);
  return {
    id,
    account: h['account'] as string,
    name: h['name'] ?? '',
    created: n('created'),
    updated: n('updated'),
    count: n('count'),
    statuses: { subscribed: n('subscribed'), unsubscribed: n('unsubscribed'), bounced: n('bounced'), complained: n('complained') },
  };
}

/** A list name, trimmed, or throws SLUICE_INGRESS_BAD_REQUEST naming the field. */
export function checkListName(name: unknown): string {
  const t = typeof name === 'string' ? name.trim() : '';
  const bad = (message: string) => new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The list name is invalid', { errors: [{ path: 'name', message }] });
  if (t === '') throw bad('a non-empty string is required');
  if (t.length > MAX_LIST_NAME_CHARS) throw bad(`at most ${MAX_LIST_NAME_CHARS} characters`);
  if (CONTROL.test(t)) throw bad('control characters are not allowed');
  return t;
}

/** `mint` makes the list's id (tests give one that collides). */
export async function createList(redis: RedisClient, keys: Keys, account: string, name: string, now: number = Date.now(), mint: () => string = () => newId(now)): Promise<ContactList> {
  const checked = checkListName(name);
  const meta = { account, name: checked, created: now, updated: now, nextNo: 1, count: 0, subscribed: 0, unsubscribed: 0, bounced: 0, complained: 0 };
  // Meta first (only under a free id), then the index: a crash in between leaves a list nobody was
  // told about, never an index entry without its list.
  const id = await withFreeId(mint, async (candidate) => ((await createRecord(redis, keys.listMeta(candidate), meta)) ? candidate : null));
  await redis.sadd(keys.accountLists(account), id);
  return toList(id, Object.fromEntries(Object.entries(meta).map(([k, v]) => [k, String(v)])));
}

/** The list, or null when it does not exist or is another account's. */
export async function getList(redis: RedisClient, keys: Keys, account: string, listId: string): Promise<ContactList | null> {
  const h = await redis.hgetall(keys.listMeta(listId));
  if (h['account'] !== account) return null;
  return toList(listId, h);
}

/** The list whatever its account (operator tools), or null. */
export async function getListAnyAccount(redis: RedisClient, keys: Keys, listId: string): Promise<ContactList | null> {
  const h = await redis.hgetall(keys.listMeta(listId));
  return h['account'] === undefined ? null : toList(listId, h);
}

/**
 * A page of the account's lists: one SSCAN step from `cursor` ('0' to begin) of about `count` ids
 * (SSCAN's COUNT is a hint: a small set comes whole), oldest first within the page (ids are
 * time-ordered), and the next cursor ('0' after the last page). As with any SCAN, a list created or
 * deleted meanwhile may be missed, and one may come twice.
 */
export async function listListPage(redis: RedisClient, keys: Keys, account: string, cursor = '0', count = 100): Promise<{ cursor: string; lists: ContactList[] }> {
  const [next, found] = await redis.sscan(keys.accountLists(account), cursor, 'COUNT', count);
  const ids = found.sort();
  const metas = await Promise.all(ids.map((id) => redis.hgetall(keys.listMeta(id))));
  return { cursor: next, lists: ids.flatMap((id, i) => (metas[i]?.['account'] === account ? [toList(id, metas[i] as Record<string, string>)] : [])) };
}

/**
 * Every list of the account, a page (listListPage, 1,000) at a time, each once: SSCAN may return a
 * list twice (a rehash while it walks). In no order across pages.
 */
export async function* eachList(redis: RedisClient, keys: Keys, account: string): AsyncGenerator<ContactList> {
  const seen = new Set<string>();
  let cursor = '0';
  do {
    const page = await listListPage(redis, keys, account, cursor, 1000);
    for (const l of page.lists) {
      if (seen.has(l.id)) continue;
      seen.add(l.id);
      yield l;
    }
    cursor = page.cursor;
  } while (cursor !== '0');
}

/** Every list of the account, oldest first. */
export async function listLists(redis: RedisClient, keys: Keys, account: string): Promise<ContactList[]> {
  const all: ContactList[] = [];
  for await (const l of eachList(redis, keys, account)) all.push(l);
  return all.sort((a, b) => (a.id < b.id ? -1 : 1));
}

export async function renameList(redis: RedisClient, keys: Keys, account: string, listId: string, name: string, now: number = Date.now()): Promise<ContactList | null> {
  const checked = checkListName(name);
  if ((await redis.renameList(keys.listMeta(listId), account, checked, now)) !== 1) return null;
  return getList(redis, keys, account, listId);
}

/**
 * Deletes a list and its contacts. UNLINK frees a big list's memory in a background thread, so a
 * million contacts do not block Redis. The keys go before the index entry: a crash in between
 * leaves an id that listLists skips. With keepEmailsMs, the list's address index ({l:<id>}:emails,
 * address → contact number) outlives it by that long (see there).
 */
export async function deleteList(redis: RedisClient, keys: Keys, account: string, listId: string, keepEmailsMs = 0): Promise<boolean> {
  if ((await redis.hget(keys.listMeta(listId), 'account')) !== account) return false;
  if (keepEmailsMs > 0) {
    // Campaign copies to the list's contacts are found by an erasure through this index (address →
    // contact number): it stays, alone, as long as their data can (store/privacy.ts).
    // One transaction (one slot): a crash between the two would leave the index with no TTL.
    await redis.multi().unlink(keys.listMeta(listId), keys.listContacts(listId), keys.listFields(listId)).pexpire(keys.listEmails(listId), Math.floor(keepEmailsMs)).exec();
  } else await redis.unlink(keys.listMeta(listId), keys.listContacts(listId), keys.listEmails(listId), keys.listFields(listId));
  await redis.srem(keys.accountLists(account), listId);
  return true;
}

/** The list's field names in the order they first appeared. */
export async function listFieldNames(redis: RedisClient, keys: Keys, listId: string): Promise<string[]> {
  const h = await redis.hgetall(keys.listFields(listId));
  return Object.entries(h).sort((a, b) => Number(a[1]) - Number(b[1])).map(([name]) => name);
}

/** Contacts by number (HMGET, one round trip), null for numbers that are not (or no longer) there. */
export async function readContacts(redis: RedisClient, keys: Keys, listId: string, nos: readonly number[]): Promise<(Contact | null)[]> {
  if (nos.length === 0) return [];
  const raws = await redis.hmget(keys.listContacts(listId), ...nos.map(String));
  return raws.map((raw, i) => (raw === null ? null : decodeContact(nos[i] as number, raw)));
}

/**
 * The contacts numbered [fromNo, fromNo + count), deleted numbers skipped. `next` is the number to
 * continue from, or null once the range reaches past the last number given out (or past `lastNo`:
 * a campaign reads the list as it was when it began sending).
 */
export async function readContactRange(redis: RedisClient, keys: Keys, listId: string, fromNo: number, count: number, lastNo = Number.POSITIVE_INFINITY): Promise<{ contacts: Contact[]; next: number | null }> {
  const from = Math.max(1, Math.floor(fromNo));
  const n = Math.max(0, Math.min(Math.floor(count), lastNo - from + 1));
  const nos = Array.from({ length: n }, (_, i) => from + i);
  const [nextNo, contacts] = await Promise.all([redis.hget(keys.listMeta(listId), 'nextNo'), readContacts(redis, keys, listId, nos)]);
  const last = Math.min(Number(nextNo ?? 1) - 1, lastNo);
  return { contacts: contacts.filter((c): c is Contact => c !== null), next: from + n <= last ? from + n : null };
}

/** The list's last contact number so far (contact numbers are never reused); 0 for an empty or unknown list. */
export async function lastContactNo(redis: RedisClient, keys: Keys, listId: string): Promise<number> {
  return Math.max(0, Number((await redis.hget(keys.listMeta(listId), 'nextNo')) ?? 1) - 1);
}

export async function findContact(redis: RedisClient, keys: Keys, listId: string, email: string): Promise<Contact | null> {
  const checked = checkAddress(email);
  if (!('address' in checked)) return null;
  const no = await redis.hget(keys.listEmails(listId), normaliseAddress(checked.address));
  if (no === null) return null;
  return (await readContacts(redis, keys, listId, [Number(no)]))[0] ?? null;
}

/**
 * Sets a contact's status by number: unsubscribes, bounces and complaints recorded for a campaign's
 * recipient. False when the list or contact is gone.
 */
export async function setContactStatus(redis: RedisClient, keys: Keys, listId: string, no: number, status: ContactStatus, now: number): Promise<boolean> {
  const r = await redis.updateContact(keys.listMeta(listId), keys.listContacts(listId), keys.listEmails(listId), keys.listFields(listId), '', 'no', no, now, CODE[status], '', '0', '', MAX_FIELDS, MAX_LIST_FIELDS);
  return Array.isArray(r);
}

export interface ContactPatch {
  /** A string sets the field; null removes it. */
  readonly fields?: Readonly<Record<string, string | null>> | undefined;
  readonly status?: ContactStatus | undefined;
}

/**
 * Changes one contact found by address. Resubscribing an address that is on the account's or the
 * global suppression list is refused (SLUICE_LIST_CONTACT_SUPPRESSED): remove the suppression first.
 * Null when the list (for this account) or the contact does not exist.
 */
export async function patchContact(redis: RedisClient, keys: Keys, account: string, listId: string, email: string, patch: ContactPatch, now: number = Date.now()): Promise<Contact | null> {
  const checked = checkAddress(email);
  if (!('address' in checked)) return null;
  const errors = Object.entries(patch.fields ?? {}).flatMap(([name, value]) => {
    const problem = fieldNameProblem(name) ?? (value !== null && value.length > MAX_FIELD_VALUE_CHARS ? `longer than ${MAX_FIELD_VALUE_CHARS} characters` : null);
    return problem ? [{ path: `fields.${name}`, message: problem }] : [];
  });
  if (errors.length > 0) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The contact fields are invalid', { errors });
  if (Object.keys(patch.fields ?? {}).length > MAX_FIELDS) throw tooManyFields();
  if (patch.status === 'subscribed' && (await suppressionOf(redis, keys, account, checked.address))) throw new SluiceError('SLUICE_LIST_CONTACT_SUPPRESSED');
  const fields = patch.fields === undefined ? '' : JSON.stringify(Object.fromEntries(Object.entries(patch.fields).map(([k, v]) => [k, v === null || v === '' ? false : v])));
  const r = await redis.updateContact(
    keys.listMeta(listId), keys.listContacts(listId), keys.listEmails(listId), keys.listFields(listId),
    account, 'key', normaliseAddress(checked.address), now, patch.status === undefined ? '' : CODE[patch.status], fields, '0', '', MAX_FIELDS, MAX_LIST_FIELDS,
  );
  if (r === -2) throw tooManyFields();
  if (r === -3) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The contact fields are invalid', { errors: [{ path: 'fields', message: TOO_MANY_LIST_FIELDS }] });
  return Array.isArray(r) ? decodeContact(r[1], r[0]) : null;
}

/** Deletes one contact found by address; its number is not reused. The deleted contact, or null. */
export async function deleteContact(redis: RedisClient, keys: Keys, account: string, listId: string, email: string, now: number = Date.now()): Promise<Contact | null> {
  const checked = checkAddress(email);
  if (!('address' in checked)) return null;
  const r = await redis.updateContact(keys.listMeta(listId), keys.listContacts(listId), keys.listEmails(listId), keys.listFields(listId), account, 'key', normaliseAddress(checked.address), now, '', '', '1', '', MAX_FIELDS, MAX_LIST_FIELDS);
  return Array.isArray(r) ? decodeContact(r[1], r[0]) : null;
}

export interface UpsertOptions {
  /**
   * Rows written by earlier calls with the same id count as duplicates, not updates: one import of
   * many batches passes one id. The bitmap behind it expires `importTtlMs` after the last batch.
   */
  readonly importId?: string | undefined;
  readonly importTtlMs?: number | undefined;
}

// An import's duplicate bitmap outlives a stalled client by this much; import ends delete it.
const DEFAULT_IMPORT_TTL_MS = HOUR;

/**
 * Validates, checks against suppression and writes rows in one atomic step (one Lua call): the
 * whole batch or nothing. Returns one outcome per row, in order. A suppressed address is written
 * with a status that keeps it out of sending (unsubscribed, bounced or complained as its
 * suppression says) and reported `suppressed`; campaigns check suppression again when they send.
 * Throws SLUICE_LIST_NOT_FOUND when the list does not exist (or is another account's, or was
 * deleted meanwhile).
 */
export async function upsertContacts(redis: RedisClient, keys: Keys, account: string, listId: string, rows: readonly ContactRow[], now: number, opts: UpsertOptions = {}): Promise<UpsertOutcome[]> {
  const results: UpsertOutcome[] = new Array(rows.length);
  const valid: { i: number; address: string; key: string; row: ContactRow }[] = [];
  rows.forEach((row, i) => {
    const checked = checkAddress(row.email);
    if (!('address' in checked)) return void (results[i] = { ok: false, reason: checked.reason });
    const problem = fieldsProblem(row.fields);
    if (problem) return void (results[i] = { ok: false, reason: problem });
    if (row.status !== undefined && !isContactStatus(row.status)) return void (results[i] = { ok: false, reason: `status '${String(row.status)}' is not one of ${CONTACT_STATUSES.join(', ')}` });
    valid.push({ i, address: checked.address, key: normaliseAddress(checked.address), row });
  });
  if (valid.length === 0) return results;

  // Two HMGETs for the whole batch, reasons included (they decide the stored status).
  const hits = await suppressionsOf(redis, keys, account, valid.map((v) => v.address));
  const forced = hits.map((hit) => (hit ? STATUS_OF_SUPPRESSION[hit.reason] : undefined));

  const args: string[] = [];
  valid.forEach((v, j) => {
    const fields: Record<string, string> = {};
    for (const [k, val] of Object.entries(v.row.fields)) if (val !== '') fields[k] = val;
    const status = forced[j] ?? v.row.status;
    args.push(v.key, v.address, JSON.stringify(fields), status === undefined ? '' : CODE[status]);
  });
  const importId = opts.importId ?? '-';
  const ttl = opts.importId === undefined ? 0 : (opts.importTtlMs ?? DEFAULT_IMPORT_TTL_MS);
  const r = await redis.upsertContacts(
    keys.listMeta(listId), keys.listContacts(listId), keys.listEmails(listId), keys.listFields(listId), keys.listImportSeen(listId, importId),
    account, now, ttl, MAX_FIELDS, MAX_LIST_FIELDS, ...args,
  );
  if (!Array.isArray(r)) throw new SluiceError('SLUICE_LIST_NOT_FOUND');
  valid.forEach((v, j) => {
    const outcome = r[2 * j] as 1 | 2 | 3 | 4 | 5;
    // 4: merged with the fields the contact has, it would have too many; 5: the list would have too
    // many field names. Nothing of the row was written.
    if (outcome === 4) results[v.i] = { ok: false, reason: `${TOO_MANY_FIELDS} (with those it has)` };
    else if (outcome === 5) results[v.i] = { ok: false, reason: TOO_MANY_LIST_FIELDS };
    else results[v.i] = { ok: true, outcome: OUTCOME[outcome], no: r[2 * j + 1] as number, suppressed: hits[j] != null };
  });
  return results;
}

/** Forgets an import's duplicate bitmap (it would expire on its own). */
export async function endImport(redis: RedisClient, keys: Keys, listId: string, importId: string): Promise<void> {
  await redis.unlink(keys.listImportSeen(listId, importId));
}
