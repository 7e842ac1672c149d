/**
 * Tracking in a recipient's copy: click URLs in place of the html's links, an open pixel, and the
 * RFC 8058 one-click List-Unsubscribe headers. Pure (no Redis, no config): the worker builds a
 * Tracker once from its WorkerInit and a Template once per message; per recipient only tokens are
 * signed and the pieces joined.
 *
 *   html:      …<a href="https://a.example/x">…<a href="https://b.example/">…</body></html>
 *   pieces:    [ '…<a href="' , '">…<a href="' , '">…'            , '</body></html>' ]
 *   slots:                  link 0         link 1            pixel
 *
 * Copy = pieces[0] + slot 0 + pieces[1] + … + pieces[n]: one string join per recipient, no rescan.
 */
import { createTokenCodec, tokenBase, tokenPath, type TokenCodec } from '../core/tokens.js';
import { unsubscribeMailtoAddress } from '../core/verp.js';
import { scanHtml } from './links.js';
import type { WorkerTracking } from './protocol.js';

type Slot = { readonly link: number } | 'pixel';

export interface Template {
  /** Literal html between the slots; one more piece than slots. */
  readonly pieces: readonly string[];
  readonly slots: readonly Slot[];
  /** Characters held (for the worker cache's byte bound). */
  readonly size: number;
}

/**
 * Splits `html` around its trackable links and the pixel's place (before the last `</body` end tag
 * that every client sees, or at the end: a `</body>` in a comment, in a script, style, textarea or
 * title, or in an attribute value is not one, see scanHtml). `links` is the count ingress stored in
 * the link table; if this html yields a different count (a message accepted by a version that found
 * links differently), the links are left as they are rather than pointed at the wrong table
 * entries — the pixel is still placed.
 */
export function prepareTemplate(html: string, links: number): Template {
  const { links: found, bodyEnds } = scanHtml(html);
  const sites = found.length === links ? found : [];
  let pixelAt = bodyEnds.at(-1) ?? html.length;
  // `</body>` inside an href value is not the end of the body (the scan skips attribute values
  // already; this keeps the cuts apart should it ever not).
  if (sites.some((s) => pixelAt >= s.start && pixelAt < s.end)) pixelAt = html.length;

  const cuts: { start: number; end: number; slot: Slot }[] = sites.map((s, i) => ({ start: s.start, end: s.end, slot: { link: i } }));
  const firstAfter = cuts.findIndex((c) => c.start >= pixelAt);
  cuts.splice(firstAfter === -1 ? cuts.length : firstAfter, 0, { start: pixelAt, end: pixelAt, slot: 'pixel' });

  const pieces: string[] = [];
  let pos = 0;
  for (const c of cuts) {
    pieces.push(html.slice(pos, c.start));
    pos = c.end;
  }
  pieces.push(html.slice(pos));
  return { pieces, slots: cuts.map((c) => c.slot), size: html.length };
}

/** What a token is signed for: the recipient's copy of one message. */
export interface CopyOf {
  readonly account: string;
  readonly msgId: string;
  readonly idx: number;
  /** Seconds since epoch, when the copy is rendered. */
  readonly issuedAt: number;
  /** The recipient's address, sealed into the unsubscribe token (see TrackingTarget.address). */
  readonly address?: string;
}

export interface TrackedCopy {
  /** The html with click URLs and the pixel, or undefined when the message has no html. */
  readonly html: string | undefined;
  /** List-Unsubscribe and List-Unsubscribe-Post (RFC 2369, RFC 8058). */
  readonly headers: Readonly<Record<string, string>>;
}

/**
 * The tracking URLs of one recipient's copy. Tokens are signed when asked for: a copy signs only
 * the clicks of the links it really contains.
 */
export interface RecipientUrls {
  /** The https one-click unsubscribe URL (`…/u/<token>`), also the first List-Unsubscribe entry. */
  readonly unsubscribeUrl: string;
  /** List-Unsubscribe and List-Unsubscribe-Post (RFC 2369, RFC 8058). */
  readonly headers: Readonly<Record<string, string>>;
  /** The open pixel's `<img>` element (its URL `…/o/<token>.gif`). */
  pixelTag(): string;
  /** The click URL of link `link` of the message's link table (`…/c/<token>`), escaped for a double-quoted attribute. */
  clickAttribute(link: number): string;
}

