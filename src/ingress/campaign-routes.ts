import { z } from 'zod';
import { SluiceError } from '../core/errors.js';
import { newId, isId, withFreeId } from '../core/ids.js';
import { domainOf } from '../core/address.js';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';
import type { CampaignInput, PreparedCampaign } from '../render/campaign.js';
import { campaignStats, createCampaign, getCampaign, isCampaignCursor, listCampaigns, type CampaignRecord, type CampaignStats } from '../store/campaigns.js';
import { createList, getList, renameList } from '../store/contacts.js';
import { importContacts, type ImportResult } from '../store/contact-import.js';
import { cancelCampaign, pauseCampaign, resumeCampaign, scheduleCampaign, type LifecycleResult } from '../queue/campaign.js';
import { address, fieldErrors } from './http-schema.js';
import { JSON_TYPE, methodNotAllowed, pageQuery, splitUrl, type RouteAnswer } from './http-route.js';

/**
 * The campaign routes of the HTTP API, scoped to the authenticated account:
 *
 *   POST /v1/campaigns                  create: a draft, or scheduled with sendAt (a time, or "now") → 201
 *   GET  /v1/campaigns?cursor=&limit=   a page of the account's campaigns, newest first
 *                                       → 200 { campaigns, cursor } (cursor null after the last)
 *   GET  /v1/campaigns/:id              one campaign                                             → 200
 *   GET  /v1/campaigns/:id/stats        delivery and engagement counts                          → 200
 *   POST /v1/campaigns/:id/schedule     draft → scheduled { sendAt? }                            → 200
 *   POST /v1/campaigns/:id/pause        sending → paused                                         → 200
 *   POST /v1/campaigns/:id/resume       paused → sending                                         → 200
 *   POST /v1/campaigns/:id/cancel       → cancelled (what waits in the queue is dropped)         → 200
 *
 * A move the campaign's state does not allow is 409 with the state in the message. Another account's
 * campaign is answered exactly like an unknown one (404).
 */
export interface CampaignRouteContext {
  readonly redis: RedisClient;
  readonly keys: Keys;
  readonly shards: number;
  authenticate(): Promise<{ readonly id: string }>;
  /** Whether the account may send from the domain (its configured sending domains). */
  ownsDomain(account: string, domain: string): boolean;
  readJson(maxBytes: number): Promise<unknown>;
  /**
   * Whether copies can carry their one-click unsubscribe link (tracking.keys are configured): the
   * render worker refuses a campaign copy without one, so a campaign created without keys would see
   * its whole list bounced at send time.
   */
  readonly unsubscribeLinks: boolean;
  /** render/campaign.ts prepareCampaign, off this thread (render/prepare-pool.ts). */
  prepare(input: CampaignInput): Promise<PreparedCampaign>;
  /** A campaign became due (scheduled now, resumed): the enqueuer of this process may look at once. */
  onDue?: (() => void) | undefined;
  readonly now?: (() => number) | undefined;
}

/**
 * A campaign with recipients uploaded in the request is bounded by the body limit; lists of any size
 * are imported through /v1/lists (streamed) and named by `listId`.
 */
export const CAMPAIGN_MAX_BODY_BYTES = 16 * 1024 * 1024;
const COLLECTION = '/v1/campaigns';
const ITEM = /^\/v1\/campaigns\/([^/]+)(?:\/(stats|schedule|pause|resume|cancel))?$/;

const time = z.union([z.literal('now'), z.iso.datetime({ offset: true })]);

const createSchema = z
  .object({
    name: z.string().max(200).optional(),
    from: address,
    replyTo: z.union([address, z.array(address).max(10)]).optional(),
    subject: z.string().min(1).max(998),
    html: z.string().optional(),
    text: z.string().optional(),
    headers: z.record(z.string(), z.string()).optional(),
    tags: z.array(z.string().min(1).max(100)).max(20).optional(),
    tracking: z.object({ opens: z.boolean().optional(), clicks: z.boolean().optional() }).strict().optional(),
    listId: z.string().optional(),
    recipients: z
      .array(z.object({ email: z.string().max(320), fields: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional() }).strict())
      .min(1)
      .max(100_000)
      .optional(),
    sendAt: time.optional(),
    throttle: z.object({ perHour: z.number().int().positive().max(100_000_000) }).strict().optional(),
  })
  .strict()
  .refine((v) => (v.listId === undefined) !== (v.recipients === undefined), { message: 'give either listId or recipients', path: ['listId'] });

const scheduleSchema = z.object({ sendAt: time.optional() }).strict();

