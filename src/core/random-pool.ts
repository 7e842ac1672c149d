import { randomBytes } from 'node:crypto';

/**
 * Random bytes drawn from a buffer refilled POOL_BYTES at a time. randomBytes is a call into
 * OpenSSL and a new Buffer, which cost more than the rest of what ids and MIME boundaries are made
 * of when called once for each; these need unpredictable bytes, and get them, only fewer calls.
 * One pool per thread (module state), never shared across threads.
 */
const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let at = 0;

/** `n` (≤ 4096) fresh random bytes: a view into the pool, valid until the next call. */
export function pooledRandom(n: number): Buffer {
  if (at + n > pool.length) {
    pool = randomBytes(Math.max(POOL_BYTES, n));
    at = 0;
  }
  at += n;
  return pool.subarray(at - n, at);
}
