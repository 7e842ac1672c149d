import v8 from 'node:v8';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RenderPool } from '../../src/render/pool.js';
import type { RenderTask } from '../../src/render/protocol.js';
import { makeKey } from '../helpers/dkim-verify.js';

/**
 * A render worker that dies (here: out of memory on a big message, its heap capped for the workers
 * this file starts) takes down the one task it ran, which held the copies of every caller of that
 * event-loop turn (renderMany coalesces them). Only the copy that kills a worker again may fail,
 * and as the host's failure (tried again later), not as the content's (bounced for good).
 */
v8.setFlagsFromString('--max-old-space-size=48');

const key = makeKey('pool.example', 'r1', 'rsa');
const AT = Date.now();
const raw = (id: string): RenderTask => ({ msgId: id, kind: 'raw', source: Buffer.from(`From: s@pool.example\r\nTo: r@example.org\r\nSubject: ${id}\r\n\r\nhello\r\n`), signingDomain: 'pool.example', acceptedAt: AT });
const html = '<p>Gruesse, a line of a long newsletter ...</p>\n'.repeat((20 * 1024 * 1024) / 45);
const big: RenderTask = {
  msgId: 'big', kind: 'spec', signingDomain: 'pool.example', acceptedAt: AT,
  source: Buffer.from(JSON.stringify({ from: { address: 's@pool.example' }, to: [{ address: 'r@example.org' }], cc: [], subject: 'big', html, text: html, headers: {}, attachments: [], messageId: '<big@pool.example>' })),
};

test("a worker that dies fails only the copy that kills it, as the worker's failure; the copies it shared a task with are rendered", async () => {
  const pool = new RenderPool({ threads: 1, queuePerThread: 16, init: { keys: [key], hostname: 'mta.pool.example' } });
  try {
    // Three connections' claims in one turn: one worker task.
    const [a, b, c] = await Promise.all([pool.renderMany([raw('one'), raw('two')]), pool.renderMany([big]), pool.renderMany([raw('three')])]);
    for (const r of [...a, ...c]) assert.ok(r.ok, JSON.stringify(r));
    const failed = b[0];
    assert.ok(failed && !failed.ok);
    if (failed && !failed.ok) {
      assert.is(failed.code, 'SLUICE_RENDER_WORKER_FAILED', failed.message);
      assert.match(failed.message, 'render worker failed');
    }
  } finally {
    await pool.close();
  }
});

test("the copies run again after a worker's death wait their turn in a full queue; none is refused for it", async () => {
  // One thread, a queue of one task: the seven copies beside the big one are run again while other
  // callers' tasks fill the queue.
  const pool = new RenderPool({ threads: 1, queuePerThread: 1, init: { keys: [key], hostname: 'mta.pool.example' } });
  try {
    const first = pool.renderMany([...Array.from({ length: 7 }, (_, i) => raw(`a${i}`)), big]);
    await new Promise((r) => setImmediate(r));
    const others = Array.from({ length: 4 }, (_, i) => new Promise<Awaited<typeof first>>((r) => setTimeout(() => r(pool.renderMany([raw(`b${i}`)])), i)));
    const [a, ...b] = await Promise.all([first, ...others]);
    const failed = a.filter((r) => !r.ok);
    assert.equal(failed.map((r) => (r.ok ? '' : r.code)), ['SLUICE_RENDER_WORKER_FAILED'], JSON.stringify(failed));
    assert.is(a.at(-1)?.ok, false, 'the big one is the one that fails');
    for (const r of b.flat()) assert.ok(r.ok, JSON.stringify(r));
  } finally {
    await pool.close();
  }
});

test.run();
