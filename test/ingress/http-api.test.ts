import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { startHttpApi, type HttpApi } from '../../src/ingress/http-api.js';
import { createLogger } from '../../src/observability/logger.js';
import { apiCall, awayFromHourBoundary, BRISK_PER_HOUR, ingressFixture, startFixtureApi, type IngressFixture, briskWindowCount, storedMessages } from './fixture.js';
import { decodeSpecRecord } from '../../src/render/spec-record.js';
import type { MessageSpec } from '../../src/render/protocol.js';

const test = suite('ingress/http-api');
let fx: IngressFixture;
let api: HttpApi;
let base = '';
const MAX_BODY = 64 * 1024;

test.before(async () => {
  fx = await ingressFixture({ maxRecipients: 5, http: { maxBodySize: MAX_BODY, maxBatch: 10 } });
  ({ api, base } = await startFixtureApi(fx));
});
test.after(async () => {
  await api.close();
  await fx.stop();
});

type Json = Record<string, unknown> & { code?: string; errors?: { path: string; message: string }[] };
const call = (method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown, headers: Record<string, string> = {}, key: string | null = fx.apiKeys.acme) =>
  apiCall<Json>(base, method, path, { body, key, headers });

const message = (over: Record<string, unknown> = {}) => ({
  from: 'Acme News <news@acme.example>', to: ['one@gmail.com', { name: 'Two', address: 'two@example.org' }], cc: 'three@gmail.com', bcc: ['secret@gmail.com'],
  subject: 'Hello', text: 'Hi', html: '<p>Hi</p>', headers: { 'X-Campaign': 'c1' }, replyTo: 'help@acme.example',
  attachments: [{ filename: 'a.txt', contentType: 'text/plain', content: Buffer.from('hello').toString('base64') }],
  tags: ['welcome'], metadata: { userId: 42, plan: 'pro' }, ...over,
});

test('POST /v1/messages → 202 after persisting; spec stored, bcc enqueued but not in the spec', async () => {
  const r = await call('POST', '/v1/messages', message());
  assert.is(r.status, 202, JSON.stringify(r.json));
  const id = r.json['id'] as string;
  assert.equal(r.json['recipients'], ['one@gmail.com', 'two@example.org', 'three@gmail.com', 'secret@gmail.com']);
  const meta = await fx.client.hgetall(fx.keys.msgMeta(id));
  assert.is(meta['kind'], 'spec');
  assert.is(meta['source'], 'http');
  assert.equal(JSON.parse(meta['metadata'] as string), { userId: 42, plan: 'pro' });
  const stored = (await fx.client.getBuffer(fx.keys.msgBody(id))) as Buffer;
  // The html is kept raw after the JSON header (render/spec-record.ts).
  assert.is(stored.subarray(0, 3).toString(), 'S2 ');
  const spec = decodeSpecRecord(stored) as MessageSpec & { bcc?: unknown };
  assert.is(spec.html, '<p>Hi</p>');
  assert.equal(spec.from, { name: 'Acme News', address: 'news@acme.example' });
  assert.equal(spec.to, [{ address: 'one@gmail.com' }, { name: 'Two', address: 'two@example.org' }]);
  assert.equal(spec.cc, [{ address: 'three@gmail.com' }]);
  assert.equal(spec.replyTo, [{ address: 'help@acme.example' }]);
  assert.is(spec.bcc, undefined);
  assert.not.match(JSON.stringify(spec), 'secret@gmail.com');
  assert.is(spec.messageId, `<${id}@sluice.test>`);
  assert.equal(spec.attachments, [{ filename: 'a.txt', contentType: 'text/plain', contentBase64: 'aGVsbG8=' }]);
  assert.equal(spec.headers, { 'X-Campaign': 'c1' });
  assert.equal(await fx.client.zrange(fx.keys.ready('gmail.com'), 0, -1), [`${id}:0:0`, `${id}:2:0`, `${id}:3:0`]);

  const st = await call('GET', `/v1/messages/${id}`);
  assert.is(st.status, 200);
  assert.equal((st.json['recipients'] as { address: string; state: string }[]).map((x) => [x.address, x.state]), [
    ['one@gmail.com', 'queued'], ['two@example.org', 'queued'], ['three@gmail.com', 'queued'], ['secret@gmail.com', 'queued'],
  ]);
  const foreign = await call('GET', `/v1/messages/${id}`, undefined, {}, fx.apiKeys.other);
  assert.is(foreign.status, 404, "another account's message is not found");
});

