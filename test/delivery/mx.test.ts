import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { MxResolver, type MxResolverOptions, type Route } from '../../src/delivery/mx.js';
import { createSocket } from 'node:dgram';
import { FORGED_EXCHANGE, startDnsStub, type DnsStub } from '../helpers/dns-stub.js';

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
  // MX and address TTLs that differ
  'shortmx.test': { MX: [{ preference: 10, exchange: 'mx.shortmx.test' }], ttl: 30 },
  'mx.shortmx.test': { A: ['192.0.2.30'], ttl: 3600 },
  'shorta.test': { MX: [{ preference: 10, exchange: 'mx.shorta.test' }], ttl: 3600 },
  'mx.shorta.test': { A: ['192.0.2.31'], ttl: 20 },
  'implicit-shortmx.test': { CNAME: 'implicit.target.test', ttl: 15 },
  'implicit.target.test': { A: ['192.0.2.32'], ttls: { A: 3600, CNAME: 3600 } },
  // an alias whose target has the MX records
  'alias.test': { CNAME: 'Target.Alias.Test.', ttl: 10 },
  'target.alias.test': { MX: [{ preference: 10, exchange: 'mx.target.alias.test' }], ttl: 3600 },
  'mx.target.alias.test': { A: ['192.0.2.40'], ttl: 3600 },
  'dangling.test': { CNAME: 'nothing-there.test' },
  // an MX answer too long for UDP: truncated there, whole over TCP
  'big.test': {
    MX: [
      { preference: 10, exchange: 'mx1.big.test' },
      { preference: 20, exchange: 'mx2.big.test' },
      { preference: 30, exchange: 'mx3.big.test' },
    ],
    truncate: true,
  },
  'mx1.big.test': { A: ['192.0.2.51'] },
  'mx2.big.test': { A: ['192.0.2.52'] },
  'mx3.big.test': { A: ['192.0.2.53'] },
  // a forged reply arrives before the real one, or alone
  'forged-id.test': { MX: [{ preference: 10, exchange: 'mx.real.test' }], forge: 'id' as const },
  'forged-name.test': { MX: [{ preference: 10, exchange: 'mx.real.test' }], forge: 'name' as const },
  'forged-type.test': { MX: [{ preference: 10, exchange: 'mx.real.test' }], forge: 'type' as const },
  'forged-source.test': { MX: [{ preference: 10, exchange: 'mx.real.test' }], forge: 'source' as const },
  'forged-only.test': { forge: 'id' as const, rcode: 'DROP' as const },
  'mx.real.test': { A: ['192.0.2.60'] },
  [FORGED_EXCHANGE]: { A: ['203.0.113.66'] },
  'refused.test': { rcode: 'REFUSED' as const },
  // 300 exchanges, each with an address; 25 where only the last one has an address
  'huge.test': { MX: Array.from({ length: 300 }, (_, i) => ({ preference: i, exchange: `mx${i}.huge.test` })) },
  ...Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`mx${i}.huge.test`, { A: [`198.51.100.${i % 250}`] }])),
  'deadlist.test': { MX: Array.from({ length: 25 }, (_, i) => ({ preference: i, exchange: `mx${i}.deadlist.test` })) },
  'mx24.deadlist.test': { A: ['198.51.100.24'] },
  // exchanges (and an implicit MX) that are this host
  'loop.test': { MX: [{ preference: 10, exchange: 'mx.loop.test' }, { preference: 20, exchange: 'mx6.loop.test' }] },
  'mx.loop.test': { A: ['127.0.0.1'] },
  'mx6.loop.test': { A: ['0.0.0.0'], AAAA: ['::1'] },
  'halfloop.test': { MX: [{ preference: 10, exchange: 'mx.loop.test' }, { preference: 20, exchange: 'mx.halfloop.test' }] },
  'mx.halfloop.test': { A: ['192.0.2.80', '127.0.0.2'] },
  'implicitloop.test': { A: ['127.1.2.3'] },
  // seven addresses: on seven exchanges of distinct preferences, on the domain itself (no MX), on a smarthost
  'seven.test': { MX: Array.from({ length: 7 }, (_, i) => ({ preference: 10 * (i + 1), exchange: `mx${i}.seven.test` })) },
  ...Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`mx${i}.seven.test`, { A: [`192.0.2.${100 + i}`] }])),
  'implicit7.test': { A: Array.from({ length: 7 }, (_, i) => `192.0.2.${110 + i}`) },
  'smarthost7.test': { A: Array.from({ length: 7 }, (_, i) => `192.0.2.${120 + i}`) },
  // four exchanges of one preference (one of them also on IPv6), and a backup
  'equal.test': { MX: [...Array.from({ length: 4 }, (_, i) => ({ preference: 10, exchange: `mx${i}.equal.test` })), { preference: 20, exchange: 'backup.equal.test' }] },
  ...Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`mx${i}.equal.test`, { A: [`192.0.2.${130 + i}`] }])),
  'mx0.equal.test': { A: ['192.0.2.130'], AAAA: ['2001:db8::130'] },
  'backup.equal.test': { A: ['192.0.2.139'] },
  'mappedloop.test': { AAAA: ['::ffff:127.0.0.1'] },
  // exchanges (and implicit MXs) on private or reserved addresses
  'halfpriv.test': { MX: [{ preference: 10, exchange: 'mx.priv.test' }, { preference: 20, exchange: 'mx.halfpriv.test' }] },
  'mx.priv.test': { A: ['10.0.0.5'] },
  'mx.halfpriv.test': { A: ['192.0.2.90', '172.16.0.9'], AAAA: ['fd00::25', '2001:db8::90'] },
  'allpriv.test': { MX: ['mx.priv.test', 'mx.meta.test', 'mx.ula.test', 'mx.mapped.test', 'mx.reserved.test'].map((exchange, i) => ({ preference: 10 * (i + 1), exchange })) },
  'mx.meta.test': { A: ['169.254.169.254'] },
  'mx.ula.test': { AAAA: ['fd12:3456::25', 'fe80::1', 'ff02::1'] },
  'mx.mapped.test': { AAAA: ['::ffff:192.168.1.1', '::ffff:a00:7'] },
  'mx.reserved.test': { A: ['100.64.0.1', '192.0.0.8', '198.18.0.1', '224.0.0.1', '240.0.0.1', '0.1.2.3'] },
  'implicitpriv.test': { A: ['192.168.1.10'] },
  'implicitula.test': { AAAA: ['fc00::1'] },
  'loopandpriv.test': { MX: [{ preference: 10, exchange: 'mx.loop.test' }, { preference: 20, exchange: 'mx.priv.test' }] },
  'smarthost.priv.test': { A: ['10.0.0.7'] },
};

