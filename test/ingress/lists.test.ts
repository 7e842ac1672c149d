/**
 * The /v1/lists routes over a real HTTP server and Redis: list lifecycle, streamed import and
 * export (round trip), single contacts, another account's list (404 on every route), size limits
 * (413 up front, and midway with the progress), and bad requests.
 */
import { request as httpRequest } from 'node:http';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { request } from 'undici';
import { startHttpApi, type HttpApi } from '../../src/ingress/http-api.js';
import { createList, getList, findContact } from '../../src/store/contacts.js';
import { readAudit } from '../../src/store/audit.js';
import { createCampaign } from '../../src/store/campaigns.js';
import { addressDigest } from '../../src/store/address-digest.js';
import { newId } from '../../src/core/ids.js';
import { ingressFixture, startFixtureApi, type IngressFixture } from './fixture.js';

const test = suite('ingress/lists');
let fx: IngressFixture;
let api: HttpApi;
let base = '';
// A second API over the same Redis with small import limits.
let small: HttpApi;
let smallBase = '';
const SMALL = { maxImportBytes: 2_000, maxImportRows: 50 };

test.before(async () => {
  fx = await ingressFixture();
  ({ api, base } = await startFixtureApi(fx));
  small = await startHttpApi(
    { redis: fx.client, keys: fx.keys, config: { ...fx.config, lists: SMALL }, registry: fx.registry, logger: fx.logger },
    { host: '127.0.0.1', port: 0 },
  );
  smallBase = `http://127.0.0.1:${small.port}`;
});
test.after(async () => {
  await api.close();
  await small.close();
  await fx.stop();
});

type Json = Record<string, unknown> & { code?: string; errors?: { path?: string; line?: number; reason?: string }[] };
interface Call {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: Json;
}

