import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import nodemailer from 'nodemailer';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import { startSluice, type RunningSluice } from '../../src/app/start.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { makeAccount, type AccountKeys } from '../helpers/sluice.js';

/**
 * Failed authentications are throttled per client IP and per user, with the state in Redis: two
 * Sluice instances share one Redis (two "processes"), failures made against one count on the other.
 * Loopback has every 127.0.0.0/8 address, so clients bind distinct source IPs to tell the per-IP
 * limit from the per-user one. The default limits: refused after 20 failures within 15 minutes; here
 * answers are delayed from the 19th failure on (ingress.smtp.authFailuresBeforeDelay = 19).
 */
const test = suite('ingress/auth-throttle');
let redis: TestRedis;
let dir = '';
let a: RunningSluice;
let b: RunningSluice;
let proxied: RunningSluice;
let acme: AccountKeys;
let other: AccountKeys;
const agents: Agent[] = [];
const REFUSE_AFTER = 20;

test.before(async () => {
  redis = await startRedis();
  dir = mkdtempSync(join(tmpdir(), 'sluice-throttle-'));
  acme = await makeAccount(dir, 'acme', 'acme.example', ['ed25519']);
  other = await makeAccount(dir, 'other', 'other.example', ['ed25519']);
  const { prefix } = redis.fresh();
  const start = (trustProxy = false) =>
    startSluice(
      loadConfig({
        env: {},
        overrides: {
          roles: ['ingress'],
          instance: { hostname: 'sluice.test', dataDir: dir },
          redis: { url: redis.url, prefix },
          admin: { host: '127.0.0.1', port: 0 },
          ingress: { smtp: { host: '127.0.0.1', port: 0, authFailuresBeforeDelay: REFUSE_AFTER - 1 }, http: { host: '127.0.0.1', port: 0, trustProxy } },
          accounts: [acme.account, other.account],
        },
      }),
      { logger: createLogger('silent') },
    );
  a = await start();
  b = await start();
  proxied = await start(true);
});
test.after(async () => {
  await Promise.all(agents.map((x) => x.close()));
  await a.stop(1000);
  await b.stop(1000);
  await proxied.stop(1000);
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function http(app: RunningSluice, from: string, key: string, forwardedFor?: string) {
  const agent = new Agent({ localAddress: from });
  agents.push(agent);
  const headers: Record<string, string> = { authorization: `Bearer ${key}`, ...(forwardedFor ? { 'x-forwarded-for': forwardedFor } : {}) };
  const res = await request(`http://127.0.0.1:${app.ports.http}/v1/suppressions`, { headers, dispatcher: agent });
  const body = JSON.parse(await res.body.text()) as { code?: string };
  return { status: res.statusCode, code: body.code };
}

async function smtpAuth(app: RunningSluice, from: string, user: string, pass: string): Promise<{ ok: boolean; code?: number; response?: string }> {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port: app.ports.smtp, localAddress: from, secure: false, tls: { rejectUnauthorized: false }, auth: { user, pass } });
  try {
    await t.verify();
    return { ok: true };
  } catch (err) {
    const e = err as { responseCode?: number; response?: string };
    return { ok: false, code: e.responseCode, response: e.response };
  } finally {
    t.close();
  }
}

test('HTTP: failures on one instance lock the IP on the other, with backoff; the claimed account\'s right key is still served from elsewhere', async () => {
  const wrong = `sk_acme_${'Q'.repeat(32)}`;
  let lastMs = 0;
  for (let i = 1; i <= REFUSE_AFTER; i++) {
    const t0 = Date.now();
    const r = await http(a, '127.0.0.2', wrong);
    lastMs = Date.now() - t0;
    assert.is(r.status, 401, `attempt ${i}`);
  }
  assert.ok(lastMs >= 4000, `the failure that reaches the limit is answered late (${lastMs} ms)`);
  // An API key is 190 bits: nobody guesses one, and refusing the account's right key because
  // someone sent 20 wrong ones naming it would let anyone stop an account's API.
  const served = await http(b, '127.0.0.3', acme.apiKey);
  assert.is(served.status, 200, 'the right key from another IP is served on the other instance');
  assert.is((await http(b, '127.0.0.7', wrong)).status, 401, 'a wrong key from another IP is a wrong key, not a lock-out');
  const ipLocked = await http(b, '127.0.0.2', other.apiKey);
  assert.is(ipLocked.status, 429, 'the IP is locked on the other instance, for every user');
  assert.is((await http(b, '127.0.0.3', other.apiKey)).status, 200, 'another user from another IP is served');
});

