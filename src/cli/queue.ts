import type { Config } from '../config/schema.js';
import { loadConfig } from '../config/load.js';
import { connectForCommand } from './redis-connect.js';
import { createKeys } from '../redis/keys.js';
import { queueOverview } from '../queue/overview.js';
import { destinationStats } from '../queue/stats.js';
import { resolveRecordedShaping } from '../queue/shaping.js';
import { normaliseDomain } from '../core/address.js';
import { flushAll, flushDestination } from '../queue/flush.js';
import { cancelDestination, type DestinationCancel } from '../ingress/message-cancel.js';
import { refsTtlMs } from '../ingress/persist.js';
import { limitOption, parse, println, UsageError, type Io } from './args.js';
import { auditCli, cliActor } from './audit.js';
import { placeHolds, readHolds, releaseHolds, type Hold } from '../queue/holds.js';
import { parseDuration } from '../core/time.js';
import { describeDestinations } from '../ingress/queue-view.js';

const USAGE = `Usage: sluice queue [--config FILE] [--limit N] [--json]
       sluice queue flush (--domain D [--domain D2 …] | --all) [--config FILE] [--json]
       sluice queue cancel --domain D [--domain D2 …] [--config FILE] [--json]
       sluice queue list [--domain D …] [--limit N] [--config FILE] [--json]
       sluice queue hold (--domain D … | --rule NAME …) [--for DURATION] [--reason TEXT] [--config FILE] [--json]
       sluice queue release (--domain D … | --rule NAME … | --all) [--config FILE] [--json]
       sluice queue holds [--config FILE] [--json]

Shows each destination with queued mail: recipients waiting (and due now), recipients leased
(being delivered), the next attempt, its shaping rule, its STARTTLS policy (the rule's tls, else
delivery.tls: none, may, encrypt or verify), and the throttle state of its shaping scope
(connections in use / allowed, tokens left, backoff). The rule is the one the dispatcher resolved
with the destination's MX hosts (a rule matching by MX, like google's '*.google.com'); until the
dispatcher has visited a destination, the rule its domain alone matches. --limit (default 50) cuts
the listing to the busiest destinations; every destination is read to rank them. A scope slowed by
421 / 4.7.x answers shows its level (each halves connections and rate; the limits shown are the
slowed ones), its suspension, and the last answer that slowed it.

flush makes the waiting recipients of the destinations named (or of all of them) due now, as
Postfix's postqueue -f: mail deferred after a destination's outage goes again at once instead of at
its next retry. Delivery's limits still apply: each rule's rate and connections, a provider's
backoff (421 / 4.7.x), a campaign's own throttle; mail held for a closed account or a paused sender
is looked at and held again. Prints how many recipients each destination had made due; written to
the audit log (queue.flush).

cancel takes the waiting recipients of the messages queued for the destinations named out of the
queue, whatever the account, as Postfix's postsuper -d does for a destination that will never take
its mail: each becomes 'cancelled' (no attempt counted, a 'cancelled' event for webhooks, its message
counted off), as DELETE /v1/messages/:id does. Recipients being sent at that moment are left to their
delivery. A campaign's copies are left alone and counted: pause or cancel their campaign (sluice
campaign). Prints the counts per destination; written to the audit log (queue.cancel).

list shows the recipients queued for the destinations named (without --domain: the 10 busiest),
one per line, as Postfix's mailq: those being sent first, then the soonest due; each with its
message id and recipient index, state (queued, deferred, sending), attempts, next attempt, account,
sender, recipient, and the last answer of a deferred one (why it waits). A campaign's recipients are
one line per campaign with their count. A destination an operator holds says so, with the reason.
--limit N (default 100) recipients per destination. It shows addresses: written to the audit log
(queue.list).

hold stops delivery to the destinations named, or to every destination of a shaping rule (--rule
microsoft: the domains whose MX its patterns match, 'default' for those no rule matches), while
their mail waits in the queue: for a provider that blocks the sending IPs (its 5.7.x answers would
bounce every copy) or a domain whose DNS is broken (NXDOMAIN bounces), as Postfix's
defer_transports. Every delivery process stops within a second: no new connection, and a connection
sending there claims nothing after its current batch. Nothing is attempted, deferred or bounced
while held, but mail keeps its age: what is older than its rule's maxAge when the hold ends expires.
--for 2h ends the hold by itself (else it lasts until released); --reason is shown by 'holds'.
Holding again replaces the hold. The DESTINATION table shows HELD. Audited (queue.hold).

release ends holds (--all: every one), and the destinations released are made due at once. Audited
(queue.release). holds lists the holds in force.

Reads and writes Redis directly (REDIS_URL, or the embedded server's socket).`;

