import { loadConfig } from '../config/load.js';
import { createKeys } from '../redis/keys.js';
import { loadWebhooks } from '../store/webhooks.js';
import { replayDeadLetters } from '../housekeeping/webhooks.js';
import { parse, println, subcommand, UsageError, type Io } from './args.js';
import { connectForCommand } from './redis-connect.js';
import { auditCli } from './audit.js';

const USAGE = `Usage: sluice webhooks list --account ID [--config FILE] [--json]
       sluice webhooks replay --account ID [--endpoint ID] [--config FILE]

list    the account's webhook endpoints: id, URL, event types, batches waiting in the outbox
        (first attempts and retries) and batches in the dead-letter list.
replay  moves dead-lettered batches back to the outbox of one endpoint (--endpoint) or of every
        endpoint of the account; the dispatcher (housekeeping role) sends them again with a new
        retry window. Events keep their ids, so receivers that de-duplicate see no repeats.
Reads Redis directly (REDIS_URL, or the embedded server's socket).`;

export async function runWebhooks(argv: string[], io: Io): Promise<number> {
  const args = parse(
    {
      name: 'webhooks',
      usage: USAGE,
      options: { account: { type: 'string' }, endpoint: { type: 'string' }, config: { type: 'string', short: 'c' }, json: { type: 'boolean' } },
      allowPositionals: true,
    },
    argv,
  );
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const sub = subcommand('webhooks', args.positionals, ['list', 'replay']);
  const account = args.values.account;
  if (!account) throw new UsageError(`--account is required\nRun 'sluice webhooks --help' for usage.`);
  if (sub === 'list' && args.values.endpoint !== undefined) throw new UsageError(`--endpoint applies to 'replay' only`);
  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const redis = await connectForCommand(cfg);
  try {
    const keys = createKeys(cfg.redis.prefix);
    const endpoints = await loadWebhooks(redis, keys, account);
    if (sub === 'replay') {
      const id = args.values.endpoint;
      if (id !== undefined && !endpoints.some((e) => e.id === id)) {
        println(io.err, `sluice: account '${account}' has no webhook '${id}'`);
        return 1;
      }
      const { moved, unreadable } = await replayDeadLetters(redis, keys, account, id);
      if (moved > 0) await auditCli(redis, cfg, io, 'webhook.replay', account, id ?? '*');
      println(io.out, `replayed ${moved} batch${moved === 1 ? '' : 'es'} from dead letters`);
      if (unreadable > 0) println(io.err, `sluice: ${unreadable} dead letter${unreadable === 1 ? ' is' : 's are'} not a readable batch and stay${unreadable === 1 ? 's' : ''} in the list (LRANGE ${keys.webhookDead(account, id ?? '<endpoint>')} to look at it)`);
      return 0;
    }
    const rows = await Promise.all(
      endpoints.map(async (e) => ({
        id: e.id,
        url: e.url,
        events: e.events,
        created: new Date(e.created).toISOString(),
        outbox: await redis.zcard(keys.webhookOutbox(account, e.id)),
        deadLetters: await redis.llen(keys.webhookDead(account, e.id)),
      })),
    );
    if (args.values.json) {
      println(io.out, JSON.stringify(rows, null, 2));
      return 0;
    }
    if (rows.length === 0) {
      println(io.out, `account '${account}' has no webhooks`);
      return 0;
    }
    const header = ['ID', 'URL', 'EVENTS', 'OUTBOX', 'DEAD', 'CREATED'];
    const table = rows.map((r) => [r.id, r.url, r.events.join(','), String(r.outbox), String(r.deadLetters), r.created]);
    const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => (row[i] as string).length)));
    for (const row of [header, ...table]) println(io.out, row.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd());
    return 0;
  } finally {
    redis.disconnect();
  }
}
