import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startScriptedPeer, type ScriptedPeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';

/**
 * delivery.tls.verify: true asks for TLS that verifies. A host whose STARTTLS breaks is then never
 * sent to in plain text (the fallback that opportunistic TLS allows, tested in e2e/delivery.test.ts,
 * would be a downgrade here): the message is deferred, and nothing reaches the host.
 */
const test = suite('e2e/tls-verify');

let redis: TestRedis;
let brokenTls: ScriptedPeer;
let s: SluiceFixture;

test.before(async () => {
  redis = await startRedis();
  // Offers STARTTLS, says yes, and hangs up instead of a TLS handshake.
  brokenTls = await startScriptedPeer({ ehlo: ['PIPELINING', 'STARTTLS'], on: { STARTTLS: { reply: '220 2.0.0 ready to start TLS', then: 'drop' } } });
  s = await startSluiceFixture(redis, {
    delivery: { transport: { 'brokentls.test': `${brokenTls.host}:${brokenTls.port}` }, tls: { opportunistic: true, verify: true } },
  });
});

test.after(async () => {
  await s?.stop();
  await brokenTls?.close();
  await redis?.stop();
});

test('with tls.verify a host whose STARTTLS breaks is deferred, never sent to in plain text', async () => {
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'fay@brokentls.test', subject: 'must be TLS', text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const rcpt = await s.waitRecipient(r.body.id, 'deferred');
  assert.is(rcpt?.state, 'deferred', JSON.stringify(rcpt));
  assert.is(rcpt?.attempts, 1);
  assert.match(JSON.stringify(rcpt), /STARTTLS|TLS/, 'the answer says why');
  // Give a plain-text retry (which must not come) the time it would take.
  await new Promise((res) => setTimeout(res, 500));
  // Every session asked for STARTTLS (the fallback's session would not), and none got further.
  assert.ok(brokenTls.connections() >= 1);
  assert.is(brokenTls.commands.filter((c) => c === 'STARTTLS').length, brokenTls.connections(), `no plain-text session: ${JSON.stringify(brokenTls.commands)}`);
  assert.equal(brokenTls.commands.filter((c) => c.startsWith('MAIL')), [], 'no MAIL FROM ever reached the host');
  assert.is(brokenTls.messages.length, 0);
});

test.run();