function resolver(over: Partial<MxResolverOptions> = {}): MxResolver {
  return new MxResolver({ servers: [dns.server], timeoutMs: 600, maxCacheTtlMs: 3_600_000, negativeCacheTtlMs: 300_000, transport: {}, maxAddresses: 5, now: () => clock, ...over });
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
  assert.equal(route.hosts, [{ host: '192.0.2.9', port: 2525, mx: 'implicit.test', pref: 0 }]);
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
  assert.equal(exact, { kind: 'hosts', hosts: [{ host: '127.0.0.1', port: 2525, mx: '127.0.0.1', pref: 0 }], mxHosts: ['127.0.0.1'], viaTransport: true });
  const star = hostsOf(await r.resolve('anything.example'));
  assert.equal(star.hosts, [{ host: '192.0.2.77', port: 587, mx: 'relay.test', pref: 0 }]);
  assert.is(star.viaTransport, true);
  assert.is(dns.queries('anything.example'), 0);
  assert.equal(hostsOf(await r.resolve('v6.test')).hosts, [{ host: '::1', port: 26, mx: '::1', pref: 0 }]);
});

test("transport map: '*.domain' takes every subdomain (the nearest wins) but not the domain itself; an exact domain and '*' as before", async () => {
  const r = resolver({ transport: { '*.corp.test': '127.0.0.1:2601', '*.eu.corp.test': '127.0.0.1:2602', 'x.eu.corp.test': '127.0.0.1:2603', '*': '127.0.0.1:2600' } });
  const port = async (domain: string) => hostsOf(await r.resolve(domain)).hosts[0]?.port;
  assert.is(await port('a.corp.test'), 2601);
  assert.is(await port('a.b.corp.test'), 2601, 'any depth');
  assert.is(await port('y.eu.corp.test'), 2602, 'the nearest parent wins');
  assert.is(await port('x.eu.corp.test'), 2603, 'an exact domain wins');
  assert.is(await port('corp.test'), 2600, "'*.corp.test' is not corp.test itself");
  assert.is(await port('notcorp.test'), 2600);
  assert.is(dns.queries('a.corp.test'), 0);
});

