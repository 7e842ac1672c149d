import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { CapturePeer } from '../helpers/smtp-peer.js';
import { startSluiceWithPeer, type PeerSluice, type SluiceFixture } from '../helpers/sluice.js';
import { closeAccount, reopenAccount } from '../../src/store/account-state.js';
import { persistMessage } from '../../src/ingress/persist.js';
import { newId } from '../../src/core/ids.js';
import { DAY } from '../../src/core/time.js';

/**
 * A closed account's queued mail is held by the dispatcher — not sent, not bounced, not expired —
 * while every other account's mail flows; the hold shows in the recipient's state. The whole Sluice
 * runs (ingress, delivery, housekeeping) against a capture peer on loopback.
 */
const test = suite('e2e/account-close');
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

test("a closed account's queued copies are held; open accounts deliver; the close is seen within a second", async () => {
  const sent = await s.api('/v1/messages', { body: { from: 'a@acme.example', to: 'r@one.test', subject: 'before', text: 't' } });
  assert.is(sent.status, 202);
  await s.waitFinal(sent.body.id);
  assert.is(peer.messages.length, 1, 'mail flows while the account is open');

  const { client } = s.app.redis;
  await closeAccount(client, s.app.keys, 'acme', { now: Date.now(), windowMs: 90 * DAY, by: 'test' });
  await new Promise((r) => setTimeout(r, 1200)); // the processes' one-second view of closed accounts
  const refused = await s.api('/v1/messages', { body: { from: 'a@acme.example', to: 'r@one.test', subject: 'after', text: 't' } });
  assert.is(refused.status, 403);
  assert.is(refused.body.code, 'SLUICE_ACCOUNT_CLOSED');

  // Mail queued before the close (here: written straight to the queue) is held, not sent.
  const id = newId();
  await persistMessage(client, s.app.keys, s.config.redis.scheduleShards, {
    id, account: 'acme', source: 'http', kind: 'raw', from: 'a@acme.example', fromDomain: 'acme.example',
    rcpts: [{ address: 'r@one.test', domain: 'one.test' }], acceptedAt: Date.now(), tags: [], metadata: {},
    body: 'From: a@acme.example\r\nTo: r@one.test\r\nSubject: queued\r\n\r\nheld\r\n',
  });
  s.app.dispatcher?.wake();
  let state: { state?: string; lastResponse?: string; response?: string } = {};
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const st = await s.api(`/v1/messages/${id}`);
    state = st.body?.recipients?.[0] ?? {};
    if (state.state === 'deferred') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.is(state.state, 'deferred', JSON.stringify(state));
  assert.match(JSON.stringify(state), /held: the account is closed/);
  await new Promise((r) => setTimeout(r, 300));
  assert.is(peer.messages.length, 1, 'nothing more reached the peer');
  const due = await client.zrange(s.app.keys.ready('one.test'), 0, -1, 'WITHSCORES');
  assert.ok(Number(due[1]) - Date.now() > 60_000, 'the held copy waits minutes, not a retry step');
  assert.is(due[0], `${id}:0:0`, 'held without spending an attempt');

  assert.ok(await reopenAccount(client, s.app.keys, 'acme'));
  await new Promise((r) => setTimeout(r, 1200));
  const again = await s.api('/v1/messages', { body: { from: 'a@acme.example', to: 'r@one.test', subject: 'reopened', text: 't' } });
  assert.is(again.status, 202, 'reopened: it sends again');
  await s.waitFinal(again.body.id);
  assert.is(peer.messages.length, 2);
});

test.run();
