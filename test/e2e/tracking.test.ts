import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { createTokenCodec } from '../../src/core/tokens.js';
import { suppressionOf } from '../../src/store/suppression.js';

/** The tracking role as `sluice start` runs it: keys from files, pixel, one-click unsubscribe. */
const test = suite('e2e/tracking');
let redis: TestRedis;
let s: SluiceFixture;
let dir: string;
let secret: Buffer;

test.before(async () => {
  redis = await startRedis();
  dir = mkdtempSync(join(tmpdir(), 'sluice-trk-'));
  secret = randomBytes(32);
  writeFileSync(join(dir, 'k1.key'), secret);
  s = await startSluiceFixture(redis, {
    roles: ['ingress', 'tracking'],
    tracking: { host: '127.0.0.1', port: 0, publicBaseUrl: 'http://127.0.0.1', keys: [{ id: 'k1', secretFile: join(dir, 'k1.key'), notAfter: null }], signWith: 'k1' },
  });
});

test.after(async () => {
  await s?.stop();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('the pixel answers with the GIF and a one-click POST unsubscribes the recipient for the account', async () => {
  const msg = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'reader@one.test', subject: 's', text: 't' } });
  assert.is(msg.status, 202);
  const codec = createTokenCodec({ keys: [{ id: 'k1', secret }], signWith: 'k1' });
  const base = `http://127.0.0.1:${s.app.ports.tracking}`;
  const issuedAt = Math.floor(Date.now() / 1000) - 3600;

  const open = await request(`${base}/o/${codec.sign({ kind: 'o', account: 'acme', msgId: msg.body.id, idx: 0, issuedAt })}.gif`, { headers: { 'user-agent': 'Mozilla/5.0 (Windows NT 10.0) Thunderbird/128.0' } });
  assert.is(open.statusCode, 200);
  assert.is(open.headers['content-type'], 'image/gif');
  assert.is((await open.body.arrayBuffer()).byteLength, 43);

  const u = codec.sign({ kind: 'u', account: 'acme', msgId: msg.body.id, idx: 0, issuedAt });
  const get = await request(`${base}/u/${u}`);
  assert.is(get.statusCode, 200);
  await get.body.text();
  assert.is(await suppressionOf(s.app.redis.client, s.app.keys, 'acme', 'reader@one.test'), null, 'GET never unsubscribes');

  const post = await request(`${base}/u/${u}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
  assert.is(post.statusCode, 200);
  await post.body.text();
  const entry = await suppressionOf(s.app.redis.client, s.app.keys, 'acme', 'reader@one.test');
  assert.is(entry?.reason, 'unsubscribe');
  assert.is(entry?.list, 'acme', "the account's list only");
});

test('a forged token records nothing and the pixel still answers', async () => {
  const base = `http://127.0.0.1:${s.app.ports.tracking}`;
  const forged = createTokenCodec({ keys: [{ id: 'k1', secret: randomBytes(32) }], signWith: 'k1' }).sign({ kind: 'u', account: 'acme', msgId: '0123456789abcdef', idx: 0, issuedAt: 1 });
  const post = await request(`${base}/u/${forged}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
  assert.ok(post.statusCode >= 400, `refused: ${post.statusCode}`);
  await post.body.text();
  const px = await request(`${base}/o/${forged}.gif`);
  assert.is(px.statusCode, 200);
  await px.body.arrayBuffer();
});

test.run();
