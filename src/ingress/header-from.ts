import addressparser from 'nodemailer/lib/addressparser/index.js';
import { malformed } from './message-check.js';

/**
 * The author address of a raw message: the one From header, which must name exactly one mailbox.
 * The header section is parsed within its first HEADER_LIMIT bytes only: real header sections are a
 * few KiB (a long DKIM/ARC chain stays below 64 KiB), so 256 KiB bounds the work on hostile input
 * without refusing real mail.
 */
const HEADER_LIMIT = 256 * 1024;

/** The header section (unfolded lines), or throws SLUICE_INGRESS_BAD_MESSAGE. */
export function headerLines(raw: Buffer): string[] {
  const window = raw.subarray(0, HEADER_LIMIT);
  let end = window.indexOf('\r\n\r\n');
  const lf = window.indexOf('\n\n');
  if (lf >= 0 && (end < 0 || lf < end)) end = lf;
  if (end < 0) {
    // A message may be headers only, without the empty line (RFC 5322 §3.5: the body is optional).
    if (raw.length > HEADER_LIMIT) throw malformed(`no end of the header section within ${HEADER_LIMIT} bytes`);
    end = raw.length;
  }
  const text = window.subarray(0, end).toString('utf8');
  const lines: string[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line === '') continue;
    if (line[0] === ' ' || line[0] === '\t') {
      if (lines.length === 0) throw malformed('the header section starts with a continuation line');
      lines[lines.length - 1] += line;
    } else {
      if (!/^[\x21-\x39\x3b-\x7e]+:/.test(line)) throw malformed('a header line has no field name');
      lines.push(line);
    }
  }
  return lines;
}

export function headerFrom(raw: Buffer): string {
  const froms = headerLines(raw).filter((l) => /^from:/i.test(l));
  if (froms.length !== 1) throw malformed(froms.length === 0 ? 'no From header' : 'more than one From header');
  const value = (froms[0] as string).slice(5).trim();
  const list = addressparser(value, { flatten: true });
  if (list.length !== 1 || !list[0]?.address) throw malformed('the From header must name exactly one address');
  return list[0].address;
}
