/**
 * Campaign preparation, once per campaign (for POST /v1/campaigns in the ingress's preparation
 * thread, prepare-worker.ts: up to most of a second of CPU, not the ingress thread's to spend):
 * validate the templates (a template that does not compile is refused with its line and column),
 * extract the trackable links, place the tracking marks, the unsubscribe footer and derive the text
 * part. The result is a plain-JSON
 * CampaignTemplate that the campaign's owner stores as the campaign body; render workers turn it
 * into each recipient's copy (campaign-copy.ts) with nothing left to decide but merge values and
 * tokens.
 *
 * Where things go in the html, on the template's own syntax tree (so that a `</body>` or a link
 * inside a `{{!-- comment --}}` or a mustache is never taken for markup):
 *
 *   <html><body> … <a href="https://shop.example/a"> … {{#each x}}…{{/each}} … </body></html>
 *                            └─ link 0 → \uE000c0\uE000               footer ─┘└─ pixel \uE000p\uE000
 *
 * - a link is tracked when its whole href value is template text (a ContentStatement) with no `{{`
 *   in it: `https://shop.example/?u={{id}}` differs per recipient and cannot be in one link table;
 * - the footer and the pixel go before the last `</body` end tag that is top-level template text (not
 *   inside a block, which might not render) and not inside an html comment or raw text (links.ts
 *   scanHtml), else at the end.
 */
import { parseAddress } from '../core/address.js';
import { SluiceError, type FieldError } from '../core/errors.js';
import { createTemplateEngine, HTML_OPTIONS, linkMark, PIXEL_MARK, TEXT_OPTIONS, UNSUBSCRIBE_VAR } from './campaign-template.js';
import { htmlToText } from './html-text.js';
import { scanHtml } from './links.js';
import { RESERVED_HEADERS } from './headers.js';
import type { CampaignTemplate, MailboxSpec } from './protocol.js';

export interface CampaignInput {
  from: MailboxSpec;
  subject: string;
  html?: string;
  text?: string;
  headers?: Record<string, string>;
  tracking: { opens: boolean; clicks: boolean };
  replyTo?: MailboxSpec | MailboxSpec[];
}

export interface PreparedCampaign {
  /** Store this as the campaign body; it is the `source` (as JSON) of every 'campaign' RenderTask. */
  template: CampaignTemplate;
  /** The link table (same as template.links): click token `link` i redirects to links[i]. */
  links: string[];
}

/**
 * Far above any real newsletter (Gmail clips html beyond 102 KB); it bounds the preparation work
 * and what each render worker keeps compiled.
 */
export const MAX_TEMPLATE_CHARS = 1_000_000;
/**
 * Handlebars parses and compiles a template at tens of µs per token, and recurses per nesting level:
 * a 1 MB template of `{{a}}` took ~60 s (on the ingress thread then, every request of the process
 * waiting; now on the ingress's one preparation thread, with campaigns queued behind it), 1,000
 * nested blocks or 3,000 nested sub-expressions overflowed the stack (a 500). These bound the work
 * far above real templates, which use tens to a few hundred expressions, nested a few levels.
 */
export const MAX_EXPRESSIONS = 1_000;
/** Characters inside `{{…}}` in all, for expressions with thousands of parameters or path segments. */
export const MAX_EXPRESSION_CHARS = 32 * 1024;
/** Blocks and sub-expressions inside one another. */
export const MAX_NESTING = 50;
/** RFC 5322 §2.1.1: a header line is at most 998 characters. */
const MAX_LINE = 998;
/** As for API messages: room for every List-*, X-* header a sender uses, while bounding the work. */
const MAX_HEADERS = 50;
const HEADER_NAME = /^[\x21-\x39\x3b-\x7e]{1,76}$/;
/** Headers Sluice writes in every campaign copy, besides those it never takes from an API message. */
const CAMPAIGN_RESERVED = new Set(['list-unsubscribe', 'list-unsubscribe-post', 'feedback-id']);
/**
 * `{{#each}}` inside `{{#each}}` is refused: merge fields are flat strings, so nesting can only
 * iterate over characters, and k levels over a 300-character field cost 300^k steps per copy — a
 * template could otherwise stall a render worker.
 */
