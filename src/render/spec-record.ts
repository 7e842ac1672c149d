/**
 * How an HTTP API message (a MessageSpec) is stored in {m:<id>}:body. The html — nearly all of the
 * bytes — is kept as raw UTF-8 after a JSON header instead of inside the JSON, so it is neither
 * escaped by JSON.stringify at acceptance nor unescaped by JSON.parse in the render worker (both
 * walk every character: ~0.3 ms per 100 KB of HTML on the ingress thread, measured in bench/e2e.ts):
 *
 *   "S2" SP <compact JSON of the spec without html> LF <html, UTF-8, to the end of the record>
 *
 * Compact JSON never holds a raw LF, so the first LF ends the header. Nothing depends on a length,
 * so the in-place replacement of an address that erasure does on the stored bytes
 * (eraseRecipient-5.lua) leaves the record readable. A record that starts with '{' is the whole spec
 * as JSON (a message without html, and every record stored before this layout).
 *
 * Pure: ingress encodes, the render worker decodes.
 */
import { decodeUtf8 } from '../core/utf8.js';
import type { MessageSpec } from './protocol.js';

const MAGIC = 'S2 ';
const LF = 0x0a;

/** The stored bytes of a spec. */
export function encodeSpecRecord(spec: MessageSpec): Buffer {
  if (spec.html === undefined) return Buffer.from(JSON.stringify(spec), 'utf8');
  const { html, ...rest } = spec;
  const header = `${MAGIC}${JSON.stringify(rest)}\n`;
  const headerBytes = Buffer.byteLength(header, 'utf8');
  const out = Buffer.allocUnsafe(headerBytes + Buffer.byteLength(html, 'utf8'));
  out.write(header, 0, 'utf8');
  out.write(html, headerBytes, 'utf8');
  return out;
}

/**
 * The spec a record holds, as plain data still to be shape-checked (render/compose.ts parseSpec).
 * Throws a SyntaxError when the header or the legacy JSON does not parse.
 */
export function decodeSpecRecord(record: Uint8Array | string): unknown {
  if (typeof record === 'string') {
    if (!record.startsWith(MAGIC)) return JSON.parse(record);
    const lf = record.indexOf('\n');
    if (lf === -1) throw new SyntaxError('spec record header has no end');
    return withHtml(JSON.parse(record.slice(MAGIC.length, lf)), record.slice(lf + 1));
  }
  const bytes = Buffer.isBuffer(record) ? record : Buffer.from(record.buffer, record.byteOffset, record.byteLength);
  if (!(bytes[0] === 0x53 && bytes[1] === 0x32 && bytes[2] === 0x20)) return JSON.parse(bytes.toString('utf8'));
  const lf = bytes.indexOf(LF);
  if (lf === -1) throw new SyntaxError('spec record header has no end');
  return withHtml(JSON.parse(bytes.toString('utf8', MAGIC.length, lf)), decodeUtf8(bytes.subarray(lf + 1)));
}

function withHtml(header: unknown, html: string): unknown {
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return header;
  return { ...header, html };
}

/**
 * The record with the id in its Message-ID (`<id@host>`, made by ingress/http-schema.ts) changed
 * from `from` to `to`, for a message that had to take another id before it was stored (see
 * ingress/accept.ts). Ids have one length, so the bytes are overwritten in a copy. Inside the JSON,
 * `"messageId":"<` can only be the key itself (a quote within a string value is escaped), and it
 * comes before the html.
 */
export function withMessageId(record: Buffer, from: string, to: string): Buffer {
  if (from.length !== to.length) throw new RangeError('message ids differ in length');
  const needle = `"messageId":"<${from}@`;
  const at = record.indexOf(needle, 0, 'latin1');
  if (at === -1) return record;
  const out = Buffer.from(record);
  out.write(to, at + needle.length - from.length - 1, 'latin1');
  return out;
}
