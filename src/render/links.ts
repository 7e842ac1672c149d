/**
 * The trackable links of an HTML body: the http(s) `href` values of its `<a>` and `<area>` tags, in
 * document order. Pure, and the one definition of "link i" shared by ingress (which stores the link
 * table the tracking server redirects from) and the render worker (which rewrites href number i to
 * the click URL of link i): both run this same function over the same stored html, so the indices
 * agree.
 *
 * A small scanner rather than an HTML parser: mail HTML is written for clients, not browsers, and all
 * that matters here is where each href value starts and ends, so it can be cut out and replaced
 * without touching a byte of the rest. Quoted attribute values are skipped as a whole, so a `>` or an
 * `href=` inside another attribute's value (title="see href='x'") is never taken for markup.
 */

import { decodeHTMLAttribute } from 'entities';

export interface LinkSite {
  /** Offset of the first character of the href value (after the opening quote). */
  readonly start: number;
  /** Offset just past the value's last character (the closing quote's offset). */
  readonly end: number;
  /** The URL with character references decoded: what the redirect must lead to. */
  readonly url: string;
}

/**
 * `<a` or `<area` (any case), then its attributes up to the `>` that closes the tag. No `<` inside a
 * tag, quoted or not: every attempt then stops at the next `<`, so a hostile body of a million
 * unclosed `<a` costs one pass, not a million (a link whose attributes hold a `<` is left untracked).
 */
const TAG_RE = /<(?:a|area)(?=[\s/>])((?:[^<>"']|"[^<"]*"|'[^<']*')*)>/gi;
/** One attribute: name, then optionally = and a double-quoted, single-quoted or bare value. */
const ATTR_RE = /[\s/]*([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/y;
const TRACKABLE_RE = /^https?:\/\/[^\s]/i;
/**
 * Links tracked per message. Far above any real mail (a long newsletter has a few hundred); it bounds
 * the link table a single submission can write to Redis.
 */
export const MAX_TRACKED_LINKS = 1000;

/**
 * Every trackable href of `html`, in order: quoted http(s) values only. mailto:, tel:, #anchors,
 * javascript:, relative and empty links, and unquoted values stay as they are (a bare value would need
 * quoting added to be rewritten, and mail editors always quote). Only the first href of a tag counts,
 * as in browsers. At most MAX_TRACKED_LINKS are returned; later links are left untracked.
 */
export function findLinks(html: string): LinkSite[] {
  const sites: LinkSite[] = [];
  TAG_RE.lastIndex = 0;
  for (let tag = TAG_RE.exec(html); tag !== null && sites.length < MAX_TRACKED_LINKS; tag = TAG_RE.exec(html)) {
    const attrs = tag[1] as string;
    // Offset of the attribute text inside html: the match minus '>' minus the attributes.
    const attrsAt = tag.index + tag[0].length - 1 - attrs.length;
    const site = hrefOf(attrs, attrsAt);
    if (site) sites.push(site);
  }
  return sites;
}

/** The URLs of findLinks, in order: the message's link table. */
export function extractLinks(html: string): string[] {
  return findLinks(html).map((s) => s.url);
}

function hrefOf(attrs: string, offset: number): LinkSite | null {
  ATTR_RE.lastIndex = 0;
  while (ATTR_RE.lastIndex < attrs.length) {
    const at = ATTR_RE.lastIndex;
    const m = ATTR_RE.exec(attrs);
    if (m === null || ATTR_RE.lastIndex === at) return null;
    if ((m[1] as string).toLowerCase() !== 'href') continue;
    const quoted = m[2] ?? m[3];
    if (quoted === undefined) return null; // bare or missing value: left as it is
    // HTML's own attribute-value decoding (entities is generated from the spec's table): the full
    // named table, case-sensitive names, `&lt=5` and `&copy=x` left literal, bad code points U+FFFD.
    const url = stripUrlSpaces(decodeHTMLAttribute(quoted));
    if (!TRACKABLE_RE.test(url)) return null;
    // The value ends just before the closing quote, which is the match's last character.
    const end = offset + ATTR_RE.lastIndex - 1;
    return { start: end - quoted.length, end, url };
  }
  return null;
}

/**
 * A URL parser strips leading and trailing C0 controls and spaces (WHATWG URL), and nothing else:
 * String.trim would also take a no-break space (`&nbsp;`) a browser keeps and percent-encodes.
 */
function stripUrlSpaces(url: string): string {
  let a = 0;
  let b = url.length;
  while (a < b && url.charCodeAt(a) <= 0x20) a++;
  while (b > a && url.charCodeAt(b - 1) <= 0x20) b--;
  return a === 0 && b === url.length ? url : url.slice(a, b);
}
