import { loadConfig } from '../config/load.js';
import { formatDuration, type Ms } from '../core/time.js';
import { createKeys } from '../redis/keys.js';
import { closeAccount, closedRecord, listClosed, reopenAccount } from '../store/account-state.js';
import { stateJson } from '../ingress/admin-routes.js';
import { configuredAccount, parse, println, subcommand, UsageError, type Io } from './args.js';
import { auditCli } from './audit.js';
import { connectForCommand } from './redis-connect.js';

const USAGE = `Usage: sluice account <close|reopen|status> [ID] [options]

  close ID    stop the account's sending at once (submissions are refused with SLUICE_ACCOUNT_CLOSED,
              queued mail is held) and delete all its data after retention.closedAccounts
  reopen ID   resume a closed account's sending (before the deletion, its data is all there)
  status [ID] the account's state (open, closed, deleted), or every closed account   [--json]

Closing takes effect in every Sluice process within a second. Accounts are those of the config.
Options: --config FILE. Reads Redis directly (REDIS_URL, or the embedded server's socket).
Exit codes: 0 done; 1 not closed (reopen), unknown account, or failure; 2 usage.`;

function line(d: Record<string, unknown>): string {
  if (d['state'] === 'open') return `${d['account'] as string}: open`;
  const deleted = d['deletedAt'] ? `, data deleted ${d['deletedAt'] as string}` : `, data deleted after ${d['purgeAt'] as string}`;
  return `${d['account'] as string}: ${d['state'] as string} since ${d['closedAt'] as string} by ${d['closedBy'] as string}${deleted}`;
}

export async function runAccount(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'account', usage: USAGE, allowPositionals: true, options: { config: { type: 'string', short: 'c' }, json: { type: 'boolean' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const [subText, ...rest] = args.positionals;
  const sub = subcommand('account', subText === undefined ? [] : [subText], ['close', 'reopen', 'status']);
  const hint = "Run 'sluice account --help' for usage.";
  if (rest.length > 1) throw new UsageError(`unexpected argument '${rest[1] as string}'\n${hint}`);
  const id = rest[0];
  if (id === undefined && sub !== 'status') throw new UsageError(`${sub} needs an account ID\n${hint}`);

  const cfg = loadConfig({ file: args.values.config, env: io.env });
  if (id !== undefined && !configuredAccount(cfg, id, io)) return 1;
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    if (sub === 'close') {
      const { record, created } = await closeAccount(redis, keys, id as string, { now: Date.now(), windowMs: cfg.retention.closedAccounts, by: 'cli' });
      if (created) await auditCli(redis, cfg, io, 'account.close', id as string);
      println(io.out, created
        ? `closed ${id as string}: sending stopped; its data is deleted after ${new Date(record.purgeAt).toISOString()} (retention.closedAccounts ${formatDuration(cfg.retention.closedAccounts as Ms)})`
        : line(stateJson(id as string, record)));
      return 0;
    }
    if (sub === 'reopen') {
      const was = await reopenAccount(redis, keys, id as string);
      if (!was) {
        println(io.err, `sluice: account ${id as string} is not closed`);
        return 1;
      }
      await auditCli(redis, cfg, io, 'account.reopen', id as string);
      println(io.out, was.deletedAt !== null ? `reopened ${id as string}: it may send again; its earlier data was deleted on ${new Date(was.deletedAt).toISOString()}` : `reopened ${id as string}: it may send again, its data is kept`);
      return 0;
    }
    const rows = id !== undefined ? [stateJson(id, await closedRecord(redis, keys, id))] : (await listClosed(redis, keys)).map((r) => stateJson(r.account, r));
    for (const r of rows) println(io.out, args.values.json ? JSON.stringify(r) : line(r));
    if (rows.length === 0 && !args.values.json) println(io.out, 'no account is closed');
    return 0;
  } finally {
    redis.disconnect();
  }
}
