import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { isSluiceError, type SluiceError } from '../../src/core/errors.js';
import { MxResolver } from '../../src/delivery/mx.js';

const test = suite('config/load');
let dir = '';
test.before(() => { dir = mkdtempSync(join(tmpdir(), 'sluice-cfg-')); });
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('defaults, then the file, then the environment; durations become milliseconds; frozen', () => {
  const file = join(dir, 'a.yaml');
  writeFileSync(file, 'delivery:\n  lease: 2m\n  claimBatch: 5\nadmin:\n  port: 9000\n');
  const cfg = loadConfig({ file, env: { SLUICE__ADMIN__PORT: '9500', REDIS_URL: 'redis://127.0.0.1:6390' } });
  assert.is(cfg.delivery.lease, 120_000);
  assert.is(cfg.delivery.claimBatch, 5);
  assert.is(cfg.admin.port, 9500, 'environment wins over the file');
  assert.is(cfg.redis.url, 'redis://127.0.0.1:6390');
  assert.is(cfg.shaping.default.maxAge, 72 * 3600_000, 'untouched defaults stay');
  assert.ok(Object.isFrozen(cfg.delivery));
});

test('environment paths match keys case-insensitively (SLUICE__DELIVERY__CLAIMBATCH)', () => {
  assert.is(loadConfig({ env: { SLUICE__DELIVERY__CLAIMBATCH: '7' } }).delivery.claimBatch, 7);
  assert.equal(loadConfig({ env: { SLUICE__delivery__dns__servers: '[127.0.0.1:53]' } }).delivery.dns.servers, ['127.0.0.1:53']);
});

test('every wrong key is named with its path; unknown keys are refused', () => {
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, "admin:\n  port: high\nshaping:\n  default:\n    retry: ['5 minutes']\nfoo: 1\naccounts:\n  - id: Bad Id\ningress:\n  smtp:\n    clientLimitExempt: [127.0.0.0/8, 10.0.0.0/33]\n");
  try {
    loadConfig({ file, env: {} });
    assert.unreachable('must refuse');
  } catch (err) {
    assert.ok(isSluiceError(err, 'SLUICE_CONFIG_INVALID'));
    const paths = (err as SluiceError).errors.map((e) => e.path);
    for (const p of ['admin.port', 'shaping.default.retry.0', '(root)', 'accounts.0.id', 'ingress.smtp.clientLimitExempt.1']) assert.ok(paths.includes(p), `names ${p}: ${paths.join(', ')}`);
    assert.match((err as Error).message, 'unknown key(s): foo');
    assert.match((err as Error).message, file);
  }
});

/** The errors of a configuration that must be refused, as path → messages. */
function refused(opts: Parameters<typeof loadConfig>[0]): Map<string, string[]> {
  try {
    loadConfig(opts);
  } catch (err) {
    assert.ok(isSluiceError(err, 'SLUICE_CONFIG_INVALID'), String(err));
    const out = new Map<string, string[]>();
    for (const e of (err as SluiceError).errors) out.set(e.path, [...(out.get(e.path) ?? []), e.message]);
    return out;
  }
  assert.unreachable('must refuse');
  return new Map();
}

