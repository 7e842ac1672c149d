/**
 * The text/plain alternative of an html body, for campaigns that give only html (a text part helps
 * spam filters and is what plain-text clients and screen readers show). html-to-text does the
 * work; its options are compiled once here, so a call is one parse and one walk.
 *
 * Links keep their target after the text (`Read more [https://…]`), unless the text is the URL
 * itself; images (the open pixel among them) and #anchors are dropped; headings keep their case
 * (html-to-text upper-cases them by default, which would also change merged names).
 */
import { compile } from 'html-to-text';

/** RFC 5322 §2.1.1 recommends lines of at most 78 characters. */
const WRAP_COLUMNS = 78;

const HEADINGS = ['h1', 'h2', 'h3', 'h4', 'h5', 'h6'].map((selector) => ({ selector, options: { uppercase: false } }));

export const htmlToText: (html: string) => string = compile({
  wordwrap: WRAP_COLUMNS,
  selectors: [
    { selector: 'img', format: 'skip' },
    { selector: 'a', options: { hideLinkHrefIfSameAsText: true, noAnchorUrl: true } },
    ...HEADINGS,
  ],
});
