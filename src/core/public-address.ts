import { BlockList, isIP } from 'node:net';
import { expandIpv6 } from './ip.js';

/**
 * Whether an address is on the public Internet: what Sluice checks before it makes an HTTP request
 * to a URL a customer gave it (a webhook endpoint). Without the check, an account could register
 * http://169.254.169.254/… (a cloud's instance metadata, with its credentials), http://127.0.0.1:6379
 * or a host on the operator's private network, and have Sluice POST there and report what answered:
 * server-side request forgery.
 *
 * Not public: the IANA special-purpose ranges that are not globally reachable (RFC 6890 and its
 * updates), IPv4 multicast and reserved space, and their IPv6 counterparts. An IPv4-mapped IPv6
 * address (::ffff:a.b.c.d) is judged as the IPv4 address it is. The delivery role asks the same of
 * MX hosts' addresses (delivery/mx.ts), where loopback, private and documentation ones differ.
 */
export type AddressScope = 'public' | 'loopback' | 'private' | 'documentation';

/**
 * Not public, by what they are. 'loopback' is this host (loopback and unspecified); 'private' is
 * someone's internal network or no host at all: private, link-local, shared (CGNAT), unique local,
 * multicast and reserved space; 'documentation' is set aside for examples (RFC 5737, RFC 3849): routed
 * nowhere, and nobody's network.
 */
const NOT_PUBLIC: readonly [string, number, 'ipv4' | 'ipv6', Exclude<AddressScope, 'public'>][] = [
  ['127.0.0.0', 8, 'ipv4', 'loopback'],
  ['0.0.0.0', 32, 'ipv4', 'loopback'], // unspecified: a connect() to it reaches this host
  ['::1', 128, 'ipv6', 'loopback'],
  ['::', 128, 'ipv6', 'loopback'], // unspecified
  ['0.0.0.0', 8, 'ipv4', 'private'], // "this network"
  ['10.0.0.0', 8, 'ipv4', 'private'], // private (RFC 1918)
  ['100.64.0.0', 10, 'ipv4', 'private'], // shared address space, carrier-grade NAT (RFC 6598)
  ['169.254.0.0', 16, 'ipv4', 'private'], // link-local, where clouds serve instance metadata
  ['172.16.0.0', 12, 'ipv4', 'private'], // private
  ['192.0.0.0', 24, 'ipv4', 'private'], // IETF protocol assignments
  ['192.88.99.0', 24, 'ipv4', 'private'], // 6to4 relay anycast (deprecated)
  ['192.168.0.0', 16, 'ipv4', 'private'], // private
  ['198.18.0.0', 15, 'ipv4', 'private'], // benchmarking
  ['224.0.0.0', 4, 'ipv4', 'private'], // multicast
  ['240.0.0.0', 4, 'ipv4', 'private'], // reserved, and the limited broadcast address
  ['64:ff9b:1::', 48, 'ipv6', 'private'], // local-use IPv4/IPv6 translation
  ['100::', 64, 'ipv6', 'private'], // discard-only
  ['2001::', 23, 'ipv6', 'private'], // IETF protocol assignments (Teredo, benchmarking, ORCHID…)
  ['fc00::', 7, 'ipv6', 'private'], // unique local
  ['fe80::', 10, 'ipv6', 'private'], // link-local
  ['ff00::', 8, 'ipv6', 'private'], // multicast
  ['192.0.2.0', 24, 'ipv4', 'documentation'], // TEST-NET-1
  ['198.51.100.0', 24, 'ipv4', 'documentation'], // TEST-NET-2
  ['203.0.113.0', 24, 'ipv4', 'documentation'], // TEST-NET-3
  ['2001:db8::', 32, 'ipv6', 'documentation'],
];

// One list per scope, asked in the table's order: 0.0.0.0 is this host before 0.0.0.0/8 is "this network".
const SCOPES = (['loopback', 'private', 'documentation'] as const).map((scope) => {
  const list = new BlockList();
  for (const [net, bits, family, s] of NOT_PUBLIC) if (s === scope) list.addSubnet(net, bits, family);
  return { scope, list };
});

/**
 * What an IP address is (bracketed IPv6 too), or null for a string that is no address. An IPv6
 * address that carries an IPv4 address in its last 32 bits is judged as that IPv4 address, in any of
 * its text forms (::ffff:10.0.0.5, ::ffff:a00:5, 0:0:0:0:0:ffff:a00:5):
 *   ::ffff:0:0/96   IPv4-mapped (RFC 4291 §2.5.5.2)
 *   64:ff9b::/96    the NAT64 well-known prefix (RFC 6052): through a translator it reaches the IPv4
 *                   address, so 64:ff9b::a00:5 is 10.0.0.5
 *   ::/96           IPv4-compatible (deprecated, RFC 4291 §2.5.5.1), but for :: and ::1 themselves
 */
export function addressScope(address: string): AddressScope | null {
  const ip = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  const family = isIP(ip);
  if (family === 0) return null;
  if (family === 6) {
    const embedded = embeddedIpv4(ip);
    if (embedded !== undefined) return addressScope(embedded);
  }
  const type = family === 4 ? 'ipv4' : 'ipv6';
  return SCOPES.find(({ list }) => list.check(ip, type))?.scope ?? 'public';
}

/** The IPv4 address in the last 32 bits of an IPv6 address of the three kinds above, dotted; else undefined. */
function embeddedIpv4(ip: string): string | undefined {
  const g = expandIpv6(ip);
  if (g === null) return undefined;
  const zeros = (from: number, to: number): boolean => g.slice(from, to).every((x) => x === 0);
  const mapped = zeros(0, 5) && g[5] === 0xffff;
  const nat64 = g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6);
  const compatible = zeros(0, 6) && !(g[6] === 0 && (g[7] as number) <= 1);
  if (!mapped && !nat64 && !compatible) return undefined;
  const [hi, lo] = [g[6] as number, g[7] as number];
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** True for an IP address on the public Internet; false for any other address and for non-addresses. */
export function isPublicAddress(address: string): boolean {
  return addressScope(address) === 'public';
}

/**
 * Why a URL's host cannot be public, or null when it may be (a name is only known to be public once
 * resolved: the caller checks the addresses it connects to as well). Refused without a lookup: an IP
 * literal that is not public, and `localhost` and its subdomains (RFC 6761 reserves them for loopback).
 */
export function nonPublicHost(hostname: string): string | null {
  const host = hostname.toLowerCase().replace(/\.$/, '');
  if (host === 'localhost' || host.endsWith('.localhost')) return 'a loopback name';
  const literal = host.startsWith('[') ? host.slice(1, -1) : host;
  if (isIP(literal) !== 0 && !isPublicAddress(literal)) return 'a private, loopback, link-local or reserved address';
  return null;
}
