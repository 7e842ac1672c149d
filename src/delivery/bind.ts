import { createServer, isIP } from 'node:net';
import { SluiceError } from '../core/errors.js';
import type { Config } from '../config/schema.js';

/** delivery.bindAddress and delivery.bindAddress6: the source addresses of outbound connections. */
export interface BindAddresses {
  readonly v4: string | null;
  readonly v6: string | null;
}

/**
 * The source address of a connection to `host`: the configured address of its family, or none (the
 * system chooses). Hosts are IP addresses (MxResolver resolves MX and transport map names alike); a
 * name gets none.
 */
export function sourceFor(host: string, bind: BindAddresses): { localAddress?: string } {
  const family = isIP(host);
  const address = family === 4 ? bind.v4 : family === 6 ? bind.v6 : null;
  return address ? { localAddress: address } : {};
}

/**
 * Refuses, at start, a source address this host cannot bind (not one of its addresses): every
 * connection would fail, and all mail be deferred until it expired, with no other sign of why.
 * `addresses`: config key → address (null: none set).
 */
export async function checkBindable(addresses: Readonly<Record<string, string | null | undefined>>): Promise<void> {
  for (const [key, address] of Object.entries(addresses)) {
    if (address === null || address === undefined) continue;
    await new Promise<void>((resolve, reject) => {
      const probe = createServer();
      probe.once('error', (err: NodeJS.ErrnoException) => {
        reject(new SluiceError('SLUICE_CONFIG_INVALID', `${key}: ${address} is not an address of this host (${err.code ?? err.message}): outbound connections could not use it`, { cause: err }));
      });
      probe.listen({ host: address, port: 0, exclusive: true }, () => probe.close(() => resolve()));
    });
  }
}

/** Every source address the config sets, by its key: delivery.bindAddress(6) and each shaping rule's. */
export function bindAddressesOf(config: Pick<Config, 'delivery' | 'shaping'>): Record<string, string | null | undefined> {
  const out: Record<string, string | null | undefined> = { 'delivery.bindAddress': config.delivery.bindAddress, 'delivery.bindAddress6': config.delivery.bindAddress6 };
  config.shaping.rules.forEach((r, i) => {
    out[`shaping.rules.${i}.bindAddress`] = r.bindAddress;
    out[`shaping.rules.${i}.bindAddress6`] = r.bindAddress6;
  });
  return out;
}