async function call(method: string, path: string, opts: { json?: unknown; body?: string | Buffer; type?: string; key?: string | null; base?: string } = {}): Promise<Call> {
  const key = opts.key === undefined ? fx.apiKeys.acme : opts.key;
  const headers: Record<string, string> = {};
  if (key) headers['authorization'] = `Bearer ${key}`;
  let body: string | Buffer | undefined = opts.body;
  if (opts.json !== undefined) {
    body = JSON.stringify(opts.json);
    headers['content-type'] = 'application/json';
  }
  if (opts.type) headers['content-type'] = opts.type;
  const res = await request((opts.base ?? base) + path, { method: method as 'GET', headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.body.text();
  let json: Json = {};
  if ((res.headers['content-type'] ?? '').toString().startsWith('application/json') && text) json = JSON.parse(text) as Json;
  return { status: res.statusCode, headers: res.headers, text, json };
}

async function newList(name: string, key: string = fx.apiKeys.acme): Promise<string> {
  const r = await call('POST', '/v1/lists', { json: { name }, key });
  assert.is(r.status, 201, r.text);
  return r.json['id'] as string;
}

test('GET /v1/lists: pages follow cursor to the last (null); a bad limit or cursor is 400 with the field', async () => {
  // The tiny account's lists: only this test makes them.
  const made = await Promise.all(Array.from({ length: 250 }, (_, i) => createList(fx.client, fx.keys, 'tiny', `l${i}`)));
  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const r: Call = await call('GET', `/v1/lists?limit=100${cursor ? `&cursor=${cursor}` : ''}`, { key: fx.apiKeys.tiny });
    assert.is(r.status, 200, r.text);
    const lists = r.json['lists'] as { id: string; name: string; count: number; statuses: unknown; created: string; updated: string }[];
    // SSCAN's COUNT is a hint: about the limit, never the whole account at once.
    assert.ok(lists.length < 200, `a page of ${lists.length}`);
    assert.equal(lists.map((l) => l.id), [...lists.map((l) => l.id)].sort(), 'oldest first within a page');
    assert.equal(Object.keys(lists[0] ?? { id: 0, name: 0, count: 0, statuses: 0, created: 0, updated: 0 }), ['id', 'name', 'count', 'statuses', 'created', 'updated']);
    seen.push(...lists.map((l) => l.id));
    cursor = r.json['cursor'] as string | null;
    pages++;
  } while (cursor !== null);
  assert.ok(pages >= 2, `${pages} pages`);
  assert.equal([...new Set(seen)].sort(), made.map((l) => l.id).sort());
  const first = await call('GET', '/v1/lists', { key: fx.apiKeys.tiny });
  assert.ok((first.json['lists'] as unknown[]).length < 200 && typeof first.json['cursor'] === 'string', 'a default page of about 100');
  for (const [query, path] of [['limit=0', 'limit'], ['limit=1001', 'limit'], ['limit=2.5', 'limit'], ['cursor=abc', 'cursor']] as const) {
    const r = await call('GET', `/v1/lists?${query}`, { key: fx.apiKeys.tiny });
    assert.equal([r.status, r.json.code, r.json.errors?.map((e) => e.path)], [400, 'SLUICE_INGRESS_BAD_REQUEST', [path]], query);
  }
});

test('lists: create, list, get, rename, delete', async () => {
  const id = await newList('Newsletter');
  const listed = await call('GET', '/v1/lists');
  assert.ok((listed.json['lists'] as { id: string }[]).some((l) => l.id === id));
  const one = await call('GET', `/v1/lists/${id}`);
  assert.equal([one.status, one.json['name'], one.json['count'], one.json['fields']], [200, 'Newsletter', 0, []]);
  const renamed = await call('PATCH', `/v1/lists/${id}`, { json: { name: 'Weekly' } });
  assert.equal([renamed.status, renamed.json['name']], [200, 'Weekly']);
  const bad = await call('POST', '/v1/lists', { json: { name: '', extra: 1 } });
  assert.is(bad.status, 400);
  assert.equal((bad.json.errors ?? []).map((e) => e.path).sort(), ['extra']);
  const empty = await call('POST', '/v1/lists', { json: { name: '  ' } });
  assert.equal([empty.status, (empty.json.errors ?? [])[0]?.path], [400, 'name']);
  const del = await call('DELETE', `/v1/lists/${id}`);
  assert.equal([del.status, del.json['deleted']], [200, true]);
  assert.is((await call('GET', `/v1/lists/${id}`)).status, 404);
  assert.is((await call('GET', '/v1/lists/not-an-id')).json.code, 'SLUICE_LIST_NOT_FOUND');
});

test('import: bad rows by line, counts; export CSV and NDJSON round-trip into a new list', async () => {
  const id = await newList('import');
  const csv = 'email,name,status\nann@example.com,Ann,\nbroken,B,\nzed@bücher.example,"Zed, Z",unsubscribed\nANN@example.com,Annie,\n';
  const r = await call('POST', `/v1/lists/${id}/contacts`, { body: csv, type: 'text/csv; charset=utf-8' });
  assert.is(r.status, 200, r.text);
  assert.equal(
    { imported: r.json['imported'], created: r.json['created'], duplicates: r.json['duplicates'], invalid: r.json['invalid'], lines: r.json['lines'], complete: r.json['complete'] },
    { imported: 3, created: 2, duplicates: 1, invalid: 1, lines: 5, complete: true },
  );
  assert.equal(r.json.errors, [{ line: 3, reason: "'broken' is not a valid email address" }]);

  for (const format of ['csv', 'ndjson'] as const) {
    const exported = await call('GET', `/v1/lists/${id}/contacts?format=${format}`);
    assert.is(exported.status, 200);
    assert.match(String(exported.headers['content-type']), format === 'csv' ? /^text\/csv/ : /^application\/x-ndjson/);
    assert.match(String(exported.headers['content-disposition']), `${id}.${format}`);
    if (format === 'csv') assert.is(exported.text, 'email,status,name\r\nANN@example.com,subscribed,Annie\r\nzed@xn--bcher-kva.example,unsubscribed,"Zed, Z"\r\n');
    const copy = await newList(`copy-${format}`);
    const back = await call('POST', `/v1/lists/${copy}/contacts`, { body: exported.text, type: format === 'csv' ? 'text/csv' : 'application/x-ndjson' });
    assert.equal([back.status, back.json['created'], back.json['invalid']], [200, 2, 0]);
    const again = await call('GET', `/v1/lists/${copy}/contacts?format=${format}`);
    const stable = (t: string) => t.replace(/"(created|updated)":"[^"]+"/g, '');
    assert.is(stable(again.text), stable(exported.text), `${format} round trip`);
  }
  assert.is((await call('GET', `/v1/lists/${id}/contacts?format=xml`)).json.errors?.[0]?.path, 'format');
  const json = await call('POST', `/v1/lists/${id}/contacts`, { json: [{ email: 'x@example.com' }] });
  assert.equal([json.status, json.json.code], [415, 'SLUICE_INGRESS_UNSUPPORTED_MEDIA']);
  const noHeader = await call('POST', `/v1/lists/${id}/contacts`, { body: 'name\nx\n', type: 'text/csv' });
  assert.equal([noHeader.status, noHeader.json.code], [400, 'SLUICE_LIST_IMPORT_BAD_FORMAT']);
});

test('import: an address with a lone surrogate (NDJSON "\\udc00") is a bad row; a surrogate pair is a character', async () => {
  // A lone surrogate has no UTF-8 form: imported, the contact was stored under another address (U+FFFD).
  const id = await newList('surrogates');
  const r = await call('POST', `/v1/lists/${id}/contacts`, { body: '{"email":"a\\udc00b@example.com"}\n{"email":"c\\ud800@example.com"}\n{"email":"smile\\ud83d\\ude00@example.com"}\n', type: 'application/x-ndjson' });
  assert.is(r.status, 200, r.text);
  assert.equal({ imported: r.json['imported'], invalid: r.json['invalid'] }, { imported: 1, invalid: 2 });
  assert.equal((r.json.errors ?? []).map((e) => e.line), [1, 2]);
});

test('contacts: get, patch and delete one by address (percent-encoded, any case, IDN)', async () => {
  const id = await newList('contacts');
  await call('POST', `/v1/lists/${id}/contacts`, { body: '{"email":"Joe+news@Bücher.example","first":"Joe"}\n', type: 'application/x-ndjson' });
  const path = `/v1/lists/${id}/contacts/${encodeURIComponent('joe+news@bücher.example')}`;
  const got = await call('GET', path);
  assert.equal([got.status, got.json['email'], got.json['fields'], got.json['status']], [200, 'Joe+news@xn--bcher-kva.example', { first: 'Joe' }, 'subscribed']);
  const patched = await call('PATCH', path, { json: { fields: { first: null, plan: 'gold' }, status: 'unsubscribed' } });
  assert.equal([patched.status, patched.json['fields'], patched.json['status']], [200, { plan: 'gold' }, 'unsubscribed']);
  const badPatch = await call('PATCH', path, { json: { status: 'gone', colour: 1 } });
  assert.equal([badPatch.status, (badPatch.json.errors ?? []).map((e) => e.path).sort()], [400, ['colour', 'status']]);
  const reservedField = await call('PATCH', path, { json: { fields: { Email: 'x' } } });
  assert.equal([reservedField.status, reservedField.json.errors?.[0]?.path], [400, 'fields.Email']);
  assert.equal((await call('GET', `/v1/lists/${id}`)).json['statuses'], { subscribed: 0, unsubscribed: 1, bounced: 0, complained: 0 });
  const del = await call('DELETE', path);
  assert.equal([del.status, del.json['deleted']], [200, true]);
  assert.is((await call('GET', path)).status, 404);
  assert.is((await call('DELETE', path)).status, 404);
  assert.equal([(await call('GET', `/v1/lists/${id}/contacts/not-an-address`)).json.code], ['SLUICE_INGRESS_BAD_ADDRESS']);
  assert.is((await call('GET', `/v1/lists/${id}`)).json['count'], 0);
});

test('deleting a contact or a list that a campaign was sent to keeps the copies findable by an erasure', async () => {
  const id = await newList('Sent to');
  const imp = await call('POST', `/v1/lists/${id}/contacts`, { body: 'email\nann@example.org\nbob@example.org\n', type: 'text/csv' });
  assert.is(imp.status, 200, imp.text);
  const ann = (await findContact(fx.client, fx.keys, id, 'ann@example.org'))!;
  const campaignId = newId();
  await createCampaign(fx.client, fx.keys, {
    id: campaignId, account: 'acme', name: 'Spring', listId: id, from: 'news@acme.example', fromDomain: 'acme.example', subject: 'Spring',
    tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: Date.now(), sendAt: null, body: '{}', links: [],
  });
  // Its list queued whole: the list may go.
  await fx.client.hset(fx.keys.msgMeta(campaignId), 'state', 'sending', 'startedAt', Date.now(), 'enqueued', 1);

  assert.is((await call('DELETE', `/v1/lists/${id}/contacts/ann%40example.org`)).status, 200);
  const refs = fx.keys.addressRefs(await addressDigest(fx.client, fx.keys, 'ann@example.org'));
  assert.equal(await fx.client.zrange(refs, 0, -1), [`c:${campaignId}:${ann.no}`], "the copy's reference in the address index");
  assert.ok((await fx.client.pttl(refs)) > 0, 'with a TTL');

  assert.is((await call('DELETE', `/v1/lists/${id}`)).status, 200);
  assert.is(await fx.client.exists(fx.keys.listContacts(id)), 0, 'the contacts are gone');
  assert.is(await fx.client.hget(fx.keys.listEmails(id), 'bob@example.org'), '2', "the list's address index stays");
  assert.ok((await fx.client.pttl(fx.keys.listEmails(id))) > 0, 'for a while');
  assert.is((await call('GET', `/v1/lists/${id}`)).status, 404, 'the list is gone');
});

test('a list that campaigns have yet to queue cannot be deleted (409 naming them) until they are cancelled', async () => {
  const id = await newList('In use');
  assert.is((await call('POST', `/v1/lists/${id}/contacts`, { body: 'email\nann@example.org\n', type: 'text/csv' })).status, 200);
  const campaign = async (name: string, sendAt: number | null): Promise<string> => {
    const campaignId = newId();
    await createCampaign(fx.client, fx.keys, {
      id: campaignId, account: 'acme', name, listId: id, from: 'news@acme.example', fromDomain: 'acme.example', subject: name,
      tracking: { opens: true, clicks: true }, tags: [], throttlePerHour: null, createdAt: Date.now(), sendAt, body: '{}', links: [],
    });
    return campaignId;
  };
  const scheduled = await campaign('Tomorrow', Date.now() + 86_400_000);
  const queueing = await campaign('Half queued', Date.now());
  await fx.client.hset(fx.keys.msgMeta(queueing), 'state', 'sending', 'startedAt', Date.now(), 'cursor', 2);
  const done = await campaign('Queued', Date.now());
  await fx.client.hset(fx.keys.msgMeta(done), 'state', 'completed', 'startedAt', Date.now(), 'enqueued', 1);

  const refused = await call('DELETE', `/v1/lists/${id}`);
  assert.is(refused.status, 409, refused.text);
  assert.is(refused.json.code, 'SLUICE_LIST_IN_USE');
  const named = (refused.json.errors ?? []).map((e) => String((e as { message?: string }).message));
  assert.equal(named.sort(), [`${scheduled} is scheduled`, `${queueing} is sending`].sort(), 'the campaigns that still read the list, not the one done with it');
  assert.ok(String(refused.json['message']).includes(scheduled));
  assert.is((await call('GET', `/v1/lists/${id}`)).status, 200, 'the list is kept');
  assert.is(await fx.client.hlen(fx.keys.listContacts(id)), 1, 'with its contacts');

  for (const c of [scheduled, queueing]) assert.is((await call('POST', `/v1/campaigns/${c}/cancel`)).status, 200);
  assert.is((await call('DELETE', `/v1/lists/${id}`)).status, 200, 'deleted once they are cancelled');
  assert.is((await call('GET', `/v1/lists/${id}`)).status, 404);
});

test("another account's list is a 404 on every route, and nothing changes", async () => {
  const id = await newList('private');
  await call('POST', `/v1/lists/${id}/contacts`, { body: 'email,name\nann@example.com,Ann\n', type: 'text/csv' });
  const other = fx.apiKeys.other;
  const contact = `/v1/lists/${id}/contacts/ann%40example.com`;
  const attempts: [string, string, Parameters<typeof call>[2]][] = [
    ['GET', `/v1/lists/${id}`, {}],
    ['PATCH', `/v1/lists/${id}`, { json: { name: 'mine now' } }],
    ['DELETE', `/v1/lists/${id}`, {}],
    ['POST', `/v1/lists/${id}/contacts`, { body: 'email\nevil@example.com\n', type: 'text/csv' }],
    ['GET', `/v1/lists/${id}/contacts?format=ndjson`, {}],
    ['GET', contact, {}],
    ['PATCH', contact, { json: { status: 'unsubscribed' } }],
    ['DELETE', contact, {}],
  ];
  for (const [method, path, opts] of attempts) {
    const r = await call(method, path, { ...opts, key: other });
    assert.equal([r.status, r.json.code], [404, 'SLUICE_LIST_NOT_FOUND'], `${method} ${path}`);
  }
  const unknown = await call('GET', '/v1/lists/0000000000000000', { key: other });
  assert.equal(unknown.json, (await call('GET', `/v1/lists/${id}`, { key: other })).json, 'the same answer as an unknown id');
  assert.ok(!((await call('GET', '/v1/lists', { key: other })).json['lists'] as { id: string }[]).some((l) => l.id === id));
  const mine = await call('GET', `/v1/lists/${id}`);
  assert.equal([mine.json['name'], mine.json['count']], ['private', 1], 'unchanged for its owner');
  assert.equal((await call('GET', contact)).json['status'], 'subscribed');
  assert.is((await call('GET', '/v1/lists', { key: null })).status, 401);
  assert.equal([(await call('PUT', '/v1/lists')).status], [405]);
});

test('an import declared over lists.maxImportBytes → 413 before anything is written', async () => {
  const id = await newList('too big');
  const body = `email\n${Array.from({ length: 200 }, (_, i) => `big${i}@example.com`).join('\n')}\n`;
  const r = await call('POST', `/v1/lists/${id}/contacts`, { body, type: 'text/csv', base: smallBase });
  assert.equal([r.status, r.json.code], [413, 'SLUICE_LIST_IMPORT_TOO_LARGE']);
  const list = await getList(fx.client, fx.keys, 'acme', id);
  assert.is(list?.count, 0, 'nothing written');
  assert.is(await fx.client.hlen(fx.keys.listEmails(id)), 0);
});

test('a chunked import passing the limit midway → 413 with how far it got; the list is consistent', async () => {
  const id = await newList('midway');
  // 40 rows × 26 bytes = 1,040 bytes per half: the second half passes the 2,000-byte limit.
  const rows = Array.from({ length: 80 }, (_, i) => `mid${String(i).padStart(3, '0')}@example.com,${i}\n`);
  const answer = await new Promise<{ status: number; json: Json }>((resolve, reject) => {
    const req = httpRequest(`${smallBase}/v1/lists/${id}/contacts`, { method: 'POST', headers: { authorization: `Bearer ${fx.apiKeys.acme}`, 'content-type': 'text/csv' } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Json }));
      res.on('error', reject);
    });
    req.on('error', () => undefined); // the server closes the connection after its answer
    req.write('email,n\n');
    let i = 0;
    const next = (): void => {
      if (i >= rows.length || req.destroyed) req.end();
      else req.write(rows[i++] as string, () => setImmediate(next));
    };
    next();
  });
  assert.equal([answer.status, answer.json.code], [413, 'SLUICE_LIST_IMPORT_TOO_LARGE']);
  const result = answer.json['result'] as { imported: number; lines: number; complete: boolean };
  assert.is(result.complete, false);
  assert.ok(result.lines > 1 && result.lines < 81, `stopped at line ${result.lines}`);
  const list = await getList(fx.client, fx.keys, 'acme', id);
  assert.is(list?.count, result.imported, 'the list holds exactly the rows reported');
  assert.is(result.imported, result.lines - 1, 'every row up to the reported line');
  assert.is(await fx.client.hlen(fx.keys.listEmails(id)), result.imported);
});

test('an import with more rows than lists.maxImportRows → 413', async () => {
  const id = await newList('rows');
  const body = `email\n${Array.from({ length: 60 }, (_, i) => `r${i}@x.io`).join('\n')}\n`;
  assert.ok(body.length < SMALL.maxImportBytes);
  const r = await call('POST', `/v1/lists/${id}/contacts`, { body, type: 'text/csv', base: smallBase });
  assert.equal([r.status, r.json.code], [413, 'SLUICE_LIST_IMPORT_TOO_LARGE']);
  assert.match(r.json['message'] as string, /more than 50 rows/);
  assert.is((r.json['result'] as { imported: number }).imported, 50);
  // The 50 rows before the stop are in the list: the import is in the audit log as a whole one is.
  const log = await readAudit(fx.client, fx.keys, { account: 'acme', limit: 5 });
  assert.equal(log.map((e) => [e.action, e.target]).find(([, t]) => t === id), ['list.import', id]);
});

test.run();
