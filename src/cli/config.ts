import { AccountRegistry } from '../accounts/registry.js';
import { readStartKeys } from '../app/start.js';
import { configWarnings, loadConfig, redactConfig } from '../config/load.js';
import { parse, parseRoles, println, subcommand, type Io } from './args.js';

const USAGE = `Usage: sluice config show [--config FILE] [--roles LIST]
       sluice config check [--config FILE] [--roles LIST]

show   prints the effective configuration (defaults, file, environment merged) as JSON, secrets redacted.
check  validates it and names the path of every wrong key (and both keys of two listeners of the
       roles that run on one port and overlapping hosts), then runs the checks of start-up that
       need no Redis (accounts, secret hashes, DKIM key files, webhooks.secretKeyFile, the tracking
       keys' files, and keys for the tracking role when the config's roles include it); exit code 1
       when invalid. Then warns (exit code 0) of settings that work on one machine only: a bounce
       domain, EHLO name or tracking.publicBaseUrl that the Internet cannot reach (localhost, no dot).
--roles LIST  the roles as \`sluice start --roles LIST\` would run them (default: the config's roles):
       a file shared by processes that each run some roles is checked as each of them sees it.`;

export async function runConfig(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'config', usage: USAGE, allowPositionals: true, options: { config: { type: 'string', short: 'c' }, roles: { type: 'string' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  const sub = subcommand('config', args.positionals, ['show', 'check']);
  // An invalid configuration throws SLUICE_CONFIG_INVALID naming every bad path; main prints it, exit 1.
  const roles = parseRoles(args.values.roles);
  const cfg = loadConfig({ file: args.values.config, env: io.env, overrides: roles ? { roles } : undefined });
  if (sub === 'show') {
    println(io.out, JSON.stringify(redactConfig(cfg), null, 2));
    return 0;
  }
  // What `sluice start` would refuse after the schema: duplicate accounts or domains, malformed
  // hashes, DKIM key files that are missing, unreadable or of another algorithm; the webhook and
  // tracking key files, and the tracking role without keys.
  new AccountRegistry(cfg.accounts).readDkimKeys();
  readStartKeys(cfg);
  println(io.out, 'configuration is valid');
  // Valid, and fine on one machine; named so that an operator going live sets them.
  for (const w of configWarnings(cfg)) println(io.out, `warning: ${w}`);
  return 0;
}