test('invalid fields → 400 naming the path of every one', async () => {
  const r = await call('POST', '/v1/messages', {
    from: 'not an address', to: ['ok@gmail.com', 'bad@@x', 'also bad'], subject: 'a\r\nBcc: x@y.z',
    headers: { From: 'x@evil.example', 'X-Ok': 'fine', 'X-Inject': 'a\r\nb', 'bad name': 'v' },
    attachments: [{ filename: 'f', content: 'not base64!' }], tags: ['ok', 'bad tag'], metadata: { nested: { a: 1 } }, bc: 'typo@gmail.com',
  });
  assert.is(r.status, 400);
  assert.is(r.json.code, 'SLUICE_INGRESS_BAD_REQUEST');
  const paths = (r.json.errors ?? []).map((e) => e.path).sort();
  assert.equal(paths, ['attachments.0.content', 'bc', 'from', 'headers.From', 'headers.X-Inject', 'headers.bad name', 'metadata.nested', 'subject', 'tags.1', 'text', 'to.1', 'to.2'].sort());
});

test("an attachment of type message/* or multipart/*, a Content-ID Sluice would have to encode, and a Resent-* or Sender header → 400 naming each", async () => {
  const b64 = (t: string) => Buffer.from(t).toString('base64');
  const r = await call('POST', '/v1/messages', message({
    to: 'someone@gmail.com',
    headers: { 'Resent-From': 'ceo@bank.example', 'Resent-Sender': 'ceo@bank.example', Sender: 'ceo@bank.example', 'X-Fine': 'yes' },
    attachments: [
      // Raw bytes a message/rfc822 part would carry as they are: a bare CR, "\r.\r", a NUL, a 1,500-character line.
      { filename: 'fwd.eml', contentType: 'message/rfc822', content: b64(`Subject: inner\r\n\r\nA\r.\rB\nC\0D\r\n${'L'.repeat(1500)}`) },
      { filename: 'parts', contentType: 'multipart/mixed', content: b64('x') },
      { filename: 'img.png', contentType: 'image/png', content: b64('png'), cid: 'abc\u0001é' },
      { filename: 'ok.eml', contentType: 'application/octet-stream', content: b64('Subject: inner\r\n\r\nfine\r\n'), cid: 'logo.1@acme' },
    ],
  }));
  assert.is(r.status, 400, JSON.stringify(r.json));
  const paths = (r.json.errors ?? []).map((e) => e.path).sort();
  assert.equal(paths, ['attachments.0.contentType', 'attachments.1.contentType', 'attachments.2.cid', 'headers.Resent-From', 'headers.Resent-Sender', 'headers.Sender'].sort());
  assert.match(JSON.stringify(r.json.errors), /application\/octet-stream/, 'the message says what to do instead');
});

test('a bad address is quoted as sent in the 400, whatever the address parser made of it', async () => {
  const r = await call('POST', '/v1/messages', message({ from: 'nope', to: ['Name <bad@@x>', { address: 'obj-nope' }], cc: undefined, bcc: undefined, replyTo: undefined }));
  assert.is(r.status, 400);
  const said = Object.fromEntries((r.json.errors ?? []).map((e) => [e.path, e.message]));
  assert.equal(said, {
    from: 'not a valid address: "nope"',
    'to.0': 'not a valid address: "Name <bad@@x>"',
    'to.1': 'not a valid address: "obj-nope"',
  });
});

