import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { parse, type CsvError } from 'csv-parse';
import { byteLines } from '../core/lines.js';
import { SluiceError, toSluiceError, type ErrorCode } from '../core/errors.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { endImport, fieldNameProblem, getList, isContactStatus, upsertContacts, CONTACT_STATUSES, type ContactRow } from './contacts.js';

/**
 * Streaming import of contacts into a list, from CSV or NDJSON, in constant memory whatever the
 * size: rows are parsed as the bytes arrive and written in batches (one atomic Lua call each); the
 * next bytes are read only once a batch is written, so a slow Redis slows the reader (backpressure)
 * instead of filling memory.
 *
 * CSV: a header row with an `email` column (any case); a `status` column, when present, sets the
 * status (subscribed, unsubscribed, bounced, complained; empty = unchanged or subscribed); every other
 * column is a merge field. Values are trimmed; an empty value never erases a stored one.
 * NDJSON: one object per line, either {"email", "fields"?: {...}, "status"?} (the shape an export
 * writes; its created/updated are ignored) or a flat object whose other keys are fields.
 *
 * Bad rows (invalid address, bad status, wrong number of columns, invalid UTF-8, unparsable JSON)
 * are reported with their line number and reason and skipped; the import goes on. Only a broken
 * stream stops it: the size or row limit, a CSV record that never ends (an unclosed quote), the
 * list deleted meanwhile, Redis failing. It then throws ImportAborted, whose `result` says how far it
 * got: every row up to `result.lines` is in the list (whole batches), none after.
 */
export type ListFormat = 'csv' | 'ndjson';

export interface ImportLimits {
  /** Bytes of input (lists.maxImportBytes). */
  readonly maxBytes: number;
  /** Data rows, bad ones included (lists.maxImportRows). */
  readonly maxRows: number;
}

export interface ImportError {
  readonly line: number;
  readonly reason: string;
}

export interface ImportResult {
  /** Rows written: created + updated + duplicates. */
  imported: number;
  /** New contacts. */
  created: number;
  /** Rows merged into a contact the list had before this import. */
  updated: number;
  /** Rows merged into a contact an earlier row of this import wrote. */
  duplicates: number;
  /** Rows whose address is on the account's or the global suppression list (written, never sent to). */
  suppressed: number;
  /** Bad rows, all of them; `errors` keeps the first MAX_REPORTED_ERRORS. */
  invalid: number;
  errors: ImportError[];
  /** The last line read (a finished import: the file's last line with data). */
  lines: number;
  bytes: number;
  /** False when the import stopped midway (ImportAborted). */
  complete: boolean;
}

export interface ImportOptions {
  readonly format: ListFormat;
  readonly limits: ImportLimits;
  readonly now?: () => number;
  /** Called after each batch is written. */
  readonly onProgress?: (r: Readonly<ImportResult>) => void;
  readonly batchSize?: number;
}

/** The import stopped midway: the code says why, `result` how far it got. */
export class ImportAborted extends SluiceError {
  constructor(
    cause: SluiceError,
    readonly result: ImportResult,
  ) {
    super(cause.code, cause.message, { cause, errors: cause.errors });
  }

  /** The HTTP answer carries the progress: the client learns which lines are in the list. */
  override toJSON() {
    return { ...super.toJSON(), result: this.result };
  }
}

// ~1000 rows per Lua call: a few milliseconds of Redis time per batch, a few hundred KB of memory.
export const IMPORT_BATCH = 1000;
/** Bad rows kept for the report; the rest are only counted (a broken file must not fill memory). */
export const MAX_REPORTED_ERRORS = 1000;
// One record (CSV) or line (NDJSON): 100 fields of 1 KiB fit with room; beyond it is a wrong file or
// an unclosed quote swallowing the rest of the file.
export const MAX_RECORD_BYTES = 128 * 1024;

type Item = { line: number; row: ContactRow } | { line: number; reason: string };

const LINE_BREAKS = /\r\n|\r|\n/g;

