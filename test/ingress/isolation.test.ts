import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { request } from 'undici';
import type { HttpApi } from '../../src/ingress/http-api.js';
import { pauseSender, figuresOf } from '../../src/store/reputation.js';
import { createList } from '../../src/store/contacts.js';
import { ingressFixture, startFixtureApi, type IngressFixture } from './fixture.js';

/**
 * Account isolation on every HTTP route that takes an id: account B ('other') using account A's
 * ('acme') ids gets 404 — exactly what an unknown id gets, so ids reveal nothing — and nothing of A
 * changes (every key under the test's prefix is byte-for-byte the same before and after).
 *
 * ROWS is the table to extend when a route with an id is added: method, path (with A's ids filled in
 * from `ids`) and an optional body.
 */
const test = suite('ingress/isolation');
let fx: IngressFixture;
let api: HttpApi;
let base = '';

interface Ids {
  message: string;
  suppressed: string;
  webhook: string;
  list: string;
  campaign: string;
}

interface Row {
  readonly method: 'GET' | 'POST' | 'DELETE' | 'PATCH';
  readonly path: (ids: Ids) => string;
  readonly body?: unknown;
}

const ROWS: readonly Row[] = [
  { method: 'GET', path: (i) => `/v1/messages/${i.message}` },
  { method: 'GET', path: (i) => `/v1/suppressions/${encodeURIComponent(i.suppressed)}` },
  { method: 'DELETE', path: (i) => `/v1/suppressions/${encodeURIComponent(i.suppressed)}` },
  { method: 'GET', path: (i) => `/v1/webhooks/${i.webhook}` },
  { method: 'DELETE', path: (i) => `/v1/webhooks/${i.webhook}` },
  { method: 'POST', path: () => '/v1/sender/resume', body: { domain: 'acme.example' } },
  { method: 'GET', path: (i) => `/v1/lists/${i.list}` },
  { method: 'PATCH', path: (i) => `/v1/lists/${i.list}`, body: { name: 'taken over' } },
  { method: 'DELETE', path: (i) => `/v1/lists/${i.list}` },
  { method: 'GET', path: (i) => `/v1/lists/${i.list}/contacts` },
  { method: 'DELETE', path: (i) => `/v1/lists/${i.list}/contacts/${encodeURIComponent(i.suppressed)}` },
  { method: 'GET', path: (i) => `/v1/campaigns/${i.campaign}` },
  { method: 'GET', path: (i) => `/v1/campaigns/${i.campaign}/stats` },
  { method: 'POST', path: (i) => `/v1/campaigns/${i.campaign}/schedule`, body: {} },
  { method: 'POST', path: (i) => `/v1/campaigns/${i.campaign}/pause`, body: {} },
  { method: 'POST', path: (i) => `/v1/campaigns/${i.campaign}/cancel`, body: {} },
];

async function call(method: Row['method'], path: string, key: string, body?: unknown) {
  const res = await request(base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.body.text();
  // An export answers CSV; every other answer (and every error) is JSON.
  const json = String(res.headers['content-type'] ?? '').startsWith('application/json') && text ? JSON.parse(text) : {};
  return { status: res.statusCode, json: json as Record<string, unknown> };
}

/** Every key under the prefix with its DUMP: any change of A's data shows as a difference. */
async function snapshot(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, found] = await fx.client.scan(cursor, 'MATCH', `${fx.keys.prefix}*`, 'COUNT', 1000);
    cursor = next;
    for (const k of found) out.set(k, ((await fx.client.dumpBuffer(k)) ?? Buffer.alloc(0)).toString('base64'));
  } while (cursor !== '0');
  return out;
}

let ids: Ids;

test.before(async () => {
  fx = await ingressFixture({}, { trackingKeys: true });
  ({ api, base } = await startFixtureApi(fx));
  const A = fx.apiKeys.acme;
  const sent = await call('POST', '/v1/messages', A, { from: 'a@acme.example', to: 'r@x.example', subject: 's', text: 't' });
  assert.is(sent.status, 202, JSON.stringify(sent.json));
  const sup = await call('POST', '/v1/suppressions', A, { email: 'kept@x.example' });
  assert.is(sup.status, 201);
  const hook = await call('POST', '/v1/webhooks', A, { url: 'https://hooks.acme.example/', events: ['*'] });
  assert.is(hook.status, 201);
  await pauseSender(fx.client, fx.keys, 'acme', 'acme.example', 'complaints', figuresOf(100, 0, 5), { threshold: 0.003, windowHours: 24 }, { now: Date.now(), eventsMaxLen: 1000 });
  const list = await createList(fx.client, fx.keys, 'acme', 'customers');
  // A draft campaign: nothing moves it until someone schedules it, so any change B could make shows.
  const campaign = await call('POST', '/v1/campaigns', A, { from: 'a@acme.example', subject: 'Hi {{first_name}}', text: 'Hello', listId: list.id });
  assert.is(campaign.status, 201, JSON.stringify(campaign.json));
  ids = { message: sent.json['id'] as string, suppressed: 'kept@x.example', webhook: hook.json['id'] as string, list: list.id, campaign: campaign.json['id'] as string };
});
test.after(async () => {
  await api.close();
  await fx.stop();
});

test("account B gets 404 for every route with A's ids, and nothing of A changes", async () => {
  const before = await snapshot();
  assert.ok(before.size > 5, 'A has data to protect');
  for (const row of ROWS) {
    const path = row.path(ids);
    const r = await call(row.method, path, fx.apiKeys.other, row.body);
    assert.is(r.status, 404, `${row.method} ${path} → ${r.status} ${JSON.stringify(r.json)}`);
    assert.ok(String(r.json['code']).endsWith('NOT_FOUND'), `${row.method} ${path}: ${String(r.json['code'])}`);
  }
  const after = await snapshot();
  assert.equal([...after.keys()].sort(), [...before.keys()].sort(), 'no key appeared or vanished');
  for (const [k, v] of before) assert.is(after.get(k), v, `${k} is unchanged`);
});

test("A's own ids answer A (the rows are real routes, not 404 for everyone)", async () => {
  for (const row of ROWS.filter((r) => r.method === 'GET')) {
    const path = row.path(ids);
    const r = await call('GET', path, fx.apiKeys.acme);
    assert.is(r.status, 200, `${path} → ${r.status} ${JSON.stringify(r.json)}`);
  }
});

test('an unknown id gets the same answer as another account\'s', async () => {
  const mine = await call('GET', `/v1/webhooks/${ids.webhook}`, fx.apiKeys.other);
  const unknown = await call('GET', '/v1/webhooks/0000000000000000', fx.apiKeys.other);
  assert.equal(mine, unknown);
});

test.run();
