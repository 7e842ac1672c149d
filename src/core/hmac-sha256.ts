import { hash } from 'node:crypto';

/**
 * HMAC-SHA256 (RFC 2104, FIPS 180-4) for the many short MACs of tracking tokens: a 100 KB newsletter
 * has ~130 links, so its copy signs ~130 tokens, and the tracking server verifies one per request.
 *
 * Why not node:crypto: each call crosses into C++ and builds a native object. Measured on this
 * machine for a 40-byte token body: createHmac 5.1 µs, two crypto.hash() calls 4.6 µs,
 * @noble/hashes with a precomputed keyed instance 2.9 µs (`_cloneInto`), this 1.3 µs. It was 18 % of
 * a render worker at 100 KB (bench/e2e.ts) and 13 % of the tracking recorder (bench/tracking.ts).
 *
 * What makes it fast is the precomputation RFC 2104 §4 describes: the compression function is run
 * once per key over K ⊕ ipad and K ⊕ opad, and a MAC then costs the compressions of the data (one
 * block for a body up to 55 bytes) and one of the inner digest — with no allocation per call.
 * test/core/hmac-sha256.test.ts compares it with node:crypto's createHmac for keys and data of every
 * length around the block boundaries.
 */

/** Round constants (FIPS 180-4 §4.2.2). */
const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
  0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
/** Initial hash value (FIPS 180-4 §5.3.3). */
const IV = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
const BLOCK = 64;
/** The message schedule, shared: JavaScript runs one call at a time per thread. */
const W = new Int32Array(64);

/** One SHA-256 compression of the 64 bytes of `buf` at `off` into `state` (FIPS 180-4 §6.2.2). */
function compress(state: Int32Array, buf: Uint8Array, off: number): void {
  for (let i = 0; i < 16; i++) {
    const j = off + 4 * i;
    W[i] = ((buf[j] as number) << 24) | ((buf[j + 1] as number) << 16) | ((buf[j + 2] as number) << 8) | (buf[j + 3] as number);
  }
  for (let i = 16; i < 64; i++) {
    const x = W[i - 15] as number;
    const y = W[i - 2] as number;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    W[i] = ((W[i - 16] as number) + s0 + (W[i - 7] as number) + s1) | 0;
  }
  let a = state[0] as number;
  let b = state[1] as number;
  let c = state[2] as number;
  let d = state[3] as number;
  let e = state[4] as number;
  let f = state[5] as number;
  let g = state[6] as number;
  let h = state[7] as number;
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + S1 + ((e & f) ^ (~e & g)) + (K[i] as number) + (W[i] as number)) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  state[0] = ((state[0] as number) + a) | 0;
  state[1] = ((state[1] as number) + b) | 0;
  state[2] = ((state[2] as number) + c) | 0;
  state[3] = ((state[3] as number) + d) | 0;
  state[4] = ((state[4] as number) + e) | 0;
  state[5] = ((state[5] as number) + f) | 0;
  state[6] = ((state[6] as number) + g) | 0;
  state[7] = ((state[7] as number) + h) | 0;
}

/** The state after compressing one block: IV, then `block`. */
function midstate(block: Uint8Array): Int32Array {
  const s = new Int32Array(IV);
  compress(s, block, 0);
  return s;
}

function writeState(state: Int32Array, out: Uint8Array, off: number): void {
  for (let i = 0; i < 8; i++) {
    const v = state[i] as number;
    out[off + 4 * i] = v >>> 24;
    out[off + 4 * i + 1] = (v >>> 16) & 0xff;
    out[off + 4 * i + 2] = (v >>> 8) & 0xff;
    out[off + 4 * i + 3] = v & 0xff;
  }
}

/**
 * Finishes a hash whose state has already taken `done` bytes (whole blocks): compresses the rest of
 * `data` from `off`, then the padding (0x80, zeros, the bit length as 64 bits big-endian).
 */
