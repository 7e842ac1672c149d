import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Ticker } from '../../src/core/ticker.js';

/** The background jobs' loop (reaper, retention, campaign enqueuer). Interval: an hour, so only "more" and wake() can run a step here. */
const test = suite('core/ticker');
const HOUR = 3_600_000;
const turns = (n = 5) => new Promise<void>((r) => {
  let left = n;
  const next = () => (--left <= 0 ? r() : setTimeout(next, 0));
  setTimeout(next, 0);
});

test('a step that leaves work runs again at once; then the ticker waits for its interval or a wake()', async () => {
  const answers = [true, true, false];
  let runs = 0;
  const t = new Ticker(async () => answers[runs++] ?? false, HOUR, () => assert.unreachable());
  t.start(0);
  await turns(10);
  assert.is(runs, 3, 'two "more" answers, then the interval');
  t.wake();
  await turns(5);
  assert.is(runs, 4, 'wake() runs one step now');
  await t.stop();
});

test('a wake() during a step runs another right after it; a failing step is reported and ticking goes on', async () => {
  let runs = 0;
  let release: () => void = () => {};
  const errors: unknown[] = [];
  const t = new Ticker(
    async () => {
      runs++;
      if (runs === 1) await new Promise<void>((r) => (release = r));
      if (runs === 2) throw new Error('boom');
    },
    HOUR,
    (err) => errors.push(err),
  );
  t.start(0);
  await turns(3);
  assert.is(runs, 1);
  t.wake(); // during step 1
  release();
  await turns(5);
  assert.is(runs, 2, 'the wake ran a step after the one in progress');
  assert.is((errors[0] as Error)?.message, 'boom');
  t.wake();
  await turns(5);
  assert.is(runs, 3, 'still ticking after a failure');
  await t.stop();
  t.wake();
  await turns(3);
  assert.is(runs, 3, 'nothing runs after stop()');
});

test('stop() waits for the step in progress', async () => {
  let finished = false;
  const t = new Ticker(async () => {
    await new Promise((r) => setTimeout(r, 20));
    finished = true;
  }, HOUR, () => {});
  t.start(0);
  await turns(2);
  await t.stop();
  assert.ok(finished);
});

test.run();
