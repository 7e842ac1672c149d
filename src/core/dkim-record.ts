import { createPublicKey } from 'node:crypto';
import { SluiceError } from './errors.js';

/**
 * The DNS TXT record to publish at `<selector>._domainkey.<domain>` for a key. Accepts a public key
 * PEM, or a private key PEM (its public half is derived).
 *   rsa:     'v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo DER>'
 *   ed25519: 'v=DKIM1; k=ed25519; p=<base64 of the 32 raw key bytes>' (RFC 8463 §4.2)
 */
/**
 * A DKIM selector (RFC 6376 §3.1: sub-domain *("." sub-domain)): labels of 1–63 letters, digits,
 * '-' or '_' (as in DNS names others publish), each beginning and ending with a letter or digit,
 * separated by single dots. "x." or "a..b" gave a record name such as x.._domainkey.example.com,
 * which no DNS takes.
 */
export const DKIM_SELECTOR = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*$/;

export function dnsRecord(publicKeyPem: string, algorithm: 'rsa' | 'ed25519'): string {
  let spki: Buffer;
  try {
    const pub = createPublicKey(publicKeyPem);
    if (pub.asymmetricKeyType !== algorithm) throw new Error(`key is ${pub.asymmetricKeyType ?? 'unknown'}, not ${algorithm}`);
    spki = pub.export({ type: 'spki', format: 'der' });
  } catch (err) {
    throw new SluiceError('SLUICE_DKIM_KEY_INVALID', `cannot read the ${algorithm} public key`, { cause: err });
  }
  // An Ed25519 SubjectPublicKeyInfo is a fixed 12-byte prefix followed by the 32-byte key.
  const p = algorithm === 'rsa' ? spki : spki.subarray(spki.length - 32);
  return `v=DKIM1; k=${algorithm}; p=${p.toString('base64')}`;
}
