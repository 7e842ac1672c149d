import { EVENT_TYPES } from '../../src/store/events.js';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { request } from 'undici';
import { apiCall, withFixtureApi, type IngressFixture } from './fixture.js';

const test = suite('ingress/webhook-routes');
let fx: IngressFixture;
let base = '';
withFixtureApi(test, (f, b) => {
  fx = f;
  base = b;
});

type Json = Record<string, unknown> & { code?: string; errors?: { path: string }[] };
const call = (method: 'GET' | 'POST' | 'DELETE' | 'PUT', path: string, body?: unknown, key: string | null = fx.apiKeys.acme) => apiCall<Json>(base, method, path, { body, key });

test('create → 201 with the secret once; list and get never show it; delete removes it', async () => {
  const created = await call('POST', '/v1/webhooks', { url: 'https://hooks.acme.example/sluice', events: ['delivered', 'bounced', 'delivered'] });
  assert.is(created.status, 201, JSON.stringify(created.json));
  const id = created.json['id'] as string;
  assert.match(created.json['secret'] as string, /^whsec_[A-Za-z0-9_-]{43}$/);
  assert.equal(created.json['events'], ['delivered', 'bounced'], 'duplicates dropped');
  assert.is(created.json['url'], 'https://hooks.acme.example/sluice');

  const list = await call('GET', '/v1/webhooks');
  assert.is(list.status, 200);
  const hooks = list.json['webhooks'] as Record<string, unknown>[];
  assert.equal(hooks.map((h) => h['id']), [id]);
  assert.not.ok('secret' in (hooks[0] as object));
  assert.not.match(JSON.stringify(list.json), created.json['secret'] as string);

  const one = await call('GET', `/v1/webhooks/${id}`);
  assert.is(one.status, 200);
  assert.is(one.json['id'], id);
  assert.not.ok('secret' in one.json);

  const del = await call('DELETE', `/v1/webhooks/${id}`);
  assert.equal([del.status, del.json['deleted']], [200, true]);
  assert.equal((await call('GET', '/v1/webhooks')).json['webhooks'], []);
  assert.is((await call('DELETE', `/v1/webhooks/${id}`)).status, 404, 'gone');
  assert.is(await fx.client.sismember(fx.keys.webhookEndpoints(), `acme/${id}`), 0, 'unindexed');
});

test('endpoints on loopback, private, link-local or reserved addresses are refused (400, path url)', async () => {
  for (const url of ['http://127.0.0.1:8080/x', 'http://[::1]/x', 'http://169.254.169.254/latest/meta-data/', 'http://10.0.0.5/x', 'https://192.168.1.1/x',
    'http://localhost:3000/x', 'http://api.localhost/x', 'http://[::ffff:127.0.0.1]/x', 'http://0.0.0.0/x', 'http://[fd00::1]/x', 'http://2130706433/x']) {
    const r = await call('POST', '/v1/webhooks', { url, events: ['*'] });
    assert.is(r.status, 400, url);
    assert.is(r.json.code, 'SLUICE_INGRESS_BAD_REQUEST', url);
    assert.ok((r.json.errors as { path: string; message: string }[]).some((e) => e.path === 'url' && /public address/.test(e.message)), url);
  }
  // Public addresses and names are accepted (a name is checked again, resolved, when connecting).
  for (const url of ['https://93.184.215.14/hook', 'https://[2606:4700::1111]/hook', 'https://hooks.acme.example/x']) {
    const r = await call('POST', '/v1/webhooks', { url, events: ['*'] });
    assert.is(r.status, 201, url);
    await call('DELETE', `/v1/webhooks/${r.json['id']}`);
  }
});

test("another account's webhook is not found: get, delete and list are scoped", async () => {
  const created = await call('POST', '/v1/webhooks', { url: 'http://hooks.acme.example:9/x', events: ['*'] });
  const id = created.json['id'] as string;
  const other = fx.apiKeys.other;
  assert.is((await call('GET', `/v1/webhooks/${id}`, undefined, other)).status, 404);
  const del = await call('DELETE', `/v1/webhooks/${id}`, undefined, other);
  assert.equal([del.status, del.json.code], [404, 'SLUICE_INGRESS_NOT_FOUND']);
  assert.equal((await call('GET', '/v1/webhooks', undefined, other)).json['webhooks'], []);
  assert.is((await call('GET', `/v1/webhooks/${id}`)).status, 200, 'still there for its owner');
});

test('bad input → 400 naming each field; no auth → 401; wrong method → 405; wrong type → 415', async () => {
  const bad = await call('POST', '/v1/webhooks', { url: 'ftp://x.example/', events: ['Delivered!', 3], extra: 1 });
  assert.is(bad.status, 400);
  assert.is(bad.json.code, 'SLUICE_INGRESS_BAD_REQUEST');
  assert.equal((bad.json.errors ?? []).map((e) => e.path).sort(), ['events.0', 'events.1', 'extra', 'url']);
  // A misspelt type would never receive anything: refused, naming the types there are.
  const typo = await call('POST', '/v1/webhooks', { url: 'https://x.example/', events: ['delivered', 'deliverd', 'opens'] });
  assert.is(typo.status, 400);
  assert.equal((typo.json.errors ?? []).map((e) => e.path), ['events.1', 'events.2']);
  assert.match(JSON.stringify(typo.json.errors), 'one of the event types: accepted, delivered, deferred, bounced');
  const every = await call('POST', '/v1/webhooks', { url: 'https://x.example/', events: [...EVENT_TYPES] });
  assert.is(every.status, 201, JSON.stringify(every.json));
  const noEvents = await call('POST', '/v1/webhooks', { url: 'https://x.example/', events: [] });
  assert.equal((noEvents.json.errors ?? []).map((e) => e.path), ['events']);
  const creds = await call('POST', '/v1/webhooks', { url: 'https://user:pw@x.example/', events: ['*'] });
  assert.is(creds.status, 400);
  assert.is((await call('GET', '/v1/webhooks', undefined, null)).status, 401);
  assert.is((await call('POST', '/v1/webhooks', { url: 'https://x.example/', events: ['*'] }, null)).status, 401);
  const put = await call('PUT', '/v1/webhooks');
  assert.is(put.status, 405);
  assert.is(put.headers['allow'], 'GET, POST');
  const text = await request(`${base}/v1/webhooks`, { method: 'POST', headers: { authorization: `Bearer ${fx.apiKeys.acme}`, 'content-type': 'text/plain' }, body: '{}' });
  await text.body.dump();
  assert.is(text.statusCode, 415);
});

test('an account has a bounded number of webhooks', async () => {
  const key = fx.apiKeys.tiny;
  let last = 0;
  for (let i = 0; i < 21; i++) last = (await call('POST', '/v1/webhooks', { url: `https://tiny.example/${i}`, events: ['*'] }, key)).status;
  assert.is(last, 400, 'the 21st is refused');
  assert.is(((await call('GET', '/v1/webhooks', undefined, key)).json['webhooks'] as unknown[]).length, 20);
});

test.run();
