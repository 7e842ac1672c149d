import { createHash } from 'node:crypto';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { SluiceError } from '../core/errors.js';

/**
 * Idempotency-Key for the HTTP API (after draft-ietf-httpapi-idempotency-key-header):
 *
 *   {a:<account>}:idem:<sha256(key)>  STRING JSON
 *       { h: <sha256 of the request>, s: 0 }                 while the first request runs
 *       { h: <sha256 of the request>, s: <status>, b: <body> } once it has been answered
 *
 * begin() claims the key with SET NX, so of two concurrent requests exactly one runs; the other gets
 * 409 (in progress, retry later). A retry after the answer gets that answer replayed. The same key with
 * a different request is a client bug, answered 422 rather than 409 so it is not confused with the
 * retryable in-flight case. Keys are scoped per account: one customer's keys never collide with another's.
 *
 * The in-flight marker has a short TTL so a process that dies mid-request does not block the key for
 * the full idempotencyTtl; answers that say "try again" (429, 5xx) are not stored, so the retry they
 * invite is processed anew instead of replaying the refusal.
 */
export interface StoredAnswer {
  readonly status: number;
  readonly body: string;
}

export type BeginResult = { readonly kind: 'new' } | { readonly kind: 'replay'; readonly answer: StoredAnswer };

/** Longest time a request may hold its key in flight: well above any request timeout. */
const IN_FLIGHT_TTL_MS = 5 * 60_000;

export function requestHash(parts: readonly (string | Buffer)[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('base64url');
}

export function isValidIdempotencyKey(key: string): boolean {
  // Printable ASCII, 1–255: wide enough for UUIDs and client-made keys, bounded for the hash.
  return /^[\x20-\x7e]{1,255}$/.test(key);
}

export class IdempotencyStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    private readonly ttlMs: number,
  ) {}

  private key(account: string, idemKey: string): string {
    return this.keys.idempotency(account, createHash('sha256').update(idemKey).digest('base64url'));
  }

  async begin(account: string, idemKey: string, hash: string): Promise<BeginResult> {
    const key = this.key(account, idemKey);
    // Two tries: the record may expire between a failed SET NX and the GET.
    for (let attempt = 0; attempt < 2; attempt++) {
      const set = await this.redis.set(key, JSON.stringify({ h: hash, s: 0 }), 'PX', Math.min(IN_FLIGHT_TTL_MS, this.ttlMs), 'NX');
      if (set === 'OK') return { kind: 'new' };
      const text = await this.redis.get(key);
      if (text === null) continue;
      let rec: { h?: unknown; s?: unknown; b?: unknown };
      try {
        rec = JSON.parse(text) as typeof rec;
      } catch {
        rec = {};
      }
      if (rec.h !== hash) throw new SluiceError('SLUICE_INGRESS_IDEMPOTENCY_MISMATCH');
      if (typeof rec.s !== 'number' || rec.s === 0 || typeof rec.b !== 'string') throw new SluiceError('SLUICE_INGRESS_IDEMPOTENCY_CONFLICT');
      return { kind: 'replay', answer: { status: rec.s, body: rec.b } };
    }
    throw new SluiceError('SLUICE_INGRESS_IDEMPOTENCY_CONFLICT');
  }

  /** Stores the answer for replay, or frees the key when the answer invites a retry. */
  async finish(account: string, idemKey: string, hash: string, answer: StoredAnswer): Promise<void> {
    const key = this.key(account, idemKey);
    if (answer.status === 429 || answer.status === 408 || answer.status >= 500) {
      await this.redis.del(key);
      return;
    }
    await this.redis.set(key, JSON.stringify({ h: hash, s: answer.status, b: answer.body }), 'PX', this.ttlMs);
  }
}
