import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { appendEvent, createEventWriter, streamField, streamFields } from '../../src/store/events.js';
import type { RedisClient } from '../../src/redis/client.js';

const test = suite('store/events');
let redis: TestRedis;
let client: RedisClient;
test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});
test.after(() => redis.stop());

test('the writer appends every event once, in order, in batches, and flush waits for them', async () => {
  const { keys } = redis.fresh();
  const errors: unknown[] = [];
  const w = createEventWriter(client, keys, 100_000, (err) => errors.push(err));
  for (let i = 0; i < 1234; i++) w.write('delivered', { msgId: `m${i}`, idx: i });
  await w.flush();
  const all = await client.xrange(keys.events(), '-', '+');
  assert.is(all.length, 1234);
  assert.equal(all.map(([, f]) => f[3]), Array.from({ length: 1234 }, (_, i) => `m${i}`), 'arrival order kept');
  assert.equal(all[7]?.[1], ['type', 'delivered', 'msgId', 'm7', 'idx', '7']);
  assert.equal(errors, []);
});

test('streamField reads one field as streamFields does: the last of a repeated name, a trailing odd name ignored', () => {
  const lists: string[][] = [
    ['type', 'open', 'account', 'a1', 'type', 'click'],
    ['type', 'open', 'account'],
    ['account', 'type', 'type', 'account'],
    [],
    ['type'],
  ];
  for (const flat of lists) {
    const all = streamFields(flat);
    for (const name of ['type', 'account', 'msgId']) assert.is(streamField(flat, name), all[name], `${name} of ${JSON.stringify(flat)}`);
  }
  assert.is(streamField(['type', 'open', 'type', 'click'], 'type'), 'click');
  assert.is(streamField(['account', 'type', 'type', 'account'], 'type'), 'account');
});

test('a writer entry looks exactly like appendEvent’s', async () => {
  const { keys } = redis.fresh();
  await appendEvent(client, keys, 'bounced', { msgId: 'a', reason: 'userunknown' }, 1000);
  const w = createEventWriter(client, keys, 1000, () => undefined);
  w.write('bounced', { msgId: 'a', reason: 'userunknown' });
  await w.flush();
  const [one, two] = await client.xrange(keys.events(), '-', '+');
  assert.equal(one?.[1], two?.[1]);
});

test('a failing Redis call is reported with the count lost, and the writer keeps working', async () => {
  const { keys } = redis.fresh();
  await client.set(keys.events(), 'not a stream');
  const lost: number[] = [];
  const w = createEventWriter(client, keys, 1000, (_err, n) => lost.push(n));
  w.write('delivered', { msgId: 'x' });
  w.write('delivered', { msgId: 'y' });
  await w.flush();
  assert.equal(lost, [2]);
  await client.del(keys.events());
  w.write('delivered', { msgId: 'z' });
  await w.flush();
  assert.is(await client.xlen(keys.events()), 1);
});

test('fields come back exactly: quotes, backslashes, NUL, control characters, emoji, numbers; a lone surrogate as U+FFFD', async () => {
  const { keys } = redis.fresh();
  const errors: unknown[] = [];
  const w = createEventWriter(client, keys, 1000, (err) => errors.push(err));
  const ua = 'Mozilla/5.0 "quoted" \\ back\ttab\u0000nul \u00ff\u00e9 😀';
  w.write('opened', { ua, n: 1.5e20, idx: 7, odd: 'a\ud800b' });
  w.write('clicked', { link: 2 });
  await w.flush();
  assert.equal(errors, []);
  const entries = await client.xrange(keys.events(), '-', '+');
  assert.is(entries.length, 2);
  assert.equal(entries[0]?.[1], ['type', 'opened', 'ua', ua, 'n', '150000000000000000000', 'idx', '7', 'odd', 'a\ufffdb']);
  assert.equal(entries[1]?.[1], ['type', 'clicked', 'link', '2']);
});

test.run();
