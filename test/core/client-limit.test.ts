import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ClientLimiter, parseCidr } from '../../src/core/client-limit.js';
import { expandIpv6 } from '../../src/core/ip.js';

const test = suite('core/client-limit');

test('counts each IPv4 client up to the limit, and a released connection frees its slot', () => {
  const l = new ClientLimiter(2);
  const a = l.admit('203.0.113.7');
  const b = l.admit('203.0.113.7');
  assert.is(a, '203.0.113.7');
  assert.is(b, '203.0.113.7');
  assert.is(l.admit('203.0.113.7'), null, 'third from one client');
  assert.is(l.admit('203.0.113.8'), '203.0.113.8', 'another client has its own count');
  l.release(a as string);
  assert.is(l.admit('203.0.113.7'), '203.0.113.7', 'admitted again after a release');
  assert.is(l.admit('203.0.113.7'), null);
});

test('an IPv4 client on a dual-stack socket counts as its IPv4 address', () => {
  const l = new ClientLimiter(1);
  assert.is(l.admit('::ffff:198.51.100.4'), '198.51.100.4');
  assert.is(l.admit('198.51.100.4'), null);
});

test('IPv6 clients are counted by /64: any address of a network shares its count', () => {
  const l = new ClientLimiter(2);
  assert.is(l.admit('2001:db8:1:2::1'), '2001:db8:1:2::/64');
  assert.is(l.admit('2001:DB8:1:2:ffff:ffff:ffff:fffe'), '2001:db8:1:2::/64');
  assert.is(l.admit('2001:db8:1:2:0:0:0:99'), null, 'a third address of the same /64');
  assert.is(l.admit('2001:db8:1:3::1'), '2001:db8:1:3::/64', 'the next /64 is another client');
});

test('exempt networks and unknown addresses are not counted', () => {
  const l = new ClientLimiter(1, ['127.0.0.0/8', '::1', '10.1.0.0/16']);
  for (let i = 0; i < 5; i++) {
    assert.is(l.admit('127.0.0.1'), '');
    assert.is(l.admit('::1'), '');
    assert.is(l.admit('10.1.200.3'), '');
    assert.is(l.admit(''), '', 'no address (a closed socket)');
  }
  assert.is(l.clients, 0);
  assert.is(l.admit('10.2.0.1'), '10.2.0.1', 'outside the exempt /16');
  assert.is(l.admit('10.2.0.1'), null);
  l.release('');
  assert.is(l.clients, 1, 'releasing an uncounted connection changes nothing');
});

test('parseCidr takes addresses and networks, and refuses anything else', () => {
  assert.equal(parseCidr('127.0.0.0/8'), ['127.0.0.0', 8]);
  assert.equal(parseCidr('::1'), ['::1', 128]);
  assert.equal(parseCidr('192.0.2.1'), ['192.0.2.1', 32]);
  assert.equal(parseCidr('2001:db8::/32'), ['2001:db8::', 32]);
  for (const bad of ['', 'localhost', '10.0.0.0/33', '::/129', '10.0.0.0/', '10.0.0.0/8/8', '10.0.0.0/-1', '300.1.1.1']) assert.is(parseCidr(bad), null, bad);
  assert.throws(() => new ClientLimiter(1, ['not-a-network']));
});

test('expandIpv6 gives the eight groups, or null for a malformed address', () => {
  assert.equal(expandIpv6('2001:db8::1'), [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
  assert.equal(expandIpv6('::ffff:192.0.2.1'), [0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201]);
  assert.equal(expandIpv6('fe80::1%eth0'), [0xfe80, 0, 0, 0, 0, 0, 0, 1]);
  assert.is(expandIpv6('1:2:3:4:5:6:7:8:9'), null);
  assert.is(expandIpv6('1::2::3'), null);
  assert.is(expandIpv6('12345::'), null);
});

test.run();
