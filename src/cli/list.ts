import { once } from 'node:events';
import { createReadStream, statSync } from 'node:fs';
import { loadConfig } from '../config/load.js';
import { SluiceError } from '../core/errors.js';
import { isId } from '../core/ids.js';
import { createKeys, type Keys } from '../redis/keys.js';
import type { RedisClient } from '../redis/client.js';
import { createList, eachList, getListAnyAccount, listFieldNames, type ContactList } from '../store/contacts.js';
import { importContacts, ImportAborted, type ImportResult, type ListFormat } from '../store/contact-import.js';
import { exportContacts } from '../store/contact-export.js';
import { accountOption, configuredAccount, parse, println, UsageError, type Io } from './args.js';
import { auditCli } from './audit.js';
import { connectForCommand } from './redis-connect.js';

const USAGE = `Usage: sluice list <create|import|export|show> [ARGS] [options]

  create NAME --account ID           create a contact list; prints its id
  import LIST FILE [--format F]      import contacts from FILE ('-' = stdin), CSV or NDJSON; a progress
                                     bar on stderr when it is a terminal; the counts at the end
  export LIST [--format F]           write the list's contacts to stdout (default csv)
  show [LIST]                        the account's lists (all of them, read in pages of 1000, oldest
                                     first within a page), or one list's counts by status

--format csv|ndjson (import: default from the file name, .csv / .ndjson / .jsonl).
--account ID: whose list. Needed by create and by show without LIST; with a LIST it is optional
(the list knows its account) and, when given, must be the list's.
CSV: a header row with an 'email' column; a 'status' column (subscribed, unsubscribed, bounced,
complained) sets the status; other columns are merge fields. NDJSON: {"email", "fields"?, "status"?}
or flat objects. Bad rows are reported by line and skipped. Limits: lists.maxImportBytes, lists.maxImportRows.
Options: --config FILE, --json. Reads Redis directly (REDIS_URL, or the embedded server's socket).
Exit codes: 0 done; 1 failure (an import stopped midway prints how far it got); 2 usage.`;

// A terminal redraws the bar at most this often: fast enough to look live, rare enough to cost nothing.
const PROGRESS_INTERVAL_MS = 200;

const n = (v: number) => v.toLocaleString('en-US');
const iso = (ms: number) => new Date(ms).toISOString();

function formatOf(value: string | undefined, file?: string): ListFormat {
  if (value !== undefined) {
    if (value !== 'csv' && value !== 'ndjson') throw new UsageError(`--format must be csv or ndjson, not '${value}'`);
    return value;
  }
  if (file === undefined) return 'csv';
  if (/\.csv$/i.test(file)) return 'csv';
  if (/\.(nd)?jsonl?$/i.test(file) || /\.ndjson$/i.test(file)) return 'ndjson';
  throw new UsageError(`cannot tell the format of '${file}' from its name: give --format csv or --format ndjson`);
}

/** The list, checked against --account when given; a usage-level error when there is none. */
async function findList(redis: RedisClient, keys: Keys, id: string, account: string | undefined): Promise<ContactList> {
  const list = isId(id) ? await getListAnyAccount(redis, keys, id) : null;
  if (!list || (account !== undefined && list.account !== account)) throw new SluiceError('SLUICE_LIST_NOT_FOUND', `no list ${id}${account === undefined ? '' : ` for account ${account}`}`);
  return list;
}

/** A one-line progress bar on a terminal: lines read, rate, and the share of the file when its size is known. */
function progressBar(err: NodeJS.WritableStream, totalBytes: number | undefined): { update(r: Readonly<ImportResult>): void; done(): void } {
  const tty = (err as NodeJS.WriteStream).isTTY === true;
  const started = Date.now();
  let last = 0;
  let shown = false;
  return {
    update(r) {
      const now = Date.now();
      if (!tty || now - last < PROGRESS_INTERVAL_MS) return;
      last = now;
      shown = true;
      const rate = r.lines / Math.max(0.001, (now - started) / 1000);
      let bar = '';
      if (totalBytes) {
        const share = Math.min(1, r.bytes / totalBytes);
        const width = 24;
        bar = `[${'#'.repeat(Math.round(share * width)).padEnd(width, '.')}] ${(share * 100).toFixed(0).padStart(3)}%  `;
      }
      err.write(`\r\x1b[K${bar}line ${n(r.lines)}  ${n(Math.round(rate))} lines/s  imported ${n(r.imported)}  invalid ${n(r.invalid)}`);
    },
    done() {
      if (shown) err.write('\r\x1b[K');
    },
  };
}

function printResult(io: Io, r: ImportResult, listId: string, json: boolean): void {
  if (json) return println(io.out, JSON.stringify(r));
  println(io.out, `${r.complete ? 'imported' : 'stopped after'} ${n(r.imported)} rows into list ${listId}: created ${n(r.created)}, updated ${n(r.updated)}, duplicates ${n(r.duplicates)}; suppressed ${n(r.suppressed)}; invalid ${n(r.invalid)}; ${n(r.lines)} lines`);
  for (const e of r.errors) println(io.out, `line ${e.line}: ${e.reason}`);
  if (r.invalid > r.errors.length) println(io.out, `(${n(r.invalid - r.errors.length)} more invalid rows not listed)`);
}