test('a lone surrogate escaped anywhere in the JSON ("\\ud800") → 400 SLUICE_INGRESS_BAD_JSON, nothing stored; a surrogate pair is a character', async () => {
  // A lone surrogate has no UTF-8 form: accepted, the subject was stored with U+FFFD in its place,
  // and an address was answered as sent but stored as another.
  const before = await storedMessages(fx);
  for (const over of [{ subject: 'Hi \ud800' }, { to: ['a\udc00b@gmail.com'] }, { headers: { 'X-Note': 'x\udbff' } }, { metadata: { ['k\udc00']: 1 } }]) {
    const r = await call('POST', '/v1/messages', message(over));
    assert.is(r.status, 400, r.text);
    assert.is(r.json.code, 'SLUICE_INGRESS_BAD_JSON', JSON.stringify(over));
    assert.match(String(r.json['message']), 'lone surrogate');
  }
  assert.is(await storedMessages(fx), before);
  const ok = await call('POST', '/v1/messages', message({ subject: 'Hi \ud83d\ude00', to: ['smile\ud83d\ude00@gmail.com'], cc: undefined, bcc: undefined }));
  assert.is(ok.status, 202, ok.text);
  assert.equal(ok.json['recipients'], ['smile\ud83d\ude00@gmail.com']);
});

test('a name given twice in one object → 400 SLUICE_INGRESS_BAD_JSON naming it, nothing stored (JSON.parse kept the last: mail to the second "to" only); one name in different objects is fine', async () => {
  const before = await storedMessages(fx);
  const one = '{"from":"a@acme.example","to":"first@gmail.com","subject":"s","text":"t","to":"second@gmail.com"}';
  const nested = '{"messages":[{"from":"a@acme.example","to":"b@gmail.com","subject":"s","text":"t","metadata":{"k":1,"k":2}}]}';
  const escaped = '{"from":"a@acme.example","to":"first@gmail.com","subject":"s","text":"t","t\\u006f":"second@gmail.com"}';
  for (const [path, body, name] of [['/v1/messages', one, 'to'], ['/v1/messages/batch', nested, 'k'], ['/v1/messages', escaped, 'to']] as const) {
    const r = await call('POST', path, body);
    assert.equal([r.status, r.json.code], [400, 'SLUICE_INGRESS_BAD_JSON'], r.text);
    assert.match(String(r.json['message']), `the name "${name}" is given twice in one object`);
  }
  // __proto__ would be dropped from metadata or headers in silence (zod builds the record by assignment).
  for (const body of ['{"from":"a@acme.example","to":"b@gmail.com","subject":"s","text":"t","metadata":{"__proto__":"x","ok":1}}', '{"from":"a@acme.example","to":"b@gmail.com","subject":"s","text":"t","headers":{"__pr\\u006fto__":"x"}}']) {
    const r = await call('POST', '/v1/messages', body);
    assert.equal([r.status, r.json.code], [400, 'SLUICE_INGRESS_BAD_JSON'], r.text);
    assert.match(String(r.json['message']), 'the name "__proto__" is not accepted');
  }
  assert.is(await storedMessages(fx), before);
  const fine = await call('POST', '/v1/messages/batch', '{"messages":[{"from":"a@acme.example","to":"d1@gmail.com","subject":"s \\" \\\\","text":"t","metadata":{"to":"x"}},{"from":"a@acme.example","to":"d2@gmail.com","subject":"s","text":"t"}]}');
  assert.equal([fine.status, fine.json['accepted']], [202, 2], fine.text);
});

test('bad JSON → 400; wrong media type → 415; wrong method → 405; unknown route and id → 404', async () => {
  const bad = await call('POST', '/v1/messages', '{"from": ');
  assert.is(bad.status, 400);
  assert.is(bad.json.code, 'SLUICE_INGRESS_BAD_JSON');
  const media = await call('POST', '/v1/messages', undefined, { 'content-type': 'text/plain' });
  assert.is(media.status, 415);
  const method = await call('PUT', '/v1/messages');
  assert.is(method.status, 405);
  assert.is(method.headers['allow'], 'POST');
  assert.is((await call('GET', '/v2/nothing')).status, 404);
  assert.is((await call('GET', '/v1/messages/0000000000000000')).status, 404);
  assert.is((await call('GET', '/v1/messages/..%2F..')).status, 404);
});

