/**
 * The messages that cross the thread boundaries between `pool.ts` (main thread) and `worker.ts`, and
 * between `prepare-pool.ts` and `prepare-worker.ts`.
 * Types only: both sides import this file with `import type`, so neither pulls the other's code in.
 * Everything here must survive the structured clone of `postMessage` — plain data, no classes.
 */
import type { ErrorCode, FieldError } from '../core/errors.js';

export type DkimAlgorithm = 'rsa' | 'ed25519';

export interface DkimKeyMaterial {
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  privateKeyPem: string;
}

/** Passed as piscina `workerData`; each worker parses the keys once at start-up. */
export interface WorkerInit {
  keys: DkimKeyMaterial[];
  /** Right-hand side of a Message-ID added to a submitted message that has none. */
  hostname: string;
  /** Present when tracking tokens are configured: API messages then get click URLs, pixel, List-Unsubscribe. */
  tracking?: WorkerTracking;
  /**
   * Nice values below the process that the thread runs at (delivery.pool.nice; Linux, see
   * core/thread-priority.ts). Absent or 0: the process's own priority.
   */
  nice?: number;
}

/** What a worker needs to sign tracking tokens; no config or Redis crosses into the worker. */
export interface WorkerTracking {
  /** Base of every tracking URL, e.g. https://t.example.com (tracking.publicBaseUrl). */
  publicBaseUrl: string;
  /** Token keys: bytes, or a string of base64. Only the signing key is needed here. */
  keys: { id: string; secret: Uint8Array | string }[];
  signWith: string;
  /** Domain of the mailto unsubscribe address (core/verp.ts unsubscribeMailtoAddress). */
  bounceDomain: string;
  /**
   * Key of the mailto unsubscribe address's tag (the VERP key, secret:verp). Without it (tests of the
   * parts) the address is the older `unsubscribe-<token>@<bounceDomain>`, which the inbound MX still takes.
   */
  unsubscribeKey?: Uint8Array;
}

export type TrackingMode = 'full' | 'anonymous' | 'off';

/** The recipient a task renders for, when its account may be tracked. */
export interface TrackingTarget {
  account: string;
  /** Recipient index in the message. */
  idx: number;
  /** The account's mode now: 'off' renders the untracked shared copy. */
  mode: TrackingMode;
  /**
   * The recipient's address, sealed into the copy's unsubscribe token (core/tokens.ts), so its
   * link still works after the message's record is purged.
   */
  address?: string;
}

export interface MailboxSpec {
  name?: string;
  address: string;
}

/** An HTTP API message, as stored at acceptance. */
export interface MessageSpec {
  from: MailboxSpec;
  to: MailboxSpec[];
  cc: MailboxSpec[];
  // bcc is never in the headers, so it is not part of what is rendered.
  replyTo?: MailboxSpec[];
  subject: string;
  text?: string;
  html?: string;
  /** Extra headers, already validated by ingress. */
  headers: Record<string, string>;
  attachments: { filename: string; contentType?: string; contentBase64: string; cid?: string }[];
  /** '<id@host>', fixed at acceptance and stable across retries. */
  messageId: string;
  /**
   * Set at acceptance when the account's mail is tracked: the html's trackable links (render/links.ts)
   * are stored as the message's link table, `links` of them.
   */
  tracking?: { links: number };
}

/**
 * A campaign body as prepared once per campaign by `prepareCampaign` (render/campaign.ts; on the
 * ingress side in a thread of its own, prepare-pool.ts) and stored by the campaign's owner; every recipient's copy is rendered from it in a worker. Plain JSON.
 * The templates are Handlebars sources; the html already holds the tracking marks (links, pixel)
 * and the unsubscribe footer, so a worker only compiles it and fills it in.
 */
export interface CampaignTemplate {
  /** Layout of this record; a worker refuses one it does not know. */
  v: 1;
  from: MailboxSpec;
  replyTo: MailboxSpec[];
  /** Handlebars source; rendered unescaped, then folded to one line. */
  subject: string;
  /** Handlebars source (escaping on), with tracking marks; null for a text-only campaign. */
  html: string | null;
  /**
   * Handlebars source (escaping off); derived from the html at preparation when the campaign gave
   * none. null only when that derivation failed: each copy's text is then converted from its html.
   */
  text: string | null;
  /** Extra headers, validated (no reserved names, no line breaks). */
  headers: Record<string, string>;
  /** The link table: click token `link` i redirects to links[i]. */
  links: string[];
}

