import { SluiceError } from './errors.js';
import { pooledRandom } from './random-pool.js';

/**
 * Message ids: 16 characters of Crockford base32, time-ordered. The first 10 characters encode the
 * creation time in milliseconds (sortable, so retention can reason about age from the id alone), the
 * last 6 are 30 random bits. Short because an id is repeated in every queue entry.
 */
const BASE32_ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

/** `n` (a safe non-negative integer) as exactly `chars` base32 characters, most significant first. */
export function toBase32(n: number, chars: number): string {
  let out = '';
  let v = n;
  for (let i = 0; i < chars; i++) {
    out = (BASE32_ALPHABET[v % 32] as string) + out;
    v = Math.floor(v / 32);
  }
  return out;
}

/** The number that `chars` base32 characters of `text` from `start` encode (inverse of toBase32). */
export function fromBase32(text: string, start: number, chars: number): number {
  let n = 0;
  for (let i = start; i < start + chars; i++) n = n * 32 + BASE32_ALPHABET.indexOf(text[i] as string);
  return n;
}

export function newId(now: number = Date.now()): string {
  return toBase32(now, 10) + toBase32(pooledRandom(4).readUInt32BE(0) >>> 2, 6);
}

/** Ids drawn for one record before giving up: a second collision in a row is already ~1 in 10^18. */
export const MAX_ID_ATTEMPTS = 3;

/**
 * Creates a record named by a fresh id: `create` writes it only if the id is free and answers null
 * when it is taken (two processes can draw the same id in the same millisecond, 1 in 2^30 a pair),
 * and then it is tried again with a new id from `mint`. `first` is the id to try first (one the
 * caller already used, e.g. in a Message-ID); by default one from `mint`. The record another process
 * made is never touched. Throws SLUICE_INTERNAL after MAX_ID_ATTEMPTS taken ids.
 */
export async function withFreeId<T>(mint: () => string, create: (id: string) => Promise<T | null>, first: string = mint()): Promise<T> {
  let id = first;
  for (let attempt = 1; ; attempt++) {
    const made = await create(id);
    if (made !== null) return made;
    if (attempt === MAX_ID_ATTEMPTS) throw new SluiceError('SLUICE_INTERNAL', `no free id after ${attempt} attempts`);
    id = mint();
  }
}

const ID_RE = /^[0-9a-hjkmnp-tv-z]{16}$/;
export function isId(text: string): boolean {
  return ID_RE.test(text);
}

/** Creation time (ms since epoch) encoded in an id made by newId. */
export function idTime(id: string): number {
  return fromBase32(id, 0, 10);
}

/** A random id for sessions and connections (not stored). */
export function shortId(): string {
  return pooledRandom(6).toString('base64url');
}
