import { simpleParser } from 'mailparser';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { composeSpec, parseSpec } from '../../src/render/compose.js';
import type { MessageSpec, RenderResult, RenderTask } from '../../src/render/protocol.js';
import { createRenderer, type RenderFn } from '../../src/render/renderer.js';
import { makeKey, txtTable, verifyBoth, type TestKey } from '../helpers/dkim-verify.js';

const test = suite('render/renderer');

const ACCEPTED_AT = Date.UTC(2025, 6, 1, 9, 5, 0);
let rsa: TestKey;
let ed: TestKey;
let table: Record<string, string>;
let render: RenderFn;

test.before(() => {
  rsa = makeKey('shop.example', 'r1', 'rsa');
  ed = makeKey('shop.example', 'e1', 'ed25519');
  table = txtTable([rsa, ed]);
  const broken = { domain: 'broken.example', selector: 's1', algorithm: 'rsa' as const, privateKeyPem: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' };
  render = createRenderer({ keys: [rsa, ed, broken], hostname: 'mta.shop.example' });
});

function ok(r: RenderResult): Extract<RenderResult, { ok: true }> {
  if (!r.ok) throw new Error(`render failed: ${r.code} ${r.message}`);
  return r;
}

function rawTask(msgId: string, source: string | Buffer, signingDomain: string | null = 'shop.example'): RenderTask {
  return { msgId, kind: 'raw', source: typeof source === 'string' ? Buffer.from(source, 'utf8') : source, signingDomain, acceptedAt: ACCEPTED_AT };
}

const SPEC: MessageSpec = {
  from: { name: 'Zoë’s Shop 🛒', address: 'orders@shop.example' },
  to: [{ name: 'Jürgen Müller', address: 'juergen@example.org' }, { address: 'second@example.org' }],
  cc: [{ name: '山田 太郎', address: 'taro@example.jp' }],
  replyTo: [{ address: 'help@shop.example' }],
  subject: 'Ihre Bestellung ✓ — 注文確認',
  text: 'Danke für Ihre Bestellung!\nLine two.',
  html: '<p>Danke für Ihre <b>Bestellung</b>! <img src="cid:logo@shop"></p>',
  headers: {
    'List-Unsubscribe': '<https://t.shop.example/u/tok>',
    'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
    'Feedback-ID': 'c42:acme:sluice',
  },
  attachments: [
    { filename: 'rechnung.pdf', contentType: 'application/pdf', contentBase64: Buffer.from('%PDF-1.4 fake invoice \u0000\u00ff').toString('base64') },
    { filename: 'logo.png', contentType: 'image/png', contentBase64: Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]).toString('base64'), cid: 'logo@shop' },
  ],
  messageId: '<01j2abcdefghjkmn@shop.example>',
};

test('raw: without Date and Message-ID both are added; LF endings become CRLF; signatures verify', async () => {
  const r = ok(await render(rawTask('01j2raw0000000001', 'From: orders@shop.example\nTo: a@example.org\nSubject: hi\n\nHello\n')));
  assert.equal(r.signatures, ['rsa', 'ed25519']);
  const text = Buffer.from(r.message).toString('latin1');
  assert.match(text, /\r\nMessage-ID: <01j2raw0000000001@mta\.shop\.example>\r\n/);
  assert.match(text, /\r\nDate: Tue, 01 Jul 2025 09:05:00 \+0000\r\n/);
  assert.not.match(text, /[^\r]\n/);
  assert.ok(text.endsWith('\r\n\r\nHello\r\n'));
  const res = await verifyBoth(Buffer.from(r.message), table);
  assert.equal(res.mailauth.map((v) => v.pass), [true, true], JSON.stringify(res.mailauth));
  assert.equal(res.dkimpy.map((v) => v.pass), [true, true], JSON.stringify(res.dkimpy));
});

