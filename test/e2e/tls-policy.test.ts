/**
 * Per-destination TLS policy (shaping.rules[].tls), with real peers: MX hosts at 127.0.0.2, .3, …
 * (all loopback, followed with delivery.dns.loopbackMx) on one ephemeral port, named by the DNS stub.
 *
 *   127.0.0.2  plain     an MX without STARTTLS (PIPELINING, no TLS at all)
 *   127.0.0.3  selfsigned an MX with STARTTLS and smtp-server's self-signed certificate
 *   127.0.0.4  refusing  offers STARTTLS, answers it 454
 *   127.0.0.5  chunking  no STARTTLS, PIPELINING and CHUNKING (BDAT would carry the message in the first write)
 *
 * Under 'encrypt' and 'verify' nothing goes in plain text: a host without STARTTLS, or that refuses
 * it, or (verify) whose certificate does not verify, is skipped for the next MX host, and with no
 * other the recipient is deferred with 4.7.4 / 4.7.5 and a text naming the host. 'may' (the default,
 * delivery.tls) is opportunistic as before.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { request } from 'undici';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, startOnOnePort, startScriptedPeer, type CapturePeer, type ScriptedPeer } from '../helpers/smtp-peer.js';
import { loopbackIp, mxZone, startDnsStub, type DnsStub } from '../helpers/dns-stub.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';

const test = suite('e2e/tls-policy');

let redis: TestRedis;
let dns: DnsStub;
let s: SluiceFixture;
let port = 0;
let plain: CapturePeer;
let selfSigned: CapturePeer;
let refusing: ScriptedPeer;
let chunking: ScriptedPeer;

const ip = loopbackIp;

async function startPeers(): Promise<void> {
  await startOnOnePort(async (track) => {
    plain = track(await startCapturePeer({ host: ip(2) }));
    port = plain.port;
    selfSigned = track(await startCapturePeer({ host: ip(3), port, tls: true }));
    refusing = track(await startScriptedPeer({ ehlo: ['PIPELINING', 'STARTTLS'], on: { STARTTLS: '454 4.7.0 TLS not available due to local problem' } }, { host: ip(4), port }));
    chunking = track(await startScriptedPeer({ ehlo: ['PIPELINING', 'CHUNKING'] }, { host: ip(5), port }));
  });
}

test.before(async () => {
  redis = await startRedis();
  await startPeers();
  dns = await startDnsStub({
    ...mxZone('plain-may.test', [2]),
    ...mxZone('plain-enc.test', [2]),
    ...mxZone('plain-ver.test', [2]),
    ...mxZone('self-ver.test', [3]),
    ...mxZone('self-enc.test', [3]),
    ...mxZone('self-may.test', [3]),
    ...mxZone('refused-enc.test', [4]),
    ...mxZone('bdat-enc.test', [5]),
    // The first MX has no STARTTLS, the second has: an encrypt attempt goes on to the second.
    ...mxZone('next-enc.test', [2, 3]),
    // Hosted on a provider whose MX names a rule matches: the rule's policy holds for the domain.
    'hosted.test': { MX: [{ preference: 10, exchange: 'in.tlsprovider.test' }] },
    'in.tlsprovider.test': { A: [ip(2)] },
  });
  s = await startSluiceFixture(
    redis,
    {
      delivery: { dns: { servers: [dns.server], loopbackMx: true } },
      shaping: {
        rules: [
          { name: 'enc', match: { domains: ['plain-enc.test', 'self-enc.test', 'refused-enc.test', 'bdat-enc.test', 'next-enc.test'], mx: [] }, tls: 'encrypt' },
          { name: 'ver', match: { domains: ['plain-ver.test', 'self-ver.test'], mx: [] }, tls: 'verify' },
          { name: 'provider', match: { domains: [], mx: ['*.tlsprovider.test'] }, tls: 'encrypt' },
        ],
      },
    },
    { mxPort: port },
  );
});

test.after(async () => {
  await s?.stop();
  await Promise.all([plain?.close(), selfSigned?.close(), refusing?.close(), chunking?.close(), dns?.close()]);
  await redis?.stop();
});

async function send(to: string): Promise<string> {
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to, subject: `tls ${to}`, text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  return r.body.id as string;
}

/** Messages a capture peer received for `to`. */
const receivedFor = (peer: CapturePeer, to: string) => peer.messages.filter((m) => m.envelope.to.includes(to));

