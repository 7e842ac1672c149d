import { parse } from 'csv-parse';
import { isUtf8 } from 'node:buffer';
import { pipeline } from 'node:stream/promises';
import { parseAddress } from '../core/address.js';
import { byteLines } from '../core/lines.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { normaliseForSuppression, type SuppressionEntry, type SuppressionReason } from './suppression.js';

/**
 * Bulk import of a suppression list: what an operator brings over when moving a sender from another
 * service (its unsubscribes, complaints and bounces), so that nobody who left a list there is mailed
 * from here. Streamed, written in batches (HSETNX pipelines), so a list of millions costs memory for
 * one batch only.
 *
 * Formats:
 *   csv     a header row naming an address column ('email', 'email address', 'email_address' or
 *           'address', any case) and optionally a 'reason' column; other columns are ignored (an
 *           export from another service carries dates, ids, status codes)
 *   ndjson  one JSON object per line with 'email' (or 'address') and optionally 'reason'
 *   text    one address per line; blank lines and lines starting with '#' are skipped
 *
 * A reason is read leniently (REASON_WORDS: 'unsubscribed', 'spam report', 'bounce', …); one not
 * recognised (an SMTP reply, say) or none gives the import's default reason, and the text read is
 * kept in the entry's evidence as `note`. An address already on the list keeps its entry (a
 * complaint recorded here is not turned into an imported 'manual'); it is counted as existing.
 * Invalid rows (not an address, not UTF-8, not JSON) are counted and reported by line.
 */
export type SuppressionFormat = 'csv' | 'ndjson' | 'text';

export interface SuppressionImportResult {
  /** Rows read (header and skipped lines not counted). */
  rows: number;
  added: number;
  /** `added` by each entry's own reason (a row's, else the import's). */
  addedBy: Partial<Record<SuppressionReason, number>>;
  /** Already on the list (kept as they were), including repeats within the file. */
  existing: number;
  invalid: number;
  /** The first MAX_REPORTED invalid rows. */
  errors: { line: number; reason: string }[];
  /** Why the input could not be read to its end (no header, a broken CSV, too large), or null; what was read before it is written. */
  stopped: string | null;
  /** It stopped at opts.maxBytes. */
  tooLarge: boolean;
  bytes: number;
}

export interface SuppressionImportOptions {
  readonly format: SuppressionFormat;
  /** For rows without a reason the import recognises. */
  readonly reason: SuppressionReason;
  readonly now: number;
  /** Written into each entry's evidence, beside `source: 'import'` (who ran it). */
  readonly by: string;
  readonly batchSize?: number;
  /** Bytes read at most; beyond, the import stops (tooLarge) with what came before written. */
  readonly maxBytes?: number;
}

const BATCH = 1000;
const MAX_REPORTED = 1000;
const MAX_RECORD_BYTES = 64 * 1024;
const NOTE_MAX = 100;
const ADDRESS_COLUMNS = ['email', 'email address', 'email_address', 'address'];

const REASON_WORDS: Readonly<Record<string, SuppressionReason>> = {
  unsubscribe: 'unsubscribe', unsubscribed: 'unsubscribe', unsub: 'unsubscribe', optout: 'unsubscribe', 'opt-out': 'unsubscribe', 'opted out': 'unsubscribe', 'list-unsubscribe': 'unsubscribe',
  complaint: 'complaint', complained: 'complaint', spam: 'complaint', 'spam report': 'complaint', spamreport: 'complaint', abuse: 'complaint', fbl: 'complaint',
  hardbounce: 'hardbounce', 'hard bounce': 'hardbounce', hard_bounce: 'hardbounce', hard: 'hardbounce', bounce: 'hardbounce', bounced: 'hardbounce', invalid: 'hardbounce',
  softbounce: 'softbounce', 'soft bounce': 'softbounce', soft_bounce: 'softbounce', soft: 'softbounce',
  manual: 'manual',
};

/** The reason a text names, or null. */
export function reasonOf(text: string): SuppressionReason | null {
  return REASON_WORDS[text.trim().toLowerCase()] ?? null;
}

type Row = { line: number; email: string; reason: string } | { line: number; bad: string };

async function* csvRows(source: AsyncIterable<Buffer | string>): AsyncGenerator<Row> {
  const parser = parse({ bom: true, info: true, relax_column_count: true, relax_quotes: true, skip_empty_lines: true, max_record_size: MAX_RECORD_BYTES });
  // pipeline: a failing source (a client gone mid-upload) destroys the parser, which ends the loop.
  const feeding = pipeline(source, parser);
  feeding.catch(() => undefined); // the loop below gets the parser's error
  let email = -1;
  let reason = -1;
  let header = true;
  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: string[]; info: { lines: number } }>) {
      const line = info.lines;
      if (header) {
        const names = record.map((n) => n.trim().toLowerCase());
        email = names.findIndex((n) => ADDRESS_COLUMNS.includes(n));
        if (email === -1) throw new Error(`line ${line} (the header): no address column (one of ${ADDRESS_COLUMNS.map((c) => `'${c}'`).join(', ')})`);
        reason = names.indexOf('reason');
        header = false;
        continue;
      }
      if (record.some((v) => v.includes('\uFFFD'))) yield { line, bad: 'not valid UTF-8' };
      else yield { line, email: (record[email] ?? '').trim(), reason: reason === -1 ? '' : (record[reason] ?? '').trim() };
    }
    await feeding;
  } finally {
    parser.destroy();
  }
  if (header) throw new Error("the CSV is empty: it needs a header row with an 'email' column");
}

