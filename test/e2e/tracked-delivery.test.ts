import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { request } from 'undici';
import { loadConfig, merge } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import { startSluice, type RunningSluice } from '../../src/app/start.js';
import { createTokenCodec, type TokenCodec } from '../../src/core/tokens.js';
import { suppressionOf } from '../../src/store/suppression.js';
import { parseUnsubscribeMailto } from '../../src/core/verp.js';
import { createList } from '../../src/store/contacts.js';
import { importContacts } from '../../src/store/contact-import.js';
import { recordEnqueuePlan } from '../../src/store/campaigns.js';
import { pushCampaignChunk } from '../../src/queue/campaign.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer, type CapturedMessage } from '../helpers/smtp-peer.js';
import { makeAccount, type AccountKeys } from '../helpers/sluice.js';
import { txtTable, verifyWithMailauth } from '../helpers/dkim-verify.js';

/**
 * Tracking in delivered API mail, end to end: ingress stores the link table, the render worker
 * rewrites links, adds the pixel and the RFC 8058 headers and DKIM-signs them, the message is
 * delivered to a capture peer, and the real tracking server redirects the clicks and honours the
 * one-click POST. Three accounts: 'acme' (tracking full), 'quiet' (tracking off) and 'anon' (anonymous).
 */
const test = suite('e2e/tracked-delivery');

const BOUNCE_DOMAIN = 'bounce.sluice.test';
const PUBLIC_BASE = 'http://127.0.0.1';
const LINKS = ['https://acme.example/one?a=1&b=2', 'https://acme.example/two', 'http://elsewhere.example/three#x'];
const HTML = `<html><body><h1>News</h1>
<p><a href="https://acme.example/one?a=1&amp;b=2">One</a> and <a class="b" href='https://acme.example/two'>two</a>.</p>
<p><a href="mailto:help@acme.example">Write to us</a> · <a href="#top">top</a></p>
<p><a href="http://elsewhere.example/three#x">Three</a></p>
</body></html>`;

let redis: TestRedis;
let sink: CapturePeer;
let app: RunningSluice;
let dir: string;
let codec: TokenCodec;
let acme: AccountKeys;
let quiet: AccountKeys;
let anon: AccountKeys;
let txt: Record<string, string>;
/** The configuration as given (before loading), for a reload. */
let raw: Record<string, unknown>;

test.before(async () => {
  redis = await startRedis();
  sink = await startCapturePeer();
  dir = mkdtempSync(join(tmpdir(), 'sluice-tracked-'));
  const secret = randomBytes(32);
  writeFileSync(join(dir, 'k1.key'), secret, { mode: 0o600 });
  codec = createTokenCodec({ keys: [{ id: 'k1', secret }], signWith: 'k1' });
  // A folder each: makeAccount names key files by selector, which the two accounts share.
  acme = await makeAccount(mkdtempSync(join(dir, 'acme-')), 'acme', 'acme.example');
  quiet = await makeAccount(mkdtempSync(join(dir, 'quiet-')), 'quiet', 'quiet.example', ['rsa']);
  anon = await makeAccount(mkdtempSync(join(dir, 'anon-')), 'anon', 'anon.example', ['ed25519']);
  txt = txtTable([...acme.dkimKeys, ...quiet.dkimKeys, ...anon.dkimKeys]);
  raw = {
    roles: ['ingress', 'delivery', 'tracking', 'housekeeping'],
    instance: { hostname: 'sluice.test', dataDir: dir },
    log: { level: 'silent' },
    redis: { url: redis.url, prefix: redis.fresh().prefix, scheduleShards: 4 },
    admin: { host: '127.0.0.1', port: 0 },
    ingress: { smtp: { enabled: false }, http: { host: '127.0.0.1', port: 0 } },
    delivery: { bounceDomain: BOUNCE_DOMAIN, pollInterval: '50ms', pool: { threads: 1 }, dns: { servers: ['127.0.0.1:9'], timeout: '1s' }, transport: { 'one.test': `${sink.host}:${sink.port}` } },
    tracking: { host: '127.0.0.1', port: 0, publicBaseUrl: PUBLIC_BASE, keys: [{ id: 'k1', secretFile: join(dir, 'k1.key'), notAfter: null }], signWith: 'k1' },
    accounts: [acme.account, { ...quiet.account, tracking: { mode: 'off', anonymizeIp: 'none' } }, { ...anon.account, tracking: { mode: 'anonymous', anonymizeIp: 'drop' } }],
  };
  const config = loadConfig({ env: {}, overrides: raw });
  app = await startSluice(config, { logger: createLogger(process.env['TEST_LOG'] ?? 'silent') });
});

