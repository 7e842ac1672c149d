import { randomBytes } from 'node:crypto';

/**
 * Message ids: 16 characters of Crockford base32, time-ordered. The first 10 characters encode the
 * creation time in milliseconds (sortable, so retention can reason about age from the id alone), the
 * last 6 are 30 random bits. Short because an id is repeated in every queue entry.
 */
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

export function newId(now: number = Date.now()): string {
  let time = now;
  let head = '';
  for (let i = 0; i < 10; i++) {
    head = ALPHABET[time % 32] + head;
    time = Math.floor(time / 32);
  }
  const rnd = randomBytes(4).readUInt32BE(0) >>> 2;
  let tail = '';
  let r = rnd;
  for (let i = 0; i < 6; i++) {
    tail = ALPHABET[r % 32] + tail;
    r = Math.floor(r / 32);
  }
  return head + tail;
}

const ID_RE = /^[0-9a-hjkmnp-tv-z]{16}$/;
export function isId(text: string): boolean {
  return ID_RE.test(text);
}

/** Creation time (ms since epoch) encoded in an id made by newId. */
export function idTime(id: string): number {
  let t = 0;
  for (let i = 0; i < 10; i++) t = t * 32 + ALPHABET.indexOf(id[i] as string);
  return t;
}

/** A random id for sessions and connections (not stored). */
export function shortId(): string {
  return randomBytes(6).toString('base64url');
}
