import { parseUnsubscribeMailto, parseVerp } from '../core/verp.js';
import { domainOf } from '../core/address.js';
import { UNSUBSCRIBE_MAILTO_PREFIX } from '../render/tracking.js';

/**
 * Which envelope recipients the inbound MX accepts, and what each one means. It relays nothing, so
 * anything not listed here is refused at RCPT:
 *
 *   b-<msgId>-<idx>-<tag>@<bounce domain>    VERP return path (core/verp.ts): a bounce or auto-reply for one recipient
 *   u-<msgId>-<idx>-<tag>@<bounce domain>    RFC 2369 / 8058 mailto unsubscribe (core/verp.ts), tagged with the VERP key
 *   unsubscribe-<token>@<bounce domain>      the same, as mail rendered before that form carries it: a tracking
 *                                            token, whose check belongs to whoever mints it (verifyUnsubscribeToken)
 *   a configured FBL address                 ARF complaints from mailbox providers' feedback loops
 *   postmaster@<bounce domain or FBL domain>,  RFC 5321 §4.5.1: every domain's SMTP server takes mail to
 *   postmaster (any case, or bare)            postmaster (bare: §4.1.1.3). Written by people (a provider
 *                                            about a block, a recipient about a mail): stored for the
 *                                            operator to read, never acted on
 */
export type FeedbackRecipient =
  | { readonly kind: 'verp'; readonly msgId: string; readonly idx: number }
  | { readonly kind: 'unsubscribe'; readonly msgId: string; readonly idx: number }
  | { readonly kind: 'fbl' }
  | { readonly kind: 'postmaster' };

/** Resolves an unsubscribe token to the message recipient it was minted for, or undefined when forged. */
export type VerifyUnsubscribeToken = (token: string) => { msgId: string; idx: number } | undefined;

export interface RecipientRules {
  /** Lower-case bounce domains. */
  readonly bounceDomains: readonly string[];
  /** Lower-case FBL addresses. */
  readonly fblAddresses: readonly string[];
  readonly verifyUnsubscribeToken?: VerifyUnsubscribeToken | undefined;
  /** Key of the VERP tags (core/verp.ts); addresses with a wrong or missing tag are refused. */
  readonly verpKey?: Buffer | undefined;
}

/**
 * Tokens are URL-safe and short; 200 characters bounds the work done on a hostile RCPT. The prefix is
 * the one render/tracking.ts writes into every List-Unsubscribe mailto.
 */
const UNSUBSCRIBE_RE = new RegExp(`^${UNSUBSCRIBE_MAILTO_PREFIX}([A-Za-z0-9_.~=-]{1,200})@([^@\\s]+)$`, 'i');

/** The token of an `unsubscribe-<token>@<bounce domain>` address, or undefined. */
export function parseUnsubscribeAddress(address: string, bounceDomains: readonly string[]): string | undefined {
  const m = UNSUBSCRIBE_RE.exec(address.trim());
  if (!m || !bounceDomains.includes((m[2] as string).toLowerCase())) return undefined;
  return m[1] as string;
}

export function unsubscribeAddress(token: string, bounceDomain: string): string {
  return `${UNSUBSCRIBE_MAILTO_PREFIX}${token}@${bounceDomain}`;
}

export function feedbackRecipient(address: string, rules: RecipientRules): FeedbackRecipient | undefined {
  const lower = address.trim().toLowerCase();
  if (rules.fblAddresses.includes(lower)) return { kind: 'fbl' };
  if (isPostmaster(lower, rules)) return { kind: 'postmaster' };
  const verp = parseVerp(address, rules.verpKey);
  if (verp) return rules.bounceDomains.includes(verp.domain) ? { kind: 'verp', msgId: verp.msgId, idx: verp.idx } : undefined;
  if (rules.verpKey) {
    const u = parseUnsubscribeMailto(address, rules.verpKey);
    if (u) return rules.bounceDomains.includes(u.domain) ? { kind: 'unsubscribe', msgId: u.msgId, idx: u.idx } : undefined;
  }
  const token = parseUnsubscribeAddress(address, rules.bounceDomains);
  if (token !== undefined && rules.verifyUnsubscribeToken) {
    const target = rules.verifyUnsubscribeToken(token);
    if (target) return { kind: 'unsubscribe', msgId: target.msgId, idx: target.idx };
  }
  return undefined;
}

/**
 * The domains this MX receives for are the bounce domains and those of the FBL addresses: their
 * postmaster is here too.
 */
