import { BlockList, isIP } from 'node:net';

/**
 * Whether an address is on the public Internet: what Sluice checks before it makes an HTTP request
 * to a URL a customer gave it (a webhook endpoint). Without the check, an account could register
 * http://169.254.169.254/… (a cloud's instance metadata, with its credentials), http://127.0.0.1:6379
 * or a host on the operator's private network, and have Sluice POST there and report what answered:
 * server-side request forgery.
 *
 * Not public: the IANA special-purpose ranges that are not globally reachable (RFC 6890 and its
 * updates), IPv4 multicast and reserved space, and their IPv6 counterparts. An IPv4-mapped IPv6
 * address (::ffff:a.b.c.d) is judged as the IPv4 address it is.
 */
const NOT_PUBLIC_V4: readonly [string, number][] = [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8], // private (RFC 1918)
  ['100.64.0.0', 10], // shared address space, carrier-grade NAT (RFC 6598)
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local, where clouds serve instance metadata
  ['172.16.0.0', 12], // private
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation (TEST-NET-1)
  ['192.88.99.0', 24], // 6to4 relay anycast (deprecated)
  ['192.168.0.0', 16], // private
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation (TEST-NET-2)
  ['203.0.113.0', 24], // documentation (TEST-NET-3)
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, and the limited broadcast address
];
const NOT_PUBLIC_V6: readonly [string, number][] = [
  ['::', 128], // unspecified
  ['::1', 128], // loopback
  ['64:ff9b:1::', 48], // local-use IPv4/IPv6 translation
  ['100::', 64], // discard-only
  ['2001::', 23], // IETF protocol assignments (Teredo, benchmarking, ORCHID…)
  ['2001:db8::', 32], // documentation
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
];

const blocked = new BlockList();
for (const [net, bits] of NOT_PUBLIC_V4) blocked.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of NOT_PUBLIC_V6) blocked.addSubnet(net, bits, 'ipv6');

/** True for an IP address on the public Internet; false for any other address and for non-addresses. */
export function isPublicAddress(address: string): boolean {
  const ip = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  const family = isIP(ip);
  if (family === 0) return false;
  if (family === 6) {
    // IPv4-mapped, dotted (::ffff:127.0.0.1) or in hex as URLs normalise it (::ffff:7f00:1).
    const dotted = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1];
    if (dotted !== undefined) return isPublicAddress(dotted);
    const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(ip);
    if (hex) {
      const [hi, lo] = [parseInt(hex[1] as string, 16), parseInt(hex[2] as string, 16)];
      return isPublicAddress(`${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`);
    }
  }
  return !blocked.check(ip, family === 4 ? 'ipv4' : 'ipv6');
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
