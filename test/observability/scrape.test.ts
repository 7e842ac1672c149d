import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis, freePort, type TestRedis } from '../helpers/redis.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { request } from 'undici';
import { tokenPath } from '../../src/core/tokens.js';
import { adminGet, metricValue, scrapeUntil } from '../helpers/sluice-process.js';
import { createMetrics } from '../../src/observability/metrics.js';

/**
 * /metrics while Redis does not answer: the gauges read from Redis at scrape time must not hold the
 * scrape (Prometheus would record the process down and lose every counter just then), and keep the
 * values they had; and a queue that drained reads 0 rather than vanishing.
 */
const test = suite('observability/scrape');

let redis: TestRedis;
let peer: CapturePeer;
let s: SluiceFixture;

test.before(async () => {
  redis = await startRedis();
  peer = await startCapturePeer();
  // dead.test: a port nothing listens on, so its copy waits in the queue (retried in a minute).
  s = await startSluiceFixture(redis, {
    roles: ['ingress', 'delivery', 'housekeeping', 'tracking'],
    delivery: { transport: { '*': `127.0.0.1:${peer.port}`, 'dead.test': `127.0.0.1:${await freePort()}` } },
    shaping: { default: { retry: ['1m'] } },
  }, { tracking: true });
});

test.after(async () => {
  await s?.stop();
  await peer?.close();
  await redis?.stop();
});

const scrape = async () => {
  const r = await adminGet(s.app.ports.admin, '/metrics');
  assert.is(r.status, 200);
  return r.text;
};

test('a drained queue reads 0; a stalled Redis leaves the scrape answered and the gauges as they were', async () => {
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'ann@one.test', subject: 'x', text: 'x' } });
  await s.waitFinal(r.body.id);
  assert.is(metricValue(await scrape(), 'sluice_queue_recipients', { provider: 'default' }), 0, 'drained: 0, not no series');

  const d = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'nobody@dead.test', subject: 'x', text: 'x' } });
  await s.waitRecipient(d.body.id, 'deferred');
  // A slow read (a busy machine) is reused for a while: the gauge may lag.
  const queued = await scrapeUntil(s.app.ports.admin, (t) => metricValue(t, 'sluice_queue_recipients', { provider: 'default' }) === 1, 800);
  assert.is(metricValue(queued, 'sluice_queue_recipients', { provider: 'default' }), 1);

  // The server stops answering (SIGSTOP: a frozen host, a stalled disk) for 30 s, or till the scrape
  // has answered. A scrape that waited for Redis would answer only after the 30 s.
  process.kill(redis.server.pid, 'SIGSTOP');
  const resume = setTimeout(() => process.kill(redis.server.pid, 'SIGCONT'), 30_000);
  try {
    const started = Date.now();
    const text = await scrape();
    const took = Date.now() - started;
    assert.ok(took < 15_000, `answered in ${took} ms while Redis is stopped`);
    assert.is(metricValue(text, 'sluice_messages_accepted_total', { source: 'http' }), 2, 'the counters are there');
    assert.is(metricValue(text, 'sluice_queue_recipients', { provider: 'default' }), 1, 'the gauge keeps its value');
  } finally {
    clearTimeout(resume);
    process.kill(redis.server.pid, 'SIGCONT');
  }
});

test('the tracking results of an event not written are exported at 0 before any, for increase() to see the first', async () => {
  const text = await scrape();
  for (const [endpoint, result] of [['open', 'shed'], ['open', 'lost'], ['open', 'unrecorded'], ['click', 'shed'], ['click', 'unrecorded'], ['unsubscribe', 'unrecorded']]) {
    assert.is(metricValue(text, 'sluice_tracking_requests_total', { endpoint: endpoint!, result: result! }), 0, `${endpoint} ${result}`);
  }
});

test('a gauge whose read Redis refuses keeps its value, and the failure is counted', async () => {
  const c = redis.client();
  const errors = (text: string) => metricValue(text, 'sluice_metric_sample_errors_total', { gauge: 'sluice_feedback_pending' }) ?? 0;
  const before = await scrape();
  assert.is(metricValue(before, 'sluice_feedback_pending'), 0);
  // ZCARD refused (an ACL change, a renamed command): only the feedback_pending gauge reads with it.
  await c.call('ACL', 'SETUSER', 'default', '-zcard');
  try {
    const during = await scrape();
    assert.is(errors(during), errors(before) + 1, 'the failed read is counted');
    assert.is(metricValue(during, 'sluice_feedback_pending'), 0, 'the gauge keeps its last value');
    assert.is(errors(await scrape()), errors(before) + 2);
  } finally {
    await c.call('ACL', 'SETUSER', 'default', '+zcard');
  }
  assert.is(errors(await scrape()), errors(before) + 2, 'a read that works again is not counted');
});

test('a failing sampler is reported on its first failure, then not again until it has worked', async () => {
  const told: string[] = [];
  const m = createMetrics({ onSampleError: (gauges, err) => told.push(`${gauges}: ${(err as Error).message}`) });
  let fail = true;
  m.sampleOn('sendersPaused', () => {
    if (fail) throw new Error('NOPERM');
    m.sendersPaused.set(3);
  });
  await m.registry.metrics();
  await m.registry.metrics();
  assert.equal(told, ['sluice_senders_paused: NOPERM'], 'told once for a run of failures');
  fail = false;
  assert.ok((await m.registry.metrics()).includes('sluice_senders_paused 3'));
  fail = true;
  const text = await m.registry.metrics();
  assert.equal(told.length, 2, 'a failure after a success is told again');
  assert.ok(text.includes('sluice_metric_sample_errors_total{gauge="sluice_senders_paused"} 3'), 'every failure is counted');
  assert.ok(text.includes('sluice_senders_paused 3'), 'the gauge kept its value');
});

