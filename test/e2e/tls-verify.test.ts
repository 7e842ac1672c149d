import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, startScriptedPeer, type CapturePeer, type ScriptedPeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';

/**
 * delivery.tls.verify: true asks for mandatory TLS that verifies (Postfix's 'verify' level). A host
 * whose STARTTLS breaks is then never sent to in plain text (the fallback that opportunistic TLS
 * allows, tested in e2e/delivery.test.ts, would be a downgrade here), nor a host that does not offer
 * STARTTLS at all (or whose offer a man in the middle struck), nor one whose certificate does not
 * verify: the message is deferred (4.7.x), and nothing reaches the host. These hosts are reached by
 * the transport map; e2e/tls-policy.test.ts has MX routes and per-rule policies.
 */
const test = suite('e2e/tls-verify');

let redis: TestRedis;
let brokenTls: ScriptedPeer;
/** No STARTTLS offered. */
let plain: CapturePeer;
/** STARTTLS with smtp-server's self-signed certificate. */
let selfSigned: CapturePeer;
let s: SluiceFixture;

test.before(async () => {
  redis = await startRedis();
  // Offers STARTTLS, says yes, and hangs up instead of a TLS handshake.
  brokenTls = await startScriptedPeer({ ehlo: ['PIPELINING', 'STARTTLS'], on: { STARTTLS: { reply: '220 2.0.0 ready to start TLS', then: 'drop' } } });
  plain = await startCapturePeer();
  selfSigned = await startCapturePeer({ tls: true });
  s = await startSluiceFixture(redis, {
    delivery: {
      transport: {
        'brokentls.test': `${brokenTls.host}:${brokenTls.port}`,
        'plain.test': `${plain.host}:${plain.port}`,
        'selfsigned.test': `${selfSigned.host}:${selfSigned.port}`,
      },
      tls: { opportunistic: true, verify: true },
    },
  });
});

test.after(async () => {
  await s?.stop();
  await Promise.all([brokenTls?.close(), plain?.close(), selfSigned?.close()]);
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
  // Every session asked for STARTTLS after its EHLO (the fallback's session would not), and none got
  // further. A retry's session may be between its EHLO and its STARTTLS as this looks: the last EHLO
  // may stand alone (counting sessions against STARTTLS commands failed now and then for that).
  assert.ok(brokenTls.connections() >= 1);
  const cmds = brokenTls.commands;
  assert.ok(cmds.every((c, i) => c !== 'EHLO sluice.test' || i === cmds.length - 1 || cmds[i + 1] === 'STARTTLS'), `no plain-text session: ${JSON.stringify(cmds)}`);
  assert.equal(brokenTls.commands.filter((c) => c.startsWith('MAIL')), [], 'no MAIL FROM ever reached the host');
  assert.is(brokenTls.messages.length, 0);
});

test('with tls.verify a host that does not offer STARTTLS gets nothing: deferred 4.7.4, naming the host', async () => {
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'gil@plain.test', subject: 'must be TLS', text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const rcpt = await s.waitRecipient(r.body.id, 'deferred');
  assert.is(rcpt?.state, 'deferred', JSON.stringify(rcpt));
  assert.is(rcpt.code, null, 'our verdict, not the host\'s');
  assert.is(rcpt.enhanced, '4.7.4');
  assert.is(rcpt.response, `TLS is required, but was not offered by host ${plain.host}:${plain.port}`);
  // Give a plain-text retry (which must not come) the time it would take.
  await new Promise((res) => setTimeout(res, 500));
  assert.ok(plain.connections() >= 1);
  assert.is(plain.messages.length, 0, 'no message in plain text');
});

test('with tls.verify a certificate that does not verify gets nothing: deferred 4.7.5', async () => {
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'hep@selfsigned.test', subject: 'must be TLS', text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const rcpt = await s.waitRecipient(r.body.id, 'deferred');
  assert.is(rcpt?.state, 'deferred', JSON.stringify(rcpt));
  assert.is(rcpt.enhanced, '4.7.5');
  assert.match(rcpt.response, /^TLS is required, but STARTTLS failed with 127\.0\.0\.1:\d+: .*certificate/);
  await new Promise((res) => setTimeout(res, 500));
  assert.ok(selfSigned.connections() >= 1);
  assert.is(selfSigned.messages.length, 0);
});

test.run();
