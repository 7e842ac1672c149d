/**
 * Operator holds end to end: `sluice queue hold` against a running Sluice (real Redis, real SMTP
 * peers on loopback, a DNS stub). A held domain gets no connection and no DNS lookup while its mail
 * waits, unattempted; other destinations go on; `sluice queue` shows it held; a release sends the
 * mail at once. A held rule holds the destinations its patterns match. A hold placed while a
 * connection sends stops it after its current message.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { HOLD_RECHECK_MS, placeHolds, releaseHolds } from '../../src/queue/holds.js';
import { shardOf } from '../../src/redis/keys.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { startDnsStub, type DnsStub } from '../helpers/dns-stub.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { sluice } from '../cli/run-cli.js';

const test = suite('e2e/hold');

/** Longer than a dispatcher trusts its copy of the holds (HOLD_CACHE_MS): a hold placed before it is seen. */
const SEEN_MS = 1_300;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let redis: TestRedis;
let dns: DnsStub;
let sink: CapturePeer;
let slow: CapturePeer;
let s: SluiceFixture;
let dir: string;
let cfg: string;
/** Set by a test: called when the slow peer has a message, before it answers (after `answerAfterMs`). */
let onSlowData: (() => Promise<void>) | null = null;

const hp = (p: { host: string; port: number }) => `${p.host}:${p.port}`;
const rcptsAt = (peer: CapturePeer, domain: string) => peer.messages.filter((m) => m.envelope.to.some((t) => t.endsWith(`@${domain}`))).length;

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-hold-'));
  redis = await startRedis();
  dns = await startDnsStub({ 'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] } });
  sink = await startCapturePeer();
  slow = await startCapturePeer({ onData: async () => {
    await onSlowData?.();
    return null;
  } });
  const shaping = { rules: [{ name: 'ruled', match: { domains: ['*.rule.test'], mx: [] } }, { name: 'brief', match: { domains: ['brief.test'], mx: [] }, maxAge: '2s' }] };
  s = await startSluiceFixture(redis, {
    delivery: {
      transport: { 'held.test': hp(sink), 'free.test': hp(sink), 'brief.test': hp(sink), 'a.rule.test': hp(sink), 'slow.test': hp(slow) },
      dns: { servers: [dns.server] },
      claimBatch: 1,
    },
    shaping: { ...shaping, default: { retry: ['300ms', '600ms'], connections: 1 } },
  });
  cfg = join(dir, 'sluice.yaml');
  writeFileSync(cfg, JSON.stringify({ redis: { url: redis.url, prefix: s.config.redis.prefix, scheduleShards: s.config.redis.scheduleShards }, shaping }));
});

