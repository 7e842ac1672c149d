/**
 * How far one delivery attempt goes down a destination's MX hosts, with real peers: MX hosts at
 * 127.0.0.2, 127.0.0.3, … (all loopback on Linux, followed with delivery.dns.loopbackMx) on one
 * ephemeral port (the fixture's MX port), named by the DNS stub, with distinct preferences so the
 * order is known. An address with nothing listening refuses the connection.
 *
 * An attempt tries at most delivery.maxAddresses addresses (5, as Postfix's smtp_mx_address_limit),
 * whether they refuse the connection or take it and never greet; a host that will not have the
 * session (4xx to the greeting or EHLO) sends the attempt on to the next (RFC 5321 §5.1), and so does
 * a session that is over before its first transaction (or lost at its first MAIL FROM, without an
 * answer), for at most delivery.maxSessions (2, as Postfix's smtp_mx_session_limit) such sessions. A host whose session carries the transaction answers
 * for the recipient with a 5xx (bounced, no other host asked) or a slow-down (deferred, no other host
 * asked); a 4xx that is not a slow-down sends the copy on to the next host in the same attempt, as
 * Postfix keeps a recipient for the next server, within the same delivery.maxSessions.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, startOnOnePort, startScriptedPeer, type CapturePeer, type ScriptedPeer, type ScriptStep } from '../helpers/smtp-peer.js';
import { loopbackIp, mxZone, startDnsStub, type DnsStub } from '../helpers/dns-stub.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';

const test = suite('e2e/mx-attempt');

let redis: TestRedis;
let dns: DnsStub;
let s: SluiceFixture;
let port = 0;
/** The sixth MX host of seven.test (127.0.0.7): it would deliver, if an attempt got that far. */
let sixth: CapturePeer;
/** Three MX hosts of rcpt451.test, each 451 to RCPT; of mail451.test, each 451 to MAIL. */
let rcpt451: ScriptedPeer[] = [];
let mail451: ScriptedPeer[] = [];
/** hard.test: the first host answers 550 to RCPT, the second would take the mail. */
let hardFirst: ScriptedPeer;
let hardSecond: ScriptedPeer;
/** busy.test: the first host greets with 421; ehlo451.test: the first host answers 451 to EHLO. The second of each takes the mail. */
let busyFirst: ScriptedPeer;
let busySecond: CapturePeer;
/** lonebusy.test: the first host greets with 421, the second (nothing listening) refuses the connection. */
let loneBusy: ScriptedPeer;
let ehloFirst: ScriptedPeer;
let ehloSecond: CapturePeer;
/** slow.test: three hosts that take the connection and never greet, then one that would deliver. */
let slow: ScriptedPeer[] = [];
let slowFourth: CapturePeer;
/**
 * Hosts whose session comes up and is over before its first transaction: the EHLO answer and an
 * unsolicited 421 in one write, then the connection closed (the client sees both at once, so the
 * session is unusable before a transaction can start, every time). cut.test: one such host, then one
 * that delivers; cut3.test: three such hosts, then one that would deliver.
 */
let cutFirst: ScriptedPeer;
let cutSecond: CapturePeer;
let cut3: ScriptedPeer[] = [];
let cut3Fourth: CapturePeer;
const CUT = { EHLO: { reply: '250 scripted.test\n421 4.3.2 closing now', then: 'drop' as const } };
/**
 * Hosts whose session comes up and is lost at MAIL FROM (the connection closed without an answer),
 * then one that delivers: mailcut.test (MAIL, RCPT and DATA pipelined), bdatcut.test (MAIL, RCPT and
 * BDAT with the message, pipelined), mailcut2.test (two such hosts and nothing else).
 */