/** Characters of the backoff reason shown in the table (--json has it whole). */
const REASON_COLUMN = 60;

function fmtTime(t: number | null, now: number): string {
  if (t === null) return '-';
  const d = Math.round((t - now) / 1000);
  return d <= 0 ? 'now' : d < 120 ? `in ${d}s` : d < 7200 ? `in ${Math.round(d / 60)}m` : `in ${Math.round(d / 3600)}h`;
}

export async function runQueue(argv: string[], io: Io): Promise<number> {
  if (argv[0] === 'flush') return runFlush(argv.slice(1), io);
  if (argv[0] === 'cancel') return runCancel(argv.slice(1), io);
  if (argv[0] === 'list') return runList(argv.slice(1), io);
  if (argv[0] === 'hold') return runHold(argv.slice(1), io);
  if (argv[0] === 'release') return runRelease(argv.slice(1), io);
  if (argv[0] === 'holds') return runHolds(argv.slice(1), io);
  const args = parse({ name: 'queue', usage: USAGE, options: { config: { type: 'string', short: 'c' }, limit: { type: 'string', default: '50' }, json: { type: 'boolean' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const limit = limitOption(args.values.limit);
  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    const now = Date.now();
    const rows = await queueOverview(redis, keys, cfg, cfg.redis.scheduleShards, now, limit);
    if (args.values.json) {
      println(io.out, JSON.stringify(rows, null, 2));
      return 0;
    }
    if (rows.length === 0) {
      println(io.out, 'queue is empty');
      return 0;
    }
    const header = ['DESTINATION', 'READY', 'CAMPAIGNS', 'DUE', 'LEASED', 'NEXT', 'HELD', 'RULE', 'TLS', 'CONNS', 'TOKENS', 'BACKOFF'];
    const table = rows.map((r) => [
      r.domain, String(r.ready), String(r.campaigns), String(r.due), String(r.leased), fmtTime(r.nextAt, now),
      r.held === null ? '-' : `${r.held.kind === 'rule' ? `rule ${r.held.name}` : 'yes'}${r.held.until === null ? '' : `, ends ${fmtTime(r.held.until, now)}`}`,
      r.rule, r.tls,
      `${r.connections}/${r.connectionLimit}`,
      Object.entries(r.tokens).map(([k, v]) => `${k}:${Math.floor(v)}`).join(' ') || '-',
      fmtBackoff(r.backoffLevel, r.suspendedUntil, r.backoffReason, now),
    ]);
    printTable(io, header, table);
    return 0;
  } finally {
    redis.disconnect();
  }
}

/** Columns padded to their widest cell, two spaces apart. */
function printTable(io: Io, header: readonly string[], rows: readonly (readonly string[])[], indent = ''): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] as string).length)));
  for (const row of [header, ...rows]) println(io.out, `${indent}${row.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd()}`);
}

/** 'level 2, suspended until <ISO>: 421 4.7.0 Try again later' or '-' for a scope at full speed. */
function fmtBackoff(level: number, suspendedUntil: number | null, reason: string | null, now: number): string {
  const parts: string[] = [];
  if (level > 0) parts.push(`level ${level}`);
  if (suspendedUntil !== null && suspendedUntil > now) parts.push(`suspended until ${new Date(suspendedUntil).toISOString()}`);
  if (parts.length === 0) return '-';
  const why = reason ? `: ${reason.length > REASON_COLUMN ? `${reason.slice(0, REASON_COLUMN - 1)}…` : reason}` : '';
  return parts.join(', ') + why;
}