/**
 * The answer of the campaign preparation worker (prepare-worker.ts) to prepare-pool.ts. A refusal
 * travels as data: a SluiceError thrown across the thread boundary would arrive as a plain Error,
 * without its code and field errors.
 */
export type PrepareResult =
  | { ok: true; template: CampaignTemplate; links: string[] }
  | { ok: false; code: ErrorCode; message: string; errors: FieldError[] };

/** One recipient of a campaign. */
export interface CampaignRecipient {
  /** Contact number in the campaign: the tokens' `idx`, and part of the copy's Message-ID. */
  no: number;
  address: string;
  /** Display name for the To header. */
  name?: string;
  /** The contact's merge fields; `email` and `unsubscribe_url` are set by Sluice and win. */
  fields: Record<string, string>;
}

/** What a 'campaign' task renders for; msgId is the campaign id. */
export interface CampaignTarget {
  recipient: CampaignRecipient;
  /** The campaign's account: in the tokens and the Feedback-ID header. */
  account: string;
  /** The account's tracking mode now: 'off' drops pixel and click URLs (List-Unsubscribe stays). */
  mode: TrackingMode;
}

export interface RenderTask {
  msgId: string;
  kind: 'raw' | 'spec' | 'campaign';
  /**
   * raw: the submitted MIME bytes (a string is taken as UTF-8); spec: a stored spec record
   * (render/spec-record.ts: a JSON header and the raw html, or the whole spec as JSON);
   * campaign: JSON text of a CampaignTemplate (compiled once per worker and campaign id).
   */
  source: Uint8Array | string;
  /** The From header's domain; keys are looked up for it. null or no key → sent unsigned. */
  signingDomain: string | null;
  /** ms since epoch; used for a Date header when the message has none. */
  acceptedAt: number;
  /**
   * Return the SMTP DATA block (CRLF lines, dot-stuffed, '.' terminated) rather than the message,
   * so that the byte pass framing needs runs in the worker, not on the delivery thread.
   */
  frame?: boolean;
  /** With `frame`: the BDAT chunk (render/data-block.ts toChunk) instead, for a server that offers CHUNKING. */
  chunked?: boolean;
  /**
   * The message has this one recipient: its copy will not be asked for again (a retry comes much
   * later), so the worker keeps nothing of it. A per-message cache entry that is never hit only
   * lives long enough to be promoted to the old generation, where freeing it costs a full GC.
   */
  single?: boolean;
  /**
   * Spec messages: the recipient and account mode. A spec accepted with `tracking` then gets a copy of
   * its own (tokens differ per recipient); without it, every recipient shares one rendered copy.
   */
  tracking?: TrackingTarget;
  /** Campaign tasks only (and required for them): whose copy this is. */
  campaign?: CampaignTarget;
}

export type RenderResult =
  | {
      ok: true;
      /** The signed message, or its DATA block when the task asked for `frame`. */
      message: Uint8Array;
      /** `message` is a DATA block, or with `chunked` a BDAT chunk. */
      framed: boolean;
      /** `message` is a BDAT chunk (the task asked for `chunked`). */
      chunked?: boolean;
      /** `message`'s memory belongs to this result alone: the worker transfers it rather than copying it. */
      owned?: boolean;
      /** Some byte is above 0x7F (BODY=8BITMIME); known when framed, else null. */
      eightBit: boolean | null;
      /** A DATA block's message size (RFC 1870 §3: without the doubled dots and the terminator); see DataBlock.size. */
      size?: number;
      /** One entry per DKIM-Signature prepended, in header order. */
      signatures: DkimAlgorithm[];
      /** Time spent hashing and signing for this task, per signature (as `signatures`); none when the worker served it from its cache. */
      signMs: number[];
      /** Time spent composing or normalising the message (signing excluded). */
      renderMs: number;
    }
  | { ok: false; code: 'SLUICE_RENDER_FAILED' | 'SLUICE_DKIM_KEY_INVALID' | 'SLUICE_RENDER_WORKER_FAILED'; message: string };