const MAX_EACH_DEPTH = 1;

/** Appended to the html (before the pixel) when the template does not use `{{unsubscribe_url}}`. */
const HTML_FOOTER =
  '<p style="margin:24px 0 0;font:12px/18px Helvetica,Arial,sans-serif;color:#6b7280;text-align:center">' +
  `Don&#39;t want these emails? <a href="{{${UNSUBSCRIBE_VAR}}}" style="color:#6b7280">Unsubscribe</a></p>`;
/** Appended to a given text part that does not use `{{unsubscribe_url}}`. */
const TEXT_FOOTER = `\n\n--\nTo stop receiving these emails, unsubscribe: {{${UNSUBSCRIBE_VAR}}}\n`;

/** Private-use marks around the template syntax hidden from html-to-text while deriving the text. */
const HIDE_OPEN = '\uE001';
const HIDE_CLOSE = '\uE002';
const HIDDEN_RE = /\uE001(\d+)\uE002/g;

const engine = createTemplateEngine();

/**
 * Validates a campaign and prepares its body. Throws SLUICE_TEMPLATE_INVALID listing every problem
 * ({ path, message } and, for a template, 1-based line and column).
 */
export function prepareCampaign(input: CampaignInput): PreparedCampaign {
  const errors: FieldError[] = [];
  const from = mailbox(input.from, 'from', errors);
  const replyTo = (input.replyTo === undefined ? [] : Array.isArray(input.replyTo) ? input.replyTo : [input.replyTo]).map((m, i) => mailbox(m, `replyTo.${i}`, errors));
  const headers = checkHeaders(input.headers ?? {}, errors);
  const tracking = { opens: input.tracking?.opens === true, clicks: input.tracking?.clicks === true };

  let subject: Checked | null = null;
  if (typeof input.subject !== 'string') errors.push({ path: 'subject', message: 'must be a string' });
  else if (input.subject.length > MAX_LINE) errors.push({ path: 'subject', message: `at most ${MAX_LINE} characters` });
  else if (/[\r\n]/.test(input.subject)) errors.push({ path: 'subject', message: 'must not contain line breaks' });
  else subject = check('subject', input.subject, TEXT_OPTIONS, errors);

  const html = body('html', input.html, HTML_OPTIONS, errors);
  const text = body('text', input.text, TEXT_OPTIONS, errors);
  if (input.html === undefined && input.text === undefined) errors.push({ path: 'html', message: 'a campaign needs html or text (or both)' });

  if (errors.length > 0 || subject === null || (html === null && text === null)) {
    throw new SluiceError('SLUICE_TEMPLATE_INVALID', describe(errors), { errors });
  }

  const links: string[] = [];
  let htmlTemplate: string | null = null;
  let textTemplate: string | null = null;
  if (html !== null) {
    const prepared = prepareHtml(html, tracking, links);
    htmlTemplate = prepared.html;
    // Text derived from the footed html carries the footer's link as well.
    textTemplate = text === null ? deriveText(prepared.footed) : null;
  }
  if (text !== null) textTemplate = text.usesUnsubscribe ? text.source : text.source + TEXT_FOOTER;

  const template: CampaignTemplate = { v: 1, from, replyTo, subject: subject.source, html: htmlTemplate, text: textTemplate, headers, links };
  return { template, links };
}

/** A template that compiled, with what preparation needs from its syntax tree. */
interface Checked {
  readonly source: string;
  /** Offsets of template text (ContentStatements), at any depth; `top` when not inside a block. */
  readonly content: readonly { start: number; end: number; top: boolean }[];
  readonly usesUnsubscribe: boolean;
}

