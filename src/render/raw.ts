/**
 * Prepares a message submitted as raw MIME: its bytes are kept as they are, except that line
 * endings become CRLF (see crlf.ts), the two fields RFC 5322 §3.6 requires and a sender may have
 * left out, Message-ID and Date, are added at the top of the header, and a message that stops after
 * its header gets the empty line that ends it (parsers such as mailauth otherwise see no header at
 * all; the DKIM body hash of an empty body is the same either way).
 */
import { SluiceError } from '../core/errors.js';
import { toCrlf } from './crlf.js';
import { formatRfc5322Date, hasField, readHeaderBlock } from './headers.js';

export function prepareRaw(source: Buffer, msgId: string, hostname: string, acceptedAt: number): Buffer {
  if (source.length === 0) throw new SluiceError('SLUICE_RENDER_FAILED', 'the submitted message is empty');
  const msg = toCrlf(source);
  const block = readHeaderBlock(msg);
  let added = '';
  if (!hasField(block, 'message-id')) added += `Message-ID: <${msgId}@${hostname}>\r\n`;
  if (!hasField(block, 'date')) added += `Date: ${formatRfc5322Date(acceptedAt)}\r\n`;
  const endsWithCrlf = msg.length >= 2 && msg[msg.length - 2] === 0x0d && msg[msg.length - 1] === 0x0a;
  const appended = block.separated ? '' : endsWithCrlf ? '\r\n' : '\r\n\r\n';
  if (added === '' && appended === '') return msg;
  const out = Buffer.allocUnsafeSlow(added.length + msg.length + appended.length);
  let at = out.write(added, 0, 'latin1');
  at += msg.copy(out, at);
  out.write(appended, at, 'latin1');
  return out;
}

/**
 * The message without its Bcc and Resent-Bcc fields (folded lines included), as Postfix's cleanup
 * strips Bcc: a submitted message is sent to every recipient byte for byte, so a Bcc field left in
 * it would show each of them the blind copies' addresses (RFC 5322 §3.6.3: the field is removed, or
 * sent to the blind recipients alone). The same buffer when there is none.
 */
export function withoutBcc(msg: Buffer): Buffer {
  const block = readHeaderBlock(msg);
  const drop = block.fields.filter((f) => f.name === 'bcc' || f.name === 'resent-bcc');
  if (drop.length === 0) return msg;
  const parts: Buffer[] = [];
  let from = 0;
  for (const f of drop) {
    parts.push(msg.subarray(from, f.start));
    // The field's own CRLF goes with it (a last field without one is cut to the end of the block).
    from = Math.min(f.end + 2, block.text.length);
  }
  parts.push(msg.subarray(from));
  return Buffer.concat(parts);
}
