/**
 * The text/plain and text/html parts of an API message, encoded here rather than by nodemailer's
 * stream encoders: those choose an encoding by scanning the text with regexes and then quote it
 * through a stream, which together cost ~1.4 ms per 10 KB and ~11 ms per 100 KB of HTML (measured in
 * bench/e2e.ts) — more than DKIM signing. Here one pass decides and one pass encodes, on Buffers.
 *
 *   ASCII only, lines ≤ 998 octets, no control bytes → 7bit: the text goes out as it is (RFC 5322 §2.1.1)
 *   anything else                                     → quoted-printable (RFC 2045 §6.7), UTF-8
 *
 * The result is a whole MIME part (headers + body), handed to MailComposer as a raw node.
 */
const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const TAB = 0x09;
const EQ = 0x3d;
const HEX = Buffer.from('0123456789ABCDEF');
/** RFC 5322 §2.1.1: at most 998 octets a line, CRLF excluded. */
const MAX_LINE = 998;
/** RFC 2045 §6.7 rule 5: encoded lines are at most 76 characters, the soft-break '=' included. */
const QP_LINE = 76;
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;

/** Line endings become CRLF (a lone CR or LF is a line break in the submitted text). */
export function crlfText(text: string): string {
  if (text.indexOf('\r') === -1) return text.indexOf('\n') === -1 ? text : text.split('\n').join('\r\n');
  return text.replace(/\r\n|\r|\n/g, '\r\n');
}

function fitsSevenBit(text: string, bytes: Buffer): boolean {
  // A JS string encodes to as many UTF-8 bytes as it has characters only when all are ASCII.
  if (bytes.length !== text.length || CONTROL.test(text)) return false;
  let start = 0;
  for (;;) {
    const nl = bytes.indexOf(LF, start);
    const end = nl === -1 ? bytes.length : nl - 1; // CR excluded
    if (end - start > MAX_LINE) return false;
    if (nl === -1) return true;
    start = nl + 1;
  }
}

/** Quoted-printable encoding of CRLF text: hard breaks kept, soft breaks at 76 characters. */
export function encodeQuotedPrintable(src: Buffer): Buffer {
  const n = src.length;
  // Worst case: every byte becomes =XX, plus a soft break ('=' CRLF) every 25 encoded bytes.
  const out = Buffer.allocUnsafe(n * 3 + Math.ceil(n / 25) * 3 + 3);
  let o = 0;
  let col = 0;
  for (let i = 0; i < n; i++) {
    const b = src[i] as number;
    if (b === CR && src[i + 1] === LF) {
      out[o++] = CR;
      out[o++] = LF;
      i++;
      col = 0;
      continue;
    }
    let literal: boolean;
    if (b >= 33 && b <= 126) literal = b !== EQ;
    else if (b === SP || b === TAB) {
      // Whitespace at the end of a line would be stripped in transport: encode it there (rule 3).
      literal = !(i + 1 === n || (src[i + 1] === CR && src[i + 2] === LF));
    } else literal = false;
    const width = literal ? 1 : 3;
    if (col + width > QP_LINE - 1) {
      out[o++] = EQ;
      out[o++] = CR;
      out[o++] = LF;
      col = 0;
    }
    if (literal) out[o++] = b;
    else {
      out[o++] = EQ;
      out[o++] = HEX[b >> 4] as number;
      out[o++] = HEX[b & 15] as number;
    }
    col += width;
  }
  return out.subarray(0, o);
}

export interface EncodedText {
  readonly transferEncoding: '7bit' | 'quoted-printable';
  /** The part's two header lines, without the final CRLF. */
  readonly head: string;
  readonly body: Buffer;
  /** The whole MIME part: Content-Type and Content-Transfer-Encoding headers, then the body. */
  readonly part: Buffer;
}

/** `text` as a `text/plain` or `text/html` part, UTF-8, in the cheapest safe transfer encoding. */
export function encodeText(subtype: 'plain' | 'html', text: string): EncodedText {
  const normal = crlfText(text);
  const bytes = Buffer.from(normal, 'utf8');
  const transferEncoding = fitsSevenBit(normal, bytes) ? '7bit' : 'quoted-printable';
  const body = transferEncoding === '7bit' ? bytes : encodeQuotedPrintable(bytes);
  const head = `Content-Type: text/${subtype}; charset=utf-8\r\nContent-Transfer-Encoding: ${transferEncoding}`;
  return { transferEncoding, head, body, part: Buffer.concat([Buffer.from(`${head}\r\n\r\n`, 'latin1'), body]) };
}
