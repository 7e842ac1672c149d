import { SluiceError } from '../core/errors.js';
import { UsageError, println, type Io } from './args.js';
import { runStart } from './start.js';
import { runDkim } from './dkim.js';
import { runDomain } from './domain.js';
import { runSend } from './send.js';
import { runQueue } from './queue.js';
import { runSecret } from './secret.js';
import { runConfig } from './config.js';
import { runBounce } from './bounce.js';
import { runSink } from './sink.js';
import { runSuppression } from './suppression.js';
import { runSender } from './sender.js';
import { runCampaign } from './campaign.js';
import { runWebhooks } from './webhooks.js';
import { runList } from './list.js';
import { runAccount } from './account.js';
import { runAudit } from './audit.js';
import { runPrivacy } from './privacy.js';

const HELP = `sluice — self-hosted mail delivery engine

Usage: sluice <command> [options]

Commands:
  start            run Sluice (all roles, or --roles LIST)
  send             submit one message through the HTTP API
  queue            show the queue: per-destination depth, leases, next attempt, throttle state
  queue flush      make deferred mail of some or all destinations due now (postqueue -f)
  queue cancel     cancel the waiting mail of destinations that will never take it (postsuper -d)
  queue list       the recipients queued for a destination, with why they wait (mailq)
  queue hold       stop delivery to destinations or a provider's rule, the mail kept (defer_transports)
  queue release    end holds; queue holds lists them
  dkim keygen      generate a DKIM key and print the DNS TXT record to publish
  domain check     what receivers find in DNS: each account domain's DKIM keys and DMARC, the bounce domain's MX and SPF
  secret hash      hash an API key or SMTP password for the config (scrypt)
  bounce classify  classify bounce / complaint mail files (JSON lines)
  bounce list      feedback mail the MX stored and did not act on (and mail to postmaster); show one
  config show      print the effective configuration, secrets redacted
  config check     validate a configuration file
  suppression      list, add, remove, look up or import suppressed addresses (per account, or the global list)
  list             contact lists: create, import (CSV/NDJSON, with a progress bar), export, show
  campaign         list campaigns, live status, pause, resume or cancel a campaign
  sender           status and resume of senders paused by the reputation guard
  sink             a local SMTP capture peer that writes received mail to files (for trying Sluice offline)
  webhooks list    an account's webhook endpoints, outbox and dead-letter counts
  webhooks replay  send an account's dead-lettered webhook batches again
  account          close (stop sending now, delete its data later), reopen, or show an account's state
  audit            print the audit log of admin and account actions (--account ID, --limit N)
  privacy          export everything held about an address, or erase it (right to be forgotten)

Run 'sluice <command> --help' for a command's options.
Environment: SLUICE_CONFIG (config file), REDIS_URL (external Redis; unset = embedded), SLUICE_LOG_LEVEL.
`;

/** The program. Returns the exit code; only cli/ and app/ may end the process. */
export async function main(argv: string[], io: Io = { out: process.stdout, err: process.stderr, env: process.env, stdin: process.stdin }): Promise<number> {
  const [cmd, ...rest] = argv;
  // `sluice queue list | head`: the reader went away, as a shell tool would, end quietly (not with an
  // unhandled EPIPE and its stack). Not for `start`, whose stdout is its log: a server that loses
  // its log reader keeps running, its shutdown is a signal's.
  if (cmd !== 'start' && io.out === process.stdout) {
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  try {
    switch (cmd) {
      case 'start':
        return await runStart(rest, io);
      case 'send':
        return await runSend(rest, io);
      case 'queue':
        return await runQueue(rest, io);
      case 'domain':
        return await runDomain(rest, io);
      case 'dkim':
        return await runDkim(rest, io);
      case 'secret':
        return await runSecret(rest, io);
      case 'config':
        return await runConfig(rest, io);
      case 'webhooks':
        return await runWebhooks(rest, io);
      case 'sink':
        return await runSink(rest, io);
      case 'suppression':
        return await runSuppression(rest, io);
      case 'sender':
        return await runSender(rest, io);
      case 'list':
        return await runList(rest, io);
      case 'campaign':
        return await runCampaign(rest, io);
      case 'account':
        return await runAccount(rest, io);
      case 'audit':
        return await runAudit(rest, io);
      case 'privacy':
        return await runPrivacy(rest, io);
      case 'bounce':
        return await runBounce(rest, io);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.out.write(HELP);
        return cmd === undefined ? 2 : 0;
      case '--version':
      case 'version':
        println(io.out, '0.1.0');
        return 0;
      default:
        io.err.write(`sluice: unknown command '${cmd}'\n\n${HELP}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof UsageError) {
      println(io.err, `sluice: ${err.message}`);
      return 2;
    }
    if (err instanceof SluiceError) {
      println(io.err, `sluice: ${err.message} (${err.code})`);
      return 1;
    }
    println(io.err, `sluice: ${(err as Error).stack ?? String(err)}`);
    return 1;
  }
}
