import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startCluster, startRedis, type TestCluster, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { createLogger } from '../../src/observability/logger.js';
import { createTokenCodec, type TokenPayload } from '../../src/core/tokens.js';
import { newId } from '../../src/core/ids.js';
import { createEventBatch, type EventBatchDeps, type EventBatchOptions } from '../../src/tracking/event-batch.js';
import { toEngagement } from '../../src/store/engagement.js';
import { mark, type EventContext } from '../../src/tracking/record.js';
import type { TrackingDeps } from '../../src/tracking/deps.js';

const test = suite('tracking/event-batch');
const NOW = Date.UTC(2026, 2, 1, 12);
const ISSUED = Math.floor(NOW / 1000) - 3600;
const codec = createTokenCodec({ keys: [{ id: 'k1', secret: 'tracking-test-secret-0123456789' }], signWith: 'k1' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Whether `p` settles within `ms` (a generous bound: only a hang, not a slow machine, misses it). */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let bound: NodeJS.Timeout | undefined;
  const done = await Promise.race([p.then(() => true), new Promise<false>((r) => (bound = setTimeout(() => r(false), ms)))]);
  clearTimeout(bound);
  return done;
}
const BROWSER = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/130.0';

let redis: TestRedis;
let cluster: TestCluster;

test.before(async () => {
  redis = await startRedis();
  cluster = await startCluster();
});
test.after(async () => {
  await redis.stop();
  await cluster.stop();
});

/** Counts what the batch reports through its metrics. */
function counters() {
  const seen: Record<string, number> = {};
  const bump = (k: string, n = 1) => (seen[k] = (seen[k] ?? 0) + n);
  return {
    seen,
    metrics: {
      requests: { inc: (l: { endpoint: string; result: string }, n?: number) => bump(`${l.endpoint}:${l.result}`, n) },
      events: { inc: (l: { type: string; class: string }, n?: number) => bump(`${l.type}:${l.class}`, n) },
      duration: { observe: () => undefined },
    },
  };
}

function setup(client: RedisClient, keys: Keys, over: Partial<EventBatchOptions> = {}) {
  const c = counters();
  const deps: EventBatchDeps = { redis: client, keys, logger: createLogger(process.env['DEBUG_BATCH'] ? 'warn' : 'silent'), metrics: c.metrics };
  // Entries the flushes have settled so far: what is written "at once" is awaited by its flush, as
  // idle() would also wait out the clicks held for the burst window.
  let settled = 0;
  const waiting: { n: number; resolve: () => void }[] = [];
  const batch = createEventBatch(deps, {
    maxPending: 1000, modeOf: () => 'full',
    verifyOpen: (t) => {
      const p = codec.verify(t, NOW);
      return p?.kind === 'o' ? p : null;
    },
    ...over,
    onFlushed: (entries) => {
      settled += entries;
      for (const w of waiting.filter((x) => settled >= x.n)) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve();
      }
      over.onFlushed?.(entries);
    },
  });
  /** Resolves once the flushes have settled `n` entries in all (written, or dropped as erased). */
  const flushed = (n: number): Promise<void> => (settled >= n ? Promise.resolve() : new Promise((resolve) => waiting.push({ n, resolve })));
  const events = async () =>
    (await client.xrange(keys.events(), '-', '+')).map(([, flat]) => {
      const o: Record<string, string> = {};
      for (let i = 0; i + 1 < flat.length; i += 2) o[flat[i] as string] = flat[i + 1] as string;
      return o;
    });
  return { batch, events, flushed, seen: c.seen };
}

const openToken = (msgId: string, idx: number) => codec.sign({ kind: 'o', account: 'acme', msgId, idx, issuedAt: ISSUED });
const open = (token: string, at = NOW, userAgent = BROWSER) => ({ token, at, method: 'GET', userAgent, ip: '192.0.2.1' });

