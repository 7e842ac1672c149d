import { randomBytes } from 'node:crypto';
import { simpleParser, type ParsedMail } from 'mailparser';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { isSluiceError, type FieldError } from '../../src/core/errors.js';
import { newId } from '../../src/core/ids.js';
import { createTokenCodec, type TokenCodec, type TokenPayload } from '../../src/core/tokens.js';
import { unsubscribeAddress } from '../../src/feedback/recipients.js';
import { MAX_EXPRESSION_CHARS, MAX_EXPRESSIONS, MAX_NESTING, prepareCampaign, type CampaignInput } from '../../src/render/campaign.js';
import type { CampaignTemplate, RenderResult, RenderTask, TrackingMode, WorkerInit } from '../../src/render/protocol.js';
import { createRenderer, type RenderFn } from '../../src/render/renderer.js';
import { makeKey, txtTable, verifyWithDkimpy, verifyWithMailauth, type TestKey } from '../helpers/dkim-verify.js';

const test = suite('render/campaign');

const BASE = 'https://t.shop.example';
const NOW_MS = Date.UTC(2025, 6, 1, 9, 5, 0);
const HTML = [
  '<html><body>',
  '<h1>Hello {{first}}!</h1>',
  '<p>{{bio}}</p>',
  '<a href="https://shop.example/a?x=1&amp;y=2">Spring sale</a>',
  '<a href="https://shop.example/p/{{sku}}">your pick</a>',
  '{{!-- <a href="https://old.example/">old</a> </body> --}}',
  '<a href="mailto:help@shop.example">help</a>',
  "<a href='https://shop.example/b'>B</a>",
  '</body></html>',
].join('\n');

let secret: Buffer;
let codec: TokenCodec;
let rsa: TestKey;
let ed: TestKey;
let table: Record<string, string>;
let init: WorkerInit;
let render: RenderFn;

test.before(() => {
  secret = randomBytes(32);
  codec = createTokenCodec({ keys: [{ id: 'k1', secret }], signWith: 'k1' });
  rsa = makeKey('shop.example', 'r1', 'rsa');
  ed = makeKey('shop.example', 'e1', 'ed25519');
  table = txtTable([rsa, ed]);
  init = {
    keys: [rsa, ed],
    hostname: 'mta.shop.example',
    tracking: { publicBaseUrl: BASE, keys: [{ id: 'k1', secret: secret.toString('base64') }], signWith: 'k1', bounceDomain: 'bounce.shop.example' },
  };
  render = createRenderer(init, { now: () => NOW_MS });
});

function campaign(over: Partial<CampaignInput> = {}): CampaignTemplate {
  return prepareCampaign({ from: { name: 'Shop', address: 'news@shop.example' }, subject: 'Hi {{first}}, our {{season}} picks', html: HTML, tracking: { opens: true, clicks: true }, ...over }).template;
}

function task(id: string, t: CampaignTemplate, no: number, fields: Record<string, string>, mode: TrackingMode = 'full'): RenderTask {
  return {
    msgId: id,
    kind: 'campaign',
    source: JSON.stringify(t),
    signingDomain: 'shop.example',
    acceptedAt: NOW_MS,
    campaign: { recipient: { no, address: `reader${no}@example.org`, fields }, account: 'acme', mode },
  };
}

function ok(r: RenderResult): Extract<RenderResult, { ok: true }> {
  if (!r.ok) throw new Error(`render failed: ${r.code} ${r.message}`);
  return r;
}

async function copy(t: RenderTask): Promise<{ raw: Buffer; mail: ParsedMail; header: string }> {
  const raw = Buffer.from(ok(await render(t)).message);
  const header = raw.toString('latin1', 0, raw.indexOf('\r\n\r\n')).replace(/\r\n[ \t]+/g, ' ');
  return { raw, mail: await simpleParser(raw), header };
}

/** Every tracking URL in the text, with its verified payload. */
function tokensIn(text: string): { path: string; payload: TokenPayload | null }[] {
  return [...text.matchAll(/https:\/\/t\.shop\.example\/([ocu])\/([A-Za-z0-9_-]+)/g)].map((m) => ({ path: m[1] as string, payload: codec.verify(m[2] as string, NOW_MS) }));
}

