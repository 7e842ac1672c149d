import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { request } from 'undici';
import type { HttpApi } from '../../src/ingress/http-api.js';
import { createTokenCodec, tokenPath, type TokenPayload } from '../../src/core/tokens.js';
import { NO_ENGAGEMENT } from '../../src/store/engagement.js';
import { startTrackingServer, type TrackingServer } from '../../src/tracking/server.js';
import { ingressFixture, startFixtureApi, type IngressFixture } from './fixture.js';

/** GET /v1/messages/:id shows what the tracking server counted for the message. */
const test = suite('ingress/engagement');
const BROWSER = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/130.0';
const codec = createTokenCodec({ keys: [{ id: 'k1', secret: 'tracking-test-secret-0123456789' }], signWith: 'k1' });
let fx: IngressFixture;
let api: HttpApi;
let tracking: TrackingServer;

test.before(async () => {
  fx = await ingressFixture();
  ({ api } = await startFixtureApi(fx));
  tracking = await startTrackingServer({ redis: fx.client, keys: fx.keys, codec, logger: fx.logger, connect: { url: fx.redis.url } }, { host: '127.0.0.1', port: 0, publicBaseUrl: 'https://t.example.com' });
});
test.after(async () => {
  await tracking.close();
  await api.close();
  await fx.stop();
});

async function call(method: 'GET' | 'POST', path: string, body?: unknown, key = fx.apiKeys.acme) {
  const res = await request(`http://127.0.0.1:${api.port}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.statusCode, json: (await res.body.json()) as Record<string, unknown> };
}

async function hit(path: string, userAgent = BROWSER): Promise<number> {
  const res = await request(`http://127.0.0.1:${tracking.port}${path}`, { headers: { 'user-agent': userAgent } });
  await res.body.dump();
  return res.statusCode;
}

test('GET /v1/messages/:id answers engagement: zero at first, then the opens and clicks recorded', async () => {
  const sent = await call('POST', '/v1/messages', { from: 'news@acme.example', to: ['one@gmail.com', 'two@gmail.com'], subject: 'Hi', text: 'Hi' });
  assert.is(sent.status, 202, JSON.stringify(sent.json));
  const id = sent.json['id'] as string;
  assert.equal((await call('GET', `/v1/messages/${id}`)).json['engagement'], NO_ENGAGEMENT);

  await fx.client.rpush(fx.keys.links(id), 'https://acme.example/a');
  const issuedAt = Math.floor(Date.now() / 1000) - 3600;
  const sign = (p: Pick<TokenPayload, 'kind' | 'idx'> & { link?: number }) => codec.sign({ account: 'acme', msgId: id, issuedAt, ...p } as TokenPayload);
  assert.is(await hit(tokenPath('o', sign({ kind: 'o', idx: 0 }))), 200);
  assert.is(await hit(tokenPath('o', sign({ kind: 'o', idx: 0 }))), 200);
  assert.is(await hit(tokenPath('o', sign({ kind: 'o', idx: 1 })), 'Mozilla/5.0'), 200);
  assert.is(await hit(tokenPath('c', sign({ kind: 'c', idx: 1, link: 0 }))), 302);
  await tracking.idle();

  const st = await call('GET', `/v1/messages/${id}`);
  assert.is(st.status, 200);
  assert.equal(st.json['engagement'], {
    opens: 3, opensHuman: 2, opensUniqueHuman: 1, machineOpens: 1,
    clicks: 1, clicksHuman: 1, clicksUniqueHuman: 1, machineClicks: 0, unsubscribes: 0,
  });
  assert.is((await call('GET', `/v1/messages/${id}`, undefined, fx.apiKeys.other)).status, 404, "another account's message stays hidden, counters too");
});

test.run();
