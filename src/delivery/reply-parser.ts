import { isUtf8 } from 'node:buffer';
import { NON_ASCII } from '../core/utf8.js';

/**
 * Incremental parser of SMTP replies (RFC 5321 §4.2): lines "NNN-text" continue a reply, "NNN text"
 * (or a bare "NNN") ends it. Bytes arrive in arbitrary chunks; complete replies come out in order.
 *
 * RFC 5321 §4.2.1 has every line of a reply carry the same code; a server that mixes them ("250-ok"
 * then "550 no") still ends its reply with the space, so the reply is whole and takes the code of its
 * last line, as in Postfix (smtp_chat.c), with every line kept.
 *
 * A remote server is untrusted input, so everything is bounded: a line longer than MAX_LINE_BYTES, a
 * reply of more than MAX_REPLY_LINES lines, or a line that is not a reply is a protocol error, after
 * which the parser accepts nothing more (the session is over: we can no longer tell which answer
 * belongs to which command).
 */
export interface Reply {
  /** The code of the last line: the one acted on. */
  code: number;
  /** The reply lines as received (code and separator included), without line endings, decoded by text(). */
  lines: string[];
}

// RFC 5321 §4.5.3.1.5 limits a reply line to 512 octets; real servers exceed it a little (long
// Microsoft/Google explanations with URLs), so we allow 8× that before calling it abuse.
const MAX_LINE_BYTES = 4096;
// A greeting or EHLO answer has a dozen lines at most in practice; 128 leaves room for chatty banners.
const MAX_REPLY_LINES = 128;
const REPLY_LINE = /^([2-5]\d\d)([ -]|$)/;

/**
 * A complete line, held as latin1 (one char per byte), as text: UTF-8 when its bytes are UTF-8 (an
 * SMTPUTF8 server's "550 5.1.1 Empfänger unbekannt", RFC 6531 §3.7.4), else latin1 as it stands (an
 * old server's ISO-8859-1 text is then right, and nothing is replaced by U+FFFD).
 */
function text(line: string): string {
  if (!NON_ASCII.test(line)) return line;
  const bytes = Buffer.from(line, 'latin1');
  return isUtf8(bytes) ? bytes.toString('utf8') : line;
}

export class ReplyParser {
  private buffered = '';
  private pending: string[] = [];
  private failure: string | null = null;

  /** Set once the stream is no longer SMTP; the caller must drop the connection. */
  get error(): string | null {
    return this.failure;
  }

  /** Feeds bytes; returns the replies they complete (possibly none). */
  push(chunk: Buffer): Reply[] {
    if (this.failure !== null) return [];
    // latin1 maps bytes 1:1, so a multi-byte UTF-8 sequence split across chunks cannot be corrupted
    // before the line is complete; text() decodes each complete line.
    this.buffered += chunk.toString('latin1');
    const out: Reply[] = [];
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) !== -1) {
      const line = this.buffered.slice(0, nl).replace(/\r$/, '');
      this.buffered = this.buffered.slice(nl + 1);
      const reply = this.line(line);
      if (this.failure !== null) return out;
      if (reply) out.push(reply);
    }
    if (this.buffered.length > MAX_LINE_BYTES) this.fail(`reply line longer than ${MAX_LINE_BYTES} bytes`);
    return out;
  }

  private line(line: string): Reply | null {
    if (line.length > MAX_LINE_BYTES) return this.fail(`reply line longer than ${MAX_LINE_BYTES} bytes`);
    const m = REPLY_LINE.exec(line);
    if (!m) return this.fail(`invalid reply line: ${JSON.stringify(line.slice(0, 80))}`);
    this.pending.push(text(line));
    if (this.pending.length > MAX_REPLY_LINES) return this.fail(`reply longer than ${MAX_REPLY_LINES} lines`);
    if (m[2] === '-') return null;
    const reply = { code: Number(m[1]), lines: this.pending };
    this.pending = [];
    return reply;
  }

  private fail(reason: string): null {
    this.failure = reason;
    this.buffered = '';
    this.pending = [];
    return null;
  }
}
