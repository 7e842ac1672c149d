import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { startDnsStub, type DnsStub } from '../helpers/dns-stub.js';
import { bindAddressesOf, checkBindable, sourceFor } from '../../src/delivery/bind.js';
import { loadConfig } from '../../src/config/load.js';
import { isSluiceError } from '../../src/core/errors.js';

/**
 * delivery.bindAddress / bindAddress6 (Postfix smtp_bind_address): outbound connections leave from
 * the configured address of the host's family. The peer on 127.0.0.1 sees the connection come from
 * 127.0.0.9, reached through the transport map and through an MX lookup (a DNS stub); a shaping
 * rule's own address (127.0.0.10) wins for its destinations.
 */
const test = suite('e2e/bind-address');

let redis: TestRedis;
let sink: CapturePeer;
let dns: DnsStub;
let s: SluiceFixture;

test.before(async () => {
  redis = await startRedis();
  sink = await startCapturePeer();
  dns = await startDnsStub({ 'bymx.test': { MX: [{ preference: 10, exchange: 'mx.bymx.test' }] }, 'mx.bymx.test': { A: ['127.0.0.1'] } });
  s = await startSluiceFixture(
    redis,
    {
      delivery: {
        bindAddress: '127.0.0.9',
        transport: { 'bymap.test': `${sink.host}:${sink.port}`, 'ruled.test': `${sink.host}:${sink.port}` },
        dns: { servers: [dns.server], loopbackMx: true },
      },
      shaping: { rules: [{ name: 'partner', match: { domains: ['ruled.test'], mx: [] }, bindAddress: '127.0.0.10', ehloName: 'out2.sluice.test' }] },
    },
    { mxPort: sink.port },
  );
});

test.after(async () => {
  await s?.stop();
  await sink?.close();
  await dns?.close();
  await redis?.stop();
});

test("mail leaves from delivery.bindAddress, through the transport map and through MX, and from a rule's own address and EHLO name for its destinations", async () => {
  for (const [to, from, ehlo] of [['ann@bymap.test', '127.0.0.9', 'sluice.test'], ['bob@bymx.test', '127.0.0.9', 'sluice.test'], ['cy@ruled.test', '127.0.0.10', 'out2.sluice.test']] as const) {
    const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to, subject: `bind ${to}`, text: 'x' } });
    assert.is(r.status, 202, JSON.stringify(r.body));
    const final = await s.waitFinal(r.body.id);
    assert.is(final.recipients[0].state, 'delivered', JSON.stringify(final));
    const got = sink.messages.filter((m) => m.envelope.to.includes(to));
    assert.is(got.length, 1);
    assert.is(got[0]?.remoteAddress, from, `${to} came from ${got[0]?.remoteAddress}`);
    assert.is(got[0]?.ehloName, ehlo, `${to}: EHLO ${got[0]?.ehloName}`);
  }
});

test("sourceFor: an IP address takes its family's source address, or none (the system chooses)", () => {
  const both = { v4: '192.0.2.10', v6: '2001:db8::10' };
  assert.equal(sourceFor('198.51.100.7', both), { localAddress: '192.0.2.10' });
  assert.equal(sourceFor('2001:db8::25', both), { localAddress: '2001:db8::10' });
  assert.equal(sourceFor('2001:db8::25', { v4: '192.0.2.10', v6: null }), {});
  assert.equal(sourceFor('198.51.100.7', { v4: null, v6: '2001:db8::10' }), {});
  assert.equal(sourceFor('relay.example', both), {}, 'not an address');
});

test('an address this host does not have is refused at start, naming the key; one that is not an IP by the config check', async () => {
  const config = (bindAddress: string | null, ruleAddress: string) =>
    loadConfig({ env: {}, overrides: { delivery: { bindAddress }, shaping: { rules: [{ name: 'partner', match: { domains: ['p.test'], mx: [] }, bindAddress: ruleAddress }] } } });
  await checkBindable(bindAddressesOf(config('127.0.0.9', '127.0.0.10')));
  for (const [c, key] of [[config('192.0.2.77', '127.0.0.10'), 'delivery.bindAddress'], [config('127.0.0.9', '192.0.2.77'), 'shaping.rules.0.bindAddress']] as const) {
    try {
      await checkBindable(bindAddressesOf(c));
      assert.unreachable('192.0.2.77 is not on this host');
    } catch (err) {
      assert.ok(isSluiceError(err, 'SLUICE_CONFIG_INVALID'), String(err));
      assert.is((err as Error).message.split(' (')[0], `${key}: 192.0.2.77 is not an address of this host`);
      assert.match((err as Error).message, /\(EADDRNOTAVAIL\)/);
    }
  }
  try {
    loadConfig({ env: {}, overrides: { delivery: { bindAddress: 'mail.example', bindAddress6: '10.0.0.1' } } });
    assert.unreachable();
  } catch (err) {
    assert.match(String((err as Error).message), /delivery\.bindAddress.*must be an IPv4 address/s);
    assert.match(String((err as Error).message), /delivery\.bindAddress6.*must be an IPv6 address/s);
  }
});

test.run();
