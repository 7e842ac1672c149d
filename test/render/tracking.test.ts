import { randomBytes } from 'node:crypto';
import { simpleParser } from 'mailparser';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createTokenCodec, type TokenCodec } from '../../src/core/tokens.js';
import { newId } from '../../src/core/ids.js';
import { unsubscribeAddress } from '../../src/feedback/recipients.js';
import { extractLinks } from '../../src/render/links.js';
import type { MessageSpec, RenderResult, RenderTask } from '../../src/render/protocol.js';
import { createRenderer, type RenderFn } from '../../src/render/renderer.js';
import { createTracker, prepareTemplate } from '../../src/render/tracking.js';
import { makeKey, txtTable, verifyWithMailauth, type TestKey } from '../helpers/dkim-verify.js';

const test = suite('render/tracking');

const BASE = 'https://t.shop.example';
const NOW_MS = Date.UTC(2025, 6, 1, 9, 5, 0);
const HTML = [
  '<html><body><p>Hello</p>',
  '<a href="https://shop.example/a?x=1&amp;y=2">A</a>',
  '<a href="mailto:help@shop.example">mail</a>',
  "<a href='https://shop.example/b'>B</a>",
  '<a href="#top">top</a>',
  '<map><area href="https://shop.example/c" alt=""></map>',
  '</body></html>',
].join('\n');

let secret: Buffer;
let codec: TokenCodec;
let rsa: TestKey;
let table: Record<string, string>;
let render: RenderFn;

test.before(() => {
  secret = randomBytes(32);
  codec = createTokenCodec({ keys: [{ id: 'k1', secret }], signWith: 'k1' });
  rsa = makeKey('shop.example', 'r1', 'rsa');
  table = txtTable([rsa]);
  render = createRenderer(
    { keys: [rsa], hostname: 'mta.shop.example', tracking: { publicBaseUrl: BASE, keys: [{ id: 'k1', secret: secret.toString('base64') }], signWith: 'k1', bounceDomain: 'bounce.shop.example' } },
    { now: () => NOW_MS },
  );
});

function ok(r: RenderResult): Extract<RenderResult, { ok: true }> {
  if (!r.ok) throw new Error(`render failed: ${r.code} ${r.message}`);
  return r;
}

function spec(msgId: string, over: Partial<MessageSpec> = {}): MessageSpec {
  return {
    from: { address: 'news@shop.example' },
    to: [{ address: 'reader@example.org' }],
    cc: [],
    subject: 'News',
    text: 'plain https://shop.example/plain',
    html: HTML,
    headers: { 'List-Unsubscribe': '<https://sender.example/own>', 'X-Campaign': 'c1' },
    attachments: [],
    messageId: `<${msgId}@mta.shop.example>`,
    tracking: { links: extractLinks(HTML).length },
    ...over,
  };
}

function task(msgId: string, s: MessageSpec, idx: number, mode: 'full' | 'anonymous' | 'off' = 'full'): RenderTask {
  return { msgId, kind: 'spec', source: JSON.stringify(s), signingDomain: 'shop.example', acceptedAt: NOW_MS, tracking: { account: 'acme', idx, mode } };
}

/** Every token in the copy, verified: [kind, payload]. */
function tokensIn(text: string) {
  return [...text.matchAll(/https:\/\/t\.shop\.example\/([ocu])\/([A-Za-z0-9_-]+)/g)].map((m) => ({ path: m[1], payload: codec.verify(m[2] as string, NOW_MS) }));
}

test('the template splits around each trackable link and the pixel place; joining it back gives the html', () => {
  const t = prepareTemplate(HTML, 3);
  assert.is(t.slots.length, 4);
  assert.equal(t.slots.slice(0, 3), [{ link: 0 }, { link: 1 }, { link: 2 }]);
  assert.is(t.slots[3], 'pixel');
  assert.ok((t.pieces[3] as string).endsWith('\n'));
  assert.is(t.pieces[4], '</body></html>');
});