export interface Tracker {
  copy(template: Template | null, of: CopyOf): TrackedCopy;
  urls(of: CopyOf): RecipientUrls;
}

/** Local part prefix of the older mailto unsubscribe address (a token), as feedback/recipients.ts parses it. */
export const UNSUBSCRIBE_MAILTO_PREFIX = 'unsubscribe-';

/** Names of the headers a tracked copy sets; a sender's own are replaced (see renderer.ts). */
export const LIST_UNSUBSCRIBE_HEADERS = ['list-unsubscribe', 'list-unsubscribe-post'] as const;

export function createTracker(init: WorkerTracking): Tracker {
  const codec: TokenCodec = createTokenCodec({
    keys: init.keys.map((k) => ({ id: k.id, secret: toSecret(k.secret) })),
    signWith: init.signWith,
  });
  // Joined and escaped once, not per token (a long newsletter has over a hundred links): tokens and
  // their paths are URL-safe, so escaping the base escapes the whole URL.
  const base = tokenBase(init.publicBaseUrl);
  const attributeBase = escapeAttribute(base);

  const mailtoKey = init.unsubscribeKey ? Buffer.from(init.unsubscribeKey) : null;
  // The older form's local part is a token without the address: with it, it would pass 64 octets.
  const mailto = (of: CopyOf, sign: (kind: 'u') => string): string =>
    mailtoKey ? unsubscribeMailtoAddress(of.msgId, of.idx, init.bounceDomain, mailtoKey) : `${UNSUBSCRIBE_MAILTO_PREFIX}${of.address === undefined ? sign('u') : codec.signer({ account: of.account, msgId: of.msgId, idx: of.idx, issuedAt: of.issuedAt })('u')}@${init.bounceDomain}`;

  function urls(of: CopyOf): RecipientUrls {
    const sign = codec.signer({ account: of.account, msgId: of.msgId, idx: of.idx, issuedAt: of.issuedAt, ...(of.address !== undefined ? { address: of.address } : {}) });
    const unsubscribe = sign('u');
    const unsubscribeUrl = base + tokenPath('u', unsubscribe);
    return {
      unsubscribeUrl,
      headers: {
        // The https form first: RFC 8058 one-click needs it; the mailto form serves older clients.
        'List-Unsubscribe': `<${unsubscribeUrl}>, <mailto:${mailto(of, sign)}>`,
        'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
      },
      pixelTag: () => pixelTag(base + tokenPath('o', sign('o'))),
      clickAttribute: (link) => attributeBase + tokenPath('c', sign('c', link)),
    };
  }

  return {
    urls,
    copy(template, of) {
      const u = urls(of);
      if (template === null) return { html: undefined, headers: u.headers };
      let html = template.pieces[0] as string;
      template.slots.forEach((slot, i) => {
        html += slot === 'pixel' ? u.pixelTag() : u.clickAttribute(slot.link);
        html += template.pieces[i + 1] as string;
      });
      return { html, headers: u.headers };
    },
  };
}

/** The open pixel: a hidden 1×1 image, placed before `</body>`. */
export function pixelTag(url: string): string {
  return `<img src="${escapeAttribute(url)}" width="1" height="1" alt="" style="display:none">`;
}

/** A key from WorkerInit: bytes (a Buffer arrives as a Uint8Array after postMessage) or base64. */
function toSecret(secret: Uint8Array | string): Buffer {
  return typeof secret === 'string' ? Buffer.from(secret, 'base64') : Buffer.from(secret.buffer, secret.byteOffset, secret.byteLength);
}

/** Escapes a URL for a double-quoted attribute (tokens are URL-safe; the base URL is configuration). */
export function escapeAttribute(url: string): string {
  return url.replace(/[&"'<>]/g, (c) => `&#${c.charCodeAt(0)};`);
}
