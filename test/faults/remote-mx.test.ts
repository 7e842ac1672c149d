import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startScriptedPeer, type PeerScript, type ScriptedPeer } from '../helpers/smtp-peer.js';
import {
  writeSluiceConfig, startSluiceProcess, killAllSluiceProcesses, callApi, adminGet, sleep, type SluiceInstance, type SluiceProcess,
} from '../helpers/sluice-process.js';
import { recordFigures } from '../helpers/fault-figures.js';

/**
 * Fault: remote MXs that misbehave. One real Sluice process delivers one message to each of a set of
 * scripted loopback peers (test/helpers/smtp-peer.ts), each misbehaving its own way; the delivery
 * timeouts are 1 s (5 s for the final reply to DATA) so a stall costs seconds, not the production minutes. Nothing may hang: every
 * message reaches its right state, read through GET /v1/messages/:id —
 *   a peer that keeps misbehaving: deferred after both attempts, with the next one an hour away and
 *     the reason (the remote answer or what went wrong) on the record;
 *   a peer that misbehaves once and then recovers: delivered on the second attempt.
 * Meanwhile the API answers, and at the end SIGTERM stops the process cleanly.
 */
const test = suite('faults/remote-mx');

/** First retry soon (the recovering peers deliver then), the second far away (deferred stays deferred). */
const RETRY = ['300ms', '1h'];
const TIMEOUT = '1s';
/**
 * The final reply to DATA gets longer: a recovered peer (stop-reading-once) reads and answers an 8 MB
 * message in the test's own process, which in CI shares the cores with another fault file; at 1 s it
 * once missed its reply there (settled in 34 s instead of 9), and the copy it had was retried.
 */
const DATA_TIMEOUT = '5s';
const SETTLE_TIMEOUT_MS = 60_000;
const HOUR_MS = 3_600_000;

interface Case {
  name: string;
  script: PeerScript;
  expect: 'deferred' | 'delivered';
  /** What the deferred record's response must mention. */
  response?: RegExp;
  /** The message's text is about this many bytes (default a line). */
  size?: number;
}

// Larger than loopback's socket buffers (net.ipv4.tcp_wmem's 4 MB maximum on the sending side, and a
// receive window that does not grow while the peer reads nothing): a peer that stops reading leaves
// the client's write of the message unfinished.
const BEYOND_SOCKET_BUFFERS = 8 * 1024 * 1024;

