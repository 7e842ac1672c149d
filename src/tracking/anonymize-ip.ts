import { isIPv4, isIPv6 } from 'node:net';

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
  // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d; store it as the IPv4 it is.
  // (Checked without lower-casing the whole address: this runs for every open.)
  const addr = ip.length > 7 && ip.charCodeAt(0) === 58 && ip.slice(0, 7).toLowerCase() === '::ffff:' && isIPv4(ip.slice(7)) ? ip.slice(7) : ip;
  if (mode === 'none') return addr;
  if (isIPv4(addr)) return addr.slice(0, addr.lastIndexOf('.')) + '.0';
  if (isIPv6(addr)) {
    const groups = expandIpv6(addr);
    return groups ? `${groups.slice(0, 3).map((g) => g.toString(16)).join(':')}::` : '';
  }
  return '';
}

/** The 8 16-bit groups of an IPv6 address (zone dropped; an embedded IPv4 tail converted). */
function expandIpv6(ip: string): number[] | null {
  let text = ip.split('%')[0] as string;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const o = (v4[1] as string).split('.').map(Number);
    text = text.slice(0, v4.index) + `${(((o[0] as number) << 8) | (o[1] as number)).toString(16)}:${(((o[2] as number) << 8) | (o[3] as number)).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  if (fill < 0) return null;
  const all = [...h, ...Array<string>(fill).fill('0'), ...t];
  return all.length === 8 ? all.map((g) => parseInt(g, 16)) : null;
}