test('a link count that differs from the stored table leaves the links alone but still places the pixel', () => {
  const t = prepareTemplate(HTML, 2);
  assert.equal(t.slots, ['pixel']);
  assert.is(t.pieces.join(''), HTML);
});

test('without </body> the pixel goes at the end', () => {
  const t = prepareTemplate('<p><a href="https://x.example/">x</a></p>', 1);
  assert.equal(t.slots, [{ link: 0 }, 'pixel']);
  assert.is(t.pieces[2], '');
});

test('the pixel goes before the real </body>, not one in a comment, a script, style, textarea or title, or an attribute value', () => {
  const tail = '<!-- </body> --><script>"</body>"</script><style>/* </body> */</style><textarea></body></textarea><title></body></title><p title="</body>">x</p><!--[if mso]></body><![endif]-->';
  const html = `<html><body><a href="https://x.example/">x</a></body>\n${tail}</html>`;
  const t = prepareTemplate(html, 1);
  assert.equal(t.slots, [{ link: 0 }, 'pixel']);
  assert.is(t.pieces[1], '">x</a>');
  assert.is(t.pieces[2], `</body>\n${tail}</html>`);
});

test('when the only </body> is in a comment, the pixel goes at the end, as when there is none', () => {
  const html = '<p><a href="https://x.example/">x</a></p><!-- </body> -->';
  const t = prepareTemplate(html, 1);
  assert.equal(t.slots, [{ link: 0 }, 'pixel']);
  assert.is(t.pieces[2], '');
  assert.is(t.pieces[1], '">x</a></p><!-- </body> -->');
});

test('a commented-out link is not rewritten; one in an Outlook conditional comment is', () => {
  const tracker = createTracker({ publicBaseUrl: BASE, keys: [{ id: 'k1', secret: new Uint8Array(secret) }], signWith: 'k1', bounceDomain: 'bounce.shop.example' });
  const html = '<body><!-- <a href="https://old.example/">old</a> --><!--[if mso]><a href="https://outlook.example/">o</a><![endif]--></body>';
  assert.equal(extractLinks(html), ['https://outlook.example/']);
  const copy = tracker.copy(prepareTemplate(html, 1), { account: 'acme', msgId: newId(NOW_MS), idx: 0, issuedAt: 1000 }).html as string;
  assert.match(copy, '<!-- <a href="https://old.example/">old</a> -->');
  assert.not.match(copy, 'outlook.example');
  assert.equal(tokensIn(copy).map((t) => t.path), ['c', 'o']);
});

