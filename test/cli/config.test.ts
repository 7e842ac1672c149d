/**
 * `sluice config check` and `sluice config show`: a valid file passes; a wrong one exits 1 and
 * names EVERY bad path at once; show prints the merged configuration with every secret redacted.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';
import { hashSecret } from '../../src/accounts/secrets.js';
import { sluice, spawnSluice } from './run-cli.js';

const test = suite('cli/config');
let dir: string;
let apiHash: string;
let smtpHash: string;

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-cli-config-'));
  mkdirSync(join(dir, 'keys'));
  [apiHash, smtpHash] = await Promise.all([hashSecret('sk_acme_apikeyapikeyapikeyapikeyapikey12'), hashSecret('smtp-password')]);
  // Keys made by the CLI itself, referenced relative to the config file as an operator would.
  const k = await sluice(['dkim', 'keygen', '--domain', 'acme.example', '--selector', 'e1', '--type', 'ed25519', '--out', join(dir, 'keys', 'e1.pem')]);
  assert.is(k.code, 0, k.err);
});
test.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function account(overrides: Record<string, unknown> = {}) {
  return {
    id: 'acme',
    domains: [{ domain: 'acme.example', dkim: [{ selector: 'e1', algorithm: 'ed25519', keyFile: './keys/e1.pem' }] }],
    apiKeys: [apiHash],
    smtpUsers: [{ username: 'acme', passwordHash: smtpHash }],
    dailyQuota: null,
    rateLimit: { perSecond: null, perMinute: null, perHour: null },
    ...overrides,
  };
}

function configFile(name: string, tree: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof tree === 'string' ? tree : YAML.stringify(tree));
  return file;
}

test('a valid file: exit 0 (the DKIM key path is relative to the file, not to the working directory)', async () => {
  const file = configFile('valid.yaml', {
    admin: { port: 9500 },
    instance: { hostname: 'mta1.acme-mail.net' },
    delivery: { bounceDomain: 'bounces.acme-mail.net' },
    redis: { url: 'redis://:s3cret@127.0.0.1:6390/2' },
    shaping: { default: { retry: ['30s', '2m'] } },
    accounts: [account()],
  });
  const r = await sluice(['config', 'check', '--config', file]);
  assert.is(r.code, 0, r.err);
  assert.is(r.out, 'configuration is valid\n');
  assert.is(r.err, '');
});

test('valid but for one machine only (a localhost bounce domain, a bare host name, a localhost tracking URL): exit 0, each named with its key', async () => {
  const file = configFile('local.yaml', { instance: { hostname: 'a1b2c3d4e5f6' }, accounts: [account()] });
  const r = await sluice(['config', 'check', '--config', file]);
  assert.is(r.code, 0, r.err);
  const lines = r.out.trim().split('\n');
  assert.is(lines[0], 'configuration is valid');
  assert.is(lines.length, 3, r.out);
  assert.match(lines[1]!, /^warning: delivery\.bounceDomain is bounce\.localhost: /);
  assert.match(lines[2]!, /^warning: the EHLO name is a1b2c3d4e5f6 \(instance\.hostname\)/);
  // The tracking URL matters where mail is tracked: the tracking role (or token keys for the render threads).
  writeFileSync(join(dir, 'tk'), 'tracking-key-0123456789abcdef');
  const tracked = configFile('tracked.yaml', {
    roles: ['tracking'], instance: { hostname: 'mta1.acme-mail.net' }, accounts: [account()],
    tracking: { keys: [{ id: 'k1', secretFile: './tk', notAfter: null }], signWith: 'k1' },
  });
  const t = await sluice(['config', 'check', '--config', tracked]);
  assert.is(t.code, 0, t.err);
  assert.match(t.out, /^configuration is valid\nwarning: tracking\.publicBaseUrl is http:\/\/localhost:8080: /);
  const live = configFile('live.yaml', {
    roles: ['tracking', 'delivery'], instance: { hostname: 'mta1.acme-mail.net' }, delivery: { bounceDomain: 'bounces.acme-mail.net' }, accounts: [account()],
    tracking: { keys: [{ id: 'k1', secretFile: './tk', notAfter: null }], signWith: 'k1', publicBaseUrl: 'https://t.acme-mail.net' },
  });
  const l = await sluice(['config', 'check', '--config', live]);
  assert.is(l.out, 'configuration is valid\n', 'nothing to say of names the Internet can reach');
  // An address literal counts by its address; the Docker template's placeholders (RFC 2606) are warned of until set.
  const literal = configFile('literal.yaml', { instance: { hostname: 'mta1.acme-mail.net' }, delivery: { bounceDomain: 'bounces.acme-mail.net', ehloName: '[IPv6:2001:db8::25]' }, accounts: [account()] });
  assert.is((await sluice(['config', 'check', '--config', literal])).out, 'configuration is valid\n');
  const loop = configFile('loop.yaml', { instance: { hostname: 'mta1.acme-mail.net' }, delivery: { bounceDomain: 'bounces.acme-mail.net', ehloName: '[127.0.0.1]' }, accounts: [account()] });
  assert.match((await sluice(['config', 'check', '--config', loop])).out, /warning: the EHLO name is \[127\.0\.0\.1\]/);
  const docker = await sluice(['config', 'check', '--config', new URL('../../docker/conf/sluice.yaml', import.meta.url).pathname]);
  assert.is(docker.code, 0, docker.err);
  assert.match(docker.out, /warning: delivery\.bounceDomain is bounce\.example\.com/);
  assert.match(docker.out, /warning: the EHLO name is mail\.example\.com/);
});

test('SLUICE_CONFIG names the file when --config is absent, and a bad one fails', async () => {
  const bad = configFile('env-bad.yaml', { admin: { port: -1 } });
  const r = await sluice(['config', 'check'], { env: { SLUICE_CONFIG: bad } });
  assert.is(r.code, 1);
  assert.match(r.err, 'admin.port');
  assert.match(r.err, bad);
});

test('unknown keys, wrong types and bad durations: exit 1, every bad path named', async () => {
  const file = configFile('bad.yaml', {
    foo: 1,
    admin: { port: 'x' },
    log: { level: 'loud' },
    ingress: { smtp: { colour: 'blue', maxMessageSize: 'huge' } },
    shaping: {
      default: { retry: ['1x', '5m'], maxAge: 'forever' },
      rules: [{ name: 'Bad Name', match: { domains: ['x.example'], mx: [] } }],
    },
    accounts: [account({ apiKeys: ['plain-key'] })],
  });
  const r = await sluice(['config', 'check', '--config', file]);
  assert.is(r.code, 1);
  assert.is(r.out, '');
  assert.match(r.err, 'SLUICE_CONFIG_INVALID');
  const lines = r.err.split('\n');
  const named = (path: string, what: string | RegExp) => {
    const line = lines.find((l) => l.trimStart().startsWith(`${path}:`));
    assert.ok(line, `stderr names ${path}:\n${r.err}`);
    assert.match(line, what);
  };
  named('(root)', 'unknown key(s): foo');
  named('admin.port', 'expected number');
  named('log.level', /./);
  named('ingress.smtp', 'unknown key(s): colour');
  named('ingress.smtp.maxMessageSize', 'not a size');
  named('shaping.default.retry.0', 'not a duration: "1x"');
  named('shaping.default.maxAge', 'not a duration: "forever"');
  named('shaping.rules.0.name', 'lower-case');
  named('accounts.0.apiKeys.0', 'sluice secret hash');
  assert.not.ok(r.err.includes('shaping.default.retry.1'), 'a good entry is not named');
});

test('checks of start-up beyond the schema: missing or mistyped DKIM key files, duplicate accounts', async () => {
  const missing = await sluice(['config', 'check', '--config', configFile('missing-key.yaml', {
    accounts: [account({ domains: [{ domain: 'acme.example', dkim: [{ selector: 'e1', algorithm: 'ed25519', keyFile: './keys/nope.pem' }] }] })],
  })]);
  assert.is(missing.code, 1);
  assert.match(missing.err, join(dir, 'keys', 'nope.pem'));
  assert.match(missing.err, 'SLUICE_DKIM_KEY_INVALID');

  const mistyped = await sluice(['config', 'check', '--config', configFile('rsa-says.yaml', {
    accounts: [account({ domains: [{ domain: 'acme.example', dkim: [{ selector: 'e1', algorithm: 'rsa', keyFile: './keys/e1.pem' }] }] })],
  })]);
  assert.is(mistyped.code, 1);
  assert.match(mistyped.err, 'is ed25519, but the config says rsa');

  const twice = await sluice(['config', 'check', '--config', configFile('twice.yaml', { accounts: [account(), account()] })]);
  assert.is(twice.code, 1);
  assert.match(twice.err, 'account acme is defined twice');
});

test('what sluice start reads before it runs is checked too: webhook and tracking key files, keys for the tracking role', async () => {
  // Each of these passed `config check` ("configuration is valid") and was refused by `sluice start`.
  const webhook = await sluice(['config', 'check', '--config', configFile('webhook-key.yaml', { webhooks: { secretKeyFile: './keys/webhooks.key' } })]);
  assert.is(webhook.code, 1, webhook.out);
  assert.match(webhook.err, `webhooks.secretKeyFile: cannot read ${join(dir, 'keys', 'webhooks.key')}`);

  const trackingFile = await sluice(['config', 'check', '--config', configFile('tracking-key.yaml', {
    tracking: { keys: [{ id: 'k1', secretFile: './keys/k1.key', notAfter: null }], signWith: 'k1' },
  })]);
  assert.is(trackingFile.code, 1, trackingFile.out);
  assert.match(trackingFile.err, `tracking key 'k1': cannot read ${join(dir, 'keys', 'k1.key')}`);

  writeFileSync(join(dir, 'keys', 'short.key'), 'eight by');
  const short = await sluice(['config', 'check', '--config', configFile('tracking-short.yaml', {
    tracking: { keys: [{ id: 'k1', secretFile: './keys/short.key', notAfter: null }], signWith: 'k1' },
  })]);
  assert.is(short.code, 1, short.out);
  assert.match(short.err, 'shorter than 16 bytes');

  const role = await sluice(['config', 'check', '--config', configFile('tracking-role.yaml', { roles: ['ingress', 'tracking'] })]);
  assert.is(role.code, 1, role.out);
  assert.match(role.err, "role 'tracking' needs token keys");
});

test('a file that is not YAML, not a mapping, or not there: exit 1 with the reason', async () => {
  const cases: [string, string][] = [
    [configFile('broken.yaml', 'admin: [1, 2\n'), 'is not valid YAML'],
    [configFile('list.yaml', '- a\n- b\n'), 'must hold a mapping'],
    [join(dir, 'absent.yaml'), 'cannot read config file'],
  ];
  for (const [file, message] of cases) {
    const r = await sluice(['config', 'check', '--config', file]);
    assert.is(r.code, 1, file);
    assert.match(r.err, message);
  }
});

test('a SLUICE__ value that is not YAML: exit 1 naming the variable and the path it sets, with the other errors, without the value', async () => {
  const r = await sluice(['config', 'check'], { env: { SLUICE__ADMIN__PORT: '[1', SLUICE__delivery__claimBatch: '{secret: 1', SLUICE__LOG__LEVEL: 'loud' } });
  assert.is(r.code, 1);
  assert.match(r.err, 'SLUICE_CONFIG_INVALID');
  const lines = r.err.split('\n').map((l) => l.trim());
  assert.ok(lines.includes('admin.port: environment variable SLUICE__ADMIN__PORT is not valid YAML: Flow sequence must end with a ] at line 1, column 3'), r.err);
  assert.ok(lines.some((l) => l.startsWith('delivery.claimBatch: environment variable SLUICE__delivery__claimBatch is not valid YAML')), r.err);
  assert.ok(lines.some((l) => l.startsWith('log.level: ')), `the schema's errors too:\n${r.err}`);
  assert.not.match(r.err, 'secret');
  assert.not.match(r.err, 'YAMLParseError');
});

test('a wrong value an environment variable set names the variable: the file may hold a good one it replaced', async () => {
  const file = configFile('env-over.yaml', { admin: { port: 9464 }, log: { level: 'info' } });
  const r = await sluice(['config', 'check', '--config', file], { env: { SLUICE__ADMIN__PORT: 'abc', SLUICE_LOG_LEVEL: 'loud', SLUICE__DELIVERY: '{claimBatchh: 5}' } });
  assert.is(r.code, 1);
  const lines = r.err.split('\n').map((l) => l.trim());
  assert.ok(lines.some((l) => l.startsWith('admin.port: ') && l.includes('(set by the environment variable SLUICE__ADMIN__PORT)')), r.err);
  assert.ok(lines.some((l) => l.startsWith('log.level: ') && l.includes('(set by the environment variable SLUICE_LOG_LEVEL)')), r.err);
  assert.ok(lines.some((l) => l.startsWith('delivery: unknown key(s): claimBatchh') && l.includes('SLUICE__DELIVERY')), r.err);
  // An error the file made names no variable.
  const own = await sluice(['config', 'check', '--config', configFile('file-bad.yaml', { admin: { port: 'abc' } })], { env: { SLUICE__LOG__LEVEL: 'debug' } });
  assert.is(own.code, 1);
  assert.not.match(own.err, 'set by the environment');
});

test('two listeners on one port and overlapping hosts: exit 1 naming both paths; without the role of one of them, valid', async () => {
  const clash = { roles: ['ingress', 'tracking'], admin: { host: '0.0.0.0', port: 8080 } };
  const r = await sluice(['config', 'check', '--config', configFile('clash.yaml', clash)]);
  assert.is(r.code, 1);
  assert.is(r.out, '');
  assert.match(r.err, 'SLUICE_CONFIG_INVALID');
  const lines = r.err.split('\n').map((l) => l.trim());
  assert.ok(lines.some((l) => l.startsWith('tracking.port: 8080 is also admin.port (both on 0.0.0.0)')), r.err);
  // The tracking server does not run without its role, so its port is nobody else's.
  const alone = await sluice(['config', 'check', '--config', configFile('no-clash.yaml', { ...clash, roles: ['ingress'] })]);
  assert.is(alone.code, 0, alone.err);
  // --roles checks the file as `sluice start --roles` would run it: the ingress-only process of a shared file is valid…
  const asIngress = await sluice(['config', 'check', '--config', configFile('clash.yaml', clash), '--roles', 'ingress,delivery']);
  assert.is(asIngress.code, 0, asIngress.err);
  // …and a process given the tracking role is refused even when the file's roles leave it out.
  const asTracking = await sluice(['config', 'check', '--config', configFile('no-clash.yaml', { ...clash, roles: ['ingress'] }), '--roles', 'tracking']);
  assert.is(asTracking.code, 1);
  assert.match(asTracking.err, 'tracking.port: 8080 is also admin.port');
  const bad = await sluice(['config', 'check', '--config', configFile('clash.yaml', clash), '--roles', 'tracking,mailroom']);
  assert.is(bad.code, 2, bad.err);
  assert.match(bad.err, '--roles: unknown role(s) mailroom');
});

test('config show: merged JSON with apiKeys, passwordHash and the redis.url password redacted', async () => {
  // A password may hold '@': the credentials end at the authority's last one.
  const file = configFile('show.yaml', { admin: { port: 9501 }, redis: { url: 'redis://default:s3c@ret@127.0.0.1:6390/2' }, accounts: [account()] });
  const r = await sluice(['config', 'show', '--config', file], { env: { SLUICE__ingress__http__port: '8099' } });
  assert.is(r.code, 0, r.err);
  const shown = JSON.parse(r.out) as any;
  assert.is(shown.admin.port, 9501, 'from the file');
  assert.is(shown.ingress.http.port, 8099, 'from the environment');
  assert.is(shown.ingress.smtp.port, 2587, 'from the defaults');
  assert.equal(shown.accounts[0].apiKeys, ['[redacted]']);
  assert.is(shown.accounts[0].smtpUsers[0].passwordHash, '[redacted]');
  assert.is(shown.accounts[0].smtpUsers[0].username, 'acme');
  assert.is(shown.redis.url, 'redis://[redacted]@127.0.0.1:6390/2');
  assert.is(shown.accounts[0].domains[0].dkim[0].keyFile, join(dir, 'keys', 'e1.pem'));
  for (const secret of ['s3c', 'ret@', apiHash, smtpHash, 'scrypt$']) assert.not.ok(r.out.includes(secret), `${secret.slice(0, 12)} does not appear`);
});

test('as a real process: check exits 1 on a bad file and 0 on a good one', async () => {
  const [bad, good] = await Promise.all([
    spawnSluice(['config', 'check', '--config', configFile('proc-bad.yaml', { foo: true })]),
    spawnSluice(['config', 'check', '--config', configFile('proc-good.yaml', { admin: { port: 9502 } })]),
  ]);
  assert.is(bad.code, 1);
  assert.match(bad.err, 'unknown key(s): foo');
  assert.is(good.code, 0, good.err);
});

test.run();
