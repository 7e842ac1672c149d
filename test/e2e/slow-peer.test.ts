/**
 * A peer that answers slowly (a tarpit holds each reply up to the timeouts) must not starve other
 * destinations of this process's claim budget (delivery.maxClaimed). Here the budget is one claim
 * (maxClaimed = claimBatch = 4), each destination has one connection, and slow.test's peer holds
 * its 250 after the first message until the test lets it go, then answers each later one after
 * 400 ms, longer than claimWindow (300 ms). The slow connection gives back the copies of its claim
 * it has not started, so fast.test's mail goes while the first slow transaction is still waiting,
 * and then claims one copy at a time. (Before, the slow connection held its four copies, the whole
 * budget, until its peer had answered all four, and fast.test's connection waited for them.)
 */
import { suite } from 'uvu';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { until } from '../helpers/fault-load.js';
import type { Semaphore } from '../../src/core/semaphore.js';
import { createList } from '../../src/store/contacts.js';
import { importContacts } from '../../src/store/contact-import.js';

const test = suite('e2e/slow-peer');
const LATER_REPLY_MS = 400;

let redis: TestRedis;
/** The tracking key's folder (campaign copies carry signed unsubscribe links). */
let dir: string;
let s: SluiceFixture;
let slow: CapturePeer;
let fast: CapturePeer;
/** Lets the slow peer answer its first message. */
let answerFirst: () => void = () => undefined;
let slowReceived = 0;
/** slowc.test's peer (a campaign's copies): holds its reply to the first message until the test lets it go. */
let slowCampaign: CapturePeer;
let answerFirstCampaign: () => void = () => undefined;
let slowCampaignReceived = 0;

test.before(async () => {
  redis = await startRedis();
  slow = await startCapturePeer({
    onData: () => new Promise((resolve) => {
      if (slowReceived++ === 0) answerFirst = () => resolve(null);
      else setTimeout(() => resolve(null), LATER_REPLY_MS);
    }),
  });
  fast = await startCapturePeer();
  slowCampaign = await startCapturePeer({
    onData: () => new Promise((resolve) => {
      if (slowCampaignReceived++ === 0) answerFirstCampaign = () => resolve(null);
      else resolve(null);
    }),
  });
  dir = mkdtempSync(join(tmpdir(), 'sluice-slow-peer-'));
  writeFileSync(join(dir, 'k1.key'), randomBytes(32), { mode: 0o600 });
  s = await startSluiceFixture(redis, {
    tracking: { host: '127.0.0.1', port: 0, publicBaseUrl: 'http://127.0.0.1', keys: [{ id: 'k1', secretFile: join(dir, 'k1.key'), notAfter: null }], signWith: 'k1' },
    delivery: { transport: { 'slow.test': `127.0.0.1:${slow.port}`, 'fast.test': `127.0.0.1:${fast.port}`, 'slowc.test': `127.0.0.1:${slowCampaign.port}` }, claimBatch: 4, maxClaimed: 4, claimWindow: '300ms' },
    shaping: { default: { connections: 1 } },
  });
});

test.after(async () => {
  answerFirst();
  answerFirstCampaign();
  await s?.stop();
  await slowCampaign?.close();
  await slow?.close();
  await fast?.close();
  await redis?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Copies rendered so far (one observation of sluice_render_duration_seconds each). */
function rendered(): number {
  return s.app.metrics.renderDuration.get().values.find((v) => v.metricName === 'sluice_render_duration_seconds_count')?.value ?? 0;
}

test("a slow peer gives back the copies it has not started: another destination's mail goes meanwhile; each slow copy goes once, with one attempt", async () => {
  const slowRcpts = [0, 1, 2, 3, 4, 5].map((i) => `s${i}@slow.test`);
  const a = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: slowRcpts, subject: 'slow', text: 'x' } });
  assert.is(a.status, 202, JSON.stringify(a.body));
  // Its connection claimed four copies, the whole budget, and the first transaction waits for its reply.
  assert.ok(await until(() => slowReceived === 1, 10_000), 'the slow peer got the first message');

  const fastRcpts = ['f0@fast.test', 'f1@fast.test', 'f2@fast.test'];
  const b = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: fastRcpts, subject: 'fast', text: 'x' } });
  assert.is(b.status, 202, JSON.stringify(b.body));
  const fastFinal = await s.waitFinal(b.body.id, 8_000);
  assert.equal(fastFinal.recipients.map((x: { state: string }) => x.state), ['delivered', 'delivered', 'delivered']);
  assert.is(slow.messages.length, 0, 'fast.test was served while the first slow transaction still waited for its reply');
  const client = s.app.redis.client;
  assert.is(await client.zcard(s.app.keys.leases('slow.test')), 1, 'only the copy on the wire is still claimed');
  assert.is(await client.zcard(s.app.keys.ready('slow.test')), 5, 'the three given back are due again, with the two never claimed');
  // Render slots (MAX_RENDERED, shared by every connection) are held by rendered copies not yet
  // sent: now only the one on the wire. (Each batch gave one back that it never took, and the bound
  // grew by one a batch under load.)
  // (Read once fast.test's connection is done with its batch: its last copy is settled.)
  await s.waitSettled(b.body.id);
  const slots = (s.app.dispatcher as unknown as { renderSlots: Semaphore }).renderSlots;
  await until(() => slots.permits - slots.free === 1, 2_000, 10);
  assert.is(slots.permits - slots.free, 1, 'one render slot taken: the copy on the wire');

  answerFirst();
  const slowFinal = await s.waitFinal(a.body.id, 15_000);
  assert.equal(slowFinal.recipients.map((x: { state: string }) => x.state), slowRcpts.map(() => 'delivered'));
  assert.equal(slowFinal.recipients.map((x: { attempts: number }) => x.attempts), slowRcpts.map(() => 1), 'giving back counted no attempt');
  assert.equal(slow.messages.flatMap((m) => m.envelope.to).sort(), slowRcpts, 'each slow recipient once');
  // The first claim's four, then one copy per claim at the slow peer's pace, and fast.test's three:
  // a claim of four again would have rendered copies only to give them back.
  assert.is(rendered(), 4 + 5 + 3);
});