let mailCutFirst: ScriptedPeer;
let mailCutSecond: CapturePeer;
let bdatCutFirst: ScriptedPeer;
let bdatCutSecond: CapturePeer;
let mailCut2: ScriptedPeer[] = [];
/** grey.test: the first host greylists at RCPT (450, not a slow-down), the second takes the mail. */
let greyFirst: ScriptedPeer;
let greySecond: CapturePeer;
/** dataend.test: the first host answers 451 after the end of data, the second takes the mail. */
let dataEndFirst: ScriptedPeer;
let dataEndSecond: CapturePeer;
/** greylone.test: the first host greylists at RCPT, the second (nothing listening) refuses the connection. */
let greyLone: ScriptedPeer;
/** greyall.test: as grey.test, for a connection that claims one copy at a time. */
let greyAllFirst: ScriptedPeer;
let greyAllSecond: CapturePeer;
const GREYLISTED = '450 4.2.0 Recipient address rejected: Greylisted, see https://postgrey.example/help';

const ip = loopbackIp;

async function startPeers(): Promise<void> {
  await startOnOnePort(async (track) => {
    sixth = track(await startCapturePeer({ host: ip(7) }));
    port = sixth.port;
    const scripted = async (n: number, on: Record<string, ScriptStep>) => track(await startScriptedPeer({ ehlo: ['PIPELINING'], on }, { host: ip(n), port }));
    const stalled = async (n: number) => track(await startScriptedPeer({ greeting: 'stall' }, { host: ip(n), port }));
    const capture = async (n: number) => track(await startCapturePeer({ host: ip(n), port }));
    rcpt451 = [await scripted(9, { RCPT: '451 4.3.0 mx1 try again later' }), await scripted(10, { RCPT: '451 4.3.0 mx2 try again later' }), await scripted(11, { RCPT: '451 4.3.0 mx3 try again later' })];
    mail451 = [await scripted(12, { MAIL: '451 4.3.0 mx1 busy' }), await scripted(13, { MAIL: '451 4.3.0 mx2 busy' }), await scripted(14, { MAIL: '451 4.3.0 mx3 busy' })];
    hardFirst = await scripted(15, { RCPT: '550 5.1.1 <nobody@hard.test>: user unknown' });
    hardSecond = await scripted(16, {});
    busyFirst = track(await startScriptedPeer({ greeting: '421 4.3.2 mx1 busy, try the next one' }, { host: ip(17), port }));
    busySecond = await capture(18);
    loneBusy = track(await startScriptedPeer({ greeting: '421 4.7.0 mx1 too many connections, slow down' }, { host: ip(31), port }));
    ehloFirst = await scripted(19, { EHLO: '451 4.3.0 mx1 not now', HELO: '250 should not be asked' });
    ehloSecond = await capture(20);
    slow = [await stalled(21), await stalled(22), await stalled(23)];
    slowFourth = await capture(24);
    cutFirst = await scripted(25, CUT);
    cutSecond = await capture(26);
    cut3 = [await scripted(27, CUT), await scripted(28, CUT), await scripted(29, CUT)];
    cut3Fourth = await capture(30);
    mailCutFirst = await scripted(33, { MAIL: 'drop' });
    mailCutSecond = await capture(34);
    bdatCutFirst = track(await startScriptedPeer({ ehlo: ['PIPELINING', 'CHUNKING'], on: { MAIL: 'drop' } }, { host: ip(35), port }));
    bdatCutSecond = await capture(36);
    mailCut2 = [await scripted(37, { MAIL: 'drop' }), await scripted(38, { MAIL: 'drop' })];
    greyFirst = await scripted(39, { RCPT: GREYLISTED });
    greySecond = await capture(40);
    dataEndFirst = await scripted(41, { '.': '451 4.3.0 mx1 error writing the queue file' });
    dataEndSecond = await capture(42);
    greyLone = await scripted(43, { RCPT: GREYLISTED });
    greyAllFirst = await scripted(45, { RCPT: GREYLISTED });
    greyAllSecond = await capture(46);
  });
}