function invalid(input: Partial<CampaignInput>): FieldError[] {
  try {
    prepareCampaign({ from: { address: 'news@shop.example' }, subject: 'ok', tracking: { opens: true, clicks: true }, ...input });
  } catch (err) {
    if (isSluiceError(err, 'SLUICE_TEMPLATE_INVALID')) return [...err.errors];
    throw err;
  }
  throw new Error('the campaign was accepted');
}

test('preparation extracts the trackable links once: literal http(s) hrefs only, not merged, mailto or commented-out ones', () => {
  const { template, links } = prepareCampaign({ from: { address: 'news@shop.example' }, subject: 's', html: HTML, tracking: { opens: true, clicks: true } });
  assert.equal(links, ['https://shop.example/a?x=1&y=2', 'https://shop.example/b']);
  assert.equal(template.links, links);
  const html = template.html as string;
  assert.match(html, '<a href="\uE000c0\uE000">Spring sale</a>');
  assert.match(html, "<a href='\uE000c1\uE000'>B</a>");
  assert.match(html, '<a href="https://shop.example/p/{{sku}}">', 'a merged URL is left as it is');
  assert.match(html, 'https://old.example/', 'the comment is untouched');
  assert.ok(html.endsWith('\uE000p\uE000</body></html>'), 'pixel before the real </body>, not the one in the comment');
  assert.is(JSON.parse(JSON.stringify(template)).html, html, 'plain JSON');

  const untracked = prepareCampaign({ from: { address: 'news@shop.example' }, subject: 's', html: HTML, tracking: { opens: false, clicks: false } });
  assert.equal(untracked.links, []);
  assert.not.match(untracked.template.html as string, '\uE000');
});

test('html comments and raw text are not markup to preparation either; a {{!-- comment --}} holding "<!--" hides nothing', () => {
  const html = [
    '<html><body>{{!-- <!-- --}}',
    '<a href="https://shop.example/a">A</a>',
    '<!-- <a href="https://old.example/">old</a> -->',
    '</body>',
    '<!-- </body> --><script>"</body>"</script></html>',
  ].join('\n');
  const { template, links } = prepareCampaign({ from: { address: 'news@shop.example' }, subject: 's', html, tracking: { opens: true, clicks: true } });
  assert.equal(links, ['https://shop.example/a']);
  assert.match(template.html as string, '<!-- <a href="https://old.example/">old</a> -->');
  assert.match(template.html as string, '\uE000p\uE000</body>\n<!-- </body> -->');
});

test('a template that does not compile is refused with path, line and column', () => {
  assert.equal(invalid({ html: '<p>\n  Hello {{first}\n</p>' }), [{ path: 'html', message: "syntax error: found an invalid character where '}}', a name, '}}}', ')', … was expected", line: 2, column: 16 }]);
  const [mismatch] = invalid({ text: 'a\n{{#if vip}}\nyes\n{{/each}}' });
  assert.equal([mismatch?.path, mismatch?.message, mismatch?.line, mismatch?.column], ['text', "if doesn't match each", 2, 4]);
  assert.equal(invalid({ text: 'x', subject: 'Hi {{first' })[0]?.path, 'subject');
  assert.equal(invalid({ text: 'x\n  {{shout first}}' }), [{ path: 'text', message: "unknown helper 'shout'", line: 2, column: 3 }]);
  assert.equal(invalid({ html: '<p>{{> footer}}</p>' }), [{ path: 'html', message: 'partials are not supported', line: 1, column: 4 }]);
  assert.equal(invalid({ html: '{{#each this}}{{#each this}}x{{/each}}{{/each}}' })[0]?.message, '{{#each}} may not be nested more than 1 deep');
  assert.equal(invalid({ html: '{{log first}}' })[0]?.message, "unknown helper 'log'", 'no writing to the worker stderr');
});

