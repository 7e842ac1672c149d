/**
 * `sluice send` against a whole Sluice running in this process (test/helpers/sluice.ts), delivering
 * through the transport map to SMTP peers on loopback: the id is printed, --wait follows the
 * message to its end, refusals exit 1 with the code and the reasons, usage errors exit 2.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { freePort, startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, startScriptedPeer, type CapturePeer, type ScriptedPeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { sluice, spawnSluice } from './run-cli.js';

const test = suite('cli/send');

let redis: TestRedis;
let peer: CapturePeer;
let rejecting: ScriptedPeer;
let deferring: ScriptedPeer;
let s: SluiceFixture;
let api: string;
let dir: string;

const hp = (p: { host: string; port: number }) => `${p.host}:${p.port}`;

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-cli-send-'));
  redis = await startRedis();
  peer = await startCapturePeer();
  rejecting = await startScriptedPeer({ ehlo: ['PIPELINING'], on: { RCPT: '550 5.1.1 <gone@bounce.test>: user unknown' } });
  deferring = await startScriptedPeer({ ehlo: ['PIPELINING'], on: { RCPT: '451 4.3.0 try again later' } });
  s = await startSluiceFixture(redis, {
    delivery: { transport: { 'one.test': hp(peer), 'bounce.test': hp(rejecting), 'later.test': hp(deferring) } },
  });
  api = `http://127.0.0.1:${s.app.ports.http}`;
});

test.after(async () => {
  await s?.stop();
  await Promise.all([peer?.close(), rejecting?.close(), deferring?.close()]);
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const base = () => ['send', '--api', api, '--key', s.apiKey, '--from', 'Acme <news@acme.example>'];

test('prints the id of the accepted message, which the API knows', async () => {
  const r = await sluice([...base(), '--to', 'alice@one.test', '--cc', 'carol@one.test', '--subject', 'CLI hello', '--text', 'sent by sluice send', '--header', 'X-Campaign: cli-1']);
  assert.is(r.code, 0, r.err);
  const id = r.out.trim();
  assert.match(id, /^\S+$/);
  const msg = await s.api(`/v1/messages/${id}`);
  assert.is(msg.status, 200, JSON.stringify(msg.body));
  assert.equal((msg.body.recipients as { address: string }[]).map((x) => x.address).sort(), ['alice@one.test', 'carol@one.test']);
  await s.waitFinal(id);
});

test('--wait returns 0 once delivered and prints each recipient; the peer got the message with its attachment', async () => {
  const attachment = join(dir, 'report.csv');
  writeFileSync(attachment, 'a,b\n1,2\n');
  const textFile = join(dir, 'body.txt');
  writeFileSync(textFile, 'body from a file ✓\n');
  const before = peer.messages.length;
  const r = await sluice([...base(), '--to', 'dave@one.test', '--subject', 'waited', '--text-file', textFile, '--attach', attachment, '--wait', '--timeout', '30s']);
  assert.is(r.code, 0, r.err);
  const [id, ...states] = r.out.trimEnd().split('\n');
  assert.match(id as string, /^\S+$/);
  assert.equal(states.length, 1);
  assert.match(states[0] as string, /^dave@one\.test: delivered \(250/);
  const [got] = (await peer.waitFor(before + 1)).slice(before);
  assert.equal(got?.envelope.to, ['dave@one.test']);
  const raw = got?.raw.toString('utf8') ?? '';
  assert.match(raw, 'Subject: waited');
  assert.match(raw, 'filename=report.csv');
  assert.match(raw, /^DKIM-Signature:/m);
});

test('--wait returns 1 when a recipient bounces, with the remote answer', async () => {
  const r = await sluice([...base(), '--to', 'gone@bounce.test', '--subject', 'doomed', '--text', 'x', '--wait', '--timeout', '30s']);
  assert.is(r.code, 1, r.err);
  assert.match(r.out, /gone@bounce\.test: bounced \(550 5\.1\.1/);
});

test('--wait ends at a suppressed recipient (final: never sent), exit 1, without waiting out --timeout', async () => {
  const added = await s.api('/v1/suppressions', { body: { email: 'blocked@one.test', reason: 'manual' } });
  assert.ok(added.status < 300, JSON.stringify(added.body));
  const started = Date.now();
  const r = await sluice([...base(), '--to', 'blocked@one.test', '--subject', 'never', '--text', 'x', '--wait', '--timeout', '60s']);
  assert.is(r.code, 1, r.err);
  assert.match(r.out, /blocked@one\.test: suppressed/);
  assert.not.match(r.err, 'not every recipient is final');
  assert.ok(Date.now() - started < 30_000, `it ended at the outcome, not at --timeout (${Date.now() - started} ms)`);
});

test('--wait gives up at --timeout with exit 1 and the pending state; the mail stays queued', async () => {
  const r = await sluice([...base(), '--to', 'slow@later.test', '--subject', 'deferred', '--text', 'x', '--wait', '--timeout', '1s']);
  assert.is(r.code, 1);
  assert.match(r.err, 'not every recipient is final after 1s');
  const id = r.out.split('\n')[0] as string;
  const msg = await s.api(`/v1/messages/${id}`);
  assert.not.ok(['delivered', 'bounced', 'expired'].includes(msg.body.recipients[0].state), JSON.stringify(msg.body));
});

test('a refused request exits 1 with the code and the reasons on stderr', async () => {
  const notOwned = await sluice(['send', '--api', api, '--key', s.apiKey, '--from', 'ceo@evil.example', '--to', 'alice@one.test', '--subject', 's', '--text', 'x']);
  assert.is(notOwned.code, 1);
  assert.is(notOwned.out, '');
  assert.match(notOwned.err, 'refused (403): SLUICE_INGRESS_FROM_NOT_OWNED');

  const invalid = await sluice([...base(), '--to', 'not an address', '--to', 'ok@one.test', '--subject', 's']);
  assert.is(invalid.code, 1);
  assert.match(invalid.err, 'refused (400): SLUICE_INGRESS_BAD_REQUEST');
  assert.match(invalid.err, /^ {2}to\.0: /m, 'the bad recipient is named by its path');

  const badKey = await sluice(['send', '--api', api, '--key', 'sk_acme_00000000000000000000000000000000', '--from', 'news@acme.example', '--to', 'a@one.test', '--subject', 's', '--text', 'x']);
  assert.is(badKey.code, 1);
  assert.match(badKey.err, 'refused (401): SLUICE_AUTH_FAILED');
});

test('usage errors exit 2: no key, no recipient, an unreadable file, a bad header, timeout or --api', async () => {
  const common = ['send', '--api', api, '--from', 'news@acme.example', '--subject', 's'];
  const cases: [string[], string][] = [
    [[...common, '--to', 'a@one.test', '--text', 'x'], 'no API key: pass --key or set SLUICE_API_KEY'],
    [[...common, '--key', 'k', '--text', 'x'], '--from, --to and --subject are required'],
    [[...common, '--key', 'k', '--to', 'a@one.test', '--text-file', join(dir, 'absent.txt')], '--text-file'],
    [[...common, '--key', 'k', '--to', 'a@one.test', '--text', 'x', '--attach', join(dir, 'absent.pdf')], 'cannot read it (ENOENT)'],
    [[...common, '--key', 'k', '--to', 'a@one.test', '--text', 'x', '--header', 'NoColon'], "--header must be 'Name: value'"],
    [[...common, '--key', 'k', '--to', 'a@one.test', '--text', 'x', '--wait', '--timeout', 'soon'], "--timeout 'soon' is not a duration"],
    // Sent before, and refused as an unreachable API (exit 1, ERR_INVALID_URL or a scheme error).
    [['send', '--api', '127.0.0.1:8025', '--key', 'k', '--from', 'news@acme.example', '--subject', 's', '--to', 'a@one.test', '--text', 'x'], "--api '127.0.0.1:8025' is not an http:// or https:// URL"],
    [['send', '--api', 'notaurl', '--key', 'k', '--from', 'news@acme.example', '--subject', 's', '--to', 'a@one.test', '--text', 'x'], "--api 'notaurl' is not an http:// or https:// URL"],
  ];
  for (const [argv, message] of cases) {
    const r = await sluice(argv);
    assert.is(r.code, 2, argv.join(' '));
    assert.match(r.err, message);
    assert.is(r.out, '');
  }
});

test('an API that does not answer: exit 1 with a message that names it', async () => {
  const port = await freePort();
  const r = await sluice(['send', '--api', `http://127.0.0.1:${port}`, '--key', s.apiKey, '--from', 'news@acme.example', '--to', 'a@one.test', '--subject', 's', '--text', 'x']);
  assert.is(r.code, 1);
  assert.match(r.err, `cannot reach the API at http://127.0.0.1:${port}/v1/messages: ECONNREFUSED`);
});

test('as a real process: the key from SLUICE_API_KEY and the API port from --config', async () => {
  const cfg = join(dir, 'sluice.yaml');
  writeFileSync(cfg, `ingress:\n  http:\n    port: ${s.app.ports.http}\n`);
  const r = await spawnSluice(['send', '--config', cfg, '--from', 'news@acme.example', '--to', 'erin@one.test', '--subject', 'from a process', '--text', 'x'], { env: { SLUICE_API_KEY: s.apiKey } });
  assert.is(r.code, 0, r.err);
  const final = await s.waitFinal(r.out.trim());
  assert.is(final.recipients[0].state, 'delivered');
});

test.run();