test.before(async () => {
  redis = await startRedis();
  await startPeers();
  dns = await startDnsStub({
    // 127.0.0.2–6 and .8 refuse (nothing listens on the port there); .7 delivers.
    ...mxZone('seven.test', [2, 3, 4, 5, 6, 7, 8]),
    ...mxZone('rcpt451.test', [9, 10, 11]),
    ...mxZone('mail451.test', [12, 13, 14]),
    ...mxZone('hard.test', [15, 16]),
    ...mxZone('busy.test', [17, 18]),
    ...mxZone('ehlo451.test', [19, 20]),
    ...mxZone('slow.test', [21, 22, 23, 24]),
    ...mxZone('cut.test', [25, 26]),
    ...mxZone('cut3.test', [27, 28, 29, 30]),
    // 127.0.0.32: nothing listens.
    ...mxZone('lonebusy.test', [31, 32]),
    ...mxZone('mailcut.test', [33, 34]),
    ...mxZone('bdatcut.test', [35, 36]),
    ...mxZone('mailcut2.test', [37, 38]),
    ...mxZone('grey.test', [39, 40]),
    ...mxZone('dataend.test', [41, 42]),
    // 127.0.0.44: nothing listens.
    ...mxZone('greylone.test', [43, 44]),
    ...mxZone('greyall.test', [45, 46]),
  });
  s = await startSluiceFixture(redis, { delivery: { dns: { servers: [dns.server], loopbackMx: true } } }, { mxPort: port });
});

test.after(async () => {
  await s?.stop();
  await Promise.all([sixth?.close(), ...rcpt451.map((p) => p.close()), ...mail451.map((p) => p.close()), hardFirst?.close(), hardSecond?.close(), busyFirst?.close(), busySecond?.close(), loneBusy?.close(), ehloFirst?.close(), ehloSecond?.close(), ...slow.map((p) => p.close()), slowFourth?.close(), cutFirst?.close(), cutSecond?.close(), ...cut3.map((p) => p.close()), cut3Fourth?.close(), mailCutFirst?.close(), mailCutSecond?.close(), bdatCutFirst?.close(), bdatCutSecond?.close(), ...mailCut2.map((p) => p.close()), greyFirst?.close(), greySecond?.close(), dataEndFirst?.close(), dataEndSecond?.close(), greyLone?.close(), greyAllFirst?.close(), greyAllSecond?.close(), dns?.close()]);
  await redis?.stop();
});