test('a template too complex to check quickly is refused before the parser runs; at the limits it compiles', () => {
  // Handlebars parses and compiles on the ingress thread: 1 MB of {{first}} kept it busy ~60 s, and
  // nesting of a few thousand overflowed the stack (a 500).
  assert.equal(invalid({ html: '<p>{{first}}</p>'.repeat(60_000) }), [{ path: 'html', message: `at most ${MAX_EXPRESSIONS} template expressions ({{…}}), found 60000` }]);
  assert.equal(invalid({ text: `{{lookup this "${'x'.repeat(MAX_EXPRESSION_CHARS)}"}}` })[0]?.message, `at most ${MAX_EXPRESSION_CHARS} characters of template expressions ({{…}}) in all`);
  assert.equal(invalid({ text: `{{lookup ${'(lookup this '.repeat(3_000)}"a"${')'.repeat(3_000)} "b"}}` })[0]?.message, `sub-expressions may not be nested more than ${MAX_NESTING} deep`);
  // An expression left open is read to the end by the parser before it fails: it counts as one.
  assert.equal(invalid({ html: `<p>{{first}}</p>{{lookup this ${'a '.repeat(100_000)}` })[0]?.message, `at most ${MAX_EXPRESSION_CHARS} characters of template expressions ({{…}}) in all`);
  assert.equal(invalid({ text: `{{lookup ${'(lookup this '.repeat(3_000)}` })[0]?.message, `sub-expressions may not be nested more than ${MAX_NESTING} deep`);
  // A long comment that never closes is one open expression, found with one search: checking
  // '{{!-- }}' × 125,000 (1 MB) took ~45 s when each unclosed comment rescanned the rest of the text.
  assert.equal(invalid({ html: '{{!-- }}'.repeat(125_000) })[0]?.message, `at most ${MAX_EXPRESSION_CHARS} characters of template expressions ({{…}}) in all`);
  assert.equal(invalid({ html: '{{! a comment }}<p>x</p>'.repeat(MAX_EXPRESSIONS + 1) })[0]?.message, `at most ${MAX_EXPRESSIONS} template expressions ({{…}}), found ${MAX_EXPRESSIONS + 1}`);
  const nested = (n: number) => `${'{{#if vip}}\n'.repeat(n)}x${'{{/if}}'.repeat(n)}`;
  assert.equal(invalid({ html: nested(MAX_NESTING + 1) }), [{ path: 'html', message: `blocks and sub-expressions may not be nested more than ${MAX_NESTING} deep`, line: MAX_NESTING + 1, column: 1 }]);
  assert.equal(invalid({ html: `{{#if a}}${'{{else if b}}'.repeat(MAX_NESTING)}{{/if}}` })[0]?.message, `blocks and sub-expressions may not be nested more than ${MAX_NESTING} deep`);
  // A comment is one token, however long: not counted.
  assert.ok(prepareCampaign({ from: { address: 'news@shop.example' }, subject: 's', tracking: { opens: true, clicks: true }, html: `{{!-- ${'{{x}} '.repeat(5_000)} --}}<p>{{first}}</p>` }).template.html);
  assert.ok(prepareCampaign({ from: { address: 'news@shop.example' }, subject: 's', tracking: { opens: true, clicks: true }, html: nested(MAX_NESTING) + '{{first}}'.repeat(MAX_EXPRESSIONS - 2 * MAX_NESTING) }).template.html);
});

test('every invalid field is reported at once, by path', () => {
  const errors = invalid({ from: { address: 'not an address' }, subject: 'a\r\nBcc: x@y.example', headers: { 'List-Unsubscribe': '<https://x>', 'X-Ok': 'fine', 'Bad Name': 'v', 'X-Split': 'a\r\nb' } });
  assert.equal(errors.map((e) => e.path).sort(), ['from.address', 'headers.Bad Name', 'headers.List-Unsubscribe', 'headers.X-Split', 'html', 'subject']);
  assert.match(errors.find((e) => e.path === 'html')?.message ?? '', 'needs html or text');
});

