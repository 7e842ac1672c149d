import { hashSecret, generateApiKey, generateOperatorKey } from '../accounts/secrets.js';
import { ACCOUNT_ID } from '../config/schema.js';
import { parse, println, subcommand, UsageError, type Io } from './args.js';

const USAGE = `Usage: sluice secret hash [--stdin]
       sluice secret hash --api-key ACCOUNT
       sluice secret hash --operator-key OPERATOR

Prints an scrypt hash to put in the config (accounts[].apiKeys or smtpUsers[].passwordHash).
  --stdin          read the secret from standard input (first line) instead of the SLUICE_SECRET variable
  --api-key ID     generate a new API key for account ID; prints the key (give it to the customer,
                   it is not stored) and its hash (put that in the config)
  --operator-key ID  generate a new operator key (op_…, admin rights on the HTTP API) for
                   operators[].apiKeys: prints the key and its hash`;

// The account id syntax of the config schema: the id is embedded in the key (sk_<id>_…) and a key
// for an id the config cannot hold would never authenticate.
// A secret is one line; more than this before a newline is not a password but a wrong pipe.
const MAX_SECRET_CHARS = 4096;

export async function runSecret(argv: string[], io: Io): Promise<number> {
  const args = parse({ name: 'secret', usage: USAGE, allowPositionals: true, options: { stdin: { type: 'boolean' }, 'api-key': { type: 'string' }, 'operator-key': { type: 'string' } } }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  subcommand('secret', args.positionals, ['hash']);
  const operator = args.values['operator-key'];
  if (operator !== undefined) {
    if (args.values.stdin || args.values['api-key'] !== undefined) throw new UsageError('--operator-key generates the secret; it takes no --stdin or --api-key');
    if (!ACCOUNT_ID.test(operator)) throw new UsageError(`--operator-key '${operator}' is not an operator id (lower-case letters, digits, _ and -, at most 63)`);
    const key = generateOperatorKey(operator);
    println(io.out, `operator key: ${key}`);
    println(io.out, `hash:         ${await hashSecret(key)}`);
    return 0;
  }
  const account = args.values['api-key'];
  if (account !== undefined) {
    if (args.values.stdin) throw new UsageError('--api-key generates the secret; it takes no --stdin');
    if (!ACCOUNT_ID.test(account)) throw new UsageError(`--api-key '${account}' is not an account id (lower-case letters, digits, _ and -, at most 63)`);
    const key = generateApiKey(account);
    println(io.out, `api key: ${key}`);
    println(io.out, `hash:    ${await hashSecret(key)}`);
    return 0;
  }
  const secret = args.values.stdin ? await readFirstLine(io.stdin) : io.env['SLUICE_SECRET'];
  if (!secret) throw new UsageError('no secret given: pass it on standard input with --stdin, or in SLUICE_SECRET');
  println(io.out, await hashSecret(secret));
  return 0;
}

async function readFirstLine(stream: NodeJS.ReadableStream): Promise<string | null> {
  // A streaming decoder: a multi-byte character split across two chunks is joined, not mangled.
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of stream) {
    buf += typeof chunk === 'string' ? chunk : decoder.decode(chunk as Uint8Array, { stream: true });
    const nl = buf.indexOf('\n');
    if (nl >= 0) return buf.slice(0, nl).replace(/\r$/, '');
    if (buf.length > MAX_SECRET_CHARS) throw new UsageError(`the secret on standard input is longer than ${MAX_SECRET_CHARS} characters`);
  }
  return buf.length > 0 ? buf.replace(/\r$/, '') : null;
}