test("'may' (delivery.tls, the default) is opportunistic as before: plain text to a host without STARTTLS, TLS without verifying where offered", async () => {
  const a = await s.waitFinal(await send('ann@plain-may.test'));
  assert.is(a.recipients[0].state, 'delivered', JSON.stringify(a));
  assert.is(receivedFor(plain, 'ann@plain-may.test')[0]?.secure, false);
  const b = await s.waitFinal(await send('bob@self-may.test'));
  assert.is(b.recipients[0].state, 'delivered', JSON.stringify(b));
  assert.is(receivedFor(selfSigned, 'bob@self-may.test')[0]?.secure, true);
});

test("'encrypt' and 'verify': a host that does not offer STARTTLS gets nothing; the recipient is deferred 4.7.4 naming the host", async () => {
  for (const to of ['cat@plain-enc.test', 'dan@plain-ver.test']) {
    const rc = await s.waitRecipient(await send(to), 'deferred');
    assert.is(rc?.state, 'deferred', JSON.stringify(rc));
    assert.is(rc.enhanced, '4.7.4', JSON.stringify(rc));
    const domain = to.split('@')[1];
    assert.is(rc.response, `TLS is required, but was not offered by host mx0.${domain}[${ip(2)}]:${port}`);
  }
  // Give a plain-text retry (which must not come) the time it would take (retries: 300 ms, then 600 ms).
  await new Promise((res) => setTimeout(res, 1000));
  assert.equal(receivedFor(plain, 'cat@plain-enc.test'), []);
  assert.equal(receivedFor(plain, 'dan@plain-ver.test'), []);
});

test("a rule matched by MX host name sets the policy of every domain hosted there", async () => {
  const rc = await s.waitRecipient(await send('eve@hosted.test'), 'deferred');
  assert.is(rc?.state, 'deferred', JSON.stringify(rc));
  assert.is(rc.enhanced, '4.7.4');
  assert.match(rc.response, /not offered by host in\.tlsprovider\.test\[127\.0\.0\.2\]/);
  await new Promise((res) => setTimeout(res, 600));
  assert.equal(receivedFor(plain, 'eve@hosted.test'), []);
});

test("'encrypt': a host that refuses STARTTLS (454) is deferred 4.7.4 with its answer, and never sees MAIL FROM", async () => {
  const rc = await s.waitRecipient(await send('fay@refused-enc.test'), 'deferred');
  assert.is(rc?.state, 'deferred', JSON.stringify(rc));
  assert.is(rc.enhanced, '4.7.4');
  assert.is(rc.response, `TLS is required, but host mx0.refused-enc.test[${ip(4)}]:${port} refused to start TLS: 454 4.7.0 TLS not available due to local problem`);
  await new Promise((res) => setTimeout(res, 600));
  assert.ok(refusing.commands.includes('STARTTLS'));
  assert.equal(refusing.commands.filter((c) => /^(MAIL|RCPT|DATA|BDAT)/.test(c)), [], JSON.stringify(refusing.commands));
  assert.is(refusing.messages.length, 0);
});

test("'encrypt': a host offering PIPELINING and CHUNKING but no STARTTLS gets no pipelined MAIL, RCPT or BDAT", async () => {
  const rc = await s.waitRecipient(await send('gus@bdat-enc.test'), 'deferred');
  assert.is(rc?.state, 'deferred', JSON.stringify(rc));
  assert.is(rc.enhanced, '4.7.4');
  await new Promise((res) => setTimeout(res, 600));
  assert.ok(chunking.connections() >= 1);
  assert.equal(chunking.commands.filter((c) => !/^(EHLO|QUIT)/.test(c)), [], JSON.stringify(chunking.commands));
  assert.is(chunking.messages.length, 0);
});

test("'verify': a self-signed certificate is refused (deferred 4.7.5, nothing sent); 'encrypt' delivers to the same host over TLS", async () => {
  const rc = await s.waitRecipient(await send('hal@self-ver.test'), 'deferred');
  assert.is(rc?.state, 'deferred', JSON.stringify(rc));
  assert.is(rc.enhanced, '4.7.5');
  assert.match(rc.response, new RegExp(`^TLS is required, but STARTTLS failed with mx0\\.self-ver\\.test\\[${ip(3).replace(/\./g, '\\.')}\\]:${port}: .*certificate`));
  const final = await s.waitFinal(await send('ivy@self-enc.test'));
  assert.is(final.recipients[0].state, 'delivered', JSON.stringify(final));
  const got = receivedFor(selfSigned, 'ivy@self-enc.test');
  assert.is(got.length, 1);
  assert.is(got[0]?.secure, true, 'over TLS');
  await new Promise((res) => setTimeout(res, 600));
  assert.equal(receivedFor(selfSigned, 'hal@self-ver.test'), [], 'the verify recipient never reached the host');
});

