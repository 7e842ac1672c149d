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
  // RFC 5322 §3.5: the header section ends at the first empty line. A message that starts with one
  // has none, whatever follows (render/headers.ts reads it so, and would send it without a From).
  if (raw.length >= 2 && raw[0] === 0x0d && raw[1] === 0x0a) return [];
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

/**
 * The From value with its quoted strings and comments taken out: what is left is where RFC 5322 puts
 * the address (a display name may hold '@' or '<' only quoted or in a comment). Backslash escapes
 * count inside both; comments nest.
 */
function bareText(value: string): string {
  let out = '';
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i] as string;
    if ((quoted || depth > 0) && c === '\\') i++;
    else if (quoted) quoted = c !== '"';
    else if (c === '(') depth++;
    else if (depth > 0) depth -= c === ')' ? 1 : 0;
    else if (c === '"') quoted = true;
    else out += c;
  }
  return out;
}

/** The one address of the From header, which must name exactly one mailbox (see oneAddress). */
export function headerFrom(raw: Buffer): string {
  return headerAuthors(raw).from;
}

/** The fields besides From that name who the message is from (see headerAuthors). */
const OTHER_AUTHORS = /^(sender|resent-from|resent-sender):/i;

export interface HeaderAuthors {
  /** The one address of From (see headerFrom). */
  readonly from: string;
  /** The address of each Sender, Resent-From and Resent-Sender field, with the field's name as written. */
  readonly others: readonly { readonly field: string; readonly address: string }[];
}

/**
 * The From address and the other author addresses a reader is shown: Sender (mail clients show "x on
 * behalf of" the From) and the Resent-From / Resent-Sender of a resent message (RFC 5322 §3.6.6). The
 * message goes out signed with the account's key, so each of them is the account's to use, as From
 * is, and each must name one address as plainly as From must (see oneAddress).
 */
export function headerAuthors(raw: Buffer): HeaderAuthors {
  const lines = headerLines(raw);
  const froms = lines.filter((l) => /^from:/i.test(l));
  if (froms.length !== 1) throw malformed(froms.length === 0 ? 'no From header' : 'more than one From header');
  const others: { field: string; address: string }[] = [];
  for (const line of lines) {
    if (!OTHER_AUTHORS.test(line)) continue;
    const colon = line.indexOf(':');
    const field = line.slice(0, colon);
    others.push({ field, address: oneAddress(field, line.slice(colon + 1).trim()) });
  }
  return { from: oneAddress('From', (froms[0] as string).slice(5).trim()), others };
}

/**
 * The one address of an author field. The message is signed and sent as it is, so the field must
 * say one thing to every reader: the lenient parser takes `<news@own.example> <x@other.example>` or
 * `x@other.example <news@own.example>` for news@own.example (the rest as a display name), where
 * other parsers (Python's email, for one) read x@other.example — a domain the account does not own,
 * signed with one it does. So, outside quotes and comments, exactly one '@', at most one angle
 * address, and nothing after it.
 */
function oneAddress(field: string, value: string): string {
  // Checked before the parser, whose time grows with the square of a list's length (a 150 KB From of
  // "a,a,…" held the process for 26 s): a mailbox is short, and has no ',' or ';' outside quotes and
  // comments (a list or a group is more than one address, or none).
  if (value.length > MAX_AUTHOR_FIELD) throw malformed(`the ${field} header is longer than ${MAX_AUTHOR_FIELD} characters`);
  const bare = bareText(value);
  if (/[,;]/.test(bare)) throw malformed(`the ${field} header must name exactly one address`);
  const angle = bare.indexOf('<');
  if (bare.split('@').length !== 2 || angle !== bare.lastIndexOf('<') || (angle !== -1 && !/^<[^<>]*>\s*$/.test(bare.slice(angle)))) {
    throw malformed(`the ${field} header must name exactly one address (a display name with "@" or "<" must be quoted)`);
  }
  const list = addressparser(value, { flatten: true });
  if (list.length !== 1 || !list[0]?.address) throw malformed(`the ${field} header must name exactly one address`);
  return list[0].address;
}

/** The longest author field taken (unfolded): an address (254) and a long encoded display name fit well within it. */
const MAX_AUTHOR_FIELD = 2048;
