/**
 * A small, bounded MIME walker for bounce mail. It keeps exactly what bounce classification needs —
 * the header fields of every part, the decoded text of every text-like part, and the nesting of
 * message/rfc822 attachments — and nothing else (no attachments as Buffers, no HTML rendering).
 *
 * Why not mailparser: it flattens the tree into "text"/"attachments" and hides the part types
 * (message/delivery-status, message/feedback-report, text/rfc822-headers) that the classifier keys on.
 *
 * Every loop is bounded so hostile input cannot make it slow or deep; anything malformed is read
 * leniently (as a real MTA would) and never throws.
 */

/** Input beyond this is ignored: a DSN's report parts come before the returned original, and 4 MiB
 *  holds every real bounce we have seen with its attachment (the largest sample is ~70 KiB). */
export const MAX_INPUT_BYTES = 4 * 1024 * 1024;
/** RFC 5322 has no limit; real mail carries < 100 fields. 1000 stops header floods. */
const MAX_HEADER_FIELDS = 1000;
/** Characters kept of one header field's value (unfolded). */
const MAX_FIELD_CHARS = 64 * 1024;
/** multipart/report inside message/rfc822 inside multipart/mixed is depth 3; 8 leaves room. */
const MAX_DEPTH = 8;
/** Total parts across the whole tree. */
const MAX_PARTS = 200;

export interface Headers {
  /** lower-cased field name → values in order of appearance (unfolded, raw, not 2047-decoded). */
  readonly fields: Map<string, string[]>;
}

export interface MimePart {
  readonly headers: Headers;
  /** lower-cased type/subtype, `text/plain` when absent. */
  readonly type: string;
  readonly params: Record<string, string>;
  /** Decoded body as text (for multiparts: the preamble). */
  readonly text: string;
  readonly children: MimePart[];
  readonly depth: number;
}

export function header(h: Headers, name: string): string {
  return h.fields.get(name)?.[0] ?? '';
}

/** Splits a raw message (already a string) into header block and body at the first empty line. */
function splitHead(raw: string): [string, string] {
  // A part may have no header fields at all: then it starts with the empty line.
  const empty = /^\r?\n/.exec(raw);
  if (empty) return ['', raw.slice(empty[0].length)];
  const m = /\r?\n\r?\n/.exec(raw);
  if (!m) return [raw, ''];
  return [raw.slice(0, m.index), raw.slice(m.index + m[0].length)];
}

export function parseHeaders(block: string): Headers {
  const fields = new Map<string, string[]>();
  let count = 0;
  let name = '';
  let value = '';
  const flush = (): void => {
    if (!name) return;
    const key = name.toLowerCase();
    const list = fields.get(key);
    const v = value.replace(/\s+/g, ' ').trim();
    if (list) list.push(v);
    else fields.set(key, [v]);
    name = '';
    count++;
  };
  for (const line of block.split(/\r?\n/)) {
    if (count >= MAX_HEADER_FIELDS) break;
    if (/^[ \t]/.test(line)) {
      // A field folded into a million lines is still one field: past MAX_FIELD_CHARS the rest is not kept.
      if (name && value.length < MAX_FIELD_CHARS) value += ' ' + line.trim();
      continue;
    }
    flush();
    const colon = line.indexOf(':');
    if (colon <= 0 || colon > 76 || /\s/.test(line.slice(0, colon).trim())) continue;
    name = line.slice(0, colon).trim();
    value = line.slice(colon + 1);
  }
  flush();
  return { fields };
}

/** Parses `type/sub; a=b; c="d"` into the lower-cased type and its parameters. */
export function parseContentType(v: string): { type: string; params: Record<string, string> } {
  const params: Record<string, string> = {};
  const semi = v.indexOf(';');
  const type = (semi < 0 ? v : v.slice(0, semi)).trim().toLowerCase() || 'text/plain';
  if (semi >= 0) {
    const re = /;\s*([^=\s;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))/g;
    let m: RegExpExecArray | null;
    let guard = 0;
    while ((m = re.exec(v.slice(semi))) && guard++ < 50) {
      params[(m[1] ?? '').toLowerCase()] = m[2] ?? m[3] ?? '';
    }
  }
  return { type: type.includes('/') ? type : 'text/plain', params };
}

function decodeCharset(bytes: Buffer, charset: string): string {
  const cs = charset.trim().toLowerCase() || 'utf-8';
  try {
    return new TextDecoder(cs === 'us-ascii' || cs === 'ascii' ? 'utf-8' : cs).decode(bytes);
  } catch {
    return bytes.toString('utf8');
  }
}

function decodeQuotedPrintable(s: string): Buffer {
  const clean = s.replace(/=\r?\n/g, '');
  // Into one buffer, never longer than the text (an array of numbers and a regex per '=' cost ~0.6 s for 4 MB).
  const out = Buffer.allocUnsafe(clean.length);
  let n = 0;
  for (let i = 0; i < clean.length; i++) {
    const c = clean.charCodeAt(i);
    const hi = c === 0x3d ? hexValue(clean.charCodeAt(i + 1)) : -1;
    const lo = hi >= 0 ? hexValue(clean.charCodeAt(i + 2)) : -1;
    if (lo >= 0) {
      out[n++] = hi * 16 + lo;
      i += 2;
    } else out[n++] = c & 0xff;
  }
  return out.subarray(0, n);
}

