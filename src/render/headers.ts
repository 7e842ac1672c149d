/**
 * The header block of a CRLF message, read without decoding: the block is viewed as a latin1
 * string, which maps every byte to one char, so offsets are byte offsets and 8-bit (SMTPUTF8) header
 * bytes survive untouched when written back with 'latin1'.
 *
 *   message:  Name: value CRLF  (SP/HTAB continuation CRLF)*  …  CRLF  body
 *             ^0                                            headerEnd ^  ^bodyStart
 */

/**
 * Header fields an API message or a campaign never takes from its `headers`: Sluice writes them
 * itself, or they would break the MIME structure, or they name an author (Sender, and a resent
 * message's Resent-* block, RFC 5322 §3.6.6: a Resent-From is held to the From-domain rule over
 * SMTP, and an API message or a campaign is never a resent one).
 */
export const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  'from', 'to', 'cc', 'bcc', 'subject', 'reply-to', 'message-id', 'date', 'sender', 'return-path',
  'received', 'dkim-signature', 'mime-version', 'content-type', 'content-transfer-encoding',
  'resent-from', 'resent-sender', 'resent-to', 'resent-cc', 'resent-bcc', 'resent-date', 'resent-message-id',
]);

export interface HeaderField {
  /** Lower-case field name without surrounding whitespace; '' for a line that has no colon. */
  readonly name: string;
  /** Offsets of the whole field (name, colon, folded value) in the header text, ending CRLF excluded. */
  readonly start: number;
  readonly end: number;
}

export interface HeaderBlock {
  /** Header block as latin1, each field ending in CRLF (the last one too, when the message had it). */
  readonly text: string;
  readonly fields: readonly HeaderField[];
  /** Byte offset where the body starts (after the empty line), or message length when there is none. */
  readonly bodyStart: number;
  /** Whether the empty line that ends the header is there (a message may stop after its header). */
  readonly separated: boolean;
}

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');

export function readHeaderBlock(message: Buffer): HeaderBlock {
  let headerEnd: number;
  let bodyStart: number;
  let separated = true;
  if (message.length >= 2 && message[0] === 0x0d && message[1] === 0x0a) {
    headerEnd = 0; // the message starts with the empty line: no header at all
    bodyStart = 2;
  } else {
    const sep = message.indexOf(CRLFCRLF);
    separated = sep !== -1;
    headerEnd = separated ? sep + 2 : message.length;
    bodyStart = separated ? sep + 4 : message.length;
  }
  const text = message.toString('latin1', 0, headerEnd);
  return { text, fields: parseFields(text), bodyStart, separated };
}

function parseFields(text: string): HeaderField[] {
  const fields: HeaderField[] = [];
  let start = -1;
  let end = -1;
  let pos = 0;
  while (pos < text.length) {
    const eol = text.indexOf('\r\n', pos);
    const lineEnd = eol === -1 ? text.length : eol;
    const first = text.charCodeAt(pos);
    const continuation = first === 0x20 || first === 0x09;
    if (continuation && start !== -1) {
      end = lineEnd;
    } else {
      if (start !== -1) fields.push(field(text, start, end));
      start = pos;
      end = lineEnd;
    }
    pos = eol === -1 ? text.length : eol + 2;
  }
  if (start !== -1) fields.push(field(text, start, end));
  return fields;
}

function field(text: string, start: number, end: number): HeaderField {
  const colon = text.indexOf(':', start);
  if (colon === -1 || colon >= end) return { name: '', start, end };
  return { name: text.slice(start, colon).replace(/[ \t]+$/, '').toLowerCase(), start, end };
}

export function hasField(block: HeaderBlock, name: string): boolean {
  return block.fields.some((f) => f.name === name);
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'] as const;
const pad = (n: number): string => (n < 10 ? `0${n}` : String(n));

/** RFC 5322 §3.3 date-time in UTC, e.g. 'Tue, 01 Jul 2025 09:05:00 +0000' ('GMT' is obsolete syntax). */
export function formatRfc5322Date(ms: number): string {
  const d = new Date(ms);
  return (
    `${DAYS[d.getUTCDay()]}, ${pad(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`
  );
}
