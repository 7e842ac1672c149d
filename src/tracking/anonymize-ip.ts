import { isIPv4, isIPv6 } from 'node:net';
import { expandIpv6, unmapIpv4 } from '../core/ip.js';

/**
 * Per-account IP anonymisation of tracking events:
 *   none      the address as seen
 *   truncate  IPv4 last octet zeroed (a /24), IPv6 last 80 bits zeroed (a /48, a site): the
 *             granularity Google Analytics' IP masking used, enough for a country, not a household
 *   drop      nothing stored
 */
export type IpAnonymization = 'none' | 'truncate' | 'drop';

export function anonymizeIp(ip: string, mode: IpAnonymization): string {
  if (mode === 'drop' || ip === '') return '';
  // An IPv4 client on a dual-stack socket is stored as the IPv4 address it is.
  const addr = unmapIpv4(ip);
  if (mode === 'none') return addr;
  if (isIPv4(addr)) return addr.slice(0, addr.lastIndexOf('.')) + '.0';
  if (isIPv6(addr)) {
    const groups = expandIpv6(addr);
    return groups ? `${groups.slice(0, 3).map((g) => g.toString(16)).join(':')}::` : '';
  }
  return '';
}