test('a route lives no longer than its MX TTL, even when the addresses have longer ones', async () => {
  const r = resolver();
  const q0 = dns.queries('shortmx.test', 'MX');
  assert.equal(hostsOf(await r.resolve('shortmx.test')).hosts, [{ host: '192.0.2.30', port: 25, mx: 'mx.shortmx.test', pref: 10 }]);
  clock += 29_000;
  await r.resolve('shortmx.test');
  assert.is(dns.queries('shortmx.test', 'MX'), q0 + 1, 'inside the 30 s MX TTL');
  clock += 2000;
  await r.resolve('shortmx.test');
  assert.is(dns.queries('shortmx.test', 'MX'), q0 + 2, 'the 30 s MX TTL ran out; the A TTL is an hour');

  // implicit MX: the CNAME met on the MX question bounds the route too
  const q1 = dns.queries('implicit-shortmx.test', 'MX');
  assert.equal(hostsOf(await r.resolve('implicit-shortmx.test')).hosts, [{ host: '192.0.2.32', port: 25, mx: 'implicit-shortmx.test', pref: 0 }]);
  clock += 16_000;
  await r.resolve('implicit-shortmx.test');
  assert.is(dns.queries('implicit-shortmx.test', 'MX'), q1 + 2, 'the 15 s CNAME TTL ran out');
});

test('a route lives no longer than its shortest address TTL, even when the MX TTL is longer', async () => {
  const r = resolver();
  const q0 = dns.queries('shorta.test', 'MX');
  await r.resolve('shorta.test');
  clock += 19_000;
  await r.resolve('shorta.test');
  assert.is(dns.queries('shorta.test', 'MX'), q0 + 1, 'inside the 20 s A TTL');
  clock += 2000;
  await r.resolve('shorta.test');
  assert.is(dns.queries('shorta.test', 'MX'), q0 + 2, 'the A TTL ran out; the MX TTL is an hour');
});

test('a CNAME in the MX answer is followed to its target, and its TTL bounds the route', async () => {
  const r = resolver();
  const route = hostsOf(await r.resolve('alias.test'));
  assert.equal(route.hosts, [{ host: '192.0.2.40', port: 25, mx: 'mx.target.alias.test', pref: 10 }]);
  assert.equal(route.mxHosts, ['mx.target.alias.test']);
  const q0 = dns.queries('alias.test', 'MX');
  clock += 9000;
  await r.resolve('alias.test');
  assert.is(dns.queries('alias.test', 'MX'), q0, 'inside the 10 s CNAME TTL');
  clock += 2000;
  await r.resolve('alias.test');
  assert.is(dns.queries('alias.test', 'MX'), q0 + 1, 'the CNAME TTL ran out; MX and A TTLs are an hour');

  // an alias to a name that does not exist: NXDOMAIN for the end of the chain
  assert.equal(await r.resolve('dangling.test'), { kind: 'nxdomain' });
});