/** --domain values as the queue names destinations: lower-case, an IDN as its A-label. */
function domainOptions(named: readonly string[]): string[] {
  return named.map((d) => {
    const n = normaliseDomain(d);
    if (n === undefined) throw new UsageError(`--domain must be a domain name, not '${d}'`);
    return n;
  });
}

async function runCancel(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'queue', usage: USAGE, options: { config: { type: 'string', short: 'c' }, domain: { type: 'string', multiple: true }, json: { type: 'boolean' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  // No --all: cancelling every destination's mail is not a thing to do by a slip of the keyboard.
  const domains = domainOptions(args.values.domain ?? []);
  if (domains.length === 0) throw new UsageError("queue cancel needs --domain D (one or more)\nRun 'sluice queue --help' for usage.");
  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    const opts = { now: Date.now(), recordTtlMs: cfg.retention.records, refsTtlMs: refsTtlMs(cfg), eventsMaxLen: cfg.retention.eventsMaxLen, response: 'not sent: cancelled by the operator (sluice queue cancel)' };
    const done = new Map<string, DestinationCancel>();
    for (const d of new Set(domains)) done.set(d, await cancelDestination(redis, keys, d, opts));
    const total = [...done.values()].reduce((a, b) => a + b.cancelled, 0);
    await auditCli(redis, cfg, io, 'queue.cancel', '', [...done.keys()].join(','));
    if (args.values.json) {
      println(io.out, JSON.stringify({ destinations: Object.fromEntries(done), cancelled: total }, null, 2));
      return 0;
    }
    const n = (k: number, what: string): string => `${k} ${what}${k === 1 ? '' : 's'}`;
    for (const [d, r] of done) {
      let line = `${d}: ${n(r.cancelled, 'recipient')} of ${n(r.messages, 'message')} cancelled`;
      if (r.sending > 0) line += `; ${r.sending} being sent, left to their delivery`;
      if (r.campaigns > 0) line += `; copies of ${n(r.campaigns, 'campaign')} left (pause or cancel the campaign)`;
      println(io.out, line);
    }
    println(io.out, `${n(total, 'recipient')} cancelled`);
    return 0;
  } finally {
    redis.disconnect();
  }
}

async function runFlush(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'queue', usage: USAGE, options: { config: { type: 'string', short: 'c' }, domain: { type: 'string', multiple: true }, all: { type: 'boolean' }, json: { type: 'boolean' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const named = args.values.domain ?? [];
  if ((named.length > 0) === (args.values.all === true)) throw new UsageError("queue flush needs --domain D (one or more) or --all\nRun 'sluice queue --help' for usage.");
  const domains = domainOptions(named);
  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    const shards = cfg.redis.scheduleShards;
    const now = Date.now();
    let flushed: Map<string, number>;
    if (args.values.all) flushed = await flushAll(redis, keys, shards, now);
    else {
      flushed = new Map();
      for (const d of new Set(domains)) flushed.set(d, await flushDestination(redis, keys, shards, d, now));
    }
    const total = [...flushed.values()].reduce((a, b) => a + b, 0);
    await auditCli(redis, cfg, io, 'queue.flush', '', args.values.all ? '*' : [...flushed.keys()].join(','));
    if (args.values.json) {
      println(io.out, JSON.stringify({ flushed: Object.fromEntries(flushed), total }, null, 2));
      return 0;
    }
    for (const [d, n] of flushed) println(io.out, `${d}: ${n} recipient${n === 1 ? '' : 's'} due now`);
    println(io.out, `${total} recipient${total === 1 ? '' : 's'} made due now`);
    return 0;
  } finally {
    redis.disconnect();
  }
}

type HoldTarget = { kind: Hold['kind']; name: string };

/** --domain and --rule values as hold targets; a rule must be one the config has ('default' included). */
function holdTargets(cfg: Config, domains: readonly string[], rules: readonly string[]): HoldTarget[] {
  const known = new Set(['default', ...cfg.shaping.rules.map((r) => r.name)]);
  for (const r of rules) {
    if (!known.has(r)) throw new UsageError(`--rule '${r}' is not a shaping rule of this configuration (${[...known].join(', ')})`);
  }
  const out = new Map<string, HoldTarget>();
  for (const d of domainOptions(domains)) out.set(`domain:${d}`, { kind: 'domain', name: d });
  for (const r of rules) out.set(`rule:${r}`, { kind: 'rule', name: r });
  return [...out.values()];
}

const holdName = (h: Pick<Hold, 'kind' | 'name'>): string => (h.kind === 'rule' ? `rule ${h.name}` : h.name);

function fmtHold(h: Hold, now: number): string {
  const until = h.until === null ? 'until released' : `until ${new Date(h.until).toISOString()} (${fmtTime(h.until, now)})`;
  return `${holdName(h)}: held ${until}, since ${new Date(h.at).toISOString()} by ${h.by || '?'}${h.reason ? `: ${h.reason}` : ''}`;
}

const HOLD_OPTIONS = { config: { type: 'string', short: 'c' }, domain: { type: 'string', multiple: true }, rule: { type: 'string', multiple: true }, json: { type: 'boolean' } } as const;

async function runHold(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'queue', usage: USAGE, options: { ...HOLD_OPTIONS, for: { type: 'string' }, reason: { type: 'string' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const domains = args.values.domain ?? [];
  const rules = args.values.rule ?? [];
  if (domains.length + rules.length === 0) throw new UsageError("queue hold needs --domain D or --rule NAME (one or more)\nRun 'sluice queue --help' for usage.");
  let forMs: number | null = null;
  if (args.values.for !== undefined) {
    const d = parseDuration(args.values.for);
    if (d === undefined || d <= 0) throw new UsageError(`--for must be a duration such as 30m, 2h or 1d, not '${args.values.for}'`);
    forMs = d;
  }
  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const targets = holdTargets(cfg, domains, rules);
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    const now = Date.now();
    const placed = await placeHolds(redis, keys, targets, { until: forMs === null ? null : now + forMs, reason: args.values.reason ?? '', by: cliActor(), now });
    await auditCli(redis, cfg, io, 'queue.hold', '', placed.map((h) => `${h.kind}:${h.name}`).join(','));
    if (args.values.json) {
      println(io.out, JSON.stringify({ held: placed }, null, 2));
      return 0;
    }
    for (const h of placed) println(io.out, fmtHold(h, now));
    println(io.out, 'delivery there stops within a second; the mail waits (sluice queue release to end it)');
    return 0;
  } finally {
    redis.disconnect();
  }
}

async function runRelease(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'queue', usage: USAGE, options: { ...HOLD_OPTIONS, all: { type: 'boolean' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const domains = args.values.domain ?? [];
  const rules = args.values.rule ?? [];
  if ((domains.length + rules.length > 0) === (args.values.all === true)) throw new UsageError("queue release needs --domain D or --rule NAME (one or more), or --all\nRun 'sluice queue --help' for usage.");
  const cfg = loadConfig({ file: args.values.config, env: io.env });
  // A rule that has left the config may still be held: release takes any name.
  const targets: HoldTarget[] | 'all' = args.values.all ? 'all' : [...domainOptions(domains).map((d): HoldTarget => ({ kind: 'domain', name: d })), ...rules.map((r): HoldTarget => ({ kind: 'rule', name: r }))];
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    const released = await releaseHolds(redis, keys, cfg.redis.scheduleShards, targets, Date.now(), (d, recorded) => resolveRecordedShaping(cfg.shaping, d, recorded).rule);
    await auditCli(redis, cfg, io, 'queue.release', '', targets === 'all' ? '*' : targets.map((t) => `${t.kind}:${t.name}`).join(','));
    if (args.values.json) {
      println(io.out, JSON.stringify({ released }, null, 2));
      return 0;
    }
    for (const h of released) println(io.out, `${holdName(h)}: released`);
    if (targets !== 'all') {
      for (const t of targets) if (!released.some((h) => h.kind === t.kind && h.name === t.name)) println(io.out, `${holdName(t)}: was not held`);
    }
    println(io.out, `${released.length} hold${released.length === 1 ? '' : 's'} released`);
    return 0;
  } finally {
    redis.disconnect();
  }
}

async function runHolds(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'queue', usage: USAGE, options: { config: { type: 'string', short: 'c' }, json: { type: 'boolean' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const redis = await connectForCommand(cfg);
  try {
    const now = Date.now();
    const holds = await readHolds(redis, createKeys(cfg.redis.prefix), now);
    if (args.values.json) println(io.out, JSON.stringify(holds, null, 2));
    else if (holds.length === 0) println(io.out, 'no holds');
    else for (const h of holds) println(io.out, fmtHold(h, now));
    return 0;
  } finally {
    redis.disconnect();
  }
}

/** Destinations `queue list` shows without --domain. */
const LIST_BUSIEST = 10;

/** Characters of the last answer shown per line (--json has it whole). */
const ANSWER_COLUMN = 100;

async function runList(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'queue', usage: USAGE, options: { config: { type: 'string', short: 'c' }, domain: { type: 'string', multiple: true }, limit: { type: 'string', default: '100' }, json: { type: 'boolean' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  let domains = [...new Set(domainOptions(args.values.domain ?? []))];
  const limit = limitOption(args.values.limit);
  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    const now = Date.now();
    // No --domain: the busiest destinations, as `sluice queue` ranks them.
    if (domains.length === 0) domains = (await destinationStats(redis, keys, cfg.redis.scheduleShards, now, LIST_BUSIEST)).map((d) => d.domain);
    const listings = await describeDestinations(redis, keys, cfg.shaping, domains, limit);
    await auditCli(redis, cfg, io, 'queue.list', '', domains.join(',') || '-');
    if (args.values.json) {
      println(io.out, JSON.stringify(listings, null, 2));
      return 0;
    }
    for (const l of listings) {
      println(io.out, `${l.domain}: ${l.waiting} waiting, ${l.sending} being sent${l.campaigns.length > 0 ? `, and the recipients of ${l.campaigns.length} campaign${l.campaigns.length === 1 ? '' : 's'}` : ''}`);
      if (l.held) println(io.out, `  held by the operator (${l.held.kind === 'rule' ? `rule ${l.held.name}` : 'this domain'}) ${l.held.until === null ? 'until released' : `until ${new Date(l.held.until).toISOString()}`}${l.held.reason ? `: ${l.held.reason}` : ''}`);
      const table = l.recipients.map((r) => {
        const answer = r.response === null ? '-' : r.response.replace(/\s+/g, ' ');
        return [
          `${r.msgId}:${r.idx}`, r.state, String(r.attempts), r.state === 'sending' ? '-' : fmtTime(r.at, now), r.account ?? '?', r.from ?? '?', r.to ?? '?',
          answer.length > ANSWER_COLUMN ? `${answer.slice(0, ANSWER_COLUMN - 1)}…` : answer,
        ];
      });
      if (table.length > 0) {
        const header = ['ID', 'STATE', 'TRIES', 'NEXT', 'ACCOUNT', 'FROM', 'TO', 'LAST ANSWER'];
        printTable(io, header, table, '  ');
      }
      const more = l.waiting + l.sending - l.recipients.length;
      if (more > 0) println(io.out, `  … and ${more} more (--limit)`);
      for (const c of l.campaigns) println(io.out, `  campaign ${c.campaignId}: ${c.waiting} recipient${c.waiting === 1 ? '' : 's'} waiting, ${c.at === null ? 'paused' : `next ${fmtTime(c.at, now)}`}`);
    }
    return 0;
  } finally {
    redis.disconnect();
  }
}
