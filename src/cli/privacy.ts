import { loadConfig } from '../config/load.js';
import { parseAddress } from '../core/address.js';
import { createKeys } from '../redis/keys.js';
import { eraseAddress, exportAddress } from '../store/privacy.js';
import { refsTtlMs } from '../ingress/persist.js';
import { addressRef } from '../store/audit.js';
import { accountOption, parse, println, subcommand, UsageError, type Io } from './args.js';
import { connectForCommand } from './redis-connect.js';
import { auditCli } from './audit.js';

const USAGE = `Usage: sluice privacy <export|erase> EMAIL [--account ID]

  export  print everything held about EMAIL as JSON: contacts, suppressions, messages and their
          delivery states, opens, clicks, unsubscribes, bounces, complaints, raw feedback mail
  erase   remove every trace of EMAIL (a suppression survives as a salted digest, so it is still
          never mailed); prints what was removed as JSON

--account ID limits it to one account; without it every configured account is searched.
Options: --config FILE. Reads Redis directly (REDIS_URL, or the embedded server's socket).
Both are written to the audit log (the address as an hmac:… reference only).`;


export async function runPrivacy(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'privacy', usage: USAGE, allowPositionals: true, options: { config: { type: 'string', short: 'c' }, account: { type: 'string' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const [subText, ...rest] = args.positionals;
  const sub = subcommand('privacy', subText === undefined ? [] : [subText], ['export', 'erase']);
  if (rest.length !== 1) throw new UsageError(`${sub} takes one EMAIL\nRun 'sluice privacy --help' for usage.`);
  const text = rest[0] as string;
  if (!text.includes('@')) throw new UsageError(`'${text}' is not an email address`);
  const address = parseAddress(text)?.address ?? text;
  const account = accountOption(args.values.account);

  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const scope = account === undefined ? { accounts: cfg.accounts.map((a) => a.id), all: true } : { accounts: [account], all: false };
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    if (sub === 'export') {
      println(io.out, JSON.stringify(await exportAddress(redis, keys, address, scope), null, 2));
      await auditCli(redis, cfg, io, 'recipient.export', account ?? '', await addressRef(redis, keys, address));
      return 0;
    }
    const ref = await addressRef(redis, keys, address);
    const report = await eraseAddress(redis, keys, address, scope, { eventsMaxLen: cfg.retention.eventsMaxLen, recordTtlMs: cfg.retention.records, refsTtlMs: refsTtlMs(cfg), ref });
    await auditCli(redis, cfg, io, 'recipient.erase', account ?? '', ref);
    println(io.out, JSON.stringify({ erased: report }));
    return 0;
  } finally {
    redis.disconnect();
  }
}