/** 0–15 for a hex digit's char code, else -1 (NaN, past the end, included). */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/** Body bytes (held as latin1 so each char is one byte) → text in the part's charset. */
function decodeBody(latin1: string, encoding: string, charset: string): string {
  const enc = encoding.trim().toLowerCase();
  let bytes: Buffer;
  if (enc === 'base64') bytes = Buffer.from(latin1.replace(/[^A-Za-z0-9+/=]/g, ''), 'base64');
  else if (enc === 'quoted-printable') bytes = decodeQuotedPrintable(latin1);
  else bytes = Buffer.from(latin1, 'latin1');
  return decodeCharset(bytes, charset);
}

/** RFC 2047 encoded-words → text (Subject, From display names). */
export function decodeWords(v: string): string {
  return v
    .replace(/\?=\s+=\?/g, '?==?')
    .replace(/=\?([^?]+)\?([bBqQ])\?([^?]*)\?=/g, (_m, cs: string, enc: string, data: string) => {
      const bytes = enc.toUpperCase() === 'B'
        ? Buffer.from(data, 'base64')
        : decodeQuotedPrintable(data.replace(/_/g, ' '));
      return decodeCharset(bytes, cs.replace(/\*.*$/, ''));
    });
}

/** How far into a body the delimiter of a lost-Content-Type report is looked for, and how far before the delivery-status part. */
const SNIFF_BYTES = 256 * 1024;
const SNIFF_SPAN = 65536;

/**
 * The boundary of a multipart/report whose top-level Content-Type was lost: the first delimiter line
 * `--x` at most SNIFF_SPAN characters before the first `Content-Type: message/delivery-status` line.
 * The header is found first and the delimiters only looked for in the span before it, so the work is
 * linear: one regex that tried a 64 KiB span after every `--x` line took ~20 s on a 256 KiB body of them.
 */
function reportBoundary(body: string): string | undefined {
  const head = body.slice(0, SNIFF_BYTES);
  const report = /^content-type:\s*message\/delivery-status/im.exec(head);
  if (!report) return undefined;
  const delim = /^--([^\s-][^\r\n]{0,69})\r?\n/gm;
  delim.lastIndex = Math.max(0, report.index - SNIFF_SPAN - 72);
  for (let m = delim.exec(head); m && m.index < report.index; m = delim.exec(head)) {
    if (m.index + m[0].length + SNIFF_SPAN >= report.index) return (m[1] as string).trimEnd();
  }
  return undefined;
}

interface Budget { parts: number }

function parsePart(latin1: string, depth: number, budget: Budget, defaultType = 'text/plain'): MimePart {
  budget.parts++;
  const [head, body] = splitHead(latin1);
  const headers = parseHeaders(head);
  const ctRaw = header(headers, 'content-type');
  let { type, params } = ctRaw ? parseContentType(ctRaw) : { type: defaultType, params: {} };
  if (!ctRaw && depth === 0) {
    // Some MTAs (old Sendmail setups) lose the top-level Content-Type but keep the MIME body:
    // recognise it by a delimiter line followed later by a delivery-status part.
    const boundary = reportBoundary(body);
    if (boundary) ({ type, params } = { type: 'multipart/report', params: { boundary } });
  }
  const encoding = header(headers, 'content-transfer-encoding');
  const children: MimePart[] = [];
  let text = '';

  if (type.startsWith('multipart/') && params['boundary'] && depth < MAX_DEPTH) {
    const delim = '--' + params['boundary'];
    const pieces = body.split(delim);
    text = decodeBody(pieces[0] ?? '', '', params['charset'] ?? '');
    for (let i = 1; i < pieces.length && budget.parts < MAX_PARTS; i++) {
      const piece = pieces[i] ?? '';
      if (piece.startsWith('--')) break; // closing delimiter
      const content = piece.replace(/^[ \t]*\r?\n/, '');
      const childDefault = type === 'multipart/digest' ? 'message/rfc822' : 'text/plain';
      children.push(parsePart(content, depth + 1, budget, childDefault));
    }
  } else if ((type === 'message/rfc822' || type === 'message/global') && depth < MAX_DEPTH) {
    const inner = /base64|quoted-printable/i.test(encoding)
      ? Buffer.from(decodeBody(body, encoding, 'latin1'), 'latin1').toString('latin1')
      : body;
    text = decodeBody(inner, '', params['charset'] ?? 'utf-8');
    children.push(parsePart(inner, depth + 1, budget));
  } else {
    text = decodeBody(body, encoding, params['charset'] ?? 'utf-8');
  }
  return { headers, type, params, text, children, depth };
}

/** Parses a whole message. Never throws; unusable input gives a part with no fields. */
export function parseMessage(raw: Buffer): MimePart {
  const bytes = raw.length > MAX_INPUT_BYTES ? raw.subarray(0, MAX_INPUT_BYTES) : raw;
  // latin1 keeps one char per byte so base64/QP bodies survive until they are decoded per charset.
  return parsePart(bytes.toString('latin1'), 0, { parts: 0 });
}

/** Depth-first list of the part and all its descendants. */
export function walk(part: MimePart): MimePart[] {
  const out: MimePart[] = [];
  const stack: MimePart[] = [part];
  while (stack.length > 0) {
    const p = stack.pop() as MimePart;
    out.push(p);
    for (let i = p.children.length - 1; i >= 0; i--) stack.push(p.children[i] as MimePart);
  }
  return out;
}