test.after(async () => {
  await s?.stop();
  await Promise.all([sink?.close(), slow?.close(), dns?.close()]);
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const send = async (to: string, subject = 'hold test') => {
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to, subject, text: 'hello' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  return r.body.id as string;
};
/** The destination was looked at and postponed by its hold: due again no sooner than most of HOLD_RECHECK_MS from now. */
const assertPostponed = async (domain: string) => {
  const score = (await scheduledAt(domain)) ?? 0;
  assert.ok(score > Date.now() + HOLD_RECHECK_MS / 2, `${domain} postponed: due ${score - Date.now()} ms from now`);
  return score;
};
/** sluice_delivery_held_total, all kinds: destination visits a hold postponed. */
const heldVisits = async (): Promise<number> => {
  const text = await (await fetch(`http://127.0.0.1:${s.app.ports.admin}/metrics`)).text();
  return [...text.matchAll(/^sluice_delivery_held_total\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
};
/** sluice_delivery_holds{kind}: the holds in force as the dispatcher last read them. */
const holdsGauge = async (kind: string): Promise<number> => {
  const text = await (await fetch(`http://127.0.0.1:${s.app.ports.admin}/metrics`)).text();
  return Number(new RegExp(`^sluice_delivery_holds\\{kind="${kind}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? -1);
};
const scheduledAt = async (domain: string): Promise<number | null> => {
  const score = await s.app.redis.client.zscore(s.app.keys.schedule(shardOf(domain, s.config.redis.scheduleShards)), domain);
  return score === null ? null : Number(score);
};
const recipient = async (id: string) => (await s.api(`/v1/messages/${id}`)).body.recipients[0];

test('a held domain gets nothing while its mail waits unattempted; another destination is delivered meanwhile; `sluice queue` shows it held; a release sends it at once', async () => {
  const held = await sluice(['queue', 'hold', '--config', cfg, '--domain', 'Held.Test', '--reason', 'blocked by the provider']);
  assert.is(held.code, 0, held.err);
  assert.match(held.out, /held\.test: held until released, since .* by cli:.*: blocked by the provider/);
  await sleep(SEEN_MS);
  assert.is(await holdsGauge('domain'), 1, 'the gauge counts the hold');
  const waiting = await send('ann@held.test');
  const other = await send('bob@free.test');
  assert.is((await s.waitFinal(other)).recipients[0].state, 'delivered');
  // The dispatcher has looked at held.test by now (it was due before free.test) and several times over.
  await sleep(500);
  const r = await recipient(waiting);
  assert.is(r.state, 'queued', JSON.stringify(r));
  assert.is(r.attempts ?? 0, 0, 'no attempt counted');
  assert.is(rcptsAt(sink, 'held.test'), 0, 'nothing sent to the held domain');
  await assertPostponed('held.test');
  const q = await sluice(['queue', '--config', cfg, '--json']);
  const row = (JSON.parse(q.out) as { domain: string; held: { kind: string; reason: string } | null }[]).find((x) => x.domain === 'held.test');
  assert.equal(row?.held, { kind: 'domain', name: 'held.test', until: null, reason: 'blocked by the provider' });
  assert.match((await sluice(['queue', '--config', cfg])).out, /held\.test\s+1\s.*\syes\s/);

  const visits = await heldVisits();
  assert.ok(visits >= 1, 'sluice_delivery_held_total counts the postponed visits');
  const rel = await sluice(['queue', 'release', '--config', cfg, '--domain', 'held.test']);
  assert.is(rel.code, 0, rel.err);
  assert.match(rel.out, 'held.test: released');
  const done = await s.waitFinal(waiting, 8_000);
  assert.is(done.recipients[0].state, 'delivered');
  // The release made it due and the dispatcher, reading the holds afresh before it would postpone
  // (its copy may be a second old), sent it at that visit: no postponement after the release.
  assert.is(await heldVisits(), visits, 'not postponed again after the release');
  assert.is(rcptsAt(sink, 'held.test'), 1);
  // Read again within a second by the dispatcher's tick, with nothing left to deliver.
  for (let i = 0; i < 40 && (await holdsGauge('domain')) !== 0; i++) await sleep(100);
  assert.is(await holdsGauge('domain'), 0, 'the gauge follows the release');
});

test('a held domain with a null MX is not looked up and not bounced while held; released, it bounces as before', async () => {
  assert.is((await sluice(['queue', 'hold', '--config', cfg, '--domain', 'nullmx.test', '--for', '1h'])).code, 0);
  await sleep(SEEN_MS);
  const lookups = dns.queries('nullmx.test');
  const id = await send('carl@nullmx.test');
  const marker = await send('dora@free.test');
  await s.waitFinal(marker);
  await sleep(500);
  assert.is((await recipient(id)).state, 'queued');
  assert.is(dns.queries('nullmx.test'), lookups, 'no DNS lookup while held');
  await assertPostponed('nullmx.test');
  const holds = JSON.parse((await sluice(['queue', 'holds', '--config', cfg, '--json'])).out) as { name: string; until: number | null }[];
  assert.equal(holds.map((h) => h.name), ['nullmx.test']);
  assert.ok((holds[0]?.until ?? 0) > Date.now() + 3_500_000, '--for 1h');
  await sluice(['queue', 'release', '--config', cfg, '--all']);
  const rc = (await s.waitFinal(id, 8_000)).recipients[0];
  assert.is(rc.state, 'bounced');
  assert.is(rc.enhanced, '5.1.10');
});

test('a held rule holds every destination it matches; its release makes them due at once', async () => {
  const r = await sluice(['queue', 'hold', '--config', cfg, '--rule', 'ruled']);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, 'rule ruled: held until released');
  await sleep(SEEN_MS);
  const id = await send('eve@a.rule.test');
  await s.waitFinal(await send('fay@free.test'));
  await sleep(500);
  assert.is((await recipient(id)).state, 'queued');
  assert.is(rcptsAt(sink, 'a.rule.test'), 0);
  const postponed = await assertPostponed('a.rule.test');
  assert.match((await sluice(['queue', 'release', '--config', cfg, '--rule', 'ruled'])).out, '1 hold released');
  // The release found the rule's destinations and made them due, not left for the next recheck (or
  // the dispatcher has been there already, sent the mail and scheduled what is left).
  const after = await scheduledAt('a.rule.test');
  assert.ok(after === null || after < postponed, `made due by the release: ${after} against ${postponed}`);
  assert.is((await s.waitFinal(id, 8_000)).recipients[0].state, 'delivered');
});

test('a hold placed while a connection sends there stops it after the message being sent; the rest waits until the release', async () => {
  let first = true;
  onSlowData = async () => {
    if (!first) return;
    first = false;
    // Placed while the first message is on the wire; answered once every process has seen it.
    await placeHolds(s.app.redis.client, s.app.keys, [{ kind: 'domain', name: 'slow.test' }], { until: null, reason: 'mid-connection', by: 'test', now: Date.now() });
    await sleep(SEEN_MS);
  };
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push(await send(`r${i}@slow.test`, `slow ${i}`));
  await s.waitFinal(ids[0]!);
  await sleep(800);
  const states = await Promise.all(ids.map(async (id) => (await recipient(id)).state));
  assert.is(states.filter((x) => x === 'delivered').length, 1, `one delivered, the rest held: ${states.join(', ')}`);
  assert.is(slow.messages.length, 1);
  await sluice(['queue', 'release', '--config', cfg, '--domain', 'slow.test']);
  for (const id of ids) assert.is((await s.waitFinal(id, 8_000)).recipients[0].state, 'delivered');
  assert.is(slow.messages.length, 4);
  onSlowData = null;
});

test('a copy whose message cannot be loaded is deferred, and expires at its maximum age counted from its acceptance, not retried for ever', async () => {
  const client = s.app.redis.client;
  const keys = s.app.keys;
  // Held while its record is made unreadable (a string where the hash was: every load fails).
  await placeHolds(client, keys, [{ kind: 'domain', name: 'brief.test' }], { until: null, reason: 'poison', by: 'test', now: Date.now() });
  await sleep(SEEN_MS);
  const id = await send('pat@brief.test');
  await client.del(keys.msgMeta(id));
  await client.set(keys.msgMeta(id), 'unreadable');
  await releaseHolds(client, keys, s.config.redis.scheduleShards, [{ kind: 'domain', name: 'brief.test' }], Date.now());
  const state = () => client.hget(keys.rcptState('brief.test', id, 0), 'state');
  const deadline = Date.now() + 20_000;
  while ((await state()) !== 'expired' && Date.now() < deadline) await sleep(100);
  assert.is(await state(), 'expired', `retried until brief.test's maxAge (2 s) after its acceptance: ${JSON.stringify(await client.hgetall(keys.rcptState('brief.test', id, 0)))}`);
  assert.is(rcptsAt(sink, 'brief.test'), 0);
  await client.del(keys.msgMeta(id));
});

test("mail held past its maxAge (and a tenth of it) expires unsent when the hold ends: not sent days late", async () => {
  const client = s.app.redis.client;
  const keys = s.app.keys;
  await placeHolds(client, keys, [{ kind: 'domain', name: 'brief.test' }], { until: null, reason: 'late', by: 'test', now: Date.now() });
  await sleep(SEEN_MS);
  const before = rcptsAt(sink, 'brief.test');
  const id = await send('late@brief.test', 'held too long');
  await sleep(4_600); // brief.test's maxAge is 2 s, and a claim up to 2 s late still makes its last attempt
  await releaseHolds(client, keys, s.config.redis.scheduleShards, [{ kind: 'domain', name: 'brief.test' }], Date.now());
  const r = (await s.waitFinal(id, 8_000)).recipients[0];
  assert.is(r.state, 'expired', JSON.stringify(r));
  assert.match(String(r.response), /waited in the queue past its maxAge/);
  assert.is(rcptsAt(sink, 'brief.test'), before, 'nothing sent');
});

test('usage: no target, an unknown rule, or a bad --for is exit 2 naming the problem; releasing what is not held says so', async () => {
  for (const [argv, re] of [
    [['queue', 'hold', '--config', cfg], /--domain D or --rule NAME/],
    [['queue', 'hold', '--config', cfg, '--rule', 'nosuch'], /--rule 'nosuch' is not a shaping rule of this configuration \(default, .*ruled/],
    [['queue', 'hold', '--config', cfg, '--domain', 'x.test', '--for', 'soon'], /--for must be a duration/],
    [['queue', 'release', '--config', cfg], /--all/],
    [['queue', 'release', '--config', cfg, '--all', '--domain', 'x.test'], /--all/],
  ] as const) {
    const r = await sluice([...argv]);
    assert.is(r.code, 2, `${argv.join(' ')}: ${r.out}`);
    assert.match(r.err, re);
  }
  const r = await sluice(['queue', 'release', '--config', cfg, '--domain', 'never.test']);
  assert.is(r.code, 0);
  assert.match(r.out, 'never.test: was not held');
  assert.match(r.out, '0 holds released');
});

test.run();
