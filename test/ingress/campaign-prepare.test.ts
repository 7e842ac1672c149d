/**
 * POST /v1/campaigns over a real HTTP server and Redis, with the templates prepared in the API's
 * preparation worker (render/prepare-pool.ts): the answers are those of prepareCampaign (201, or 400
 * with the path, line and column of every invalid field); a worker that fails is a 500 naming it and
 * the next campaign gets a new worker; more preparations at once than the queue holds are 503 with
 * Retry-After, and nothing of a refused campaign is written.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { HttpApi } from '../../src/ingress/http-api.js';
import { isSluiceError } from '../../src/core/errors.js';
import { MAX_EXPRESSIONS, MAX_NESTING, prepareCampaign } from '../../src/render/campaign.js';
import { apiCall, ingressFixture, limitCampaignHtml, startFixtureApi, type IngressFixture } from './fixture.js';

const test = suite('ingress/campaign-prepare');
let fx: IngressFixture;
const apis: HttpApi[] = [];
/** Default preparation bounds. */
let base = '';
/** A worker heap too small for a template at the limits (it is prepared within 32 MB). */
let tinyHeap = '';
/** No waiting room: one preparation at a time. */
let noQueue = '';

test.before(async () => {
  fx = await ingressFixture({}, { trackingKeys: true });
  for (const [opts, set] of [
    [{}, (b: string) => (base = b)],
    // Too small for a template at the limits (render/prepare-pool.ts: not within 16 MB), roomy for a
    // small one. 12 MB once failed the small one too, in a clean-clone CI run: a fresh worker loads
    // tsx's transpiler before the template, and under load its garbage is collected later.
    [{ prepare: { maxHeapMb: 16 } }, (b: string) => (tinyHeap = b)],
    [{ prepare: { queue: 0 } }, (b: string) => (noQueue = b)],
  ] as const) {
    const started = await startFixtureApi(fx, opts);
    apis.push(started.api);
    set(started.base);
  }
});
test.after(async () => {
  for (const api of apis) await api.close();
  await fx.stop();
});

const campaign = (over: Record<string, unknown> = {}) => ({ from: 'news@acme.example', subject: 'Hi {{first}}', html: '<p>Hello {{first}}</p>', recipients: [{ email: 'reader@d0.test' }], ...over });
const create = (at: string, body: unknown) => apiCall(at, 'POST', '/v1/campaigns', { key: fx.apiKeys.acme, body });
/** The account's campaigns and lists (a campaign with uploaded recipients makes one of each). */
async function written(): Promise<number> {
  const lists = await apiCall(base, 'GET', '/v1/lists?limit=1000', { key: fx.apiKeys.acme });
  return (await fx.client.zcard(fx.keys.accountCampaigns('acme'))) + (lists.json['lists'] as unknown[]).length;
}

test('a valid campaign is 201; an invalid one is 400 with the path of every invalid field, a template error with its line and column', async () => {
  const ok = await create(base, campaign());
  assert.is(ok.status, 201, ok.text);
  assert.is(ok.json['state'], 'draft');
  const stored = await apiCall(base, 'GET', `/v1/campaigns/${ok.json['id']}`, { key: fx.apiKeys.acme });
  assert.is(stored.json['subject'], 'Hi {{first}}');

  const invalid = { subject: 'a\r\nBcc: x@y.example', html: '<p>\n  {{#if x}}never closed</p>', headers: { 'List-Unsubscribe': '<https://x>', 'X-Ok': 'fine' } };
  const bad = await create(base, campaign(invalid));
  assert.is(bad.status, 400, bad.text);
  const errors = bad.json['errors'] as { path: string; line?: number; column?: number }[];
  assert.equal(errors.map((e) => e.path).sort(), ['headers.List-Unsubscribe', 'html', 'subject']);
  assert.equal(errors.find((e) => e.path === 'html'), { path: 'html', message: "syntax error: found the end of the template where '{{/…}}' or '{{else}}' or '{{else …}}' was expected", line: 2, column: 28 });
  // The same answer as prepareCampaign gives on this thread.
  let thrown: unknown;
  try {
    prepareCampaign({ from: { address: 'news@acme.example' }, tracking: { opens: true, clicks: true }, ...invalid });
  } catch (err) {
    thrown = err;
  }
  assert.ok(isSluiceError(thrown, 'SLUICE_TEMPLATE_INVALID'));
  assert.equal(bad.json, thrown.toJSON());
});

test('a template past the complexity limits is 400 with the line and column of the block too deep', async () => {
  const html = `${'{{#if vip}}\n'.repeat(MAX_NESTING + 1)}x${'{{/if}}'.repeat(MAX_NESTING + 1)}`;
  const r = await create(base, campaign({ html }));
  assert.is(r.status, 400, r.text);
  assert.equal(r.json['errors'], [{ path: 'html', message: `blocks and sub-expressions may not be nested more than ${MAX_NESTING} deep`, line: MAX_NESTING + 1, column: 1 }]);
});

test('a template at the limits is prepared: its links are the link table', async () => {
  const r = await create(base, campaign({ html: limitCampaignHtml() }));
  assert.is(r.status, 201, r.text.slice(0, 500));
  const id = r.json['id'] as string;
  const body = JSON.parse((await fx.client.get(fx.keys.msgBody(id))) ?? '{}') as { links?: string[]; html?: string };
  assert.is(body.links?.length, MAX_EXPRESSIONS - 2 * MAX_NESTING);
  assert.match(body.html ?? '', '\uE000p\uE000</body>', 'the pixel mark before </body>');
});

test('a worker that fails (out of heap) is a 500 naming it; the process answers on, and the next campaign gets a new worker', async () => {
  const before = await written();
  const r = await create(tinyHeap, campaign({ html: limitCampaignHtml() }));
  assert.is(r.status, 500, r.text);
  assert.is(r.json['code'], 'SLUICE_RENDER_FAILED');
  assert.match(String(r.json['message']), /^The campaign could not be prepared: its worker failed \(.*memory limit/);
  assert.is(await written(), before, 'nothing written');
  const after = await create(tinyHeap, campaign());
  assert.is(after.status, 201, after.text);
});

test('more preparations at once than the queue holds: 503 SLUICE_INGRESS_BUSY with Retry-After; the others are created, nothing of the refused', async () => {
  const html = limitCampaignHtml();
  const before = await written();
  const answers = await Promise.all(Array.from({ length: 4 }, (_, i) => create(noQueue, campaign({ html, subject: `Busy ${i}` }))));
  const statuses = answers.map((a) => a.status);
  const busy = answers.filter((a) => a.status === 503);
  assert.ok(busy.length > 0 && statuses.includes(201), statuses.join(','));
  assert.ok(statuses.every((s) => s === 201 || s === 503), statuses.join(','));
  for (const b of busy) {
    assert.is(b.json['code'], 'SLUICE_INGRESS_BUSY');
    assert.is(b.headers['retry-after'], '5');
  }
  const created = answers.filter((a) => a.status === 201).length;
  assert.is(await written(), before + 2 * created, 'the created campaigns and their lists only');
  // The queue was full, not closed: a later campaign is created.
  assert.is((await create(noQueue, campaign())).status, 201);
});

test.run();