test('missing key → 401 with WWW-Authenticate; bad key → 401', async () => {
  const none = await call('POST', '/v1/messages', message(), {}, null);
  assert.is(none.status, 401);
  assert.is(none.json.code, 'SLUICE_AUTH_REQUIRED');
  assert.is(none.headers['www-authenticate'], 'Bearer');
  const wrong = await call('POST', '/v1/messages', message(), {}, fx.apiKeys.acme.slice(0, -2) + 'zz');
  assert.is(wrong.status, 401);
  assert.is(wrong.json.code, 'SLUICE_AUTH_FAILED');
});

test('From not owned → 403; too many recipients → 400', async () => {
  const r = await call('POST', '/v1/messages', message({ from: 'boss@other.example' }));
  assert.is(r.status, 403);
  assert.is(r.json.code, 'SLUICE_INGRESS_FROM_NOT_OWNED');
  const many = await call('POST', '/v1/messages', message({ to: ['a@gmail.com', 'b@gmail.com', 'c@gmail.com', 'd@gmail.com'], cc: [], bcc: ['e@gmail.com', 'f@gmail.com'] }));
  assert.is(many.status, 400);
  assert.is(many.json.code, 'SLUICE_INGRESS_TOO_MANY_RECIPIENTS');
});

test('quota exceeded → 429 with Retry-After', async () => {
  const m = { from: 'a@tiny.example', to: ['a@gmail.com', 'b@gmail.com'], subject: 's', text: 't' };
  assert.is((await call('POST', '/v1/messages', m, {}, fx.apiKeys.tiny)).status, 202);
  const r = await call('POST', '/v1/messages', m, {}, fx.apiKeys.tiny);
  assert.is(r.status, 429);
  assert.is(r.json.code, 'SLUICE_INGRESS_QUOTA_EXCEEDED');
  assert.ok(Number(r.headers['retry-after']) >= 1);
});

test('account rate limit used up → 429 SLUICE_INGRESS_RATE_LIMITED with its reason and Retry-After; the refused message is not stored and counts nothing', async () => {
  await awayFromHourBoundary();
  const metas = () => storedMessages(fx);
  const windowCount = () => briskWindowCount(fx);
  const brisk = (to: string[], bcc: string[] = []) => call('POST', '/v1/messages', { from: 'a@brisk.example', to, bcc, subject: 's', text: 't' }, {}, fx.apiKeys.brisk);
  assert.is(BRISK_PER_HOUR, 3);

  // Recipients count, bcc included: 2 of the 3 per hour.
  const first = await brisk(['r1@rate.example'], ['r2@rate.example']);
  assert.is(first.status, 202, JSON.stringify(first.json));
  assert.is(await windowCount(), 2);

  // Two more would make 4 > 3: refused whole, although one recipient is still free.
  const beforeMetas = await metas();
  const refused = await brisk(['r3@rate.example', 'r4@rate.example']);
  assert.is(refused.status, 429, JSON.stringify(refused.json));
  assert.equal(refused.json, { code: 'SLUICE_INGRESS_RATE_LIMITED', message: 'Sending rate limit of 3 recipients per hour reached, slow down', errors: [] });
  const retryAfter = Number(refused.headers['retry-after']);
  assert.ok(retryAfter >= 1 && retryAfter <= 3600, `Retry-After is the rest of the hour: ${refused.headers['retry-after']}`);
  assert.is(await metas(), beforeMetas, 'no message stored for the refused request');
  assert.equal(await fx.client.zrange(fx.keys.ready('rate.example'), 0, -1), (first.json['recipients'] as string[]).map((_, i) => `${first.json['id']}:${i}:0`), 'only the first message queued');
  assert.is(await windowCount(), 2, 'the refused recipients were given back');

  // So the one recipient left in the window is still there; after it, even one more is refused.
  const last = await brisk(['r5@rate.example']);
  assert.is(last.status, 202, JSON.stringify(last.json));
  assert.is(await windowCount(), 3);
  const over = await brisk(['r6@rate.example']);
  assert.is(over.status, 429);
  assert.is(over.json.code, 'SLUICE_INGRESS_RATE_LIMITED');
  assert.is(await metas(), beforeMetas + 1);
  assert.is(await fx.client.zcard(fx.keys.ready('rate.example')), 3);

  // The limit is the account's: another account sends on.
  assert.is((await call('POST', '/v1/messages', { from: 'a@acme.example', to: 'r7@rate.example', subject: 's', text: 't' })).status, 202);
});