function finish(state: Int32Array, data: Uint8Array, off: number, end: number, done: number, tail: Uint8Array): void {
  let at = off;
  for (; at + BLOCK <= end; at += BLOCK) compress(state, data, at);
  const rest = end - at;
  tail.fill(0);
  for (let i = 0; i < rest; i++) tail[i] = data[at + i] as number;
  tail[rest] = 0x80;
  const last = rest + 9 > BLOCK ? 2 * BLOCK : BLOCK;
  const bits = (done + end - off) * 8;
  // Bit lengths here are far below 2^53: the high word is the quotient, the low word the remainder.
  const high = Math.floor(bits / 0x1_0000_0000);
  tail[last - 8] = high >>> 24;
  tail[last - 7] = (high >>> 16) & 0xff;
  tail[last - 6] = (high >>> 8) & 0xff;
  tail[last - 5] = high & 0xff;
  tail[last - 4] = (bits >>> 24) & 0xff;
  tail[last - 3] = (bits >>> 16) & 0xff;
  tail[last - 2] = (bits >>> 8) & 0xff;
  tail[last - 1] = bits & 0xff;
  compress(state, tail, 0);
  if (last > BLOCK) compress(state, tail, BLOCK);
}

/** Writes HMAC-SHA256(key, data[start, end)) into out[0, 32). */
export type HmacSha256 = (data: Uint8Array, start: number, end: number, out: Uint8Array) => void;

/** An HMAC-SHA256 function for one key (any length; a key longer than a block is hashed first). */
export function hmacSha256(secret: Uint8Array): HmacSha256 {
  const key = secret.length > BLOCK ? new Uint8Array(hash('sha256', secret, 'buffer') as unknown as Buffer) : secret;
  const pad = new Uint8Array(BLOCK);
  for (let i = 0; i < BLOCK; i++) pad[i] = (key[i] ?? 0) ^ 0x36;
  const inner = midstate(pad);
  for (let i = 0; i < BLOCK; i++) pad[i] = (key[i] ?? 0) ^ 0x5c;
  const outer = midstate(pad);
  const state = new Int32Array(8);
  const tail = new Uint8Array(2 * BLOCK);
  // The outer hash's second block is always the inner digest and the same padding: only the digest
  // changes. 0x80 after the 32 bytes, then the length, (64 + 32) × 8 = 768 bits, big-endian.
  const outerBlock = new Uint8Array(BLOCK);
  outerBlock[32] = 0x80;
  outerBlock[BLOCK - 2] = 768 >>> 8;
  outerBlock[BLOCK - 1] = 768 & 0xff;
  return (data, start, end, out) => {
    state.set(inner);
    finish(state, data, start, end, BLOCK, tail);
    writeState(state, outerBlock, 0);
    state.set(outer);
    compress(state, outerBlock, 0);
    writeState(state, out, 0);
  };
}

const textMacs = new WeakMap<Uint8Array, (text: string) => Buffer>();

/**
 * HMAC-SHA256 of a string's UTF-8 bytes under `secret`, for the per-recipient MACs of the main
 * thread (address digests, VERP tags): one function per key object, kept while the key lives. The
 * 32-byte result is overwritten by the next call with the same key: read it before.
 */
export function textHmacSha256(secret: Uint8Array, text: string): Buffer {
  let f = textMacs.get(secret);
  if (!f) {
    const mac = hmacSha256(secret);
    const out = Buffer.alloc(32);
    let scratch = Buffer.alloc(512);
    f = (s: string): Buffer => {
      // Three bytes per UTF-16 unit at most (a surrogate pair is two units for four bytes).
      if (s.length * 3 > scratch.length) scratch = Buffer.alloc(s.length * 3);
      mac(scratch, 0, scratch.write(s, 0, 'utf8'), out);
      return out;
    };
    textMacs.set(secret, f);
  }
  return f(text);
}