async function* textRows(source: AsyncIterable<Buffer | string>, json: boolean): AsyncGenerator<Row> {
  for await (const { line, bytes: b } of byteLines(source, MAX_RECORD_BYTES)) {
    if (b === null) {
      yield { line, bad: `the line is longer than ${MAX_RECORD_BYTES} bytes` };
      continue;
    }
    if (!isUtf8(b)) {
      yield { line, bad: 'not valid UTF-8' };
      continue;
    }
    const text = b.toString('utf8').trim();
    if (text === '' || (!json && text.startsWith('#'))) continue;
    if (!json) {
      yield { line, email: text, reason: '' };
      continue;
    }
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (err) {
      yield { line, bad: `not valid JSON: ${(err as Error).message}` };
      continue;
    }
    const o = typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
    const email = o?.['email'] ?? o?.['address'];
    if (typeof email !== 'string') yield { line, bad: "not a JSON object with an 'email' string" };
    else yield { line, email: email.trim(), reason: typeof o?.['reason'] === 'string' ? (o['reason'] as string).trim() : '' };
  }
}

/**
 * Imports `source` into suppression list `list` (an account id, or GLOBAL_LIST). A broken input (no
 * header, unparsable CSV, a read error) ends it early with `stopped` set, after writing what was
 * read before; a Redis failure throws.
 */
export async function importSuppressions(redis: RedisClient, keys: Keys, list: string, source: AsyncIterable<Buffer | string>, opts: SuppressionImportOptions): Promise<SuppressionImportResult> {
  const result: SuppressionImportResult = { rows: 0, added: 0, addedBy: {}, existing: 0, invalid: 0, errors: [], stopped: null, tooLarge: false, bytes: 0 };
  const maxBytes = opts.maxBytes ?? Infinity;
  // Counted as it is read. Past maxBytes the input ends at the last line break before the limit, so
  // no line is cut in two (an address cut short could pass for another one).
  async function* counted(): AsyncGenerator<Buffer> {
    for await (const c of source) {
      const b = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
      if (result.bytes + b.length > maxBytes) {
        result.tooLarge = true;
        const room = maxBytes - result.bytes;
        const cut = b.subarray(0, room).lastIndexOf(0x0a);
        if (cut >= 0) {
          result.bytes += cut + 1;
          yield b.subarray(0, cut + 1);
        }
        return;
      }
      result.bytes += b.length;
      yield b;
    }
  }
  const batchSize = opts.batchSize ?? BATCH;
  let batch = new Map<string, SuppressionEntry>();
  const flush = async () => {
    if (batch.size === 0) return;
    const entries = [...batch];
    batch = new Map();
    const pipe = redis.pipeline();
    for (const [address, entry] of entries) pipe.hsetnx(keys.suppression(list), address, JSON.stringify(entry));
    const replies = (await pipe.exec()) ?? [];
    for (let i = 0; i < replies.length; i++) {
      const [err, n] = replies[i] as [Error | null, unknown];
      if (err) throw err;
      if (n === 1) {
        result.added++;
        const reason = (entries[i] as [string, SuppressionEntry])[1].reason;
        result.addedBy[reason] = (result.addedBy[reason] ?? 0) + 1;
      } else result.existing++;
    }
  };
  const invalid = (line: number, reason: string) => {
    result.invalid++;
    if (result.errors.length < MAX_REPORTED) result.errors.push({ line, reason });
  };
  const input = counted();
  const rows = opts.format === 'csv' ? csvRows(input) : textRows(input, opts.format === 'ndjson');
  try {
    for await (const row of rows) {
      result.rows++;
      if ('bad' in row) {
        invalid(row.line, row.bad);
        continue;
      }
      const parsed = parseAddress(row.email);
      if (!parsed) {
        invalid(row.line, row.email === '' ? 'no address' : `'${row.email.slice(0, 80)}' is not an email address`);
        continue;
      }
      const address = normaliseForSuppression(parsed.address);
      if (batch.has(address)) {
        result.existing++;
        continue;
      }
      const named = reasonOf(row.reason);
      const evidence: Record<string, string> = { source: 'import', by: opts.by, ...(named === null && row.reason !== '' ? { note: row.reason.replace(/\s+/g, ' ').slice(0, NOTE_MAX) } : {}) };
      batch.set(address, { reason: named ?? opts.reason, at: opts.now, evidence });
      if (batch.size >= batchSize) await flush();
    }
  } catch (err) {
    // What was read before a broken input is written all the same.
    result.stopped = (err as Error).message;
  }
  await flush();
  if (result.tooLarge && result.stopped === null) result.stopped = `the import exceeds ${maxBytes} bytes: what came before was written`;
  return result;
}
