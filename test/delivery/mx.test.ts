import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { MxResolver, type MxResolverOptions, type Route } from '../../src/delivery/mx.js';
import { startDnsStub, type DnsStub } from '../helpers/dns-stub.js';

const test = suite('delivery/mx');
let dns: DnsStub;
let clock = 1_000_000;

const TTL_S = 60;
const zone = {
  'pref.test': {
    MX: [
      { preference: 20, exchange: 'mx-b.pref.test' },
      { preference: 10, exchange: 'mx-a1.pref.test' },
      { preference: 10, exchange: 'mx-a2.pref.test' },
      { preference: 30, exchange: 'mx-gone.pref.test' },
    ],
    ttl: TTL_S,
  },
  'mx-a1.pref.test': { A: ['192.0.2.1'], AAAA: ['2001:db8::1'], ttl: TTL_S },
  'mx-a2.pref.test': { A: ['192.0.2.2'], ttl: TTL_S },
  'mx-b.pref.test': { A: ['192.0.2.3'], ttl: TTL_S },
  'mx-gone.pref.test': { rcode: 'NXDOMAIN' as const },
  'implicit.test': { A: ['192.0.2.9'], ttl: 30 },
  'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },
  'nxdomain.test': { rcode: 'NXDOMAIN' as const },
  'servfail.test': { rcode: 'SERVFAIL' as const },
  'silent.test': { rcode: 'DROP' as const },
  'empty.test': { TXT: ['v=spf1 -all'] },
  'deadmx.test': { MX: [{ preference: 10, exchange: 'nowhere.deadmx.test' }] },
  'brokenmx.test': { MX: [{ preference: 10, exchange: 'sf.brokenmx.test' }] },
  'sf.brokenmx.test': { rcode: 'SERVFAIL' as const },
  'relay.test': { A: ['192.0.2.77'] },
  'sel._domainkey.dkim.test': { TXT: [`v=DKIM1; k=rsa; p=${'A'.repeat(600)}`] },
};

function resolver(over: Partial<MxResolverOptions> = {}): MxResolver {
  return new MxResolver({ servers: [dns.server], timeoutMs: 600, maxCacheTtlMs: 3_600_000, negativeCacheTtlMs: 300_000, transport: {}, now: () => clock, ...over });
}

function hostsOf(route: Route) {
  if (route.kind !== 'hosts') throw new Error(`expected hosts, got ${JSON.stringify(route)}`);
  return route;
}

test.before(async () => {
  dns = await startDnsStub(zone);
});
test.after(async () => {
  await dns.close();
});

test('MX records are tried by preference, equal preferences in random order, IPv4 before IPv6', async () => {
  const seenFirst = new Set<string>();
  for (let i = 0; i < 24; i++) {
    const route = hostsOf(await resolver().resolve('pref.test'));
    assert.is(route.viaTransport, false);
    const mxOrder = [...new Set(route.hosts.map((h) => h.mx))];
    assert.equal(mxOrder.slice(2), ['mx-b.pref.test'], 'preference 20 after both preference 10 hosts; the NXDOMAIN exchange is skipped');
    assert.equal(new Set(mxOrder.slice(0, 2)), new Set(['mx-a1.pref.test', 'mx-a2.pref.test']));
    const a1 = route.hosts.filter((h) => h.mx === 'mx-a1.pref.test').map((h) => h.host);
    assert.equal(a1, ['192.0.2.1', '2001:db8::1']);
    assert.ok(route.hosts.every((h) => h.port === 25));
    assert.equal(new Set(route.mxHosts), new Set(['mx-a1.pref.test', 'mx-a2.pref.test', 'mx-b.pref.test', 'mx-gone.pref.test']));
    seenFirst.add(mxOrder[0] as string);
  }
  // 24 draws of a fair coin all landing on one side: probability 2^-23.
  assert.is(seenFirst.size, 2, 'both preference-10 exchanges come first sometimes');
});

test('no MX record: the domain itself is the host (implicit MX, A fallback), on the configured port', async () => {
  const route = hostsOf(await resolver({ port: 2525 }).resolve('Implicit.Test.'));
  assert.equal(route.hosts, [{ host: '192.0.2.9', port: 2525, mx: 'implicit.test' }]);
  assert.equal(route.mxHosts, ['implicit.test']);
});

test('RFC 7505 null MX → nullmx; NXDOMAIN → nxdomain; no MX and no address → nxdomain', async () => {
  const r = resolver();
  assert.equal(await r.resolve('nullmx.test'), { kind: 'nullmx' });
  assert.equal(await r.resolve('nxdomain.test'), { kind: 'nxdomain' });
  assert.equal(await r.resolve('not-in-zone.test'), { kind: 'nxdomain' });
  assert.equal(await r.resolve('empty.test'), { kind: 'nxdomain' });
  assert.equal(await r.resolve('deadmx.test'), { kind: 'nxdomain' }, 'the only exchange does not exist');
});

