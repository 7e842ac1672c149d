/**
 * `sluice domain check` against a real DNS server on loopback (helpers/dns-stub.ts, reached through
 * delivery.dns.servers): keys made by `sluice dkim keygen` and published as it printed them pass;
 * a missing, old, revoked, mistyped or doubled key record, a missing or doubled DMARC record, and a
 * bounce domain that does not resolve, has a null MX or two SPF records are each named, with exit 1
 * for failures and 0 for warnings alone.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';
import { hashSecret } from '../../src/accounts/secrets.js';
import { dnsRecord } from '../../src/render/dkim.js';
import { startDnsStub, type DnsStub } from '../helpers/dns-stub.js';
import { sluice } from './run-cli.js';

const test = suite('cli/domain');
let dir: string;
let dns: DnsStub;
let apiHash: string;
/** What `dkim keygen` printed to publish, per key file name. */
const printed: Record<string, string> = {};
const pem = (name: string): string => readFileSync(join(dir, `${name}.pem`), 'utf8');

interface Check { check: string; name: string; status: string; detail: string; selector?: string; address?: string; found?: string[]; expected?: string }
interface Report { domain: string; kind: string; account?: string; checks: Check[] }

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-cli-domain-'));
  apiHash = await hashSecret('sk_acme_apikeyapikeyapikeyapikeyapikey12');
  for (const [name, type] of [['rsa', 'rsa'], ['ed', 'ed25519'], ['old', 'rsa'], ['ed2', 'ed25519']] as const) {
    const r = await sluice(['dkim', 'keygen', '--domain', 'acme.test', '--selector', 's1', '--type', type, '--out', join(dir, `${name}.pem`)]);
    assert.is(r.code, 0, r.err);
    // The TXT line as an operator copies it into a zone: quoted strings of at most 255 characters.
    const line = r.out.split('\n').find((l) => l.includes(' IN TXT ')) as string;
    printed[name] = [...line.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('');
  }
  dns = await startDnsStub({
    // good.test: both keys as keygen printed them (the RSA one in two strings), DMARC reject.
    's1._domainkey.good.test': { TXT: [printed['rsa'] as string] },
    'e1._domainkey.good.test': { TXT: [printed['ed'] as string] },
    '_dmarc.good.test': { TXT: ['v=DMARC1; p=reject; rua=mailto:d@good.test'] },
    // cname.test: its key delegated by CNAME to a zone the operator runs (as providers ask customers to).
    's1._domainkey.cname.test': { CNAME: 's1.keys.sluice-operator.test' },
    's1.keys.sluice-operator.test': { TXT: [printed['rsa'] as string] },
    // bad.test: s1 not published, e1 another key; no DMARC anywhere.
    'e1._domainkey.bad.test': { TXT: [printed['ed2'] as string] },
    // news.org.test: s1 revoked, e1 with the RSA key type; DMARC from org.test's sp=.
    's1._domainkey.news.org.test': { TXT: ['v=DKIM1; k=rsa; p='] },
    'e1._domainkey.news.org.test': { TXT: [(printed['ed'] as string).replace('k=ed25519', 'k=rsa')] },
    '_dmarc.org.test': { TXT: ['v=DMARC1; p=reject; sp=quarantine'] },
    // warn.test: s1 in testing mode (white space inside p= as some consoles leave it), e1 with an old
    // record beside the right one; two DMARC records.
    's1._domainkey.warn.test': { TXT: [`${(printed['rsa'] as string).replace(/(p=.{40})/, '$1 ')}; t=y`] },
    'e1._domainkey.warn.test': { TXT: [printed['ed2'] as string, printed['ed'] as string, 'google-site-verification=abc'] },
    '_dmarc.warn.test': { TXT: ['v=DMARC1; p=none', 'v=DMARC1; p=reject'] },
    // broken.test: its resolver fails.
    's1._domainkey.broken.test': { rcode: 'SERVFAIL' },
    // Bounce domains.
    'bounce.test': { MX: [{ preference: 20, exchange: 'mx2.bounce.test' }, { preference: 10, exchange: 'mx1.bounce.test' }], TXT: ['v=spf1 ip4:192.0.2.25 -all', 'other=1'] },
    'nullmx.test': { MX: [{ preference: 0, exchange: '.' }], TXT: ['v=spf1 -all'] },
    'twospf.test': { MX: [{ preference: 10, exchange: 'mx.twospf.test' }], TXT: ['v=spf1 ip4:192.0.2.25 -all', 'v=spf1 include:_spf.example -all'] },
    'aonly.test': { A: ['192.0.2.30'] },
    'rp.good.test': { MX: [{ preference: 10, exchange: 'mx1.bounce.test' }], TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
  });
});
test.after(async () => {
  await dns.close();
  rmSync(dir, { recursive: true, force: true });
});

