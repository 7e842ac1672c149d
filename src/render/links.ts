/**
 * The trackable links of an HTML body: the http(s) `href` values of its `<a>` and `<area>` tags, in
 * document order, and where the body ends (for the open pixel). Pure, and the one definition of
 * "link i" shared by ingress (which stores the link table the tracking server redirects from) and the
 * render worker (which rewrites href number i to the click URL of link i): both run this same
 * function over the same stored html, so the indices agree.
 *
 * A small forward scanner rather than an HTML parser: mail HTML is written for clients, not browsers,
 * and all that matters here is where each href value starts and ends, so it can be cut out and
 * replaced without touching a byte of the rest. It follows the HTML tokenizer where that decides what
 * is markup: a quoted attribute value runs to its closing quote (`>`, `<` or `href=` inside
 * title="…" are not markup); comments, `<!…>` and `<?…>` are skipped; so is the content of the
 * raw-text and RCDATA elements (script, style, textarea, title, …). The position only moves forward,
 * so any input costs one pass (a tag or comment left open runs to the end, as in a browser).
 *
 * One exception to "a comment is not markup": Outlook renders the inside of a conditional comment
 * (`<!--[if mso]> <a href="…">…</a> <![endif]-->`), so links there are clickable and tracked. A
 * `</body` there is not the body's end: only Outlook would see a pixel placed there.
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

export interface HtmlLandmarks {
  /** The trackable links, in order (at most MAX_TRACKED_LINKS). */
  readonly links: LinkSite[];
  /** Offsets of the `</body` end tags that every client sees (not in a comment or raw text), in order. */
  readonly bodyEnds: number[];
}

const TRACKABLE_RE = /^https?:\/\/[^\s]/i;
/**
 * Links tracked per message. Far above any real mail (a long newsletter has a few hundred); it bounds
 * the link table a single submission can write to Redis.
 */
export const MAX_TRACKED_LINKS = 1000;

/** A tag name (after `<` or `</` and an ASCII letter): up to whitespace, `/` or `>`. */
const TAG_NAME_RE = /[a-zA-Z][^\t\n\f\r />]*/y;
/** Where a comment ends: `-->` or `--!>` (HTML also ends `<!-->` and `<!--->` at once, see below). */
const COMMENT_END_RE = /--!?>/g;
/** `<!--[if mso]>`: the start of an Outlook conditional comment (up to its `]>`). */
const CONDITIONAL_RE = /<!--\[if[^\]>]*\]>/iy;
/**
 * Elements whose content is text, up to their own end tag: raw text (script, style, xmp, iframe,
 * noembed, noframes) and RCDATA (textarea, title). noscript is left out: mail clients run no scripts,
 * so its content is markup to them.
 */
const RAW_TEXT = /^(?:script|style|xmp|iframe|noembed|noframes|textarea|title)$/i;
const rawEnds = new Map<string, RegExp>();

/** Every trackable link of `html` and the offsets of its visible `</body` tags; see HtmlLandmarks. */
export function scanHtml(html: string): HtmlLandmarks {
  const out: HtmlLandmarks = { links: [], bodyEnds: [] };
  scan(html, 0, false, out);
  return out;
}

/**
 * Every trackable href of `html`, in order: quoted http(s) values only. mailto:, tel:, #anchors,
 * javascript:, relative and empty links, and unquoted values stay as they are (a bare value would need
 * quoting added to be rewritten, and mail editors always quote). Only the first href of a tag counts,
 * as in browsers. At most MAX_TRACKED_LINKS are returned; later links are left untracked.
 */
export function findLinks(html: string): LinkSite[] {
  return scanHtml(html).links;
}

/** The URLs of findLinks, in order: the message's link table. */
export function extractLinks(html: string): string[] {
  return findLinks(html).map((s) => s.url);
}

/**
 * Scans html from `from` to its end; `conditional` when html is cut at the end of a conditional
 * comment and `from` is just inside it. (A cut string rather than an end offset: every search stops
 * at the cut by itself, so a tag or quote left open inside the comment ends with it, as the comment
 * does in a browser. V8 slices without copying.)
 */
