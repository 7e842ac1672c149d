import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { request } from 'undici';
import nodemailer from 'nodemailer';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import { startSluice, type RunningSluice } from '../../src/app/start.js';
import { generateOperatorKey, hashSecret } from '../../src/accounts/secrets.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { makeAccount, type AccountKeys } from '../helpers/sluice.js';

/**
 * No secret reaches a log line: a whole Sluice runs with its logger at 'trace' writing into memory,
 * the test drives SMTP AUTH (right and wrong password), the HTTP API (right, wrong and operator
 * keys), a webhook registration (whose answer carries the signing secret) and a delivery attempt,
 * then looks for every secret in every line — API keys, the SMTP password, the webhook secret, the
 * tracking token key, the VERP key and the operator key — in the forms they could be printed in.
 */
const test = suite('observability/redaction');
let redis: TestRedis;
let app: RunningSluice;
let acct: AccountKeys;
let dir = '';
const lines: string[] = [];
const opKey = generateOperatorKey('ops');
const TOKEN_SECRET = 'tracking-token-secret-0123456789abcdef';
const WRONG_KEY = `sk_acme_${'Z'.repeat(32)}`;

test.before(async () => {
  redis = await startRedis();
  dir = mkdtempSync(join(tmpdir(), 'sluice-redact-'));
  acct = await makeAccount(dir);
  const tokenFile = join(dir, 'token.key');
  writeFileSync(tokenFile, TOKEN_SECRET);
  const config = loadConfig({
    env: {},
    overrides: {
      roles: ['ingress', 'delivery', 'housekeeping'],
      instance: { hostname: 'sluice.test', dataDir: dir },
      redis: { url: redis.url, prefix: redis.fresh().prefix, scheduleShards: 2 },
      admin: { host: '127.0.0.1', port: 0 },
      ingress: { smtp: { host: '127.0.0.1', port: 0, authFailuresBeforeDelay: 50 }, http: { host: '127.0.0.1', port: 0 } },
      delivery: { pollInterval: '50ms', pool: { threads: 1 }, dns: { servers: ['127.0.0.1:9'], timeout: '1s' }, transport: { '*': '127.0.0.1:9' } },
      tracking: { keys: [{ id: 'k1', secretFile: tokenFile, notAfter: null }], signWith: 'k1' },
      retention: { interval: '100ms' },
      operators: [{ id: 'ops', apiKeys: [await hashSecret(opKey)] }],
      accounts: [acct.account],
    },
  });
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      cb();
    },
  });
  app = await startSluice(config, { logger: createLogger('trace', sink) });
});
test.after(async () => {
  await app.stop(2000);
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function http(method: string, path: string, key: string, body?: unknown) {
  const res = await request(`http://127.0.0.1:${app.ports.http}${path}`, {
    method: method as 'GET',
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.body.text();
  return { status: res.statusCode, json: (text ? JSON.parse(text) : {}) as Record<string, any> };
}

async function smtp(pass: string): Promise<unknown> {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port: app.ports.smtp, secure: false, tls: { rejectUnauthorized: false }, auth: { user: 'acme', pass }, logger: false });
  try {
    return await t.sendMail({ from: 'a@acme.example', to: 'r@x.example', subject: 's', text: 't' });
  } catch (err) {
    return err;
  } finally {
    t.close();
  }
}

test('no API key, SMTP password, webhook secret, token key, VERP key or operator key appears in any log line', async () => {
  const ok = await smtp(acct.smtpPass);
  assert.ok(!(ok instanceof Error), `SMTP with the right password is accepted: ${String(ok)}`);
  assert.instance(await smtp('wrong-password-for-acme'), Error);
  assert.is((await http('POST', '/v1/messages', acct.apiKey, { from: 'a@acme.example', to: 'r@x.example', subject: 's', html: '<a href="https://x.example/">x</a>' })).status, 202);
  assert.is((await http('GET', '/v1/suppressions', WRONG_KEY)).status, 401);
  assert.is((await http('GET', '/v1/accounts/acme', opKey)).status, 200);
  const hook = await http('POST', '/v1/webhooks', acct.apiKey, { url: 'https://hooks.acme.example/', events: ['*'] });
  assert.is(hook.status, 201);
  const webhookSecret = hook.json['secret'] as string;
  await new Promise((r) => setTimeout(r, 600)); // delivery attempts (refused port) and retention steps log meanwhile
  const verp = (await app.redis.client.get(app.keys.verpKey())) as string;

  assert.ok(lines.length > 5, `the logger wrote (${lines.length} lines)`);
  assert.ok(lines.some((l) => l.includes('smtp auth failed')), `the failed AUTH was logged: ${lines.join('\n')}`);
  assert.ok(lines.some((l) => l.includes('smtp auth ok')), 'the good AUTH was logged');
  const secrets: Record<string, string[]> = {
    'API key': [acct.apiKey, acct.apiKey.split('_')[2] as string],
    'wrong API key': [WRONG_KEY],
    'operator key': [opKey, opKey.split('_')[2] as string],
    'SMTP password': [acct.smtpPass, Buffer.from(`\0acme\0${acct.smtpPass}`).toString('base64'), Buffer.from(acct.smtpPass).toString('base64')],
    'wrong SMTP password': ['wrong-password-for-acme'],
    'webhook secret': [webhookSecret, webhookSecret.replace(/^whsec_/, '')],
    'token key': [TOKEN_SECRET, Buffer.from(TOKEN_SECRET).toString('base64'), Buffer.from(TOKEN_SECRET).toString('hex')],
    'VERP key': [verp, Buffer.from(verp, 'base64').toString('hex')],
  };
  for (const [what, forms] of Object.entries(secrets)) {
    for (const form of forms) {
      const hit = lines.find((l) => l.includes(form));
      assert.is(hit, undefined, `${what} found in a log line: ${hit?.slice(0, 300)}`);
    }
  }
});

test('the redact paths censor secrets handed to the logger by mistake', () => {
  const out: string[] = [];
  const log = createLogger('info', new Writable({ write: (c: Buffer, _e, cb) => (out.push(c.toString()), cb()) }));
  log.info({ apiKey: 'k1', auth: { password: 'p1' }, req: { headers: { authorization: 'Bearer k2' } }, webhook: { secret: 's1' }, token: 't1', config: { verpKey: 'v1', secretKey: 'w1' } }, 'oops');
  const text = out.join('');
  for (const s of ['k1', 'p1', 'k2', 's1', 't1', 'v1', 'w1']) assert.not.ok(text.includes(`"${s}"`) || text.includes(`Bearer ${s}`), `${s} censored: ${text}`);
  assert.ok(text.includes('[redacted]'));
});

test("a remote server's answer is logged without the recipient's local part; the domain stays", () => {
  const out: string[] = [];
  const log = createLogger('info', new Writable({ write(chunk: Buffer, _e, cb) { out.push(chunk.toString()); cb(); } })).child({ role: 'delivery' });
  log.info({ domain: 'example.com', response: '550 5.1.1 <Bob.Smith+x@mail.example.com>: Recipient address rejected: User unknown' }, 'refused');
  log.warn({ reason: '421 4.7.0 too many messages for ann@example.org' }, 'slow down');
  log.warn({ error: 'STARTTLS refused', port: 25 }, 'no tls');
  const text = out.join('');
  assert.not.match(text, /Bob\.Smith|ann@/i);
  assert.ok(text.includes('<*@mail.example.com>: Recipient address rejected') && text.includes('messages for *@example.org'), text);
  assert.ok(text.includes('"error":"STARTTLS refused"'), 'text without an address is as it was');
});

test.run();