test('oversized body → 413 without reading it all', async () => {
  const r = await call('POST', '/v1/messages', message({ text: 'x'.repeat(MAX_BODY * 3) }));
  assert.is(r.status, 413);
  assert.is(r.json.code, 'SLUICE_INGRESS_TOO_LARGE');
});

test('Idempotency-Key: a retry replays the first answer, one message only; another body → 422', async () => {
  const { prefix } = { prefix: fx.keys.prefix };
  const countBefore = (await fx.client.keys(`${prefix}{m:*}:meta`)).length;
  const m = message({ to: 'idem@gmail.com', cc: [], bcc: [] });
  const first = await call('POST', '/v1/messages', m, { 'idempotency-key': 'order-1' });
  const second = await call('POST', '/v1/messages', m, { 'idempotency-key': 'order-1' });
  assert.is(first.status, 202);
  assert.is(second.status, 202);
  assert.equal(second.json, first.json);
  assert.is(second.headers['idempotent-replayed'], 'true');
  assert.is((await fx.client.keys(`${prefix}{m:*}:meta`)).length, countBefore + 1);
  const other = await call('POST', '/v1/messages', { ...m, subject: 'different' }, { 'idempotency-key': 'order-1' });
  assert.is(other.status, 422);
  // the same key of another account is independent
  const foreign = await call('POST', '/v1/messages', { ...m, from: 'x@other.example' }, { 'idempotency-key': 'order-1' }, fx.apiKeys.other);
  assert.is(foreign.status, 202);
});

test('Idempotency-Key with a body that arrives in pieces: a retry cut otherwise replays the answer; one byte different → 422; a bad key → 400', async () => {
  const countBefore = await storedMessages(fx);
  const text = JSON.stringify(message({ to: 'pieces@gmail.com', cc: [], bcc: [], attachments: [], text: 'x'.repeat(40_000) }));
  const send = async (body: string, pieces: number, key: string) => {
    const size = Math.ceil(body.length / pieces);
    // Each piece after a turn of the event loop, so the server reads them as separate chunks.
    async function* sliced() {
      for (let at = 0; at < body.length; at += size) {
        yield Buffer.from(body.slice(at, at + size));
        await new Promise((r) => setImmediate(r));
      }
    }
    const res = await request(`${base}/v1/messages`, { method: 'POST', headers: { authorization: `Bearer ${fx.apiKeys.acme}`, 'content-type': 'application/json', 'idempotency-key': key }, body: Readable.from(sliced()) });
    const answer = await res.body.text();
    return { status: res.statusCode, replayed: res.headers['idempotent-replayed'], json: JSON.parse(answer) as Json };
  };
  const first = await send(text, 7, 'pieces-1');
  assert.is(first.status, 202, JSON.stringify(first.json));
  const retry = await send(text, 3, 'pieces-1');
  assert.equal([retry.status, retry.replayed, retry.json], [202, 'true', first.json]);
  const whole = await call('POST', '/v1/messages', JSON.parse(text), { 'idempotency-key': 'pieces-1' });
  assert.equal([whole.status, whole.headers['idempotent-replayed'], whole.json], [202, 'true', first.json], 'sent whole: the same request');
  const other = await send(text.replace('xxx', 'xyx'), 7, 'pieces-1');
  assert.equal([other.status, other.json.code], [422, 'SLUICE_INGRESS_IDEMPOTENCY_MISMATCH']);
  assert.is(await storedMessages(fx), countBefore + 1, 'one message');
  // Refused before the body is read (a short one: a long one still being sent would meet the closed connection).
  const bad = await call('POST', '/v1/messages', message(), { 'idempotency-key': 'k'.repeat(256) });
  assert.equal([bad.status, bad.json.code, bad.json.errors?.map((e) => e.path)], [400, 'SLUICE_INGRESS_BAD_REQUEST', ['Idempotency-Key']]);
});