function isPostmaster(lower: string, rules: RecipientRules): boolean {
  if (lower === 'postmaster') return true;
  if (!lower.startsWith('postmaster@')) return false;
  const domain = lower.slice('postmaster@'.length);
  return rules.bounceDomains.includes(domain) || rules.fblAddresses.some((a) => domainOf(a).toLowerCase() === domain);
}

/**
 * Distinct candidates one mail may quote: each costs an HMAC, and a forged report could hold
 * thousands of guesses. A copy carries at most its VERP return path, its mailto and its one-click
 * URL (each repeated by a report as often as it likes: a repeat is not tried again), and a report
 * is about a few copies (feedback/process.ts takes 10): a mail quoting more is not a report.
 */
export const MAX_QUOTED_CANDIDATES = 50;

/**
 * The copies a mail quotes by what only that copy carries, each checked by its tag or signature: the
 * returned message's VERP return path, its List-Unsubscribe mailto (u-<msgId>-<idx>-<tag>, or the
 * older unsubscribe-<token>) and its https one-click URL (…/u/<token>). How an FBL complaint, which
 * arrives at the FBL address, finds its message and recipient: a Message-ID names the message, not
 * the copy, and the address a report names (Original-Rcpt-To, To) is the reporter's to write.
 * `tooMany` when the mail quotes more than MAX_QUOTED_CANDIDATES before `limit` copies are found:
 * then `copies` is empty, and the caller treats the mail as garbage.
 */
export function copiesInText(text: string, rules: RecipientRules, limit = 10): { copies: { msgId: string; idx: number }[]; tooMany: boolean } {
  const out: { msgId: string; idx: number }[] = [];
  const seen = new Set<string>();
  const tried = new Set<string>();
  /** Checks candidate `text` (once) by `resolve`; true when the search is over: `limit` found, or too many tried. */
  const check = (text: string, resolve: () => { msgId: string; idx: number } | undefined): boolean => {
    if (tried.has(text)) return false;
    tried.add(text);
    if (tried.size > MAX_QUOTED_CANDIDATES) return true;
    const c = resolve();
    const key = c ? `${c.msgId}:${c.idx}` : '';
    if (c && !seen.has(key)) {
      seen.add(key);
      out.push({ msgId: c.msgId, idx: c.idx });
    }
    return out.length >= limit;
  };
  const result = () => (tried.size > MAX_QUOTED_CANDIDATES ? { copies: [], tooMany: true } : { copies: out, tooMany: false });
  const inDomain = <T extends { domain: string }>(v: T | undefined) => (v && rules.bounceDomains.includes(v.domain) ? v : undefined);
  // Up to 9 digits of index, as core/verp.ts parses: a campaign's contact numbers pass 6 digits.
  for (const m of text.matchAll(/\bb-[0-9a-hjkmnp-tv-z]{16}-\d{1,9}(?:-[0-9a-hjkmnp-tv-z]{8})?@[a-z0-9.-]+/gi)) {
    const address = m[0].replace(/\.+$/, '');
    if (check(address, () => inDomain(parseVerp(address, rules.verpKey)))) return result();
  }
  const key = rules.verpKey;
  if (key) {
    for (const m of text.matchAll(/\bu-[0-9a-hjkmnp-tv-z]{16}-\d{1,9}-[0-9a-hjkmnp-tv-z]{8}@[a-z0-9.-]+/gi)) {
      const address = m[0].replace(/\.+$/, '');
      if (check(address, () => inDomain(parseUnsubscribeMailto(address, key)))) return result();
    }
  }
  const verify = rules.verifyUnsubscribeToken;
  if (verify) {
    for (const m of text.matchAll(/\bunsubscribe-[A-Za-z0-9_.~=-]{1,200}@[a-z0-9.-]+/gi)) {
      const token = parseUnsubscribeAddress(m[0].replace(/\.+$/, ''), rules.bounceDomains);
      if (token !== undefined && check(`unsubscribe-${token}`, () => verify(token))) return result();
    }
    // core/tokens.ts: base64url, at most 518 characters; the shortest real one is longer than 16.
    for (const m of text.matchAll(/\/u\/([A-Za-z0-9_-]{16,518})(?![A-Za-z0-9_-])/g)) {
      const token = m[1] as string;
      if (check(`/u/${token}`, () => verify(token))) return result();
    }
  }
  return result();
}