test("delivery.transport: keys are lower-cased domains, '*.domain' or '*'; targets host:port with a port of 1–65535", () => {
  const ok = loadConfig({ env: { SLUICE__DELIVERY__TRANSPORT: '{"Example.COM.": "Smtp.Example.net:587", "*.Corp.test": "[2001:db8::1]:25", "*": "relay_1:2525", "v4.test": "192.0.2.1:1", "Bücher.example": "a.test:25", "*.München.test": "b.test:25"}' } });
  assert.equal(ok.delivery.transport, {
    'example.com': 'Smtp.Example.net:587', '*.corp.test': '[2001:db8::1]:25', '*': 'relay_1:2525', 'v4.test': '192.0.2.1:1',
    // An internationalised key in its A-label form, as destinations are compared.
    'xn--bcher-kva.example': 'a.test:25', '*.xn--mnchen-3ya.test': 'b.test:25',
  });

  const bad = refused({ env: { SLUICE__DELIVERY__TRANSPORT: JSON.stringify({
    'Example.COM': '127.0.0.1:99999', 'example.com': 'a.test:25', 'zero.test': 'h:0', 'a*.test': 'x:1', '*.*.test': 'x:1', '192.0.2.9': 'x:1',
    'noport.test': 'smtp', 'v6.test': '2001:db8::1:25', 'v4brackets.test': '[192.0.2.1]:25', 'num.test': 25, 'name.test': 'bad host:25',
    'badv4.test': '999.1.1.1:25',
  }) } });
  const has = (path: string, what: string) => assert.ok((bad.get(`delivery.transport.${path}`) ?? []).some((m) => m.includes(what)), `${path} → ${what}: ${JSON.stringify([...bad])}`);
  has('Example.COM', 'port must be 1–65535, not "99999"');
  has('example.com', 'the same destination as another key (example.com)');
  has('zero.test', 'port must be 1–65535, not "0"');
  has('a*.test', "the only wildcards in a key are '*' (every domain) and '*.domain'");
  has('*.*.test', "the only wildcards in a key are '*'");
  has('192.0.2.9', "a key must be a domain, '*.domain' or '*'");
  has('noport.test', "must be 'host:port'");
  has('v6.test', 'an IPv6 address is written in brackets');
  has('v4brackets.test', 'must hold an IPv6 address between [ and ]');
  has('num.test', "must be a 'host:port' string");
  has('name.test', '"bad host" is not a host name');
  has('badv4.test', '"999.1.1.1" is not a valid IPv4 address');
  assert.is(bad.size, 12, JSON.stringify([...bad]));
});

test('TLS policy: shaping.rules[].tls is none, may, encrypt or verify (left out: delivery.tls decides); delivery.tls.verify needs opportunistic', () => {
  const rules = [
    { name: 'banks', match: { domains: ['*.bank.test'], mx: [] }, tls: 'verify' },
    { name: 'partner', match: { domains: [], mx: ['*.partner.test'] }, tls: 'encrypt' },
    { name: 'plain', match: { domains: ['plain.test'], mx: [] } },
  ];
  const ok = loadConfig({ env: {}, overrides: { shaping: { rules } } });
  assert.equal(ok.shaping.rules.map((r) => r.tls), ['verify', 'encrypt', undefined]);
  assert.equal(ok.delivery.tls, { opportunistic: true, verify: false, encrypt: false }, 'the default: opportunistic');

  const bad = refused({ env: {}, overrides: { shaping: { rules: [{ name: 'x', match: { domains: ['x.test'], mx: [] }, tls: 'required' }, { name: 'y', match: { domains: ['y.test'], mx: [] }, tls: true }] }, delivery: { tls: { opportunistic: false, verify: true, encrypt: true } } } });
  const said = (path: string) => (bad.get(path) ?? []).join(' | ');
  assert.match(said('shaping.rules.0.tls'), 'must be one of none, may, encrypt or verify (the STARTTLS policy of the rule\'s destinations), not "required"');
  assert.match(said('shaping.rules.1.tls'), 'not true');
  assert.match(said('delivery.tls.verify'), 'contradicts opportunistic: false');
  assert.match(said('delivery.tls.encrypt'), 'encrypt (mandatory TLS) contradicts opportunistic: false');
  assert.is(bad.size, 4, JSON.stringify([...bad]));
});

