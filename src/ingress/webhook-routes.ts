import { SluiceError } from '../core/errors.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import { createWebhook, deleteWebhook, getWebhook, listWebhooks, validateWebhookInput, type WebhookEndpoint } from '../store/webhooks.js';
import { JSON_TYPE, methodNotAllowed, type RouteAnswer } from './http-route.js';

/**
 * The webhook registration routes of the HTTP API, scoped to the authenticated account:
 *
 *   POST   /v1/webhooks      { url, events[] }  → 201 { id, url, events, created, secret }  (the only time the secret is shown)
 *   GET    /v1/webhooks                         → 200 { webhooks: [{ id, url, events, created }] }
 *   GET    /v1/webhooks/:id                     → 200 { id, url, events, created }
 *   DELETE /v1/webhooks/:id                     → 200 { id, deleted: true }
 *
 * Another account's id is answered exactly like an unknown one (404), so ids reveal nothing.
 */
export interface WebhookRouteContext {
  readonly redis: RedisClient;
  readonly keys: Keys;
  /** The caller's account (throws SLUICE_AUTH_* when there is none). */
  authenticate(): Promise<{ readonly id: string }>;
  /** Reads the request body (at most maxBytes) and parses it as JSON. */
  readJson(maxBytes: number): Promise<unknown>;
  /** Seals new secrets at rest (AES-256-GCM); none = stored plain. */
  readonly secretKey?: Buffer | undefined;
  /** webhooks.allowPrivateTargets: accept endpoints on non-public addresses. */
  readonly allowPrivateTargets?: boolean;
}

// A registration is a URL and a few event types: 16 KiB is ample and keeps the route cheap to abuse.
export const WEBHOOK_MAX_BODY_BYTES = 16 * 1024;
const COLLECTION = '/v1/webhooks';
const ITEM = /^\/v1\/webhooks\/([^/]+)$/;

function view(e: WebhookEndpoint): { id: string; url: string; events: readonly string[]; created: string } {
  return { id: e.id, url: e.url, events: e.events, created: new Date(e.created).toISOString() };
}

/** Answers a /v1/webhooks route; undefined when the path is not one of them. */
export async function webhookRoute(
  method: string,
  path: string,
  headers: { readonly 'content-type'?: string | undefined; readonly 'content-length'?: string | undefined },
  ctx: WebhookRouteContext,
): Promise<RouteAnswer | undefined> {
  if (path === COLLECTION) {
    if (method === 'GET') {
      const account = await ctx.authenticate();
      return { status: 200, body: { webhooks: (await listWebhooks(ctx.redis, ctx.keys, account.id)).map(view) } };
    }
    if (method !== 'POST') throw methodNotAllowed('GET, POST');
    if (Number(headers['content-length'] ?? 0) > WEBHOOK_MAX_BODY_BYTES) throw new SluiceError('SLUICE_INGRESS_TOO_LARGE', `The request body exceeds ${WEBHOOK_MAX_BODY_BYTES} bytes`);
    const account = await ctx.authenticate();
    if (!JSON_TYPE.test(headers['content-type'] ?? '')) throw new SluiceError('SLUICE_INGRESS_UNSUPPORTED_MEDIA');
    const input = validateWebhookInput(await ctx.readJson(WEBHOOK_MAX_BODY_BYTES), { allowPrivateTargets: ctx.allowPrivateTargets === true });
    const { endpoint, secret } = await createWebhook(ctx.redis, ctx.keys, account.id, input, { secretKey: ctx.secretKey });
    return { status: 201, body: { ...view(endpoint), secret }, audit: { action: 'webhook.create', target: endpoint.id } };
  }
  const m = ITEM.exec(path);
  if (!m) return undefined;
  const id = m[1] as string;
  if (method !== 'GET' && method !== 'DELETE') throw methodNotAllowed('GET, DELETE');
  const account = await ctx.authenticate();
  if (method === 'GET') {
    const e = await getWebhook(ctx.redis, ctx.keys, account.id, id);
    if (!e) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', 'No such webhook');
    return { status: 200, body: view(e) };
  }
  if (!(await deleteWebhook(ctx.redis, ctx.keys, account.id, id))) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', 'No such webhook');
  return { status: 200, body: { id, deleted: true }, audit: { action: 'webhook.delete', target: id } };
}
