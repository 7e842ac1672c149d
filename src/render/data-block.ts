/**
 * How a message goes on the wire after MAIL and RCPT:
 *
 * - DATA (RFC 5321 §4.5.2 and §2.3.8): every line ends in CRLF, a line that starts with '.' gets one
 *   more '.', and the block ends with '.' CRLF. The insertion points are found line by line with
 *   indexOf, then the message is copied once, in stretches, into one pre-sized Buffer.
 *
 *     in:  "a\n.b\r\nc"        out: "a\r\n..b\r\nc\r\n.\r\n"
 *
 * - BDAT (RFC 3030 CHUNKING): the message itself, counted, with no dot-stuffing and no terminator;
 *   only its line ends are made CRLF (and the last line ended), so both ways carry the same text.
 *   A message that is CRLF throughout, as every message Sluice builds or accepts is, is not copied.
 *
 *     in:  "a\n.b\r\nc"        out: "a\r\n.b\r\nc\r\n"   (sent as "BDAT 11 LAST")
 */
import { isAscii } from 'node:buffer';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

export interface DataBlock {
  /** The bytes to write after the 354 reply, terminator included; or, `chunked`, the BDAT chunk. */
  bytes: Buffer;
  /** Some byte is above 0x7F: the body needs BODY=8BITMIME (RFC 6152) when the server offers it. */
  eightBit: boolean;
  /** A BDAT chunk (toChunk) rather than a DATA block: for a server that offers CHUNKING. */
  chunked?: boolean;
  /**
   * The message size of RFC 1870 §3 (SIZE=, and what the server's SIZE limit is compared with): its
   * octets with CRLF line ends, not counting the doubled dots or the terminating '.' CRLF. Left out,
   * `bytes.length` (a chunk, which has neither).
   */
  size?: number;
}

export function toDataBlock(message: Uint8Array): DataBlock {
  return frame(message, false);
}

/** The message as one BDAT chunk: CRLF line ends, the last line ended, nothing else changed. */
export function toChunk(message: Uint8Array): DataBlock {
  return frame(message, true);
}

/**
 * Both framings in one walk. Where a byte must be inserted: a CR before a bare LF, and for DATA a
 * '.' before a line-leading dot. Found line by line with indexOf (memchr) rather than byte by byte:
 * a message is a few hundred lines. Then the message is copied once, in stretches, into one
 * pre-sized Buffer, or not at all for a chunk that needs nothing.
 */
function frame(message: Uint8Array, chunk: boolean): DataBlock {
  const buf = Buffer.isBuffer(message) ? message : Buffer.from(message.buffer, message.byteOffset, message.byteLength);
  const n = buf.length;
  const at: number[] = [];
  const insert: number[] = [];
  let crs = 0;
  let lineStart = 0;
  while (lineStart < n) {
    if (!chunk && buf[lineStart] === DOT) {
      at.push(lineStart);
      insert.push(DOT);
    }
    const lf = buf.indexOf(LF, lineStart);
    if (lf === -1) break;
    if (lf === 0 || buf[lf - 1] !== CR) {
      at.push(lf);
      insert.push(CR);
      crs++;
    }
    lineStart = lf + 1;
  }
  const unended = n > 0 && buf[n - 1] !== LF;
  const eightBit = !isAscii(buf);
  if (chunk && at.length === 0 && !unended) return { bytes: buf, eightBit, chunked: true };
  const size = n + crs + (unended ? 2 : 0);

  // The closing CRLF of the last line, then for DATA ".\r\n".
  const out = Buffer.allocUnsafe(n + at.length + (unended ? 2 : 0) + (chunk ? 0 : 3));
  let o = 0;
  let from = 0;
  for (let k = 0; k < at.length; k++) {
    const pos = at[k] as number;
    o += buf.copy(out, o, from, pos);
    out[o++] = insert[k] as number;
    from = pos;
  }
  o += buf.copy(out, o, from, n);
  if (unended) {
    out[o++] = CR;
    out[o++] = LF;
  }
  if (chunk) return { bytes: out, eightBit, chunked: true };
  out[o++] = DOT;
  out[o++] = CR;
  out[o++] = LF;
  return { bytes: out, eightBit, size };
}