/** Records for the messages (their opens are recorded only while the record is kept). */
async function stored(client: RedisClient, keys: Keys, ...ids: string[]): Promise<void> {
  await Promise.all(ids.map((id) => client.hset(keys.msgMeta(id), 'account', 'acme')));
}

async function scriptCalls(client: RedisClient): Promise<number> {
  const info = await (client as import('ioredis').Redis).info('commandstats');
  let n = 0;
  for (const m of info.matchAll(/^cmdstat_(?:eval|evalsha):calls=(\d+)/gm)) n += Number(m[1]);
  return n;
}

test('opens of many messages queued in one turn are marked and appended by two script calls, in order', async () => {
  const client = redis.client();
  const { keys } = redis.fresh();
  const { batch, events, seen } = setup(client, keys);
  const msgs = [newId(NOW), newId(NOW + 1), newId(NOW + 2)];
  await stored(client, keys, ...msgs);
  // Scripts load on their first use (NOSCRIPT, then EVAL): count the calls of a warm connection.
  const warmKeys = redis.fresh().keys;
  const warm = setup(client, warmKeys);
  const warmId = newId(NOW);
  await stored(client, warmKeys, warmId);
  warm.batch.open(open(openToken(warmId, 0)));
  await warm.batch.idle();
  const before = await scriptCalls(client);
  // Every recipient opens three times; one of them first through Apple's proxy (a machine).
  let n = 0;
  for (let round = 0; round < 3; round++) {
    for (const m of msgs) for (const idx of [0, 1]) batch.open(open(openToken(m, idx), NOW + n++, round === 0 && idx === 1 ? 'Mozilla/5.0' : BROWSER));
  }
  batch.open(open(openToken(msgs[0] as string, 0).replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'))));
  assert.is(batch.pending, n + 1);
  await batch.idle();
  assert.is(batch.pending, 0);
  assert.is((await scriptCalls(client)) - before, 2, 'one marks call and one append call');

  const evs = await events();
  assert.is(evs.length, n, 'the forged token is not recorded');
  assert.equal(evs.map((e) => Number(e['at'])), Array.from({ length: n }, (_, i) => NOW + i), 'stream order is arrival order');
  const firsts = evs.filter((e) => e['first'] === '1').map((e) => `${e['msgId']}:${e['idx']}:${e['machine']}`);
  // Each recipient has one first human open; idx 1's proxy fetch is a first machine open besides.
  assert.is(firsts.length, 9);
  for (const m of msgs) {
    assert.ok(firsts.includes(`${m}:0:0`) && firsts.includes(`${m}:1:0`) && firsts.includes(`${m}:1:1`));
    assert.equal(await client.hkeys(keys.trackMarks(m)).then((k) => k.sort()), ['mo:1', 'o:0', 'o:1']);
    assert.ok((await client.pttl(keys.trackMarks(m))) > 0, 'marks expire');
    // Counted in the marks call: 6 opens, one of them Apple's proxy; two people opened.
    assert.equal(await client.hgetall(keys.msgStats(m)), { opens_human: '5', opens_unique_human: '2', machine_opens: '1' });
    assert.is(toEngagement(await client.hgetall(keys.msgStats(m))).opens, 6, 'the raw total is human + machine');
    assert.ok((await client.pttl(keys.msgStats(m))) > 0, 'counters expire');
  }
  assert.is(seen['open:ok'], n);
  assert.is(seen['open:invalid'], 1);
  assert.is(seen['opened:human_first'], 6);
  assert.is(seen['opened:machine'], 3);
});

test('a batch Redis refuses to write (NOREPLICAS here, as maxmemory or MISCONF): its opens count unrecorded, not ok, and a click counts unrecorded too', async () => {
  const client = redis.client();
  const { keys } = redis.fresh();
  const { batch, events, seen } = setup(client, keys, { clickHoldMs: 0 });
  const id = newId(NOW);
  await stored(client, keys, id);
  const admin = redis.client();
  await admin.config('SET', 'min-replicas-to-write', '1');
  try {
    for (const idx of [0, 1, 2]) batch.open(open(openToken(id, idx)));
    const click: TokenPayload = { kind: 'c', account: 'acme', msgId: id, idx: 0, link: 0, issuedAt: ISSUED };
    batch.event(click, { now: NOW, mode: 'full', first: true, machine: null, userAgent: BROWSER, ip: '' } as EventContext);
    await batch.idle();
  } finally {
    await admin.config('SET', 'min-replicas-to-write', '0');
  }
  assert.is((await events()).length, 0);
  assert.is(seen['open:unrecorded'], 3);
  assert.is(seen['open:ok'], undefined, 'not counted as recorded');
  assert.is(seen['click:unrecorded'], 1);
});

test("anonymous mode: an erased recipient's old pixel and link count and record nothing, as in full mode", async () => {
  const client = redis.client();
  const { keys } = redis.fresh();
  const { batch, events, seen } = setup(client, keys, { modeOf: () => 'anonymous' });
  const id = newId(NOW);
  await stored(client, keys, id);
  // Recipient 0 erased (eraseRecipient-5.lua leaves this mark); recipient 1 not.
  await client.hset(keys.trackMarks(id), 'x:0', '1');
  batch.open(open(openToken(id, 0)));
  batch.open(open(openToken(id, 1)));
  await batch.idle();
  assert.equal((await events()).map((e) => e['type']), ['opened'], "only recipient 1's open");
  assert.is(seen['opened:human'], 1);
  assert.equal(await client.hgetall(keys.msgStats(id)), { opens_human: '1' });
  await client.rpush(keys.links(id), 'https://shop.example/');
  const deps = { redis: client, keys } as unknown as TrackingDeps;
  const erased = await mark(deps, { kind: 'c', account: 'acme', msgId: id, idx: 0, link: 0, issuedAt: ISSUED }, 'anonymous', NOW);
  assert.ok(erased.erased, "the erased recipient's click is known so");
  assert.is(erased.url, 'https://shop.example/', 'its link still leads where it led');
  const other = await mark(deps, { kind: 'c', account: 'acme', msgId: id, idx: 1, link: 0, issuedAt: ISSUED }, 'anonymous', NOW);
  assert.not.ok(other.erased);
  assert.is((await client.hgetall(keys.msgStats(id)))['clicks_human'], '1', 'one click counted: the other recipient\'s');
});

test('a click event joins the queue behind the opens before it; anonymous and off modes', async () => {
  const client = redis.client();
  const { keys } = redis.fresh();
  const modes: Record<string, 'full' | 'anonymous' | 'off'> = { acme: 'full', anon: 'anonymous', quiet: 'off' };
  // No hold: this is about the queue's order (the hold has a test of its own).
  const { batch, events } = setup(client, keys, { modeOf: (a) => modes[a] ?? 'full', clickHoldMs: 0 });
  const msgId = newId(NOW);
  await stored(client, keys, msgId);
  const sign = (account: string) => codec.sign({ kind: 'o', account, msgId, idx: 0, issuedAt: ISSUED });
  batch.open(open(sign('acme'), NOW));
  const click: TokenPayload = { kind: 'c', account: 'acme', msgId, idx: 0, link: 2, issuedAt: ISSUED };
  batch.event(click, { now: NOW + 1, mode: 'full', first: true, machine: null, userAgent: BROWSER, ip: '192.0.2.1' });
  batch.open(open(sign('anon'), NOW + 2));
  batch.open(open(sign('quiet'), NOW + 3));
  await batch.idle();
  const evs = await events();
  assert.equal(evs.map((e) => [e['type'], e['at']]), [['opened', String(NOW)], ['clicked', String(NOW + 1)], ['opened', String(NOW + 2)]]);
  assert.equal(evs[1], { type: 'clicked', at: String(NOW + 1), account: 'acme', msgId, idx: '0', link: '2', first: '1', machine: '0', ip: '192.0.2.1', ua: BROWSER });
  assert.equal(evs[2], { type: 'opened', at: String(NOW + 2), account: 'anon', msgId, machine: '0' });
});

test("a person's first click on a link is held for the burst window; a burst-making click writes the recipient's held clicks as the scanner's", async () => {
  const client = redis.client();
  const { keys } = redis.fresh();
  // A hold of a minute, ended by releaseHeld(): a hold timed in ms could run out on a slow machine
  // before the burst click, and the burst would find nothing held.
  const HOLD = 60_000;
  const { batch, events, flushed } = setup(client, keys, { clickHoldMs: HOLD, maxPending: 5 });
  const msgId = newId(NOW);
  const click = (idx: number, link: number): TokenPayload => ({ kind: 'c', account: 'acme', msgId, idx, link, issuedAt: ISSUED });
  const ctx = (now: number, over: Partial<EventContext> = {}): EventContext => ({ now, mode: 'full', first: true, machine: null, userAgent: BROWSER, ip: '192.0.2.1', ...over });
  // Recipient 0: two first clicks (held), then a repeat (not held: it cannot turn out a scanner's).
  batch.event(click(0, 0), ctx(NOW));
  batch.event(click(0, 1), ctx(NOW + 10));
  batch.event(click(0, 1), ctx(NOW + 20, { first: false }));
  // Recipient 1: one click before the window, two in it, then the third link makes the burst.
  batch.event(click(1, 3), ctx(NOW - 5000));
  batch.event(click(1, 0), ctx(NOW));
  assert.is(batch.pending, 5, 'held clicks are pending');
  batch.event(click(1, 9), ctx(NOW));
  assert.is(batch.pending, 5, 'beyond maxPending a click is shed, held ones counted');
  await flushed(1);
  assert.equal((await events()).map((e) => `${e['idx']}:${e['link']}`), ['0:1'], 'only the repeat is written at once');
  batch.event(click(1, 1), ctx(NOW + 30, { machine: 'burst', burstSince: NOW - 100 }));
  await flushed(4);
  assert.equal((await events()).map((e) => `${e['idx']}:${e['link']}:${e['reason'] ?? 'human'}`), ['0:1:human', '1:3:human', '1:0:burst', '1:1:burst'],
    "the burst writes recipient 1's held clicks at once: the one before the window as a person's, the one in it as the scanner's");
  // Recipient 0's clicks are still held: idle() has not resolved (a slow machine only makes this surer).
  let idle = false;
  const idled = batch.idle().then(() => (idle = true));
  await sleep(100);
  assert.not.ok(idle, 'idle() waits for the held clicks');
  assert.is(batch.pending, 2, "recipient 0's two clicks are still held");
  assert.is((await events()).length, 4, 'nothing more is written while they are held');
  // releaseHeld (closing) queues them at once: idle() resolves long before the minute's hold.
  batch.releaseHeld();
  assert.ok(await within(idled, 10_000), 'releaseHeld() writes the held clicks without waiting for the hold');
  assert.equal((await events()).map((e) => `${e['idx']}:${e['link']}:${e['reason'] ?? 'human'}`).slice(4), ['0:0:human', '0:1:human'], "recipient 0's clicks after their hold, as a person's");
  assert.is(batch.pending, 0);
  batch.event(click(2, 0), ctx(NOW));
  assert.is(batch.pending, 1, 'a new first click is held');
  batch.releaseHeld();
  assert.ok(await within(batch.idle(), 10_000), 'written without waiting for the hold');
  assert.is((await events()).length, 7);

  // Left alone, a held click is written when its hold runs out (a short hold, awaited with a bound).
  const short = setup(client, redis.fresh().keys, { clickHoldMs: 50 });
  short.batch.event(click(3, 0), ctx(NOW));
  assert.is(short.batch.pending, 1, 'held');
  assert.ok(await within(short.batch.idle(), 10_000), 'written once the hold has run out');
  assert.equal((await short.events()).map((e) => `${e['idx']}:${e['link']}:${e['reason'] ?? 'human'}`), ['3:0:human']);
});

test('a held click whose recipient was erased during the hold writes no event; beyond maxHeld a click is written at once', async () => {
  const client = redis.client();
  const { keys } = redis.fresh();
  // A hold of a minute ended by releaseHeld() (which still marks them held, so the erased check
  // runs): a 200 ms hold could end on a slow machine before the erase mark below is set.
  const { batch, events, flushed } = setup(client, keys, { clickHoldMs: 60_000, maxHeld: 2 });
  const msgId = newId(NOW);
  const click = (idx: number): TokenPayload => ({ kind: 'c', account: 'acme', msgId, idx, link: 0, issuedAt: ISSUED });
  const ctx: EventContext = { now: NOW, mode: 'full', first: true, machine: null, userAgent: BROWSER, ip: '192.0.2.1' };
  batch.event(click(0), ctx);
  batch.event(click(1), ctx);
  batch.event(click(2), ctx);
  await flushed(1);
  assert.equal((await events()).map((e) => e['idx']), ['2'], 'the third, beyond maxHeld, is written at once');
  // Recipient 0 is erased while its click is held (eraseRecipient-5.lua leaves this mark).
  await client.hset(keys.trackMarks(msgId), 'x:0', '1');
  batch.releaseHeld();
  await batch.idle();
  assert.equal((await events()).map((e) => e['idx']), ['2', '1'], "the erased recipient's held click writes nothing");
});

test('the bound on pending writes sheds beyond it, and large queues go out in bounded batches', async () => {
  const client = redis.client();
  const { keys } = redis.fresh();
  const msgId = newId(NOW);
  await stored(client, keys, msgId);
  const { batch, events, seen } = setup(client, keys, { maxPending: 5 });
  for (let i = 0; i < 8; i++) batch.open(open(openToken(msgId, i)));
  await batch.idle();
  assert.is((await events()).length, 5);
  assert.is(seen['open:shed'], 3);

  const { keys: k2 } = redis.fresh();
  await stored(client, k2, msgId);
  const small = setup(client, k2, { maxBatch: 3 });
  const before = await scriptCalls(client);
  for (let i = 0; i < 7; i++) small.batch.open(open(openToken(msgId, i), NOW + i));
  await small.batch.idle();
  assert.is((await scriptCalls(client)) - before, 6, '3 batches of ≤ 3, two calls each');
  assert.equal((await small.events()).map((e) => e['idx']), ['0', '1', '2', '3', '4', '5', '6']);
});

test('under load the next flush lingers: events queued during a flush go out together, lingerMs after it began', async () => {
  const client = redis.client();
  const { keys } = redis.fresh();
  const msgId = newId(NOW);
  const flushedAt: number[] = [];
  const { batch, events } = setup(client, keys, { lingerMs: 150, onFlushed: () => flushedAt.push(Date.now()) });
  const warmKeys = redis.fresh().keys;
  const warm = setup(client, warmKeys);
  await stored(client, keys, msgId);
  await stored(client, warmKeys, msgId);
  warm.batch.open(open(openToken(msgId, 0)));
  await warm.batch.idle();
  const before = await scriptCalls(client);
  const started = Date.now();
  batch.open(open(openToken(msgId, 0), NOW));
  // Queued while the first flush is in flight, one turn apart: all in the second flush.
  setImmediate(() => {
    for (let i = 1; i < 5; i++) batch.open(open(openToken(msgId, i), NOW + i));
    setImmediate(() => batch.open(open(openToken(msgId, 5), NOW + 5)));
  });
  await batch.idle();
  assert.is(flushedAt.length, 2, 'two flushes');
  assert.is((await scriptCalls(client)) - before, 4, 'two calls each');
  assert.ok((flushedAt[1] as number) - started >= 150, `the second flush began lingerMs after the first (${(flushedAt[1] as number) - started} ms)`);
  assert.equal((await events()).map((e) => e['idx']), ['0', '1', '2', '3', '4', '5']);

  // Quiet again: the next event is written at once, not after a linger. Shown with a linger of a
  // minute, so that the answer does not hang on how fast this machine is at the moment: a lone
  // event after a finished flush is written within seconds, where a lingered one would wait 60 s.
  const quietKeys = redis.fresh().keys;
  await stored(client, quietKeys, msgId);
  const quiet = setup(client, quietKeys, { lingerMs: 60_000 });
  for (const i of [6, 7]) {
    quiet.batch.open(open(openToken(msgId, i), NOW + i));
    let bound: NodeJS.Timeout | undefined;
    const written = await Promise.race([quiet.batch.idle().then(() => true), new Promise<false>((r) => (bound = setTimeout(() => r(false), 10_000)))]);
    clearTimeout(bound);
    assert.ok(written, `event ${i}, alone, is not held back for the linger`);
  }
  assert.equal((await quiet.events()).map((e) => e['idx']), ['6', '7']);
});

test("an open of a message whose record is gone (purged, erased whole) marks, counts and records nothing; a finished message's new counters expire with its record", async () => {
  const client = redis.client();
  const { keys } = redis.fresh();
  const modes: Record<string, 'full' | 'anonymous'> = { acme: 'full', anon: 'anonymous' };
  const { batch, events } = setup(client, keys, { modeOf: (a) => modes[a] ?? 'full' });
  const [gone, kept, finished] = [newId(NOW), newId(NOW + 1), newId(NOW + 2)];
  await stored(client, keys, kept, finished);
  // Finished: its record is kept 10 more minutes, less than the marks' retention (the default).
  await client.pexpire(keys.msgMeta(finished), 600_000);
  const sign = (account: string, msgId: string) => codec.sign({ kind: 'o', account, msgId, idx: 0, issuedAt: ISSUED });
  batch.open(open(sign('acme', gone), NOW));
  batch.open(open(sign('anon', gone), NOW + 1));
  batch.open(open(sign('acme', kept), NOW + 2));
  batch.open(open(sign('acme', finished), NOW + 3));
  batch.open(open(sign('acme', gone), NOW + 4));
  await batch.idle();
  assert.equal((await events()).map((e) => `${e['msgId']}:${e['first']}`), [`${kept}:1`, `${finished}:1`]);
  assert.is(await client.exists(keys.trackMarks(gone), keys.msgStats(gone)), 0, 'no marks or counters made again');
  assert.equal(await client.hkeys(keys.trackMarks(kept)), ['o:0']);
  const left = await client.pttl(keys.msgStats(finished));
  assert.ok(left > 590_000 && left <= 600_000, `the counters expire with the record (${left} ms)`);
});

test('Redis Cluster: marks are written per message slot, the events on the stream slot', async () => {
  const client = cluster.client();
  try {
    const { keys } = cluster.fresh();
    const { batch, events } = setup(client, keys);
    const msgs = Array.from({ length: 6 }, (_, i) => newId(NOW + i));
    await stored(client, keys, ...msgs);
    for (const round of [0, 1]) for (const m of msgs) batch.open(open(openToken(m, 0), NOW + round));
    await batch.idle();
    const evs = await events();
    assert.is(evs.length, 12);
    assert.equal(evs.map((e) => e['first']), [...Array<string>(6).fill('1'), ...Array<string>(6).fill('0')]);
    for (const m of msgs) {
      assert.equal(await client.hkeys(keys.trackMarks(m)), ['o:0']);
      assert.equal(await client.hgetall(keys.msgStats(m)), { opens_human: '2', opens_unique_human: '1' }, 'counted in the same call, on the same slot');
    }
  } finally {
    client.disconnect();
  }
});

test.run();
