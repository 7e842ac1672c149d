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
  if (bytes.length !== text.length) return false;
  // Line lengths first (a native search per line): HTML often has a long line, and then the regex
  // scan for control bytes (~1.5 ms per MB) is not needed at all.
  let start = 0;
  for (;;) {
    const nl = bytes.indexOf(LF, start);
    const end = nl === -1 ? bytes.length : nl - 1; // CR excluded
    if (end - start > MAX_LINE) return false;
    if (nl === -1) break;
    start = nl + 1;
  }
  return !CONTROL.test(text);
}

/** What the encoder does with a byte (one table lookup per byte on the hot path). */
const LITERAL = 0; // printable ASCII except '=', and SP and HTAB: written as they are (but see trailing blanks)
const CR_BYTE = 1; // CR: a hard line break when LF follows, else encoded
const ENCODED = 2; // anything else: =XX
const BYTE_CLASS = (() => {
  const t = new Uint8Array(256).fill(ENCODED);
  for (let b = 33; b <= 126; b++) t[b] = LITERAL;
  t[EQ] = ENCODED;
  t[SP] = LITERAL;
  t[TAB] = LITERAL;
  t[CR] = CR_BYTE;
  return t;
})();
/** Characters on an encoded line before its soft break ('=' is the 76th). */
const QP_ROOM = QP_LINE - 1;

/**
 * Quoted-printable encoding of CRLF text: hard breaks kept, soft breaks at 76 characters. The inner
 * loop copies a run of literal bytes up to the end of the encoded line, so the common byte costs one
 * table lookup and one store. Blanks are literal in that run too (HTML is ~15 % spaces, and stopping
 * at each cost a quarter of the time); the one blank that must not stay literal, the last of a line
 * (rule 3: transport strips trailing whitespace), is taken back and encoded when the hard break or
 * the end of the text comes. Measured on bench/content.ts's 100 KB newsletter: ~0.43 ms, against
 * ~0.55 ms stopping at every blank and ~1 ms deciding every byte's width on its own.
 */
export function encodeQuotedPrintable(src: Buffer): Buffer {
  const n = src.length;
  // Worst case: every byte becomes =XX, plus a soft break ('=' CRLF) every 25 encoded bytes.
  const out = Buffer.allocUnsafe(n * 3 + Math.ceil(n / 25) * 3 + 3);
  // Written out inline, without helper closures: `o` and `col` captured by a closure live in a heap
  // context instead of registers, which made the loop ~25 % slower.
  let o = 0;
  let col = 0;
  let i = 0;
  for (;;) {
    // A run of literal bytes, as far as the line has room.
    const limit = Math.min(n, i + (QP_ROOM - col));
    const runStart = i;
    while (i < limit && BYTE_CLASS[src[i] as number] === LITERAL) out[o++] = src[i++] as number;
    col += i - runStart;
    const hardBreak = i < n && src[i] === CR && src[i + 1] === LF;
    if (i === n || hardBreak) {
      // The line ends: a blank written last is taken back and encoded.
      const last = col > 0 ? (out[o - 1] as number) : 0;
      if (last === SP || last === TAB) {
        o--;
        col--;
        if (col > QP_ROOM - 3) {
          out[o++] = EQ;
          out[o++] = CR;
          out[o++] = LF;
          col = 0;
        }
        out[o++] = EQ;
        out[o++] = HEX[last >> 4] as number;
        out[o++] = HEX[last & 15] as number;
      }
      if (i === n) break;
      out[o++] = CR;
      out[o++] = LF;
      i += 2;
      col = 0;
      continue;
    }
    const b = src[i] as number;
    // The line is full and no hard break ends it here: a soft one does.
    if (col === QP_ROOM || (BYTE_CLASS[b] !== LITERAL && col > QP_ROOM - 3)) {
      out[o++] = EQ;
      out[o++] = CR;
      out[o++] = LF;
      col = 0;
    }
    if (BYTE_CLASS[b] === LITERAL) continue;
    out[o++] = EQ;
    out[o++] = HEX[b >> 4] as number;
    out[o++] = HEX[b & 15] as number;
    col += 3;
    i++;
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

/**
 * `text` as a `text/plain` or `text/html` part, UTF-8, in the cheapest safe transfer encoding. The
 * whole part (`part`) is only copied together when asked for: a single-part message uses head and
 * body apart.
 */
export function encodeText(subtype: 'plain' | 'html', text: string): EncodedText {
  const normal = crlfText(text);
  const bytes = Buffer.from(normal, 'utf8');
  const transferEncoding = fitsSevenBit(normal, bytes) ? '7bit' : 'quoted-printable';
  const body = transferEncoding === '7bit' ? bytes : encodeQuotedPrintable(bytes);
  const head = `Content-Type: text/${subtype}; charset=utf-8\r\nContent-Transfer-Encoding: ${transferEncoding}`;
  let part: Buffer | undefined;
  return {
    transferEncoding,
    head,
    body,
    get part(): Buffer {
      part ??= Buffer.concat([Buffer.from(`${head}\r\n\r\n`, 'latin1'), body]);
      return part;
    },
  };
}
