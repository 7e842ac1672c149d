import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SMTPServer } from 'smtp-server';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';

/**
 * An erasure while the copy is at the remote's RCPT: the remote's answer comes after it. The
 * outcome is dropped (the erasure took the lease), and what it would write about the address must
 * not bring the address back: a 550 5.1.1 put it, in plain text, on the global suppression list.
 */
const test = suite('e2e/erase-inflight');
let redis: TestRedis;
let s: SluiceFixture;
let peer: SMTPServer;
let atRcpt!: () => void;
const reachedRcpt = new Promise<void>((r) => (atRcpt = r));
let answer!: () => void;
const erased = new Promise<void>((r) => (answer = r));
let answered = false;

test.before(async () => {
  redis = await startRedis();
  peer = new SMTPServer({
    logger: false, authOptional: true, disabledCommands: ['AUTH', 'STARTTLS'],
    onRcptTo(_a, _s, cb) {
      atRcpt();
      void erased.then(() => {
        answered = true;
        cb(Object.assign(new Error('5.1.1 <ann@one.test>: user unknown'), { responseCode: 550 }));
      });
    },
  });
  await new Promise<void>((r) => peer.listen(0, '127.0.0.1', () => r()));
  const port = (peer.server.address() as { port: number }).port;
  s = await startSluiceFixture(redis, { delivery: { transport: { 'one.test': `127.0.0.1:${port}` } } });
});

test.after(async () => {
  answer();
  await s?.stop();
  await new Promise<void>((r) => peer.close(() => r()));
  await redis?.stop();
});

test("a hard bounce that comes after the recipient's erasure does not put the address back on a list", async () => {
  const sent = await s.api('/v1/messages', { body: { from: 'a@acme.example', to: 'ann@one.test', subject: 'hello', text: 't' } });
  assert.is(sent.status, 202, JSON.stringify(sent.body));
  await reachedRcpt;
  const del = await s.api('/v1/recipients/ann@one.test', { method: 'DELETE' });
  assert.is(del.status, 200, JSON.stringify(del.body));
  assert.is(del.body.erased.queued, 1, 'the copy in flight was erased');
  answer();
  const { client } = s.app.redis;
  // The dispatcher has the 550 and has settled it (a no-op) once the connection's lease is given up.
  for (let i = 0; i < 100 && !(answered && (await client.zcard(s.app.keys.leases('one.test'))) === 0); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(answered);
  await new Promise((r) => setTimeout(r, 300));
  const global = await client.hgetall(s.app.keys.suppression('*'));
  assert.equal(Object.keys(global), [], JSON.stringify(global));
  const again = await s.api('/v1/recipients/ann@one.test', { method: 'DELETE' });
  assert.is(again.body.erased.suppressions, 0, 'nothing about the address was written after the erasure');
});

test.run();