test('delivery.dns.servers: IP addresses with an optional port of 1–65535, as the resolver takes them; a name or a bad port is refused', () => {
  const servers = ['192.0.2.53', '192.0.2.53:5353', '2001:db8::53', '[2001:db8::53]', '[2001:db8::53]:5353'];
  const cfg = loadConfig({ env: { SLUICE__DELIVERY__DNS__SERVERS: JSON.stringify(servers) } });
  assert.equal(cfg.delivery.dns.servers, servers);
  const d = cfg.delivery;
  new MxResolver({ servers: d.dns.servers, timeoutMs: d.dns.timeout, maxCacheTtlMs: d.dns.maxCacheTtl, negativeCacheTtlMs: d.dns.negativeCacheTtl, transport: d.transport, maxAddresses: d.maxAddresses });

  const bad = refused({ env: { SLUICE__DELIVERY__DNS__SERVERS: '["dns.example", "192.0.2.53:0", "192.0.2.53:99999", "[192.0.2.53]:53", "192.0.2.53:", ""]' } });
  const said = (i: number) => (bad.get(`delivery.dns.servers.${i}`) ?? []).join(' | ');
  assert.match(said(0), '"dns.example": not an IP address');
  assert.match(said(1), 'port must be 1–65535, not "0"');
  assert.match(said(2), 'port must be 1–65535, not "99999"');
  assert.match(said(3), 'must hold an IPv6 address between [ and ]');
  assert.match(said(4), 'port must be 1–65535, not ""');
  assert.match(said(5), 'not an IP address');
  assert.is(bad.size, 6);
});

test('a maxBuffered below the largest message it must hold is refused (such a message would be refused for now on every try); a disabled server is not counted', () => {
  const bad = refused({ env: { SLUICE__INGRESS__MAXBUFFERED: '20MB', SLUICE__FEEDBACK__MAXBUFFERED: '1MB' } });
  const said = (p: string) => (bad.get(p) ?? []).join(' | ');
  assert.match(said('ingress.maxBuffered'), 'must be at least smtp.maxMessageSize');
  assert.match(said('ingress.maxBuffered'), 'must be at least http.maxBodySize');
  assert.match(said('feedback.maxBuffered'), 'must be at least maxMessageSize');
  assert.is(bad.size, 2, JSON.stringify([...bad]));
  // 20 MB holds neither 25 MB SMTP messages nor 35 MB bodies; with SMTP off and smaller bodies it does.
  const cfg = loadConfig({ env: { SLUICE__INGRESS__MAXBUFFERED: '20MB', SLUICE__INGRESS__SMTP__ENABLED: 'false', SLUICE__INGRESS__HTTP__MAXBODYSIZE: '20MB' } });
  assert.is(cfg.ingress.maxBuffered, 20 * 1024 * 1024);
});

test('delivery.maxAddresses: 5 by default; 1–50, anything else refused with its path', () => {
  assert.is(loadConfig({ env: {} }).delivery.maxAddresses, 5);
  assert.is(loadConfig({ env: { SLUICE__DELIVERY__MAXADDRESSES: '50' } }).delivery.maxAddresses, 50);
  for (const bad of ['0', '51', '2.5']) assert.ok(refused({ env: { SLUICE__DELIVERY__MAXADDRESSES: bad } }).has('delivery.maxAddresses'), bad);
});

test('delivery.maxSessions: 2 by default; 1–50, anything else refused with its path', () => {
  assert.is(loadConfig({ env: {} }).delivery.maxSessions, 2);
  assert.is(loadConfig({ env: { SLUICE__DELIVERY__MAXSESSIONS: '50' } }).delivery.maxSessions, 50);
  for (const bad of ['0', '51', '2.5']) assert.ok(refused({ env: { SLUICE__DELIVERY__MAXSESSIONS: bad } }).has('delivery.maxSessions'), bad);
});

test('delivery.lease: at least 2s (renewed every third of it, at most once a second); a shorter one is refused with its path and why', () => {
  assert.is(loadConfig({ env: { SLUICE__DELIVERY__LEASE: '2s' } }).delivery.lease, 2_000);
  for (const bad of ['1s', '1500ms', '0s']) {
    const said = (refused({ env: { SLUICE__DELIVERY__LEASE: bad } }).get('delivery.lease') ?? []).join(' | ');
    assert.match(said, 'must be at least 2s', bad);
    assert.match(said, 'sent twice', bad);
  }
});

test('delivery.claimWindow: at least 100ms; a shorter one is refused with its path and why', () => {
  assert.is(loadConfig({ env: { SLUICE__DELIVERY__CLAIMWINDOW: '100ms' } }).delivery.claimWindow, 100);
  for (const bad of ['0s', '99ms']) {
    const said = (refused({ env: { SLUICE__DELIVERY__CLAIMWINDOW: bad } }).get('delivery.claimWindow') ?? []).join(' | ');
    assert.match(said, 'must be at least 100ms', bad);
  }
});

