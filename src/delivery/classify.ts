/**
 * Remote SMTP answer → outcome fields. Pure: no I/O, no clock, so the dispatcher, the tests and the
 * feedback role can all agree on what a reply means.
 *
 *   2xx → delivered      4xx → deferred      5xx → bounced
 *   no code (drop, timeout, garbage) → deferred: nothing proves the recipient is bad.
 */

export type ReplyResult = 'delivered' | 'deferred' | 'bounced';

export interface ReplyClass {
  result: ReplyResult;
  /** RFC 3463 class.subject.detail, e.g. '5.1.1', or null when the reply carries none. */
  enhanced: string | null;
  /** The remote asks us to slow down: feeds the adaptive backoff of the provider. */
  throttled: boolean;
}

/**
 * Texts that mean "you are sending too fast" when they come with a 450/451 or a 4.7.x code. Data,
 * not code: add a provider's wording here. Sources: Gmail 4.7.28 "unusual rate", Microsoft 4.7.500
 * "Server busy. Please try again later", Yahoo TSS04 "temporarily deferred due to unexpected volume",
 * Postfix anvil "too many connections", and the generic "rate limit"/"throttl(ed|ing)".
 */
export const THROTTLE_PATTERNS: readonly RegExp[] = [
  /rate.?limit/i,
  /too many/i,
  /try again later/i,
  /throttl/i,
  /slow down/i,
  /unusual rate/i,
  /unexpected volume/i,
  /server busy/i,
  /temporarily (deferred|rate)/i,
];

/** Basic codes whose text is checked against THROTTLE_PATTERNS (421 is throttling by itself). */
const THROTTLE_BASIC_CODES: ReadonlySet<number> = new Set([450, 451]);

// RFC 3463 §2: class is 2, 4 or 5; subject and detail are 1–3 digits. The enhanced code sits at the
// start of the reply text (RFC 2034 §4), so only that position is read: "5.5.5.5" in the middle of a
// sentence is an IP address, not a status.
const ENHANCED_RE = /^(?:\d{3}[ -])?([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/;

export function parseEnhancedCode(response: string): string | null {
  const m = ENHANCED_RE.exec(response.trimStart());
  return m ? `${m[1]}.${m[2]}.${m[3]}` : null;
}

export function classifyReply(code: number | null, response: string): ReplyClass {
  const result = resultOf(code);
  let enhanced = parseEnhancedCode(response);
  // RFC 3463 §2 requires the class to agree with the basic code. When a server says "451 5.7.1",
  // the basic code is what every MTA acts on (RFC 5321 §4.2.1), so we trust it and rewrite the
  // class: downstream hard/soft verdicts read `enhanced`, and a deferral must never look permanent.
  if (enhanced !== null && code !== null && code >= 200 && code < 600) {
    const basicClass = String(Math.floor(code / 100));
    if ((basicClass === '2' || basicClass === '4' || basicClass === '5') && enhanced[0] !== basicClass) {
      enhanced = basicClass + enhanced.slice(1);
    }
  }
  return { result, enhanced, throttled: isThrottle(code, enhanced, response) };
}

function resultOf(code: number | null): ReplyResult {
  if (code === null) return 'deferred';
  if (code >= 200 && code < 300) return 'delivered';
  if (code >= 500 && code < 600) return 'bounced';
  // 4xx, and anything out of protocol (1xx, 3xx where a final answer was due, 6xx+): try again later.
  return 'deferred';
}

function isThrottle(code: number | null, enhanced: string | null, response: string): boolean {
  if (code === 421) return true;
  if (code === null || code < 400 || code >= 500) return false;
  const candidate = THROTTLE_BASIC_CODES.has(code) || (enhanced !== null && enhanced.startsWith('4.7.'));
  return candidate && THROTTLE_PATTERNS.some((re) => re.test(response));
}
