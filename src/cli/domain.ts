import { AccountRegistry, returnPathsOf } from '../accounts/registry.js';
import { checkDomains, createDnsLookup, publicSourceAddresses, tally, type CheckStatus } from '../accounts/domain-check.js';
import { isIP } from 'node:net';
import { normaliseDomain } from '../core/address.js';
import { loadConfig } from '../config/load.js';
import { zoneTxtLine } from './dkim.js';
import { accountOption, parse, println, subcommand, UsageError, type Io } from './args.js';

const USAGE = `Usage: sluice domain check [--account ID] [--domain D] [--ip ADDRESS …] [--json] [--config FILE]

Asks DNS what receivers will find about the domains Sluice sends for, and says what is missing or
wrong before mail goes out:
  each account domain  DKIM: every configured key published at <selector>._domainkey.<domain>, and
                       this key (not an old one), of its type, not revoked, usable for mail
                       DMARC: a record at _dmarc.<domain> (or a parent's), with a valid policy
  envelope domains     delivery.bounceDomain, and a domain's returnPath when it has one:
                       MX: it resolves, so receivers take MAIL FROM of it and bounces come back
                       SPF: one v=spf1 record within receivers' limits (10 DNS-querying terms),
                       and evaluated for each address Sluice sends from: the public source
                       addresses of the configuration (delivery.bindAddress(6), shaping rules'),
                       and --ip
Resolvers: delivery.dns.servers (else the system's). Nothing is written anywhere.

  --account ID  only this account's domains (the bounce domain is checked too)
  --domain D    only this sending domain
  --ip ADDRESS  an address receivers see this host's mail come from (behind NAT, the public one); repeat for more
  --json        one JSON object: {domains: [{domain, kind, account, checks: [{check, name, status, detail, …}]}], failed, warnings}
Exit code 1 when a check fails (mail would fail authentication or be refused), else 0 (warnings too).`;

const MARK: Record<CheckStatus, string> = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' };

export async function runDomain(argv: string[], io: Io): Promise<number> {
  const args = parse({
    name: 'domain', usage: USAGE, allowPositionals: true,
    options: { config: { type: 'string', short: 'c' }, account: { type: 'string' }, domain: { type: 'string' }, ip: { type: 'string', multiple: true }, json: { type: 'boolean' } },
  }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  subcommand('domain', args.positionals, ['check']);
  const account = accountOption(args.values.account);
  let only: string | undefined;
  if (args.values.domain !== undefined) {
    only = normaliseDomain(args.values.domain) ?? undefined;
    if (!only) throw new UsageError(`--domain '${args.values.domain}' is not a valid domain name`);
  }
  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const registry = new AccountRegistry(cfg.accounts);
  if (account !== undefined && !registry.get(account)) throw new UsageError(`no account '${account}' in the configuration`);
  const domains = registry.list()
    .filter((a) => account === undefined || a.id === account)
    .flatMap((a) => [...a.domains].map((domain) => ({ account: a.id, domain })))
    .filter((d) => only === undefined || d.domain === only);
  if (only !== undefined && domains.length === 0) throw new UsageError(`no account${account ? ` '${account}'` : ''} sends for '${only}' in the configuration`);
  // The key files as start-up reads them (a missing or wrong one stops here, named).
  const keys = registry.readDkimKeys(new Set(domains.map((d) => d.domain)));
  for (const ip of args.values.ip ?? []) if (isIP(ip) === 0) throw new UsageError(`--ip '${ip}' is not an IP address`);
  const addresses = [...new Set([...(args.values.ip ?? []), ...publicSourceAddresses(cfg.delivery, cfg.shaping.rules)])];

  const dns = createDnsLookup(cfg.delivery.dns.servers, cfg.delivery.dns.timeout);
  // Envelope sender domains: each selected domain's own return path, and delivery.bounceDomain for
  // the others (all of them when no --domain narrows the check).
  const returnPaths = returnPathsOf(cfg.accounts);
  const envelope = new Map<string, string>();
  for (const d of domains) {
    const rp = returnPaths.get(d.domain);
    if (rp !== undefined) envelope.set(rp, `return path of ${d.domain}`);
  }
  if (only === undefined || !returnPaths.has(only)) envelope.set(cfg.delivery.bounceDomain.toLowerCase(), 'bounce domain: the envelope sender of mail without a return path of its own');
  const reports = await checkDomains(dns, {
    domains: domains.map((d) => ({ ...d, keys: keys.filter((k) => k.domain === d.domain), returnPath: returnPaths.get(d.domain) })),
    bounceDomains: [...envelope.keys()],
    addresses,
  });
  const { failed, warnings } = tally(reports.flatMap((r) => r.checks));
  if (args.values.json) {
    println(io.out, JSON.stringify({ domains: reports, failed, warnings }));
  } else {
    for (const r of reports) {
      println(io.out, r.kind === 'sending' ? `${r.domain} (account ${r.account})` : `${r.domain} (${envelope.get(r.domain) ?? 'bounce domain'})`);
      for (const c of r.checks) {
        const what = c.check === 'dkim' && c.selector ? `dkim ${c.selector} ${c.algorithm}` : c.address ? `${c.check} ${c.address}` : c.check;
        println(io.out, `  ${MARK[c.status]}  ${what.padEnd(24)} ${c.detail}`);
        if (c.status !== 'ok' && c.address === undefined && c.found && c.found.length > 0) for (const f of c.found) println(io.out, `        found at ${c.name}: ${f}`);
        if (c.status === 'fail' && c.expected) println(io.out, `        publish: ${zoneTxtLine(c.name, c.expected)}`);
      }
    }
    println(io.out, `${failed} failed, ${warnings} warning${warnings === 1 ? '' : 's'}`);
  }
  return failed > 0 ? 1 : 0;
}