test('a huge MX list: only the first 2 × maxAddresses exchanges by preference are looked up, as many addresses kept; none of them with an address defers', async () => {
  const route = hostsOf(await resolver().resolve('huge.test'));
  assert.equal(route.hosts.map((h) => h.mx), Array.from({ length: 10 }, (_, i) => `mx${i}.huge.test`));
  assert.is(route.mxHosts.length, 10);
  let asked = 0;
  for (let i = 0; i < 300; i++) if (dns.queries(`mx${i}.huge.test`) > 0) asked++;
  assert.is(asked, 10, 'A/AAAA questions for 10 exchanges, not 300');
  // The exchanges never asked might have addresses: not a bounce.
  const dead = await resolver().resolve('deadlist.test');
  assert.is(dead.kind, 'tempfail', JSON.stringify(dead));
});

test('a truncated UDP answer is asked again over TCP, and the whole answer is used', async () => {
  const route = hostsOf(await resolver().resolve('big.test'));
  assert.equal(route.mxHosts, ['mx1.big.test', 'mx2.big.test', 'mx3.big.test'], 'the truncated UDP answer held only mx1');
  assert.equal(route.hosts.map((h) => h.host), ['192.0.2.51', '192.0.2.52', '192.0.2.53']);
  assert.equal(dns.received('big.test', 'MX').map((q) => q.transport), ['udp', 'tcp']);
});

test('MX queries: RD set, EDNS0 offering 1232 bytes, a random id and a fresh source port each', async () => {
  const before = dns.received('pref.test', 'MX').length;
  for (let i = 0; i < 6; i++) await resolver().resolve('pref.test');
  const sent = dns.received('pref.test', 'MX').slice(before);
  assert.is(sent.length, 6);
  assert.ok(sent.every((q) => q.transport === 'udp' && q.recursionDesired && q.udpPayloadSize === 1232), JSON.stringify(sent));
  // Six equal draws of 16 random bits are a 2^-80 chance; the OS hands out ports from a range.
  assert.ok(new Set(sent.map((q) => q.id)).size > 1, 'ids vary');
  assert.ok(new Set(sent.map((q) => q.port)).size > 1, 'source ports vary');
});

test('a reply with another id, name or type, or from another port, is ignored', async () => {
  const r = resolver();
  for (const kind of ['id', 'name', 'type', 'source']) {
    const route = hostsOf(await r.resolve(`forged-${kind}.test`));
    assert.equal(route.mxHosts, ['mx.real.test'], `forged ${kind}: the real answer that came after`);
  }
  // Nothing but the forged reply: no answer at all, a temporary failure.
  const only = await resolver({ timeoutMs: 300 }).resolve('forged-only.test');
  assert.ok(only.kind === 'tempfail' && only.error.includes('ETIMEOUT'), JSON.stringify(only));
});

test('REFUSED is a temporary failure, and a silent server is followed by the next one', async () => {
  const refused = await resolver().resolve('refused.test');
  assert.ok(refused.kind === 'tempfail' && refused.error.includes('EREFUSED'), JSON.stringify(refused));

  const silent = createSocket('udp4');
  let heard = 0;
  silent.on('message', () => heard++);
  await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
  try {
    const r = resolver({ servers: [`127.0.0.1:${silent.address().port}`, dns.server], timeoutMs: 300 });
    assert.equal(hostsOf(await r.resolve('shortmx.test')).mxHosts, ['mx.shortmx.test']);
    assert.ok(heard >= 1, 'the first server was asked first');
  } finally {
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  }
});

test('the DNS stub serves a long TXT record as 255-byte strings of one record (a DKIM key)', async () => {
  const { Resolver } = await import('node:dns/promises');
  const r = new Resolver({ timeout: 600, tries: 1 });
  r.setServers([dns.server]);
  const [record] = await r.resolveTxt('sel._domainkey.dkim.test');
  assert.equal(record?.map((s) => s.length), [255, 255, 108]);
  assert.is(record?.join(''), `v=DKIM1; k=rsa; p=${'A'.repeat(600)}`);
});

