import { isIPv4 } from 'node:net';

/**
 * Small IP address helpers shared by the listeners (per-client connection limits) and the tracking
 * server (IP anonymisation).
 */

/** An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d: the IPv4 address it is; else `ip`. */
export function unmapIpv4(ip: string): string {
  // Checked without lower-casing the whole address: this runs for every open.
  return ip.length > 7 && ip.charCodeAt(0) === 58 && ip.slice(0, 7).toLowerCase() === '::ffff:' && isIPv4(ip.slice(7)) ? ip.slice(7) : ip;
}

/** The 8 16-bit groups of an IPv6 address (zone dropped; an embedded IPv4 tail converted), or null. */
export function expandIpv6(ip: string): number[] | null {
  let text = ip.split('%')[0] as string;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const o = (v4[1] as string).split('.').map(Number);
    text = text.slice(0, v4.index) + `${(((o[0] as number) << 8) | (o[1] as number)).toString(16)}:${(((o[2] as number) << 8) | (o[3] as number)).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const [head, tail] = halves as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  if (fill < 0) return null;
  const all = [...h, ...Array<string>(fill).fill('0'), ...t];
  if (all.length !== 8) return null;
  const groups = all.map((g) => (/^[0-9a-fA-F]{1,4}$/.test(g) ? parseInt(g, 16) : NaN));
  return groups.some(Number.isNaN) ? null : groups;
}