function scan(html: string, from: number, conditional: boolean, out: HtmlLandmarks): void {
  let i = from;
  while (i < html.length) {
    const lt = html.indexOf('<', i);
    if (lt === -1) return;
    const c = html.charCodeAt(lt + 1);
    if (c === 0x21 /* ! */) {
      if (html.startsWith('<!--', lt)) {
        const end = commentEnd(html, lt);
        CONDITIONAL_RE.lastIndex = lt;
        if (!conditional && CONDITIONAL_RE.test(html) && CONDITIONAL_RE.lastIndex <= end) scan(html.slice(0, end), CONDITIONAL_RE.lastIndex, true, out);
        i = end;
      } else i = afterGt(html, lt); // <!DOCTYPE …>, <![endif]-->, <![CDATA[…]]>: a bogus comment to the next '>'
    } else if (c === 0x3f /* ? */) {
      i = afterGt(html, lt);
    } else if (c === 0x2f /* / */) {
      TAG_NAME_RE.lastIndex = lt + 2;
      const name = TAG_NAME_RE.exec(html);
      if (name === null) {
        i = afterGt(html, lt); // '</>' or '</ x>': skipped
        continue;
      }
      if (!conditional && /^body$/i.test(name[0])) out.bodyEnds.push(lt);
      i = tagEnd(html, TAG_NAME_RE.lastIndex, null);
      if (i === -1) return;
    } else if ((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)) {
      TAG_NAME_RE.lastIndex = lt + 1;
      const name = (TAG_NAME_RE.exec(html) as RegExpExecArray)[0];
      const link = out.links.length < MAX_TRACKED_LINKS && /^(?:a|area)$/i.test(name) ? ({ site: null } as { site: LinkSite | null }) : null;
      i = tagEnd(html, TAG_NAME_RE.lastIndex, link);
      if (i === -1) return; // the tag never closes: what follows is inside it
      if (link?.site) out.links.push(link.site);
      if (RAW_TEXT.test(name)) i = rawTextEnd(html, name, i);
    } else i = lt + 1;
  }
}

/**
 * Offset just past the comment that starts at `lt` (`<!--`), or the end when it never closes. As the
 * tokenizer: `<!-->` and `<!--->` are whole comments; otherwise the first `-->` or `--!>`.
 */
function commentEnd(html: string, lt: number): number {
  if (html.startsWith('>', lt + 4)) return lt + 5;
  if (html.startsWith('->', lt + 4)) return lt + 6;
  COMMENT_END_RE.lastIndex = lt + 4;
  const m = COMMENT_END_RE.exec(html);
  return m === null ? html.length : m.index + m[0].length;
}

function afterGt(html: string, from: number): number {
  const gt = html.indexOf('>', from);
  return gt === -1 ? html.length : gt + 1;
}

/**
 * Offset just past the '>' closing the tag whose attributes start at `at`, or -1 when the tag never
 * closes (a browser drops such a tag). With `link`, the tag's first href, if trackable, is put in
 * `link.site`.
 */
function tagEnd(html: string, at: number, link: { site: LinkSite | null } | null): number {
  // Character codes rather than sticky regexes: a newsletter has thousands of attributes, and this
  // loop scans one in a fraction of the time a regex call takes.
  const n = html.length;
  let i = at;
  let seenHref = false;
  for (;;) {
    let c = html.charCodeAt(i); // NaN past the end: no test below matches it
    while (isSpace(c) || c === 0x2f /* / */) c = html.charCodeAt(++i);
    if (i >= n) return -1;
    if (c === 0x3e /* > */) return i + 1;
    // The name: its first character may be '=', then up to whitespace, '/', '>' or '='.
    const nameAt = i;
    do c = html.charCodeAt(++i);
    while (i < n && !isSpace(c) && c !== 0x2f && c !== 0x3e && c !== 0x3d);
    const nameEnd = i;
    while (isSpace(c)) c = html.charCodeAt(++i);
    if (c !== 0x3d /* = */) continue; // no value
    c = html.charCodeAt(++i);
    while (isSpace(c)) c = html.charCodeAt(++i);
    let value: string | null = null;
    if (c === 0x22 /* " */ || c === 0x27 /* ' */) {
      const close = html.indexOf(c === 0x22 ? '"' : "'", i + 1);
      if (close === -1) return -1;
      value = html.slice(i + 1, close);
      i = close + 1;
    } else {
      while (i < n && !isSpace(c) && c !== 0x3e) c = html.charCodeAt(++i);
    }
    if (link !== null && !seenHref && nameEnd - nameAt === 4 && /^href$/i.test(html.slice(nameAt, nameEnd))) {
      // Only the first href counts (a browser drops the later ones); a bare value is left as it is.
      seenHref = true;
      // HTML's own attribute-value decoding (entities is generated from the spec's table): the full
      // named table, case-sensitive names, `&lt=5` and `&copy=x` left literal, bad code points U+FFFD.
      const url = value === null ? '' : stripUrlSpaces(decodeHTMLAttribute(value));
      // A quoted value ends just before its closing quote, at i - 1.
      if (value !== null && TRACKABLE_RE.test(url)) link.site = { start: i - 1 - value.length, end: i - 1, url };
    }
  }
}

/** HTML's ASCII whitespace: tab, line feed, form feed, carriage return, space. */
function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d;
}

/** Where the raw text of element `name` ends: at its end tag (`</name` then whitespace, '/' or '>'), else at the end. */
function rawTextEnd(html: string, name: string, from: number): number {
  const key = name.toLowerCase();
  let re = rawEnds.get(key);
  if (re === undefined) rawEnds.set(key, (re = new RegExp(`</${key}[\\t\\n\\f\\r />]`, 'gi')));
  re.lastIndex = from;
  const m = re.exec(html);
  return m === null ? html.length : m.index;
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
