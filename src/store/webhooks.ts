import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Result } from 'ioredis';
import { SluiceError } from '../core/errors.js';
import { newId, isId, withFreeId } from '../core/ids.js';
import { nonPublicHost } from '../core/public-address.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { EVENT_TYPES } from './events.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** src/queue/lua/addWebhook-1.lua: 1 written, 0 the id is taken, -1 the account is at its limit. */
    addWebhook(webhooks: string, id: string, record: string, max: number): Result<number, Context>;
  }
}

/**
 * Webhook endpoints an account registered: where to POST its events, which event types, and the
 * secret the dispatcher signs each body with.
 *
 *   {a:<account>}:webhooks   HASH  endpoint id → JSON StoredEndpoint
 *   webhooks:endpoints       SET   "<account>/<id>" of every endpoint (the dispatcher's walk)
 *
 * The signing secret must be recoverable (HMAC needs the key itself), so it cannot be hashed like an
 * API key. It is sealed with AES-256-GCM under an operator key when one is given: a dump of Redis then
 * yields no usable secret, and the GCM tag, bound to "<account>/<id>" as associated data, refuses a
 * sealed secret copied onto another endpoint. Without an operator key it is stored as `plain:<secret>`:
 * Redis is then the trust boundary, as it already is for message bodies.
 */
export interface WebhookEndpoint {
  readonly id: string;
  readonly account: string;
  readonly url: string;
  /** Event types delivered; '*' = every type. */
  readonly events: readonly string[];
  /** Registration time (ms). Events appended before it are not delivered to this endpoint. */
  readonly created: number;
}

interface StoredEndpoint {
  id: string;
  url: string;
  events: string[];
  created: number;
  /** `gcm:<iv>.<tag>.<ciphertext>` (base64url) or `plain:<secret>`. */
  secret: string;
}

/** An endpoint with its sealed secret, as the dispatcher reads it. */
export interface SealedEndpoint extends WebhookEndpoint {
  readonly sealedSecret: string;
}

// Registrations are per account and walked on every event of the account; 20 is what a customer
// with staging, production and a few integrations needs, and bounds fan-out per event.
export const MAX_WEBHOOKS_PER_ACCOUNT = 20;
// Long enough for any real receiver URL with a path and a token in the query; short enough to log.
export const MAX_WEBHOOK_URL_LENGTH = 2048;
export const MAX_EVENT_TYPES = 32;
/** What an endpoint may subscribe to: a type that is written (a misspelt one would never receive anything), or '*'. */
const SUBSCRIBABLE: ReadonlySet<string> = new Set(['*', ...EVENT_TYPES]);

const GCM_IV_BYTES = 12; // the size GCM is specified for (NIST SP 800-38D §8.2)
const KEY_BYTES = 32; // AES-256

export function endpointRef(account: string, id: string): string {
  return `${account}/${id}`;
}

export function parseEndpointRef(ref: string): { account: string; id: string } | undefined {
  const i = ref.lastIndexOf('/');
  if (i <= 0) return undefined;
  const id = ref.slice(i + 1);
  return isId(id) ? { account: ref.slice(0, i), id } : undefined;
}

/**
 * Checks a registration; throws SLUICE_INGRESS_BAD_REQUEST naming each bad field. Unless
 * allowPrivateTargets, a URL whose host is a non-public IP literal or a loopback name is refused
 * (a name is checked again, resolved, when the dispatcher connects).
 */