const keys = (...k: [string, 'rsa' | 'ed25519', string][]) => k.map(([selector, algorithm, file]) => ({ selector, algorithm, keyFile: join(dir, `${file}.pem`) }));

function configFile(name: string, domains: { domain: string; dkim: ReturnType<typeof keys> }[], bounceDomain = 'bounce.test', account = 'acme'): string {
  const file = join(dir, name);
  writeFileSync(file, YAML.stringify({
    delivery: { bounceDomain, dns: { servers: [dns.server], timeout: '3s' } },
    accounts: [{ id: account, domains, apiKeys: [apiHash], smtpUsers: [], dailyQuota: null, rateLimit: { perSecond: null, perMinute: null, perHour: null } }],
  }));
  return file;
}

async function check(file: string, ...more: string[]): Promise<{ code: number; out: string; reports: Report[]; failed: number; warnings: number }> {
  const r = await sluice(['domain', 'check', '--config', file, '--json', ...more]);
  assert.is(r.err, '', r.err);
  const body = JSON.parse(r.out) as { domains: Report[]; failed: number; warnings: number };
  return { code: r.code, out: r.out, reports: body.domains, failed: body.failed, warnings: body.warnings };
}

const statuses = (r: Report | undefined): string[] => (r?.checks ?? []).map((c) => `${c.check}${c.selector ? ` ${c.selector}` : ''} ${c.status}`);

test('keys published as `dkim keygen` printed them, a DMARC policy, a bounce domain with MX and SPF: all ok, exit 0', async () => {
  const file = configFile('good.yaml', [{ domain: 'good.test', dkim: keys(['s1', 'rsa', 'rsa'], ['e1', 'ed25519', 'ed']) }]);
  const r = await check(file);
  assert.is(r.code, 0, r.out);
  assert.equal(r.reports.map((x) => `${x.domain} ${x.kind}`), ['good.test sending', 'bounce.test bounce']);
  assert.equal(statuses(r.reports[0]), ['dkim s1 ok', 'dkim e1 ok', 'dmarc ok']);
  assert.match(r.reports[0]?.checks[2]?.detail ?? '', 'p=reject');
  assert.match(r.reports[0]?.checks[2]?.detail ?? '', 'SPF does not align', 'no returnPath: the envelope sender is the bounce domain');
  assert.equal(statuses(r.reports[1]), ['mx ok', 'spf ok']);
  assert.equal(r.reports[1]?.checks[0]?.found, ['10 mx1.bounce.test', '20 mx2.bounce.test'], 'by preference');
  assert.equal(r.reports[1]?.checks[1]?.found, ['v=spf1 ip4:192.0.2.25 -all', 'other=1']);
  assert.is(r.failed + r.warnings, 0);
  // The text form: one line per check and the summary.
  const text = await sluice(['domain', 'check', '--config', file]);
  assert.is(text.code, 0);
  assert.match(text.out, /^good\.test \(account acme\)\n {2}ok {4}dkim s1 rsa/m);
  assert.match(text.out, '0 failed, 0 warnings\n');
});

test('a key published through a CNAME (delegated to the operator) is found as receivers find it', async () => {
  const r = await check(configFile('cname.yaml', [{ domain: 'cname.test', dkim: keys(['s1', 'rsa', 'rsa']) }]));
  assert.equal(statuses(r.reports[0]), ['dkim s1 ok', 'dmarc warn']);
});