test("'encrypt': a first MX without STARTTLS is skipped for the next MX host, which delivers over TLS in the same attempt", async () => {
  const final = await s.waitFinal(await send('joe@next-enc.test'));
  assert.is(final.recipients[0].state, 'delivered', JSON.stringify(final));
  assert.is(final.recipients[0].attempts, 1);
  assert.equal(receivedFor(plain, 'joe@next-enc.test'), []);
  assert.is(receivedFor(selfSigned, 'joe@next-enc.test')[0]?.secure, true);
});

test("delivery.tls.encrypt makes 'encrypt' the policy of destinations whose rule sets none: no STARTTLS, nothing sent, 4.7.4; TLS where offered; a rule's 'may' still wins", async () => {
  const strict = await startSluiceFixture(
    redis,
    {
      delivery: { dns: { servers: [dns.server], loopbackMx: true }, tls: { encrypt: true } },
      shaping: { rules: [{ name: 'lax', match: { domains: ['plain-enc.test'], mx: [] }, tls: 'may' }] },
    },
    { mxPort: port },
  );
  try {
    const send2 = async (to: string): Promise<string> => {
      const r = await strict.api('/v1/messages', { body: { from: 'news@acme.example', to, subject: `strict ${to}`, text: 'x' } });
      assert.is(r.status, 202, JSON.stringify(r.body));
      return r.body.id as string;
    };
    const rc = await strict.waitRecipient(await send2('uma@plain-may.test'), 'deferred');
    assert.is(rc?.enhanced, '4.7.4', JSON.stringify(rc));
    assert.is(rc.response, `TLS is required, but was not offered by host mx0.plain-may.test[${ip(2)}]:${port}`);
    assert.equal(receivedFor(plain, 'uma@plain-may.test'), []);
    const b = await strict.waitFinal(await send2('vic@self-may.test'));
    assert.is(b.recipients[0].state, 'delivered', JSON.stringify(b));
    assert.is(receivedFor(selfSigned, 'vic@self-may.test')[0]?.secure, true, 'encrypted, the self-signed certificate not checked');
    const c = await strict.waitFinal(await send2('wes@plain-enc.test'));
    assert.is(c.recipients[0].state, 'delivered', JSON.stringify(c));
    assert.is(receivedFor(plain, 'wes@plain-enc.test')[0]?.secure, false, "the rule's 'may' over delivery.tls");
  } finally {
    await strict.stop();
  }
});

/**
 * sluice_smtp_connections_opened_total by result, summed over its `tls` label (and by `<provider>/<result>`),
 * from the admin /metrics endpoint.
 */
async function opened(): Promise<Record<string, number>> {
  const text = await (await request(`http://127.0.0.1:${s.app.ports.admin}/metrics`)).body.text();
  const counts: Record<string, number> = {};
  const add = (k: string, n: number): void => void (counts[k] = (counts[k] ?? 0) + n);
  for (const [, labels, n] of text.matchAll(/^sluice_smtp_connections_opened_total\{([^}]*)\} (\d+)$/gm)) {
    const result = /\bresult="([^"]+)"/.exec(labels as string)?.[1] as string;
    add(result, Number(n));
    add(`${/\bprovider="([^"]+)"/.exec(labels as string)?.[1]}/${result}`, Number(n));
  }
  return counts;
}

test("a host failing the mandatory policy (not offered, refused, certificate) is counted as connections opened result tls_required, not failed", async () => {
  const before = await opened();
  for (const to of ['kit@plain-ver.test', 'lea@refused-enc.test', 'max@self-ver.test']) {
    const rc = await s.waitRecipient(await send(to), 'deferred');
    assert.ok(['4.7.4', '4.7.5'].includes(rc?.enhanced), JSON.stringify(rc));
  }
  const after = await opened();
  assert.ok((after['tls_required'] ?? 0) - (before['tls_required'] ?? 0) >= 3, `tls_required ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
  // By the destination's provider group: two hosts under the 'ver' rule, one under 'enc'.
  assert.ok((after['ver/tls_required'] ?? 0) - (before['ver/tls_required'] ?? 0) >= 2, `ver ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
  assert.ok((after['enc/tls_required'] ?? 0) - (before['enc/tls_required'] ?? 0) >= 1, `enc ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
  // Every connection of this suite that did not open failed the policy: none is a plain failure.
  assert.is(after['failed'] ?? 0, 0, JSON.stringify(after));
});

test.run();