test('delivery.timeouts: connect, greeting, command, dataBlock and data of 0 are refused with their paths (every attempt would fail at once); idle may be 0', () => {
  for (const key of ['connect', 'greeting', 'command', 'dataBlock', 'data']) {
    const said = (refused({ env: { [`SLUICE__DELIVERY__TIMEOUTS__${key.toUpperCase()}`]: '0s' } }).get(`delivery.timeouts.${key}`) ?? []).join(' | ');
    assert.match(said, 'must be more than 0', key);
    assert.is(loadConfig({ env: { [`SLUICE__DELIVERY__TIMEOUTS__${key.toUpperCase()}`]: '1ms' } }).delivery.timeouts[key as 'data'], 1);
  }
  assert.is(loadConfig({ env: { SLUICE__DELIVERY__TIMEOUTS__IDLE: '0s' } }).delivery.timeouts.idle, 0);
});

test('a duration that runs as a timer is refused above 24d (Node would fire it at once); retention periods may be longer', () => {
  const timers = ['DELIVERY__TIMEOUTS__IDLE', 'DELIVERY__TIMEOUTS__DATA', 'DELIVERY__POLLINTERVAL', 'DELIVERY__LEASE', 'RETENTION__INTERVAL', 'INGRESS__SMTP__SOCKETTIMEOUT'];
  const bad = refused({ env: Object.fromEntries(timers.map((k) => [`SLUICE__${k}`, '25d'])) });
  for (const k of timers) {
    const path = k.split('__').map((p) => p.toLowerCase()).join('.');
    const said = [...bad].find(([p]) => p.toLowerCase() === path)?.[1].join(' | ') ?? '';
    assert.match(said, 'must be at most 24d', path);
  }
  const ok = loadConfig({ env: { SLUICE__DELIVERY__TIMEOUTS__IDLE: '24d', SLUICE__RETENTION__RECORDS: '400d' } });
  assert.is(ok.delivery.timeouts.idle, 24 * 86_400_000);
  assert.is(ok.retention.records, 400 * 86_400_000);
});

test('a SLUICE__ variable below a single value or into a list is refused naming the variable; a whole list as YAML is taken', () => {
  const bad = refused({ env: { SLUICE__DELIVERY__LEASE__X: '5m', SLUICE__ACCOUNTS__0__ID: 'acme' } });
  assert.match((bad.get('delivery.lease') ?? []).join(' | '), 'environment variable SLUICE__DELIVERY__LEASE__X goes below delivery.lease, which is a single value');
  assert.match((bad.get('accounts') ?? []).join(' | '), "environment variable SLUICE__ACCOUNTS__0__ID sets an element of the list accounts: a list is set whole, as YAML (SLUICE__ACCOUNTS='[…]')");
  assert.match((refused({ env: { SLUICE__DELIVERY__DNS__SERVERS__0: '127.0.0.1' } }).get('delivery.dns.servers') ?? []).join(' | '), 'sets an element of the list delivery.dns.servers');
  assert.equal(loadConfig({ env: { SLUICE__DELIVERY__DNS__SERVERS: '[127.0.0.1, "127.0.0.2:5353"]' } }).delivery.dns.servers, ['127.0.0.1', '127.0.0.2:5353']);
});

test('a SLUICE__ variable that names no config key is refused naming the variable; a record such as the transport map takes any key', () => {
  const bad = refused({ env: { SLUICE__DELIVERY__LEASEX: '5m', SLUICE__TRAKING__PORT: '80' } });
  assert.match((bad.get('delivery.LEASEX') ?? []).join(' | '), 'environment variable SLUICE__DELIVERY__LEASEX names no config key');
  assert.match((bad.get('TRAKING') ?? []).join(' | '), 'environment variable SLUICE__TRAKING__PORT names no config key (TRAKING)');
  const cfg = loadConfig({ env: { SLUICE__delivery__LEASE: '7m', 'SLUICE__DELIVERY__TRANSPORT__mail.example.org': 'smtp.example.net:25' } });
  assert.is(cfg.delivery.lease, 7 * 60_000, 'a known key, in any case');
  assert.equal(cfg.delivery.transport, { 'mail.example.org': 'smtp.example.net:25' });
});

