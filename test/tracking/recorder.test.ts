import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRecorder } from '../../src/tracking/recorder.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';

/**
 * The recorder thread's end when it cannot write what it holds: close() says so (it rejects, and
 * counts the events lost), so that the shutdown is logged incomplete rather than clean.
 */
const test = suite('tracking/recorder');
let redis: TestRedis;

test.before(async () => {
  redis = await startRedis();
});
test.after(() => redis.stop());

test('closed while its thread is down (it died, its restart not due yet): the opens waiting for it are counted lost and close() rejects', async () => {
  const results: Record<string, number> = {};
  const errors: string[] = [];
  const recorder = startRecorder(
    {
      connect: { url: redis.url }, prefix: redis.fresh().prefix,
      // A codec the thread cannot build: it dies as it starts (as a crash would kill it).
      codec: { keys: [{ id: 'k1', secret: 'short' }], signWith: 'k1' },
      settings: undefined, eventsMaxLen: 1000, retentionMs: 60_000, nice: 0, clickHoldMs: 0, opensPerRecipientMinute: 60,
    },
    {
      maxPending: 100,
      metrics: { requests: { inc: (l, n = 1) => void (results[`${l.endpoint}:${l.result}`] = (results[`${l.endpoint}:${l.result}`] ?? 0) + n) }, events: { inc: () => undefined }, duration: { observe: () => undefined } },
      logger: { warn: () => undefined, error: (_o, msg) => void errors.push(msg) },
    },
  );
  recorder.open({ token: 'x'.repeat(20), at: Date.now(), method: 'GET', userAgent: '', ip: '127.0.0.1' });
  for (let i = 0; i < 100 && !errors.some((m) => m.includes('exited')); i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(errors.some((m) => m.includes('exited')), `the thread died: ${errors.join('; ')}`);
  recorder.open({ token: 'y'.repeat(20), at: Date.now(), method: 'GET', userAgent: '', ip: '127.0.0.1' });
  const closed = await recorder.close().then(() => null, (err: Error) => err);
  assert.match(String(closed?.message), /answered events not written/);
  assert.ok((results['open:lost'] ?? 0) >= 1, JSON.stringify(results));
  assert.is(recorder.pending, 0);
});

test.run();
