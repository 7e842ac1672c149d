import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis, freePort, type TestRedis } from '../helpers/redis.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { adminGet, metricValue } from '../helpers/sluice-process.js';

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
    delivery: { transport: { '*': `127.0.0.1:${peer.port}`, 'dead.test': `127.0.0.1:${await freePort()}` } },
    shaping: { default: { retry: ['1m'] } },
  });
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
  assert.is(metricValue(await scrape(), 'sluice_queue_recipients', { provider: 'default' }), 1);

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

test.run();
