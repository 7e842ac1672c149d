import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { extractLinks, findLinks, MAX_TRACKED_LINKS, scanHtml } from '../../src/render/links.js';

const test = suite('render/links');

test('http(s) hrefs of <a> and <area> are found in document order, quoted either way, any case', () => {
  const html = `<html><body>
    <A HREF="https://shop.example/one">one</A>
    <p><a class="btn" href='http://shop.example/two?x=1'>two</a></p>
    <map><area shape="rect" coords="0,0,1,1" href="https://shop.example/three" alt=""></map>
    <a
      href = "HTTPS://shop.example/four">four</a>
  </body></html>`;
  assert.equal(extractLinks(html), ['https://shop.example/one', 'http://shop.example/two?x=1', 'https://shop.example/three', 'HTTPS://shop.example/four']);
});

test('mailto:, tel:, anchors, javascript:, relative, empty and unquoted links are not tracked', () => {
  const html = [
    '<a href="mailto:help@shop.example">m</a>',
    '<a href="tel:+4912345">t</a>',
    '<a href="#top">a</a>',
    '<a href="javascript:alert(1)">j</a>',
    '<a href="/relative">r</a>',
    '<a href="">e</a>',
    '<a href=https://bare.example/>b</a>',
    '<a name="x">no href</a>',
    '<a href="https://kept.example/">k</a>',
  ].join('\n');
  assert.equal(extractLinks(html), ['https://kept.example/']);
});

test('look-alike tags and attributes are not links: <abbr>, <img href>, data-href, href inside another value', () => {
  const html = [
    '<abbr href="https://no1.example/">x</abbr>',
    '<img href="https://no2.example/">',
    '<a data-href="https://no3.example/" title="see href=\'https://no4.example/\' > here">t</a>',
    '<link href="https://no5.example/style.css">',
    '<a title=">" href="https://yes.example/">y</a>',
  ].join('');
  assert.equal(extractLinks(html), ['https://yes.example/']);
});

test('only the first href of a tag counts, as in browsers', () => {
  assert.equal(extractLinks('<a href="https://first.example/" href="https://second.example/">x</a>'), ['https://first.example/']);
});

test('character references are decoded in the URL; the offsets still cover the raw value', () => {
  const html = '<a href="https://shop.example/?a=1&amp;b=2&#38;c=3&lt=5">x</a>';
  const [site] = findLinks(html);
  assert.ok(site);
  assert.is(site.url, 'https://shop.example/?a=1&b=2&c=3&lt=5', '&lt= without ; stays literal, as in an attribute');
  assert.is(html.slice(site.start, site.end), 'https://shop.example/?a=1&amp;b=2&#38;c=3&lt=5');
  assert.is(html[site.start - 1], '"');
  assert.is(html[site.end], '"');
});

test("references decode by HTML's attribute rules: the full table, case-sensitive names, legacy names only when no '=' or alphanumeric follows", () => {
  const cases: [string, string][] = [
    ['https://a.example/caf&eacute;', 'https://a.example/café'],
    ['https://a.example/?a=1&AMP;b=2', 'https://a.example/?a=1&b=2'], // &AMP; is in HTML's table
    ['https://a.example/?a=1&Amp;b=2', 'https://a.example/?a=1&Amp;b=2'], // &Amp; is not: literal
    ['https://a.example/?x=1&copy=1', 'https://a.example/?x=1&copy=1'], // legacy name then '=': literal
    ['https://a.example/?x=1&not1', 'https://a.example/?x=1&not1'], // legacy name then alphanumeric: literal
    ['https://a.example/?x=1&copy;', 'https://a.example/?x=1©'],
    ['https://a.example/?x=1&amp;y=2&amp;z', 'https://a.example/?x=1&y=2&z'],
    ['https://a.example/&#x41;&#66;&#x43', 'https://a.example/ABC'],
    ['https://a.example/&#0;|&#xD800;|&#x110000;|&#99999999;', 'https://a.example/\uFFFD|\uFFFD|\uFFFD|\uFFFD'],
    ['https://a.example/&#x80;', 'https://a.example/€'], // C1 references mean windows-1252, as in browsers
    ['https://a.example/x&nbsp;', 'https://a.example/x\u00a0'], // a URL parser strips only C0 and space
    ['&#32;https://a.example/y&#9;', 'https://a.example/y'],
  ];
  const html = cases.map(([raw]) => `<a href="${raw}">x</a>`).join('');
  assert.equal(extractLinks(html), cases.map(([, url]) => url));
});