export function validateWebhookInput(input: unknown, opts: { allowPrivateTargets?: boolean } = {}): { url: string; events: string[] } {
  const errors: { path: string; message: string }[] = [];
  const o = (input && typeof input === 'object' && !Array.isArray(input) ? input : {}) as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'url' && k !== 'events') errors.push({ path: k, message: 'unknown field' });
  const url = o['url'];
  let parsed: URL | undefined;
  if (typeof url !== 'string' || url.length > MAX_WEBHOOK_URL_LENGTH) {
    errors.push({ path: 'url', message: `must be an http(s) URL of at most ${MAX_WEBHOOK_URL_LENGTH} characters` });
  } else {
    try {
      parsed = new URL(url);
    } catch {
      parsed = undefined;
    }
    if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) errors.push({ path: 'url', message: 'must be an http(s) URL' });
    else if (parsed.username || parsed.password) errors.push({ path: 'url', message: 'must not carry credentials (the signature authenticates Sluice)' });
    else if (!opts.allowPrivateTargets) {
      const why = nonPublicHost(parsed.hostname);
      if (why) errors.push({ path: 'url', message: `must be a public address, not ${why} (webhooks.allowPrivateTargets)` });
    }
  }
  const events = o['events'];
  if (!Array.isArray(events) || events.length === 0 || events.length > MAX_EVENT_TYPES) {
    errors.push({ path: 'events', message: `must be a list of 1–${MAX_EVENT_TYPES} event types ('*' for all)` });
  } else {
    events.forEach((e, i) => {
      if (typeof e !== 'string' || !SUBSCRIBABLE.has(e)) errors.push({ path: `events.${i}`, message: `must be '*' or one of the event types: ${EVENT_TYPES.join(', ')}` });
    });
  }
  if (errors.length > 0) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The webhook is invalid', { errors });
  return { url: parsed!.href, events: [...new Set(events as string[])] };
}

function sealSecret(secret: string, ref: string, key: Buffer | undefined): string {
  if (!key) return `plain:${secret}`;
  const iv = randomBytes(GCM_IV_BYTES);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(ref));
  const ct = Buffer.concat([c.update(secret, 'utf8'), c.final()]);
  return `gcm:${iv.toString('base64url')}.${c.getAuthTag().toString('base64url')}.${ct.toString('base64url')}`;
}

/** The signing secret of an endpoint. Throws SLUICE_CONFIG_INVALID when it is sealed and the key is missing or wrong. */
export function openSecret(endpoint: SealedEndpoint, key: Buffer | undefined): string {
  const s = endpoint.sealedSecret;
  if (s.startsWith('plain:')) return s.slice('plain:'.length);
  const parts = s.startsWith('gcm:') ? s.slice(4).split('.') : [];
  if (parts.length !== 3) throw new SluiceError('SLUICE_CONFIG_INVALID', `webhook ${endpoint.id}: unreadable secret`);
  if (!key) throw new SluiceError('SLUICE_CONFIG_INVALID', `webhook ${endpoint.id}: the secret is sealed but no webhook secret key is configured`);
  try {
    const [iv, tag, ct] = parts.map((p) => Buffer.from(p, 'base64url')) as [Buffer, Buffer, Buffer];
    const d = createDecipheriv('aes-256-gcm', key, iv);
    d.setAAD(Buffer.from(endpointRef(endpoint.account, endpoint.id)));
    d.setAuthTag(tag);
    return Buffer.concat([d.update(ct), d.final()]).toString('utf8');
  } catch (err) {
    throw new SluiceError('SLUICE_CONFIG_INVALID', `webhook ${endpoint.id}: the secret does not open with the configured key`, { cause: err });
  }
}

function checkKey(key: Buffer | undefined): void {
  if (key && key.length !== KEY_BYTES) throw new SluiceError('SLUICE_CONFIG_INVALID', `the webhook secret key must be ${KEY_BYTES} bytes`);
}

/**
 * The record stored under `field`, if it has the shape createWebhook writes. A record of another
 * shape (written by hand, cut short, from another version) is undefined, not half an endpoint: the
 * dispatcher read `events` of every endpoint for every event of its account, and one record without
 * it threw on every pass, which stopped every account's webhooks.
 */
function decode(account: string, field: string, json: string): SealedEndpoint | undefined {
  let r: Partial<Record<keyof StoredEndpoint, unknown>>;
  try {
    r = JSON.parse(json) as typeof r;
  } catch {
    return undefined;
  }
  if (!r || typeof r !== 'object' || r.id !== field || !isId(field)) return undefined;
  const { url, events, created, secret } = r;
  if (typeof url !== 'string' || typeof secret !== 'string' || typeof created !== 'number' || !Number.isFinite(created)) return undefined;
  if (!Array.isArray(events) || !events.every((e): e is string => typeof e === 'string')) return undefined;
  return { id: field, account, url, events, created, sealedSecret: secret };
}