test("redis.cluster: seeds are 'host:port' or '[ipv6]:port'; a seed without a port, a bad port or a bare IPv6 address is refused", () => {
  const seeds = ['redis-1:6379', '192.0.2.7:7000', '[2001:db8::7]:6379'];
  assert.equal(loadConfig({ env: { SLUICE__REDIS__CLUSTER: JSON.stringify(seeds) } }).redis.cluster, seeds);
  const bad = refused({ env: { SLUICE__REDIS__CLUSTER: '["redis-1", "redis-2:0", "2001:db8::7:6379"]' } });
  const said = (i: number) => (bad.get(`redis.cluster.${i}`) ?? []).join(' | ');
  assert.match(said(0), "must be 'host:port'");
  assert.match(said(1), 'port must be 1–65535');
  assert.match(said(2), 'an IPv6 address is written in brackets');
  assert.match(said(0), "'redis-1:6379'", 'the example is a Redis one');
  assert.is(bad.size, 3);
});

test('redis.url / REDIS_URL: redis://, rediss://, unix:///path or an absolute socket path; host:port without a scheme is refused with the redis:// form', () => {
  for (const url of ['redis://127.0.0.1:6390', 'rediss://:pw@redis.example:6380/1', 'unix:///run/redis.sock', '/run/redis.sock']) {
    assert.is(loadConfig({ env: { REDIS_URL: url } }).redis.url, url);
  }
  assert.is(loadConfig({ env: {} }).redis.url, null, 'null: the embedded server');
  const bare = refused({ env: { REDIS_URL: 'localhost:6379' } }).get('redis.url')?.join(' | ') ?? '';
  assert.match(bare, '"localhost:6379" is not a Redis address (REDIS_URL or redis.url): use redis://host:port (redis://localhost:6379?)');
  for (const url of ['redis.sock', 'unix://run/redis.sock', 'http://redis.example:6379']) {
    assert.match(refused({ env: {}, overrides: { redis: { url } } }).get('redis.url')?.join(' | ') ?? '', 'is not a Redis address', url);
  }
});

test('a file that is not YAML, or not a mapping, is refused with its name', () => {
  const file = join(dir, 'x.yaml');
  writeFileSync(file, 'admin: [unclosed\n');
  assert.throws(() => loadConfig({ file, env: {} }), /not valid YAML/);
  writeFileSync(file, '- a\n- b\n');
  assert.throws(() => loadConfig({ file, env: {} }), /must hold a mapping/);
  assert.throws(() => loadConfig({ file: join(dir, 'missing.yaml'), env: {} }), /cannot read config file/);
});

test("an account's smtpUsers, dailyQuota and rateLimit are optional; a rate limit may name one window", () => {
  const file = join(dir, 'opt.yaml');
  writeFileSync(file, "accounts:\n  - id: a\n    domains: [{ domain: a.example, dkim: [] }]\n    apiKeys: []\n  - id: b\n    domains: []\n    apiKeys: []\n    rateLimit: { perHour: 500 }\n");
  const [a, b] = loadConfig({ file, env: {} }).accounts;
  assert.equal([a?.smtpUsers, a?.dailyQuota, a?.rateLimit], [[], null, { perSecond: null, perMinute: null, perHour: null }]);
  assert.equal(b?.rateLimit, { perSecond: null, perMinute: null, perHour: 500 });
});

test('key files are resolved relative to the config file', () => {
  const file = join(dir, 'k.yaml');
  writeFileSync(file, 'accounts:\n  - id: a\n    domains: [{ domain: a.example, dkim: [{ selector: s, algorithm: rsa, keyFile: keys/a.pem }] }]\n    apiKeys: []\n    smtpUsers: []\n    dailyQuota: null\n    rateLimit: { perSecond: null, perMinute: null, perHour: null }\n');
  const cfg = loadConfig({ file, env: {} });
  assert.is(cfg.accounts[0]?.domains[0]?.dkim[0]?.keyFile, join(dir, 'keys/a.pem'));
});

