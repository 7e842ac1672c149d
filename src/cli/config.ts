import { loadConfig, redactConfig } from '../config/load.js';
import { parse, println, type Io } from './args.js';

const USAGE = `Usage: sluice config show [--config FILE]
       sluice config check [--config FILE]

show   prints the effective configuration (defaults, file, environment merged) as JSON, secrets redacted.
check  validates it and names the path of every wrong key; exit code 1 when invalid.`;

export async function runConfig(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  const args = parse({ name: 'config', usage: USAGE, options: { config: { type: 'string', short: 'c' } } }, rest);
  if (args.values.help || (sub !== 'show' && sub !== 'check')) {
    println(io.out, USAGE);
    return args.values.help ? 0 : 2;
  }
  const cfg = loadConfig({ file: args.values.config, env: io.env });
  if (sub === 'show') println(io.out, JSON.stringify(redactConfig(cfg), null, 2));
  else println(io.out, 'configuration is valid');
  return 0;
}