test('each copy gets its own merge values; fields are escaped in html and raw in text; missing ones render empty', async () => {
  const id = newId(NOW_MS);
  const t = campaign({ text: 'Hi {{first}} — {{bio}} — [{{nickname}}] {{sku}}' });
  const a = await copy(task(id, t, 0, { first: 'Ada', bio: '<script>alert(1)</script>', sku: 'A1', season: 'spring' }));
  const b = await copy(task(id, t, 1, { first: 'Grace', bio: 'Tom & "Jerry"', sku: 'B2', season: 'summer' }));
  assert.is(a.mail.subject, 'Hi Ada, our spring picks');
  assert.is(b.mail.subject, 'Hi Grace, our summer picks');
  assert.equal(a.mail.to && !Array.isArray(a.mail.to) ? a.mail.to.value[0]?.address : null, 'reader0@example.org');
  const html = String(a.mail.html);
  assert.match(html, '<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>');
  assert.not.match(html, '<script>');
  assert.match(String(b.mail.html), '<p>Tom &amp; &quot;Jerry&quot;</p>');
  assert.match(html, '<a href="https://shop.example/p/A1">', 'merged URL');
  assert.is(String(a.mail.text).trim().split('\n')[0], 'Hi Ada — <script>alert(1)</script> — [] A1', 'text is not HTML-escaped; the missing nickname is empty');
  assert.match(String(b.mail.text), 'Tom & "Jerry"');
});

test('templates cannot reach prototypes, and a contact cannot override email or unsubscribe_url', async () => {
  const id = newId(NOW_MS);
  const t = campaign({ html: '<p>[{{constructor}}][{{constructor.name}}][{{__proto__}}][{{first.constructor}}][{{first.toString}}][{{email}}]</p><a href="{{unsubscribe_url}}">u</a>' });
  const { mail } = await copy(task(id, t, 3, { first: 'Ada', email: 'spoof@evil.example', unsubscribe_url: 'https://evil.example/' }));
  const html = String(mail.html);
  assert.match(html, '<p>[][][][][][reader3@example.org]</p>');
  assert.not.match(html, 'evil.example');
});