test('HTTP submissions refused are counted once each, under their route, whatever refused them', async () => {
  const before = await scrape();
  const rejected = (text: string, code: string) => metricValue(text, 'sluice_messages_rejected_total', { source: 'http', code }) ?? 0;
  const requests = (text: string, route: string) => metricValue(text, 'sluice_http_requests_total', { route, status: '4xx' }) ?? 0;
  const post = async (path: string, auth: string, body: string) => {
    const r = await request(`http://127.0.0.1:${s.app.ports.http}${path}`, { method: 'POST', headers: { authorization: `Bearer ${auth}`, 'content-type': 'application/json' }, body });
    await r.body.text();
    return r.statusCode;
  };
  assert.is(await post('/v1/messages', 'not-a-key', '{}'), 401); // before the body is read
  assert.is(await post('/v1/messages', s.apiKey, '{"from":"news@acme.example","to":[]}'), 400); // read, invalid
  assert.is(await post('/v1/messages', s.apiKey, JSON.stringify({ from: 'x@elsewhere.example', to: 'a@one.test', subject: 's', text: 't' })), 403); // counted by acceptMessage
  assert.is(await post('/v1/messages/batch', s.apiKey, JSON.stringify({ messages: [{ from: 'news@acme.example', to: [] }, { from: 'news@acme.example', to: 'b@one.test', subject: 's', text: 't' }] })), 202);
  // A wrong method submits nothing: not a refused submission.
  const wrong = await request(`http://127.0.0.1:${s.app.ports.http}/v1/messages`, { method: 'GET', headers: { authorization: `Bearer ${s.apiKey}` } });
  await wrong.body.text();
  assert.is(wrong.statusCode, 405);
  const after = await scrape();
  assert.is(rejected(after, 'SLUICE_INGRESS_METHOD_NOT_ALLOWED'), 0);
  assert.is(rejected(after, 'SLUICE_AUTH_FAILED') - rejected(before, 'SLUICE_AUTH_FAILED'), 1);
  assert.is(rejected(after, 'SLUICE_INGRESS_BAD_REQUEST') - rejected(before, 'SLUICE_INGRESS_BAD_REQUEST'), 2, 'the invalid message and the batch\'s invalid one');
  assert.is(rejected(after, 'SLUICE_INGRESS_FROM_NOT_OWNED') - rejected(before, 'SLUICE_INGRESS_FROM_NOT_OWNED'), 1, 'once, not twice');
  assert.is(requests(after, 'send') - requests(before, 'send'), 4, 'the 401 and the 405 too are the send route\'s');
  assert.is(requests(after, 'other') - requests(before, 'other'), 0);
});

test('opens and one-click unsubscribes count as events written; suppressions by the API and by unsubscribe are counted', async () => {
  const before = await scrape();
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'cy@one.test', subject: 'x', html: '<p>hello</p>' } });
  await s.waitFinal(r.body.id);
  const tracking = `http://127.0.0.1:${s.app.ports.tracking}`;
  const token = (kind: 'o' | 'u') => s.codec!.sign({ kind, account: 'acme', msgId: r.body.id, idx: 0, issuedAt: Math.floor(Date.now() / 1000) });
  const open = await request(tracking + tokenPath('o', token('o')), { headers: { 'user-agent': 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/130.0' } });
  await open.body.arrayBuffer();
  const unsub = await request(`${tracking}/u/${token('u')}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
  await unsub.body.text();
  assert.is(unsub.statusCode, 200);
  assert.is((await s.api('/v1/suppressions', { body: { email: 'dee@one.test' } })).status, 201);
  const v = (text: string, name: string, labels: Record<string, string>) => metricValue(text, name, labels) ?? 0;
  let after = '';
  // The open is written by the recorder thread a moment after its answer.
  for (const until = Date.now() + 10_000; Date.now() < until; await new Promise((res) => setTimeout(res, 50))) {
    after = await scrape();
    if (v(after, 'sluice_events_total', { type: 'opened' }) > v(before, 'sluice_events_total', { type: 'opened' })) break;
  }
  const diff = (name: string, labels: Record<string, string>) => v(after, name, labels) - v(before, name, labels);
  assert.is(diff('sluice_events_total', { type: 'opened' }), 1);
  assert.is(diff('sluice_events_total', { type: 'unsubscribed' }), 1);
  assert.is(diff('sluice_suppressions_added_total', { list: 'account', reason: 'unsubscribe' }), 1);
  assert.is(diff('sluice_suppressions_added_total', { list: 'account', reason: 'manual' }), 1);

  // An import counts each address under its own reason (a row's, else the import's).
  const rows = ['{"email":"e1@one.test","reason":"unsubscribed"}', '{"email":"e2@one.test","reason":"spam report"}', '{"email":"e3@one.test"}'].join('\n');
  const imp = await request(`http://127.0.0.1:${s.app.ports.http}/v1/suppressions/import`, { method: 'POST', headers: { authorization: `Bearer ${s.apiKey}`, 'content-type': 'application/x-ndjson' }, body: rows });
  assert.is(imp.statusCode, 200, await imp.body.text());
  const last = await scrape();
  const since = (labels: Record<string, string>) => v(last, 'sluice_suppressions_added_total', labels) - v(after, 'sluice_suppressions_added_total', labels);
  assert.equal([since({ list: 'account', reason: 'unsubscribe' }), since({ list: 'account', reason: 'complaint' }), since({ list: 'account', reason: 'manual' })], [1, 1, 1]);
});

test.run();