/**
 * Registers an endpoint. Returns it with its secret in clear: the only time the secret is shown.
 * Throws SLUICE_INGRESS_BAD_REQUEST past MAX_WEBHOOKS_PER_ACCOUNT.
 */
export async function createWebhook(
  redis: RedisClient,
  keys: Keys,
  account: string,
  input: { url: string; events: readonly string[] },
  opts: { secretKey?: Buffer | undefined; now?: number; mint?: () => string } = {},
): Promise<{ endpoint: WebhookEndpoint; secret: string }> {
  checkKey(opts.secretKey);
  const now = opts.now ?? Date.now();
  // 32 random bytes: a full SHA-256 block's worth of key strength for the HMAC.
  const secret = `whsec_${randomBytes(32).toString('base64url')}`;
  // The limit and the write in one script, so concurrent registrations cannot pass it together; an
  // id the account already uses (drawn twice in one millisecond) is never overwritten.
  const stored = await withFreeId(opts.mint ?? (() => newId(now)), async (id) => {
    const s: StoredEndpoint = { id, url: input.url, events: [...input.events], created: now, secret: sealSecret(secret, endpointRef(account, id), opts.secretKey) };
    const added = Number(await redis.addWebhook(keys.webhooks(account), id, JSON.stringify(s), MAX_WEBHOOKS_PER_ACCOUNT));
    if (added === -1) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', `An account has at most ${MAX_WEBHOOKS_PER_ACCOUNT} webhooks`);
    return added === 1 ? s : null;
  });
  const id = stored.id;
  const ref = endpointRef(account, id);
  // Registered first, indexed second: a crash between leaves an endpoint that still receives new
  // events (the stream path reads the hash), and the dispatcher indexes it again when it queues one.
  await redis.sadd(keys.webhookEndpoints(), ref);
  // Before the answer: every event appended after it finds dispatchers reloading the account's list.
  await redis.incr(keys.webhookGeneration());
  return { endpoint: { id, account, url: stored.url, events: stored.events, created: now }, secret };
}

/**
 * The account's endpoints with sealed secrets, oldest first. A record that is not an endpoint's
 * (see decode) is left out, and its field given to `unreadable`; DELETE /v1/webhooks/:id still removes it.
 */
export async function loadWebhooks(redis: RedisClient, keys: Keys, account: string, unreadable?: (id: string) => void): Promise<SealedEndpoint[]> {
  const all = await redis.hgetall(keys.webhooks(account));
  const list: SealedEndpoint[] = [];
  for (const [field, json] of Object.entries(all)) {
    const e = decode(account, field, json);
    if (e) list.push(e);
    else unreadable?.(field);
  }
  return list.sort((a, b) => a.created - b.created || (a.id < b.id ? -1 : 1));
}

export async function getWebhook(redis: RedisClient, keys: Keys, account: string, id: string): Promise<SealedEndpoint | undefined> {
  if (!isId(id)) return undefined;
  const json = await redis.hget(keys.webhooks(account), id);
  return json === null ? undefined : decode(account, id, json);
}

/** The account's endpoints as an API answers them: never the secret. */
export async function listWebhooks(redis: RedisClient, keys: Keys, account: string): Promise<WebhookEndpoint[]> {
  return (await loadWebhooks(redis, keys, account)).map(({ id, account: a, url, events, created }) => ({ id, account: a, url, events, created }));
}

/**
 * Removes an endpoint with its outbox and dead letters (nothing is left to deliver them to).
 * False when the account has no such endpoint: another account's id is simply not found.
 */
export async function deleteWebhook(redis: RedisClient, keys: Keys, account: string, id: string): Promise<boolean> {
  if (!isId(id)) return false;
  const removed = await redis.hdel(keys.webhooks(account), id);
  if (removed === 0) return false;
  await redis.del(keys.webhookOutbox(account, id), keys.webhookDead(account, id), keys.webhookAges(account, id), keys.webhookOutboxEvents(account, id));
  await redis.srem(keys.webhookEndpoints(), endpointRef(account, id));
  await redis.incr(keys.webhookGeneration());
  return true;
}
