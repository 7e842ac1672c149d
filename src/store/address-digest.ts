import { randomBytes } from 'node:crypto';
import { textHmacSha256 } from '../core/hmac-sha256.js';
import { canonicalLocal } from '../core/address.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';

/**
 * A salted digest of an address: HMAC-SHA256 of the normalised address (as suppression lists
 * normalise it) under a 32-byte key made once per deployment and kept in Redis (`secret:privacy`).
 * It names an address's index (store/privacy.ts) and keeps an erased address's suppression alive
 * without the address: whoever reads Redis cannot test a guessed address against it without the key,
 * unlike a plain SHA-256, which a dictionary of addresses reverses.
 *
 * The key is read once per client and process (SET NX makes the first process's key everyone's);
 * rotating it would orphan every digest, so it is never rotated.
 */
const keyOf = new WeakMap<RedisClient, Map<string, Promise<Buffer>>>();
/** 128 bits: collisions are out of reach for any number of addresses a deployment holds. */
const DIGEST_HEX_CHARS = 32;

async function loadKey(redis: RedisClient, keys: Keys): Promise<Buffer> {
  const name = keys.privacyKey();
  await redis.set(name, randomBytes(32).toString('base64'), 'NX');
  const stored = await redis.get(name);
  if (stored === null) throw new Error('the address digest key vanished after it was written');
  return Buffer.from(stored, 'base64');
}

/**
 * The form an address is compared in (suppression lists, contact lists, digests): the whole address
 * lower-cased and trimmed. Almost every mailbox provider treats the local part case-insensitively,
 * and a false "not suppressed" is the costly mistake.
 */
export function normaliseAddress(address: string): string {
  const t = address.trim();
  // A quoted or non-ASCII local part in its one form (core/address.ts canonicalLocal), as
  // parseAddress gives it: an entry made from "ann"@x (or from café in NFD) is ann@x's.
  const at = t.lastIndexOf('@');
  if (at > 0 && (t.includes('"') || /[^\x00-\x7f]/.test(t.slice(0, at)))) return (canonicalLocal(t.slice(0, at)) + t.slice(at)).toLowerCase();
  return t.toLowerCase();
}

/** The digest key of this deployment (cached per client and key prefix). */
export function digestKey(redis: RedisClient, keys: Keys): Promise<Buffer> {
  let byPrefix = keyOf.get(redis);
  if (!byPrefix) keyOf.set(redis, (byPrefix = new Map()));
  let p = byPrefix.get(keys.prefix);
  if (!p) {
    p = loadKey(redis, keys);
    // A failed read is not cached: the next call tries again.
    p.catch(() => byPrefix.delete(keys.prefix));
    byPrefix.set(keys.prefix, p);
  }
  return p;
}

/** The digest of an address under `key` (pure: ~1.5 µs; createHmac took ~5). */
export function digestWith(key: Buffer, address: string): string {
  return textHmacSha256(key, normaliseAddress(address)).toString('hex', 0, DIGEST_HEX_CHARS / 2);
}

export async function addressDigest(redis: RedisClient, keys: Keys, address: string): Promise<string> {
  return digestWith(await digestKey(redis, keys), address);
}
