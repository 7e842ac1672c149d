/**
 * Builds the MIME message of an HTTP API submission with nodemailer's MailComposer. Pure: no file
 * or URL access (MailComposer can fetch `path`/`href` contents; an API message must not read the
 * server's disk), no network.
 */
import MailComposer from 'nodemailer/lib/mail-composer/index.js';
import { SluiceError } from '../core/errors.js';
import type { MailboxSpec, MessageSpec } from './protocol.js';
import { encodeText, type EncodedText } from './text-part.js';
import type { AttachmentLike } from 'nodemailer/lib/mailer/index.js';
import { isMailbox, isObject, renderFailed } from './record-shape.js';
import { decodeSpecRecord } from './spec-record.js';
import { pooledRandom } from '../core/random-pool.js';

/**
 * Parses and shape-checks a stored spec record (render/spec-record.ts). Ingress validated it
 * already; this guards the worker against a corrupt or foreign record, which becomes
 * SLUICE_RENDER_FAILED instead of a crash.
 */
export function parseSpec(record: Uint8Array | string): MessageSpec {
  let value: unknown;
  try {
    value = decodeSpecRecord(record);
  } catch {
    throw renderFailed('message spec is not valid JSON');
  }
  if (!isObject(value)) throw renderFailed('message spec is not an object');
  const v = value;
  if (!isMailbox(v['from'])) throw renderFailed('spec.from is not a mailbox');
  if (!isMailboxList(v['to'])) throw renderFailed('spec.to is not a list of mailboxes');
  if (!isMailboxList(v['cc'])) throw renderFailed('spec.cc is not a list of mailboxes');
  if (v['replyTo'] !== undefined && !isMailboxList(v['replyTo'])) throw renderFailed('spec.replyTo is not a list of mailboxes');
  if (typeof v['subject'] !== 'string') throw renderFailed('spec.subject is not a string');
  if (v['text'] !== undefined && typeof v['text'] !== 'string') throw renderFailed('spec.text is not a string');
  if (v['html'] !== undefined && typeof v['html'] !== 'string') throw renderFailed('spec.html is not a string');
  const headers = v['headers'];
  if (!isObject(headers) || !Object.values(headers).every((h) => typeof h === 'string')) {
    throw renderFailed('spec.headers is not a map of strings');
  }
  const attachments = v['attachments'];
  if (!Array.isArray(attachments) || !attachments.every(isAttachment)) throw renderFailed('spec.attachments is malformed');
  if (typeof v['messageId'] !== 'string' || !/^<[^<>\s]+@[^<>\s]+>$/.test(v['messageId'])) {
    throw renderFailed('spec.messageId is not <id@host>');
  }
  const tracking = v['tracking'];
  if (tracking !== undefined && !(isObject(tracking) && Number.isSafeInteger(tracking['links']) && (tracking['links'] as number) >= 0)) {
    throw renderFailed('spec.tracking is malformed');
  }
  return value as unknown as MessageSpec;
}

/**
 * The random part of the message's multipart boundaries (MailComposer's baseBoundary, 16 hex digits
 * as it makes them), from the pool: left to itself MailComposer calls randomBytes once per MIME node.
 * Boundaries need to be unguessable by whoever wrote the content, not secret.
 */
const boundaryBase = (): string => pooledRandom(8).toString('hex');

/** Control characters other than HTAB: obsolete in header text (RFC 5322 §4), and NUL refused by most servers. */
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/g;
/** A word longer than an encoded-word may be: MailComposer folds a header at whitespace only. */
const LONG_WORD = /\S{76,}/;
/** UTF-8 bytes per encoded-word: base64 of 45 bytes is 60 characters, "=?UTF-8?B?…?=" 72 in all (RFC 2047 §2: at most 75). */
const WORD_BYTES = 45;

/**
 * The subject as it can go in a header: control characters become U+FFFD (a campaign's merge value
 * or an API client may carry them), and a subject with a word too long to fold (a merge value of a
 * thousand characters and no space: RFC 5322 §2.1.1 allows 998 octets a line) is written as RFC 2047
 * encoded-words separated by spaces, where the header can be folded; a reader joins them back into
 * the same text.
 */
export function headerSubject(subject: string): string {
  const clean = subject.replace(CONTROL, '\uFFFD');
  if (!LONG_WORD.test(clean)) return clean;
  const words: string[] = [];
  let chunk = '';
  let bytes = 0;
  for (const ch of clean) {
    const n = Buffer.byteLength(ch, 'utf8');
    if (bytes + n > WORD_BYTES) {
      words.push(chunk);
      chunk = '';
      bytes = 0;
    }
    chunk += ch;
    bytes += n;
  }
  if (chunk !== '') words.push(chunk);
  return words.map((w) => `=?UTF-8?B?${Buffer.from(w, 'utf8').toString('base64')}?=`).join(' ');
}

/**
 * Composes the message; Message-ID comes from the spec, Date from the acceptance time. `viaStreams`
 * always takes MailComposer's build() (the tests compare it with the shortcut below).
 */
