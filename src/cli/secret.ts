import { hashSecret, generateApiKey } from '../accounts/secrets.js';
import { parse, println, UsageError, type Io } from './args.js';

const USAGE = `Usage: sluice secret hash [--stdin]
       sluice secret hash --api-key ACCOUNT

Prints an scrypt hash to put in the config (accounts[].apiKeys or smtpUsers[].passwordHash).
  --stdin          read the secret from standard input (first line) instead of the SLUICE_SECRET variable
  --api-key ID     generate a new API key for account ID; prints the key (give it to the customer,
                   it is not stored) and its hash (put that in the config)`;

export async function runSecret(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  const args = parse({ name: 'secret', usage: USAGE, options: { stdin: { type: 'boolean' }, 'api-key': { type: 'string' } } }, rest);
  if (args.values.help || sub !== 'hash') {
    println(io.out, USAGE);
    return args.values.help ? 0 : 2;
  }
  if (args.values['api-key']) {
    const key = generateApiKey(args.values['api-key']);
    println(io.out, `api key: ${key}`);
    println(io.out, `hash:    ${await hashSecret(key)}`);
    return 0;
  }
  let secret = io.env['SLUICE_SECRET'];
  if (args.values.stdin) secret = (await readFirstLine(io.stdin)) ?? undefined;
  if (!secret) throw new UsageError('no secret given: pass it on standard input with --stdin, or in SLUICE_SECRET');
  println(io.out, await hashSecret(secret));
  return 0;
}

async function readFirstLine(stream: NodeJS.ReadableStream): Promise<string | null> {
  let buf = '';
  for await (const chunk of stream) {
    buf += chunk.toString();
    const nl = buf.indexOf('\n');
    if (nl >= 0) return buf.slice(0, nl).replace(/\r$/, '');
    if (buf.length > 4096) break;
  }
  return buf.length > 0 ? buf.replace(/\r?\n$/, '') : null;
}