test('a key not published, another key, a revoked key and a wrong k=: each fails with what to publish; exit 1', async () => {
  const file = configFile('bad.yaml', [
    { domain: 'bad.test', dkim: keys(['s1', 'rsa', 'rsa'], ['e1', 'ed25519', 'ed']) },
    { domain: 'news.org.test', dkim: keys(['s1', 'rsa', 'rsa'], ['e1', 'ed25519', 'ed']) },
  ]);
  const r = await check(file);
  assert.is(r.code, 1);
  const [bad, news] = r.reports;
  assert.equal(statuses(bad), ['dkim s1 fail', 'dkim e1 fail', 'dmarc warn']);
  assert.match(bad?.checks[0]?.detail ?? '', 'nothing is published at s1._domainkey.bad.test');
  assert.is(bad?.checks[0]?.expected, dnsRecord(pem('rsa'), 'rsa'), 'the record to publish is the key\'s own');
  assert.match(bad?.checks[1]?.detail ?? '', "not this private key's public half");
  assert.match(bad?.checks[2]?.detail ?? '', 'no DMARC record at _dmarc.bad.test');
  assert.equal(statuses(news), ['dkim s1 fail', 'dkim e1 fail', 'dmarc ok']);
  assert.match(news?.checks[0]?.detail ?? '', 'revoked');
  assert.match(news?.checks[1]?.detail ?? '', 'k=rsa, but this key is ed25519');
  assert.match(news?.checks[2]?.detail ?? '', 'p=quarantine (the policy of org.test for its subdomains');
  assert.is(r.failed, 4);
  assert.is(r.warnings, 1);
  const text = await sluice(['domain', 'check', '--config', file]);
  assert.is(text.code, 1);
  // As a zone file line, in strings of at most 255 characters (as `dkim keygen` prints it).
  const line = text.out.split('\n').find((l) => l.includes('publish: s1._domainkey.bad.test. IN TXT ')) ?? '';
  assert.is([...line.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join(''), dnsRecord(pem('rsa'), 'rsa'));
  assert.ok([...line.matchAll(/"([^"]*)"/g)].every((m) => (m[1] as string).length <= 255));
  assert.match(text.out, '4 failed, 1 warning\n');
});

test('testing mode, an old record beside the right one, two DMARC records: warnings, exit 0', async () => {
  const r = await check(configFile('warn.yaml', [{ domain: 'warn.test', dkim: keys(['s1', 'rsa', 'rsa'], ['e1', 'ed25519', 'ed']) }]));
  assert.is(r.code, 0, r.out);
  assert.equal(statuses(r.reports[0]), ['dkim s1 warn', 'dkim e1 warn', 'dmarc warn']);
  const [s1, e1, dmarc] = r.reports[0]?.checks ?? [];
  assert.match(s1?.detail ?? '', 't=y');
  assert.match(e1?.detail ?? '', '2 key records');
  assert.is(e1?.found?.length, 3, 'every TXT record there is shown');
  assert.match(dmarc?.detail ?? '', '2 DMARC records');
});

test('a domain without a key, and a resolver that fails: both fail', async () => {
  const r = await check(configFile('nokey.yaml', [{ domain: 'nokey.test', dkim: [] }, { domain: 'broken.test', dkim: keys(['s1', 'rsa', 'rsa']) }]));
  assert.is(r.code, 1);
  assert.equal(statuses(r.reports[0]), ['dkim fail', 'dmarc warn']);
  assert.match(r.reports[0]?.checks[0]?.detail ?? '', 'goes unsigned');
  assert.equal(statuses(r.reports[1]), ['dkim s1 fail', 'dmarc warn']);
  assert.match(r.reports[1]?.checks[0]?.detail ?? '', 'the lookup failed (ESERVFAIL');
});

test('bounce domains: null MX, two SPF records, no such domain fail; an address without MX and no SPF warn', async () => {
  const domains = [{ domain: 'good.test', dkim: keys(['s1', 'rsa', 'rsa']) }];
  const bounce = async (name: string) => (await check(configFile(`b-${name}.yaml`, domains, name))).reports[1];
  const nullMx = await bounce('nullmx.test');
  assert.equal(statuses(nullMx), ['mx fail', 'spf ok']);
  assert.match(nullMx?.checks[0]?.detail ?? '', 'null MX');
  assert.equal(statuses(await bounce('twospf.test')), ['mx ok', 'spf fail']);
  const gone = await bounce('gone.test');
  assert.equal(statuses(gone), ['mx fail', 'spf warn']);
  assert.match(gone?.checks[0]?.detail ?? '', 'does not exist');
  const aOnly = await bounce('aonly.test');
  assert.equal(statuses(aOnly), ['mx warn', 'spf warn']);
  assert.equal(aOnly?.checks[0]?.found, ['192.0.2.30']);
});

test("SPF is evaluated for --ip and the configuration's public source addresses; a record over receivers' lookup limit fails", async () => {
  const file = join(dir, 'addresses.yaml');
  writeFileSync(file, YAML.stringify({
    // 10.0.0.5 is translated on its way out: not evaluated. 1.2.3.4 is not in the record.
    delivery: { bounceDomain: 'bounce.test', bindAddress: '10.0.0.5', dns: { servers: [dns.server], timeout: '3s' } },
    shaping: { rules: [{ name: 'partner', match: { domains: ['partner.test'], mx: [] }, bindAddress: '1.2.3.4' }] },
    accounts: [{ id: 'acme', domains: [{ domain: 'good.test', dkim: keys(['s1', 'rsa', 'rsa']) }], apiKeys: [apiHash], smtpUsers: [], dailyQuota: null, rateLimit: { perSecond: null, perMinute: null, perHour: null } }],
  }));
  const asked = dns.queries('bounce.test', 'TXT');
  const r = await check(file, '--ip', '192.0.2.25');
  assert.is(r.code, 1);
  assert.is(dns.queries('bounce.test', 'TXT') - asked, 1, 'the record read once for showing it and the three evaluations');
  const spfChecks = r.reports[1]?.checks.filter((c) => c.check === 'spf') ?? [];
  assert.equal(spfChecks.map((c) => `${c.address ?? 'record'} ${c.status}`), ['record ok', '192.0.2.25 ok', '1.2.3.4 fail']);
  assert.match(spfChecks[0]?.detail ?? '', '0 of 10 DNS-querying terms');
  assert.match(spfChecks[2]?.detail ?? '', '1.2.3.4: fail (-all at bounce.test); add ip4:1.2.3.4 to the record');
  assert.is((await sluice(['domain', 'check', '--config', file, '--ip', 'nope'])).code, 2);

  dns.set('bounce.test', { MX: [{ preference: 10, exchange: 'mx1.bounce.test' }], TXT: [`v=spf1 ${Array.from({ length: 11 }, (_, i) => `include:p${i}.bounce.test`).join(' ')} -all`] });
  for (let i = 0; i < 11; i++) dns.set(`p${i}.bounce.test`, { TXT: [`v=spf1 ip4:198.51.100.${i} -all`] });
  try {
    const over = await check(configFile('over.yaml', [{ domain: 'good.test', dkim: keys(['s1', 'rsa', 'rsa']) }]));
    assert.is(over.code, 1);
    const [spf] = over.reports[1]?.checks.filter((c) => c.check === 'spf') ?? [];
    assert.is(spf?.status, 'fail');
    assert.match(spf?.detail ?? '', 'more than 10 DNS-querying terms');
  } finally {
    dns.set('bounce.test', { MX: [{ preference: 20, exchange: 'mx2.bounce.test' }, { preference: 10, exchange: 'mx1.bounce.test' }], TXT: ['v=spf1 ip4:192.0.2.25 -all', 'other=1'] });
  }
});

test("a domain's own return path is checked as its envelope domain; the bounce domain still for the others", async () => {
  const file = configFile('rp.yaml', [{ domain: 'good.test', dkim: keys(['s1', 'rsa', 'rsa']), returnPath: 'rp.good.test' } as never, { domain: 'warn.test', dkim: keys(['s1', 'rsa', 'rsa']) }]);
  const r = await check(file, '--ip', '192.0.2.25');
  assert.equal(r.reports.map((x) => `${x.domain} ${x.kind}`), ['good.test sending', 'warn.test sending', 'rp.good.test bounce', 'bounce.test bounce']);
  assert.equal(statuses(r.reports[2]), ['mx ok', 'spf ok', 'spf ok']);
  assert.match(r.reports[0]?.checks.at(-1)?.detail ?? '', "its envelope sender's domain rp.good.test aligns SPF");
  const only = await check(file, '--domain', 'good.test');
  assert.equal(only.reports.map((x) => x.domain), ['good.test', 'rp.good.test'], 'its mail never uses the bounce domain');
  const text = await sluice(['domain', 'check', '--config', file, '--domain', 'good.test']);
  assert.match(text.out, 'rp.good.test (return path of good.test)');
});

test('--account and --domain narrow the check; an unknown one is a usage error', async () => {
  const file = configFile('two.yaml', [{ domain: 'good.test', dkim: keys(['s1', 'rsa', 'rsa']) }, { domain: 'bad.test', dkim: keys(['s1', 'rsa', 'rsa']) }]);
  const one = await check(file, '--domain', 'GOOD.test');
  assert.equal(one.reports.map((x) => x.domain), ['good.test', 'bounce.test'], 'that domain, and the bounce domain its mail goes out with');
  assert.is(one.code, 0);
  assert.equal((await check(file, '--account', 'acme')).reports.map((x) => x.domain), ['good.test', 'bad.test', 'bounce.test']);
  const unknown = await sluice(['domain', 'check', '--config', file, '--account', 'nobody']);
  assert.is(unknown.code, 2);
  assert.match(unknown.err, "no account 'nobody'");
  const other = await sluice(['domain', 'check', '--config', file, '--domain', 'else.test']);
  assert.is(other.code, 2);
  assert.match(other.err, "sends for 'else.test'");
  assert.is((await sluice(['domain', 'verify', '--config', file])).code, 2);
});

test.run();