function body(path: 'html' | 'text', source: unknown, options: typeof HTML_OPTIONS, errors: FieldError[]): Checked | null {
  if (source === undefined) return null;
  if (typeof source !== 'string') {
    errors.push({ path, message: 'must be a string' });
    return null;
  }
  if (source.length > MAX_TEMPLATE_CHARS) {
    errors.push({ path, message: `at most ${MAX_TEMPLATE_CHARS} characters` });
    return null;
  }
  if (source.trim() === '') {
    errors.push({ path, message: 'must not be empty' });
    return null;
  }
  return check(path, source, options, errors);
}

/**
 * Why a template is too complex to parse, or null: checked on its text before parsing, since the
 * parser's own work grows faster than the text (with the nesting of sub-expressions, for one). One
 * pass of native searches: each `{{` to its `}}` (a comment to its own end); an expression left open
 * runs to the end of the text (the parser reads all of it before it fails). A comment counts as an
 * expression (a token) but not its text, which the parser takes whole.
 */
function tooComplex(source: string): string | null {
  let count = 0;
  let chars = 0;
  for (let at = source.indexOf('{{'); at !== -1; ) {
    const closer = source.startsWith('{{!--', at) ? '--}}' : '}}';
    const comment = source.startsWith('{{!', at);
    const close = source.indexOf(closer, at + (closer === '--}}' ? 5 : 2));
    const end = close === -1 ? source.length : close + closer.length;
    count++;
    if (!comment || close === -1) {
      chars += end - at;
      let depth = 0;
      for (let i = at; i < end; i++) {
        const c = source.charCodeAt(i);
        if (c === 0x28 && ++depth > MAX_NESTING) return `sub-expressions may not be nested more than ${MAX_NESTING} deep`;
        if (c === 0x29) depth--;
      }
    }
    at = close === -1 ? -1 : source.indexOf('{{', end);
  }
  if (count > MAX_EXPRESSIONS) return `at most ${MAX_EXPRESSIONS} template expressions ({{…}}), found ${count}`;
  if (chars > MAX_EXPRESSION_CHARS) return `at most ${MAX_EXPRESSION_CHARS} characters of template expressions ({{…}}) in all`;
  return null;
}

/** The deepest block or sub-expression of a syntax tree inside another, the first one past MAX_NESTING; without recursion. */
function tooDeep(ast: hbs.AST.Program): hbs.AST.Node | null {
  const stack: [unknown, number][] = [[ast, 0]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop() as [unknown, number];
    if (typeof node !== 'object' || node === null) continue;
    const type = (node as { type?: unknown }).type;
    const d = type === 'BlockStatement' || type === 'SubExpression' ? depth + 1 : depth;
    if (d > MAX_NESTING) return node as hbs.AST.Node;
    for (const [k, v] of Object.entries(node)) if (k !== 'loc') stack.push([v, d]);
  }
  return null;
}

