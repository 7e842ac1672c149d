/**
 * The campaign preparation pool (render/prepare-pool.ts) with its real worker thread: admission (one
 * running, `queue` waiting, the next refused at once), close() letting what it admitted finish, and
 * a worker that cannot even start failing its preparations instead of leaving them waiting for ever.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { isSluiceError } from '../../src/core/errors.js';
import type { CampaignInput } from '../../src/render/campaign.js';
import { PreparePool } from '../../src/render/prepare-pool.js';

const test = suite('render/prepare-pool');

const input = (html: string): CampaignInput => ({ from: { address: 'news@shop.example' }, subject: 'Hi {{first}}', html, tracking: { opens: true, clicks: true } });

/** The code a preparation settled with: 'ok', or its SluiceError's code. */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return isSluiceError(err) ? err.code : `not a SluiceError: ${String(err)}`;
  }
}

test('one runs and `queue` wait; the next is refused at once (SLUICE_INGRESS_BUSY); the admitted all finish, and there is room again', async () => {
  const pool = new PreparePool({ queue: 1 });
  try {
    const calls = [0, 1, 2, 3].map((i) => outcome(pool.prepare(input(`<p>{{first}} ${i}</p>`))));
    assert.equal(await Promise.all(calls), ['ok', 'ok', 'SLUICE_INGRESS_BUSY', 'SLUICE_INGRESS_BUSY']);
    assert.is(await outcome(pool.prepare(input('<p>again</p>'))), 'ok');
  } finally {
    await pool.close();
  }
});

test('close() lets the admitted preparations finish with their answers, then refuses (SLUICE_SHUTTING_DOWN)', async () => {
  const pool = new PreparePool();
  const running = pool.prepare(input('<p>{{first}} <a href="https://shop.example/a">a</a></p>'));
  const invalid = outcome(pool.prepare(input('<p>{{#if x}}</p>')));
  const closed = pool.close();
  assert.is(await outcome(pool.prepare(input('<p>late</p>'))), 'SLUICE_SHUTTING_DOWN');
  assert.equal((await running).links, ['https://shop.example/a']);
  assert.is(await invalid, 'SLUICE_TEMPLATE_INVALID');
  await closed;
});

test('a worker that cannot start (its heap too small for its own code) fails each preparation with SLUICE_RENDER_FAILED, none waits for ever', async () => {
  const failures: unknown[] = [];
  const pool = new PreparePool({ maxHeapMb: 2, onFailed: (err) => failures.push(err) });
  try {
    let thrown: unknown;
    await pool.prepare(input('<p>{{first}}</p>')).catch((err: unknown) => (thrown = err));
    assert.ok(isSluiceError(thrown, 'SLUICE_RENDER_FAILED'), String(thrown));
    assert.match(thrown.message, /^The campaign could not be prepared: its worker failed \(.*memory/);
    assert.ok(failures.length > 0, 'reported');
    // The next one tries a new worker (and fails the same way, not by waiting).
    assert.is(await outcome(pool.prepare(input('<p>{{first}}</p>'))), 'SLUICE_RENDER_FAILED');
  } finally {
    await pool.close();
  }
});

test.run();