test.after(async () => {
  await app?.stop(2000);
  await sink?.close();
  await redis?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function api(as: AccountKeys, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await request(`http://127.0.0.1:${app.ports.http}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${as.apiKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.statusCode, body: await res.body.json() };
}

async function sendAndWait(as: AccountKeys, from: string, to: string, html = HTML): Promise<{ id: string; state: string }> {
  const r = await api(as, '/v1/messages', { from, to, subject: 'News', text: 'Plain https://acme.example/plain', html });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const id = r.body.id as string;
  // Count-bounded: 300 polls of 50 ms.
  for (let i = 0; i < 300; i++) {
    const s = await api(as, `/v1/messages/${id}`);
    const state = s.body?.recipients?.[0]?.state as string | undefined;
    if (state && ['delivered', 'bounced', 'expired', 'suppressed'].includes(state)) return { id, state };
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`message ${id} did not reach a final state`);
}

async function deliveredCopy(as: AccountKeys, from: string, to: string, html = HTML): Promise<{ id: string; mail: CapturedMessage }> {
  const before = sink.messages.length;
  const { id, state } = await sendAndWait(as, from, to, html);
  assert.is(state, 'delivered');
  const [mail] = (await sink.waitFor(before + 1)).slice(before);
  assert.ok(mail);
  assert.equal(mail.envelope.to, [to]);
  return { id, mail };
}

/** The unfolded header block of a message. */
function headerOf(raw: Buffer): string {
  return raw.toString('latin1', 0, raw.indexOf('\r\n\r\n')).replace(/\r\n[ \t]+/g, ' ');
}

const trackingBase = () => `http://127.0.0.1:${app.ports.tracking}`;

test('a tracked message: every link rewritten, a pixel, both List-Unsubscribe headers, DKIM-signed; clicks redirect; one-click unsubscribes', async () => {
  const { id, mail } = await deliveredCopy(acme, 'News <news@acme.example>', 'reader@one.test');
  const parsed = await simpleParser(mail.raw);
  const html = String(parsed.html);

  // Links: the three http(s) links point at the tracking host, in order; mailto and #anchor stay.
  const hrefs = [...html.matchAll(/<a\b[^>]*?href=(["'])(.*?)\1/g)].map((m) => m[2] as string);
  assert.is(hrefs.length, 5);
  assert.is(hrefs[2], 'mailto:help@acme.example');
  assert.is(hrefs[3], '#top');
  const clicks = [hrefs[0], hrefs[1], hrefs[4]] as string[];
  for (const [i, href] of clicks.entries()) {
    assert.ok(href.startsWith(`${PUBLIC_BASE}/c/`), href);
    const p = codec.verify(href.slice(`${PUBLIC_BASE}/c/`.length), Date.now());
    assert.equal([p?.kind, p?.account, p?.msgId, p?.idx, p?.link], ['c', 'acme', id, 0, i]);
  }
  for (const url of LINKS) assert.not.ok(html.includes(url), `${url} no longer in the html`);

  // The pixel, right before </body>.
  const pixel = /<img src="http:\/\/127\.0\.0\.1\/o\/([A-Za-z0-9_-]+)\.gif" width="1" height="1" alt="" style="display:none"><\/body>/.exec(html);
  assert.ok(pixel, 'pixel before </body>');
  assert.is(codec.verify(pixel[1] as string, Date.now())?.kind, 'o');

  // RFC 8058 headers, both in h= of both signatures, which verify.
  const header = headerOf(mail.raw);
  const lu = /^List-Unsubscribe: <(http:\/\/127\.0\.0\.1\/u\/([A-Za-z0-9_-]+))>, <mailto:(u-[0-9a-z-]+@bounce\.sluice\.test)>$/m.exec(header);
  assert.ok(lu, header);
  const u = codec.verify(lu[2] as string, Date.now());
  assert.equal([u?.kind, u?.account, u?.msgId, u?.idx], ['u', 'acme', id, 0]);
  // The recipient's address rides sealed in the link (it works after the record's retention), unreadable in it.
  assert.is(u?.address, 'reader@one.test');
  assert.not.ok(Buffer.from(lu[2] as string, 'base64url').includes('reader'));
  // The mailto address: short (RFC 5321's 64-octet local part), tagged with the deployment's VERP key.
  const mailto = lu[3] as string;
  assert.ok(mailto.indexOf('@') <= 64, mailto);
  const verpKey = Buffer.from((await app.redis.client.get(app.keys.verpKey())) as string, 'base64');
  assert.equal(parseUnsubscribeMailto(mailto, verpKey), { msgId: id, idx: 0, domain: 'bounce.sluice.test' });
  assert.equal(parseUnsubscribeMailto(mailto.toUpperCase(), verpKey), { msgId: id, idx: 0, domain: 'bounce.sluice.test' }, 'case-insensitive');
  assert.match(header, /^List-Unsubscribe-Post: List-Unsubscribe=One-Click$/m);
  const verdicts = await verifyWithMailauth(mail.raw, txt);
  assert.equal(verdicts.map((v) => v.algo).sort(), ['ed25519-sha256', 'rsa-sha256']);
  for (const v of verdicts) assert.ok(v.pass, `${v.algo}: ${v.detail}`);
  const signed = [...header.matchAll(/^DKIM-Signature: .*$/gm)].map((m) => /\bh=([^;]+)/.exec(m[0].replace(/\s+/g, ''))?.[1]?.toLowerCase().split(':') ?? []);
  assert.is(signed.length, 2);
  for (const h of signed) {
    assert.ok(h.includes('list-unsubscribe'), h.join(':'));
    assert.ok(h.includes('list-unsubscribe-post'), h.join(':'));
  }

  // Following each rewritten link through the real tracking server leads to the original URL.
  for (const [i, href] of clicks.entries()) {
    const res = await request(href.replace(PUBLIC_BASE, trackingBase()), { headers: { 'user-agent': 'Mozilla/5.0 (Windows NT 10.0) Firefox/128.0' } });
    await res.body.text();
    assert.is(res.statusCode, 302);
    assert.is(res.headers['location'], LINKS[i]);
  }

  // One-click unsubscribe at the header's URL, with the body RFC 8058 prescribes.
  assert.is(await suppressionOf(app.redis.client, app.keys, 'acme', 'reader@one.test'), null);
  const post = await request((lu[1] as string).replace(PUBLIC_BASE, trackingBase()), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'List-Unsubscribe=One-Click',
  });
  await post.body.text();
  assert.is(post.statusCode, 200);
  assert.is((await suppressionOf(app.redis.client, app.keys, 'acme', 'reader@one.test'))?.reason, 'unsubscribe');

  const before = sink.messages.length;
  const next = await sendAndWait(acme, 'news@acme.example', 'reader@one.test');
  assert.is(next.state, 'suppressed');
  assert.is(sink.messages.length, before, 'nothing was sent to the unsubscribed reader');
});

test('character references in hrefs: the stored link table and the 302 Location are where a browser goes; a commented-out link stays as it is', async () => {
  const hrefs = [
    'https://acme.example/caf&eacute;?a=1&amp;b=2&AMP;c=3',
    'https://acme.example/?x=1&Amp;y=2&copy=3&copy;', // &Amp; is no reference; a legacy name then '=' stays literal
    'https://acme.example/&#0;&#xD800;&#x110000;&#x41', // invalid code points are U+FFFD, as in browsers
  ];
  const html = `<html><body>${hrefs.map((h, i) => `<a href="${h}">${i}</a>`).join(' ')}<!-- <a href="https://acme.example/old">old</a> --></body></html>`;
  const table = ['https://acme.example/café?a=1&b=2&c=3', 'https://acme.example/?x=1&Amp;y=2&copy=3©', 'https://acme.example/\uFFFD\uFFFD\uFFFDA'];
  const locations = ['https://acme.example/caf%C3%A9?a=1&b=2&c=3', 'https://acme.example/?x=1&Amp;y=2&copy=3%C2%A9', 'https://acme.example/%EF%BF%BD%EF%BF%BD%EF%BF%BDA'];
  const { id, mail } = await deliveredCopy(acme, 'news@acme.example', 'refs@one.test', html);
  assert.equal(await app.redis.client.lrange(app.keys.links(id), 0, -1), table);

  const copy = String((await simpleParser(mail.raw)).html);
  assert.match(copy, '<!-- <a href="https://acme.example/old">old</a> -->', 'the commented-out link is not rewritten');
  const clicks = [...copy.matchAll(/href="(http:\/\/127\.0\.0\.1\/c\/[A-Za-z0-9_-]+)"/g)].map((m) => m[1] as string);
  assert.is(clicks.length, 3);
  for (const [i, href] of clicks.entries()) {
    const res = await request(href.replace(PUBLIC_BASE, trackingBase()), { headers: { 'user-agent': 'Mozilla/5.0 (Windows NT 10.0) Firefox/128.0' } });
    await res.body.text();
    assert.is(res.statusCode, 302);
    assert.is(res.headers['location'], locations[i]);
  }
});

test('two recipients of one message get copies with their own tokens', async () => {
  const r = await api(acme, '/v1/messages', { from: 'news@acme.example', to: ['a@one.test', 'b@one.test'], subject: 'Two', html: HTML });
  assert.is(r.status, 202);
  const got = await sink.waitFor(sink.messages.length + 2, 15_000);
  const mine = got.filter((m) => headerOf(m.raw).includes(`<${r.body.id}@sluice.test>`));
  assert.is(mine.length, 2);
  const idxOf = (m: CapturedMessage) => {
    const t = /\/u\/([A-Za-z0-9_-]+)>/.exec(headerOf(m.raw))?.[1] as string;
    return codec.verify(t, Date.now())?.idx;
  };
  const byRcpt = new Map(mine.map((m) => [m.envelope.to[0], idxOf(m)]));
  assert.equal([byRcpt.get('a@one.test'), byRcpt.get('b@one.test')], [0, 1]);
});

test("with the account's tracking mode 'off' nothing is rewritten or added but the recipient's List-Unsubscribe, and no link table is stored", async () => {
  const { id, mail } = await deliveredCopy(quiet, 'news@quiet.example', 'other@one.test');
  const parsed = await simpleParser(mail.raw);
  const html = String(parsed.html);
  for (const href of ['https://acme.example/one?a=1&amp;b=2', "'https://acme.example/two'", 'http://elsewhere.example/three#x']) assert.ok(html.includes(href), href);
  assert.not.match(html, '127.0.0.1');
  assert.not.match(html, '<img');
  const header = headerOf(mail.raw);
  // Every message keeps a working unsubscribe, whatever the tracking mode.
  const u = /^List-Unsubscribe: <http:\/\/127\.0\.0\.1\/u\/([A-Za-z0-9_-]+)>/im.exec(header)?.[1];
  assert.equal(codec.verify(u ?? '', Date.now()), { kind: 'u', account: 'quiet', msgId: id, idx: 0, issuedAt: codec.verify(u ?? '', Date.now())?.issuedAt, address: 'other@one.test' });
  assert.match(header, /^List-Unsubscribe-Post: List-Unsubscribe=One-Click/im);
  const [v] = await verifyWithMailauth(mail.raw, txt);
  assert.ok(v?.pass, v?.detail);
  assert.is(await app.redis.client.exists(app.keys.links(id)), 0);
});

test("anonymous mode tracks a message to ten people, but not one to a single person (its counts would be that person's)", async () => {
  const single = await deliveredCopy(anon, 'news@anon.example', 'solo@one.test');
  const soloHtml = String((await simpleParser(single.mail.raw)).html);
  assert.not.match(soloHtml, '<img', 'no pixel');
  assert.not.match(soloHtml, '127.0.0.1', 'no click URL');
  assert.match(headerOf(single.mail.raw), /^List-Unsubscribe: <http:\/\/127\.0\.0\.1\/u\//im, 'the unsubscribe stays');

  const to = Array.from({ length: 10 }, (_, i) => `crowd${i}@one.test`);
  const r = await api(anon, '/v1/messages', { from: 'news@anon.example', to, subject: 'Crowd', html: HTML });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const got = (await sink.waitFor(sink.messages.length + 10, 15_000)).filter((m) => headerOf(m.raw).includes(`<${r.body.id}@sluice.test>`));
  assert.is(got.length, 10);
  for (const m of got) {
    const html = String((await simpleParser(m.raw)).html);
    assert.match(html, /<img src="http:\/\/127\.0\.0\.1\/o\//, 'pixel');
    assert.match(html, 'http://127.0.0.1/c/', 'click URLs');
    const [v] = await verifyWithMailauth(m.raw, txt);
    assert.ok(v?.pass, v?.detail);
  }
});

test('anonymous mode: a campaign to three contacts is sent untracked too, keeping each contact\'s List-Unsubscribe', async () => {
  const list = await createList(app.redis.client, app.keys, 'anon', 'small');
  async function* rows() {
    for (const i of [0, 1, 2]) yield `${JSON.stringify({ email: `few${i}@one.test` })}\n`;
  }
  await importContacts(app.redis.client, app.keys, 'anon', list.id, rows(), { format: 'ndjson', limits: { maxBytes: 1_000_000, maxRows: 100 } });
  const r = await api(anon, '/v1/campaigns', { from: 'news@anon.example', subject: 'Few', html: HTML, listId: list.id, sendAt: 'now' });
  assert.is(r.status, 201, JSON.stringify(r.body));
  const got = (await sink.waitFor(sink.messages.length + 3, 20_000)).filter((m) => m.envelope.to[0]?.startsWith('few'));
  assert.is(got.length, 3);
  for (const m of got) {
    const html = String((await simpleParser(m.raw)).html);
    assert.not.match(html, '<img', 'no pixel');
    assert.not.match(html, 'http://127.0.0.1/c/', 'no click URL');
    assert.match(headerOf(m.raw), /^List-Unsubscribe: <http:\/\/127\.0\.0\.1\/u\//im);
  }
});

test('anonymous mode, a campaign whose list is still being queued: its copies go tracked only when the enqueuer has said it will have at least 10 recipients', async () => {
  // The enqueuer's steps for one chunk, stopped before recordEnqueueChunk counts it: delivery can
  // claim the copies in that window (the campaign is not in campaigns:due, so the enqueuer leaves it).
  async function queueing(name: string, atLeast: number): Promise<CapturedMessage[]> {
    const list = await createList(app.redis.client, app.keys, 'anon', name);
    async function* rows() {
      for (const i of [0, 1, 2]) yield `${JSON.stringify({ email: `${name}${i}@one.test` })}\n`;
    }
    await importContacts(app.redis.client, app.keys, 'anon', list.id, rows(), { format: 'ndjson', limits: { maxBytes: 1_000_000, maxRows: 100 } });
    const r = await api(anon, '/v1/campaigns', { from: 'news@anon.example', subject: name, html: HTML, listId: list.id });
    assert.is(r.status, 201, JSON.stringify(r.body));
    const id = r.body.id as string;
    await app.redis.client.hset(app.keys.msgMeta(id), 'state', 'sending', 'startedAt', Date.now(), 'lastNo', 3);
    await recordEnqueuePlan(app.redis.client, app.keys, id, atLeast);
    const before = sink.messages.length;
    await pushCampaignChunk(app.redis.client, app.keys, 4, { campaignId: id, chunk: 1, dueAt: Date.now(), sending: true, byDomain: new Map([['one.test', [1, 2, 3]]]) });
    await sink.waitFor(before + 3, 20_000);
    return sink.messages.filter((m) => m.envelope.to[0]?.startsWith(name));
  }
  const few = await queueing('queueingfew', 3);
  assert.is(few.length, 3);
  for (const m of few) {
    const html = String((await simpleParser(m.raw)).html);
    assert.not.match(html, '<img', 'no pixel: 3 recipients are no crowd');
    assert.not.match(html, 'http://127.0.0.1/c/', 'no click URL');
    assert.match(headerOf(m.raw), /^List-Unsubscribe: <http:\/\/127\.0\.0\.1\/u\//im);
  }
  const many = await queueing('queueingmany', 12);
  assert.is(many.length, 3);
  for (const m of many) assert.match(String((await simpleParser(m.raw)).html), 'http://127.0.0.1/c/', 'tracked: the campaign will have at least 12');
});

test('a reload rotates the tracking key: k2 signs the copies rendered after it and the recorder thread verifies their opens; k1, kept until its notAfter, still redirects the earlier links; dropped, they answer 404', async () => {
  const first = await deliveredCopy(acme, 'news@acme.example', 'rotation-1@one.test');
  const linkOf = (mail: CapturedMessage) => /href="http:\/\/127\.0\.0\.1\/c\/([A-Za-z0-9_-]+)"/.exec(mail.raw.toString('latin1').replace(/=\r\n/g, '').replace(/=3D/g, '='))?.[1];
  const pixelOf = (mail: CapturedMessage) => /127\.0\.0\.1\/o\/([A-Za-z0-9_-]+)\.gif/.exec(mail.raw.toString('latin1').replace(/=\r\n/g, '').replace(/=3D/g, '='))?.[1];
  const t1 = linkOf(first.mail);
  assert.ok(t1 && codec.verify(t1, Date.now()), 'k1 signed the first copy');

  const secret2 = randomBytes(32);
  writeFileSync(join(dir, 'k2.key'), secret2, { mode: 0o600 });
  const k1 = { id: 'k1', secretFile: join(dir, 'k1.key'), notAfter: new Date(Date.now() + 86_400_000).toISOString() };
  const k2 = { id: 'k2', secretFile: join(dir, 'k2.key'), notAfter: null };
  const r = await app.reload(() => loadConfig({ env: {}, overrides: merge(raw, { tracking: { keys: [k1, k2], signWith: 'k2' } }) }));
  assert.equal([r.tokenKeysChanged, r.dkimKeysReplaced, r.restartNeeded], [true, false, []]);

  const second = await deliveredCopy(acme, 'news@acme.example', 'rotation-2@one.test');
  const t2 = linkOf(second.mail);
  const codec2 = createTokenCodec({ keys: [{ id: 'k2', secret: secret2 }], signWith: 'k2' });
  assert.ok(t2 && codec2.verify(t2, Date.now()), 'k2 signed the copy rendered after the reload');
  assert.is(codec.verify(t2, Date.now()), null, 'not k1');
  const click = async (token: string) => {
    const res = await request(`${trackingBase()}/c/${token}`);
    await res.body.text();
    return res.statusCode;
  };
  assert.equal([await click(t1), await click(t2)], [302, 302], 'both keys verify');
  // The open is verified by the recorder thread: recorded only if the thread has k2 too.
  const pixel = pixelOf(second.mail);
  assert.ok(pixel);
  const open = await request(`${trackingBase()}/o/${pixel}.gif`, { headers: { 'user-agent': 'Mozilla/5.0 (Windows NT 10.0) Firefox/128.0' } });
  await open.body.arrayBuffer();
  let opened = false;
  for (let i = 0; i < 100 && !opened; i++) {
    const entries = await app.redis.client.xrange(app.keys.events(), '-', '+');
    opened = entries.some(([, f]) => f.includes('opened') && f.includes(second.id));
    if (!opened) await new Promise((res) => setTimeout(res, 50));
  }
  assert.ok(opened, 'the open of a k2 token was recorded');

  await app.reload(() => loadConfig({ env: {}, overrides: merge(raw, { tracking: { keys: [k2], signWith: 'k2' } }) }));
  assert.equal([await click(t1), await click(t2)], [404, 302], 'k1 dropped: its links are invalid');
});

test.run();