/** Parses and compiles one template; a failure becomes a FieldError with its position. */
function check(path: string, source: string, options: typeof HTML_OPTIONS, errors: FieldError[]): Checked | null {
  const complex = tooComplex(source);
  if (complex !== null) {
    errors.push({ path, message: complex });
    return null;
  }
  let ast: hbs.AST.Program;
  try {
    ast = engine.parse(source);
  } catch (err) {
    errors.push({ path, ...compileError(err, engine) });
    return null;
  }
  const deep = tooDeep(ast);
  if (deep !== null) {
    errors.push({ path, message: `blocks and sub-expressions may not be nested more than ${MAX_NESTING} deep`, line: deep.loc.start.line, column: deep.loc.start.column + 1 });
    return null;
  }

  const found = { before: errors.length, content: [] as { start: number; end: number; top: boolean }[], usesUnsubscribe: false };
  const offsets = lineOffsets(source);
  const at = (p: hbs.AST.Position): number => (offsets[p.line - 1] ?? source.length) + p.column;
  const refuse = (node: hbs.AST.Node, message: string): void => void errors.push({ path, message, line: node.loc.start.line, column: node.loc.start.column + 1 });
  const walk = (node: unknown, top: boolean, eachDepth: number): void => {
    if (Array.isArray(node)) return node.forEach((n) => walk(n, top, eachDepth));
    if (typeof node !== 'object' || node === null || typeof (node as { type?: unknown }).type !== 'string') return;
    const n = node as hbs.AST.Node & Record<string, unknown>;
    switch (n.type) {
      case 'ContentStatement': {
        const start = at(n.loc.start);
        const end = at(n.loc.end);
        // Taken as template text only when the location really spans its original text.
        if (source.slice(start, end) === (n as unknown as { original: string }).original) found.content.push({ start, end, top });
        return;
      }
      case 'PartialStatement':
      case 'PartialBlockStatement':
        return refuse(n, 'partials are not supported');
      case 'Decorator':
      case 'DecoratorBlock':
        return refuse(n, 'decorators are not supported');
      case 'PathExpression': {
        const p = n as unknown as hbs.AST.PathExpression;
        if (p.parts.length === 1 && p.parts[0] === UNSUBSCRIBE_VAR) found.usesUnsubscribe = true;
        return;
      }
      case 'BlockStatement': {
        const b = n as unknown as hbs.AST.BlockStatement;
        const each = (b.path as hbs.AST.PathExpression).original === 'each';
        if (each && eachDepth >= MAX_EACH_DEPTH) return refuse(n, `{{#each}} may not be nested more than ${MAX_EACH_DEPTH} deep`);
        walk([b.path, b.params, b.hash], top, eachDepth);
        walk([b.program, b.inverse], false, eachDepth + (each ? 1 : 0));
        return;
      }
      default:
        for (const [k, v] of Object.entries(n)) if (k !== 'loc') walk(v, top, eachDepth);
    }
  };
  walk(ast, true, 0);
  if (errors.length > found.before) return null;

  try {
    engine.precompile(source, options);
  } catch (err) {
    errors.push({ path, ...compileError(err, engine) });
    return null;
  }
  return { source, content: found.content, usesUnsubscribe: found.usesUnsubscribe };
}

/**
 * The stored html template: link marks (when clicks are tracked), then the footer (when the template
 * has no unsubscribe link) and the pixel mark (when opens are tracked) at the body's end. `footed` is
 * the same html with the footer but without marks, for the text part.
 */
function prepareHtml(t: Checked, tracking: { opens: boolean; clicks: boolean }, links: string[]): { html: string; footed: string } {
  const { source, content } = t;
  const within = (start: number, end: number, topOnly: boolean) => content.some((c) => start >= c.start && end <= c.end && (!topOnly || c.top));

  // The html is scanned with the template syntax blanked out (offsets unchanged), so a `<!--` or a
  // quote inside a mustache or a {{!-- comment --}} does not change what the html around it is.
  const scanned = scanHtml(blankSyntax(source, content));
  const cuts: { start: number; end: number; text: string }[] = [];
  if (tracking.clicks) {
    for (const site of scanned.links) {
      if (site.url.includes('{{') || !within(site.start, site.end, false)) continue;
      cuts.push({ start: site.start, end: site.end, text: linkMark(links.length) });
      links.push(site.url);
    }
  }
  let bodyEnd = source.length;
  for (const at of scanned.bodyEnds) if (within(at, at + '</body'.length, true)) bodyEnd = at;
  const footer = t.usesUnsubscribe ? '' : HTML_FOOTER;
  const pixel = tracking.opens ? PIXEL_MARK : '';
  // The href of a link never contains '</body' (it is one quoted value), so the insertion sits
  // between link cuts, never inside one.
  const firstAfter = cuts.findIndex((c) => c.start >= bodyEnd);
  cuts.splice(firstAfter === -1 ? cuts.length : firstAfter, 0, { start: bodyEnd, end: bodyEnd, text: footer + pixel });

  let html = '';
  let pos = 0;
  for (const c of cuts) {
    html += authored(source.slice(pos, c.start)) + c.text;
    pos = c.end;
  }
  html += authored(source.slice(pos));
  return { html, footed: source.slice(0, bodyEnd) + footer + source.slice(bodyEnd) };
}

