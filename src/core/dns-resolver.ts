import { Resolver } from 'node:dns/promises';

/** Tries per question: two ride out one lost UDP datagram. */
const DNS_TRIES = 2;

/**
 * A resolver on `servers` (delivery.dns.servers: addresses, optionally with ports; none = the
 * system's) that answers or gives up within about `timeoutMs`: c-ares waits `timeout` for the first
 * try and doubles it for the next, so two tries starting at a third of the budget end within about
 * timeoutMs (t + 2t). delivery/dns-query.ts does the same for the MX question.
 */
export function createResolver(servers: readonly string[] | undefined, timeoutMs: number): Resolver {
  const resolver = new Resolver({ timeout: Math.max(1, Math.floor(timeoutMs / 3)), tries: DNS_TRIES });
  if (servers && servers.length > 0) resolver.setServers([...servers]);
  return resolver;
}
