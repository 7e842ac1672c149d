import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import MailComposer from 'nodemailer/lib/mail-composer/index.js';
import { simpleParser } from 'mailparser';
import { composeSpec, withoutStreams } from '../../src/render/compose.js';
import { encodeText } from '../../src/render/text-part.js';
import type { MessageSpec } from '../../src/render/protocol.js';

const test = suite('render/compose');
const AT = Date.UTC(2026, 10, 26, 9, 30);

const base: MessageSpec = {
  from: { name: 'Acme News', address: 'news@acme.example' },
  to: [{ name: 'Zoë Ünicode, Jr.', address: 'zoe@example.org' }],
  cc: [],
  subject: 'Hello',
  headers: {},
  attachments: [],
  messageId: '<01m8c74za6qyb61g@acme.example>',
};

const shapes: [string, MessageSpec][] = [
  ['html only', { ...base, html: '<p>Hi there</p>\n'.repeat(500) }],
  ['text only, non-ASCII', { ...base, text: 'Grüße aus Köln — ünïcödé\n'.repeat(50) }],
  ['non-ASCII and long subject, headers, cc, reply-to', {
    ...base, html: '<p>€ 5</p>', subject: `Ihre Bestellung ist unterwegs — ${'lange Betreffzeile '.repeat(8)}`,
    headers: { 'X-Campaign': 'spring-2026', 'List-Id': '<news.acme.example>' },
    cc: [{ address: 'cc@example.net' }], replyTo: [{ name: '"Support" Team', address: 'help@acme.example' }],
  }],
  ['text and html (multipart: build() either way)', { ...base, text: 'plain', html: '<b>rich</b>' }],
];

test('a single-part message is the bytes MailComposer build() makes, without its streams', async () => {
  for (const [name, spec] of shapes) {
    const fast = await composeSpec(spec, AT);
    const streamed = await composeSpec(spec, AT, true);
    if (name.startsWith('text and html')) {
      // Multipart boundaries are random per call: compare with them blanked out.
      const blank = (b: Buffer) => b.toString('latin1').replace(/--_NmP-[0-9a-f-]+/g, '--B').replace(/boundary="[^"]+"/g, 'boundary="B"');
      assert.is(blank(fast), blank(streamed), name);
    } else {
      assert.ok(fast.equals(streamed), `${name}:\n${fast.toString('latin1').slice(0, 600)}\n---\n${streamed.toString('latin1').slice(0, 600)}`);
    }
    assert.ok(fast.includes('\r\nMessage-ID: <01m8c74za6qyb61g@acme.example>\r\n'), name);
  }
});

test('withoutStreams writes what build() writes for the same tree; attachments and streams fall back', async () => {
  const raw = (kind: 'plain' | 'html', body: string) => ({ raw: encodeText(kind, body).part }) as unknown as string;
  const mail = { from: 'Acme <news@acme.example>', to: 'zoe@example.org', subject: 'Grüße', messageId: '<x@acme.example>', date: new Date(AT) };
  const trees = {
    alternative: { ...mail, text: raw('plain', 'Grüße\n'.repeat(100)), html: raw('html', '<p>Grüße</p>\n'.repeat(100)) },
    'alternative with headers': { ...mail, text: raw('plain', 'a'), html: raw('html', 'b'), headers: { 'X-Tag': 'spring' } },
    'one raw part': { ...mail, html: raw('html', '<p>only</p>') },
    'empty part': { ...mail, html: '' },
  };
  for (const [name, options] of Object.entries(trees)) {
    const root = new MailComposer(options).compile();
    const direct = withoutStreams(root);
    assert.ok(direct, name);
    const streamed = await root.build();
    assert.ok(direct.equals(streamed), `${name}:\n${direct.toString('latin1')}\n---\n${streamed.toString('latin1')}`);
  }
  assert.is(withoutStreams(new MailComposer({ ...mail, text: 'x', attachments: [{ filename: 'a.txt', content: Buffer.from('a') }] }).compile()), null, 'an attachment is encoded by build()');
  assert.is(withoutStreams(new MailComposer({ ...mail, text: 'plain text content' }).compile()), null, 'content to encode goes through build()');
});

test('a subject with a word longer than a line folds (RFC 2047 encoded-words), and control characters do not reach the header; a reader gets the text back', async () => {
  for (const [subject, expected] of [
    ['Hi ' + 'u'.repeat(1000) + ' end', 'Hi ' + 'u'.repeat(1000) + ' end'],
    ['x'.repeat(998), 'x'.repeat(998)],
    ['Grüße ' + 'ü'.repeat(600), 'Grüße ' + 'ü'.repeat(600)],
    ['Hi Ann\u0000\u001b[31m\u007f', 'Hi Ann\ufffd\ufffd[31m\ufffd'],
  ] as const) {
    const raw = await composeSpec({ ...base, subject, text: 'hi' }, AT);
    const header = raw.subarray(0, raw.indexOf('\r\n\r\n')).toString('latin1');
    const longest = Math.max(...header.split('\r\n').map((l) => l.length));
    assert.ok(longest <= 998, `header lines at most 998 octets (${longest})`);
    assert.not.match(header, /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/, 'no control character in the header');
    assert.is((await simpleParser(raw)).subject, expected);
  }
  // An ordinary subject is left as it is, unencoded.
  assert.match((await composeSpec({ ...base, subject: 'Your order has shipped', text: 'hi' }, AT)).toString(), '\r\nSubject: Your order has shipped\r\n');
});

test.run();