test('HTTP behind a proxy (ingress.http.trustProxy): the client is the last X-Forwarded-For hop, not the proxy', async () => {
  // A guesser behind the proxy (socket 127.0.0.6 for everyone), claiming an account that does not exist.
  const wrong = `sk_nobody_${'Q'.repeat(32)}`;
  for (let i = 1; i <= REFUSE_AFTER; i++) assert.is((await http(proxied, '127.0.0.6', wrong, `198.51.100.9, 203.0.113.7`)).status, 401, `attempt ${i}`);
  assert.is((await http(proxied, '127.0.0.6', other.apiKey, '203.0.113.7')).status, 429, 'the guessing client is locked');
  assert.is((await http(proxied, '127.0.0.6', other.apiKey, '198.51.100.9, 203.0.113.8')).status, 200, 'another client through the same proxy is served');
  // Without trustProxy the header means nothing: the socket's address is the client.
  assert.is((await http(a, '127.0.0.6', other.apiKey, '203.0.113.7')).status, 200, 'the proxy itself was never locked');
});

test('SMTP: failures on one instance lock the user and the IP on the other', async () => {
  let lastMs = 0;
  for (let i = 1; i <= REFUSE_AFTER; i++) {
    const t0 = Date.now();
    const r = await smtpAuth(a, '127.0.0.4', 'acme', 'not-the-password');
    lastMs = Date.now() - t0;
    assert.is(r.code, 535, `attempt ${i}: ${r.response}`);
  }
  assert.ok(lastMs >= 4000, `the failure that reaches the limit is answered late (${lastMs} ms)`);
  const userLocked = await smtpAuth(b, '127.0.0.5', 'acme', acme.smtpPass);
  assert.is(userLocked.code, 454, `user locked across instances: ${userLocked.response}`);
  assert.match(userLocked.response ?? '', /4\.7\.0/);
  const ipLocked = await smtpAuth(b, '127.0.0.4', 'other', other.smtpPass);
  assert.is(ipLocked.code, 454, `IP locked across instances: ${ipLocked.response}`);
  assert.ok((await smtpAuth(b, '127.0.0.5', 'other', other.smtpPass)).ok, 'another user from another IP authenticates');
});

test('SMTP: right passwords sent at once (an application\'s connection pool) are all taken, past the limit too; a right one is taken while Redis refuses writes', async () => {
  const burst = await Promise.all(Array.from({ length: 30 }, (_, i) => smtpAuth(i % 2 ? a : b, `127.0.3.${i + 1}`, 'other', other.smtpPass)));
  assert.equal(burst.filter((r) => !r.ok).map((r) => r.response), [], 'none refused');
  const admin = redis.client();
  await admin.config('SET', 'min-replicas-to-write', '1');
  try {
    const r = await smtpAuth(a, '127.0.4.1', 'other', other.smtpPass);
    assert.ok(r.ok, `taken while Redis refuses writes: ${r.response}`);
  } finally {
    await admin.config('SET', 'min-replicas-to-write', '0');
  }
});

test('SMTP: guesses sent at once are counted while they are checked: no more than the limit are answered, the rest are refused', async () => {
  // 40 at once, each from its own address (the per-IP limit does not apply), for one user: checked
  // then counted, every one of them was answered 535, and the user's count went past the limit.
  const burst = await Promise.all(Array.from({ length: 40 }, (_, i) => smtpAuth(i % 2 ? a : b, `127.0.1.${i + 1}`, 'other', 'not-the-password')));
  const wrong = burst.filter((r) => r.code === 535).length;
  const refused = burst.filter((r) => r.code === 454).length;
  assert.is(wrong + refused, 40, JSON.stringify(burst.map((r) => r.code)));
  assert.ok(wrong <= REFUSE_AFTER, `${wrong} passwords checked, at most ${REFUSE_AFTER}`);
  const locked = await smtpAuth(a, '127.0.2.1', 'other', other.smtpPass);
  assert.is(locked.code, 454, `the user is locked: ${locked.response}`);
});

test.run();