async function write(out: NodeJS.WritableStream, text: string): Promise<void> {
  if (!out.write(text)) await once(out, 'drain');
}

export async function runList(argv: string[], io: Io): Promise<number> {
  const args = parse(
    {
      name: 'list',
      usage: USAGE,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        account: { type: 'string' },
        format: { type: 'string' },
        json: { type: 'boolean' },
      },
    },
    argv,
  );
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const hint = "Run 'sluice list --help' for usage.";
  const [sub, ...rest] = args.positionals;
  const arity: Record<string, [number, number]> = { create: [1, 1], import: [2, 2], export: [1, 1], show: [0, 1] };
  if (sub === undefined) throw new UsageError(`missing subcommand (create, import, export or show)\n${hint}`);
  const range = arity[sub];
  if (!range) throw new UsageError(`unknown subcommand '${sub}' (known: create, import, export, show)\n${hint}`);
  if (rest.length < range[0] || rest.length > range[1]) throw new UsageError(`list ${sub} takes ${range[0] === range[1] ? range[0] : `${range[0]}–${range[1]}`} argument(s), got ${rest.length}\n${hint}`);
  const account = accountOption(args.values.account);
  if ((sub === 'create' || (sub === 'show' && rest.length === 0)) && account === undefined) throw new UsageError(`list ${sub} needs --account ID\n${hint}`);
  if (args.values.format !== undefined && sub !== 'import' && sub !== 'export') throw new UsageError(`--format is for import and export\n${hint}`);
  const format = sub === 'import' ? formatOf(args.values.format, rest[1] === '-' ? undefined : rest[1]) : formatOf(args.values.format);
  if (sub === 'import' && rest[1] === '-' && args.values.format === undefined) throw new UsageError(`reading stdin: give --format csv or --format ndjson\n${hint}`);
  const json = args.values.json === true;

  const cfg = loadConfig({ file: args.values.config, env: io.env });
  if (sub === 'create' && !configuredAccount(cfg, account as string, io)) return 1;
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    switch (sub) {
      case 'create': {
        const list = await createList(redis, keys, account as string, rest[0] as string);
        await auditCli(redis, cfg, io, 'list.create', list.account, list.id);
        println(io.out, json ? JSON.stringify({ id: list.id, name: list.name }) : list.id);
        return 0;
      }
      case 'import': {
        const list = await findList(redis, keys, rest[0] as string, account);
        const file = rest[1] as string;
        let size: number | undefined;
        if (file !== '-') {
          try {
            size = statSync(file).size;
          } catch (err) {
            throw new UsageError(`cannot read '${file}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
          }
        }
        const source = file === '-' ? io.stdin : createReadStream(file, { highWaterMark: 64 * 1024 });
        const bar = progressBar(io.err, size);
        try {
          const r = await importContacts(redis, keys, list.account, list.id, source as AsyncIterable<Buffer>, {
            format,
            limits: { maxBytes: cfg.lists.maxImportBytes, maxRows: cfg.lists.maxImportRows },
            onProgress: (p) => bar.update(p),
          });
          bar.done();
          await auditCli(redis, cfg, io, 'list.import', list.account, list.id);
          printResult(io, r, list.id, json);
          return 0;
        } catch (err) {
          bar.done();
          if (err instanceof ImportAborted) {
            // The rows before the stop are in the list: a change, audited as the HTTP import is.
            await auditCli(redis, cfg, io, 'list.import', list.account, list.id);
            printResult(io, err.result, list.id, json);
          }
          throw err;
        }
      }
      case 'export': {
        const list = await findList(redis, keys, rest[0] as string, account);
        for await (const chunk of exportContacts(redis, keys, list.id, format)) await write(io.out, chunk);
        return 0;
      }
      default: {
        if (rest.length === 0) {
          // Printed as they come: an account with a list per campaign has many.
          let shown = 0;
          for await (const l of eachList(redis, keys, account as string)) {
            shown++;
            if (json) println(io.out, JSON.stringify({ id: l.id, name: l.name, count: l.count, statuses: l.statuses, created: iso(l.created), updated: iso(l.updated) }));
            else println(io.out, `${l.id}\t${n(l.count)}\t${iso(l.created)}\t${l.name}`);
          }
          if (!json && shown === 0) println(io.err, `account ${account as string} has no lists`);
          return 0;
        }
        const list = await findList(redis, keys, rest[0] as string, account);
        const fields = await listFieldNames(redis, keys, list.id);
        if (json) {
          println(io.out, JSON.stringify({ id: list.id, account: list.account, name: list.name, count: list.count, statuses: list.statuses, fields, created: iso(list.created), updated: iso(list.updated) }));
          return 0;
        }
        println(io.out, `${list.name} (${list.id}, account ${list.account})`);
        println(io.out, `  contacts      ${n(list.count)}`);
        for (const [status, count] of Object.entries(list.statuses)) println(io.out, `  ${status.padEnd(13)} ${n(count)}`);
        println(io.out, `  fields        ${fields.length > 0 ? fields.join(', ') : '-'}`);
        println(io.out, `  created       ${iso(list.created)}`);
        println(io.out, `  updated       ${iso(list.updated)}`);
        return 0;
      }
    }
  } finally {
    redis.disconnect();
  }
}
