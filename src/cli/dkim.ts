import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { normaliseDomain } from '../core/address.js';
import { dnsRecord } from '../render/dkim.js';
import { parse, println, UsageError, type Io } from './args.js';

const USAGE = `Usage: sluice dkim keygen --domain D --selector S [--type rsa|ed25519] [--bits 2048] [--out FILE] [--force]

Writes a new private key (PEM, mode 0600) and prints the DNS TXT record to publish at
S._domainkey.D, and the lines to add to the account's domain in the config.
  --type   rsa (default) or ed25519 (RFC 8463; publish both and Sluice dual-signs)
  --bits   RSA key size, 2048 (default), 3072 or 4096
  --out    key file (default ./keys/<domain>.<selector>.<type>.pem); an existing file is kept unless --force`;

export async function runDkim(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  const args = parse({
    name: 'dkim keygen', usage: USAGE,
    options: { domain: { type: 'string' }, selector: { type: 'string' }, type: { type: 'string', default: 'rsa' }, bits: { type: 'string', default: '2048' }, out: { type: 'string' }, force: { type: 'boolean' } },
  }, rest);
  if (args.values.help || sub !== 'keygen') {
    println(io.out, USAGE);
    return args.values.help ? 0 : 2;
  }
  const domain = normaliseDomain(args.values.domain ?? '');
  if (!domain) throw new UsageError('--domain must be a valid domain name');
  const selector = args.values.selector ?? '';
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(selector)) throw new UsageError('--selector must be letters, digits, ".", "_" or "-"');
  const type = args.values.type;
  if (type !== 'rsa' && type !== 'ed25519') throw new UsageError("--type must be 'rsa' or 'ed25519'");
  const bits = Number(args.values.bits);
  if (type === 'rsa' && ![2048, 3072, 4096].includes(bits)) throw new UsageError('--bits must be 2048, 3072 or 4096 (1024-bit keys are too weak for RFC 8301)');
  const out = resolve(args.values.out ?? `keys/${domain}.${selector}.${type}.pem`);
  if (existsSync(out) && !args.values.force) throw new UsageError(`${out} exists; pass --force to replace it`);

  const pair = type === 'rsa'
    ? generateKeyPairSync('rsa', { modulusLength: bits, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
    : generateKeyPairSync('ed25519', { publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, pair.privateKey, { mode: 0o600 });

  const record = dnsRecord(pair.publicKey, type);
  // A TXT string holds at most 255 octets: longer records are published as several quoted strings.
  const chunks = record.match(/.{1,255}/g) ?? [record];
  println(io.out, `private key written to ${out}`);
  println(io.out, '');
  println(io.out, 'Publish this DNS TXT record:');
  println(io.out, `${selector}._domainkey.${domain}. IN TXT ${chunks.map((c) => `"${c}"`).join(' ')}`);
  println(io.out, '');
  println(io.out, `Add to the account's domain '${domain}' in the config:`);
  println(io.out, `  dkim:\n    - { selector: ${selector}, algorithm: ${type}, keyFile: ${out} }`);
  return 0;
}
