/**
 * What campaign preparation (campaign.ts, the ingress's preparation thread) and campaign rendering
 * (campaign-copy.ts, render workers) must agree on: the Handlebars dialect, the marks a prepared html template carries,
 * and the stored CampaignTemplate record.
 *
 * The dialect: Handlebars with its built-in block helpers (if, unless, each, with, lookup) and one of
 * Sluice's, `unsubscribe_url`. Escaping is on in html and off in text and subject. Unknown helpers
 * are refused when the template is compiled (knownHelpersOnly), so a typo fails at preparation with
 * a line and column instead of at send time; `log` is left out (it would write customers' template
 * output to the operator's stderr). A missing field renders empty.
 *
 * Marks: tracking is decided once per campaign, so a prepared html template already says where each
 * click URL and the pixel go. Each is a private-use character U+E000 around a code:
 *
 *   <a href="https://shop.example/a">   →   <a href="\uE000c0\uE000">      (link 0 of the link table)
 *   …</body>                             →   …\uE000p\uE000</body>          (the open pixel)
 *
 * Handlebars passes them through as literal text, and per recipient one replace turns them into
 * that recipient's URLs (or back into the original links when the account is not tracked). A U+E000
 * written by the template's author is stored as `&#xE000;` and one in a merge value becomes U+FFFD,
 * so the only marks in a rendered copy are Sluice's own.
 */
import Handlebars from 'handlebars';
import type { CampaignTemplate } from './protocol.js';
import { isMailbox, isObject, renderFailed } from './record-shape.js';

/** Merge variable (and helper) holding the recipient's one-click unsubscribe URL. */
export const UNSUBSCRIBE_VAR = 'unsubscribe_url';
/** Merge variable holding the recipient's address. */
export const EMAIL_VAR = 'email';

const MARK = '\uE000';
export const linkMark = (link: number): string => `${MARK}c${link}${MARK}`;
export const PIXEL_MARK = `${MARK}p${MARK}`;
/** A mark in rendered html: group 1 is the link number, undefined for the pixel. */
export const MARK_RE = /\uE000(?:c(\d{1,4})|p)\uE000/g;
export const MARK_CHAR_RE = /\uE000/g;

const KNOWN_HELPERS = { knownHelpersOnly: true, knownHelpers: { log: false, [UNSUBSCRIBE_VAR]: true } } as const;
/** Compile options of html templates: merge values are HTML-escaped. */
export const HTML_OPTIONS: CompileOptions = { ...KNOWN_HELPERS, noEscape: false };
/** Compile options of text and subject templates: values go in as they are. */
export const TEXT_OPTIONS: CompileOptions = { ...KNOWN_HELPERS, noEscape: true };

/** Feedback-ID's last field, the SenderId of Google's `a:b:c:SenderId` (constant for the stream). */
export const FEEDBACK_SENDER_ID = 'sluice';

/** The runtime data of one copy: `{{@unsubscribe_url}}` reads it, and so does the helper. */
export interface CopyData {
  readonly [UNSUBSCRIBE_VAR]: string;
}

/**
 * A Handlebars environment of Sluice's own (helpers registered here do not leak into other users of
 * the module). `{{unsubscribe_url}}` is a helper rather than a field so that it works at any depth,
 * inside `{{#each}}` and `{{#with}}` too, where a field would name the inner context.
 */
export function createTemplateEngine(): typeof Handlebars {
  const hb = Handlebars.create();
  // Handlebars reports a template reaching for a prototype member (`{{first.toString}}`) on stderr;
  // it renders empty, as it should, and a customer's template has no business in the operator's
  // log. The logger is Handlebars' module-wide one: a level above ERROR (3) silences it.
  hb.logger.level = hb.logger.ERROR + 1;
  hb.unregisterHelper('log');
  hb.registerHelper(UNSUBSCRIBE_VAR, (options: Handlebars.HelperOptions) => (options.data as Partial<CopyData> | undefined)?.[UNSUBSCRIBE_VAR] ?? '');
  return hb;
}

/**
 * Parses and shape-checks a stored CampaignTemplate. The preparation wrote it; this guards the worker
 * against a corrupt or foreign record, which becomes SLUICE_RENDER_FAILED instead of a crash.
 */
export function parseCampaignTemplate(json: string): CampaignTemplate {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    throw renderFailed('campaign template is not valid JSON');
  }
  if (!isObject(v)) throw renderFailed('campaign template is not an object');
  if (v['v'] !== 1) throw renderFailed(`campaign template version ${String(v['v'])} is not known here`);
  if (!isMailbox(v['from'])) throw renderFailed('campaign template from is not a mailbox');
  if (!Array.isArray(v['replyTo']) || !v['replyTo'].every(isMailbox)) throw renderFailed('campaign template replyTo is not a list of mailboxes');
  if (typeof v['subject'] !== 'string') throw renderFailed('campaign template subject is not a string');
  if (v['html'] !== null && typeof v['html'] !== 'string') throw renderFailed('campaign template html is not a string');
  if (v['text'] !== null && typeof v['text'] !== 'string') throw renderFailed('campaign template text is not a string');
  if (v['html'] === null && v['text'] === null) throw renderFailed('campaign template has neither html nor text');
  const headers = v['headers'];
  if (!isObject(headers) || !Object.values(headers).every((h) => typeof h === 'string' && !/[\r\n]/.test(h))) {
    throw renderFailed('campaign template headers are not a map of one-line strings');
  }
  if (!Array.isArray(v['links']) || !v['links'].every((l) => typeof l === 'string')) throw renderFailed('campaign template links are not a list of URLs');
  return v as unknown as CampaignTemplate;
}

type CompileOptions = NonNullable<Parameters<typeof Handlebars.compile>[1]>;
