import { createHash, randomBytes, randomInt, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { ExpiringLru } from '../core/lru.js';

/**
 * Secrets (API keys, SMTP passwords) are stored only as self-describing scrypt hashes:
 *
 *   scrypt$<N>$<r>$<p>$<saltB64>$<hashB64>
 *
 * N=16384, r=8, p=1 are the interactive-login parameters of the scrypt paper and RFC 7914 §2: about
 * 16 MiB of memory (128·N·r bytes) and ~50 ms of CPU per check, which makes offline guessing of a
 * leaked config expensive while a login stays cheap. The salt is 16 random bytes (128 bits, the
 * minimum of NIST SP 800-132), so equal secrets never hash alike; the derived key is 32 bytes
 * (256 bits), as long as SHA-256 output — longer adds nothing against guessing.
 */

const N = 16384;
const R = 8;
const P = 1;
const SALT_BYTES = 16;
const KEY_BYTES = 32;

// Bounds for hashes read from the config: anything outside is refused as malformed rather than
// letting a typo (N=2^30) make every login allocate gigabytes. 2^20 with r=8 is 1 GiB already.
const MAX_LOG2_N = 20;
const MAX_R = 32;
const MAX_P = 16;

export interface ParsedSecretHash {
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

const B64 = /^[A-Za-z0-9+/]+={0,2}$/;
const INT = /^[1-9][0-9]{0,9}$/;

/** Parses a stored hash; undefined when it is not exactly the format hashSecret writes. */
export function parseSecretHash(text: string): ParsedSecretHash | undefined {
  if (typeof text !== 'string') return undefined;
  const parts = text.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return undefined;
  const [, n, r, p, salt, hash] = parts as [string, string, string, string, string, string];
  if (!INT.test(n) || !INT.test(r) || !INT.test(p) || !B64.test(salt) || !B64.test(hash)) return undefined;
  const cost = Number(n);
  const block = Number(r);
  const par = Number(p);
  // N must be a power of two greater than 1 (scrypt's own requirement).
  if (cost < 2 || (cost & (cost - 1)) !== 0 || cost > 2 ** MAX_LOG2_N) return undefined;
  if (block > MAX_R || par > MAX_P) return undefined;
  const saltBuf = Buffer.from(salt, 'base64');
  const hashBuf = Buffer.from(hash, 'base64');
  if (saltBuf.length < 8 || hashBuf.length < 16 || hashBuf.length > 64) return undefined;
  return { N: cost, r: block, p: par, salt: saltBuf, hash: hashBuf };
}

export function isSecretHash(text: string): boolean {
  return parseSecretHash(text) !== undefined;
}

function derive(plain: string, salt: Buffer, keyLen: number, o: { N: number; r: number; p: number }): Promise<Buffer> {
  // maxmem must cover 128·N·r·p plus scrypt's own small overhead; Node's default (32 MiB) would
  // refuse valid larger parameters read from a config.
  const opts: ScryptOptions = { N: o.N, r: o.r, p: o.p, maxmem: 128 * o.N * o.r * o.p + 1024 * 1024 };
  return new Promise((resolve, reject) => {
    scrypt(plain.normalize('NFC'), salt, keyLen, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export async function hashSecret(plain: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(plain, salt, KEY_BYTES, { N, r: R, p: P });
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/**
 * True when `plain` matches `hash`. Compares in constant time (timingSafeEqual over equal-length
 * buffers); a malformed hash is refused (false), never an exception.
 */
export async function verifySecret(plain: string, hash: string): Promise<boolean> {
  if (typeof plain !== 'string') return false;
  const parsed = parseSecretHash(hash);
  if (!parsed) return false;
  let key: Buffer;
  try {
    key = await derive(plain, parsed.salt, parsed.hash.length, parsed);
  } catch {
    return false;
  }
  return key.length === parsed.hash.length && timingSafeEqual(key, parsed.hash);
}

/** A fixed well-formed hash to verify against when no account matches, so that "no such key" and
 * "wrong key" take the same time and do not reveal which accounts exist. */
let decoy: Promise<string> | undefined;
export function decoyHash(): Promise<string> {
  decoy ??= hashSecret(randomBytes(16).toString('hex'));
  return decoy;
}

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** 32 base62 characters: log2(62)·32 ≈ 190 bits, beyond any guessing. */
const KEY_SECRET_CHARS = 32;

/**
 * A new API key: `sk_<accountId>_<32 base62 characters>`. The account id in the clear lets the
 * server find the one account whose hashes to check (one scrypt per request, not one per account).
 * Base62 (not base64url) so the secret part never contains the `_` that separates the parts.
 */
export function generateApiKey(accountId: string): string {
  let secret = '';
  // randomInt draws without modulo bias.
  for (let i = 0; i < KEY_SECRET_CHARS; i++) secret += BASE62[randomInt(62)];
  return `sk_${accountId}_${secret}`;
}

/**
 * A new operator key: `op_<operatorId>_<32 base62 characters>`. A different prefix from account
 * keys, so the two kinds can never be confused: an account key is never checked against an
 * operator's hashes, whatever its text.
 */
export function generateOperatorKey(operatorId: string): string {
  return `op${generateApiKey(operatorId).slice(2)}`;
}

const OPERATOR_KEY_RE = /^op_([a-z0-9][a-z0-9_-]{0,62})_([0-9A-Za-z]{32})$/;

/** The operator id named in an operator key, or undefined when the key is not in the op_ format. */
export function operatorKeyId(key: string): string | undefined {
  if (typeof key !== 'string' || key.length > 120) return undefined;
  return OPERATOR_KEY_RE.exec(key)?.[1];
}

/**
 * A stable, public name for a stored key: the first 12 hex digits of SHA-256 over its stored hash.
 * The audit log names the key an action was made with by it; it reveals nothing about the key
 * (the hash is salted scrypt) and changes when the key is rotated.
 */
export function keyFingerprint(storedHash: string): string {
  return createHash('sha256').update(storedHash).digest('hex').slice(0, 12);
}

const API_KEY_RE = /^sk_([a-z0-9][a-z0-9_-]{0,62})_([0-9A-Za-z]{32})$/;

/** The account id named in an API key, or undefined when the key is not in the sk_ format. */
export function apiKeyAccount(key: string): string | undefined {
  if (typeof key !== 'string' || key.length > 120) return undefined;
  return API_KEY_RE.exec(key)?.[1];
}

export interface VerifyCacheOptions {
  /** Successful verifications remembered at most (LRU). 4096 × ~150 bytes ≈ 0.6 MB. */
  maxEntries?: number;
  /** How long a success is trusted without re-running scrypt. Short, so a removed key stops working soon. */
  ttlMs?: number;
  now?: () => number;
}

/**
 * scrypt costs ~50 ms on purpose, which an API answering thousands of requests per second cannot pay
 * per request. This verifier remembers successes only, keyed by SHA-256 of the presented secret
 * and bound to the stored hash it matched (rotating the hash invalidates the entry). The SHA-256
 * key means the plain secret is never held in memory beyond the request. Failures always run scrypt.
 */
export class SecretVerifier {
  /** SHA-256 of a secret → the stored hash it matched. */
  private readonly cache: ExpiringLru<string>;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(opts: VerifyCacheOptions = {}) {
    this.cache = new ExpiringLru(opts.maxEntries ?? 4096);
    this.ttlMs = opts.ttlMs ?? 5 * 60_000;
    this.now = opts.now ?? Date.now;
  }

  /** Index of the first hash in `hashes` that `plain` matches, or -1. */
  async verifyAny(plain: string, hashes: readonly string[]): Promise<number> {
    if (typeof plain !== 'string') return -1;
    const digest = createHash('sha256').update(plain).digest('base64');
    const hit = this.cache.get(digest, this.now());
    if (hit !== undefined) {
      const idx = hashes.indexOf(hit);
      if (idx >= 0) return idx;
      this.cache.delete(digest);
    }
    if (hashes.length === 0) {
      await verifySecret(plain, await decoyHash());
      return -1;
    }
    for (let i = 0; i < hashes.length; i++) {
      if (await verifySecret(plain, hashes[i] as string)) {
        this.remember(digest, hashes[i] as string);
        return i;
      }
    }
    return -1;
  }

  get size(): number {
    return this.cache.size;
  }

  private remember(digest: string, hash: string): void {
    this.cache.set(digest, hash, this.now() + this.ttlMs);
  }
}