export async function composeSpec(spec: MessageSpec, acceptedAt: number, viaStreams = false): Promise<Buffer> {
  const text = spec.text !== undefined ? encodeText('plain', spec.text) : undefined;
  const html = spec.html !== undefined ? encodeText('html', spec.html) : undefined;
  // A message of one text part has that part as its root node, whose headers MailComposer writes:
  // it composes the message with an empty body and the encoded body is put in afterwards.
  const single = spec.attachments.length === 0 && (text === undefined) !== (html === undefined) ? (text ?? html) : undefined;
  const composer = new MailComposer({
    from: mailbox(spec.from),
    to: spec.to.map(mailbox),
    ...(spec.cc.length > 0 ? { cc: spec.cc.map(mailbox) } : {}),
    ...(spec.replyTo && spec.replyTo.length > 0 ? { replyTo: spec.replyTo.map(mailbox) } : {}),
    subject: headerSubject(spec.subject),
    ...(text ? { text: single ? '' : rawNode(text.part) } : {}),
    ...(html ? { html: single ? '' : rawNode(html.part) } : {}),
    headers: spec.headers,
    attachments: spec.attachments.map((a) => ({
      filename: a.filename,
      content: Buffer.from(a.contentBase64, 'base64'),
      ...(a.contentType !== undefined ? { contentType: a.contentType } : {}),
      ...(a.cid !== undefined ? { cid: a.cid } : {}),
    })),
    messageId: spec.messageId,
    date: new Date(acceptedAt),
    disableFileAccess: true,
    disableUrlAccess: true,
    // MailComposer reads it (lib/mail-composer: `baseBoundary: this.mail.baseBoundary`); the types omit it.
    ...({ baseBoundary: boundaryBase() } as object),
  });
  let built: Buffer;
  try {
    const root = composer.compile();
    built = (viaStreams ? null : withoutStreams(root)) ?? (await root.build());
  } catch (err) {
    throw new SluiceError('SLUICE_RENDER_FAILED', `cannot compose the message: ${(err as Error).message}`, { cause: err });
  }
  return single ? withBody(built, single) : built;
}

/** The parts of nodemailer's MimeNode that its build() reads (lib/mime-node/index.js). */
interface MimeTree {
  readonly multipart?: unknown;
  readonly boundary?: string;
  readonly childNodes?: readonly MimeTree[];
  readonly _raw?: unknown;
  readonly content?: unknown;
  readonly newline?: unknown;
  readonly _transforms?: readonly unknown[];
  readonly _processFuncs?: readonly unknown[];
  buildHeaders(): string;
}

/**
 * What root.build() makes, written directly, for the trees composeSpec builds without attachments:
 * multipart nodes over pre-encoded parts (`raw` Buffers), or one part with empty content. build()
 * streams them: a PassThrough, a LastNewline transform, and a setImmediate turn per node and part,
 * ~20-35 % of composing a 10 KB message. The bytes follow MimeNode.stream(): a node's headers and a
 * blank line, then each child after `--boundary` (CRLF-separated), then `--boundary--`; a raw part
 * as it is. null for anything else (attachments, a transform, a stream): the caller uses build().
 * test/render/compose.test.ts checks the bytes equal build()'s.
 */
export function withoutStreams(root: ReturnType<MailComposer['compile']>): Buffer | null {
  const tree = root as unknown as MimeTree;
  if (tree.newline || tree._transforms?.length !== 0 || tree._processFuncs?.length !== 0) return null;
  const out: Buffer[] = [];
  const write = (node: MimeTree): boolean => {
    if (node._raw) {
      if (!Buffer.isBuffer(node._raw)) return false;
      out.push(node._raw);
      return true;
    }
    out.push(Buffer.from(`${node.buildHeaders()}\r\n\r\n`));
    if (!node.multipart) return node.content === '' || node.content === undefined;
    const children = node.childNodes ?? [];
    for (let i = 0; i < children.length; i++) {
      out.push(Buffer.from(`${i > 0 ? '\r\n' : ''}--${node.boundary}\r\n`));
      if (!write(children[i] as MimeTree)) return false;
    }
    out.push(Buffer.from(`\r\n--${node.boundary}--\r\n`));
    return true;
  };
  if (!write(tree)) return null;
  const built = Buffer.concat(out);
  // LastNewline: the message ends with a line break.
  const last = built[built.length - 1];
  return last === 0x0a ? built : Buffer.concat([built, Buffer.from(last === 0x0d ? '\n' : '\r\n')]);
}

/** Puts an encoded body into a single-part message composed with an empty one. */
function withBody(message: Buffer, text: EncodedText): Buffer {
  const end = message.indexOf('\r\n\r\n');
  if (end === -1) throw renderFailed('composed message has no header/body separator');
  // The empty part's own Content-Type and Content-Transfer-Encoding (with any folded lines) give
  // way to the encoded part's.
  const header = message
    .subarray(0, end)
    .toString('latin1')
    .replace(/^Content-(?:Type|Transfer-Encoding):.*(?:\r\n[ \t].*)*(?:\r\n|$)/gim, '')
    .replace(/\r\n$/, '');
  return Buffer.concat([Buffer.from(`${header}\r\n${text.head}\r\n\r\n`, 'latin1'), text.body]);
}

/**
 * MailComposer takes a pre-built part (headers and encoded body) as `{ raw }` for text and html
 * (nodemailer lib/mail-composer `_createContentNode` → `setRaw`); @types/nodemailer does not list it.
 */
function rawNode(part: Buffer): AttachmentLike {
  return { raw: part } as unknown as AttachmentLike;
}

function mailbox(m: MailboxSpec): { name: string; address: string } {
  return { name: m.name ?? '', address: m.address };
}

function isMailboxList(v: unknown): boolean {
  return Array.isArray(v) && v.every(isMailbox);
}

function isAttachment(v: unknown): boolean {
  return (
    isObject(v) &&
    typeof v['filename'] === 'string' &&
    typeof v['contentBase64'] === 'string' &&
    (v['contentType'] === undefined || typeof v['contentType'] === 'string') &&
    (v['cid'] === undefined || typeof v['cid'] === 'string')
  );
}
