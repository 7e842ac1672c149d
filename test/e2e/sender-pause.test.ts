import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { CapturePeer } from '../helpers/smtp-peer.js';
import { startSluiceWithPeer, type PeerSluice, type SluiceFixture } from '../helpers/sluice.js';
import { figuresOf, pauseByOperator, pauseSender, resumeSender } from '../../src/store/reputation.js';

/**
 * A sender paused by the reputation guard: its mail is held by the dispatcher — not sent, not
 * bounced, and without spending attempts — and goes once the sender is resumed. The whole Sluice
 * runs against a capture peer on loopback.
 */
const test = suite('e2e/sender-pause');
let run: PeerSluice;
let peer: CapturePeer;
let s: SluiceFixture;

test.before(async () => {
  run = await startSluiceWithPeer();
  ({ peer, s } = run);
});
test.after(async () => {
  await run?.stop();
});

test("a paused sender's copies are held without an attempt, and go after a resume", async () => {
  const { client } = s.app.redis;
  const keys = s.app.keys;
  await pauseSender(client, keys, 'acme', 'acme.example', 'complaints', figuresOf(1000, 0, 9), { threshold: 0.003, windowHours: 24 }, { now: Date.now(), eventsMaxLen: 1000 });
  const sent = await s.api('/v1/messages', { body: { from: 'a@acme.example', to: 'r@one.test', subject: 'paused', text: 't' } });
  assert.is(sent.status, 202);
  const id = sent.body.id as string;

  let state: { state?: string; attempts?: number } = {};
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    state = (await s.api(`/v1/messages/${id}`)).body?.recipients?.[0] ?? {};
    if (state.state === 'deferred') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.is(state.state, 'deferred', JSON.stringify(state));
  assert.match(JSON.stringify(state), /held: sender paused by the reputation guard/);
  assert.equal(await client.zrange(keys.ready('one.test'), 0, -1), [`${id}:0:0`], 'held without spending an attempt');
  assert.is(peer.messages.length, 0);

  await resumeSender(client, keys, 'acme', 'acme.example', 'test', { now: Date.now(), eventsMaxLen: 1000 });
  await new Promise((r) => setTimeout(r, 1100)); // the dispatcher's one-second view of pauses
  // The held copy is looked at again within a minute; move it to now rather than wait.
  await client.zadd(keys.ready('one.test'), Date.now(), `${id}:0:0`);
  for (let i = 0; i < 4; i++) await client.zadd(keys.schedule(i), Date.now(), 'one.test');
  s.app.dispatcher?.wake();
  const final = await s.waitFinal(id);
  assert.is(final.recipients[0].state, 'delivered');
  assert.is(final.recipients[0].attempts, 1, 'the delivery is its first attempt');
  assert.is(peer.messages.length, 1);
});

test("an operator's pause holds the sender's copies the same way, saying so", async () => {
  const { client } = s.app.redis;
  const keys = s.app.keys;
  await pauseByOperator(client, keys, 'acme', null, { by: 'test', note: 'under review' }, { now: Date.now(), eventsMaxLen: 1000 });
  await new Promise((r) => setTimeout(r, 1100)); // the dispatcher's one-second view of pauses
  const before = peer.messages.length;
  const sent = await s.api('/v1/messages', { body: { from: 'a@acme.example', to: 'r@two.test', subject: 'held by hand', text: 't' } });
  assert.is(sent.status, 202);
  const rc = await s.waitRecipient(sent.body.id as string, 'deferred', 5000);
  assert.is(rc?.state, 'deferred', JSON.stringify(rc));
  assert.match(rc?.response ?? '', 'held: sender paused by the operator (sluice sender pause)');
  assert.is(rc?.attempts ?? 0, 0, 'no attempt spent');
  assert.is(peer.messages.length, before);
  await resumeSender(client, keys, 'acme', null, 'test', { now: Date.now(), eventsMaxLen: 1000 });
});

test.run();
