/**
 * The one place where the queue scripts' numeric replies get their meaning (the scripts only return
 * numbers; see the contract at the top of each .lua file).
 */

/** ack-3 / retry-3 / bounce-3 reply. */
export const OUTCOME = {
  /** The entry was already acked, retried or bounced by someone else: nothing was changed. */
  NOOP: 0,
  /** Applied; our lease had run out and a reaper had put the entry back in ready. */
  APPLIED_AFTER_REAP: 1,
  /** Applied; our lease was still held. */
  APPLIED: 2,
} as const;

/** takeTokens-1 reply's "no retry time" marker. */
export const NO_TIME = -1;

/** Lua nil / false and "" come back as null; numbers come back as integers or strings. */
export function toTime(value: string | number | null | undefined): number | null {
  if (value === null || value === undefined || value === '') return null;
  const n = Number(value);
  return Number.isFinite(n) && n !== NO_TIME ? n : null;
}

/**
 * Remote replies are kept for the record, not in full: 512 characters hold any real SMTP reply line
 * and several continuation lines. Never cuts a UTF-16 surrogate pair in half.
 */
export const RESPONSE_MAX_CHARS = 512;
export function truncateResponse(text: string): string {
  if (text.length <= RESPONSE_MAX_CHARS) return text;
  let end = RESPONSE_MAX_CHARS;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end -= 1;
  return text.slice(0, end);
}