test('raw: a complete CRLF message is kept byte for byte after the prepended signatures', async () => {
  const original = Buffer.from(
    'From: orders@shop.example\r\nTo: a@example.org\r\nDate: Mon, 30 Jun 2025 08:00:00 +0200\r\nMessage-ID: <x@y>\r\nSubject:  spaced \t out \r\n\r\nBody \t with\ttabs  \r\n\r\n\r\n',
  );
  const r = ok(await render(rawTask('01j2raw0000000002', original)));
  const out = Buffer.from(r.message);
  assert.ok(out.subarray(out.length - original.length).equals(original));
  assert.ok(out.subarray(0, out.length - original.length).toString().startsWith('DKIM-Signature:'));
});

test('raw: a message that stops after its header gets the closing empty line and verifies', async () => {
  const r = ok(await render(rawTask('01j2raw0000000003', 'From: orders@shop.example\r\nSubject: header only')));
  const text = Buffer.from(r.message).toString();
  assert.ok(text.endsWith('Subject: header only\r\n\r\n'));
  const res = await verifyBoth(Buffer.from(r.message), table);
  assert.ok([...res.mailauth, ...res.dkimpy].every((v) => v.pass) && res.mailauth.length === 2 && res.dkimpy.length === 2);
});

test('spec: html + text + attachments, unicode subject and names; bcc never appears; signatures verify', async () => {
  const withBcc = { ...SPEC, bcc: [{ address: 'hidden@example.net' }] };
  const r = ok(await render({ msgId: '01j2spec00000001', kind: 'spec', source: JSON.stringify(withBcc), signingDomain: 'SHOP.example', acceptedAt: ACCEPTED_AT }));
  const msg = Buffer.from(r.message);
  assert.not.ok(msg.toString('latin1').toLowerCase().includes('hidden@example.net'), 'bcc leaked');
  assert.not.match(msg.toString('latin1'), /^bcc:/im);

  const parsed = await simpleParser(msg);
  assert.is(parsed.subject, SPEC.subject);
  assert.is(parsed.messageId, SPEC.messageId);
  assert.is(parsed.date?.getTime(), ACCEPTED_AT);
  assert.is(parsed.from?.value[0]?.name, SPEC.from.name);
  const to = Array.isArray(parsed.to) ? parsed.to.flatMap((a) => a.value) : (parsed.to?.value ?? []);
  assert.equal(to.map((a) => a.name), ['Jürgen Müller', '']);
  const cc = Array.isArray(parsed.cc) ? parsed.cc.flatMap((a) => a.value) : (parsed.cc?.value ?? []);
  assert.is(cc[0]?.name, '山田 太郎');
  assert.is(parsed.text?.trim(), SPEC.text);
  assert.match(parsed.html || '', /Bestellung/);
  assert.is(parsed.attachments.length, 2);
  const pdf = parsed.attachments.find((a) => a.filename === 'rechnung.pdf');
  assert.ok(pdf?.content.equals(Buffer.from(SPEC.attachments[0]?.contentBase64 as string, 'base64')));
  assert.is(parsed.attachments.find((a) => a.filename === 'logo.png')?.cid, 'logo@shop');
  assert.match(msg.toString('latin1'), /\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n/);

  const res = await verifyBoth(msg, table);
  assert.equal(res.mailauth.map((v) => v.pass), [true, true], JSON.stringify(res.mailauth));
  assert.equal(res.dkimpy.map((v) => v.pass), [true, true], JSON.stringify(res.dkimpy));
  const h = /[;\s]h=([^;]+);/.exec(msg.toString('latin1').replace(/\r\n\t/g, ' '))?.[1]?.replace(/\s/g, '') ?? '';
  assert.ok(h.includes('list-unsubscribe:list-unsubscribe-post'), h);
  assert.ok(h.startsWith('from:from:'), h);
});

test('spec: a message for many recipients is composed and signed once (same bytes, no new signing)', async () => {
  const task: RenderTask = { msgId: '01j2spec00000002', kind: 'spec', source: JSON.stringify(SPEC), signingDomain: 'shop.example', acceptedAt: ACCEPTED_AT };
  const first = ok(await render(task));
  assert.ok(first.signMs.length > 0 && first.signMs.every((ms) => ms > 0));
  for (let i = 0; i < 5; i++) {
    const again = ok(await render(task));
    assert.ok(Buffer.from(again.message).equals(Buffer.from(first.message)));
    assert.equal(again.signMs, []);
    assert.equal(again.signatures, first.signatures);
  }
});

