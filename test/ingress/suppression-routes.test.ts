/**
 * The suppression and sender routes over real HTTP against startHttpApi and a real Redis: each
 * account sees and changes only its own list, the global list is visible to a lookup but read-only,
 * and a paused sender is listed and resumed through the API.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { request } from 'undici';
import { addSuppression, GLOBAL_LIST, suppressionOf } from '../../src/store/suppression.js';
import { figuresOf, isPaused, pauseSender } from '../../src/store/reputation.js';
import { apiCall, withFixtureApi, type IngressFixture } from './fixture.js';
import { importSuppressions } from '../../src/store/suppression-import.js';
import { connect } from 'node:net';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { IncomingMessage } from 'node:http';

const test = suite('ingress/suppression-routes');
let fx: IngressFixture;
let base = '';
withFixtureApi(test, (f, b) => {
  fx = f;
  base = b;
});

type Json = Record<string, any>;
const call = (method: 'GET' | 'POST' | 'DELETE' | 'PUT', path: string, body?: unknown, key: string = fx.apiKeys.acme) => apiCall<Json>(base, method, path, { body, key });

test('POST adds to the account\'s list (201), a repeat keeps the first entry (200); lookup shows reason and evidence', async () => {
  const r = await call('POST', '/v1/suppressions', { email: 'Someone@Example.COM', reason: 'unsubscribe' });
  assert.is(r.status, 201, r.text);
  assert.is(r.json['email'], 'Someone@example.com');
  assert.is(r.json['reason'], 'unsubscribe');
  assert.is(r.json['list'], 'account');
  assert.equal(r.json['evidence'], { source: 'api' });
  const stored = await suppressionOf(fx.client, fx.keys, 'acme', 'someone@example.com');
  assert.is(stored?.list, 'acme');
  assert.is(stored?.reason, 'unsubscribe');

  const again = await call('POST', '/v1/suppressions', { email: 'someone@example.com' });
  assert.is(again.status, 200);
  assert.is(again.json['reason'], 'unsubscribe', 'the earlier reason is kept, not overwritten with manual');

  const look = await call('GET', '/v1/suppressions/SOMEONE%40example.com');
  assert.is(look.status, 200, look.text);
  assert.equal({ email: look.json['email'], list: look.json['list'], reason: look.json['reason'] }, { email: 'SOMEONE@example.com', list: 'account', reason: 'unsubscribe' });
  assert.match(look.json['at'], /^\d{4}-\d\d-\d\dT/);
});

test("another account's suppressions are invisible: lookup and delete are 404, its list does not show them", async () => {
  await call('POST', '/v1/suppressions', { email: 'private@example.org', reason: 'complaint' });
  assert.is((await call('GET', '/v1/suppressions/private@example.org', undefined, fx.apiKeys.other)).status, 404);
  assert.is((await call('DELETE', '/v1/suppressions/private@example.org', undefined, fx.apiKeys.other)).status, 404);
  const otherList = await call('GET', '/v1/suppressions', undefined, fx.apiKeys.other);
  assert.is(otherList.status, 200);
  assert.equal(otherList.json['suppressions'], []);
  // Still on acme's list after the other account's attempt.
  assert.is((await suppressionOf(fx.client, fx.keys, 'acme', 'private@example.org'))?.reason, 'complaint');
});

test("the global list: a lookup shows its entry (another account's evidence left out); DELETE is 403 and changes nothing", async () => {
  await addSuppression(fx.client, fx.keys, GLOBAL_LIST, 'gone@example.net', { reason: 'hardbounce', at: Date.UTC(2026, 0, 2), evidence: { event: '1-0', status: '5.1.1' } });
  const look = await call('GET', '/v1/suppressions/gone@example.net', undefined, fx.apiKeys.other);
  assert.is(look.status, 200);
  assert.equal(look.json, { email: 'gone@example.net', reason: 'hardbounce', at: '2026-01-02T00:00:00.000Z', list: 'global' });
  const del = await call('DELETE', '/v1/suppressions/gone@example.net', undefined, fx.apiKeys.other);
  assert.is(del.status, 403);
  assert.is(del.json['code'], 'SLUICE_SUPPRESSION_GLOBAL_READ_ONLY');
  assert.is((await suppressionOf(fx.client, fx.keys, 'other', 'gone@example.net'))?.list, GLOBAL_LIST);
  // The global list's addresses come from every account's mail: they are never listed to an account.
  const page = await call('GET', '/v1/suppressions?limit=1000', undefined, fx.apiKeys.other);
  assert.not.ok((page.json['suppressions'] as Json[]).some((e) => e['email'] === 'gone@example.net'));
});

test("a global entry's evidence (its event, message and feedback ids) is shown only to the account whose mail made it", async () => {
  const sent = await call('POST', '/v1/messages', { from: 'a@acme.example', to: 'nobody@example.net', subject: 's', text: 't' });
  assert.is(sent.status, 202, sent.text);
  const evidence = { event: '1700000000000-0', feedbackId: 'fb-1', msgId: sent.json['id'] as string, idx: 0, status: '5.1.1' };
  await addSuppression(fx.client, fx.keys, GLOBAL_LIST, 'nobody@example.net', { reason: 'hardbounce', at: Date.UTC(2026, 0, 3), evidence });
  const own = await call('GET', '/v1/suppressions/nobody@example.net');
  assert.is(own.status, 200, own.text);
  assert.equal(own.json['evidence'], evidence, "acme's own bounce: its evidence");
  const other = await call('GET', '/v1/suppressions/nobody@example.net', undefined, fx.apiKeys.other);
  assert.is(other.status, 200, other.text);
  assert.equal(other.json, { email: 'nobody@example.net', reason: 'hardbounce', at: '2026-01-03T00:00:00.000Z', list: 'global' }, "none of acme's ids");
  assert.not.match(other.text, sent.json['id'] as string);
});

test('DELETE removes from the own list (204, empty body), then 404', async () => {
  await call('POST', '/v1/suppressions', { email: 'back@example.com' }, fx.apiKeys.tiny);
  const del = await call('DELETE', '/v1/suppressions/back%40example.com', undefined, fx.apiKeys.tiny);
  assert.is(del.status, 204);
  assert.is(del.text, '');
  assert.is(await suppressionOf(fx.client, fx.keys, 'tiny', 'back@example.com'), null);
  assert.is((await call('DELETE', '/v1/suppressions/back@example.com', undefined, fx.apiKeys.tiny)).status, 404);
  assert.is((await call('GET', '/v1/suppressions/back@example.com', undefined, fx.apiKeys.tiny)).status, 404);
});

test('GET /v1/suppressions pages through the whole list with the cursor, each address once', async () => {
  // 300 entries: past HSCAN's listpack size, so the hash is a real table and pages are partial.
  const more = fx.client.pipeline();
  for (let i = 0; i < 300; i++) more.hset(fx.keys.suppression('acme'), `u${i}@example.com`, JSON.stringify({ reason: 'manual', at: 1, evidence: {} }));
  await more.exec();
  const seen = new Set<string>();
  let cursor: string | null = '0';
  let pages = 0;
  while (cursor !== null && pages < 100) {
    const r = await call('GET', `/v1/suppressions?limit=50&cursor=${cursor}`);
    assert.is(r.status, 200, r.text);
    for (const e of r.json['suppressions'] as Json[]) seen.add(e['email']);
    cursor = r.json['cursor'];
    pages++;
  }
  assert.is(cursor, null, 'the walk ended');
  assert.ok(pages > 1, `more than one page (${pages})`);
  for (let i = 0; i < 300; i++) assert.ok(seen.has(`u${i}@example.com`), `u${i} listed`);
  assert.ok(seen.has('someone@example.com'));
});

test('bad input is a 4xx with the field named; wrong methods are 405 with Allow; no key is 401', async () => {
  const bad = await call('POST', '/v1/suppressions', { email: 'not an address' });
  assert.is(bad.status, 400);
  assert.is(bad.json['code'], 'SLUICE_INGRESS_BAD_ADDRESS');
  const unknownReason = await call('POST', '/v1/suppressions', { email: 'a@example.com', reason: 'because' });
  assert.is(unknownReason.status, 400);
  assert.equal((unknownReason.json['errors'] as Json[]).map((e) => e['path']), ['reason']);
  assert.is((await call('GET', '/v1/suppressions?limit=0')).status, 400);
  assert.is((await call('GET', '/v1/suppressions?cursor=abc')).status, 400);
  assert.is((await call('GET', '/v1/suppressions/%E0%A4%A')).status, 400);
  const put = await call('PUT', '/v1/suppressions/a@example.com');
  assert.is(put.status, 405);
  assert.is(put.headers['allow'], 'GET, DELETE');
  const res = await request(`${base}/v1/suppressions`);
  assert.is(res.statusCode, 401);
  await res.body.text();
});

test('GET /v1/sender lists the account\'s pauses; POST /v1/sender/resume resumes them (404 when none)', async () => {
  const opts = { now: Date.now(), eventsMaxLen: 1000 };
  await pauseSender(fx.client, fx.keys, 'acme', 'acme.example', 'complaints', figuresOf(1000, 10, 5), { threshold: 0.003, windowHours: 24 }, opts);
  await pauseSender(fx.client, fx.keys, 'other', null, 'hardbounces', figuresOf(500, 100, 0), { threshold: 0.05, windowHours: 24 }, opts);

  const st = await call('GET', '/v1/sender');
  assert.is(st.status, 200);
  assert.is(st.json['paused'].length, 1, "only acme's own pause");
  assert.equal({ domain: st.json['paused'][0].domain, reason: st.json['paused'][0].reason, complaints: st.json['paused'][0].figures.complaints }, { domain: 'acme.example', reason: 'complaints', complaints: 5 });

  // acme cannot resume other's pause: resuming "everything" touches acme's own only.
  const r = await call('POST', '/v1/sender/resume', {});
  assert.is(r.status, 200, r.text);
  assert.equal(r.json['resumed'], ['acme.example']);
  assert.is(await isPaused(fx.client, fx.keys, 'acme', 'acme.example'), null);
  assert.is((await isPaused(fx.client, fx.keys, 'other', 'other.example'))?.reason, 'hardbounces');
  assert.is((await call('POST', '/v1/sender/resume', { domain: 'acme.example' })).status, 404);

  const events = await fx.client.xrange(fx.keys.events(), '-', '+');
  const resumed = events.filter(([, f]) => f[1] === 'sender_resumed');
  assert.is(resumed.length, 1);
  assert.match(resumed[0]![1].join(' '), /account acme .*domain acme\.example by api/);

  const other = await call('POST', '/v1/sender/resume', { domain: null }, fx.apiKeys.other);
  assert.equal(other.json['resumed'], [null], 'null = the account-wide pause');
});

test('POST /v1/suppressions/import: a CSV export into the account\'s own list, counts and invalid rows by line; NDJSON and text too; audited; a wrong type 415, a bad reason 400', async () => {
  const csv = 'Email,Reason,Date\nimp1@example.com,unsubscribed,2024-01-01\nnot-an-address,,x\nIMP2@example.com,"550 5.1.1 unknown",x\n';
  const r = await apiCall<Json>(base, 'POST', '/v1/suppressions/import?reason=hardbounce', { key: fx.apiKeys.acme, body: csv, headers: { 'content-type': 'text/csv' } });
  assert.is(r.status, 200, r.text);
  assert.equal([r.json['rows'], r.json['added'], r.json['existing'], r.json['invalid']], [3, 2, 0, 1]);
  assert.equal(r.json['errors'], [{ line: 3, reason: "'not-an-address' is not an email address" }]);
  assert.is((await suppressionOf(fx.client, fx.keys, 'acme', 'imp1@example.com'))?.reason, 'unsubscribe');
  const two = await suppressionOf(fx.client, fx.keys, 'acme', 'imp2@example.com');
  assert.equal([two?.reason, two?.evidence['note'], two?.evidence['by']], ['hardbounce', '550 5.1.1 unknown', 'account:acme']);
  assert.is(await suppressionOf(fx.client, fx.keys, 'other', 'imp1@example.com'), null, "not on another account's list");

  const nd = await apiCall<Json>(base, 'POST', '/v1/suppressions/import', { key: fx.apiKeys.acme, body: '{"email":"imp1@example.com"}\n{"email":"imp3@example.com","reason":"complaint"}\n', headers: { 'content-type': 'application/x-ndjson' } });
  assert.equal([nd.status, nd.json['added'], nd.json['existing']], [200, 1, 1]);
  const txt = await apiCall<Json>(base, 'POST', '/v1/suppressions/import', { key: fx.apiKeys.acme, body: 'imp4@example.com\n', headers: { 'content-type': 'text/plain' } });
  assert.equal([txt.status, txt.json['added']], [200, 1]);
  assert.is((await suppressionOf(fx.client, fx.keys, 'acme', 'imp4@example.com'))?.reason, 'manual');
  const audit = await fx.client.xrevrange(fx.keys.audit(), '+', '-', 'COUNT', 1);
  assert.match(audit[0]![1].join(' '), /suppression\.import/);

  const json = await apiCall<Json>(base, 'POST', '/v1/suppressions/import', { key: fx.apiKeys.acme, body: '{}', headers: { 'content-type': 'application/json' } });
  assert.is(json.status, 415);
  const bad = await apiCall<Json>(base, 'POST', '/v1/suppressions/import?reason=meh', { key: fx.apiKeys.acme, body: 'x@example.com\n', headers: { 'content-type': 'text/plain' } });
  assert.is(bad.status, 400);
  assert.is(bad.json['errors'][0].path, 'reason');
  const broken = await apiCall<Json>(base, 'POST', '/v1/suppressions/import', { key: fx.apiKeys.acme, body: 'name\nx\n', headers: { 'content-type': 'text/csv' } });
  assert.is(broken.status, 400);
  assert.match(broken.json['message'], 'no address column');
  assert.is((await apiCall<Json>(base, 'GET', '/v1/suppressions/import', { key: fx.apiKeys.acme })).status, 405);
});

test('an import past its byte limit stops at the last whole line before it, with what came before written (tooLarge)', async () => {
  const lines = Array.from({ length: 50 }, (_, i) => `cap${i}@example.com`).join('\n') + '\n';
  const chunks = (async function* () {
    yield Buffer.from(lines.slice(0, 300));
    yield Buffer.from(lines.slice(300));
  })();
  const r = await importSuppressions(fx.client, fx.keys, 'acme', chunks, { format: 'text', reason: 'manual', now: Date.now(), by: 'test', maxBytes: 500 });
  assert.ok(r.tooLarge);
  assert.match(r.stopped ?? '', 'exceeds 500 bytes');
  assert.ok(r.bytes <= 500 && r.bytes > 400, `${r.bytes} bytes read`);
  assert.is(r.invalid, 0, 'no line cut in two');
  assert.is(r.added, lines.slice(0, r.bytes).split('\n').filter(Boolean).length);
});

test('a client gone mid-upload: the import ends, what it had parsed written (the client, answered nothing, sends again: an import is idempotent), and the server goes on answering', async () => {
  const url = new URL(base);
  // The parser may still hold the last line received when the upload breaks off: gone1 is before it.
  const part = 'email\ngone1@example.com\ngone2@example.com\n';
  // The server's side of the request (same process): the client goes only once the import has read
  // the part sent, not after a fixed sleep that a slow key check or a busy machine can outlast.
  let serverReq: IncomingMessage | undefined;
  const onRequest = (m: unknown) => {
    const req = (m as { request: IncomingMessage }).request;
    if (req.url?.startsWith('/v1/suppressions/import')) serverReq = req;
  };
  subscribe('http.server.request.start', onRequest);
  const sock = connect(Number(url.port), url.hostname);
  try {
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write(`POST /v1/suppressions/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${fx.apiKeys.acme}\r\nContent-Type: text/csv\r\nContent-Length: 100000\r\n\r\n${part}`);
    const deadline = Date.now() + 10_000;
    while (!serverReq?.readableDidRead && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(serverReq?.readableDidRead, 'the server started reading the upload');
  } finally {
    unsubscribe('http.server.request.start', onRequest);
    sock.destroy();
  }
  let written: unknown = null;
  for (const deadline = Date.now() + 10_000; written === null && Date.now() < deadline;) {
    written = await suppressionOf(fx.client, fx.keys, 'acme', 'gone1@example.com');
    if (written === null) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(written, 'the rows parsed before the disconnect were written');
  assert.is((await call('GET', '/v1/suppressions/gone1@example.com')).status, 200, 'the server answers');
});

test.run();