test('a copy rewrites link i to a click token for link i, adds the pixel and RFC 8058 headers', () => {
  const tracker = createTracker({ publicBaseUrl: BASE, keys: [{ id: 'k1', secret: new Uint8Array(secret) }], signWith: 'k1', bounceDomain: 'bounce.shop.example' });
  const msgId = newId(NOW_MS);
  const copy = tracker.copy(prepareTemplate(HTML, 3), { account: 'acme', msgId, idx: 4, issuedAt: 1000 });
  const html = copy.html as string;
  assert.not.match(html, 'https://shop.example/a', 'the original URL is gone from the href');
  assert.match(html, '<a href="mailto:help@shop.example">', 'mailto untouched');
  assert.match(html, '<a href="#top">', 'anchor untouched');
  const clicks = [...html.matchAll(/href=["']https:\/\/t\.shop\.example\/c\/([A-Za-z0-9_-]+)["']/g)].map((m) => codec.verify(m[1] as string, NOW_MS));
  assert.equal(clicks.map((p) => p?.link), [0, 1, 2]);
  for (const p of clicks) assert.equal({ ...p, link: 0 }, { kind: 'c', account: 'acme', msgId, idx: 4, link: 0, issuedAt: 1000 });
  const pixel = /<img src="https:\/\/t\.shop\.example\/o\/([A-Za-z0-9_-]+)\.gif" width="1" height="1" alt="" style="display:none"><\/body>/.exec(html);
  assert.ok(pixel, 'pixel right before </body>');
  assert.equal(codec.verify(pixel[1] as string, NOW_MS), { kind: 'o', account: 'acme', msgId, idx: 4, issuedAt: 1000 });

  const lu = copy.headers['List-Unsubscribe'] as string;
  const m = /^<https:\/\/t\.shop\.example\/u\/([A-Za-z0-9_-]+)>, <mailto:([^>]+)>$/.exec(lu);
  assert.ok(m, lu);
  assert.equal(codec.verify(m[1] as string, NOW_MS), { kind: 'u', account: 'acme', msgId, idx: 4, issuedAt: 1000 });
  assert.is(m[2], unsubscribeAddress(m[1] as string, 'bounce.shop.example'), 'the mailto form is the one the feedback MX parses');
  assert.is(copy.headers['List-Unsubscribe-Post'], 'List-Unsubscribe=One-Click');

  // With the recipient's address: sealed into the https token only; the older mailto form's local
  // part stays a token without it, under RFC 5321's 64 octets.
  const sealed = /^<https:\/\/t\.shop\.example\/u\/([A-Za-z0-9_-]+)>, <mailto:([^>]+)>$/.exec(tracker.urls({ account: 'acme', msgId, idx: 4, issuedAt: 1000, address: 'reader@example.org' }).headers['List-Unsubscribe'] as string);
  assert.ok(sealed);
  assert.equal(codec.verify(sealed[1] as string, NOW_MS), { kind: 'u', account: 'acme', msgId, idx: 4, issuedAt: 1000, address: 'reader@example.org' });
  assert.is(sealed[2], m[2], 'the same mailto address as without it');
  assert.ok((sealed[2] as string).indexOf('@') <= 64);
});

test('the renderer gives each recipient a copy with its own tokens, signed with both headers in h=', async () => {
  const msgId = newId(NOW_MS);
  const s = spec(msgId);
  const copies = [];
  for (const idx of [0, 1]) {
    const r = ok(await render(task(msgId, s, idx)));
    const raw = Buffer.from(r.message);
    const [v] = await verifyWithMailauth(raw, table);
    assert.ok(v?.pass, v?.detail);
    const dkim = /^DKIM-Signature:[\s\S]*?(?=\r\n\S)/m.exec(raw.toString('latin1'))?.[0].replace(/\s+/g, '') ?? '';
    assert.match(dkim, /h=[^;]*list-unsubscribe:list-unsubscribe-post/i);
    const parsed = await simpleParser(raw);
    assert.match(raw.toString('latin1'), /^List-Unsubscribe:\s+<https:\/\/t\.shop\.example\/u\/[A-Za-z0-9_-]+>,\s+<mailto:unsubscribe-[A-Za-z0-9_-]+@bounce\.shop\.example>\r\n(?=\S)/m);
    assert.not.match(raw.toString('latin1'), 'sender.example/own', "the sender's own List-Unsubscribe gave way");
    assert.is(parsed.headers.get('x-campaign'), 'c1', 'other headers stay');
    const header = raw.toString('latin1', 0, raw.indexOf('\r\n\r\n')).replace(/\r\n\s+/g, ' ');
    const found = tokensIn(String(parsed.html) + header);
    assert.equal(found.map((f) => f.path).sort(), ['c', 'c', 'c', 'o', 'u'], '3 clicks, the pixel, the unsubscribe URL');
    for (const f of found) assert.equal([f.payload?.msgId, f.payload?.idx, f.payload?.account], [msgId, idx, 'acme']);
    assert.match(String(parsed.text), 'https://shop.example/plain', 'the text part is not rewritten');
    copies.push(raw.toString('latin1'));
  }
  assert.is.not(copies[0], copies[1]);
});

test('a batch (render.many) composes every copy before signing: same copies as one by one, in order, a bad task failing alone', async () => {
  const msgId = newId(NOW_MS);
  const s = spec(msgId);
  const bad = { ...task(msgId, s, 9), tracking: { account: 'acme', idx: -1, mode: 'full' } } as unknown as RenderTask;
  const results = await render.many([task(msgId, s, 0), bad, task(msgId, s, 1), { ...task(msgId, s, 2), signingDomain: 'unknown.example' }]);
  assert.is(results.length, 4);
  assert.is(results[1]?.ok, false, 'the malformed task fails, the others do not');
  for (const [i, idx] of [[0, 0], [2, 1]] as const) {
    const raw = Buffer.from(ok(results[i] as RenderResult).message);
    const [v] = await verifyWithMailauth(raw, table);
    assert.ok(v?.pass, v?.detail);
    // The same message as rendering that copy alone (the clock is fixed, so tokens and Date agree);
    // only the signature's own time (t=, and so b=) and the random MIME boundary may differ.
    const unsignedPart = (m: Buffer): string =>
      m.toString('latin1').replace(/^DKIM-Signature:.*(?:\r\n[ \t].*)*\r\n/m, '').replace(/_NmP-[0-9a-f]+-Part/g, 'B');
    assert.is(unsignedPart(raw), unsignedPart(Buffer.from(ok(await render(task(msgId, s, idx))).message)), `copy ${idx}`);
  }
  // A domain without a key is sent unsigned, as one by one.
  const unsigned = ok(results[3] as RenderResult);
  assert.equal(unsigned.signatures, []);
  assert.not.match(Buffer.from(unsigned.message).toString('latin1'), /^DKIM-Signature:/m);
});

test("anonymous mode renders the same mechanics; mode 'off' and a spec without a link table get only their recipient's List-Unsubscribe", async () => {
  const msgId = newId(NOW_MS);
  const anon = ok(await render(task(msgId, spec(msgId), 2, 'anonymous')));
  assert.match(Buffer.from(anon.message).toString('latin1'), /^List-Unsubscribe-Post: List-Unsubscribe=One-Click/m);

  for (const [id, s, mode] of [
    [msgId, spec(msgId), 'off'],
    [newId(NOW_MS), (({ tracking: _, ...rest }) => rest)(spec(msgId)), 'full'],
  ] as const) {
    const copies = [0, 1].map(async (idx) => Buffer.from(ok(await render(task(id, { ...s, messageId: `<${id}@mta.shop.example>` }, idx, mode))).message).toString('latin1'));
    for (const [idx, text] of (await Promise.all(copies)).entries()) {
      const body = text.slice(text.indexOf('\r\n\r\n'));
      assert.not.match(body, 't.shop.example', `${mode}: no pixel and no click URL in the body`);
      assert.match(body, 'https://shop.example/a', `${mode}: the links are the sender's own`);
      assert.not.match(text, 'sender.example/own', "the sender's own List-Unsubscribe gives way");
      assert.match(text, /^List-Unsubscribe-Post: List-Unsubscribe=One-Click/m);
      const tokens = tokensIn(text);
      assert.ok(tokens.length > 0 && tokens.every((t) => t.path === 'u'), `${mode}: only unsubscribe tokens`);
      assert.equal(tokens[0]?.payload, { kind: 'u', account: 'acme', msgId: id, idx, issuedAt: tokens[0]?.payload?.issuedAt }, `${mode}: the token names recipient ${idx}`);
    }
  }
});

test('a malformed tracking target or spec.tracking fails the task instead of the worker', async () => {
  const msgId = newId(NOW_MS);
  const bad = { ...task(msgId, spec(msgId), 0), tracking: { account: 'acme', idx: -1, mode: 'full' } } as RenderTask;
  const r1 = await render(bad);
  assert.equal([r1.ok, !r1.ok && r1.code], [false, 'SLUICE_RENDER_FAILED']);
  const r2 = await render(task(msgId, { ...spec(msgId), tracking: { links: 'x' } } as unknown as MessageSpec, 0));
  assert.equal([r2.ok, !r2.ok && r2.code], [false, 'SLUICE_RENDER_FAILED']);
});

test.run();
