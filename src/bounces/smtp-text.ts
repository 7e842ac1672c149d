/**
 * Small readers for the SMTP facts embedded in free text: enhanced status code, reply code, the
 * command that was answered, and e-mail addresses.
 */

/** RFC 3463 class.subject.detail; subject ≤ 3 digits, detail ≤ 3 digits (5.7.509 exists at Microsoft). */
const STATUS_RE = /(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)/g;

/** Most specific enhanced status code in the text, or ''. A non-generic code beats X.0.0. */
export function findStatus(text: string, skip = ''): string {
  let first = '';
  STATUS_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  let guard = 0;
  while ((m = STATUS_RE.exec(text)) && guard++ < 50) {
    const code = `${m[1]}.${Number(m[2])}.${Number(m[3])}`;
    if (Number(m[2]) > 7) continue;
    // Skip things that are really IP addresses or version numbers ("4.2.1.3", "v5.1.1").
    const before = text.slice(Math.max(0, m.index - 1), m.index);
    if (/[A-Za-z]/.test(before)) continue;
    if (code === skip) continue;
    if (first === '') first = code;
    if (!code.endsWith('.0.0')) return code;
  }
  return first;
}

/** First SMTP reply code (2xx/4xx/5xx followed by space or dash) in the text, or ''. */
export function findReplyCode(text: string): string {
  const m = /(?:^|[\s;:(\]>"'])([245][0-5]\d)(?=[\s-](?!\d))/.exec(text);
  return m ? (m[1] ?? '') : '';
}

const COMMANDS: readonly [RegExp, string][] = [
  [/\b(?:in reply to|after|response to|for)\s+(?:the\s+)?(?:rcpt|rcpt to)\b/i, 'RCPT'],
  [/\b(?:in reply to|after|response to|for)\s+(?:the\s+)?mail(?: from)?\b/i, 'MAIL'],
  [/\b(?:in reply to|after|response to)\s+(?:the\s+)?(?:end of )?data\b/i, 'DATA'],
  [/\b(?:in reply to|after|response to)\s+(?:the\s+)?(?:ehlo|helo)\b/i, 'EHLO'],
  [/\b(?:in reply to|after|response to)\s+(?:the\s+)?starttls\b/i, 'STARTTLS'],
  [/\bafter (?:initial connection|connect)\b|\bconnection refused\b|\bremote host [^\r\n]{0,256}? said: 5\d\d[^\r\n]{0,256}?\bgreeting\b/i, 'CONN'],
  [/>>> ?rcpt to/i, 'RCPT'],
  [/>>> ?mail from/i, 'MAIL'],
  [/>>> ?data/i, 'DATA'],
  [/>>> ?(?:ehlo|helo)/i, 'EHLO'],
  [/most progress was rcpt to response/i, 'RCPT'],
  [/\brcpt to:?\s*</i, 'RCPT'],
  [/\bmail from:?\s*</i, 'MAIL'],
];

export function findCommand(text: string): string {
  for (const [re, cmd] of COMMANDS) if (re.test(text)) return cmd;
  return '';
}

/** Addresses in a text (local@domain), lower-cased, in order, without duplicates. */
export function findAddresses(text: string, limit = 50): string[] {
  const out: string[] = [];
  // Every repetition is bounded (RFC 5321: 64-octet local part, 63-octet labels): unbounded ones
  // backtrack quadratically on a long run of address characters with no dot after it, and one
  // hostile 200 KB bounce then held the thread for seconds (found by test/bounces/fuzz.test.ts).
  const re = /[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?){1,8}/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) && out.length < limit) {
    const a = cleanAddress(m[0]);
    if (a && !out.includes(a)) out.push(a);
  }
  return out;
}

/** Normalises an address as written in a DSN field or text: strips `rfc822;`, brackets, quotes, dots. */
export function cleanAddress(v: string): string {
  let a = v.trim().replace(/^rfc822\s*;\s*/i, '').trim();
  const angle = /<([^<>\s]+@[^<>\s]+)>/.exec(a);
  if (angle) a = angle[1] ?? a;
  a = a.replace(/^["'<(\[]+|[>"')\].,;:]+$/g, '').trim();
  if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(a)) return '';
  return a.toLowerCase();
}
