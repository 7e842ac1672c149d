/**
 * `sluice queue flush` over a real Redis: deferred recipients of the destinations named (or of all)
 * become due now and their destinations due in the schedule; a campaign's pointer keeps its time
 * (its throttle is not lifted); other destinations are untouched; the action is in the audit log.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { enqueueRecipients } from '../../src/queue/enqueue.js';
import { shardOf, type Keys } from '../../src/redis/keys.js';
import { readAudit } from '../../src/store/audit.js';
import { flushStep, type FlushCursor } from '../../src/queue/flush.js';
import type { RedisClient } from '../../src/redis/client.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture } from '../helpers/sluice.js';
import { sluice } from './run-cli.js';

const test = suite('cli/queue-flush');
const SHARDS = 4;
const HOUR = 3_600_000;

let redis: TestRedis;
let client: RedisClient;
let dir: string;

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-cli-flush-'));
  redis = await startRedis();
  client = redis.client();
});

test.after(async () => {
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A config file for `keys`' prefix, and mail deferred for an hour at each destination: n recipients each. */
async function deferred(keys: Keys, prefix: string, counts: Record<string, number>): Promise<{ cfg: string; later: number }> {
  const later = Date.now() + HOUR;
  const items = Object.entries(counts).flatMap(([domain, n]) => Array.from({ length: n }, (_, idx) => ({ msgId: `m${domain.length}x${idx}`, idx, domain, dueAt: later })));
  await enqueueRecipients(client, keys, SHARDS, items);
  const cfg = join(dir, `${prefix.replace(/\W/g, '')}.yaml`);
  writeFileSync(cfg, `redis:\n  url: ${JSON.stringify(redis.url)}\n  prefix: '${prefix}'\n  scheduleShards: ${SHARDS}\n`);
  return { cfg, later };
}

const scores = async (keys: Keys, domain: string): Promise<number[]> => (await client.zrange(keys.ready(domain), 0, -1, 'WITHSCORES')).filter((_, i) => i % 2 === 1).map(Number);
const scheduled = async (keys: Keys, domain: string): Promise<number> => Number(await client.zscore(keys.schedule(shardOf(domain, SHARDS)), domain));

test('--domain: that destination\'s deferred recipients and its schedule are due now, a campaign pointer keeps its time, another destination is untouched; audited', async () => {
  const { prefix, keys } = redis.fresh();
  const { cfg, later } = await deferred(keys, prefix, { 'one.test': 3, 'two.test': 2 });
  await client.zadd(keys.ready('one.test'), later, '@c1');
  const before = Date.now();
  const r = await sluice(['queue', 'flush', '--config', cfg, '--domain', 'ONE.test.']);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, 'one.test: 3 recipients due now');
  assert.match(r.out, '3 recipients made due now');
  const after = Date.now();
  const one = await client.zrange(keys.ready('one.test'), 0, -1, 'WITHSCORES');
  for (let i = 0; i < one.length; i += 2) {
    const score = Number(one[i + 1]);
    if (one[i] === '@c1') assert.is(score, later, 'the campaign pointer waits for its throttle');
    else assert.ok(score >= before && score <= after, `${one[i]} due now: ${score}`);
  }
  assert.ok((await scheduled(keys, 'one.test')) <= after, 'the destination is due in the schedule');
  assert.equal(await scores(keys, 'two.test'), [later, later], 'two.test untouched');
  assert.is(await scheduled(keys, 'two.test'), later);
  const [entry] = await readAudit(client, keys, { limit: 1 });
  assert.is(entry?.action, 'queue.flush');
  assert.is(entry?.target, 'one.test');
});

