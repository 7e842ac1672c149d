import { userInfo } from 'node:os';
import type { Config } from '../config/schema.js';
import { loadConfig } from '../config/load.js';
import { createKeys } from '../redis/keys.js';
import type { RedisClient } from '../redis/client.js';
import { appendAudit, readAudit } from '../store/audit.js';
import { accountOption, parse, println, UsageError, type Io } from './args.js';
import { connectForCommand } from './redis-connect.js';

const USAGE = `Usage: sluice audit [--account ID] [--limit N] [--json]

Prints the audit log, newest first: admin and account actions (suppression changes and imports,
sender pauses and resumes, webhook registrations and replays, account close and reopen, queue
listings, flushes, cancels, holds and releases) with who made them (account:<id>,
operator:<id> or cli:<user>, and the API key's id), when, and from where (client IP or 'cli').
Addresses appear only as hmac:… references (keyed digests).

  --account ID  only actions on this account
  --limit N     at most N entries (default 100)
  --json        one JSON object per line
Options: --config FILE. Reads Redis directly (REDIS_URL, or the embedded server's socket).`;


/** Who runs a command: the local user name, so the log says which operator typed it. */
export function cliActor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli';
  }
}

/**
 * Records a change a command made. The change is done already: a failure to write the entry is
 * reported on stderr and does not turn the command into a failure.
 */
export async function auditCli(redis: RedisClient, cfg: Config, io: Io, action: string, account: string, target?: string): Promise<void> {
  try {
    await appendAudit(redis, createKeys(cfg.redis.prefix), { actor: cliActor(), action, account, target, from: 'cli' }, cfg.retention.auditMaxLen);
  } catch (err) {
    println(io.err, `sluice: warning: the audit entry could not be written: ${(err as Error).message}`);
  }
}

export async function runAudit(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'audit', usage: USAGE, options: { config: { type: 'string', short: 'c' }, account: { type: 'string' }, limit: { type: 'string', default: '100' }, json: { type: 'boolean' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const account = accountOption(args.values.account);
  const limit = Number(args.values.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) throw new UsageError(`--limit must be a whole number from 1 to 100000, not '${args.values.limit}'`);
  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const redis = await connectForCommand(cfg);
  try {
    const entries = await readAudit(redis, createKeys(cfg.redis.prefix), { account, limit });
    for (const e of entries) {
      const at = new Date(e.at).toISOString();
      if (args.values.json) {
        println(io.out, JSON.stringify({ id: e.id, at, actor: e.actor, key: e.key ?? null, action: e.action, account: e.account || null, target: e.target ?? null, from: e.from }));
      } else {
        println(io.out, [at, e.actor + (e.key ? ` (key ${e.key})` : ''), e.action, e.account || '-', e.target ?? '-', `from ${e.from}`].join('\t'));
      }
    }
    if (entries.length === 0 && !args.values.json) println(io.err, account === undefined ? 'the audit log is empty' : `no audit entries for account ${account}`);
    return 0;
  } finally {
    redis.disconnect();
  }
}
