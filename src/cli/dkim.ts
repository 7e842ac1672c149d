import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { normaliseDomain } from '../core/address.js';
import { DKIM_SELECTOR } from '../core/dkim-record.js';
import { dnsRecord } from '../render/dkim.js';
import { parse, println, subcommand, UsageError, type Io } from './args.js';

const USAGE = `Usage: sluice dkim keygen --domain D --selector S [--type rsa|ed25519] [--bits 2048] [--out FILE] [--force]

Writes a new private key (PEM, mode 0600) and prints the DNS TXT record to publish at
S._domainkey.D, and the lines to add to the account's domain in the config.
  --type   rsa (default) or ed25519 (RFC 8463; publish both and Sluice dual-signs)
  --bits   RSA key size, 2048 (default), 3072 or 4096
  --out    key file (default ./keys/<domain>.<selector>.<type>.pem); an existing file is kept unless --force`;

// 1024-bit RSA is the floor of RFC 8301 and already considered weak; 2048 is what providers expect.
const RSA_BITS = [2048, 3072, 4096];
// A TXT character-string holds at most 255 octets (RFC 1035 §3.3): a 2048-bit RSA record (~410
// characters) is published as several quoted strings, which resolvers concatenate (RFC 6376 §3.6.2.2).
const TXT_STRING_MAX = 255;

export async function runDkim(argv: string[], io: Io): Promise<number> {
  const args = parse({
    name: 'dkim', usage: USAGE, allowPositionals: true,
    options: { domain: { type: 'string' }, selector: { type: 'string' }, type: { type: 'string', default: 'rsa' }, bits: { type: 'string' }, out: { type: 'string' }, force: { type: 'boolean' } },
  }, argv);
  if (args.values.help) {
    println(io.out, USAGE);
    return 0;
  }
  subcommand('dkim', args.positionals, ['keygen']);
  if (args.values.domain === undefined) throw new UsageError('--domain is required');
  const domain = normaliseDomain(args.values.domain);
  if (!domain) throw new UsageError(`--domain '${args.values.domain}' is not a valid domain name`);
  const selector = args.values.selector;
  if (selector === undefined) throw new UsageError('--selector is required');
  // One DNS label or several (RFC 6376 §3.1): the config schema takes the same set.
  if (!DKIM_SELECTOR.test(selector)) throw new UsageError(`--selector '${selector}' is not valid: labels of letters, digits, "_" or "-" (at most 63 each, beginning and ending with a letter or digit) separated by single dots`);
  const type = args.values.type;
  if (type !== 'rsa' && type !== 'ed25519') throw new UsageError(`--type must be 'rsa' or 'ed25519', not '${type}'`);
  if (type === 'ed25519' && args.values.bits !== undefined) throw new UsageError('--bits applies to RSA keys only (Ed25519 keys are always 256 bits)');
  const bits = Number(args.values.bits ?? 2048);
  if (type === 'rsa' && !RSA_BITS.includes(bits)) throw new UsageError(`--bits must be ${RSA_BITS.join(', ')} (1024-bit keys are too weak for RFC 8301)`);
  const out = resolve(args.values.out ?? `keys/${domain}.${selector}.${type}.pem`);
  // Checked before generating (a 4096-bit key takes seconds); writeKey checks again atomically.
  if (existsSync(out) && !args.values.force) throw new UsageError(`${out} exists; pass --force to replace it`);

  const pair = type === 'rsa'
    ? generateKeyPairSync('rsa', { modulusLength: bits, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
    : generateKeyPairSync('ed25519', { publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  const failed = writeKey(out, pair.privateKey, args.values.force === true);
  if (failed !== null) {
    println(io.err, `sluice: ${failed}`);
    return 1;
  }

  const record = dnsRecord(pair.publicKey, type);
  println(io.out, `private key written to ${out}`);
  println(io.out, '');
  println(io.out, 'Publish this DNS TXT record:');
  println(io.out, zoneTxtLine(`${selector}._domainkey.${domain}`, record));
  println(io.out, `(then \`sluice domain check --domain ${domain}\` checks what receivers find)`);
  println(io.out, '');
  println(io.out, `Add to the account's domain '${domain}' in the config:`);
  println(io.out, `  dkim:\n    - { selector: ${selector}, algorithm: ${type}, keyFile: ${JSON.stringify(out)} }`);
  return 0;
}

/** A TXT record as a zone file line: the value in quoted strings of at most 255 characters. */
export function zoneTxtLine(name: string, value: string): string {
  const chunks = value.match(new RegExp(`.{1,${TXT_STRING_MAX}}`, 'g')) ?? [value];
  return `${name}. IN TXT ${chunks.map((c) => `"${c}"`).join(' ')}`;
}

/**
 * Writes the private key readable by its owner only. A new file is created exclusively ('wx'), so a
 * file that appeared since the check is never overwritten. A replacement (--force) is written to a
 * new 0600 file and renamed over the old one: the mode of the old file (perhaps 0644) is not
 * inherited, and a crash midway leaves the old key whole. Returns null, or why it could not be
 * written (a failure of the file system, exit 1; a file that appeared meanwhile is a usage error).
 */
function writeKey(out: string, pem: string, force: boolean): string | null {
  const dir = dirname(out);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    // EEXIST here: a file, not a folder, holds the folder's name (or one above it: ENOTDIR).
    return `cannot create the folder ${dir} for the key: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
  }
  const target = force ? `${out}.${process.pid}.tmp` : out;
  try {
    writeFileSync(target, pem, { mode: 0o600, flag: 'wx' });
    if (force) renameSync(target, out);
    return null;
  } catch (err) {
    if (force) rmSync(target, { force: true });
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && !force) throw new UsageError(`${out} exists; pass --force to replace it`);
    return `cannot write the key to ${out}: ${code ?? (err as Error).message}`;
  }
}
