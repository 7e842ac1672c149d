import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccountRegistry, AccountTable, returnPathsOf } from '../../src/accounts/registry.js';
import { OperatorRegistry } from '../../src/accounts/operators.js';
import { generateApiKey, generateOperatorKey, hashSecret } from '../../src/accounts/secrets.js';
import { isSluiceError } from '../../src/core/errors.js';
import type { AccountConfig } from '../../src/config/schema.js';

const test = suite('accounts/registry');
const noRate = { perSecond: null, perMinute: null, perHour: null };
let dir = '';
let key = '';
let registry: AccountRegistry;
let accounts: AccountConfig[];

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-reg-'));
  const ed = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
  writeFileSync(join(dir, 'ed.pem'), ed);
  writeFileSync(join(dir, 'rsa.pem'), rsa);
  key = generateApiKey('acme');
  accounts = [
    {
      id: 'acme',
      domains: [{ domain: 'Bücher.Example', dkim: [{ selector: 's1', algorithm: 'rsa', keyFile: join(dir, 'rsa.pem') }, { selector: 'e1', algorithm: 'ed25519', keyFile: join(dir, 'ed.pem') }] }],
      apiKeys: [await hashSecret('sk_acme_old0000000000000000000000000000'), await hashSecret(key)],
      smtpUsers: [{ username: 'acme-smtp', passwordHash: await hashSecret('pw') }],
      dailyQuota: 10,
      rateLimit: noRate,
      tracking: { mode: 'full', anonymizeIp: 'none' },
    },
    { id: 'beta', domains: [{ domain: 'beta.example', dkim: [] }], apiKeys: [], smtpUsers: [], dailyQuota: null, rateLimit: noRate, tracking: { mode: 'anonymous', anonymizeIp: 'truncate' } },
  ];
  registry = new AccountRegistry(accounts);
});
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('API key authenticates its account; wrong, foreign or malformed keys do not', async () => {
  assert.is((await registry.authenticateApiKey(key))?.id, 'acme');
  assert.is(await registry.authenticateApiKey(key.slice(0, -1) + (key.endsWith('a') ? 'b' : 'a')), null);
  assert.is(await registry.authenticateApiKey(key.replace('sk_acme_', 'sk_beta_')), null);
  assert.is(await registry.authenticateApiKey(generateApiKey('nobody')), null);
  assert.is(await registry.authenticateApiKey('garbage'), null);
});

test('SMTP credentials', async () => {
  assert.is((await registry.authenticateSmtp('acme-smtp', 'pw'))?.id, 'acme');
  assert.is(await registry.authenticateSmtp('acme-smtp', 'PW'), null);
  assert.is(await registry.authenticateSmtp('nobody', 'pw'), null);
});

test('domain ownership is exact, case-insensitive and IDN-normalised', () => {
  assert.ok(registry.ownsDomain('acme', 'bücher.example'));
  assert.ok(registry.ownsDomain('acme', 'XN--BCHER-KVA.example'));
  assert.ok(registry.ownsDomain('acme', 'BÜCHER.EXAMPLE.'));
  assert.not.ok(registry.ownsDomain('acme', 'sub.bücher.example'));
  assert.not.ok(registry.ownsDomain('acme', 'beta.example'));
  assert.not.ok(registry.ownsDomain('nobody', 'beta.example'));
  assert.not.ok(registry.ownsDomain('acme', 'not a domain'));
});

test('DKIM keys are read and their algorithm checked', () => {
  const keys = registry.readDkimKeys();
  assert.equal(keys.map((k) => [k.domain, k.selector, k.algorithm]), [['xn--bcher-kva.example', 's1', 'rsa'], ['xn--bcher-kva.example', 'e1', 'ed25519']]);
  assert.match(keys[0]?.privateKeyPem ?? '', 'BEGIN PRIVATE KEY');
  const wrong = new AccountRegistry([{ ...(accounts[0] as AccountConfig), domains: [{ domain: 'x.example', dkim: [{ selector: 's', algorithm: 'rsa', keyFile: join(dir, 'ed.pem') }] }] }]);
  assert.throws(() => wrong.readDkimKeys(), (e: unknown) => isSluiceError(e, 'SLUICE_DKIM_KEY_INVALID') && /ed25519/.test((e as Error).message));
  const missing = new AccountRegistry([{ ...(accounts[0] as AccountConfig), domains: [{ domain: 'x.example', dkim: [{ selector: 's', algorithm: 'rsa', keyFile: join(dir, 'nope.pem') }] }] }]);
  assert.throws(() => missing.readDkimKeys(), (e: unknown) => isSluiceError(e, 'SLUICE_DKIM_KEY_INVALID'));
});

test('a domain owned twice or a malformed hash is a config error', () => {
  const acme = accounts[0] as AccountConfig;
  assert.throws(() => new AccountRegistry([acme, { ...(accounts[1] as AccountConfig), domains: [{ domain: 'bücher.example', dkim: [] }] }]), (e: unknown) => isSluiceError(e, 'SLUICE_CONFIG_INVALID'));
  assert.throws(() => new AccountRegistry([{ ...acme, apiKeys: ['scrypt$broken'] }]), (e: unknown) => isSluiceError(e, 'SLUICE_CONFIG_INVALID'));
});

