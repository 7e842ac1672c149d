/**
 * One recipient's copy of a campaign, in a render worker: the prepared CampaignTemplate (campaign.ts)
 * is compiled once per worker and campaign, then each copy costs three template calls, one replace of
 * the tracking marks and the tokens signed for it. The result is a MessageSpec that renderer.ts
 * composes and DKIM-signs like an API message.
 *
 * Every copy carries: To = the recipient; a Message-ID of its own, `<campaign.no@hostname>` (stable
 * across retries of the same copy, so a receiver can de-duplicate a resend); List-Unsubscribe (https
 * one-click and mailto) with List-Unsubscribe-Post, whatever the tracking mode; a Feedback-ID naming
 * campaign and account; the pixel and click URLs unless the account's mode is 'off'.
 */
import type Handlebars from 'handlebars';
import { parseAddress } from '../core/address.js';
import { ByteLru } from '../core/lru.js';
import { SluiceError } from '../core/errors.js';
import { createTemplateEngine, EMAIL_VAR, FEEDBACK_SENDER_ID, HTML_OPTIONS, MARK_CHAR_RE, MARK_RE, parseCampaignTemplate, TEXT_OPTIONS, UNSUBSCRIBE_VAR, type CopyData } from './campaign-template.js';
import { htmlToText } from './html-text.js';
import type { CampaignTarget, CampaignTemplate, MessageSpec } from './protocol.js';
import { escapeAttribute, type RecipientUrls, type Tracker } from './tracking.js';

export interface CampaignCopyOptions {
  /** Right-hand side of each copy's Message-ID. */
  hostname: string;
  /** Campaigns compiled per worker. 64 covers the campaigns a busy dispatcher interleaves. */
  cacheEntries?: number;
  /** Byte bound of that cache (source and compiled code, estimated). */
  cacheBytes?: number;
  /** Clock of the tokens' issuedAt (ms since epoch). */
  now: () => number;
}

export type CampaignCopyFn = (msgId: string, source: string, target: CampaignTarget, tracker: Tracker) => MessageSpec;

type Render = Handlebars.TemplateDelegate<Record<string, string>>;

interface Compiled {
  /** The stored JSON: a task whose source differs (an edited campaign) compiles again. */
  readonly source: string;
  readonly template: CampaignTemplate;
  readonly subject: Render;
  readonly html: Render | null;
  readonly text: Render | null;
  readonly byteLength: number;
}

/**
 * A compiled template function is roughly as large as its source again; the source is held as a
 * UTF-16 string (2 bytes a character) and once more parsed: 6 bytes a character, rounded up.
 */
const BYTES_PER_SOURCE_CHAR = 6;

export function createCampaignCopier(opts: CampaignCopyOptions): CampaignCopyFn {
  const engine = createTemplateEngine();
  const cache = new ByteLru<Compiled>(opts.cacheEntries ?? 64, opts.cacheBytes ?? 32 * 1024 * 1024);

  function compiled(msgId: string, source: string): Compiled {
    const hit = cache.get(msgId);
    if (hit !== undefined && hit.source === source) return hit;
    const template = parseCampaignTemplate(source);
    // Handlebars compiles on a template's first call, and once: the functions are kept here.
    const c: Compiled = {
      source,
      template,
      subject: engine.compile(template.subject, TEXT_OPTIONS),
      html: template.html === null ? null : engine.compile(template.html, HTML_OPTIONS),
      text: template.text === null ? null : engine.compile(template.text, TEXT_OPTIONS),
      byteLength: source.length * BYTES_PER_SOURCE_CHAR,
    };
    cache.set(msgId, c);
    return c;
  }

  return (msgId, source, target, tracker) => {
    const c = compiled(msgId, source);
    const r = target.recipient;
    const to = parseAddress(r.address);
    if (to === undefined) throw new SluiceError('SLUICE_RENDER_FAILED', 'the recipient address is not valid');
    const urls = tracker.urls({ account: target.account, msgId, idx: r.no, issuedAt: Math.floor(opts.now() / 1000) });
    const context = mergeData(r.fields, to.address, urls.unsubscribeUrl);
    const runtime = { data: { [UNSUBSCRIBE_VAR]: urls.unsubscribeUrl } satisfies CopyData };

    const subject = c.subject(context, runtime).replace(/\s*[\r\n]+\s*/g, ' ').trim();
    const marked = c.html === null ? undefined : c.html(context, runtime);
    const html = marked === undefined ? undefined : fillMarks(marked, c.template.links, target.mode === 'off' ? null : urls);
    // Text derived from the html shows the original links, as the author wrote them.
    const text = c.text !== null ? c.text(context, runtime) : marked !== undefined ? htmlToText(fillMarks(marked, c.template.links, null)) : undefined;

    return {
      from: c.template.from,
      to: [{ ...(r.name !== undefined && r.name !== '' ? { name: r.name } : {}), address: to.address }],
      cc: [],
      replyTo: c.template.replyTo,
      subject,
      ...(text !== undefined ? { text } : {}),
      ...(html !== undefined ? { html } : {}),
      headers: {
        ...c.template.headers,
        ...urls.headers,
        // Google's Feedback Loop groups complaint rates by these fields: a:b:SenderId.
        'Feedback-ID': `${msgId}:${target.account}:${FEEDBACK_SENDER_ID}`,
      },
      attachments: [],
      messageId: `<${msgId}.${r.no}@${opts.hostname}>`,
    };
  };
}

/**
 * The merge data of one copy: the contact's fields, then Sluice's own variables (which win). A
 * null-prototype object, so `{{constructor}}` or `{{__proto__}}` find nothing to reach through; a
 * U+E000 in a value would pass for a tracking mark and becomes U+FFFD.
 */
function mergeData(fields: Readonly<Record<string, string>>, email: string, unsubscribeUrl: string): Record<string, string> {
  const data = Object.create(null) as Record<string, string>;
  for (const [k, v] of Object.entries(fields)) {
    if (typeof v === 'string') data[k] = v.includes('\uE000') ? v.replace(MARK_CHAR_RE, '\uFFFD') : v;
  }
  data[EMAIL_VAR] = email;
  data[UNSUBSCRIBE_VAR] = unsubscribeUrl;
  return data;
}

/**
 * Replaces the tracking marks of rendered html: with this recipient's click URLs and pixel, or, for
 * an untracked copy (`urls` null), with the original links and nothing. A link inside `{{#each}}`
 * appears several times; its token is signed once.
 */
function fillMarks(html: string, links: readonly string[], urls: RecipientUrls | null): string {
  const clicks = new Map<number, string>();
  return html.replace(MARK_RE, (_, link: string | undefined) => {
    if (link === undefined) return urls === null ? '' : urls.pixelTag();
    const n = Number(link);
    // A mark past the link table (a corrupt record) must not become a token for a link that is not there.
    if (n >= links.length) return '';
    if (urls === null) return escapeAttribute(links[n] as string);
    let url = clicks.get(n);
    if (url === undefined) clicks.set(n, (url = urls.clickAttribute(n)));
    return url;
  });
}