async function send(fixture: SluiceFixture, to: string): Promise<string> {
  const r = await fixture.api('/v1/messages', { body: { from: 'news@acme.example', to, subject: 'mx', text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  return r.body.id as string;
}

test('seven MX addresses that refuse the connection: the attempt tries the first five by preference, then defers with the fifth one\'s error', async () => {
  const rc = await s.waitRecipient(await send(s, 'ann@seven.test'), 'deferred');
  assert.is(rc?.state, 'deferred', JSON.stringify(rc));
  assert.is(rc.code, null);
  assert.is(rc.enhanced, '4.4.1');
  assert.is(rc.response, `connect ECONNREFUSED ${ip(6)}:${port}`, 'the last address tried is the fifth');
  // The retries (300 ms, then every 600 ms) go the same way: none reaches the sixth address, which would deliver.
  await new Promise((res) => setTimeout(res, 1000));
  assert.is(sixth.connections(), 0, 'the sixth address is never tried');
  assert.is(sixth.messages.length, 0);
});

test('delivery.maxAddresses as configured: with 6 the sixth address is tried and delivers', async () => {
  const six = await startSluiceFixture(redis, { delivery: { maxAddresses: 6, dns: { servers: [dns.server], loopbackMx: true } } }, { mxPort: port });
  try {
    const final = await six.waitFinal(await send(six, 'cat@seven.test'));
    assert.is(final.recipients[0].state, 'delivered');
    assert.is(final.recipients[0].attempts, 1, 'in one attempt: five refusals, then the sixth');
    assert.is(sixth.messages.length, 1);
    assert.equal(sixth.messages[0]!.envelope.to, ['cat@seven.test']);
  } finally {
    await six.stop();
  }
});

test('hosts that take the connection and never greet count towards delivery.maxAddresses (3 here): the fourth is never tried, the recipient is deferred', async () => {
  const three = await startSluiceFixture(redis, { delivery: { maxAddresses: 3, timeouts: { greeting: '200ms' }, dns: { servers: [dns.server], loopbackMx: true } } }, { mxPort: port });
  try {
    const rc = await three.waitRecipient(await send(three, 'gus@slow.test'), 'deferred');
    assert.is(rc?.state, 'deferred', JSON.stringify(rc));
    assert.is(rc.enhanced, '4.4.2', 'connected, but the session never came up');
    assert.match(rc.response, /timeout .* CONN/);
    await new Promise((res) => setTimeout(res, 1000)); // the retries (300 ms, then every 600 ms) go the same way
  } finally {
    await three.stop();
  }
  for (const [i, p] of slow.entries()) assert.ok(p.connections() >= 1, `slow host ${i + 1} was tried`);
  assert.is(slowFourth.connections(), 0, 'the fourth address is never tried');
});

// The retries of these are an hour away: each connection counted below belongs to the first attempt.
test('a session that is over before its first transaction: the next session goes to the next address, and the same attempt delivers there', async () => {
  const late = await startSluiceFixture(redis, { delivery: { dns: { servers: [dns.server], loopbackMx: true } }, shaping: { default: { retry: ['1h'] } } }, { mxPort: port });
  try {
    const final = await late.waitFinal(await send(late, 'hal@cut.test'));
    const rc = final.recipients[0];
    assert.is(rc.state, 'delivered', JSON.stringify(rc));
    assert.is(rc.attempts, 1);
    assert.is(cutFirst.connections(), 1, 'one session with the first host, not one after another');
    assert.is(cutSecond.messages.length, 1);
  } finally {
    await late.stop();
  }
});

test('sessions that are over before their first transaction: delivery.maxSessions (2) of them, then the recipient is deferred; with 3, a third', async () => {
  for (const [maxSessions, tried] of [[undefined, 2], [3, 3]] as const) {
    const before = cut3.map((p) => p.connections());
    const f = await startSluiceFixture(redis, { delivery: { ...(maxSessions ? { maxSessions } : {}), dns: { servers: [dns.server], loopbackMx: true } }, shaping: { default: { retry: ['1h'] } } }, { mxPort: port });
    try {
      const rc = await f.waitRecipient(await send(f, `ivy${tried}@cut3.test`), 'deferred');
      assert.is(rc?.state, 'deferred', JSON.stringify(rc));
      assert.is(rc.attempts, 1);
      assert.is(rc.enhanced, '4.4.2');
      assert.is(rc.response, `session with ${ip(26 + tried)}:${port} over before a transaction: unsolicited reply: 421 4.3.2 closing now`, 'the last session\'s');
      await new Promise((res) => setTimeout(res, 300)); // time for a session too many, if one were opened
    } finally {
      await f.stop();
    }
    assert.equal(cut3.map((p, i) => p.connections() - (before[i] as number)), [1, 1, tried === 3 ? 1 : 0], `one session each with the first ${tried}`);
  }
  assert.is(cut3Fourth.connections(), 0, 'the fourth address is never tried');
});

// A connection lost with no answer to MAIL FROM says nothing about the recipient: it is a failed
// session, as a connection lost after EHLO is (Postfix: "lost connection ... while sending MAIL
// FROM" keeps the recipients for the next MX host). Before, the copy was deferred for a retry step.
for (const [domain, first, second] of [['mailcut.test', () => mailCutFirst, () => mailCutSecond], ['bdatcut.test', () => bdatCutFirst, () => bdatCutSecond]] as const) {
  test(`the first MX host's connection is lost at MAIL FROM (${domain}): the same attempt delivers to the second`, async () => {
    const late = await startSluiceFixture(redis, { delivery: { dns: { servers: [dns.server], loopbackMx: true } }, shaping: { default: { retry: ['1h'] } } }, { mxPort: port });
    try {
      const final = await late.waitFinal(await send(late, `joe@${domain}`));
      const rc = final.recipients[0];
      assert.is(rc.state, 'delivered', JSON.stringify(rc));
      assert.is(rc.attempts, 1, 'in the first attempt, not a retry an hour later');
      assert.ok(first().commands.some((c) => c.startsWith('MAIL')), 'the first host was asked');
      assert.is(first().connections(), 1);
      assert.is(second().messages.length, 1);
      assert.equal(second().messages[0]!.envelope.to, [`joe@${domain}`]);
    } finally {
      await late.stop();
    }
  });
}

test('every MX host\'s connection is lost at MAIL FROM: one session each, then deferred 4.4.2 with the last one\'s reason; the rate tokens of the copies given back are refunded', async () => {
  // A rate of 1,000 an hour (its own bucket for the domain): nothing reached a server, so nothing counts against it.
  const late = await startSluiceFixture(redis, { delivery: { dns: { servers: [dns.server], loopbackMx: true } }, shaping: { default: { retry: ['1h'], scope: 'domain', rate: { perSecond: null, perMinute: null, perHour: 1000 } } } }, { mxPort: port });
  try {
    const rc = await late.waitRecipient(await send(late, 'kim@mailcut2.test'), 'deferred');
    assert.is(rc?.state, 'deferred', JSON.stringify(rc));
    assert.is(rc.attempts, 1);
    assert.is(rc.enhanced, '4.4.2');
    assert.is(rc.response, `session with ${ip(38)}:${port} over before a transaction: connection closed by the remote host`);
    await new Promise((res) => setTimeout(res, 300)); // time for a session too many, if one were opened
    // Each lost session took a token for the copy and gave the copy back: the bucket is (nearly: it refills) full.
    // The refunds follow the deferral: waited for with a deadline, as a busy machine may be slow to get to them
    // (the stored count changes only when a token is taken or given back, so waiting adds none).
    const bucket = late.app.keys.bucket('default:mailcut2.test');
    let left = Number(await late.app.redis.client.hget(bucket, 'h'));
    for (const deadline = Date.now() + 5000; !(left > 999) && Date.now() < deadline;) {
      await new Promise((res) => setTimeout(res, 50));
      left = Number(await late.app.redis.client.hget(bucket, 'h'));
    }
    assert.ok(left > 999, `${left} of 1000 tokens left`);
  } finally {
    await late.stop();
  }
  assert.equal(mailCut2.map((p) => p.connections()), [1, 1]);
});

// A slow-down answer ("try again later" with a 451) goes to the provider's backoff: its other hosts
// are not asked to take the same mail faster.
test('three MX hosts that greet and answer a slow-down 451 to RCPT: one session, with the first; the recipient is deferred with its answer', async () => {
  const rc = await s.waitRecipient(await send(s, 'dan@rcpt451.test'), 'deferred');
  assert.is(rc?.state, 'deferred', JSON.stringify(rc));
  assert.is(rc.code, 451);
  assert.is(rc.enhanced, '4.3.0');
  assert.is(rc.response, '451 4.3.0 mx1 try again later');
  const [first, second, third] = rcpt451;
  assert.ok(first!.commands.some((c) => c.startsWith('RCPT')), 'the first host was asked');
  assert.is(second!.connections() + third!.connections(), 0, 'no other host had a session in that attempt (nor in the retries)');
});

// Postfix (smtp_trouble.c) keeps a recipient a server that is not the last answered with a 4xx for
// the next server. Before, the copy was deferred for a retry step while the next MX host would have taken it.
test('the first MX host greylists at RCPT (450): the same attempt delivers every copy to the second', async () => {
  const late = await startSluiceFixture(redis, { delivery: { dns: { servers: [dns.server], loopbackMx: true } }, shaping: { default: { retry: ['1h'] } } }, { mxPort: port });
  try {
    const movedOn = async (): Promise<number> => {
      const text = await (await fetch(`http://127.0.0.1:${late.app.ports.admin}/metrics`)).text();
      return [...text.matchAll(/^sluice_delivery_moved_on_total\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
    };
    const ids = [await send(late, 'kim@grey.test'), await send(late, 'kit@grey.test'), await send(late, 'kay@grey.test')];
    for (const id of ids) {
      const rc = (await late.waitFinal(id)).recipients[0];
      assert.is(rc.state, 'delivered', JSON.stringify(rc));
      assert.is(rc.attempts, 1, 'in the first attempt, not a retry an hour later');
      assert.is(rc.code, 250, 'the answer of the host that took it');
    }
    assert.is(greyFirst.commands.filter((c) => c.startsWith('RCPT')).length, 3, 'the first host was asked for each');
    assert.equal(greySecond.messages.map((m) => m.envelope.to[0]).sort(), ['kay@grey.test', 'kim@grey.test', 'kit@grey.test']);
    for (const m of greySecond.messages) assert.match(m.raw.toString('latin1'), /^DKIM-Signature: /m, 'signed');
    assert.is(await movedOn(), 3, 'sluice_delivery_moved_on_total');
  } finally {
    await late.stop();
  }
});

test('a host that deferred every copy of a claim, which the next host took: the connection goes on with the next host for its later claims', async () => {
  // One copy a claim and one connection to the destination: every copy after the first comes in a claim of its own on the same connection.
  const late = await startSluiceFixture(redis, { delivery: { claimBatch: 1, dns: { servers: [dns.server], loopbackMx: true } }, shaping: { default: { retry: ['1h'], connections: 1 } } }, { mxPort: port });
  try {
    const ids = [await send(late, 'ned@greyall.test'), await send(late, 'nia@greyall.test'), await send(late, 'noa@greyall.test')];
    for (const id of ids) {
      const rc = (await late.waitFinal(id)).recipients[0];
      assert.is(rc.state, 'delivered', JSON.stringify(rc));
      assert.is(rc.attempts, 1);
    }
    assert.is(greyAllSecond.messages.length, 3);
    assert.is(greyAllSecond.connections(), 1, 'one session with the second host, for all three');
    assert.is(greyAllFirst.commands.filter((c) => c.startsWith('RCPT')).length, 1, 'the first host was asked for the first copy only');
  } finally {
    await late.stop();
  }
});

test('the first MX host answers 451 after the end of data: the same attempt delivers the same bytes to the second', async () => {
  const late = await startSluiceFixture(redis, { delivery: { dns: { servers: [dns.server], loopbackMx: true } }, shaping: { default: { retry: ['1h'] } } }, { mxPort: port });
  try {
    const rc = (await late.waitFinal(await send(late, 'lou@dataend.test'))).recipients[0];
    assert.is(rc.state, 'delivered', JSON.stringify(rc));
    assert.is(rc.attempts, 1);
    assert.is(dataEndFirst.messages.length, 1, 'the first host had the message');
    assert.is(dataEndSecond.messages.length, 1);
    assert.is(dataEndSecond.messages[0]!.raw.toString('latin1'), dataEndFirst.messages[0]!.toString('latin1'), 'the second got what the first did');
  } finally {
    await late.stop();
  }
});

test('the first MX host greylists and the second refuses the connection: the recipient is deferred with the greylisting answer', async () => {
  const late = await startSluiceFixture(redis, { delivery: { dns: { servers: [dns.server], loopbackMx: true } }, shaping: { default: { retry: ['1h'] } } }, { mxPort: port });
  try {
    const rc = await late.waitRecipient(await send(late, 'max@greylone.test'), 'deferred');
    assert.is(rc?.state, 'deferred', JSON.stringify(rc));
    assert.is(rc.attempts, 1);
    assert.is(rc.code, 450);
    assert.is(rc.response, GREYLISTED, 'the remote answer, not the refused connection');
    assert.is(greyLone.connections(), 1);
  } finally {
    await late.stop();
  }
});

test('MX hosts that answer 451 to MAIL (not a slow-down): delivery.maxSessions (2) hosts asked, the recipient deferred with the last one\'s answer; with 1, only the first', async () => {
  for (const [maxSessions, tried] of [[undefined, 2], [1, 1]] as const) {
    const before = mail451.map((p) => p.connections());
    const f = await startSluiceFixture(redis, { delivery: { ...(maxSessions ? { maxSessions } : {}), dns: { servers: [dns.server], loopbackMx: true } }, shaping: { default: { retry: ['1h'] } } }, { mxPort: port });
    try {
      const rc = await f.waitRecipient(await send(f, `dan${tried}@mail451.test`), 'deferred');
      assert.is(rc?.state, 'deferred', JSON.stringify(rc));
      assert.is(rc.attempts, 1);
      assert.is(rc.code, 451);
      assert.is(rc.response, `451 4.3.0 mx${tried} busy`, 'the last host asked');
      await new Promise((res) => setTimeout(res, 300)); // time for a session too many, if one were opened
    } finally {
      await f.stop();
    }
    assert.equal(mail451.map((p, i) => p.connections() - (before[i] as number)), [1, tried === 2 ? 1 : 0, 0], `one session each with the first ${tried}`);
  }
});

test('a 5xx from the first MX host bounces at once; the second is never asked', async () => {
  const final = await s.waitFinal(await send(s, 'nobody@hard.test'));
  const rc = final.recipients[0];
  assert.is(rc.state, 'bounced');
  assert.is(rc.attempts, 1);
  assert.is(rc.code, 550);
  assert.is(rc.enhanced, '5.1.1');
  assert.is(hardSecond.connections(), 0);
});

// RFC 5321 §5.1: a 4xx to the greeting or EHLO says nothing about the recipient, only that this host
// will not have the session now: the client tries the next address in the same attempt.
test('the first MX host greets with 421: the same attempt delivers to the second', async () => {
  const final = await s.waitFinal(await send(s, 'eve@busy.test'));
  const rc = final.recipients[0];
  assert.is(rc.state, 'delivered', JSON.stringify(rc));
  assert.is(rc.attempts, 1, 'in the first attempt, not a retry');
  assert.ok(busyFirst.connections() >= 1, 'the first host was tried');
  assert.equal(busyFirst.commands, [], 'and asked nothing after its 421');
  assert.is(busySecond.messages.length, 1);
  assert.equal(busySecond.messages[0]!.envelope.to, ['eve@busy.test']);
});

test('the first MX host answers 451 to EHLO: no HELO there; the same attempt delivers to the second', async () => {
  const final = await s.waitFinal(await send(s, 'fay@ehlo451.test'));
  const rc = final.recipients[0];
  assert.is(rc.state, 'delivered', JSON.stringify(rc));
  assert.is(rc.attempts, 1);
  assert.ok(ehloFirst.commands.some((c) => c.startsWith('EHLO')), 'the first host was greeted');
  assert.not.ok(ehloFirst.commands.some((c) => c.startsWith('HELO') || c.startsWith('MAIL')), 'a 4xx to EHLO is no reason to fall back to HELO');
  assert.is(ehloSecond.messages.length, 1);
  assert.equal(ehloSecond.messages[0]!.envelope.to, ['fay@ehlo451.test']);
});

test('the first MX host greets with 421 and the second refuses the connection: the recipient is deferred with the 421, the answer that says why', async () => {
  const rc = await s.waitRecipient(await send(s, 'gus@lonebusy.test'), 'deferred');
  assert.is(rc?.state, 'deferred', JSON.stringify(rc));
  assert.ok(loneBusy.connections() >= 1);
  assert.is(rc.code, 421, 'a remote server\'s answer, not the later connection error');
  assert.match(rc.response, 'mx1 too many connections');
});

test.run();