function view(c: CampaignRecord): Record<string, unknown> {
  const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
  return {
    id: c.id,
    name: c.name,
    state: c.state,
    listId: c.listId,
    from: c.from,
    subject: c.subject,
    tracking: c.tracking,
    tags: c.tags,
    throttle: c.throttlePerHour === null ? null : { perHour: c.throttlePerHour },
    created: iso(c.createdAt),
    sendAt: iso(c.sendAt),
    started: iso(c.startedAt),
    completed: iso(c.completedAt),
    cancelled: iso(c.cancelledAt),
    recipients: { queued: c.queued, skipped: c.skipped, pending: Math.max(0, c.pending), listQueued: c.enqueued },
    // Set when its list was deleted before it was queued whole: it went to `queued` recipients only.
    listGone: iso(c.listGoneAt),
    // Set when the reputation guard paused it: why, when, and the figures it judged.
    pausedBy: c.guardPause === null ? null : { ...c.guardPause, at: iso(c.guardPause.at) },
  };
}

export function statsView(s: CampaignStats): Record<string, unknown> {
  const e = s.engagement;
  return {
    recipients: s.recipients,
    queued: s.queued,
    skipped: s.skipped,
    pending: s.pending,
    delivered: s.delivered,
    deferred: s.deferred,
    bounced: s.bounced,
    bouncedByReason: s.bouncedByReason,
    expired: s.expired,
    suppressed: s.suppressed,
    cancelled: s.cancelled,
    complaints: s.complaints,
    hardbounces: s.hardbounces,
    opens: { total: e.opens, human: e.opensHuman, uniqueHuman: e.opensUniqueHuman, machine: e.machineOpens },
    clicks: { total: e.clicks, human: e.clicksHuman, uniqueHuman: e.clicksUniqueHuman, machine: e.machineClicks },
    unsubscribes: e.unsubscribes,
    // Copies held back by the campaign's throttle or its account's limit: which (config key), and until when.
    waiting: s.waiting === null ? null : { by: s.waiting.by, limit: s.waiting.limit, until: new Date(s.waiting.until).toISOString() },
  };
}

function parse<T>(schema: z.ZodType<T>, input: unknown): T {
  const r = schema.safeParse(input);
  if (!r.success) throw new SluiceError('SLUICE_INGRESS_BAD_REQUEST', 'The campaign is invalid', { errors: fieldErrors(r.error) });
  return r.data;
}

function toTime(t: string | undefined, now: number): number {
  return t === undefined || t === 'now' ? now : Math.max(now, Date.parse(t));
}

async function* ndjson(rows: readonly { email: string; fields?: Record<string, string | number | boolean> | undefined }[]): AsyncIterable<string> {
  for (const r of rows) yield `${JSON.stringify({ email: r.email, fields: r.fields ?? {} })}\n`;
}

