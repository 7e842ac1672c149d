import { readFileSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import type { TokenKey } from '../core/tokens.js';
import type { WorkerTracking } from '../render/protocol.js';
import { SluiceError } from '../core/errors.js';

/** tracking.keys read from their files, and the key that signs. */
export interface TokenKeys {
  readonly keys: TokenKey[];
  readonly signWith: string;
}

/** The keys of tracking.keys read from their files, or null when none are configured. */
export function readTokenKeys(config: Config): TokenKeys | null {
  const t = config.tracking;
  if (t.keys.length === 0) return null;
  const keys = t.keys.map((k) => {
    let secret: Buffer;
    try {
      secret = readFileSync(k.secretFile);
    } catch (err) {
      throw new SluiceError('SLUICE_CONFIG_INVALID', `tracking key '${k.id}': cannot read ${k.secretFile}: ${(err as Error).message}`, { cause: err });
    }
    return { id: k.id, secret, ...(k.notAfter !== null ? { notAfter: Date.parse(k.notAfter) } : {}) };
  });
  const current = keys.filter((k) => k.notAfter === undefined);
  const signWith = t.signWith ?? current[current.length - 1]?.id;
  if (!signWith) throw new SluiceError('SLUICE_CONFIG_INVALID', 'tracking.signWith is not set and every tracking key has a notAfter date');
  return { keys, signWith };
}

/** What the render workers need to put tracking in API messages: only the signing key crosses. */
export function workerTracking(config: Pick<Config, 'tracking' | 'delivery'>, tokenKeys: TokenKeys | null, unsubscribeKey: Uint8Array | undefined): WorkerTracking | undefined {
  const signer = tokenKeys?.keys.find((k) => k.id === tokenKeys.signWith);
  if (!tokenKeys || !signer) return undefined;
  return {
    publicBaseUrl: config.tracking.publicBaseUrl,
    keys: [{ id: signer.id, secret: typeof signer.secret === 'string' ? Buffer.from(signer.secret, 'utf8') : signer.secret }],
    signWith: tokenKeys.signWith,
    bounceDomain: config.delivery.bounceDomain,
    ...(unsubscribeKey ? { unsubscribeKey } : {}),
  };
}