const CASES: Case[] = [
  // The message was written whole: the final reply's timeout (delivery.timeouts.data) ends the attempt.
  { name: 'stall-after-data', script: { on: { '.': 'stall' } }, expect: 'deferred', response: /timeout after \d+ ms waiting for the final reply to DATA/ },
  { name: 'stall-mid-data', script: { on: { BODY: 'stall' } }, expect: 'deferred', response: /timeout/i },
  // A peer that stops reading in the middle of the message (a tarpit, a wedged server): the write of
  // the message never completes, and the data block timeout (no progress) ends the attempt.
  { name: 'stop-reading-mid-data', script: { on: { BODY: 'stop-reading' } }, expect: 'deferred', response: /data block timeout: the server took none of the message for \d+ ms \(during DATA\)/, size: BEYOND_SOCKET_BUFFERS },
  { name: 'stall-greeting', script: { greeting: 'stall' }, expect: 'deferred', response: /timeout/i },
  { name: 'drop-at-rcpt', script: { on: { RCPT: 'drop' } }, expect: 'deferred' },
  { name: 'drop-mid-data', script: { on: { BODY: 'drop' } }, expect: 'deferred' },
  { name: 'garbage-greeting', script: { greeting: 'hello there, this is not SMTP' }, expect: 'deferred', response: /invalid reply|not SMTP|protocol/i },
  { name: 'garbage-to-mail', script: { on: { MAIL: 'OK whatever you say' } }, expect: 'deferred' },
  { name: 'endless-line', script: { greeting: `220 ${'x'.repeat(200_000)}` }, expect: 'deferred', response: /longer than/i },
  {
    name: '421-everything',
    script: { greeting: '421 4.3.2 busy', on: { EHLO: '421 4.3.2 busy', HELO: '421 4.3.2 busy', MAIL: '421 4.3.2 busy', RCPT: '421 4.3.2 busy', DATA: '421 4.3.2 busy', '.': '421 4.3.2 busy' } },
    expect: 'deferred',
    response: /421|busy/,
  },
  { name: '421-after-ehlo', script: { on: { MAIL: { reply: '421 4.7.0 try again later', then: 'drop' } } }, expect: 'deferred', response: /421|try again/ },
  // Up, then over before a transaction (EHLO's answer, an unsolicited 421 and a hang-up at once): one smarthost, so one session an attempt.
  { name: 'close-after-ehlo', script: { on: { EHLO: { reply: '250 scripted.test\n421 4.3.2 closing now', then: 'drop' } } }, expect: 'deferred', response: /over before a transaction: unsolicited reply: 421 4\.3\.2 closing now/ },
  // Lines of one reply with different codes (RFC 5321 §4.2.1 forbids it): acted on by the last line's, recorded whole.
  { name: 'mixed-codes-after-data', script: { on: { '.': '250-2.0.0 queued\n451 4.3.0 lost it' } }, expect: 'deferred', response: /^250-2\.0\.0 queued\n451 4\.3\.0 lost it$/ },
  // Misbehave once, then recover: the second attempt delivers.
  { name: 'stall-once', script: { on: { '.': ['stall', '250 2.0.0 queued'] } }, expect: 'delivered' },
  { name: 'stop-reading-once', script: { on: { BODY: ['stop-reading', ''] } }, expect: 'delivered', size: BEYOND_SOCKET_BUFFERS },
  { name: 'drop-once-mid-data', script: { on: { BODY: ['drop', ''] } }, expect: 'delivered' },
  { name: 'garbage-once', script: { greeting: ['garbage garbage', '220 ok ESMTP'] }, expect: 'delivered' },
  { name: '421-once', script: { on: { RCPT: ['421 4.3.2 busy', '250 2.1.5 ok'] } }, expect: 'delivered' },
  { name: 'mixed-codes-once', script: { on: { RCPT: ['250-2.1.5 ok\n451 4.3.0 try later', '451-4.3.0 hmm\n250 2.1.5 ok'] } }, expect: 'delivered' },
];

let redis: TestRedis;
const peers: ScriptedPeer[] = [];
let inst: SluiceInstance | undefined;
let sluice: SluiceProcess | undefined;

test.before(async () => {
  redis = await startRedis();
});

test.after(async () => {
  await killAllSluiceProcesses();
  await Promise.all(peers.map((p) => p.close()));
  await redis?.stop();
  inst?.remove();
});

/** `fault <name>`, then lines up to the case's size. */
function textOf(c: Case): string {
  const first = `fault ${c.name}`;
  if (c.size === undefined) return first;
  const line = `${'x'.repeat(70)}\n`;
  return `${first}\n${line.repeat(Math.ceil(c.size / line.length))}`;
}

interface RcptState {
  state: string;
  attempts: number;
  nextAttemptAt: number | null;
  response: string | null;
}

