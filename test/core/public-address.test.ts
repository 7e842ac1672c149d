import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { addressScope, isPublicAddress } from '../../src/core/public-address.js';

const test = suite('core/public-address');

test('addressScope: this host, private or reserved, documentation, public; IPv4-mapped forms as their IPv4 address', () => {
  for (const ip of ['127.0.0.1', '127.9.9.9', '0.0.0.0', '::1', '::', '::ffff:127.0.0.1', '::ffff:7f00:1', '[::1]', '64:ff9b::7f00:1', '0:0:0:0:0:0:0:1']) assert.is(addressScope(ip), 'loopback', ip);
  const internal = [
    '10.0.0.5', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254', '100.64.0.1', '192.0.0.8', '198.18.0.1', '198.19.255.255',
    '224.0.0.1', '239.255.255.255', '240.0.0.1', '255.255.255.255', '0.1.2.3', 'fd00::1', 'fc00::1', 'fe80::1', 'ff02::1',
    '::ffff:10.0.0.5', '::ffff:a00:5', '::FFFF:A9FE:A9FE', '[fd00::1]', '64:ff9b:1::a00:5',
    // the NAT64 well-known prefix and the IPv4-compatible form carry the IPv4 address they reach
    '64:ff9b::a00:5', '64:ff9b::10.0.0.5', '64:ff9b::a9fe:a9fe', '::a00:5', '::192.168.1.1', '::0.0.1.2', '0:0:0:0:0:ffff:a00:5',
  ];
  for (const ip of internal) assert.is(addressScope(ip), 'private', ip);
  for (const ip of ['192.0.2.1', '198.51.100.7', '203.0.113.9', '2001:db8::1', '::ffff:192.0.2.1']) assert.is(addressScope(ip), 'documentation', ip);
  for (const ip of ['8.8.8.8', '172.32.0.1', '100.128.0.1', '2a00:1450::1', '::ffff:8.8.8.8', '64:ff9b::808:808', '2a00:1450::a00:5', 'fe:ff9b::a00:5']) assert.is(addressScope(ip), 'public', ip);
  assert.is(addressScope('mx.example.com'), null);
});

test('isPublicAddress: only public addresses (documentation ones are not)', () => {
  assert.ok(isPublicAddress('8.8.8.8'));
  assert.ok(isPublicAddress('[2a00:1450::1]'));
  for (const ip of ['127.0.0.1', '10.0.0.5', '192.0.2.1', '2001:db8::1', '::ffff:169.254.169.254', 'localhost']) assert.not.ok(isPublicAddress(ip), ip);
});

test.run();
