/**
 * VERP envelope senders: every recipient's copy leaves with its own return path,
 * b-<msgId>-<idx>@<bounceDomain>, so a bounce identifies message and recipient even when its body
 * is useless. Message ids are lower-case base32 (no '-'), so the address parses unambiguously.
 */
const VERP_RE = /^b-([0-9a-hjkmnp-tv-z]{16})-(\d{1,6})@(.+)$/i;

export function verpAddress(msgId: string, idx: number, bounceDomain: string): string {
  return `b-${msgId}-${idx}@${bounceDomain}`;
}

export function parseVerp(address: string): { msgId: string; idx: number; domain: string } | undefined {
  const m = VERP_RE.exec(address.trim());
  if (!m) return undefined;
  return { msgId: (m[1] as string).toLowerCase(), idx: Number(m[2]), domain: (m[3] as string).toLowerCase() };
}