test('--all: every destination, each once, in steps of 1,000 entries past a run of campaign pointers; --json', async () => {
  const { prefix, keys } = redis.fresh();
  const { cfg, later } = await deferred(keys, prefix, { 'many.test': 2_500, 'few.test': 1 });
  // More pointers than one step looks at, all before the entries: the steps must get past them.
  await client.zadd(keys.ready('many.test'), ...Array.from({ length: 1_200 }, (_, i) => [later - 10_000, `@c${i}`]).flat());
  const r = await sluice(['queue', 'flush', '--config', cfg, '--all', '--json']);
  assert.is(r.code, 0, r.err);
  const out = JSON.parse(r.out) as { flushed: Record<string, number>; total: number };
  assert.equal(out.flushed, { 'many.test': 2_500, 'few.test': 1 });
  assert.is(out.total, 2_501);
  const many = await scores(keys, 'many.test');
  assert.is(many.filter((s) => s < later - 10_000).length, 2_500, 'every entry due now');
  assert.is(many.filter((s) => s === later - 10_000).length, 1_200, 'every pointer kept its time');
  const again = await sluice(['queue', 'flush', '--config', cfg, '--all']);
  assert.match(again.out, '0 recipients made due now');
});

test('a pointer that leaves the range between two steps (its campaign paused, or claimed and throttled to later) costs the walk no entry', async () => {
  const { prefix, keys } = redis.fresh();
  const { later } = await deferred(keys, prefix, { 'walk.test': 6 });
  const ready = keys.ready('walk.test');
  await client.zadd(ready, later - 10_000, '@p1', later - 10_000, '@p2', later - 10_000, '@p3');
  const now = Date.now();
  // Steps of 4: the three pointers and one entry, then the rest.
  let step = await flushStep(client, ready, now, null, 4);
  let moved = step.moved;
  assert.is(moved, 1);
  await client.zrem(ready, '@p1');
  await client.zadd(ready, later + HOUR, '@p2');
  for (let cursor: FlushCursor | null = step.next; cursor; cursor = step.next) {
    step = await flushStep(client, ready, now, cursor, 4);
    moved += step.moved;
  }
  assert.is(moved, 6, 'every entry made due');
  assert.equal(await client.zrange(ready, '(' + now, '+inf', 'BYSCORE'), ['@p3', '@p2'], 'only the pointers wait');
});

test('a running Sluice delivers a flushed recipient at once: deferred by a 451 with its next attempt an hour away, delivered within seconds of the flush', async () => {
  let refused = 0;
  const peer = await startCapturePeer({ onRcpt: () => (refused++ === 0 ? { code: 451, message: '4.3.0 try again later' } : null) });
  const s = await startSluiceFixture(redis, { delivery: { transport: { 'later.test': `${peer.host}:${peer.port}` } }, shaping: { default: { retry: ['1h'] } } });
  try {
    const sent = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'r@later.test', subject: 'flush me', text: 'hello' } });
    assert.is(sent.status, 202, JSON.stringify(sent.body));
    const rcpt = await s.waitRecipient(sent.body.id, 'deferred');
    assert.is(rcpt?.state, 'deferred', JSON.stringify(rcpt));
    const cfg = join(dir, 'running.yaml');
    writeFileSync(cfg, `redis:\n  url: ${JSON.stringify(redis.url)}\n  prefix: '${s.config.redis.prefix}'\n  scheduleShards: ${s.config.redis.scheduleShards}\n`);
    const r = await sluice(['queue', 'flush', '--config', cfg, '--domain', 'later.test']);
    assert.is(r.code, 0, r.err);
    assert.match(r.out, 'later.test: 1 recipient due now');
    const done = await s.waitFinal(sent.body.id, 15_000);
    assert.is(done.recipients[0].state, 'delivered', JSON.stringify(done));
    assert.is(peer.messages.length, 1);
  } finally {
    await s.stop();
    await peer.close();
  }
});

test('usage: neither or both of --domain and --all, or a domain that is not one, is exit 2 naming the problem', async () => {
  for (const argv of [['queue', 'flush'], ['queue', 'flush', '--all', '--domain', 'a.test'], ['queue', 'flush', '--domain', 'not a domain']]) {
    const r = await sluice(argv);
    assert.is(r.code, 2, `${argv.join(' ')}: ${r.out}`);
    assert.match(r.err, /--domain|--all/);
  }
});

test.run();