test('SERVFAIL and a silent server are temporary failures, and are not cached', async () => {
  const r = resolver();
  const sf = await r.resolve('servfail.test');
  assert.is(sf.kind, 'tempfail');
  assert.ok(sf.kind === 'tempfail' && sf.error.includes('ESERVFAIL'), JSON.stringify(sf));
  const before = dns.queries('servfail.test', 'MX');
  await r.resolve('servfail.test');
  assert.is(dns.queries('servfail.test', 'MX'), before + 1, 'asked again');

  const silent = await r.resolve('silent.test');
  assert.is(silent.kind, 'tempfail');
  assert.ok(silent.kind === 'tempfail' && silent.error.includes('ETIMEOUT'), JSON.stringify(silent));

  const broken = await r.resolve('brokenmx.test');
  assert.is(broken.kind, 'tempfail', 'an exchange whose address lookup fails defers, it does not bounce');
});

test('answers are cached for their TTL and concurrent lookups of one domain share one query', async () => {
  const r = resolver();
  const q0 = dns.queries('pref.test', 'MX');
  const routes = await Promise.all(Array.from({ length: 20 }, () => r.resolve('pref.test')));
  assert.is(dns.queries('pref.test', 'MX'), q0 + 1, 'twenty concurrent lookups, one query');
  assert.ok(routes.every((x) => x === routes[0]));
  clock += (TTL_S - 1) * 1000;
  await r.resolve('pref.test');
  assert.is(dns.queries('pref.test', 'MX'), q0 + 1, 'still inside the TTL');
  clock += 2000;
  await r.resolve('pref.test');
  assert.is(dns.queries('pref.test', 'MX'), q0 + 2, 'asked again once the TTL ran out');

  // maxCacheTtlMs caps the TTL
  const capped = resolver({ maxCacheTtlMs: 5000 });
  const q1 = dns.queries('implicit.test', 'A');
  await capped.resolve('implicit.test');
  clock += 6000;
  await capped.resolve('implicit.test');
  assert.is(dns.queries('implicit.test', 'A'), q1 + 2);
});

test('negative answers are cached for negativeCacheTtlMs', async () => {
  const r = resolver({ negativeCacheTtlMs: 10_000 });
  const q0 = dns.queries('nxdomain.test', 'MX');
  await r.resolve('nxdomain.test');
  await r.resolve('nxdomain.test');
  assert.is(dns.queries('nxdomain.test', 'MX'), q0 + 1);
  clock += 11_000;
  await r.resolve('nxdomain.test');
  assert.is(dns.queries('nxdomain.test', 'MX'), q0 + 2);
  // a changed answer is seen after the negative TTL
  dns.set('nxdomain.test', { A: ['192.0.2.50'] });
  clock += 11_000;
  assert.is(hostsOf(await r.resolve('nxdomain.test')).hosts[0]?.host, '192.0.2.50');
  dns.set('nxdomain.test', { rcode: 'NXDOMAIN' });
});

test('transport map: an exact domain wins over *, names are resolved without MX, no MX query is sent', async () => {
  const r = resolver({ transport: { 'pref.test': '127.0.0.1:2525', '*': 'relay.test:587', 'v6.test': '[::1]:26' } });
  const exact = hostsOf(await r.resolve('pref.test'));
  assert.equal(exact, { kind: 'hosts', hosts: [{ host: '127.0.0.1', port: 2525, mx: '127.0.0.1' }], mxHosts: ['127.0.0.1'], viaTransport: true });
  const star = hostsOf(await r.resolve('anything.example'));
  assert.equal(star.hosts, [{ host: '192.0.2.77', port: 587, mx: 'relay.test' }]);
  assert.is(star.viaTransport, true);
  assert.is(dns.queries('anything.example'), 0);
  assert.equal(hostsOf(await r.resolve('v6.test')).hosts, [{ host: '::1', port: 26, mx: '::1' }]);
});

test('the DNS stub serves a long TXT record as 255-byte strings of one record (a DKIM key)', async () => {
  const { Resolver } = await import('node:dns/promises');
  const r = new Resolver({ timeout: 600, tries: 1 });
  r.setServers([dns.server]);
  const [record] = await r.resolveTxt('sel._domainkey.dkim.test');
  assert.equal(record?.map((s) => s.length), [255, 255, 108]);
  assert.is(record?.join(''), `v=DKIM1; k=rsa; p=${'A'.repeat(600)}`);
});

test.run();
