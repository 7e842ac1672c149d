import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { request as httpRequest, type ClientRequest } from 'node:http';
import { createTransport } from 'nodemailer';
import { request } from 'undici';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';

/**
 * ingress.maxBuffered bounds the submitted mail held in memory over both servers at once: while one
 * request holds part of the budget, a message that does not fit in the rest is refused for now (SMTP
 * 452 4.3.1, HTTP 503 SLUICE_INGRESS_BUSY with Retry-After), and every byte comes back once its
 * message is persisted or refused, so the next ones go in. sluice_buffered_bytes shows what is held.
 */
const test = suite('ingress/buffered');
const BUDGET = 64 * 1024;
let redis: TestRedis;
let sink: CapturePeer;
let s: SluiceFixture;

test.before(async () => {
  redis = await startRedis();
  sink = await startCapturePeer();
  s = await startSluiceFixture(redis, {
    ingress: { maxBuffered: `${BUDGET}B`, smtp: { maxMessageSize: '48KB' }, http: { maxBodySize: '48KB' } },
    delivery: { transport: { 'dest.test': `${sink.host}:${sink.port}` } },
  });
});

test.after(async () => {
  await s?.stop();
  await sink?.close();
  await redis?.stop();
});

function smtp() {
  return createTransport({ host: '127.0.0.1', port: s.app.ports.smtp, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: s.smtpUser });
}

/** sluice_buffered_bytes{server="ingress"} as the admin port's /metrics shows it. */
async function bufferedBytes(): Promise<number> {
  const res = await request(`http://127.0.0.1:${s.app.ports.admin}/metrics`);
  const text = await res.body.text();
  const m = /^sluice_buffered_bytes\{server="ingress"\} (\d+)$/m.exec(text);
  assert.ok(m, 'sluice_buffered_bytes{server="ingress"} is exported');
  return Number(m[1]);
}

/** A POST /v1/messages whose body is sent up to `held` bytes and then waits for finish(). */
function heldPost(body: string, held: number): { finish: () => Promise<{ status: number; body: any }> } {
  let req: ClientRequest;
  const answer = new Promise<{ status: number; body: any }>((resolve, reject) => {
    req = httpRequest(
      { host: '127.0.0.1', port: s.app.ports.http, method: 'POST', path: '/v1/messages', headers: { authorization: `Bearer ${s.apiKey}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) }));
      },
    );
    req.on('error', reject);
    req.write(body.slice(0, held));
  });
  return {
    finish() {
      req.end(body.slice(held));
      return answer;
    },
  };
}

test('while one request holds 40 KB of the 64 KB budget, a 30 KB message is refused for now over HTTP (503) and SMTP (452 4.3.1); once it is persisted both go in, and every byte comes back', async () => {
  assert.is(await bufferedBytes(), 0);
  const first = JSON.stringify({ from: 'news@acme.example', to: 'held@dest.test', subject: 'held', text: 'h'.repeat(44 * 1024) });
  const held = heldPost(first, 40 * 1024);
  for (let i = 0; (await bufferedBytes()) < 40 * 1024; i++) {
    assert.ok(i < 200, 'the held body is counted within 10 s');
    await new Promise((r) => setTimeout(r, 50));
  }

  const busy = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'a@dest.test', subject: 'busy', text: 'x'.repeat(30 * 1024) } });
  assert.is(busy.status, 503, JSON.stringify(busy.body));
  assert.is(busy.body.code, 'SLUICE_INGRESS_BUSY');
  const t = smtp();
  try {
    const err = await t.sendMail({ from: 'news@acme.example', to: 'b@dest.test', subject: 'busy', text: 'x'.repeat(30 * 1024) }).then(
      () => assert.unreachable('accepted'),
      (e: { responseCode?: number; response?: string }) => e,
    );
    assert.is(err?.responseCode, 452, err?.response);
    assert.match(err?.response ?? '', '4.3.1');

    const done = await held.finish();
    assert.is(done.status, 202, JSON.stringify(done.body));
    const viaHttp = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'a@dest.test', subject: 'now', text: 'x'.repeat(30 * 1024) } });
    assert.is(viaHttp.status, 202, JSON.stringify(viaHttp.body));
    const info = await t.sendMail({ from: 'news@acme.example', to: 'b@dest.test', subject: 'now', text: 'x'.repeat(30 * 1024) });
    assert.match(info.response, /^250/);
  } finally {
    t.close();
  }
  assert.is(await bufferedBytes(), 0, 'nothing stays taken');
});

test('30 bodies of 8 KB in a row over each server (about 4 budgets each) are all accepted: each one gives its bytes back', async () => {
  for (let i = 0; i < 30; i++) {
    const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: `h${i}@dest.test`, subject: `small ${i}`, text: 'y'.repeat(8 * 1024) } });
    assert.is(r.status, 202, `request ${i}: ${JSON.stringify(r.body)}`);
  }
  const t = smtp();
  try {
    for (let i = 0; i < 30; i++) {
      const info = await t.sendMail({ from: 'news@acme.example', to: `s${i}@dest.test`, subject: `small ${i}`, text: 'y'.repeat(8 * 1024) });
      assert.match(info.response, /^250/, `message ${i}`);
    }
  } finally {
    t.close();
  }
  assert.is(await bufferedBytes(), 0);
});

test.run();
