import { loadConfig } from '../config/load.js';
import { ACCOUNT_ID } from '../config/schema.js';
import { isId } from '../core/ids.js';
import { createKeys, type Keys } from '../redis/keys.js';
import type { RedisClient } from '../redis/client.js';
import { campaignStats, getCampaign, listCampaigns, type CampaignRecord, type CampaignStats } from '../store/campaigns.js';
import { cancelCampaign, pauseCampaign, resumeCampaign } from '../queue/campaign.js';
import { limitOption, parse, println, UsageError, type Io } from './args.js';
import { connectForCommand } from './redis-connect.js';
import { auditCli } from './audit.js';

const USAGE = `Usage: sluice campaign <list|status|pause|resume|cancel> [ID] [options]

  list    --account ID            the account's campaigns, newest first, all of them read in pages
          [--limit N] [--json]    of 1000 (--limit N: the N newest)
  status  ID [--watch] [--json]   state and counts: recipients, queued, delivered, deferred, bounced
                                  (by reason), opens, clicks, unsubscribes, complaints. --watch
                                  redraws every second until the campaign completes or is cancelled.
  pause   ID                      stop new claims at once (copies in flight finish)
  resume  ID                      continue a paused campaign
  cancel  ID                      drop what is still queued

Options: --config FILE, --interval MS (for --watch). Reads Redis directly (REDIS_URL, or the
embedded server's socket). Exit codes: 0 done; 1 unknown campaign or a move its state refuses; 2 usage.`;


function line(label: string, value: string | number): string {
  return `  ${label.padEnd(14)} ${value}`;
}

function render(c: CampaignRecord, s: CampaignStats): string {
  const pct = (n: number) => (s.queued > 0 ? ` (${((n / s.queued) * 100).toFixed(1)}%)` : '');
  const reasons = Object.entries(s.bouncedByReason).sort((a, b) => b[1] - a[1]).map(([r, n]) => `${r} ${n}`).join(', ');
  const e = s.engagement;
  return [
    `campaign ${c.id}  ${c.name}`,
    line('state', c.state + (c.enqueued ? '' : c.state === 'sending' || c.state === 'paused' ? ' (queueing the list)' : '') + (c.listGoneAt === null ? '' : ` (list deleted before it was queued whole, ${new Date(c.listGoneAt).toISOString()})`)),
    line('recipients', `${s.recipients} (${s.skipped} left out: unsubscribed, bounced or suppressed)`),
    line('queued', s.queued),
    line('pending', s.pending),
    line('delivered', `${s.delivered}${pct(s.delivered)}`),
    line('deferred', `${s.deferred} attempts`),
    line('bounced', `${s.bounced}${pct(s.bounced)}${reasons ? `  [${reasons}]` : ''}`),
    line('expired', s.expired),
    line('suppressed', s.suppressed),
    line('cancelled', s.cancelled),
    line('opens', `${e.opensUniqueHuman} unique human, ${e.opens} total (${e.machineOpens} machine)`),
    line('clicks', `${e.clicksUniqueHuman} unique human, ${e.clicks} total (${e.machineClicks} machine)`),
    line('unsubscribes', e.unsubscribes),
    line('complaints', s.complaints),
    ...(s.waiting ? [line('waiting', `for ${s.waiting.by} (${s.waiting.limit}) until ${new Date(s.waiting.until).toISOString()}`)] : []),
  ].join('\n');
}

async function show(redis: RedisClient, keys: Keys, id: string, json: boolean, io: Io): Promise<CampaignRecord | null> {
  const c = await getCampaign(redis, keys, null, id);
  if (!c) return null;
  const s = await campaignStats(redis, keys, c);
  if (json) println(io.out, JSON.stringify({ id: c.id, account: c.account, name: c.name, state: c.state, listQueued: c.enqueued, listGone: c.listGoneAt === null ? null : new Date(c.listGoneAt).toISOString(), ...s }));
  else println(io.out, render(c, s));
  return c;
}

