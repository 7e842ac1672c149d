import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { apiCall, withFixtureApi, type IngressFixture } from './fixture.js';
import { decodeSpecRecord } from '../../src/render/spec-record.js';
import type { MessageSpec } from '../../src/render/protocol.js';

/** POST /v1/messages with bodies of megabytes, under the default ingress.http.maxBodySize (35 MB). */
const test = suite('ingress/http-large');
let fx: IngressFixture;
let base = '';
withFixtureApi(test, (f, b) => {
  fx = f;
  base = b;
});

const send = (attachment: Record<string, unknown>) =>
  apiCall(base, 'POST', '/v1/messages', { key: fx.apiKeys.acme, body: { from: 'a@acme.example', to: 'big@gmail.com', subject: 'report', text: 'attached', attachments: [attachment] } });

test('an attachment of 8 MB is accepted and stored as sent; a stray character at its end is 400 naming the field, not 500', async () => {
  const bytes = Buffer.alloc(8 * 1024 * 1024, 0xa7);
  const content = bytes.toString('base64');
  const r = await send({ filename: 'report.pdf', contentType: 'application/pdf', content });
  assert.is(r.status, 202, r.text);
  const spec = decodeSpecRecord((await fx.client.getBuffer(fx.keys.msgBody(r.json['id'] as string))) as Buffer) as MessageSpec;
  assert.ok(Buffer.from(spec.attachments[0]?.contentBase64 ?? '', 'base64').equals(bytes), 'the attachment is stored whole');

  for (const bad of [`${content.slice(0, -4)}AB\nC`, `${content.slice(0, -4)}A===`, `${content}A`]) {
    const refused = await send({ filename: 'report.pdf', content: bad });
    assert.is(refused.status, 400, refused.text);
    assert.equal(refused.json['errors'], [{ path: 'attachments.0.content', message: 'must be base64 without line breaks' }]);
  }
  // Padding of one and two characters is base64 too.
  for (const size of [1, 2]) assert.is((await send({ filename: 'x.bin', content: Buffer.alloc(3 * 1024 * 1024 + size, 1).toString('base64') })).status, 202);
});

test.run();