function tooLarge(message: string): SluiceError {
  return new SluiceError('SLUICE_LIST_IMPORT_TOO_LARGE', message);
}

/**
 * The input, shared by the byte counter and the parsers. A limit or a broken record does not throw
 * from inside the stream (that would destroy the parser and lose the records it has already read):
 * it sets `stop`, the input ends early, the records read before it are written, and the parser
 * throws `stop` once they are out.
 */
interface Input {
  readonly chunks: AsyncIterable<Buffer>;
  stop: SluiceError | undefined;
}

/** The source's bytes, counted; ends early (setting `stop`) at the size limit or when a parser asks. */
function countedInput(source: AsyncIterable<Buffer | string>, maxBytes: number, tally: ImportResult): Input {
  const state: { stop: SluiceError | undefined } = { stop: undefined };
  async function* chunks(): AsyncGenerator<Buffer> {
    for await (const chunk of source) {
      if (state.stop) return;
      const b = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
      if (tally.bytes + b.length > maxBytes) {
        state.stop = tooLarge(`The import exceeds ${maxBytes} bytes (lists.maxImportBytes)`);
        return;
      }
      tally.bytes += b.length;
      yield b;
    }
  }
  return Object.assign(state, { chunks: chunks() });
}

/** A value with U+FFFD came from bytes that are not UTF-8 (csv-parse decodes them so). */
function hasInvalidUtf8(values: readonly string[]): boolean {
  return values.some((v) => v.includes('\uFFFD'));
}

function statusOf(text: string): ContactRow['status'] | { reason: string } {
  const s = text.trim().toLowerCase();
  if (s === '') return undefined;
  return isContactStatus(s) ? s : { reason: `status '${text.trim().slice(0, 40)}' is not one of ${CONTACT_STATUSES.join(', ')}` };
}

type Header = { email: number; status: number; fields: (string | null)[] };

function csvItem(header: Header, record: readonly string[], line: number): Item {
  if (hasInvalidUtf8(record)) return { line, reason: 'not valid UTF-8' };
  if (record.length !== header.fields.length) return { line, reason: `${record.length} values, the header has ${header.fields.length}` };
  const status = header.status === -1 ? undefined : statusOf(record[header.status] as string);
  if (typeof status === 'object') return { line, reason: status.reason };
  const fields: Record<string, string> = {};
  header.fields.forEach((name, i) => {
    if (name !== null) fields[name] = (record[i] as string).trim();
  });
  return { line, row: { email: record[header.email] as string, fields, status } };
}

async function* csvItems(input: Input): AsyncGenerator<Item> {
  const parser = parse({
    bom: true,
    info: true,
    relax_column_count: true,
    relax_quotes: true,
    skip_empty_lines: true,
    skip_records_with_error: true,
    max_record_size: MAX_RECORD_BYTES,
  });
  // Errors the parser skipped past, reported in line order among the records.
  const skipped: Item[] = [];
  let brokenAt = Infinity;
  parser.on('skip', (err: CsvError & { lines?: number }) => {
    const line = err.lines ?? 0;
    if (line >= brokenAt) return;
    if (err.code === 'CSV_MAX_RECORD_SIZE') {
      // csv-parse cannot find the next record after this one: read no further.
      brokenAt = line;
      input.stop ??= new SluiceError('SLUICE_LIST_IMPORT_BAD_FORMAT', `line ${line}: a record longer than ${MAX_RECORD_BYTES} bytes (is a quote left open?)`);
    } else if (err.code === 'CSV_QUOTE_NOT_CLOSED') {
      skipped.push({ line, reason: 'a quoted value is not closed before the end of the file' });
    } else {
      skipped.push({ line, reason: err.message.replace(/ at line \d+.*$/s, '') });
    }
  });
  const feeding = pipeline(input.chunks, parser);
  feeding.catch(() => undefined); // its error reaches the loop below through the parser

  let header: Header | undefined;
  // One record is held back: when the input stops early its last record may be cut short.
  let held: Item | undefined;
  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: string[]; info: { lines: number } }>) {
      const line = info.lines - record.reduce((n, v) => n + (v.match(LINE_BREAKS)?.length ?? 0), 0);
      if (line >= brokenAt) continue;
      if (!header) {
        header = readHeader(record, line);
        continue;
      }
      const item = csvItem(header, record, line);
      if (held) yield held;
      while (skipped.length > 0 && (skipped[0] as Item).line < item.line) yield skipped.shift() as Item;
      held = item;
    }
    await feeding;
  } finally {
    parser.destroy();
  }
  // Cut off by the size limit, the last record may be incomplete: it is dropped. Before a broken
  // record, every record is whole.
  if (held && (!input.stop || brokenAt !== Infinity)) yield held;
  yield* skipped;
  if (input.stop) throw input.stop;
  if (!header) throw new SluiceError('SLUICE_LIST_IMPORT_BAD_FORMAT', "The CSV is empty: it needs a header row with an 'email' column");
}