test('a message of a single recipient is not kept: each render of it composes and signs anew', async () => {
  for (const kind of ['spec', 'raw'] as const) {
    const msgId = `01j2single0000${kind === 'spec' ? '01' : '02'}`;
    const source = kind === 'spec' ? JSON.stringify(SPEC) : Buffer.from('From: orders@shop.example\r\nTo: a@example.org\r\nSubject: one\r\n\r\nHi\r\n');
    const task: RenderTask = { msgId, kind, source, signingDomain: 'shop.example', acceptedAt: ACCEPTED_AT, single: true };
    const first = ok(await render(task));
    const second = ok(await render(task));
    assert.ok(first.signMs.length > 0 && second.signMs.length > 0, `${kind}: both renders signed`);
    // Nothing was cached for the message either: a later shared render of it signs too.
    const shared = ok(await render({ ...task, single: false }));
    assert.ok(shared.signMs.length > 0, `${kind}: nothing kept from the single renders`);
    assert.equal(ok(await render({ ...task, single: false })).signMs, [], `${kind}: a shared render is kept`);
  }
});

test('a domain without keys (or no signing domain) renders unsigned but ok', async () => {
  for (const domain of ['other.example', null]) {
    const r = ok(await render(rawTask('01j2raw0000000004', 'From: x@other.example\r\n\r\nhi\r\n', domain)));
    assert.equal(r.signatures, []);
    assert.equal(r.signMs, []);
    assert.not.match(Buffer.from(r.message).toString(), /DKIM-Signature/i);
  }
});

test('bad input comes back as ok:false with a code, never as an exception', async () => {
  const failures: [RenderTask, string][] = [
    [{ msgId: '01j2bad000000001', kind: 'spec', source: '{not json', signingDomain: 'shop.example', acceptedAt: ACCEPTED_AT }, 'SLUICE_RENDER_FAILED'],
    [{ msgId: '01j2bad000000002', kind: 'spec', source: JSON.stringify({ ...SPEC, to: 'nobody' }), signingDomain: 'shop.example', acceptedAt: ACCEPTED_AT }, 'SLUICE_RENDER_FAILED'],
    [{ msgId: '01j2bad000000003', kind: 'spec', source: JSON.stringify([1, 2, 3]), signingDomain: null, acceptedAt: ACCEPTED_AT }, 'SLUICE_RENDER_FAILED'],
    [rawTask('01j2bad000000004', ''), 'SLUICE_RENDER_FAILED'],
    [rawTask('01j2bad000000005', 'From: x@broken.example\r\n\r\nhi\r\n', 'broken.example'), 'SLUICE_DKIM_KEY_INVALID'],
    [{ msgId: 'bad id\r\nBcc: x', kind: 'raw', source: 'From: a@b.c\r\n\r\n', signingDomain: null, acceptedAt: ACCEPTED_AT }, 'SLUICE_RENDER_FAILED'],
    [{ msgId: '01j2bad000000007', kind: 'nope', source: 'x', signingDomain: null, acceptedAt: ACCEPTED_AT } as unknown as RenderTask, 'SLUICE_RENDER_FAILED'],
    [null as unknown as RenderTask, 'SLUICE_RENDER_FAILED'],
  ];
  for (const [task, code] of failures) {
    const r = await render(task);
    assert.is(r.ok, false, JSON.stringify(task));
    if (!r.ok) {
      assert.is(r.code, code);
      assert.type(r.message, 'string');
    }
  }
});

test('parseSpec/composeSpec: spec without cc, text only, stays valid MIME with the given Message-ID', async () => {
  const spec = parseSpec(JSON.stringify({ ...SPEC, cc: [], html: undefined, attachments: [], replyTo: undefined }));
  const msg = await composeSpec(spec, ACCEPTED_AT);
  const parsed = await simpleParser(msg);
  assert.is(parsed.messageId, SPEC.messageId);
  assert.is(parsed.cc, undefined);
  assert.is(parsed.html, false);
});

test.run();
