/**
 * A transaction that lasts longer than the delivery lease: the peer answers each DATA only after
 * 4.5 s, the lease is 2 s and the reaper looks every 5 s; a claim takes two copies at a time. The holder keeps the leases of the copies it
 * has not sent yet alive while it works, so none is reaped and claimed again by another connection:
 * every recipient reaches the peer once. (Before, leases were extended only between sends, and a
 * copy whose lease ran out during a slow transaction was sent a second time.)
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { startScriptedPeer, type ScriptedPeer } from '../helpers/smtp-peer.js';
import { claim } from '../../src/queue/claim.js';
import { reapExpired } from '../../src/queue/reap.js';
import { ack } from '../../src/queue/outcome.js';

const test = suite('e2e/lease');
const DATA_DELAY_MS = 4_500;

let redis: TestRedis;
let s: SluiceFixture;
/** A plain SMTP peer on loopback (no AUTH, no STARTTLS) with the handlers given; its port. */
async function listenPeer(handlers: Pick<SMTPServerOptions, 'onData' | 'onClose'>): Promise<{ server: SMTPServer; port: number }> {
  const server = new SMTPServer({ logger: false, authOptional: true, disabledCommands: ['AUTH', 'STARTTLS'], closeTimeout: 50, ...handlers });
  server.on('error', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.server.address();
  return { server, port: typeof address === 'object' && address ? address.port : 0 };
}

/** slow.test, late.test, idle.test */
const peers: SMTPServer[] = [];
/** Accepts the connection and never greets. */
let mute: ScriptedPeer;
/** RCPT TO addresses slow.test accepted a message for, in order, across every session. */
const delivered: string[] = [];
/** late.test holds each DATA reply until the test lets it go (answerLate), then answers 451. */
let dataArrived: () => void = () => undefined;
let answerLate: () => void = () => undefined;
/** Sessions of idle.test (which answers at once) that ended. */
let idleClosed = 0;

test.before(async () => {
  redis = await startRedis();
  const slow = await listenPeer({
    onData(stream, session, cb) {
      stream.resume();
      stream.on('end', () => {
        setTimeout(() => {
          delivered.push(...session.envelope.rcptTo.map((r) => r.address));
          cb();
        }, DATA_DELAY_MS);
      });
    },
  });
  const late = await listenPeer({
    onData(stream, _session, cb) {
      stream.resume();
      stream.on('end', () => {
        answerLate = () => cb(Object.assign(new Error('4.7.1 try again later'), { responseCode: 451 }));
        dataArrived();
      });
    },
  });
  const idle = await listenPeer({
    onData(stream, _session, cb) {
      stream.resume();
      stream.on('end', () => cb());
    },
    onClose() {
      idleClosed++;
    },
  });
  peers.push(slow.server, late.server, idle.server);
  mute = await startScriptedPeer({ greeting: 'stall' });
  s = await startSluiceFixture(redis, {
    // Two copies per claim: the first batch is full, so a second connection starts, and a reaped
    // copy is claimed by a new connection while the first still holds it.
    delivery: { transport: { 'slow.test': `127.0.0.1:${slow.port}`, 'mute.test': `${mute.host}:${mute.port}`, 'late.test': `127.0.0.1:${late.port}`, 'idle.test': `127.0.0.1:${idle.port}` }, lease: '2s', claimBatch: 2, timeouts: { greeting: '8s' } },
  });
});

test.after(async () => {
  await s?.stop();
  for (const p of peers) await new Promise<void>((resolve) => p.close(() => resolve()));
  await mute?.close();
  await redis?.stop();
});

test('copies of a batch whose transactions outlast the lease are each delivered once', async () => {
  const rcpts = ['r0@slow.test', 'r1@slow.test', 'r2@slow.test'];
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: rcpts, subject: 'slow', text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const final = await s.waitFinal(r.body.id, 40_000);
  assert.equal(final.recipients.map((x: { state: string }) => x.state), rcpts.map(() => 'delivered'));
  // A little longer than the reaper's interval: a copy reaped late would be sent again now.
  await new Promise((resolve) => setTimeout(resolve, 6_000));
  assert.equal([...delivered].sort(), rcpts, `each recipient once: ${delivered.join(', ')}`);
});

test("a holder whose lease ran out and was claimed again: its late 4xx neither requeues nor rewrites the other holder's copy", async () => {
  const client = s.app.redis.client;
  const keys = s.app.keys;
  const d = 'late.test';
  const arrived = new Promise<void>((resolve) => { dataArrived = resolve; });
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'x@late.test', subject: 'late', text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  await arrived;
  // The first holder (Sluice) waits for the reply to DATA. Its lease runs out meanwhile (as if it had
  // been unable to reach Redis), the reaper returns the copy, and another holder claims it.
  const member = `${r.body.id as string}:0:0`;
  assert.equal(await client.zrange(keys.leases(d), 0, -1), [member], 'leased by the first holder');
  await client.zadd(keys.leases(d), 1, member);
  assert.is(await reapExpired(client, keys, d, Date.now(), 10), 1);
  const [second] = (await claim(client, keys, { domain: d, max: 1, leaseMs: 60_000, now: Date.now() })).entries;
  assert.ok(second, 'claimed again');
  const deferred = async (): Promise<number> => (await s.app.metrics.deliveryAttempts.get()).values.filter((v) => v.labels['result'] === 'deferred').reduce((a, v) => a + v.value, 0);
  const before = await deferred();
  // Now the first holder's transaction ends with a 4xx: its retry names the old lease.
  answerLate();
  for (let i = 0; i < 200 && (await deferred()) === before; i++) await new Promise((resolve) => setTimeout(resolve, 25));
  assert.is(await deferred(), before + 1, 'the first holder settled its attempt');
  assert.equal(await client.zrange(keys.ready(d), 0, -1), [], 'nothing requeued for a second send');
  assert.equal(await client.zrange(keys.leases(d), 0, -1), [member], 'the second holder still holds the copy');
  assert.is.not(await client.hget(keys.rcptState(d, r.body.id as string, 0), 'state'), 'deferred', 'the record is not rewritten');
  // The second holder delivers: that is the copy's outcome.
  assert.is(await ack(client, keys, second, { now: Date.now(), code: 250, enhanced: '2.0.0', response: '250 ok', recordTtlMs: 60_000 }), 2);
  assert.is(await client.hget(keys.rcptState(d, r.body.id as string, 0), 'state'), 'delivered');
});

test("a connection still waiting for the server's greeting keeps its connection slot past the lease", async () => {
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'x@mute.test', subject: 'mute', text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const conns = s.app.keys.conns('default:mute.test');
  const client = s.app.redis.client;
  // The connection is being set up: its slot is held.
  for (let i = 0; i < 100 && (await client.zcard(conns)) === 0; i++) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.is(await client.zcard(conns), 1, 'a slot taken for the connection');
  // Two leases later (2 s each) the greeting has still not come (the timeout is 8 s): the slot must
  // still be live, or another connection could take the scope past its limit meanwhile.
  await new Promise((resolve) => setTimeout(resolve, 4_500));
  assert.is(await client.zcount(conns, `(${Date.now()}`, '+inf'), 1, 'the slot is renewed while the connection waits');
});

test('a connection whose slot lapsed (another may hold it now) claims nothing more and ends', async () => {
  const client = s.app.redis.client;
  const conns = s.app.keys.conns('default:idle.test');
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'y@idle.test', subject: 'idle', text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  await s.waitFinal(r.body.id, 20_000);
  // Delivered: the connection stays open for mail that trickles in (timeouts.idle, 30 s), its slot renewed.
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  assert.is(idleClosed, 0, 'the connection idles, open');
  const [slot] = await client.zrange(conns, 0, -1);
  assert.ok(slot, 'its slot is held');
  // The slot lapses (as when Redis was out of reach for longer than a lease) and is gone.
  await client.del(conns);
  for (let i = 0; i < 100 && idleClosed === 0; i++) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(idleClosed >= 1, 'the connection ended within a renewal or two, not at its idle timeout');
  // (A fresh connection may look at the destination again, under a slot of its own.)
  assert.is(await client.zscore(conns, slot as string), null, 'and did not take its slot back');
});

test.run();
