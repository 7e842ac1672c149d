/**
 * GET /v1/domains and /v1/domains/:domain over HTTP, with the DNS answers of a real server on
 * loopback (helpers/dns-stub.ts, through delivery.dns.servers): an account sees the records to
 * publish for its own keys only, the check turns from fail to ok once the record is published and
 * its result has aged (kept a minute: polling asks DNS once), and another account's domain is a 404.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { AccountRegistry } from '../../src/accounts/registry.js';
import { generateApiKey, hashSecret } from '../../src/accounts/secrets.js';
import { loadConfig } from '../../src/config/load.js';
import { dnsRecord } from '../../src/core/dkim-record.js';
import { startHttpApi, type HttpApi } from '../../src/ingress/http-api.js';
import { CACHE_MS } from '../../src/ingress/domain-routes.js';
import { createLogger } from '../../src/observability/logger.js';
import { startDnsStub, type DnsStub } from '../helpers/dns-stub.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { apiCall } from './fixture.js';

const test = suite('ingress/domain-routes');
let redis: TestRedis;
let dns: DnsStub;
let api: HttpApi;
let dir: string;
let base = '';
let clock = Date.UTC(2026, 10, 29, 12);
const keysOf = { acme: generateApiKey('acme'), other: generateApiKey('other') };
const pub: Record<string, string> = {};

interface Check { check: string; name: string; status: string; selector?: string }

test.before(async () => {
  redis = await startRedis();
  dir = mkdtempSync(join(tmpdir(), 'sluice-domain-routes-'));
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  const ed = generateKeyPairSync('ed25519', { publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  writeFileSync(join(dir, 'rsa.pem'), rsa.privateKey, { mode: 0o600 });
  writeFileSync(join(dir, 'ed.pem'), ed.privateKey, { mode: 0o600 });
  pub['rsa'] = rsa.publicKey;
  pub['ed'] = ed.publicKey;
  dns = await startDnsStub({
    'e1._domainkey.acme.example': { TXT: [dnsRecord(ed.publicKey, 'ed25519')] },
    '_dmarc.acme.example': { TXT: ['v=DMARC1; p=quarantine'] },
    'bounce.sluice.example': { MX: [{ preference: 10, exchange: 'mx.sluice.example' }], TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
  });
  const noRate = { perSecond: null, perMinute: null, perHour: null };
  const { prefix, keys } = redis.fresh();
  const config = loadConfig({
    env: {},
    overrides: {
      instance: { hostname: 'sluice.test', dataDir: dir },
      redis: { url: redis.url, prefix },
      delivery: { bounceDomain: 'bounce.sluice.example', dns: { servers: [dns.server], timeout: '3s' } },
      accounts: [
        {
          id: 'acme', domains: [{ domain: 'Acme.Example', dkim: [{ selector: 's1', algorithm: 'rsa', keyFile: join(dir, 'rsa.pem') }, { selector: 'e1', algorithm: 'ed25519', keyFile: join(dir, 'ed.pem') }] }],
          apiKeys: [await hashSecret(keysOf.acme)], smtpUsers: [], dailyQuota: null, rateLimit: noRate,
        },
        { id: 'other', domains: [{ domain: 'other.example', dkim: [] }], apiKeys: [await hashSecret(keysOf.other)], smtpUsers: [], dailyQuota: null, rateLimit: noRate },
      ],
    },
  });
  const client = redis.client();
  await client.ping();
  api = await startHttpApi({ redis: client, keys, config, registry: new AccountRegistry(config.accounts), logger: createLogger('silent'), now: () => clock }, { host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${api.port}`;
});
test.after(async () => {
  await api.close();
  await dns.close();
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

const call = (method: 'GET' | 'POST', path: string, key: string | null = keysOf.acme) => apiCall<Record<string, unknown>>(base, method, path, { key });
const statuses = (checks: unknown): string[] => (checks as Check[]).map((c) => `${c.check}${c.selector ? ` ${c.selector}` : ''} ${c.status}`);

test("GET /v1/domains: the account's domains, each key's record to publish (its public half), nothing of another account's", async () => {
  const r = await call('GET', '/v1/domains');
  assert.is(r.status, 200, r.text);
  assert.equal(r.json, {
    domains: [{
      domain: 'acme.example',
      returnPath: null,
      dkim: [
        { selector: 's1', algorithm: 'rsa', name: 's1._domainkey.acme.example', record: dnsRecord(pub['rsa'] as string, 'rsa') },
        { selector: 'e1', algorithm: 'ed25519', name: 'e1._domainkey.acme.example', record: dnsRecord(pub['ed'] as string, 'ed25519') },
      ],
    }],
    bounceDomain: 'bounce.sluice.example',
  });
  assert.not.match(r.text, 'PRIVATE');
  const other = await call('GET', '/v1/domains', keysOf.other);
  assert.equal(other.json['domains'], [{ domain: 'other.example', dkim: [], returnPath: null }]);
});

test('GET /v1/domains/:domain: the checks, kept a minute; a record published shows once the result has aged', async () => {
  const first = await call('GET', '/v1/domains/ACME.example');
  assert.is(first.status, 200, first.text);
  assert.is(first.json['domain'], 'acme.example');
  assert.equal(statuses(first.json['checks']), ['dkim s1 fail', 'dkim e1 ok', 'dmarc ok']);
  assert.equal(statuses((first.json['bounceDomain'] as { checks: unknown }).checks), ['mx ok', 'spf ok']);
  assert.equal([first.json['failed'], first.json['warnings']], [1, 0]);
  assert.is(first.json['checkedAt'], new Date(clock).toISOString());

  dns.set('s1._domainkey.acme.example', { TXT: [dnsRecord(pub['rsa'] as string, 'rsa')] });
  clock += CACHE_MS - 1000;
  const again = await call('GET', '/v1/domains/acme.example');
  assert.equal(statuses(again.json['checks']), ['dkim s1 fail', 'dkim e1 ok', 'dmarc ok'], 'the kept result');
  assert.is(again.json['checkedAt'], first.json['checkedAt']);
  assert.is(dns.queries('s1._domainkey.acme.example', 'TXT'), 1, 'DNS asked once');

  clock += 2000;
  const fresh = await call('GET', '/v1/domains/acme.example');
  assert.equal(statuses(fresh.json['checks']), ['dkim s1 ok', 'dkim e1 ok', 'dmarc ok']);
  assert.equal([fresh.json['failed'], fresh.json['warnings']], [0, 0]);
  assert.is(fresh.json['checkedAt'], new Date(clock).toISOString());
});

test("another account's domain and an unknown one are 404; no key is 401; POST is 405", async () => {
  assert.is((await call('GET', '/v1/domains/other.example')).status, 404);
  const unknown = await call('GET', '/v1/domains/nowhere.example');
  assert.equal([unknown.status, unknown.json['code']], [404, 'SLUICE_INGRESS_NOT_FOUND']);
  assert.is((await call('GET', '/v1/domains/%zz')).status, 400, 'a path segment that does not decode');
  assert.is((await call('GET', '/v1/domains', null)).status, 401);
  const post = await call('POST', '/v1/domains');
  assert.equal([post.status, post.headers['allow']], [405, 'GET']);
  // The other account's own check: no key configured fails.
  const other = await call('GET', '/v1/domains/other.example', keysOf.other);
  assert.equal(statuses(other.json['checks']), ['dkim fail', 'dmarc warn']);
});

test("a key file the server cannot read is a 500 that names no server path; a later ask tries again", async () => {
  const { renameSync } = await import('node:fs');
  renameSync(join(dir, 'rsa.pem'), join(dir, 'rsa.pem.away'));
  try {
    for (const path of ['/v1/domains', '/v1/domains/acme.example']) {
      clock += CACHE_MS + 1;
      const r = await call('GET', path);
      assert.equal([r.status, r.json['code']], [500, 'SLUICE_DKIM_KEY_INVALID'], path);
      assert.not.match(r.text, dir, 'no server path');
      assert.match(r.json['message'] as string, 'sluice config check');
    }
  } finally {
    renameSync(join(dir, 'rsa.pem.away'), join(dir, 'rsa.pem'));
  }
  assert.is((await call('GET', '/v1/domains/acme.example')).status, 200, 'the failure was not kept');
});

test.run();