export async function runCampaign(argv: string[], io: Io): Promise<number> {
  const args = parse(
    {
      name: 'campaign',
      usage: USAGE,
      allowPositionals: true,
      options: { config: { type: 'string', short: 'c' }, account: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' }, watch: { type: 'boolean', short: 'w' }, interval: { type: 'string' } },
    },
    argv,
  );
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const [sub, id, ...extra] = args.positionals;
  const hint = "Run 'sluice campaign --help' for usage.";
  if (!sub || !['list', 'status', 'pause', 'resume', 'cancel'].includes(sub)) throw new UsageError(`campaign needs one of list, status, pause, resume, cancel\n${hint}`);
  if (extra.length > 0) throw new UsageError(`unexpected argument '${extra[0]}'\n${hint}`);
  if (sub === 'list') {
    if (args.values.account === undefined || !ACCOUNT_ID.test(args.values.account)) throw new UsageError(`list needs --account ID\n${hint}`);
  } else if (id === undefined || !isId(id)) {
    throw new UsageError(`${sub} needs a campaign id (16 characters), not '${id ?? ''}'\n${hint}`);
  }
  const limit = args.values.limit === undefined ? Number.POSITIVE_INFINITY : limitOption(args.values.limit);
  const interval = args.values.interval === undefined ? 1000 : Number(args.values.interval);
  if (!Number.isFinite(interval) || interval < 100) throw new UsageError('--interval must be a number of milliseconds >= 100');

  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const redis = await connectForCommand(cfg);
  const keys = createKeys(cfg.redis.prefix);
  const shards = cfg.redis.scheduleShards;
  try {
    if (sub === 'list') {
      let cursor: string | null = null;
      let shown = 0;
      do {
        const page = await listCampaigns(redis, keys, args.values.account as string, { cursor, limit: Math.min(1000, limit - shown) });
        for (const c of page.campaigns) {
          if (args.values.json) println(io.out, JSON.stringify({ id: c.id, name: c.name, state: c.state, created: new Date(c.createdAt).toISOString(), queued: c.queued }));
          else println(io.out, `${c.id}  ${c.state.padEnd(9)}  ${new Date(c.createdAt).toISOString()}  ${c.queued} queued  ${c.name}`);
          shown++;
        }
        cursor = page.cursor;
      } while (cursor !== null && shown < limit);
      // Nothing listed says why on stderr (stdout stays a clean list): a mistyped account was silence.
      if (shown === 0) {
        const account = args.values.account as string;
        const known = cfg.accounts.some((a) => a.id === account);
        println(io.err, `sluice: account '${account}' has no campaigns${known ? '' : ' (and no account of that id is in the configuration)'}`);
      }
      return 0;
    }
    const cid = id as string;
    if (sub === 'status') {
      const tty = (io.out as { isTTY?: boolean }).isTTY === true;
      for (;;) {
        if (args.values.watch && tty) io.out.write('\x1b[H\x1b[2J');
        const c = await show(redis, keys, cid, args.values.json === true, io);
        if (!c) {
          println(io.err, `sluice: no campaign ${cid}`);
          return 1;
        }
        if (!args.values.watch || c.state === 'completed' || c.state === 'cancelled' || c.state === 'draft') return 0;
        await new Promise((r) => setTimeout(r, interval));
      }
    }
    const now = Date.now();
    const r = sub === 'pause' ? await pauseCampaign(redis, keys, shards, cid, now) : sub === 'resume' ? await resumeCampaign(redis, keys, shards, cid, now) : await cancelCampaign(redis, keys, shards, cid, now);
    if (!r.ok) {
      println(io.err, r.state === null ? `sluice: no campaign ${cid}` : `sluice: campaign ${cid} is ${r.state}: it cannot ${sub}`);
      return 1;
    }
    const c = await getCampaign(redis, keys, null, cid);
    await auditCli(redis, cfg, io, `campaign.${sub}`, c?.account ?? '', cid);
    println(io.out, `campaign ${cid}: ${r.from} → ${c?.state ?? 'unknown'}`);
    return 0;
  } finally {
    redis.disconnect();
  }
}