/** Answers a /v1/campaigns route; undefined when the path is not one of them. */
export async function campaignRoute(
  method: string,
  url: string,
  headers: { readonly 'content-type'?: string | undefined; readonly 'content-length'?: string | undefined; readonly 'transfer-encoding'?: string | undefined },
  ctx: CampaignRouteContext,
): Promise<RouteAnswer | undefined> {
  const now = ctx.now ?? Date.now;
  const { redis, keys } = ctx;
  const { path, query } = splitUrl(url);
  if (path === COLLECTION) {
    if (method === 'GET') {
      const account = await ctx.authenticate();
      const page = await listCampaigns(redis, keys, account.id, pageQuery(query, isCampaignCursor));
      return { status: 200, body: { campaigns: page.campaigns.map(view), cursor: page.cursor } };
    }
    if (method !== 'POST') throw methodNotAllowed('GET, POST');
    if (Number(headers['content-length'] ?? 0) > CAMPAIGN_MAX_BODY_BYTES) throw new SluiceError('SLUICE_INGRESS_TOO_LARGE', `The request body exceeds ${CAMPAIGN_MAX_BODY_BYTES} bytes`);
    const account = await ctx.authenticate();
    if (!JSON_TYPE.test(headers['content-type'] ?? '')) throw new SluiceError('SLUICE_INGRESS_UNSUPPORTED_MEDIA');
    const input = parse(createSchema, await ctx.readJson(CAMPAIGN_MAX_BODY_BYTES));
    if (!ctx.unsubscribeLinks) throw new SluiceError('SLUICE_CONFIG_INVALID', 'Campaigns need tracking keys (tracking.keys, tracking.signWith): every copy carries its recipient\'s one-click unsubscribe link');
    const fromDomain = domainOf(input.from.address);
    if (!ctx.ownsDomain(account.id, fromDomain)) throw new SluiceError('SLUICE_INGRESS_FROM_NOT_OWNED', `The account does not own the From domain ${fromDomain}`, { errors: [{ path: 'from', message: `domain ${fromDomain} is not one of the account's sending domains` }] });
    // Everything that can be refused is checked before anything is written.
    const prepared = await ctx.prepare({
      from: input.from,
      subject: input.subject,
      ...(input.html !== undefined ? { html: input.html } : {}),
      ...(input.text !== undefined ? { text: input.text } : {}),
      ...(input.headers ? { headers: input.headers } : {}),
      ...(input.replyTo ? { replyTo: input.replyTo } : {}),
      tracking: { opens: input.tracking?.opens ?? true, clicks: input.tracking?.clicks ?? true },
    });
    if (input.listId !== undefined && !(isId(input.listId) && (await getList(redis, keys, account.id, input.listId)))) {
      throw new SluiceError('SLUICE_LIST_NOT_FOUND', `No such contact list: ${input.listId}`, { errors: [{ path: 'listId', message: 'no such list' }] });
    }
    const firstId = newId(now());
    let listId = input.listId;
    let imported: ImportResult | undefined;
    if (input.recipients) {
      const list = await createList(redis, keys, account.id, `campaign ${firstId} recipients`, now());
      listId = list.id;
      imported = await importContacts(redis, keys, account.id, list.id, ndjson(input.recipients), { format: 'ndjson', limits: { maxBytes: CAMPAIGN_MAX_BODY_BYTES * 2, maxRows: 100_000 } });
    }
    const sendAt = input.sendAt === undefined ? null : toTime(input.sendAt, now());
    const c = await withFreeId(() => newId(now()), (id) => createCampaign(redis, keys, {
      id,
      account: account.id,
      name: input.name ?? input.subject,
      listId: listId as string,
      from: input.from.address,
      fromDomain,
      subject: input.subject,
      tracking: { opens: input.tracking?.opens ?? true, clicks: input.tracking?.clicks ?? true },
      tags: input.tags ?? [],
      throttlePerHour: input.throttle?.perHour ?? null,
      createdAt: now(),
      sendAt,
      body: JSON.stringify(prepared.template),
      links: prepared.links,
    }), firstId);
    // The first id was taken (drawn twice in one millisecond): the list is named after the one it got.
    if (c.id !== firstId && input.recipients && listId !== undefined) await renameList(redis, keys, account.id, listId, `campaign ${c.id} recipients`, now());
    if (sendAt !== null && sendAt <= now()) ctx.onDue?.();
    const body = imported ? { ...view(c), import: { imported: imported.imported, duplicates: imported.duplicates, suppressed: imported.suppressed, invalid: imported.invalid, errors: imported.errors } } : view(c);
    return { status: 201, body, audit: { action: 'campaign.create', target: c.id } };
  }

  const m = ITEM.exec(path);
  if (!m) return undefined;
  const id = m[1] as string;
  const action = m[2];
  if (action === undefined || action === 'stats') {
    if (method !== 'GET') throw methodNotAllowed('GET');
  } else if (method !== 'POST') {
    throw methodNotAllowed('POST');
  }
  const account = await ctx.authenticate();
  const c = isId(id) ? await getCampaign(redis, keys, account.id, id) : null;
  if (!c) throw new SluiceError('SLUICE_INGRESS_NOT_FOUND', 'No such campaign');
  if (action === undefined) return { status: 200, body: view(c) };
  if (action === 'stats') return { status: 200, body: { id: c.id, state: c.state, ...statsView(await campaignStats(redis, keys, c)) } };

  let r: LifecycleResult;
  const t = now();
  if (action === 'schedule') {
    // A body of unknown length comes chunked, without Content-Length: ignored, its sendAt would be
    // taken for none and the whole list sent now.
    const hasBody = headers['transfer-encoding'] !== undefined || Number(headers['content-length'] ?? 0) > 0;
    if (hasBody && !JSON_TYPE.test(headers['content-type'] ?? '')) throw new SluiceError('SLUICE_INGRESS_UNSUPPORTED_MEDIA');
    const input = hasBody ? parse(scheduleSchema, await ctx.readJson(16 * 1024)) : {};
    const sendAt = toTime(input.sendAt, t);
    r = await scheduleCampaign(redis, keys, id, sendAt, t);
    if (r.ok && sendAt <= t) ctx.onDue?.();
  } else if (action === 'pause') {
    r = await pauseCampaign(redis, keys, ctx.shards, id, t);
  } else if (action === 'resume') {
    r = await resumeCampaign(redis, keys, ctx.shards, id, t);
    if (r.ok) ctx.onDue?.();
  } else {
    r = await cancelCampaign(redis, keys, ctx.shards, id, t);
  }
  if (!r.ok) throw new SluiceError('SLUICE_CAMPAIGN_STATE', `The campaign is ${r.state ?? 'gone'}: it cannot ${action}`);
  const after = await getCampaign(redis, keys, account.id, id);
  return { status: 200, body: after ? view(after) : { id, state: 'unknown' }, audit: { action: `campaign.${action}`, target: id } };
}