function readHeader(record: readonly string[], line: number): { email: number; status: number; fields: (string | null)[] } {
  const bad = (why: string) => new SluiceError('SLUICE_LIST_IMPORT_BAD_FORMAT', `line ${line} (the header): ${why}`);
  if (hasInvalidUtf8(record)) throw bad('not valid UTF-8 (save the file as UTF-8)');
  const names = record.map((n) => n.trim());
  const lower = names.map((n) => n.toLowerCase());
  const email = lower.indexOf('email');
  if (email === -1) throw bad("no 'email' column");
  const status = lower.indexOf('status');
  // 'email' and 'status' are found in any case; field names are case-sensitive, as in NDJSON, a
  // patch and a template ({{Name}} is not {{name}}), so 'Name' and 'name' are two columns.
  const seen = new Set<string>();
  const fields = names.map((name, i) => {
    const id = i === email || i === status ? (lower[i] as string) : name;
    if (seen.has(id)) throw bad(`column '${name}' appears twice`);
    seen.add(id);
    if (i === email || i === status) return null;
    const problem = fieldNameProblem(name);
    if (problem) throw bad(problem);
    return name;
  });
  return { email, status, fields };
}

/** NDJSON lines, cut at MAX_RECORD_BYTES; a longer line is reported and skipped, not buffered. */
async function* ndjsonItems(input: Input): AsyncGenerator<Item> {
  for await (const { line, bytes, last } of byteLines(input.chunks, MAX_RECORD_BYTES)) {
    // A stopped input's last line may be cut short: it is not read.
    if (last && input.stop) break;
    const item = bytes === null ? { line, reason: `the line is longer than ${MAX_RECORD_BYTES} bytes` } : ndjsonItem(line, bytes);
    if (item) yield item;
  }
  if (input.stop) throw input.stop;
}

const NESTED_KEYS = new Set(['email', 'fields', 'status', 'created', 'updated']);

