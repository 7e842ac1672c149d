import { BlockList, isIP, isIPv4 } from 'node:net';
import { expandIpv6, unmapIpv4 } from './ip.js';

/**
 * Concurrent connections per client, for the SMTP listeners (submission and the inbound MX): the
 * defence Postfix's anvil gives (smtpd_client_connection_count_limit). maxClients bounds a whole
 * server, but one client that opens many connections and trickles a byte now and then (each under
 * the idle timeout) would hold every slot and shut everyone else out: a slow-loris attack.
 *
 * A client is its IPv4 address, or its IPv6 /64: one host or site usually has a whole /64, and
 * counting single IPv6 addresses would let it open 2^64 "clients". Networks on the exempt list
 * (loopback by default: local applications with connection pools) are not counted.
 */
export class ClientLimiter {
  readonly #max: number;
  readonly #exempt = new BlockList();
  readonly #open = new Map<string, number>();

  /** `exempt`: addresses or CIDR networks (validated by the config schema: see isCidr). */
  constructor(max: number, exempt: readonly string[] = []) {
    this.#max = max;
    for (const entry of exempt) {
      const [net, bits] = parseCidr(entry) ?? [];
      if (net === undefined || bits === undefined) throw new Error(`not an address or network: ${entry}`);
      this.#exempt.addSubnet(net, bits, isIPv4(net) ? 'ipv4' : 'ipv6');
    }
  }

  /**
   * Counts a new connection from `ip`. Returns the key to release() when it closes; '' when it is not
   * counted (exempt, or no address known); null when its client has `max` connections already.
   */
  admit(ip: string): string | null {
    const key = this.#keyOf(ip);
    if (key === '') return '';
    const n = this.#open.get(key) ?? 0;
    if (n >= this.#max) return null;
    this.#open.set(key, n + 1);
    return key;
  }

  release(key: string): void {
    if (key === '') return;
    const n = (this.#open.get(key) ?? 0) - 1;
    if (n > 0) this.#open.set(key, n);
    else this.#open.delete(key);
  }

  /** Clients with a connection counted (for tests). */
  get clients(): number {
    return this.#open.size;
  }

  #keyOf(ip: string): string {
    const addr = unmapIpv4(ip);
    const family = isIP(addr);
    if (family === 0) return '';
    if (this.#exempt.check(addr, family === 4 ? 'ipv4' : 'ipv6')) return '';
    if (family === 4) return addr;
    const groups = expandIpv6(addr);
    return groups ? `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64` : addr;
  }
}

/** [network, prefix length] of an address ("::1", a full-length network) or a CIDR ("10.0.0.0/8"), or null. */
export function parseCidr(text: string): [string, number] | null {
  const slash = text.indexOf('/');
  const net = slash === -1 ? text : text.slice(0, slash);
  const family = isIP(net);
  if (family === 0) return null;
  const max = family === 4 ? 32 : 128;
  if (slash === -1) return [net, max];
  const bitsText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bitsText)) return null;
  const bits = Number(bitsText);
  return bits <= max ? [net, bits] : null;
}
