import { randomBytes } from 'node:crypto';
import { simpleParser } from 'mailparser';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { newId } from '../../src/core/ids.js';
import { createTokenCodec, type TokenCodec } from '../../src/core/tokens.js';
import { prepareCampaign } from '../../src/render/campaign.js';
import { RenderPool } from '../../src/render/pool.js';
import type { CampaignTemplate, RenderResult, RenderTask } from '../../src/render/protocol.js';
import { makeKey, txtTable, verifyWithDkimpy, verifyWithMailauth } from '../helpers/dkim-verify.js';

/** A campaign through the real worker threads: prepared once on this thread, rendered per recipient there. */
const test = suite('render/campaign-pool');

const BASE = 'https://t.pool.example';
const RECIPIENTS = 200;
const BATCH = 25;
const HTML =
  '<html><body><p>Dear {{first}} {{last}},</p><p>Your code: <b>{{code}}</b></p>' +
  '<a href="https://pool.example/offer">Offer</a> <a href="https://pool.example/more?ref=mail">More</a>' +
  '<p>Sent to {{email}}. <a href="{{unsubscribe_url}}">Unsubscribe</a></p></body></html>';

let codec: TokenCodec;
let table: Record<string, string>;
let pool: RenderPool;
let template: CampaignTemplate;
let links: string[];
const campaignId = newId();

test.before(() => {
  const secret = randomBytes(32);
  codec = createTokenCodec({ keys: [{ id: 'k1', secret }], signWith: 'k1' });
  const rsa = makeKey('pool.example', 'r1', 'rsa');
  const ed = makeKey('pool.example', 'e1', 'ed25519');
  table = txtTable([rsa, ed]);
  pool = new RenderPool({
    threads: 2,
    queuePerThread: 2,
    init: { keys: [rsa, ed], hostname: 'mta.pool.example', tracking: { publicBaseUrl: BASE, keys: [{ id: 'k1', secret }], signWith: 'k1', bounceDomain: 'bounce.pool.example' } },
  });
  ({ template, links } = prepareCampaign({ from: { name: 'Pool', address: 'news@pool.example' }, subject: '{{first}}, your code {{code}}', html: HTML, tracking: { opens: true, clicks: true } }));
});

test.after(async () => {
  await pool.close();
});

const fieldsOf = (no: number) => ({ first: `First${no}`, last: `Last-${(no * 7919) % 1000}`, code: `C${no.toString(36).toUpperCase()}X` });

function task(no: number): RenderTask {
  return {
    msgId: campaignId,
    kind: 'campaign',
    source: JSON.stringify(template),
    signingDomain: 'pool.example',
    acceptedAt: Date.now(),
    campaign: { recipient: { no, address: `rcpt${no}@d${no % 7}.example.org`, fields: fieldsOf(no) }, account: 'acme', mode: 'full' },
  };
}

function ok(r: RenderResult): Extract<RenderResult, { ok: true }> {
  if (!r.ok) throw new Error(`render failed: ${r.code} ${r.message}`);
  return r;
}

test(`${RECIPIENTS} recipients: each copy has its own merge values, Message-ID and tokens naming the campaign and its contact`, async () => {
  const batches: Promise<RenderResult[]>[] = [];
  for (let start = 0; start < RECIPIENTS; start += BATCH) {
    batches.push(pool.renderMany(Array.from({ length: BATCH }, (_, i) => task(start + i))));
  }
  const copies = (await Promise.all(batches)).flat().map((r) => Buffer.from(ok(r).message));
  assert.is(copies.length, RECIPIENTS);
  assert.equal(links, ['https://pool.example/offer', 'https://pool.example/more?ref=mail']);

  const tokens = new Set<string>();
  const messageIds = new Set<string>();
  for (const [no, raw] of copies.entries()) {
    const mail = await simpleParser(raw);
    const f = fieldsOf(no);
    assert.is(mail.subject, `${f.first}, your code ${f.code}`);
    assert.equal(mail.to && !Array.isArray(mail.to) ? mail.to.value.map((v) => v.address) : null, [`rcpt${no}@d${no % 7}.example.org`]);
    const html = String(mail.html);
    assert.match(html, `<p>Dear ${f.first} ${f.last},</p><p>Your code: <b>${f.code}</b></p>`);
    assert.match(html, `Sent to rcpt${no}@d${no % 7}.example.org.`);
    assert.match(String(mail.text), `Dear ${f.first} ${f.last},`);
    messageIds.add(String(mail.messageId));

    const header = raw.toString('latin1', 0, raw.indexOf('\r\n\r\n')).replace(/\r\n[ \t]+/g, ' ');
    const found = [...(html + header).matchAll(/https:\/\/t\.pool\.example\/([ocu])\/([A-Za-z0-9_-]+)/g)];
    // Two clicks and the pixel in the html; the template's own unsubscribe link and List-Unsubscribe.
    assert.equal(found.map((m) => m[1]).sort(), ['c', 'c', 'o', 'u', 'u']);
    for (const m of found) {
      const p = codec.verify(m[2] as string, Date.now());
      assert.ok(p, `token of copy ${no} verifies`);
      assert.equal([p.msgId, p.idx, p.account, p.kind], [campaignId, no, 'acme', m[1]]);
      tokens.add(m[2] as string);
    }
    const clicks = found.filter((m) => m[1] === 'c').map((m) => codec.verify(m[2] as string, Date.now())?.link);
    assert.equal(clicks, [0, 1], 'link i of the table');
    assert.match(header, new RegExp(`^Feedback-ID: ${campaignId}:acme:sluice$`, 'm'));
  }
  // Per copy: 2 clicks, 1 pixel, 1 unsubscribe (used twice) = 4 distinct tokens.
  assert.is(tokens.size, RECIPIENTS * 4, 'no token is shared between copies');
  assert.is(messageIds.size, RECIPIENTS);

  const dkimpy = await verifyWithDkimpy(copies, table);
  assert.is(dkimpy.length, RECIPIENTS);
  dkimpy.forEach((v, i) => assert.equal(v.map((s) => s.pass), [true, true], `dkimpy, copy ${i}: ${JSON.stringify(v)}`));
  for (const [i, raw] of copies.entries()) {
    const v = await verifyWithMailauth(raw, table);
    assert.equal(v.map((s) => [s.algo, s.pass]), [['rsa-sha256', true], ['ed25519-sha256', true]], `mailauth, copy ${i}: ${JSON.stringify(v)}`);
  }
});

test('a batch whose tasks share one template buffer sends it once and renders every copy from it', async () => {
  const body = Buffer.from(JSON.stringify(template));
  const tasks = Array.from({ length: 10 }, (_, i) => ({ ...task(1000 + i), source: body }));
  const results = await pool.renderMany(tasks);
  for (const [i, r] of results.entries()) {
    const mail = await simpleParser(Buffer.from(ok(r).message));
    assert.is(mail.subject, `${fieldsOf(1000 + i).first}, your code ${fieldsOf(1000 + i).code}`);
  }
  assert.is(body.length, Buffer.byteLength(JSON.stringify(template)), "the caller's buffer is copied, not detached");
});

test('a bad campaign task fails alone; the workers go on', async () => {
  const [bad, good] = await pool.renderMany([{ ...task(0), source: '{"v":1,' }, task(1)]);
  assert.equal(bad?.ok ? 'ok' : bad?.code, 'SLUICE_RENDER_FAILED');
  assert.ok(good?.ok);
});

test.run();
