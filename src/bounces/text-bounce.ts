/**
 * Recipients and their error text from the human-readable part of a bounce. MTAs that do not send
 * RFC 3464 reports (qmail, Exim, old Sendmail, Exchange, webmail providers) all write some variant of
 * "this address: this error", so the reader looks for lines that begin with (or name) an address and
 * takes the lines that follow, up to a blank line or the next address, as that address's diagnostic.
 */
import { findAddresses, cleanAddress } from './smtp-text.js';

export interface TextRecipient { recipient: string; diagnostic: string }

/**
 * Where the copy of the returned message starts; everything after it is the sender's own mail. Space
 * before a marker is `[ \t]*`, never `\s*`: under the m flag `^\s*` also crosses line ends, so it was
 * tried from every line start across every blank line after it, quadratic in a body of blank lines
 * (64 KiB of CRLFs took ~45 s per mail, blocking the feedback MX's event loop).
 */
const ORIGINAL_MARKERS: readonly RegExp[] = [
  /^-+ ?below this line is a copy of the message/im,
  /^-+ ?this is a copy of the message/im,
  /^-+ ?original message/im,
  /^-+ ?the header of the original message/im,
  /^-+ ?returned message/im,
  /^-+ ?undelivered message/im,
  /^[ \t]*-+ ?(?:original|returned) (?:mail|message) (?:header|follows)/im,
  /^[ \t]*original message headers:/im,
  /^-+ ?unsent message below/im,
  /^-+ ?copy of message follows/im,
  /^[ \t]*-+[ \t]*message header follows/im,
  /^[ \t]*--- the message header ---/im,
  /^[ \t]*content-type: message\/rfc822/im,
  /^(?:return-path|received): /im,
];

/** At most this much human text is examined: real notices are a few KiB. */
const MAX_TEXT_CHARS = 64 * 1024;
const MAX_RECIPIENTS = 200;

export function humanPart(text: string): string {
  let t = text.length > MAX_TEXT_CHARS ? text.slice(0, MAX_TEXT_CHARS) : text;
  let cut = t.length;
  for (const re of ORIGINAL_MARKERS) {
    const m = re.exec(t);
    if (m && m.index > 0 && m.index < cut) cut = m.index;
  }
  t = t.slice(0, cut);
  return t;
}

const ADDR = String.raw`[^\s<>()"',;:@]{1,64}@[A-Za-z0-9][A-Za-z0-9.-]{0,252}\.[A-Za-z]{2,63}`; // bounded: see findAddresses in smtp-text.ts
/** A line that starts with an address: "<a@b>: text", "a@b", "  a@b (text)", "a@b... text". */
const LEADING = new RegExp(String.raw`^\s*(?:\d+\.\s+|-\s+|\*\s+)?(?:rcpt to:\s*|recipient:\s*|to:\s*|original-recipient:\s*|failed recipient:\s*|address:\s*|addresses:\s*|email:\s*)?(?:"[^"@]*"\s*)?["<]?(${ADDR})[">]?(?:\s*\.\.\.|\s*:|\s*,|\s*\(|\s*$|\s+-|\s+\S)(.*)$`, 'i');
/** Sendmail's transcript summary: "554 <a@b>... error" (V5/old Sendmail write no DSN). */
const SENDMAIL = new RegExp(String.raw`^\s*[45]\d\d\s+<(${ADDR})>\.\.\.\s*(.*)$`, 'i');
/** Sentences that name the failed address inside them. */
const INLINE: readonly RegExp[] = [
  new RegExp(String.raw`(?:delivery to|message to|mail to|delivering to|deliver to|sent to|addressed to|recipient|rcpt to:?|for|address)\s*:?\s*<?(${ADDR})>?`, 'i'),
];

/** Sendmail's per-host summary ("421 host (smtp)... Deferred: …") belongs to no single recipient. */
const HOST_SUMMARY = /^\s*[45]\d\d\s+\S+\s+\(smtp\)\.\.\./i;

/**
 * `exclude` holds addresses that are never the failed recipient when found loosely in prose (the
 * bounce's own From/To, the original sender); `never` holds those excluded even on an address line.
 */
export function extractFromText(raw: string, exclude: ReadonlySet<string>, never: ReadonlySet<string> = exclude): TextRecipient[] {
  const text = humanPart(raw);
  const lines = text.split(/\r?\n/);
  const blocks: { recipient: string; lines: string[]; last: string }[] = [];
  let cur: { recipient: string; lines: string[]; last: string } | undefined;
  // `last`: the block's last line with text, so a blank line's test below is one look, not a join of
  // the whole block (which, for a block of thousands of "x:" lines and blank lines, was quadratic).
  const push = (b: { lines: string[]; last: string }, line: string): void => {
    b.lines.push(line);
    if (line.trim() !== '') b.last = line;
  };

  for (const line of lines) {
    const m = LEADING.exec(line) ?? SENDMAIL.exec(line);
    const addr = m ? cleanAddress(m[1] ?? '') : '';
    if (HOST_SUMMARY.test(line)) { cur = undefined; continue; }
    if (addr && !never.has(addr) && !/^\s*(?:from|sender|reporting|to|cc):/i.test(line.replace(/^\s*(?:original-recipient|to):\s*<?[^>]*>?/i, '')) ) {
      const existing = blocks.find((b) => b.recipient === addr);
      if (existing) { cur = existing; push(cur, m?.[2] ?? ''); continue; }
      if (blocks.length >= MAX_RECIPIENTS) break;
      cur = { recipient: addr, lines: [], last: '' };
      push(cur, m?.[2] ?? '');
      blocks.push(cur);
      continue;
    }
    if (line.trim() === '') {
      // A blank line ends a block only once it has content (Exim puts the error on the next lines).
      // A block whose text ends in ':' ("because:", "reason:") continues in the next paragraph.
      if (cur && cur.last !== '' && !/:\s*$/.test(cur.last)) cur = undefined;
      continue;
    }
    if (cur) push(cur, line.trim());
  }

  if (blocks.length === 0) {
    for (const re of INLINE) {
      const m = re.exec(text);
      const addr = m ? cleanAddress(m[1] ?? '') : '';
      if (addr && !exclude.has(addr)) blocks.push({ recipient: addr, lines: [text], last: text });
    }
  }
  if (blocks.length === 0) {
    const addr = findAddresses(text).find((a) => !exclude.has(a) && !/^(?:postmaster|mailer-daemon|mail-daemon|root|abuse|noreply|no-reply)@/.test(a));
    if (addr) blocks.push({ recipient: addr, lines: [text], last: text });
  }
  return blocks.map((b) => ({ recipient: b.recipient, diagnostic: b.lines.join(' ').replace(/\s+/g, ' ').trim() }));
}