test('Idempotency-Key: concurrent duplicates → exactly one message; the rest 409 or replay', async () => {
  const prefix = fx.keys.prefix;
  const countBefore = (await fx.client.keys(`${prefix}{m:*}:meta`)).length;
  const m = message({ to: 'race@gmail.com', cc: [], bcc: [] });
  const answers = await Promise.all(Array.from({ length: 6 }, () => call('POST', '/v1/messages', m, { 'idempotency-key': 'race-1' })));
  const statuses = answers.map((a) => a.status);
  assert.ok(statuses.every((s) => s === 202 || s === 409), statuses.join(','));
  const ids = new Set(answers.filter((a) => a.status === 202).map((a) => a.json['id']));
  assert.is(ids.size, 1);
  assert.is((await fx.client.keys(`${prefix}{m:*}:meta`)).length, countBefore + 1);
});

test('batch: per-message results, accepted and refused side by side', async () => {
  const good = { from: 'a@acme.example', to: 'b1@gmail.com', subject: 's', text: 't' };
  const r = await call('POST', '/v1/messages/batch', { messages: [good, { ...good, to: 'nope' }, { ...good, from: 'x@other.example' }, { ...good, to: 'b2@gmail.com' }] });
  assert.is(r.status, 202);
  const results = r.json['results'] as ({ id?: string; error?: { code: string; errors: { path: string }[] } })[];
  assert.is(results.length, 4);
  assert.ok(results[0]?.id && results[3]?.id);
  assert.is(results[1]?.error?.code, 'SLUICE_INGRESS_BAD_REQUEST');
  assert.equal(results[1]?.error?.errors.map((e) => e.path), ['to.0']);
  assert.is(results[2]?.error?.code, 'SLUICE_INGRESS_FROM_NOT_OWNED');
  assert.is(r.json['accepted'], 2);
  const tooMany = await call('POST', '/v1/messages/batch', { messages: Array.from({ length: 11 }, () => good) });
  assert.is(tooMany.status, 400);
  assert.equal(tooMany.json.errors?.map((e) => e.path), ['messages']);
});

test('garbage on the socket gets an answer; the API keeps serving', async () => {
  const reply = await new Promise<string>((resolve) => {
    const s = connect(api.port, '127.0.0.1');
    let buf = '';
    s.on('data', (d) => (buf += d.toString()));
    s.on('close', () => resolve(buf));
    s.on('error', () => resolve(buf));
    s.write('\x00\x01GARBAGE /\r\n\r\n');
  });
  assert.match(reply, /^HTTP\/1\.1 400/);
  const r = await call('POST', '/v1/messages', message({ to: 'still@gmail.com', cc: [], bcc: [] }));
  assert.is(r.status, 202);
});