test('a return path is a subdomain of its sending domain, normalised (IDN, case); anything else is a config error', () => {
  const beta = accounts[1] as AccountConfig;
  const acme = accounts[0] as AccountConfig;
  const withRp = (a: AccountConfig, returnPath: string): AccountConfig => ({ ...a, domains: [{ ...(a.domains[0] as AccountConfig['domains'][number]), returnPath }] });
  const r = new AccountRegistry([withRp(acme, 'RP.Bücher.Example'), beta]);
  assert.is(r.returnPathOf('xn--bcher-kva.example'), 'rp.xn--bcher-kva.example');
  assert.is(r.returnPathOf('beta.example'), undefined);
  assert.equal([...returnPathsOf([withRp(acme, 'RP.Bücher.Example'), beta])], [['xn--bcher-kva.example', 'rp.xn--bcher-kva.example']]);
  for (const bad of ['bücher.example', 'bounces.beta.example', 'xbücher.example', 'not a domain']) {
    assert.throws(() => new AccountRegistry([withRp(acme, bad)]), (e: unknown) => isSluiceError(e, 'SLUICE_CONFIG_INVALID') && /returnPath/.test((e as Error).message), bad);
  }
});

test('replace() (a reload): an SMTP user moved to another account with the same password ends the sessions it logged in as the old one', async () => {
  const own = new AccountRegistry(accounts);
  const login = await own.authenticateSmtpUser('acme-smtp', 'pw');
  assert.ok(login && own.smtpUserInForce('acme-smtp', login.hash, 'acme'));
  const [acme, beta] = accounts as [AccountConfig, AccountConfig];
  own.replace(new AccountTable([{ ...acme, smtpUsers: [] }, { ...beta, smtpUsers: [...(beta.smtpUsers ?? []), ...(acme.smtpUsers ?? [])] }]));
  assert.not.ok(own.smtpUserInForce('acme-smtp', login.hash, 'acme'), 'the session of acme is over');
  assert.ok(own.smtpUserInForce('acme-smtp', login.hash, beta.id), 'a new login is the new account\'s');
});

test("replace() (a reload): a key authenticated and cached before stops working once its hash is gone; the new table's keys, users, domains and tracking apply; a bad table throws before anything changes", async () => {
  const own = new AccountRegistry(accounts);
  assert.is((await own.authenticateApiKey(key))?.id, 'acme', 'verified, and now cached');
  const login = await own.authenticateSmtpUser('acme-smtp', 'pw');
  assert.ok(login && own.smtpUserInForce('acme-smtp', login.hash, 'acme'));
  const next = generateApiKey('acme');
  const acme = accounts[0] as AccountConfig;
  const changed: AccountConfig = { ...acme, apiKeys: [await hashSecret(next)], smtpUsers: [{ username: 'acme-smtp', passwordHash: await hashSecret('pw2') }], tracking: { mode: 'off', anonymizeIp: 'drop' } };
  const gamma: AccountConfig = { ...(accounts[1] as AccountConfig), id: 'gamma', domains: [{ domain: 'gamma.example', dkim: [] }] };
  assert.throws(() => new AccountTable([changed, { ...gamma, domains: [{ domain: 'bücher.example', dkim: [] }] }]), (e: unknown) => isSluiceError(e, 'SLUICE_CONFIG_INVALID'));
  own.replace(new AccountTable([changed, gamma]));
  assert.is(await own.authenticateApiKey(key), null, 'the cached key is refused: its hash is gone');
  assert.is((await own.authenticateApiKey(next))?.id, 'acme');
  assert.not.ok(own.smtpUserInForce('acme-smtp', login.hash, 'acme'), 'the earlier login is over');
  assert.is(await own.authenticateSmtp('acme-smtp', 'pw'), null);
  assert.is((await own.authenticateSmtp('acme-smtp', 'pw2'))?.id, 'acme');
  assert.equal(own.get('acme')?.tracking, { mode: 'off', anonymizeIp: 'drop' });
  assert.is(own.get('beta'), undefined, 'beta removed');
  assert.ok(own.ownsDomain('gamma', 'gamma.example'));
  assert.equal(own.list().map((a) => a.id), ['acme', 'gamma']);
});

test('operators: replace() drops a removed key at once, also when its verification was cached; index() refuses a repeated id', async () => {
  const k1 = generateOperatorKey('alice');
  const k2 = generateOperatorKey('bob');
  const ops = new OperatorRegistry([{ id: 'alice', apiKeys: [await hashSecret(k1)] }]);
  assert.is((await ops.authenticate(k1))?.id, 'alice');
  ops.replace(OperatorRegistry.index([{ id: 'bob', apiKeys: [await hashSecret(k2)] }]));
  assert.is(await ops.authenticate(k1), null);
  assert.is((await ops.authenticate(k2))?.id, 'bob');
  assert.throws(() => OperatorRegistry.index([{ id: 'bob', apiKeys: [] }, { id: 'bob', apiKeys: [] }]), (e: unknown) => isSluiceError(e, 'SLUICE_CONFIG_INVALID'));
});

test.run();
