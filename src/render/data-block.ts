/**
 * SMTP DATA framing (RFC 5321 §4.5.2 and §2.3.8): every line ends in CRLF, a line that starts with
 * '.' gets one more '.', and the block ends with '.' CRLF. The insertion points are found line by
 * line with indexOf, then the message is copied once, in stretches, into one pre-sized Buffer.
 *
 *   in:  "a\n.b\r\nc"        out: "a\r\n..b\r\nc\r\n.\r\n"
 */
import { isAscii } from 'node:buffer';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

export interface DataBlock {
  /** The bytes to write after the 354 reply, terminator included. */
  bytes: Buffer;
  /** Some byte is above 0x7F: the body needs BODY=8BITMIME (RFC 6152) when the server offers it. */
  eightBit: boolean;
}

export function toDataBlock(message: Uint8Array): DataBlock {
  const buf = Buffer.isBuffer(message) ? message : Buffer.from(message.buffer, message.byteOffset, message.byteLength);
  const n = buf.length;
  // Where a byte must be inserted: a '.' before a line-leading dot, a CR before a bare LF. Found
  // line by line with indexOf (memchr) rather than byte by byte: a message is a few hundred lines.
  const at: number[] = [];
  const insert: number[] = [];
  let lineStart = 0;
  while (lineStart < n) {
    if (buf[lineStart] === DOT) {
      at.push(lineStart);
      insert.push(DOT);
    }
    const lf = buf.indexOf(LF, lineStart);
    if (lf === -1) break;
    if (lf === 0 || buf[lf - 1] !== CR) {
      at.push(lf);
      insert.push(CR);
    }
    lineStart = lf + 1;
  }
  const endsWithNewline = n > 0 && buf[n - 1] === LF;
  const tail = (n > 0 && !endsWithNewline ? 2 : 0) + 3; // closing CRLF of the last line, then ".\r\n"

  const out = Buffer.allocUnsafe(n + at.length + tail);
  let o = 0;
  let from = 0;
  for (let k = 0; k < at.length; k++) {
    const pos = at[k] as number;
    o += buf.copy(out, o, from, pos);
    out[o++] = insert[k] as number;
    from = pos;
  }
  o += buf.copy(out, o, from, n);
  if (n > 0 && !endsWithNewline) {
    out[o++] = CR;
    out[o++] = LF;
  }
  out[o++] = DOT;
  out[o++] = CR;
  out[o++] = LF;
  return { bytes: out, eightBit: !isAscii(buf) };
}
