import { timingSafeEqual } from 'node:crypto';
import { textHmacSha256 } from './hmac-sha256.js';
import { toBase32 } from './ids.js';

/**
 * VERP envelope senders: every recipient's copy leaves with its own return path,
 * b-<msgId>-<idx>-<tag>@<bounceDomain>, so a bounce identifies message and recipient even when its
 * body is useless. Message ids are lower-case base32 (no '-'), so the address parses unambiguously.
 *
 * The tag is 40 bits of HMAC-SHA256(key, "<msgId>.<idx>") in the same base32: message ids are not
 * secret (they are in every Message-ID header), so without it anyone could send a forged DSN for
 * b-<id>-<n>@… and suppress the other recipients of a message they received. 40 bits make a blind
 * guess 1 in 10^12, and each try costs an RCPT command, of which the inbound MX takes 20 refused
 * per connection (feedback/inbound-mx.ts MAX_REFUSED_RCPTS). The key is shared by every process
 * (app/ keeps it in Redis). Without a key (tests of the parts) addresses carry no tag.
 */
// Up to 9 digits of recipient index: a campaign's copies are numbered by contact, and a list's
// numbers only grow (a million-contact list passes 6 digits).
const VERP_RE = /^b-([0-9a-hjkmnp-tv-z]{16})-(\d{1,9})(?:-([0-9a-hjkmnp-tv-z]{8}))?@(.+)$/i;

function tag(key: Buffer, msgId: string, idx: number): string {
  return toBase32(textHmacSha256(key, `${msgId}.${idx}`).readUIntBE(0, 5), 8);
}

export function verpAddress(msgId: string, idx: number, bounceDomain: string, key?: Buffer): string {
  return key ? `b-${msgId}-${idx}-${tag(key, msgId, idx)}@${bounceDomain}` : `b-${msgId}-${idx}@${bounceDomain}`;
}

/** The message and recipient of a VERP address; with a key, only when its tag is right. */
export function parseVerp(address: string, key?: Buffer): { msgId: string; idx: number; domain: string } | undefined {
  const m = VERP_RE.exec(address.trim());
  if (!m) return undefined;
  const msgId = (m[1] as string).toLowerCase();
  const idx = Number(m[2]);
  if (key) {
    const given = (m[3] ?? '').toLowerCase();
    const want = tag(key, msgId, idx);
    if (given.length !== want.length || !timingSafeEqual(Buffer.from(given), Buffer.from(want))) return undefined;
  }
  return { msgId, idx, domain: (m[4] as string).toLowerCase() };
}

/**
 * The List-Unsubscribe mailto address of a recipient's copy: u-<msgId>-<idx>-<tag>@<bounceDomain>,
 * ~35 characters of local part, case-insensitive, like the VERP return path and under RFC 5321's 64
 * octets (a tracking token there was 64 and more, case-sensitive, and longer with a longer key id or
 * account: a strict MTA or mail client refuses such an address). The tag is 40 bits of
 * HMAC-SHA256(key, "u.<msgId>.<idx>"): the same key as the return path, another input, so a return
 * path (which relays see) is not an unsubscribe address.
 */
const UNSUBSCRIBE_RE = /^u-([0-9a-hjkmnp-tv-z]{16})-(\d{1,9})-([0-9a-hjkmnp-tv-z]{8})@(.+)$/i;

function unsubscribeTag(key: Buffer, msgId: string, idx: number): string {
  return toBase32(textHmacSha256(key, `u.${msgId}.${idx}`).readUIntBE(0, 5), 8);
}

export function unsubscribeMailtoAddress(msgId: string, idx: number, bounceDomain: string, key: Buffer): string {
  return `u-${msgId}-${idx}-${unsubscribeTag(key, msgId, idx)}@${bounceDomain}`;
}

/** The message and recipient of an unsubscribeMailtoAddress, only when its tag is right. */
export function parseUnsubscribeMailto(address: string, key: Buffer): { msgId: string; idx: number; domain: string } | undefined {
  const m = UNSUBSCRIBE_RE.exec(address.trim());
  if (!m) return undefined;
  const msgId = (m[1] as string).toLowerCase();
  const idx = Number(m[2]);
  const given = (m[3] as string).toLowerCase();
  const want = unsubscribeTag(key, msgId, idx);
  if (!timingSafeEqual(Buffer.from(given), Buffer.from(want))) return undefined;
  return { msgId, idx, domain: (m[4] as string).toLowerCase() };
}
