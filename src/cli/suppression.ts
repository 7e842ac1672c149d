import { loadConfig } from '../config/load.js';
import { parseAddress } from '../core/address.js';
import { createKeys } from '../redis/keys.js';
import { addSuppression, GLOBAL_LIST, listSuppressions, removeSuppression, suppressionOf, type SuppressionEntry, type SuppressionReason } from '../store/suppression.js';
import { accountOption, configuredAccount, limitOption, parse, println, subcommand, UsageError, type Io } from './args.js';
import { connectForCommand } from './redis-connect.js';
import { auditCli } from './audit.js';
import { addressRef } from '../store/audit.js';
import { createReadStream } from 'node:fs';
import { cliActor } from './audit.js';
import { importSuppressions, type SuppressionFormat } from '../store/suppression-import.js';

const USAGE = `Usage: sluice suppression <list|add|remove|lookup|import> (--account ID | --global) [EMAIL | FILE] [options]

  list    the list's addresses with reason, time and evidence  [--limit N (default 1000)] [--json]
  add     add EMAIL to the list                                [--reason R (default manual)]
  remove  remove EMAIL from the list
  lookup  why EMAIL is not mailed for the account: its own entry, else the global list's  [--json]
  import  add every address of FILE ('-' = stdin), as when moving a sender here from another
          service: [--format csv|ndjson|text] (default from the name: .csv, .ndjson/.jsonl, .txt),
          [--reason R] for rows that name none (default manual). CSV: a header row with an
          'email' (or 'email address', 'address') column and optionally 'reason'; other columns
          are ignored. NDJSON: {"email", "reason"?} per line. Text: one address per line. A reason
          is read leniently ('unsubscribed', 'spam', 'bounce', …); one not recognised keeps the
          default and is noted in the evidence. An address already on the list keeps its entry.
          Prints the counts and every invalid row (line: why)  [--json]

--account ID is one account's list; --global is the list of addresses that do not exist, shared by
every account. Reasons: ${['manual', 'unsubscribe', 'complaint', 'hardbounce', 'softbounce'].join(', ')}.
Options: --config FILE. Reads Redis directly (REDIS_URL, or the embedded server's socket).
Exit codes: 0 done; 1 not found (remove, lookup) or failure; 2 usage.`;

const REASONS: readonly SuppressionReason[] = ['manual', 'unsubscribe', 'complaint', 'hardbounce', 'softbounce'];

function describe(address: string, e: SuppressionEntry, list?: string): Record<string, unknown> {
  return {
    email: address,
    ...(list === undefined ? {} : { list: list === GLOBAL_LIST ? 'global' : 'account' }),
    reason: e.reason,
    at: e.at > 0 ? new Date(e.at).toISOString() : null,
    evidence: e.evidence,
  };
}

function evidenceText(e: SuppressionEntry): string {
  return Object.entries(e.evidence).map(([k, v]) => `${k}=${v}`).join(' ') || '-';
}

