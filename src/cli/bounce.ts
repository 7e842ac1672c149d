import { loadConfig } from '../config/load.js';
import { createKeys } from '../redis/keys.js';
import { isId } from '../core/ids.js';
import { listUnprocessed, loadFeedback, summarizeFeedback } from '../feedback/raw-store.js';
import { limitOption, parse, println, UsageError, type Io } from './args.js';
import { connectForCommand } from './redis-connect.js';
import { auditCli } from './audit.js';
import { runBounceClassify } from './bounce-classify.js';

const USAGE = `Usage: sluice bounce classify FILE...
       sluice bounce list [--limit N] [--json]
       sluice bounce show ID

  classify  classify bounce / complaint mail files: one JSON object per line per recipient found,
            {"file","recipient","status","reason","hardbounce","feedbacktype"}. Reads files only;
            needs no Redis.
  list      mail the feedback MX stored and did not act on, newest first (default 100): what could
            not be parsed, matched no message, named a message of several recipients by its Message-ID
            only (ambiguous), failed, and mail to postmaster (also when acted on for a VERP address
            it was sent to as well); id, received, outcome, envelope recipients and sender, size.
            Kept for retention.rawBounces
  show      the raw mail stored as ID (any stored mail, acted on or not), as received; on a terminal
            control characters are shown as '?'. Written to the audit log (feedback.read)

Options: --config FILE. list and show read Redis directly (REDIS_URL, or the embedded server's socket).
Exit codes: 0 done; 1 no such mail (show) or failure; 2 usage.`;

/** Control characters (C0 but tab and line ends, DEL, C1): a hostile mail must not drive the terminal. */
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/g;

function printable(text: string): string {
  return text.replace(/[\r\n\t]/g, ' ').replace(CONTROL, '?');
}

/**
 * A mail's bytes for a terminal: each control byte (C0 but tab and line ends, DEL) and each C1
 * control in UTF-8 (C2 80–C2 9F) becomes '?'; every other byte is left as it is, whatever the charset.
 */
function forTerminal(raw: Buffer): Buffer {
  const out = Buffer.from(raw);
  for (let i = 0; i < out.length; i++) {
    const b = out[i] as number;
    if ((b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) || b === 0x7f) out[i] = 0x3f;
    else if (b === 0xc2 && i + 1 < out.length && (out[i + 1] as number) >= 0x80 && (out[i + 1] as number) <= 0x9f) out.fill(0x3f, i, i + 2);
  }
  return out;
}

export async function runBounce(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  const help = argv.some((a) => a === '--help' || a === '-h');
  if (sub === 'classify' && rest.length > 0 && !help) return runBounceClassify(rest, io.out, io.err);
  if ((sub !== 'list' && sub !== 'show') || help) {
    // Asked for: the usage on stdout, exit 0; a missing or unknown subcommand: on stderr, exit 2.
    println(help ? io.out : io.err, USAGE);
    return help ? 0 : 2;
  }
  const args = parse({ name: 'bounce', usage: USAGE, allowPositionals: true, options: { config: { type: 'string', short: 'c' }, limit: { type: 'string' }, json: { type: 'boolean' } } }, rest);
  const hint = "Run 'sluice bounce --help' for usage.";
  let id = '';
  if (sub === 'show') {
    if (args.values.limit !== undefined || args.values.json) throw new UsageError(`--limit and --json are for list\n${hint}`);
    if (args.positionals.length !== 1 || !isId(args.positionals[0] as string)) throw new UsageError(`show takes one stored mail's id (as the MX answered "stored as ID")\n${hint}`);
    id = args.positionals[0] as string;
  } else if (args.positionals.length > 0) {
    throw new UsageError(`unexpected argument '${args.positionals[0] as string}'\n${hint}`);
  }
  const limit = args.values.limit === undefined ? 100 : limitOption(args.values.limit);

  const cfg = loadConfig({ file: args.values.config, env: io.env });
  const keys = createKeys(cfg.redis.prefix);
  const redis = await connectForCommand(cfg);
  try {
    if (sub === 'show') {
      const mail = await loadFeedback(redis, keys, id);
      if (!mail) {
        println(io.err, `sluice: no stored feedback mail ${id} (never stored, or past retention.rawBounces)`);
        return 1;
      }
      await auditCli(redis, cfg, io, 'feedback.read', '', id);
      const tty = (io.out as { isTTY?: boolean }).isTTY === true;
      io.out.write(tty ? forTerminal(mail.raw) : mail.raw);
      return 0;
    }
    const ids = await listUnprocessed(redis, keys, limit, 'newest');
    const rows = await summarizeFeedback(redis, keys, ids.map((u) => u.id));
    let shown = 0;
    for (const r of rows) {
      // Expired meanwhile: the index is trimmed by the retention walk, a step behind the TTL.
      if (!r) continue;
      shown++;
      const at = new Date(r.receivedAt).toISOString();
      if (args.values.json) {
        println(io.out, JSON.stringify({ id: r.id, receivedAt: at, outcome: r.outcome || null, rcpts: r.rcpts, mailFrom: r.mailFrom, bytes: r.bytes }));
        continue;
      }
      println(io.out, `${r.id}  ${at}  ${r.outcome || 'waiting'}  to ${printable(r.rcpts.join(', '))}  from <${printable(r.mailFrom)}>  ${r.bytes} bytes`);
    }
    if (shown === 0 && !args.values.json) println(io.out, 'no stored feedback mail waits for an operator');
    return 0;
  } finally {
    redis.disconnect();
  }
}
