import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { replyLosingRelay, scriptSha, startRedis, type TestRedis } from '../helpers/redis.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { startScriptedPeer, type ScriptedPeer } from '../helpers/smtp-peer.js';

/**
 * A reply Redis sent that never reached Sluice (a dropped connection, a proxy, Redis's `timeout`):
 * ioredis sends the command again, so it runs twice. A message to two recipients on a single Redis:
 * alice's server refuses her at once (550), bob's defers him once (451) then takes him. The count of
 * alice's bounce on the message, run twice, took two recipients off its pending count: the message
 * read as finished, its body was deleted, and bob never got his copy. Her bounce run twice answered
 * "nothing done" the second time, and the count was never made: the message was kept for good.
 */
const test = suite('delivery/lost-reply');
let redis: TestRedis;
let relay: Awaited<ReturnType<typeof replyLosingRelay>>;
let s: SluiceFixture | undefined;
let peers: ScriptedPeer[] = [];

test.before(async () => {
  redis = await startRedis();
  relay = await replyLosingRelay(redis);
});
test.after.each(async () => {
  await s?.stop();
  s = undefined;
  await Promise.all(peers.map((p) => p.close()));
  peers = [];
});
test.after(async () => {
  await relay.close();
  await redis.stop();
});

/** Sends the message with the reply of the first request that `lose` matches lost; returns what came of it. */
async function sendLosing(lose: (request: string) => boolean) {
  const bouncing = await startScriptedPeer({ on: { RCPT: '550 5.1.1 <alice@bounce.test>: user unknown' } });
  const later = await startScriptedPeer({ on: { RCPT: ['451 4.3.0 try again later', '250 2.1.5 ok'] } });
  peers.push(bouncing, later);
  const at = (p: ScriptedPeer) => `${p.host}:${p.port}`;
  // A 2 s lease: the reaper makes a count left owed 2 s after its outcome, on its next visit (5 s).
  s = await startSluiceFixture(relay.redis, { delivery: { lease: '2s', transport: { 'bounce.test': at(bouncing), 'later.test': at(later) } } });
  const before = relay.lost;
  relay.lose(lose);
  const sent = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: ['alice@bounce.test', 'bob@later.test'], subject: 'hello', text: 'hello' } });
  assert.is(sent.status, 202, JSON.stringify(sent.body));
  const id = sent.body.id as string;
  const final = await s.waitFinal(id, 20_000);
  await s.waitSettled(id, 20_000);
  const states = Object.fromEntries((final.recipients as { address: string; state: string }[]).map((r) => [r.address, r.state]));
  const client = s.app.redis.client;
  const events = (await client.xrange(s.app.keys.events(), '-', '+')).map(([, f]) => `${f[1]}:${f[f.indexOf('idx') + 1]}`);
  return { id, states, lost: relay.lost - before, delivered: later.messages.length, pending: await client.hget(s.app.keys.msgMeta(id), 'pending'), events };
}

test('the count of a bounce on its message, run twice, counts once: the other recipient still gets the message', async () => {
  const r = await sendLosing((req) => req.includes(scriptSha('finishCopy')));
  assert.is(r.lost, 1, 'a reply was lost');
  assert.equal(r.states, { 'alice@bounce.test': 'bounced', 'bob@later.test': 'delivered' });
  assert.is(r.delivered, 1, 'bob got his copy, once');
  assert.is(r.pending, '0', 'each recipient counted off once');
});

test('a bounce run twice (the second finds it done) still has its count made: the message finishes, its body goes', async () => {
  const r = await sendLosing((req) => req.includes(scriptSha('bounce')));
  assert.is(r.lost, 1, 'a reply was lost');
  assert.equal(r.states, { 'alice@bounce.test': 'bounced', 'bob@later.test': 'delivered' });
  assert.is(r.delivered, 1);
  assert.is(r.pending, '0', 'the bounce counted once (by the reaper: the count it owed)');
  assert.equal(r.events.filter((e) => e.startsWith('bounced:')), ['bounced:0'], 'one bounced event');
});

test('a cancel run twice (the second finds it done) still has its count made: the message finishes', async () => {
  const slow = await startScriptedPeer({ on: { RCPT: '451 4.3.0 try again later' } });
  peers.push(slow);
  s = await startSluiceFixture(relay.redis, { delivery: { lease: '2s', transport: { 'slow.test': `${slow.host}:${slow.port}` } }, shaping: { default: { retry: ['1h'] } } });
  const sent = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: ['carol@slow.test'], subject: 'hello', text: 'hello' } });
  assert.is(sent.status, 202);
  const id = sent.body.id as string;
  await s.waitRecipient(id, 'deferred');
  const before = relay.lost;
  relay.lose((req) => req.includes(scriptSha('bounce')));
  const r = await s.api(`/v1/messages/${id}`, { method: 'DELETE' });
  assert.is(r.status, 200, JSON.stringify(r.body));
  assert.is(relay.lost - before, 1, 'a reply was lost');
  await s.waitSettled(id, 20_000);
  assert.is(await s.app.redis.client.hget(s.app.keys.msgMeta(id), 'pending'), '0');
  assert.is((await s.api(`/v1/messages/${id}`)).body.recipients[0].state, 'cancelled');
});

test.run();