export async function runSuppression(argv: string[], io: Io): Promise<number> {
  const args = parse(
    {
      name: 'suppression',
      usage: USAGE,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        account: { type: 'string' },
        global: { type: 'boolean' },
        reason: { type: 'string' },
        format: { type: 'string' },
        limit: { type: 'string', default: '1000' },
        json: { type: 'boolean' },
      },
    },
    argv,
  );
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const [subText, ...rest] = args.positionals;
  const sub = subcommand('suppression', subText === undefined ? [] : [subText], ['list', 'add', 'remove', 'lookup', 'import']);
  const hint = "Run 'sluice suppression --help' for usage.";

  const { global } = args.values;
  const account = accountOption(args.values.account);
  if ((account === undefined) === (global !== true)) throw new UsageError(`give exactly one of --account ID and --global\n${hint}`);
  const list = account ?? GLOBAL_LIST;
  if (sub === 'lookup' && global) throw new UsageError(`lookup answers for an account: give --account ID\n${hint}`);

  if (args.values.format !== undefined && sub !== 'import') throw new UsageError(`--format is for import only\n${hint}`);
  if (sub === 'import') {
    if (rest.length !== 1) throw new UsageError(`import takes one FILE ('-' = stdin)\n${hint}`);
    return runImport(rest[0] as string, list, args.values, io, hint);
  }
  let address = '';
  if (sub === 'list') {
    if (rest.length > 0) throw new UsageError(`unexpected argument '${rest[0] as string}'\n${hint}`);
  } else {
    if (rest.length !== 1) throw new UsageError(`${sub} takes one EMAIL\n${hint}`);
    const text = rest[0] as string;
    const parsed = parseAddress(text);
    if (sub === 'add' && !parsed) throw new UsageError(`'${text}' is not a valid email address`);
    if (!text.includes('@')) throw new UsageError(`'${text}' is not an email address`);
    address = parsed?.address ?? text;
  }
  const reason = (args.values.reason ?? 'manual') as SuppressionReason;
  if (!REASONS.includes(reason)) throw new UsageError(`--reason must be one of ${REASONS.join(', ')}, not '${args.values.reason}'`);
  if (args.values.reason !== undefined && sub !== 'add') throw new UsageError(`--reason is for add only\n${hint}`);
  const limit = limitOption(args.values.limit);

  const cfg = loadConfig({ file: args.values.config, env: io.env });
  if (sub === 'add' && account !== undefined && !configuredAccount(cfg, account, io)) return 1;
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    const label = list === GLOBAL_LIST ? 'the global list' : `account ${list}'s list`;
    switch (sub) {
      case 'list': {
        let cursor = '0';
        let shown = 0;
        do {
          const page = await listSuppressions(redis, keys, list, cursor, Math.min(1000, limit - shown));
          for (const e of page.entries.slice(0, limit - shown)) {
            println(io.out, args.values.json ? JSON.stringify(describe(e.address, e)) : `${e.address}\t${e.reason}\t${e.at > 0 ? new Date(e.at).toISOString() : '-'}\t${evidenceText(e)}`);
            shown++;
          }
          cursor = page.cursor;
        } while (cursor !== '0' && shown < limit);
        if (!args.values.json && shown === 0) println(io.err, `${label} is empty`);
        return 0;
      }
      case 'add': {
        const now = Date.now();
        await addSuppression(redis, keys, list, address, { reason, at: now, evidence: { source: 'cli' } });
        await auditCli(redis, cfg, io, 'suppression.add', list === GLOBAL_LIST ? '' : list, await addressRef(redis, keys, address));
        println(io.out, `added ${address} to ${label} (${reason})`);
        return 0;
      }
      case 'remove': {
        if (await removeSuppression(redis, keys, list, address)) {
          await auditCli(redis, cfg, io, 'suppression.remove', list === GLOBAL_LIST ? '' : list, await addressRef(redis, keys, address));
          println(io.out, `removed ${address} from ${label}`);
          return 0;
        }
        println(io.err, `sluice: ${address} is not on ${label}`);
        return 1;
      }
      case 'lookup': {
        const hit = await suppressionOf(redis, keys, list, address);
        if (!hit) {
          if (args.values.json) println(io.out, JSON.stringify({ email: address, suppressed: false }));
          else println(io.out, `${address} is not suppressed for account ${list}`);
          return 1;
        }
        if (args.values.json) println(io.out, JSON.stringify({ ...describe(address, hit, hit.list), suppressed: true }));
        else println(io.out, `${address} is suppressed on ${hit.list === GLOBAL_LIST ? 'the global list' : `account ${list}'s list`}: ${hit.reason} since ${hit.at > 0 ? new Date(hit.at).toISOString() : '(unknown)'}; evidence: ${evidenceText(hit)}`);
        return 0;
      }
      default:
        throw new UsageError(`unknown subcommand '${sub}'\n${hint}`);
    }
  } finally {
    redis.disconnect();
  }
}

const FORMATS: readonly SuppressionFormat[] = ['csv', 'ndjson', 'text'];

function formatOf(file: string, given: string | undefined, hint: string): SuppressionFormat {
  if (given !== undefined) {
    if (!FORMATS.includes(given as SuppressionFormat)) throw new UsageError(`--format must be one of ${FORMATS.join(', ')}, not '${given}'`);
    return given as SuppressionFormat;
  }
  const ext = /\.([a-z]+)$/i.exec(file)?.[1]?.toLowerCase();
  const byExt: Record<string, SuppressionFormat> = { csv: 'csv', ndjson: 'ndjson', jsonl: 'ndjson', txt: 'text' };
  const f = ext === undefined ? undefined : byExt[ext];
  if (!f) throw new UsageError(`cannot tell the format of '${file}': give --format csv, ndjson or text\n${hint}`);
  return f;
}

async function runImport(file: string, list: string, values: { config?: string | undefined; reason?: string | undefined; format?: string | undefined; json?: boolean | undefined }, io: Io, hint: string): Promise<number> {
  const format = formatOf(file, values.format, hint);
  const reason = (values.reason ?? 'manual') as SuppressionReason;
  if (!REASONS.includes(reason)) throw new UsageError(`--reason must be one of ${REASONS.join(', ')}, not '${values.reason}'`);
  const cfg = loadConfig({ file: values.config, env: io.env });
  if (list !== GLOBAL_LIST && !configuredAccount(cfg, list, io)) return 1;
  const source = file === '-' ? io.stdin : createReadStream(file, { highWaterMark: 64 * 1024 });
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    const label = list === GLOBAL_LIST ? 'the global list' : `account ${list}'s list`;
    const result = await importSuppressions(redis, keys, list, source, { format, reason, now: Date.now(), by: cliActor() });
    await auditCli(redis, cfg, io, 'suppression.import', list === GLOBAL_LIST ? '' : list, `${result.added} added from ${file === '-' ? 'stdin' : file}`);
    if (values.json) println(io.out, JSON.stringify(result));
    else {
      for (const e of result.errors) println(io.err, `line ${e.line}: ${e.reason}`);
      if (result.invalid > result.errors.length) println(io.err, `… and ${result.invalid - result.errors.length} more invalid rows`);
      println(io.out, `${result.rows} rows read into ${label}: ${result.added} added, ${result.existing} already there (kept as they were), ${result.invalid} invalid`);
    }
    if (result.stopped === null) return 0;
    println(io.err, `sluice: the import stopped: ${result.stopped} (the rows read before it were written)`);
    return 1;
  } finally {
    redis.disconnect();
  }
}