test('misbehaving MXs: nothing hangs, each message deferred with its next attempt or delivered once the peer recovers', async () => {
  const domainOf = (c: Case) => `${c.name}.mx.test`;
  const transport: Record<string, string> = {};
  for (const c of CASES) {
    const peer = await startScriptedPeer(c.script);
    peers.push(peer);
    transport[domainOf(c)] = `${peer.host}:${peer.port}`;
  }
  inst = await writeSluiceConfig({
    redisUrl: redis.url,
    prefix: `t${randomUUID().slice(0, 8)}:`,
    transport,
    overrides: {
      delivery: { timeouts: { connect: TIMEOUT, greeting: TIMEOUT, command: TIMEOUT, dataBlock: TIMEOUT, data: DATA_TIMEOUT, idle: TIMEOUT } },
      shaping: { default: { retry: RETRY } },
    },
  });
  const started = Date.now();
  sluice = await startSluiceProcess(inst);
  const http = sluice.ports.http as number;
  const apiKey = inst.account.apiKey;

  const ids = new Map<string, string>();
  for (const c of CASES) {
    const r = await callApi(http, apiKey, '/v1/messages', { from: 'news@acme.example', to: `someone@${domainOf(c)}`, subject: c.name, text: textOf(c) });
    assert.is(r.status, 202, `${c.name}: accepted`);
    ids.set(c.name, r.body.id as string);
  }

  // Settled: every recovering case delivered; every other case deferred with its second attempt made.
  const states = new Map<string, RcptState>();
  let slowestStatusMs = 0;
  const settled = (c: Case, s: RcptState | undefined) =>
    s !== undefined && (c.expect === 'delivered' ? s.state === 'delivered' : s.state === 'deferred' && s.attempts >= 2);
  const deadline = Date.now() + SETTLE_TIMEOUT_MS;
  while (Date.now() < deadline && !CASES.every((c) => settled(c, states.get(c.name)))) {
    for (const c of CASES) {
      const t0 = Date.now();
      const r = await callApi(http, apiKey, `/v1/messages/${ids.get(c.name)}`);
      slowestStatusMs = Math.max(slowestStatusMs, Date.now() - t0);
      assert.is(r.status, 200);
      states.set(c.name, r.body.recipients[0] as RcptState);
    }
    await sleep(200);
  }
  const settledMs = Date.now() - started;
  const health = await adminGet(sluice.ports.admin, '/healthz');

  const delivered = CASES.filter((c) => states.get(c.name)?.state === 'delivered').length;
  const deferred = CASES.filter((c) => states.get(c.name)?.state === 'deferred').length;
  await recordFigures('remote_mx', {
    sent: CASES.length,
    lost: CASES.filter((c) => !['delivered', 'deferred'].includes(states.get(c.name)?.state ?? '')).length,
    // Copies a peer holds beyond the first: the stall-once peer keeps the copy it never answered.
    duplicated: CASES.reduce((n, c, i) => n + (c.expect === 'delivered' ? Math.max(0, (peers[i] as ScriptedPeer).messages.length - 1) : 0), 0),
    peer_behaviours: CASES.length,
    delivered_after_recovery: delivered,
    deferred_with_next_attempt: deferred,
    settled_ms: settledMs,
    slowest_status_ms: slowestStatusMs,
  });

  const now = Date.now();
  for (const c of CASES) {
    const s = states.get(c.name);
    console.log(`  ${c.name}: ${s?.state} attempts=${s?.attempts} response=${JSON.stringify(s?.response?.slice(0, 100) ?? null)}`);
    assert.ok(s, `${c.name}: has a state`);
    if (c.expect === 'delivered') {
      assert.is(s.state, 'delivered', `${c.name}: delivered once the peer recovered (${JSON.stringify(s)})`);
      assert.is(s.attempts, 2, `${c.name}: on the second attempt`);
    } else {
      assert.is(s.state, 'deferred', `${c.name}: deferred (${JSON.stringify(s)})`);
      assert.is(s.attempts, 2, `${c.name}: both attempts made, no more (${JSON.stringify(s)})`);
      assert.ok(s.nextAttemptAt !== null && s.nextAttemptAt - now > HOUR_MS / 2, `${c.name}: next attempt on the schedule, ~1 h away (${s.nextAttemptAt})`);
      assert.ok(s.response, `${c.name}: the reason is on the record`);
      if (c.response) assert.match(s.response, c.response, `${c.name}: the reason says what happened`);
    }
  }
  // The delivered copies reached their peers exactly once with a final answer (the stall-once peer
  // also holds the first copy, which it never answered: the ambiguous case a retry must cover).
  for (const [i, c] of CASES.entries()) {
    if (c.expect === 'delivered') assert.ok((peers[i] as ScriptedPeer).messages.length >= 1, `${c.name}: the peer has the message`);
  }
  // A peer that stopped reading never got a whole message from the attempt it stalled: the recovered
  // one holds the copy of the retry alone, the other none.
  const peerOf = (name: string) => peers[CASES.findIndex((c) => c.name === name)] as ScriptedPeer;
  assert.is(peerOf('stop-reading-once').messages.length, 1, 'stop-reading-once: one copy, from the retry');
  assert.ok((peerOf('stop-reading-once').messages[0]?.length ?? 0) > BEYOND_SOCKET_BUFFERS, 'stop-reading-once: the whole message');
  assert.is(peerOf('stop-reading-mid-data').messages.length, 0, 'stop-reading-mid-data: never a whole message');
  assert.is(health.status, 200, 'the process still answers');
  assert.ok(slowestStatusMs < 1000, `the API answered throughout (slowest status read ${slowestStatusMs} ms)`);

  sluice.signal('SIGTERM');
  const exit = await sluice.waitExit(15_000);
  assert.is(exit.code, 0, `clean exit with stalled peers around: ${sluice.stderr().slice(-1000)}`);
});

test.run();
