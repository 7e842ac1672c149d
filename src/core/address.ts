import { domainToASCII } from 'node:url';

/**
 * Mail addresses. Sluice routes on the domain, so the domain is normalised (lower case, IDN to
 * A-label); the local part is kept as written (RFC 5321 §2.4: it may be case-sensitive).
 */
export interface ParsedAddress {
  readonly local: string;
  /** ASCII (A-label) lower-case domain. */
  readonly domain: string;
  /** local@domain with the normalised domain. */
  readonly address: string;
}

// RFC 5321 limits: 64 octets local part, 255 octets domain, 254 octets path.
const MAX_LOCAL = 64;
const MAX_DOMAIN = 253;
// Non-ASCII (RFC 6531) is any character but a lone surrogate: a JSON "\udc00" decodes to one, which
// has no UTF-8 form (it would be stored as U+FFFD, another address than the one accepted).
const ATOM = String.raw`(?:[A-Za-z0-9!#$%&'*+/=?^_\`{|}~\u0080-\uD7FF\uE000-\uFFFF-]|[\uD800-\uDBFF][\uDC00-\uDFFF])+`;
const LOCAL_DOT_ATOM = new RegExp(`^${ATOM}(?:\\.${ATOM})*$`);
const LOCAL_QUOTED = /^"([\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$/;
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function normaliseDomain(domain: string): string | undefined {
  const trimmed = domain.trim().replace(/\.$/, '');
  if (trimmed === '' || trimmed.length > MAX_DOMAIN) return undefined;
  const ascii = domainToASCII(trimmed.toLowerCase());
  if (!ascii || ascii.length > MAX_DOMAIN) return undefined;
  const labels = ascii.split('.');
  if (labels.length < 2) return undefined;
  for (const label of labels) if (!LABEL.test(label)) return undefined;
  return ascii;
}

/**
 * The local part in its one form: a quoted string whose content is a dot-atom is that dot-atom
 * (RFC 5321 §4.1.2: "ann" and ann are the same mailbox, and a quoted form is not to be used when it
 * is not needed), and a non-ASCII one is in Unicode NFC (RFC 6532 §3.1). Else a suppression of
 * ann@x did not stop mail to "ann"@x, and café written in two ways made two contacts.
 */
export function canonicalLocal(local: string): string {
  if (local.startsWith('"')) {
    const inner = local.slice(1, -1).replace(/\\(.)/g, '$1');
    return inner !== '' && LOCAL_DOT_ATOM.test(inner) ? inner.normalize('NFC') : local;
  }
  return local.normalize('NFC');
}

export function parseAddress(text: string): ParsedAddress | undefined {
  if (typeof text !== 'string' || text.length > 320) return undefined;
  const at = text.lastIndexOf('@');
  if (at <= 0 || at === text.length - 1) return undefined;
  if (!LOCAL_DOT_ATOM.test(text.slice(0, at)) && !LOCAL_QUOTED.test(text.slice(0, at))) return undefined;
  const local = canonicalLocal(text.slice(0, at));
  // NFC can make a character the check let through into one it would not have (U+037E is ';').
  if (Buffer.byteLength(local) > MAX_LOCAL || (!LOCAL_DOT_ATOM.test(local) && !LOCAL_QUOTED.test(local))) return undefined;
  const domain = normaliseDomain(text.slice(at + 1));
  if (!domain) return undefined;
  return { local, domain, address: `${local}@${domain}` };
}

/** The domain of an address already validated with parseAddress. */
export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1);
}
