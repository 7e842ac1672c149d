import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { listFieldNames, readContactRange, type Contact } from './contacts.js';
import type { ListFormat } from './contact-import.js';

/**
 * A list's contacts as CSV or NDJSON, streamed: an async iterator of text chunks, one page of
 * contacts (EXPORT_PAGE numbers, one HMGET) at a time, so exporting a million contacts holds one
 * page in memory. The output imports back into an equal list (contact-import.ts reads both shapes):
 *
 *   CSV     email,status,<fields in the order they first appeared>
 *   NDJSON  {"email","status","fields":{…},"created","updated"}   (times in ISO 8601)
 *
 * The columns of a CSV are the list's field names when the export starts; a field first used by a
 * contact written during the export is in that contact's NDJSON line but not in the CSV.
 */
export const EXPORT_PAGE = 1000;

/** RFC 4180 quoting: only values that need it (comma, quote, line break) are quoted. */
export function csvValue(v: string): string {
  return /[",\r\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v;
}

function csvLine(values: readonly string[]): string {
  return `${values.map(csvValue).join(',')}\r\n`;
}

function ndjsonLine(c: Contact): string {
  return `${JSON.stringify({ email: c.email, status: c.status, fields: c.fields, created: new Date(c.created).toISOString(), updated: new Date(c.updated).toISOString() })}\n`;
}

export async function* exportContacts(redis: RedisClient, keys: Keys, listId: string, format: ListFormat, pageSize: number = EXPORT_PAGE): AsyncGenerator<string> {
  let columns: string[] = [];
  if (format === 'csv') {
    columns = await listFieldNames(redis, keys, listId);
    yield csvLine(['email', 'status', ...columns]);
  }
  for (let from: number | null = 1; from !== null; ) {
    const page: { contacts: Contact[]; next: number | null } = await readContactRange(redis, keys, listId, from, pageSize);
    if (page.contacts.length > 0) {
      yield page.contacts.map((c) => (format === 'csv' ? csvLine([c.email, c.status, ...columns.map((name) => c.fields[name] ?? '')]) : ndjsonLine(c))).join('');
    }
    from = page.next;
  }
}