test('offsets point at each value exactly, with single quotes and surrounding whitespace', () => {
  const html = "<p>x</p><a  href = 'https://a.example/1' >A</a><a href=\"https://b.example/2\">B</a>";
  const sites = findLinks(html);
  assert.equal(sites.map((s) => html.slice(s.start, s.end)), ['https://a.example/1', 'https://b.example/2']);
});

test('an unterminated tag or quote finds nothing past it and does not hang', () => {
  assert.equal(extractLinks('<a href="https://x.example/'), []);
  assert.equal(extractLinks(`<a href="https://ok.example/">ok</a><a title="${'x'.repeat(100_000)}`), ['https://ok.example/']);
});

test('a hostile body of unclosed tags is scanned in one pass (count-bounded: 200k tags)', () => {
  const html = '<a title="x '.repeat(200_000) + '<a href="https://end.example/">e</a>';
  assert.equal(extractLinks(html), ['https://end.example/']);
});

test('links in comments, scripts, styles, textareas and titles are not links; in an Outlook conditional comment they are', () => {
  const html = [
    '<html><head><title><a href="https://no1.example/"></title>',
    '<style>a::after{content:\'<a href="https://no2.example/">\'}</style></head><body>',
    '<!-- <a href="https://no3.example/">old</a> -->',
    '<!--[if mso]><a href="https://outlook.example/">o</a><![endif]-->',
    '<!--[if !mso]><!--><a href="https://others.example/">x</a><!--<![endif]-->',
    '<script>document.write(\'<a href="https://no4.example/">\')</script>',
    '<textarea><a href="https://no5.example/"></textarea>',
    '<!----><a href="https://yes1.example/">y</a><!-- x --!><a href="https://yes2.example/">y</a>',
    '<SCRIPT type="x">"</script ><a href="https://yes3.example/">y</a>',
    '<a title="1 < 2" href="https://yes4.example/">y</a>',
    '<!-- never closed <a href="https://no6.example/">',
  ].join('\n');
  assert.equal(extractLinks(html), ['https://outlook.example/', 'https://others.example/', 'https://yes1.example/', 'https://yes2.example/', 'https://yes3.example/', 'https://yes4.example/']);
});

test('</body end tags are found where every client sees them: not in a comment, raw text or an attribute value', () => {
  const html = '<body><p title="</body>">x</p><!-- </body> --><!--[if mso]></body><![endif]--><script>"</body>"</script></body ><bodyx></bodyx><style></body></style>';
  assert.equal(scanHtml(html).bodyEnds, [html.indexOf('</body >')]);
  assert.equal(scanHtml('<p>x</p><!-- </body> -->').bodyEnds, []);
});

test('hostile comments, conditional comments and raw text are scanned in one pass (count-bounded: 100k each)', () => {
  const end = '<a href="https://end.example/">e</a>';
  // A quote left open in each of many conditional comments is looked for only up to that comment's end.
  assert.equal(extractLinks('<!--[if mso]><a title="-->'.repeat(100_000) + end), ['https://end.example/']);
  assert.equal(extractLinks('<script></scrip'.repeat(100_000) + '</script>' + end), ['https://end.example/']);
  assert.equal(extractLinks('<!--<!-- -- >'.repeat(100_000) + '-->' + end), ['https://end.example/']);
});

test('the same html always yields the same table, and at most MAX_TRACKED_LINKS entries', () => {
  const html = Array.from({ length: MAX_TRACKED_LINKS + 5 }, (_, i) => `<a href="https://l.example/${i}">${i}</a>`).join('');
  const a = extractLinks(html);
  assert.is(a.length, MAX_TRACKED_LINKS);
  assert.is(a[MAX_TRACKED_LINKS - 1], `https://l.example/${MAX_TRACKED_LINKS - 1}`);
  assert.equal(extractLinks(html), a);
});

test.run();
