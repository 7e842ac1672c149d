import { z } from 'zod';
import addressparser from 'nodemailer/lib/addressparser/index.js';
import type { FieldError } from '../core/errors.js';
import { parseAddress } from '../core/address.js';
import { RESERVED_HEADERS } from '../render/headers.js';
import type { MessageSpec, SpecAddress } from '../store/message-spec.js';

/**
 * The JSON body of POST /v1/messages, validated once with zod; every invalid field is reported with
 * its dotted path. Objects are strict (an unknown field is an error, not silently dropped: a typo
 * such as "bc" for "bcc" must not send mail to fewer people than intended).
 */

// RFC 5322 §2.1.1: a line is at most 998 characters; a header must fit on one before folding.
const MAX_LINE = 998;
const NO_CRLF = /^[^\r\n\0]*$/;
const HEADER_NAME = /^[\x21-\x39\x3b-\x7e]{1,76}$/;


/** One address: "Name <a@b>" or { name?, address }; validated and normalised. */
export const address = z.unknown().transform((v, ctx): SpecAddress => {
  let name: string | undefined;
  let addr: string | undefined;
  if (typeof v === 'string') {
    if (v.length > 600 || !NO_CRLF.test(v)) {
      ctx.addIssue({ code: 'custom', message: 'not a valid address' });
      return z.NEVER;
    }
    const list = addressparser(v, { flatten: true });
    if (list.length !== 1) {
      ctx.addIssue({ code: 'custom', message: 'must be one address, e.g. "Name <user@example.com>"' });
      return z.NEVER;
    }
    name = list[0]?.name || undefined;
    addr = list[0]?.address;
  } else if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    const extra = Object.keys(o).filter((k) => k !== 'name' && k !== 'address');
    if (extra.length > 0 || typeof o['address'] !== 'string' || (o['name'] !== undefined && typeof o['name'] !== 'string')) {
      ctx.addIssue({ code: 'custom', message: 'must be a string or { name?: string, address: string }' });
      return z.NEVER;
    }
    name = (o['name'] as string | undefined) || undefined;
    addr = o['address'];
  } else {
    ctx.addIssue({ code: 'custom', message: 'must be a string or { name?: string, address: string }' });
    return z.NEVER;
  }
  if (name !== undefined && (name.length > 256 || !NO_CRLF.test(name))) {
    ctx.addIssue({ code: 'custom', message: 'the display name is too long or contains a line break' });
    return z.NEVER;
  }
  const parsed = addr === undefined ? undefined : parseAddress(addr);
  if (!parsed) {
    // The text as sent: the parser takes a bare word ("nope") for a display name, leaving the address ''.
    ctx.addIssue({ code: 'custom', message: `not a valid address: ${JSON.stringify((typeof v === 'string' ? v : (addr ?? '')).slice(0, 100))}` });
    return z.NEVER;
  }
  return name === undefined ? { address: parsed.address } : { name, address: parsed.address };
});

/** A single address or a list; the list form reports errors as `to.2`. */
const addressList = z.preprocess((v) => (Array.isArray(v) ? v : v === undefined ? v : [v]), z.array(address));

/** Any character base64 (RFC 4648 §4) has but its padding. */
const NOT_BASE64 = /[^A-Za-z0-9+/]/;

/**
 * Standard base64 without line breaks: groups of 4, '=' only as the last one or two. Checked with a
 * search for a stray character, not one pattern over the whole string: ^(?:[A-Za-z0-9+/]{4})*…$
 * keeps a backtrack entry per group, and V8 runs out of backtrack stack at a few MB (a RangeError:
 * an attachment of 3 MB, far within ingress.http.maxBodySize, was answered 500).
 */
function isBase64(s: string): boolean {
  if (s.length % 4 !== 0) return false;
  const end = s.endsWith('==') ? s.length - 2 : s.endsWith('=') ? s.length - 1 : s.length;
  return !NOT_BASE64.test(end === s.length ? s : s.slice(0, end));
}