test("the STARTTLS files of submission and of the feedback MX are resolved relative to the config file; the MX's default to null", () => {
  const file = join(dir, 'tls.yaml');
  writeFileSync(file, 'ingress:\n  smtp:\n    tlsKey: tls/s.key\n    tlsCert: tls/s.crt\nfeedback:\n  tlsKey: tls/f.key\n  tlsCert: /etc/f.crt\n');
  const cfg = loadConfig({ file, env: {} });
  assert.equal([cfg.ingress.smtp.tlsKey, cfg.ingress.smtp.tlsCert], [join(dir, 'tls/s.key'), join(dir, 'tls/s.crt')]);
  assert.equal([cfg.feedback.tlsKey, cfg.feedback.tlsCert], [join(dir, 'tls/f.key'), '/etc/f.crt']);
  assert.equal([loadConfig({ env: {} }).feedback.tlsKey, loadConfig({ env: {} }).feedback.tlsCert], [null, null]);
});

/** The errors refused at `path` when `overrides` are merged over the defaults (no file, no environment). */
function clashAt(overrides: unknown, path: string): string {
  return (refused({ env: {}, overrides }).get(path) ?? []).join(' | ');
}
const accepted = (overrides: unknown) => loadConfig({ env: {}, overrides });

test('two listeners of the roles that run on one port and the same host are refused, naming both paths; a role that does not run cannot clash', () => {
  const both = { roles: ['ingress', 'tracking'], admin: { host: '127.0.0.1', port: 9464 }, tracking: { host: '127.0.0.1', port: 9464 } };
  assert.is(clashAt(both, 'tracking.port'), '9464 is also admin.port (both on 127.0.0.1)');
  // Submission and the HTTP API of ingress; the feedback MX against submission.
  assert.is(clashAt({ ingress: { http: { port: 2587 } } }, 'ingress.http.port'), '2587 is also ingress.smtp.port (both on 0.0.0.0)');
  assert.is(clashAt({ roles: ['ingress', 'feedback'], feedback: { port: 2587 } }, 'feedback.port'), '2587 is also ingress.smtp.port (both on 0.0.0.0)');
  // Each clashing pair is named (three on one port: two errors at the last one, one at the second).
  const three = refused({ env: {}, overrides: { roles: ['ingress', 'tracking', 'feedback'], tracking: { port: 2587 }, feedback: { port: 2587 } } });
  assert.equal(three.get('tracking.port'), ['2587 is also ingress.smtp.port (both on 0.0.0.0)']);
  assert.equal(three.get('feedback.port'), ['2587 is also ingress.smtp.port (both on 0.0.0.0)', '2587 is also tracking.port (both on 0.0.0.0)']);

  // Not started, so not bound: tracking without its role (`--roles ingress` is merged into roles before
  // validation), feedback without its role, a disabled server of ingress, ingress without its role.
  assert.is(accepted({ ...both, roles: ['ingress'] }).tracking.port, 9464);
  assert.is(accepted({ feedback: { port: 2587 } }).feedback.port, 2587);
  assert.is(accepted({ ingress: { http: { enabled: false, port: 2587 } } }).ingress.http.port, 2587);
  assert.is(accepted({ roles: ['delivery'], ingress: { http: { port: 2587 } } }).ingress.http.port, 2587);
});

