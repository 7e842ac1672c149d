import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startScriptedPeer, type ScriptedPeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';

/**
 * A server that offers CHUNKING but does not know BDAT (a broken server, or a middlebox passing the
 * keyword through) answers 502 and then reads the message as commands. That is not the message's
 * fault: the copy is deferred, not bounced, and the host gets DATA from then on. (BDAT to a server
 * that does know it is tested against Postfix in delivery/bdat.test.ts.)
 */
const test = suite('e2e/chunking');

let redis: TestRedis;
let liar: ScriptedPeer;
let s: SluiceFixture;

test.before(async () => {
  redis = await startRedis();
  // No BDAT handler: the scripted peer answers it, and every line of the message after it, with 502.
  liar = await startScriptedPeer({ ehlo: ['PIPELINING', 'CHUNKING'] });
  s = await startSluiceFixture(redis, { delivery: { transport: { 'liar.test': `${liar.host}:${liar.port}` } } });
});

test.after(async () => {
  await s?.stop();
  await liar?.close();
  await redis?.stop();
});

test('BDAT refused although CHUNKING was offered: the copy is deferred, not bounced, and the next message goes with DATA', async () => {
  const first = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'ann@liar.test', subject: 'one', text: 'x' } });
  assert.is(first.status, 202);
  const r1 = await s.waitRecipient(first.body.id, 'deferred');
  assert.is(r1?.state, 'deferred', JSON.stringify(r1));
  assert.match(r1?.response ?? '', 'BDAT refused');
  assert.ok(liar.commands.some((c) => c.startsWith('BDAT ')), 'BDAT was tried');

  const second = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'bob@liar.test', subject: 'two', text: 'y' } });
  const r2 = await s.waitRecipient(second.body.id, 'delivered');
  assert.is(r2?.state, 'delivered', JSON.stringify(r2));
  assert.is(r2?.attempts, 1);
  assert.ok(liar.commands.includes('DATA'), 'sent with DATA');
  assert.is(liar.commands.filter((c) => c.startsWith('BDAT ')).length, 1, 'BDAT not tried again');
  // The first copy's retry comes 300 ms after its deferral: on a slow machine it may have gone too
  // by now (with DATA as well: BDAT was tried once). The second went once, and nothing else went.
  const subjects = liar.messages.map((m) => /^Subject: (.*)$/m.exec(m.toString())?.[1]);
  assert.equal(subjects.filter((x) => x === 'two'), ['two'], `delivered: ${JSON.stringify(subjects)}`);
  assert.ok(subjects.every((x) => x === 'one' || x === 'two') && new Set(subjects).size === subjects.length, `delivered: ${JSON.stringify(subjects)}`);
});

test.run();