const attachment = z
  .object({
    filename: z.string().min(1).max(255).regex(NO_CRLF, 'must not contain line breaks'),
    contentType: z
      .string()
      .max(127)
      .regex(/^[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+$/, 'must be a MIME type such as application/pdf')
      // A message/* part is written as it is (RFC 2046 §5.2.1: no base64), bare CRs, NULs and long
      // lines included, which SMTP submission refuses (SMTP smuggling); a multipart/* one lost its content.
      .refine((t) => !/^(?:message|multipart)\//i.test(t), 'message/* and multipart/* cannot be attached: attach a whole message as application/octet-stream (e.g. a .eml file)')
      .optional(),
    content: z.string().refine(isBase64, 'must be base64 without line breaks'),
    // Visible ASCII but <, > and ": a Content-ID is a msg-id (RFC 2392), never encoded.
    cid: z.string().regex(/^[\x21\x23-\x3b\x3d\x3f-\x7e]{1,250}$/, 'must be a Content-ID of visible ASCII without <>, quotes or spaces').optional(),
  })
  .strict();

export function messageSchema(limits: { maxAttachments?: number; maxTags?: number; maxMetadata?: number } = {}) {
  const maxMetadata = limits.maxMetadata ?? 20;
  return z
    .object({
      from: address,
      to: addressList,
      cc: addressList.optional(),
      bcc: addressList.optional(),
      replyTo: addressList.optional(),
      subject: z.string().max(MAX_LINE).regex(NO_CRLF, 'must not contain line breaks'),
      text: z.string().optional(),
      html: z.string().optional(),
      headers: z
        .record(z.string(), z.string())
        .optional()
        .superRefine((h, ctx) => {
          if (!h) return;
          const names = Object.keys(h);
          // 50: room for every List-*, X-* and Feedback-ID a sender uses, while bounding the work.
          if (names.length > 50) ctx.addIssue({ code: 'custom', message: 'at most 50 headers' });
          for (const name of names) {
            const value = h[name] as string;
            if (!HEADER_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: 'not a valid header name' });
            else if (RESERVED_HEADERS.has(name.toLowerCase())) ctx.addIssue({ code: 'custom', path: [name], message: `${name} is set by Sluice (use the fields from/to/cc/replyTo/subject)` });
            if (!NO_CRLF.test(value)) ctx.addIssue({ code: 'custom', path: [name], message: 'must not contain line breaks' });
            else if (name.length + 2 + value.length > MAX_LINE) ctx.addIssue({ code: 'custom', path: [name], message: 'too long for one header line' });
          }
        }),
      // 100 attachments: far above real mail, a bound on the per-message work of the renderer.
      attachments: z.array(attachment).max(limits.maxAttachments ?? 100).optional(),
      // Tags and metadata come back in events and webhooks, so they are bounded and flat.
      tags: z.array(z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'letters, digits, _ . : - only, at most 64')).max(limits.maxTags ?? 10).optional(),
      metadata: z
        .record(z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'keys are letters, digits, _ . - only, at most 64'), z.union([z.string().max(512), z.number().finite(), z.boolean()]))
        .refine((m) => Object.keys(m).length <= maxMetadata, `at most ${maxMetadata} keys`)
        .optional(),
    })
    .strict();
}

export type MessageSchema = ReturnType<typeof messageSchema>;
export type MessageInput = z.output<MessageSchema>;

const NO_CONTENT: FieldError = { path: 'text', message: 'text or html is required' };

/**
 * Validates one message. The "text or html" rule is checked on the raw input, beside the schema,
 * so that it is reported together with every other invalid field (an object-level refinement would
 * only run once all fields are valid).
 */
export function validateMessage(schema: MessageSchema, input: unknown): { ok: true; message: MessageInput } | { ok: false; errors: FieldError[] } {
  const parsed = schema.safeParse(input);
  const o = typeof input === 'object' && input !== null && !Array.isArray(input) ? (input as Record<string, unknown>) : undefined;
  const noContent = o !== undefined && o['text'] === undefined && o['html'] === undefined;
  if (parsed.success && !noContent) return { ok: true, message: parsed.data };
  const errors = parsed.success ? [] : fieldErrors(parsed.error);
  if (noContent) errors.push(NO_CONTENT);
  return { ok: false, errors };
}

/** zod issues as field errors: one per invalid field, unknown fields named one by one. */
export function fieldErrors(error: z.ZodError, prefix: readonly (string | number)[] = []): FieldError[] {
  const out: FieldError[] = [];
  for (const issue of error.issues) {
    const path = [...prefix, ...issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p))];
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) out.push({ path: [...path, k].join('.'), message: 'unknown field' });
    } else {
      out.push({ path: path.join('.') || '(root)', message: issue.message });
    }
  }
  return out;
}

export interface SpecSubmission {
  readonly from: string;
  readonly recipients: string[];
  readonly recipientPaths: string[];
  readonly spec: (id: string) => MessageSpec;
}

/** The stored spec and the envelope of a validated message. Bcc recipients are not in the spec. */
export function toSpecSubmission(m: MessageInput, hostname: string, pathPrefix = ''): SpecSubmission {
  const recipients: string[] = [];
  const recipientPaths: string[] = [];
  for (const field of ['to', 'cc', 'bcc'] as const) {
    (m[field] ?? []).forEach((a, i) => {
      recipients.push(a.address);
      recipientPaths.push(`${pathPrefix}${field}.${i}`);
    });
  }
  return {
    from: m.from.address,
    recipients,
    recipientPaths,
    spec: (id) => {
      const spec: MessageSpec = {
        from: m.from,
        to: m.to,
        cc: m.cc ?? [],
        subject: m.subject,
        headers: m.headers ?? {},
        attachments: (m.attachments ?? []).map((a) => ({
          filename: a.filename,
          ...(a.contentType !== undefined ? { contentType: a.contentType } : {}),
          contentBase64: a.content,
          ...(a.cid !== undefined ? { cid: a.cid } : {}),
        })),
        messageId: `<${id}@${hostname}>`,
      };
      if (m.replyTo) spec.replyTo = m.replyTo;
      if (m.text !== undefined) spec.text = m.text;
      if (m.html !== undefined) spec.html = m.html;
      return spec;
    },
  };
}
