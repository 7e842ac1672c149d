import { createHash, randomBytes } from 'node:crypto';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { SluiceError } from '../core/errors.js';
import { keepRenewing } from '../store/locks.js';

/**
 * Idempotency-Key for the HTTP API (after draft-ietf-httpapi-idempotency-key-header):
 *
 *   {a:<account>}:idem:<sha256(key)>  STRING JSON
 *       { h: <sha256 of the request>, s: 0, o: <random> }    while the first request runs (a lease)
 *       { h: <sha256 of the request>, s: <status>, b: <body> } once it has been answered
 *
 * begin() claims the key with SET NX, so of two concurrent requests exactly one runs; the other gets
 * 409 (in progress, retry later). A retry after the answer gets that answer replayed. The same key with
 * a different request is a client bug, answered 422 rather than 409 so it is not confused with the
 * retryable in-flight case. Keys are scoped per account: one customer's keys never collide with another's.
 *
 * The in-flight marker is a lease: a short TTL, renewed while the request runs (renewLease-1.lua,
 * only while the key still holds this request's own marker). A request may run as long as it needs,
 * and a process that dies mid-request blocks its key for one lease at most (IN_FLIGHT_LEASE_MS), not
 * for minutes: the client's retry is answered 409 until then, and is processed anew after. Answers
 * that say "try again" (429, 5xx) are not stored, so the retry they invite is processed anew instead
 * of replaying the refusal.
 *
 *   {a:<account>}:idem:<sha256(key)>:ids  STRING JSON { h, ids: [<message id or null>, …] }
 *
 * The ids a request gave its messages, written before the first is persisted (recordIds), kept until
 * its answer is: a process that dies after persisting some of them and before answering leaves them
 * here, and the client's retry (once the lease has lapsed) answers for each message already stored
 * instead of storing and sending it again (earlierIds).
 */
export interface StoredAnswer {
  readonly status: number;
  readonly body: string;
}

/** The in-flight marker of a request this process is running; finish() ends it, end() only stops renewing. */
export interface InFlight {
  /** Stops renewing the marker (it then expires within a lease) and waits for a renewal in flight. */
  end(): Promise<void>;
}

export type BeginResult = { readonly kind: 'new'; readonly lease: InFlight } | { readonly kind: 'replay'; readonly answer: StoredAnswer };

/**
 * How long an in-flight marker outlives its last renewal: the longest a crashed request blocks its
 * key. Renewed every third of it, so two late or failed renewals in a row are survived.
 */
const IN_FLIGHT_LEASE_MS = 30_000;

export interface IdempotencyOptions {
  /** Lease of an in-flight marker; default IN_FLIGHT_LEASE_MS (tests shorten it). */
  readonly leaseMs?: number;
}

/**
 * The hash a request's record holds, fed as the body arrives: SHA-256 of `route NUL body NUL`,
 * base64url (the same value the whole body hashed at once gave, so records written before still
 * match). A body of megabytes (ingress.http.maxBodySize, 35 MB by default) is then hashed in the
 * slices the socket delivers, tens of µs each between other requests' work, not in one stall of the
 * event loop once it is whole (~1 ms per MB here, with the CPU's SHA instructions). WebCrypto's
 * digest, on libuv's threads, held the event loop longer than that: it copies its input first (35
 * MB: 50–130 ms, measured) and takes it only whole, which meant one more copy.
 */
export class RequestHash {
  readonly #hash = createHash('sha256');

  constructor(route: string) {
    this.#hash.update(route).update('\0');
  }

  update(chunk: Buffer): void {
    this.#hash.update(chunk);
  }

  digest(): string {
    return this.#hash.update('\0').digest('base64url');
  }
}

export function isValidIdempotencyKey(key: string): boolean {
  // Printable ASCII, 1–255: wide enough for UUIDs and client-made keys, bounded for the hash.
  return /^[\x20-\x7e]{1,255}$/.test(key);
}

export class IdempotencyStore {
  private readonly leaseMs: number;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    private readonly ttlMs: number,
    opts: IdempotencyOptions = {},
  ) {
    this.leaseMs = Math.min(opts.leaseMs ?? IN_FLIGHT_LEASE_MS, ttlMs);
  }

  private key(account: string, idemKey: string): string {
    return this.keys.idempotency(account, createHash('sha256').update(idemKey).digest('base64url'));
  }

  async begin(account: string, idemKey: string, hash: string): Promise<BeginResult> {
    const key = this.key(account, idemKey);
    const marker = JSON.stringify({ h: hash, s: 0, o: randomBytes(9).toString('base64url') });
    // A Redis that refuses the write (maxmemory, MISCONF) is a 503 to retry, as for the message itself.
    const unavailable = (cause: unknown): never => {
      throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the Idempotency-Key could not be checked', { cause });
    };
    // Two tries: the record may expire between a failed SET NX and the GET.
    for (let attempt = 0; attempt < 2; attempt++) {
      const set = await this.redis.set(key, marker, 'PX', this.leaseMs, 'NX').catch(unavailable);
      if (set === 'OK') return { kind: 'new', lease: keepRenewing(this.redis, key, marker, this.leaseMs) };
      const text = await this.redis.get(key).catch(unavailable);
      if (text === null) continue;
      // This request's own marker: the SET ran, its reply was lost to a dropped connection, and the
      // client sent it again (answered no). It is this request's lease all the same.
      if (text === marker) return { kind: 'new', lease: keepRenewing(this.redis, key, marker, this.leaseMs) };
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

  /**
   * Notes the ids the request gave its messages (null for one refused before it had one), before any
   * is persisted: see the ids record above. A failure to write it fails the request (503), as a
   * failure to store the message would: the promise of one send per key rests on it.
   */
  async recordIds(account: string, idemKey: string, hash: string, ids: readonly (string | null)[]): Promise<void> {
    await this.redis.set(`${this.key(account, idemKey)}:ids`, JSON.stringify({ h: hash, ids }), 'PX', this.ttlMs).catch((cause: unknown) => {
      throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the Idempotency-Key could not be recorded', { cause });
    });
  }

  /** The ids an earlier run of this very request gave its messages before it stopped unanswered, or null. */
  async earlierIds(account: string, idemKey: string, hash: string): Promise<readonly (string | null)[] | null> {
    const text = await this.redis.get(`${this.key(account, idemKey)}:ids`);
    if (text === null) return null;
    try {
      const rec = JSON.parse(text) as { h?: unknown; ids?: unknown };
      if (rec.h !== hash || !Array.isArray(rec.ids)) return null;
      return rec.ids.map((id) => (typeof id === 'string' ? id : null));
    } catch {
      return null;
    }
  }

  /**
   * Stores the answer for replay, or frees the key when the answer invites a retry. The request's
   * lease is ended first, so no renewal lands after the answer. The ids record goes either way: the
   * answer replays what it said, and an answer that invites a retry stored nothing it has to cover
   * (a message is withdrawn when it cannot be persisted).
   */
  async finish(account: string, idemKey: string, hash: string, answer: StoredAnswer, lease?: InFlight): Promise<void> {
    await lease?.end();
    const key = this.key(account, idemKey);
    if (answer.status === 429 || answer.status === 408 || answer.status >= 500) {
      await this.redis.del(key, `${key}:ids`);
      return;
    }
    await this.redis.set(key, JSON.stringify({ h: hash, s: answer.status, b: answer.body }), 'PX', this.ttlMs);
    await this.redis.del(`${key}:ids`);
  }
}