test('an attempt tries at most maxAddresses addresses, by preference: of MX hosts and of an implicit MX (A fallback); a smarthost of the transport map all of its own', async () => {
  const r = resolver();
  const seven = hostsOf(await r.resolve('seven.test'));
  assert.equal(r.attemptHosts(seven).map((h) => h.host), ['192.0.2.100', '192.0.2.101', '192.0.2.102', '192.0.2.103', '192.0.2.104']);
  const implicit = r.attemptHosts(hostsOf(await r.resolve('implicit7.test')));
  assert.is(implicit.length, 5);
  assert.ok(implicit.every((h) => h.mx === 'implicit7.test' && /^192\.0\.2\.11[0-6]$/.test(h.host)));
  const three = resolver({ maxAddresses: 3 });
  assert.equal(three.attemptHosts(hostsOf(await three.resolve('seven.test'))).map((h) => h.host), ['192.0.2.100', '192.0.2.101', '192.0.2.102'], 'as configured');
  // The operator's own host keeps its addresses, in the resolver's order, as before.
  const smarthost = resolver({ transport: { 'seven.test': 'smarthost7.test:2525' } });
  const via = hostsOf(await smarthost.resolve('seven.test'));
  assert.equal(smarthost.attemptHosts(via).map((h) => h.host), Array.from({ length: 7 }, (_, i) => `192.0.2.${120 + i}`));
  assert.ok(via.hosts.every((h) => h.port === 2525));
  // A null MX has no address to try at all.
  assert.equal(await r.resolve('nullmx.test'), { kind: 'nullmx' });
});

test('each attempt draws the order within a preference afresh from the cached route, IPv4 before IPv6, the backup last', async () => {
  const r = resolver({ maxAddresses: 10 });
  const route = hostsOf(await r.resolve('equal.test'));
  const firsts = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const hosts = r.attemptHosts(route).map((h) => h.host);
    assert.equal(new Set(hosts.slice(0, 4)), new Set(['192.0.2.130', '192.0.2.131', '192.0.2.132', '192.0.2.133']));
    assert.equal(hosts.slice(4), ['2001:db8::130', '192.0.2.139'], 'the IPv6 address after every IPv4 one of its preference, the backup after both');
    firsts.add(hosts[0] as string);
  }
  assert.is(dns.queries('equal.test', 'MX'), 1, 'one lookup: the draws are per attempt, not per lookup');
  // 40 draws of one of four, all missing one of them: probability below 4 × (3/4)^40 ≈ 4e-5.
  assert.is(firsts.size, 4, 'every exchange of the preference comes first sometimes');
});

test('MX hosts whose addresses are this host (loopback, unspecified) are skipped; with only those the route is loopback; loopbackMx follows them', async () => {
  const r = resolver();
  assert.equal(await r.resolve('loop.test'), { kind: 'loopback', hosts: ['mx.loop.test', 'mx6.loop.test'] });
  assert.equal(await r.resolve('implicitloop.test'), { kind: 'loopback', hosts: ['implicitloop.test'] });
  assert.equal(await r.resolve('mappedloop.test'), { kind: 'loopback', hosts: ['mappedloop.test'] }, 'an IPv4-mapped loopback address too');
  const half = await r.resolve('halfloop.test');
  assert.is(half.kind, 'hosts');
  assert.equal(half.kind === 'hosts' ? half.hosts.map((h) => h.host) : [], ['192.0.2.80'], 'only the remote address is kept');
  const follow = await resolver({ loopbackMx: true }).resolve('loop.test');
  assert.equal(follow.kind === 'hosts' ? follow.hosts.map((h) => h.host) : follow, ['127.0.0.1', '0.0.0.0', '::1']);
  // A smarthost on loopback is the operator's own choice: the transport map is not filtered.
  const smarthost = await resolver({ transport: { 'loop.test': '127.0.0.1:2525' } }).resolve('loop.test');
  assert.is(smarthost.kind, 'hosts');
});

test('MX hosts whose addresses are private or reserved are skipped: an exchange keeps its public ones, another exchange is used', async () => {
  const r = resolver();
  const half = hostsOf(await r.resolve('halfpriv.test'));
  assert.equal(half.hosts.map((h) => h.host), ['192.0.2.90', '2001:db8::90'], 'documentation addresses are followed, 10/8, 172.16/12 and fc00::/7 are not');
  assert.equal(half.mxHosts, ['mx.priv.test', 'mx.halfpriv.test']);
});