test('listeners on one port do not clash on different addresses of one family, on an IPv6 address beside 0.0.0.0, or on port 0 (each beside a neighbour that does)', () => {
  const roles = ['ingress', 'tracking'];
  const pair = (adminHost: string, trackingHost: string, port: number) => ({ roles, admin: { host: adminHost, port }, tracking: { host: trackingHost, port } });
  // [admin.host, tracking.host that does not clash with it, one that does]
  const cases: [string, string, string][] = [
    ['127.0.0.1', '127.0.0.2', '127.0.0.1'],
    ['::1', '2001:db8::1', '::1'],
    // 0.0.0.0 takes IPv4 addresses only; '::' takes IPv6 and IPv4 ones.
    ['::1', '0.0.0.0', '::'],
    // Names are not resolved: a name clashes with itself (and '::') only.
    ['127.0.0.1', 'mail.example', '::'],
    ['mail.example', 'smtp.example', 'Mail.Example'],
  ];
  for (const [admin, apart, clashing] of cases) {
    assert.is(accepted(pair(admin, apart, 7000)).tracking.host, apart, `${admin} and ${apart}`);
    assert.match(clashAt(pair(admin, clashing, 7000), 'tracking.port'), '7000 is also admin.port', `${admin} and ${clashing}`);
  }
  // Port 0: each listener gets its own ephemeral port, whatever its host.
  accepted({ ...pair('0.0.0.0', '0.0.0.0', 0), roles: ['ingress', 'tracking', 'feedback'], feedback: { host: '::', port: 0 }, ingress: { smtp: { port: 0 }, http: { port: 0 } } });
  assert.match(clashAt(pair('0.0.0.0', '0.0.0.0', 1), 'tracking.port'), '1 is also admin.port (both on 0.0.0.0)');
});

test("a wildcard host clashes with the hosts it takes: '0.0.0.0' every IPv4 one, '::' every one (IPv4 too, said in the error)", () => {
  const roles = ['ingress', 'tracking'];
  assert.is(
    clashAt({ roles, admin: { host: '127.0.0.1', port: 8080 } }, 'tracking.port'),
    '8080 is also admin.port (tracking.host 0.0.0.0 takes every IPv4 address, 127.0.0.1 among them)',
  );
  assert.is(
    clashAt({ roles, admin: { host: '0.0.0.0', port: 8080 }, tracking: { host: '192.0.2.7' } }, 'tracking.port'),
    '8080 is also admin.port (admin.host 0.0.0.0 takes every IPv4 address, 192.0.2.7 among them)',
  );
  const v6 = clashAt({ roles, admin: { host: '::', port: 8080 } }, 'tracking.port');
  assert.match(v6, '8080 is also admin.port (admin.host :: takes every address, 0.0.0.0 among them');
  assert.match(v6, "Node listens on '::' for IPv4 too, so it is taken to clash with every host; only an IPv6-only OS would let both listen");
  assert.match(clashAt({ roles, admin: { host: 'localhost', port: 8080 }, tracking: { host: '::' } }, 'tracking.port'), 'tracking.host :: takes every address, localhost among them');
  // One address written two ways is the same address: IPv6 forms, an IPv4-mapped address, a name's case.
  assert.is(clashAt({ roles, admin: { host: '::1', port: 8080 }, tracking: { host: '0:0:0:0:0:0:0:1' } }, 'tracking.port'), '8080 is also admin.port (admin.host ::1 and tracking.host 0:0:0:0:0:0:0:1 are the same address)');
  assert.match(clashAt({ roles, admin: { host: '127.0.0.1', port: 8080 }, tracking: { host: '::ffff:127.0.0.1' } }, 'tracking.port'), 'are the same address');
  assert.match(clashAt({ roles, admin: { host: 'localhost', port: 8080 }, tracking: { host: 'LocalHost.' } }, 'tracking.port'), 'are the same address');
});

test('a clash is reported with the errors of other keys; a listener whose own host or port is wrong is left to its own error', () => {
  const bad = refused({ env: {}, overrides: { log: { level: 'loud' }, ingress: { http: { port: 2587 } }, admin: { port: 'x' } } });
  assert.ok(bad.has('log.level'), JSON.stringify([...bad]));
  assert.ok(bad.has('admin.port'), JSON.stringify([...bad]));
  assert.equal(bad.get('ingress.http.port'), ['2587 is also ingress.smtp.port (both on 0.0.0.0)']);
  const wrongPort = refused({ env: {}, overrides: { ingress: { http: { port: 70000 }, smtp: { port: 70000 } } } });
  assert.not.ok((wrongPort.get('ingress.http.port') ?? []).some((m) => m.includes('is also')), JSON.stringify([...wrongPort]));
});

test.run();
