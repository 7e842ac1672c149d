import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createTransport } from 'nodemailer';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';

/**
 * ingress.maxBuffered bounds the submitted mail held in memory over both servers: past it a message
 * is refused for now (SMTP 452 4.3.1, HTTP 503 SLUICE_INGRESS_BUSY with Retry-After), and every byte
 * comes back once its message is persisted or refused, so the next ones go in.
 */
const test = suite('ingress/buffered');
const BUDGET = 64 * 1024;
let redis: TestRedis;
let sink: CapturePeer;
let s: SluiceFixture;

test.before(async () => {
  redis = await startRedis();
  sink = await startCapturePeer();
  s = await startSluiceFixture(redis, { ingress: { maxBuffered: `${BUDGET}B` }, delivery: { transport: { 'dest.test': `${sink.host}:${sink.port}` } } });
});

test.after(async () => {
  await s?.stop();
  await sink?.close();
  await redis?.stop();
});

function smtp() {
  return createTransport({ host: '127.0.0.1', port: s.app.ports.smtp, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: s.smtpUser });
}

test('HTTP: a body over the budget gets 503 SLUICE_INGRESS_BUSY; 30 bodies of 8 KB in a row (about 4 budgets) are all accepted', async () => {
  const big = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'a@dest.test', subject: 'big', text: 'x'.repeat(100 * 1024) } });
  assert.is(big.status, 503, JSON.stringify(big.body));
  assert.is(big.body.code, 'SLUICE_INGRESS_BUSY');
  for (let i = 0; i < 30; i++) {
    const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: `h${i}@dest.test`, subject: `small ${i}`, text: 'y'.repeat(8 * 1024) } });
    assert.is(r.status, 202, `request ${i}: ${JSON.stringify(r.body)}`);
  }
});

test('SMTP: a message over the budget gets 452 4.3.1; 30 messages of 8 KB in a row are all accepted', async () => {
  const t = smtp();
  try {
    const err = await t.sendMail({ from: 'news@acme.example', to: 'b@dest.test', subject: 'big', text: 'x'.repeat(100 * 1024) }).then(
      () => assert.unreachable('accepted'),
      (e: { responseCode?: number; response?: string }) => e,
    );
    assert.is(err?.responseCode, 452, err?.response);
    assert.match(err?.response ?? '', '4.3.1');
    for (let i = 0; i < 30; i++) {
      const info = await t.sendMail({ from: 'news@acme.example', to: `s${i}@dest.test`, subject: `small ${i}`, text: 'y'.repeat(8 * 1024) });
      assert.match(info.response, /^250/, `message ${i}`);
    }
  } finally {
    t.close();
  }
});

test.run();