test('only private or reserved addresses (IPv4, IPv6 ULA/link-local/multicast, IPv4-mapped) → a private route, cached as negative; privateMx follows them', async () => {
  const r = resolver();
  assert.equal(await r.resolve('allpriv.test'), { kind: 'private', hosts: ['mx.priv.test', 'mx.meta.test', 'mx.ula.test', 'mx.mapped.test', 'mx.reserved.test'] });
  assert.equal(await r.resolve('implicitpriv.test'), { kind: 'private', hosts: ['implicitpriv.test'] }, 'an implicit MX (A fallback) too');
  assert.equal(await r.resolve('implicitula.test'), { kind: 'private', hosts: ['implicitula.test'] });
  assert.equal(await r.resolve('loopandpriv.test'), { kind: 'private', hosts: ['mx.loop.test', 'mx.priv.test'] }, 'loopback and private exchanges: the route is about the private ones');
  assert.equal(await r.resolve('loop.test'), { kind: 'loopback', hosts: ['mx.loop.test', 'mx6.loop.test'] }, 'loopback alone is still a loop');
  const asked = dns.queries('allpriv.test', 'MX');
  clock += 60_000; // within negativeCacheTtlMs
  await r.resolve('allpriv.test');
  assert.is(dns.queries('allpriv.test', 'MX'), asked, 'cached for negativeCacheTtlMs');

  const follow = resolver({ privateMx: true, maxAddresses: 10 });
  const all = hostsOf(await follow.resolve('allpriv.test'));
  // IPv4-mapped IPv6 addresses are the IPv4 addresses they hold (a connection to one takes delivery.bindAddress).
  assert.equal(all.hosts.map((h) => h.host), ['10.0.0.5', '169.254.169.254', 'fd12:3456::25', 'fe80::1', 'ff02::1', '192.168.1.1', '10.0.0.7', '100.64.0.1', '192.0.0.8', '198.18.0.1', '224.0.0.1', '240.0.0.1', '0.1.2.3']);
  assert.equal(hostsOf(await follow.resolve('implicitpriv.test')).hosts.map((h) => h.host), ['192.168.1.10']);
  // privateMx does not follow loopback ones (loopbackMx's), nor loopbackMx private ones.
  assert.equal(await follow.resolve('loop.test'), { kind: 'loopback', hosts: ['mx.loop.test', 'mx6.loop.test'] });
  assert.equal(hostsOf(await follow.resolve('loopandpriv.test')).hosts.map((h) => h.host), ['10.0.0.5']);
  assert.equal(await resolver({ loopbackMx: true }).resolve('implicitpriv.test'), { kind: 'private', hosts: ['implicitpriv.test'] });
});

test('a transport map reloaded while a lookup of the domain runs: a caller after the reload gets the new map\'s route, not the running lookup', async () => {
  const r = resolver();
  const before = r.resolve('silent.test'); // never answered: runs until its timeout
  r.setTransport({ 'silent.test': '127.0.0.1:2526' });
  const after = await r.resolve('silent.test');
  assert.ok(after.kind === 'hosts' && after.viaTransport, JSON.stringify(after));
  assert.is((await before).kind, 'tempfail', 'the lookup begun under the old map ends for its own caller');
  const later = await r.resolve('silent.test');
  assert.ok(later.kind === 'hosts' && later.viaTransport, 'and changes nothing after it');
});

test('the transport map is never filtered: a smarthost on a private address, by IP or by name, is used', async () => {
  const byIp = hostsOf(await resolver({ transport: { 'allpriv.test': '10.0.0.5:2525' } }).resolve('allpriv.test'));
  assert.equal(byIp.hosts, [{ host: '10.0.0.5', port: 2525, mx: '10.0.0.5', pref: 0 }]);
  const byName = hostsOf(await resolver({ transport: { '*': 'smarthost.priv.test:25' } }).resolve('implicitpriv.test'));
  assert.equal(byName.hosts.map((h) => h.host), ['10.0.0.7']);
  assert.is(byName.viaTransport, true);
});

test.run();