/** `source` with everything but its template text (`content`) replaced by spaces: same length, same offsets. */
function blankSyntax(source: string, content: Checked['content']): string {
  let out = '';
  let pos = 0;
  for (const c of [...content].sort((x, y) => x.start - y.start)) {
    if (c.start > pos) out += ' '.repeat(c.start - pos);
    if (c.end > pos) out += source.slice(Math.max(c.start, pos), c.end);
    pos = Math.max(pos, c.end);
  }
  return out + ' '.repeat(source.length - pos);
}

/** The author's own text, with any U+E000 (the mark character) written as a character reference. */
function authored(text: string): string {
  return text.includes('\uE000') ? text.replace(/\uE000/g, '&#xE000;') : text;
}

/**
 * The text template of an html-only campaign, derived once: every piece of template syntax is hidden
 * behind a private-use placeholder, html-to-text converts the rest, and the syntax is put back. The
 * result is a Handlebars text template (`Hello {{first}}, … Read more [https://…]`), so each copy's
 * text costs a template call, not an html parse. Syntax inside attributes html-to-text drops (a
 * style's `{{color}}`) is dropped with them; should that leave an unbalanced block, or the html use
 * the placeholder characters, null is returned and the worker converts each copy's html instead.
 */
function deriveText(footed: string): string | null {
  if (footed.includes(HIDE_OPEN) || footed.includes(HIDE_CLOSE)) return null;
  const checked = check('html', footed, HTML_OPTIONS, []);
  if (checked === null) return null;
  const syntax: string[] = [];
  let masked = '';
  let pos = 0;
  const hide = (end: number) => {
    if (end <= pos) return;
    masked += `${HIDE_OPEN}${syntax.length}${HIDE_CLOSE}`;
    syntax.push(footed.slice(pos, end));
  };
  for (const c of [...checked.content].sort((a, b) => a.start - b.start)) {
    hide(c.start);
    masked += footed.slice(c.start, c.end);
    pos = c.end;
  }
  hide(footed.length);

  // A '{{' html-to-text produced from text (`&#123;&#123;`) is literal: escape it before the syntax returns.
  const text = htmlToText(masked)
    .replace(/(^|[^\\])\{\{/g, '$1\\{{')
    .replace(HIDDEN_RE, (_, k: string) => syntax[Number(k)] ?? '');
  return check('text', text, TEXT_OPTIONS, []) === null ? null : text;
}

function mailbox(m: unknown, path: string, errors: FieldError[]): MailboxSpec {
  const o = (typeof m === 'object' && m !== null ? m : {}) as Record<string, unknown>;
  const address = typeof o['address'] === 'string' ? parseAddress(o['address'])?.address : undefined;
  if (address === undefined) errors.push({ path: `${path}.address`, message: 'not a valid address' });
  const name = o['name'];
  if (name !== undefined && (typeof name !== 'string' || /[\r\n\0]/.test(name) || name.length > MAX_LINE)) {
    errors.push({ path: `${path}.name`, message: 'must be one line of text' });
  }
  return { ...(typeof name === 'string' && name !== '' ? { name } : {}), address: address ?? '' };
}

function checkHeaders(h: Record<string, string>, errors: FieldError[]): Record<string, string> {
  const names = typeof h === 'object' && h !== null ? Object.keys(h) : [];
  if (names.length > MAX_HEADERS) errors.push({ path: 'headers', message: `at most ${MAX_HEADERS} headers` });
  const out: Record<string, string> = {};
  for (const name of names) {
    const value = h[name];
    const path = `headers.${name}`;
    if (!HEADER_NAME.test(name)) errors.push({ path, message: 'not a valid header name' });
    else if (RESERVED_HEADERS.has(name.toLowerCase()) || CAMPAIGN_RESERVED.has(name.toLowerCase())) errors.push({ path, message: `${name} is set by Sluice` });
    else if (typeof value !== 'string' || /[\r\n\0]/.test(value)) errors.push({ path, message: 'must be one line of text' });
    else if (name.length + 2 + value.length > MAX_LINE) errors.push({ path, message: 'too long for one header line' });
    else out[name] = value;
  }
  return out;
}

/** Handlebars' names of the tokens a syntax error expects, as an author would write them. */
const TOKENS: Readonly<Record<string, string>> = {
  CLOSE: "'}}'", OPEN_ENDBLOCK: "'{{/…}}'", INVERSE: "'{{else}}'", OPEN_INVERSE_CHAIN: "'{{else …}}'", ID: 'a name',
  CLOSE_UNESCAPED: "'}}}'", CLOSE_SEXPR: "')'", STRING: 'a string', NUMBER: 'a number', DATA: 'an @variable',
  BOOLEAN: 'true or false', OPEN_SEXPR: "'('", SEP: "'.'", EQUALS: "'='", OPEN_BLOCK_PARAMS: "'as |'",
  CLOSE_RAW_BLOCK: "'}}}}'", EOF: 'the end of the template', INVALID: 'an invalid character',
};
const TOKEN_ORDER = Object.keys(TOKENS);

/**
 * Message and 1-based position of a Handlebars failure. Errors of the template's structure (a block
 * closed by the wrong name, an unknown helper) carry `lineNumber` and a 0-based `column` and end in
 * " - line:column". A syntax error carries no position, but the parser's lexer still holds the
 * location of the token it stopped at: parsing is synchronous, so it is this template's.
 */
function compileError(err: unknown, hb: typeof engine): { message: string; line?: number; column?: number } {
  const e = err as Error & { lineNumber?: number; column?: number };
  const message = String(e?.message ?? err);
  if (e.lineNumber !== undefined) {
    const text = message.replace(/ - \d+:\d+$/, '').replace(/^You specified knownHelpersOnly, but used the unknown helper (.*)$/, "unknown helper '$1'");
    return { message: text, line: e.lineNumber, column: (e.column ?? 0) + 1 };
  }
  const lexer = (hb as unknown as { Parser?: { lexer?: { yylloc?: { first_line: number; first_column: number } } } }).Parser?.lexer;
  const at = lexer?.yylloc ? { line: lexer.yylloc.first_line, column: lexer.yylloc.first_column + 1 } : {};
  const m = /Expecting (.*), got '([^']*)'$/.exec(message);
  if (m) {
    // Most likely first (the table's order), so that a cut list still names what was meant.
    const rank = (t: string) => (TOKEN_ORDER.indexOf(t) + TOKEN_ORDER.length + 1) % (TOKEN_ORDER.length + 1);
    const names = (m[1] as string).split(', ').map((t) => t.replace(/'/g, '')).sort((a, b) => rank(a) - rank(b));
    const expected = [...new Set(names.map((t) => TOKENS[t] ?? t))];
    const list = expected.length > 4 ? `${expected.slice(0, 4).join(', ')}, …` : expected.join(' or ');
    return { message: `syntax error: found ${TOKENS[m[2] as string] ?? `'${m[2]}'`} where ${list} was expected`, ...at };
  }
  if (message.startsWith('Lexical error') || message.startsWith('Parse error')) return { message: 'syntax error', ...at };
  // Anything else (a template nested so deep that compiling it overflows the stack) has no position.
  return { message: `cannot compile: ${message}` };
}

/** Offset of the first character of each line, with the line breaks Handlebars' lexer counts. */
function lineOffsets(source: string): number[] {
  const offsets = [0];
  for (const m of source.matchAll(/\r\n?|\n/g)) offsets.push(m.index + m[0].length);
  return offsets;
}

function describe(errors: readonly FieldError[]): string {
  const first = errors[0];
  if (!first) return 'The campaign template is invalid';
  const where = first.line !== undefined ? ` (line ${first.line}, column ${first.column ?? 1})` : '';
  return `${first.path}: ${first.message}${where}${errors.length > 1 ? ` (and ${errors.length - 1} more)` : ''}`;
}