test("a slow peer's claim of campaign copies: those given back get their campaign throttle tokens back, and each copy sent takes one", async () => {
  const client = s.app.redis.client;
  const keys = s.app.keys;
  const list = await createList(client, keys, 'acme', 'slow-campaign');
  const rows = [0, 1, 2, 3].map((i) => JSON.stringify({ email: `c${i}@slowc.test` })).join('\n');
  const imported = await importContacts(client, keys, 'acme', list.id, (async function* () { yield rows; })(), { format: 'ndjson', limits: { maxBytes: 1_000_000, maxRows: 100 } });
  assert.is(imported.imported, 4);
  const created = await s.api('/v1/campaigns', { body: { from: 'news@acme.example', subject: 'Slow', text: 'Hi', listId: list.id, sendAt: 'now', throttle: { perHour: 10 } } });
  assert.is(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  const bucket = keys.bucket(`campaign:${id}`);
  const tokens = async (): Promise<number> => Number(await client.hget(bucket, 'h'));
  // One claim of four (claimBatch) took four tokens; the first copy waits for its reply, and past the
  // claim window the three not started go back to the queue, with their tokens.
  assert.ok(await until(() => slowCampaignReceived === 1, 10_000), 'the first copy is on the wire');
  let left = await tokens();
  for (let i = 0; i < 100 && left <= 8.5; i++) left = await new Promise((r) => setTimeout(r, 100)).then(tokens);
  assert.ok(left > 8.5, `${left} of 10 tokens left while the first copy waits: the three given back were refunded`);
  assert.is(await client.zcard(keys.leases('slowc.test')), 1, 'only the copy on the wire is still claimed');
  answerFirstCampaign();
  await until(() => slowCampaign.messages.length === 4, 15_000);
  assert.equal(slowCampaign.messages.map((m) => m.envelope.to[0]).sort(), ['c0@slowc.test', 'c1@slowc.test', 'c2@slowc.test', 'c3@slowc.test']);
  left = await tokens();
  assert.ok(left > 5.5 && left < 6.5, `${left} of 10 tokens left: one for each of the four copies sent`);
});

test('shutdown gives back the copies claimed and not attempted with their rate tokens; the copy on the wire counts against the rate', async () => {
  // Its own Sluice: this one is stopped in the test. held.test's peer never answers its first message.
  let received = 0;
  const held = await startCapturePeer({ onData: () => new Promise(() => void received++) });
  const f = await startSluiceFixture(redis, {
    // No claim window within the test: the copies not started go back at the shutdown, not before.
    delivery: { transport: { 'held.test': `127.0.0.1:${held.port}` }, claimWindow: '10m' },
    shaping: { default: { connections: 1, scope: 'domain', rate: { perSecond: null, perMinute: null, perHour: 100 } } },
  });
  const bucket = f.app.keys.bucket('default:held.test');
  const leases = f.app.keys.leases('held.test');
  const client = redis.client();
  try {
    const rcpts = [0, 1, 2, 3, 4].map((i) => `h${i}@held.test`);
    const a = await f.api('/v1/messages', { body: { from: 'news@acme.example', to: rcpts, subject: 'held', text: 'x' } });
    assert.is(a.status, 202, JSON.stringify(a.body));
    assert.ok(await until(() => received === 1, 10_000), 'the first copy is on the wire');
    assert.is(await client.zcard(leases), 5, 'all five claimed together');
    assert.ok(Number(await client.hget(bucket, 'h')) < 95.5, 'a token taken for each copy claimed');
  } finally {
    // The grace runs out on the open transaction (its connection is closed: an attempt), and the
    // four copies never started go back to the queue.
    await f.stop();
    await held.close();
  }
  assert.is(await client.zcard(leases), 0, 'nothing left claimed');
  const left = Number(await client.hget(bucket, 'h'));
  assert.ok(left > 98.5 && left < 99.5, `${left} of 100 tokens left: the four given back were refunded, the attempted one was not`);
});

test.run();
