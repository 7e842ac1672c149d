import * as assert from 'uvu/assert';
import { redisSuite } from '../helpers/redis.js';
import { DeliveryMarks, recordSoftBounce } from '../../src/store/soft-bounces.js';

/**
 * An address's run of soft bounces (store/soft-bounces.ts) over a real Redis: consecutive soft
 * bounces count, a copy delivered (its 250 marked) ends the run, and a copy that bounces after its
 * 250 is a soft bounce, not a delivery, whichever of its mark and its bounce is written first.
 */
const { test, env } = redisSuite('store/soft-bounces');
const DAY = 86_400_000;
const marksOf = (keys: ReturnType<typeof env.redis.fresh>['keys']) => new DeliveryMarks(env.client, keys, (err) => assert.unreachable(String(err)));

test('a delivered copy ends the run; its own later bounce takes the delivery back', async () => {
  const { keys } = env.redis.fresh();
  const marks = marksOf(keys);
  const a = 'box@full.test';
  assert.is(await recordSoftBounce(env.client, keys, a, 'm1:0', 1_000, DAY), 1);
  marks.add(a, 'm2:0', 2_000);
  await marks.flush();
  assert.is(await recordSoftBounce(env.client, keys, a, 'm3:0', 3_000, DAY), 1, 'm2 was delivered between: a run of one');
  // m4 got a 250, then its DSN came back: the mark goes with the bounce.
  marks.add(a, 'm4:0', 4_000);
  await marks.flush();
  assert.is(await recordSoftBounce(env.client, keys, a, 'm4:0', 5_000, DAY), 2);
});

test("a copy's 250 mark written after its own bounce does not end the run", async () => {
  const { keys } = env.redis.fresh();
  const marks = marksOf(keys);
  const a = 'late@full.test';
  assert.is(await recordSoftBounce(env.client, keys, a, 'm1:0', 1_000, DAY), 1);
  // m2's DSN was processed within the 50 ms its 250 mark waited in the dispatcher.
  assert.is(await recordSoftBounce(env.client, keys, a, 'm2:0', 2_000, DAY), 2);
  marks.add(a, 'm2:0', 1_900);
  await marks.flush();
  assert.is(await recordSoftBounce(env.client, keys, a, 'm3:0', 3_000, DAY), 3, 'm2 bounced: still one run');
});

test.run();