test('links get per-recipient click tokens for link i, the pixel its open token, List-Unsubscribe its own; tokens decode to campaign and contact', async () => {
  const id = newId(NOW_MS);
  const { mail, header } = await copy(task(id, campaign(), 42, { first: 'Ada', sku: 'A1' }));
  const html = String(mail.html);
  const clicks = [...html.matchAll(/href=["']https:\/\/t\.shop\.example\/c\/([A-Za-z0-9_-]+)["']/g)].map((m) => codec.verify(m[1] as string, NOW_MS));
  assert.equal(clicks, [0, 1].map((link) => ({ kind: 'c', account: 'acme', msgId: id, idx: 42, link, issuedAt: NOW_MS / 1000 })));
  const pixel = /<img src="https:\/\/t\.shop\.example\/o\/([A-Za-z0-9_-]+)\.gif" width="1" height="1" alt="" style="display:none"><\/body>/.exec(html);
  assert.ok(pixel, 'the pixel sits right before </body>');
  assert.equal(codec.verify(pixel[1] as string, NOW_MS), { kind: 'o', account: 'acme', msgId: id, idx: 42, issuedAt: NOW_MS / 1000 });

  const lu = /^List-Unsubscribe: <https:\/\/t\.shop\.example\/u\/([A-Za-z0-9_-]+)>, <mailto:([^>]+)>$/m.exec(header);
  assert.ok(lu, header);
  assert.equal(codec.verify(lu[1] as string, NOW_MS), { kind: 'u', account: 'acme', msgId: id, idx: 42, issuedAt: NOW_MS / 1000 });
  assert.is(lu[2], unsubscribeAddress(lu[1] as string, 'bounce.shop.example'), 'the mailto form is the one the feedback MX parses');
  assert.match(header, /^List-Unsubscribe-Post: List-Unsubscribe=One-Click$/m);
  assert.match(header, new RegExp(`^Feedback-ID: ${id}:acme:sluice$`, 'm'));
  assert.match(header, new RegExp(`^Message-ID: <${id}\\.42@mta\\.shop\\.example>$`, 'm'));
});

test('the footer is added (html and text) when the template has no unsubscribe link, and not when it has one', async () => {
  const id = newId(NOW_MS);
  const footed = await copy(task(id, campaign({ html: '<html><body><p>Hi {{first}}</p></body></html>' }), 1, { first: 'Ada' }));
  const unsub = /<https:\/\/t\.shop\.example\/u\/([A-Za-z0-9_-]+)>/.exec(footed.header)?.[1] as string;
  const html = String(footed.mail.html);
  assert.match(html, `Don&#39;t want these emails? <a href="${BASE}/u/${unsub}" style="color:#6b7280">Unsubscribe</a></p><img`);
  assert.match(String(footed.mail.text), `Unsubscribe [${BASE}/u/${unsub}]`, 'the derived text carries it');

  const given = await copy(task(id, campaign({ html: '<p>Hi</p>', text: 'Hi {{first}}' }), 1, { first: 'Ada' }));
  assert.match(String(given.mail.text), `Hi Ada\n\n--\nTo stop receiving these emails, unsubscribe: ${BASE}/u/`);

  // Its own link, inside a block: the helper works at any depth, and nothing is added.
  const own = campaign({
    html: '<html><body>{{#with first}}<a href="{{unsubscribe_url}}">Leave, {{this}}</a>{{/with}}</body></html>',
    text: 'Bye: {{@unsubscribe_url}}',
  });
  const mine = await copy(task(id, own, 2, { first: 'Ada' }));
  const text = String(mine.mail.text);
  assert.is((String(mine.mail.html).match(/\/u\//g) ?? []).length, 1, 'one unsubscribe link in the html');
  assert.match(String(mine.mail.html), /<a href="https:\/\/t\.shop\.example\/u\/[A-Za-z0-9_-]+">Leave, Ada<\/a>/);
  assert.is(text.trim(), `Bye: ${BASE}/u/${/\/u\/([A-Za-z0-9_-]+)/.exec(text)?.[1]}`);
  assert.not.match(text, 'To stop receiving');
});

test('the text part is generated from the html: prose, blocks and merge values kept, links with their original target', async () => {
  const t = campaign({
    html: '<html><body><h1>News for {{first}}</h1><ul>{{#each this}}<li>{{@key}}</li>{{/each}}</ul><p>Read <a href="https://shop.example/story">the story</a>.</p><img src="https://cdn.example/x.png" alt="banner"></body></html>',
  });
  assert.ok(t.text !== null && t.text.includes('{{first}}'), 'derived once, at preparation, as a template');
  const { mail } = await copy(task(newId(NOW_MS), t, 5, { first: 'Ada', city: 'Paris' }));
  const text = String(mail.text);
  assert.match(text, 'News for Ada');
  assert.match(text, /\* first\n \* city\n \* email\n \* unsubscribe_url/);
  assert.match(text, 'Read the story [https://shop.example/story].', 'the original link, not the click URL');
  assert.not.match(text, '/c/');
  assert.not.match(text, 'banner');
  assert.match(String(mail.html), `${BASE}/c/`, 'while the html link is tracked');
});

test('an html whose syntax html-to-text would unbalance is converted per copy instead', async () => {
  // The block opens inside an attribute that the text conversion drops and closes in text.
  const t = campaign({ html: '<html><body><p class="{{#if vip}}gold">VIP {{first}}</p><p>{{/if}}Hello {{first}}</p></body></html>' });
  assert.is(t.text, null);
  const { mail } = await copy(task(newId(NOW_MS), t, 6, { first: 'Ada', vip: 'yes' }));
  assert.match(String(mail.text), 'VIP Ada');
  assert.match(String(mail.text), 'Hello Ada');
});

test('both DKIM signatures verify with mailauth and dkimpy; List-Unsubscribe, List-Unsubscribe-Post and Feedback-ID are in h=', async () => {
  const id = newId(NOW_MS);
  const copies: Buffer[] = [];
  for (const [no, mode] of [[0, 'full'], [1, 'off']] as const) {
    const r = ok(await render(task(id, campaign(), no, { first: 'Ré', season: 'été' }, mode)));
    assert.equal(r.signatures, ['rsa', 'ed25519']);
    copies.push(Buffer.from(r.message));
  }
  const dkimpy = await verifyWithDkimpy(copies, table);
  for (const [i, raw] of copies.entries()) {
    const mailauth = await verifyWithMailauth(raw, table);
    assert.equal(mailauth.map((v) => [v.algo, v.pass]), [['rsa-sha256', true], ['ed25519-sha256', true]], JSON.stringify(mailauth));
    assert.equal(dkimpy[i]?.map((v) => v.pass), [true, true], JSON.stringify(dkimpy[i]));
    const signatures = [...raw.toString('latin1').matchAll(/^DKIM-Signature:[\s\S]*?(?=\r\n\S)/gm)].map((m) => m[0].replace(/\s+/g, ''));
    assert.is(signatures.length, 2);
    for (const s of signatures) {
      const h = /;h=([^;]*);/.exec(s)?.[1]?.split(':') ?? [];
      for (const name of ['from', 'to', 'subject', 'message-id', 'list-unsubscribe', 'list-unsubscribe-post', 'feedback-id']) assert.ok(h.includes(name), `${name} in h=${h.join(':')}`);
    }
  }
});

test("tracking mode 'off' sends the original links and no pixel, but keeps one-click List-Unsubscribe", async () => {
  const id = newId(NOW_MS);
  const { mail, header } = await copy(task(id, campaign(), 7, { first: 'Ada', sku: 'A1' }, 'off'));
  const html = String(mail.html);
  assert.equal(tokensIn(html).map((t) => t.path), ['u'], 'only the footer unsubscribe link');
  assert.match(html, '<a href="https://shop.example/a?x=1&#38;y=2">Spring sale</a>');
  assert.match(html, "<a href='https://shop.example/b'>B</a>");
  assert.not.match(html, '<img');
  assert.equal(tokensIn(header).map((t) => [t.path, t.payload?.idx]), [['u', 7]]);
  assert.match(header, /^List-Unsubscribe-Post: List-Unsubscribe=One-Click$/m);
  assert.match(header, /^Feedback-ID: /m);
});

test('a template edited under the same campaign id is compiled again', async () => {
  const id = newId(NOW_MS);
  const first = await copy(task(id, campaign({ html: '<p>one {{first}}</p>' }), 0, { first: 'Ada' }));
  const second = await copy(task(id, campaign({ html: '<p>two {{first}}</p>' }), 1, { first: 'Ada' }));
  assert.match(String(first.mail.html), 'one Ada');
  assert.match(String(second.mail.html), 'two Ada');
});

test('bad campaign tasks fail the task, never the worker; without token keys no copy goes out', async () => {
  const id = newId(NOW_MS);
  const t = campaign();
  const noTarget = { ...task(id, t, 0, {}), campaign: undefined } as RenderTask;
  const badFields = { ...task(id, t, 0, {}), campaign: { recipient: { no: 0, address: 'a@example.org', fields: { x: 1 } }, account: 'acme', mode: 'full' } } as unknown as RenderTask;
  const badAccount = { ...task(id, t, 0, {}), campaign: { recipient: { no: 0, address: 'a@example.org', fields: {} }, account: 'a:b', mode: 'full' } } as RenderTask;
  const corrupt = { ...task(id, t, 0, {}), source: '{"v":1' };
  const future = { ...task(id, t, 0, {}), source: JSON.stringify({ ...t, v: 2 }) };
  const badAddress = task(id, t, 0, {});
  (badAddress.campaign as { recipient: { address: string } }).recipient.address = 'no address';
  for (const bad of [noTarget, badFields, badAccount, corrupt, future, badAddress]) {
    const r = await render(bad);
    assert.equal([r.ok, !r.ok && r.code], [false, 'SLUICE_RENDER_FAILED']);
  }
  const untracked = createRenderer({ keys: init.keys, hostname: init.hostname });
  const r = await untracked(task(id, t, 0, {}));
  assert.equal([r.ok, !r.ok && r.code, !r.ok && /tracking keys/.test(r.message)], [false, 'SLUICE_RENDER_FAILED', true]);
  ok(await render(task(id, t, 0, { first: 'still fine' })));
});

test.run();