test('one client over ingress.http.maxClientsPerIp gets 503 SLUICE_TOO_MANY_CONNECTIONS and nothing it sent is accepted', async () => {
  // Loopback is exempt by default; here it is counted like any client.
  const limited = await ingressFixture({ http: { maxClientsPerIp: 1, clientLimitExempt: [] } });
  const { api: lapi } = await startFixtureApi(limited);
  try {
    const held = connect(lapi.port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => held.once('connect', resolve).once('error', reject));
    const body = JSON.stringify(message({ to: 'held@gmail.com', cc: [], bcc: [], attachments: [] }));
    const post = `POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${limited.apiKeys.acme}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
    const exchange = () => new Promise<string>((resolve) => {
      const s = connect(lapi.port, '127.0.0.1', () => s.write(post));
      let buf = '';
      s.on('data', (d) => (buf += d.toString()));
      s.on('close', () => resolve(buf));
      s.on('error', () => resolve(buf));
    });
    const refused = await exchange();
    assert.match(refused, /^HTTP\/1\.1 503 /);
    assert.equal(JSON.parse(refused.slice(refused.indexOf('\r\n\r\n') + 4)), { code: 'SLUICE_TOO_MANY_CONNECTIONS', message: 'Too many connections from your address, try again later', errors: [] });
    assert.is(await limited.client.zcard(limited.keys.ready('gmail.com')), 0, 'nothing accepted');

    await new Promise<void>((resolve) => { held.once('close', () => resolve()); held.end(); });
    const served = await exchange();
    assert.match(served, /^HTTP\/1\.1 202 /);
    assert.is(await limited.client.zcard(limited.keys.ready('gmail.com')), 1);
  } finally {
    await lapi.close();
    await limited.stop();
  }
});

test('Redis refusing writes (at maxmemory): 503 SLUICE_REDIS_UNAVAILABLE with Retry-After, nothing stored, and the failure is logged without the message', async () => {
  const logged: { level: string; msg: string; err?: { message?: string } }[] = [];
  const logger = createLogger('info', { write: (line: string) => void logged.push(JSON.parse(line) as (typeof logged)[number]) });
  const watched = await startHttpApi({ redis: fx.client, keys: fx.keys, config: fx.config, registry: fx.registry, logger }, { host: '127.0.0.1', port: 0 });
  const before = await storedMessages(fx);
  await fx.client.config('SET', 'maxmemory', '1');
  try {
    const r = await apiCall<Json>(`http://127.0.0.1:${watched.port}`, 'POST', '/v1/messages', { key: fx.apiKeys.acme, body: message({ to: 'oom@gmail.com', cc: [], bcc: [] }) });
    assert.equal([r.status, r.json.code, r.headers['retry-after']], [503, 'SLUICE_REDIS_UNAVAILABLE', '5'], r.text);
  } finally {
    await fx.client.config('SET', 'maxmemory', '0');
    await watched.close();
  }
  assert.is(await storedMessages(fx), before);
  // The client learns only the code: the reason must be in the log for the operator.
  const errors = logged.filter((l) => l.level === 'error');
  assert.equal(errors.map((l) => l.msg), ['http request failed']);
  assert.match(String(errors[0]?.err?.message), /OOM|EXECABORT/);
  // With Redis's answer, and without the commands' arguments: those are the recipients and the body.
  const line = JSON.stringify(errors[0]);
  assert.match(line, /OOM command not allowed/);
  assert.not.match(line, 'oom@gmail.com');
  assert.not.match(line, 'X-Campaign');
});

test('a batch refused by Redis (at maxmemory): each message SLUICE_REDIS_UNAVAILABLE, and one error line says why, without the messages', async () => {
  const logged: { level: string; msg: string; messages?: number; err?: { message?: string } }[] = [];
  const logger = createLogger('info', { write: (line: string) => void logged.push(JSON.parse(line) as (typeof logged)[number]) });
  const watched = await startHttpApi({ redis: fx.client, keys: fx.keys, config: fx.config, registry: fx.registry, logger }, { host: '127.0.0.1', port: 0 });
  const before = await storedMessages(fx);
  const m = (to: string) => message({ to, cc: [], bcc: [] });
  await fx.client.config('SET', 'maxmemory', '1');
  try {
    const r = await apiCall<Json>(`http://127.0.0.1:${watched.port}`, 'POST', '/v1/messages/batch', { key: fx.apiKeys.acme, body: { messages: [m('oom-b1@gmail.com'), m('oom-b2@gmail.com'), m('oom-b3@gmail.com')] } });
    assert.is(r.status, 202, r.text);
    const results = r.json['results'] as { error?: { code: string } }[];
    assert.equal(results.map((x) => x.error?.code), ['SLUICE_REDIS_UNAVAILABLE', 'SLUICE_REDIS_UNAVAILABLE', 'SLUICE_REDIS_UNAVAILABLE']);
  } finally {
    await fx.client.config('SET', 'maxmemory', '0');
    await watched.close();
  }
  assert.is(await storedMessages(fx), before);
  const errors = logged.filter((l) => l.level === 'error');
  assert.equal(errors.map((l) => [l.msg, l.messages]), [['batch messages failed: Redis unavailable', 3]]);
  const line = JSON.stringify(errors[0]);
  assert.match(line, /OOM command not allowed/);
  assert.not.match(line, 'oom-b1@gmail.com');
});

