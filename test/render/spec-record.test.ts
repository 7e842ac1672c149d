import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeSpecRecord, encodeSpecRecord } from '../../src/render/spec-record.js';
import { parseSpec } from '../../src/render/compose.js';
import { isSluiceError } from '../../src/core/errors.js';
import type { MessageSpec } from '../../src/render/protocol.js';

const test = suite('render/spec-record');

const SPEC: MessageSpec = {
  from: { name: 'Shop "Zoë"', address: 'news@shop.example' },
  to: [{ name: 'Ada', address: 'ada@x.test' }],
  cc: [],
  subject: 'Grüße\nline',
  text: 'plain text',
  html: '<p class="a">S2 {"not":"a header"}\n\r\nada@x.test – ✓ \\ "quoted"</p>\n',
  headers: { 'X-Tag': 'a' },
  attachments: [],
  messageId: '<0123456789abcdef@shop.example>',
  tracking: { links: 2 },
};

test('a spec with html is stored as a JSON header and the raw html, and reads back the same', () => {
  const record = encodeSpecRecord(SPEC);
  assert.is(record.subarray(0, 3).toString(), 'S2 ');
  const lf = record.indexOf(0x0a);
  assert.is(record.subarray(lf + 1).toString('utf8'), SPEC.html, 'html raw after the first LF');
  assert.not.ok(record.subarray(0, lf).toString().includes('<p'), 'html not in the header');
  assert.equal(decodeSpecRecord(record), SPEC);
  assert.equal(decodeSpecRecord(new Uint8Array(record)), SPEC, 'a copy that crossed postMessage');
  assert.equal(decodeSpecRecord(record.toString('utf8')), SPEC, 'as a string');
  assert.equal(parseSpec(record), SPEC);
});

test('a spec without html, and a record stored before this layout, are plain JSON', () => {
  const { html: _html, ...textOnly } = SPEC;
  const record = encodeSpecRecord(textOnly);
  assert.is(record.toString('utf8'), JSON.stringify(textOnly));
  assert.equal(parseSpec(record), textOnly);
  const legacy = Buffer.from(JSON.stringify(SPEC), 'utf8');
  assert.equal(parseSpec(legacy), SPEC);
});

test('an address replaced in place, longer or shorter (erasure), leaves the record readable', () => {
  const record = encodeSpecRecord(SPEC).toString('latin1');
  for (const replacement of ['erased@invalid', 'x@y']) {
    const erased = Buffer.from(record.split('ada@x.test').join(replacement), 'latin1');
    const spec = parseSpec(erased);
    assert.is(spec.to[0]?.address, replacement);
    assert.is(spec.html, (SPEC.html as string).replace('ada@x.test', replacement));
  }
});

test('a damaged record fails as SLUICE_RENDER_FAILED', () => {
  for (const bad of [Buffer.from('S2 {"from":'), Buffer.from('S2 {"from":\n<p>'), Buffer.from('{"from":')]) {
    try {
      parseSpec(bad);
      assert.unreachable('parsed');
    } catch (err) {
      assert.ok(isSluiceError(err, 'SLUICE_RENDER_FAILED'), String(err));
    }
  }
});

test.run();