/** One NDJSON line (its BOM, on the first, already dropped: core/lines.ts). */
function ndjsonItem(line: number, bytes: Buffer): Item | null {
  if (!isUtf8(bytes)) return { line, reason: 'not valid UTF-8' };
  const text = bytes.toString('utf8').trim();
  if (text === '') return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { line, reason: `not valid JSON: ${(err as Error).message}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { line, reason: 'not a JSON object' };
  const obj = value as Record<string, unknown>;
  if (typeof obj['email'] !== 'string') return { line, reason: "no 'email' string" };
  const nested = 'fields' in obj;
  let source: Record<string, unknown>;
  if (nested) {
    const extra = Object.keys(obj).find((k) => !NESTED_KEYS.has(k));
    if (extra !== undefined) return { line, reason: `unknown key '${extra}' beside 'fields'` };
    if (typeof obj['fields'] !== 'object' || obj['fields'] === null || Array.isArray(obj['fields'])) return { line, reason: "'fields' is not an object" };
    source = obj['fields'] as Record<string, unknown>;
  } else {
    source = obj;
  }
  const fields: Record<string, string> = {};
  for (const [k, v] of Object.entries(source)) {
    if (!nested && (k === 'email' || k === 'status')) continue;
    if (v === null) continue;
    if (typeof v === 'string') fields[k] = v.trim();
    else if (typeof v === 'number' || typeof v === 'boolean') fields[k] = String(v);
    else return { line, reason: `field '${k}' is not a string, number or boolean` };
  }
  let status: ContactRow['status'];
  if (obj['status'] !== undefined && obj['status'] !== null) {
    if (typeof obj['status'] !== 'string') return { line, reason: "'status' is not a string" };
    const s = statusOf(obj['status']);
    if (typeof s === 'object') return { line, reason: s.reason };
    status = s;
  }
  return { line, row: { email: obj['email'], fields, status } };
}

function emptyResult(): ImportResult {
  return { imported: 0, created: 0, updated: 0, duplicates: 0, suppressed: 0, invalid: 0, errors: [], lines: 0, bytes: 0, complete: false };
}

/** Failures of the input itself: what was read before them is still written. */
const INPUT_ERRORS: readonly ErrorCode[] = ['SLUICE_LIST_IMPORT_TOO_LARGE', 'SLUICE_LIST_IMPORT_BAD_FORMAT'];

/**
 * Imports `source` into the account's list. Resolves with the counts when the input ends; throws
 * SLUICE_LIST_NOT_FOUND before reading anything when there is no such list, and ImportAborted when
 * the import stops midway.
 */
export async function importContacts(redis: RedisClient, keys: Keys, account: string, listId: string, source: AsyncIterable<Buffer | string>, opts: ImportOptions): Promise<ImportResult> {
  if (!(await getList(redis, keys, account, listId))) throw new SluiceError('SLUICE_LIST_NOT_FOUND');
  const now = opts.now ?? Date.now;
  const batchSize = opts.batchSize ?? IMPORT_BATCH;
  const importId = randomBytes(8).toString('hex');
  const result = emptyResult();
  let rows = 0;
  // The last line read; once the pending batch is written, every line up to it is decided.
  let seenLine = 0;
  let batch: { line: number; row: ContactRow }[] = [];

  const bad = (line: number, reason: string) => {
    result.invalid++;
    if (result.errors.length < MAX_REPORTED_ERRORS) result.errors.push({ line, reason });
  };
  const flush = async () => {
    if (batch.length === 0) return;
    const outcomes = await upsertContacts(redis, keys, account, listId, batch.map((b) => b.row), now(), { importId });
    outcomes.forEach((o, i) => {
      if (!o.ok) return bad((batch[i] as { line: number }).line, o.reason);
      result.imported++;
      result[o.outcome === 'created' ? 'created' : o.outcome === 'updated' ? 'updated' : 'duplicates']++;
      if (o.suppressed) result.suppressed++;
    });
    result.lines = seenLine;
    batch = [];
    opts.onProgress?.(result);
  };

  const input = countedInput(source, opts.limits.maxBytes, result);
  const items = opts.format === 'csv' ? csvItems(input) : ndjsonItems(input);
  try {
    for await (const item of items) {
      if (++rows > opts.limits.maxRows) throw tooLarge(`The import has more than ${opts.limits.maxRows} rows (lists.maxImportRows)`);
      seenLine = Math.max(seenLine, item.line);
      if ('reason' in item) {
        bad(item.line, item.reason);
        if (batch.length === 0) result.lines = seenLine;
        continue;
      }
      batch.push(item);
      if (batch.length >= batchSize) await flush();
    }
    await flush();
    result.errors.sort((a, b) => a.line - b.line);
    result.complete = true;
    return result;
  } catch (err) {
    const e = toSluiceError(err);
    if (INPUT_ERRORS.includes(e.code)) await flush().catch(() => undefined);
    result.errors.sort((a, b) => a.line - b.line);
    throw new ImportAborted(e, result);
  } finally {
    await endImport(redis, keys, listId, importId).catch(() => undefined);
  }
}