test('with an Idempotency-Key, Redis refusing writes is 503 SLUICE_REDIS_UNAVAILABLE too (not 500), and the key is not held: the retry goes through', async () => {
  const m = message({ to: 'oom-idem@gmail.com', cc: [], bcc: [] });
  const headers = { 'idempotency-key': 'oom-1' };
  await fx.client.config('SET', 'maxmemory', '1');
  try {
    const r = await call('POST', '/v1/messages', m, headers);
    assert.equal([r.status, r.json.code, r.headers['retry-after']], [503, 'SLUICE_REDIS_UNAVAILABLE', '5'], r.text);
  } finally {
    await fx.client.config('SET', 'maxmemory', '0');
  }
  const retry = await call('POST', '/v1/messages', m, headers);
  assert.equal([retry.status, retry.headers['idempotent-replayed']], [202, undefined], retry.text);
});

test('Redis refusing writes: a wrong API key is 503 SLUICE_REDIS_UNAVAILABLE with Retry-After (its failure cannot be counted), the right one still reads', async () => {
  const sent = await call('POST', '/v1/messages', message({ to: 'oom-auth@gmail.com', cc: [], bcc: [] }));
  assert.is(sent.status, 202, sent.text);
  await fx.client.config('SET', 'maxmemory', '1');
  try {
    const wrong = await call('GET', '/v1/messages/x', undefined, {}, `${fx.apiKeys.acme.slice(0, -4)}AAAA`);
    assert.equal([wrong.status, wrong.json.code, wrong.headers['retry-after']], [503, 'SLUICE_REDIS_UNAVAILABLE', '5'], wrong.text);
    const read = await call('GET', `/v1/messages/${sent.json['id'] as string}`);
    assert.is(read.status, 200, read.text);
  } finally {
    await fx.client.config('SET', 'maxmemory', '0');
  }
  const wrong = await call('GET', '/v1/messages/x', undefined, {}, `${fx.apiKeys.acme.slice(0, -4)}AAAA`);
  assert.is(wrong.status, 401, 'a wrong key again once Redis takes writes');
});

test('a message with more recipients than the account\'s rate limit allows in a window is 400 SLUICE_INGRESS_TOO_MANY_RECIPIENTS (for good), not 429 to retry', async () => {
  const before = await briskWindowCount(fx).catch(() => 0);
  const r = await call('POST', '/v1/messages', { from: 'a@brisk.example', to: ['w1@rate.example', 'w2@rate.example'], bcc: ['w3@rate.example', 'w4@rate.example'], subject: 's', text: 't' }, {}, fx.apiKeys.brisk);
  assert.equal([r.status, r.json.code, r.headers['retry-after']], [400, 'SLUICE_INGRESS_TOO_MANY_RECIPIENTS', undefined], r.text);
  assert.match(String(r.json['message']), `at most ${BRISK_PER_HOUR} recipients per message (its rate limit of ${BRISK_PER_HOUR} per hour)`);
  assert.is(await briskWindowCount(fx).catch(() => 0), before, 'nothing counted');
});

test.run();
