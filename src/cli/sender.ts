import { loadConfig } from '../config/load.js';
import { normaliseDomain } from '../core/address.js';
import { ReputationGuard, reputationOptionsOf } from '../feedback/reputation.js';
import { createKeys } from '../redis/keys.js';
import { ACCOUNT_SCOPE, type Figures } from '../store/reputation.js';
import { accountOption, configuredAccount, parse, println, subcommand, UsageError, type Io } from './args.js';
import { connectForCommand } from './redis-connect.js';
import { auditCli, cliActor } from './audit.js';

const USAGE = `Usage: sluice sender <status|pause|resume> [options]

  status  the paused senders: account, domain ('*' = the whole account), why, when, the figures
          that paused it and the figures now (the reputation guard's), or who paused it and why
          (an operator's)    [--account ID] [--json]
  pause   pause a sender by hand: --account ID, and --domain D for one sending domain (without it,
          the whole account), [--reason TEXT]. Its mail waits, held; submissions are still taken.
          The account cannot resume it (POST /v1/sender/resume answers 403
          SLUICE_SENDER_PAUSED_BY_OPERATOR): only an operator does. It replaces the guard's pause
          of the same scope.
  resume  resume a paused sender: --account ID, and --domain D for one sending domain (without it,
          every pause of the account). Its figures start again from zero.

Options: --config FILE. Reads Redis directly (REDIS_URL, or the embedded server's socket).
Exit codes: 0 done; 1 nothing was paused (resume) or failure; 2 usage.`;


function pct(ratio: number): string {
  return `${(ratio * 100).toFixed(2)}%`;
}

function figuresText(f: Figures): string {
  return `sent ${f.sent}, hard bounces ${f.hardbounces} (${pct(f.hardBounceRate)}), complaints ${f.complaints} (${pct(f.complaintRate)})`;
}

export async function runSender(argv: string[], io: Io): Promise<number> {
  const args = parse(
    {
      name: 'sender',
      usage: USAGE,
      allowPositionals: true,
      options: { config: { type: 'string', short: 'c' }, account: { type: 'string' }, domain: { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' } },
    },
    argv,
  );
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const sub = subcommand('sender', args.positionals, ['status', 'pause', 'resume']);
  const hint = "Run 'sluice sender --help' for usage.";
  const account = accountOption(args.values.account);
  let domain: string | null = null;
  if (args.values.domain !== undefined) {
    if (sub === 'status') throw new UsageError(`--domain is for pause and resume\n${hint}`);
    domain = normaliseDomain(args.values.domain) ?? null;
    if (domain === null) throw new UsageError(`--domain must be a domain name, not '${args.values.domain}'`);
  }
  if (sub !== 'status' && account === undefined) throw new UsageError(`${sub} needs --account ID\n${hint}`);
  if (args.values.reason !== undefined && sub !== 'pause') throw new UsageError(`--reason is for pause only\n${hint}`);

  const cfg = loadConfig({ file: args.values.config, env: io.env });
  if (sub !== 'status' && !configuredAccount(cfg, account as string, io)) return 1;
  const redis = await connectForCommand(cfg);
  try {
    const guard = new ReputationGuard({ redis, keys: createKeys(cfg.redis.prefix), eventsMaxLen: cfg.retention.eventsMaxLen }, { ...reputationOptionsOf(cfg.reputation), checkCacheMs: 0 });
    if (sub === 'pause') {
      const p = await guard.pauseByOperator(account as string, domain, { by: cliActor(), note: args.values.reason ?? '' });
      await auditCli(redis, cfg, io, 'sender.pause', account as string, p.scope);
      println(io.out, `paused ${account} ${p.scope === ACCOUNT_SCOPE ? '(the whole account)' : p.scope}: its mail waits until an operator resumes it (sluice sender resume)`);
      return 0;
    }
    if (sub === 'resume') {
      const resumed = await guard.resume(account as string, domain, 'cli');
      if (resumed.length === 0) {
        println(io.err, `sluice: ${domain === null ? `no sender of account ${account} is paused` : `${domain} of account ${account} is not paused`}`);
        return 1;
      }
      await auditCli(redis, cfg, io, 'sender.resume', account as string, resumed.join(','));
      for (const s of resumed) println(io.out, `resumed ${account} ${s === ACCOUNT_SCOPE ? '(the whole account)' : s}`);
      return 0;
    }
    const rows = await guard.status(account);
    if (args.values.json) {
      for (const r of rows) {
        const p = r.pause;
        const how = p.reason === 'operator' ? { by: p.by ?? null, note: p.note ?? '' } : { threshold: p.threshold, windowHours: p.windowHours, figures: p.figures };
        println(io.out, JSON.stringify({ account: p.account, domain: p.scope === ACCOUNT_SCOPE ? null : p.scope, reason: p.reason, pausedAt: new Date(p.at).toISOString(), ...how, current: r.current }));
      }
      return 0;
    }
    if (rows.length === 0) {
      println(io.out, account === undefined ? 'no sender is paused' : `no sender of account ${account} is paused`);
      return 0;
    }
    for (const r of rows) {
      const p = r.pause;
      const why = p.reason === 'operator' ? `by the operator (${p.by ?? '?'})${p.note ? `: ${p.note}` : ''}` : `for ${p.reason} above ${pct(p.threshold)} over ${p.windowHours} h — ${figuresText(p.figures)}`;
      println(io.out, `${p.account} ${p.scope}: paused ${new Date(p.at).toISOString()} ${why}; now ${figuresText(r.current)}`);
    }
    return 0;
  } finally {
    redis.disconnect();
  }
}
