import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { request } from 'undici';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startScriptedPeer, type ScriptedPeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { createKeys } from '../../src/redis/keys.js';
import { backoffState, type BackoffState } from '../../src/queue/backoff.js';
import type { RedisClient } from '../../src/redis/client.js';

/**
 * Adaptive backoff end to end: a provider that answers "421 4.7.0 try later" to a run of RCPTs is
 * slowed (its level rises, with the answer as the reason), the mail is still delivered once it
 * answers 250 again, and the level comes back to 0 one step at a time while mail keeps flowing.
 */
const test = suite('e2e/backoff');

/** RCPTs answered 421 before the peer turns good: with threshold 2, enough for three triggers. */
const SLOW_ANSWERS = 6;
const SLOW = '421 4.7.0 Too many messages from your IP, try again later';

let redis: TestRedis;
let peer: ScriptedPeer;
let s: SluiceFixture;
let rc: RedisClient;

test.before(async () => {
  redis = await startRedis();
  peer = await startScriptedPeer({ ehlo: ['PIPELINING'], on: { RCPT: [...Array<string>(SLOW_ANSWERS).fill(SLOW), '250 2.1.5 ok'] } });
  s = await startSluiceFixture(redis, {
    delivery: {
      transport: { 'slow.test': `${peer.host}:${peer.port}` },
      // Short enough to run in a test: two answers trigger; suspensions of 100–300 ms; one level
      // removed per 400 ms of good answers (recovery slower than escalation, as in production).
      backoff: { threshold: 2, window: '10s', suspend: '100ms', maxSuspend: '300ms', maxLevel: 3, recoverAfter: '400ms' },
    },
    shaping: { rules: [{ name: 'slowprov', match: { domains: ['slow.test'], mx: [] }, scope: 'provider', connections: 4 }] },
  });
  rc = redis.client();
});

test.after(async () => {
  rc?.disconnect();
  await s?.stop();
  await peer?.close();
  await redis?.stop();
});

const state = (): Promise<BackoffState> => backoffState(rc, createKeys(s.config.redis.prefix), 'slowprov', Date.now());

async function metricLevel(): Promise<number | null> {
  const res = await request(`http://127.0.0.1:${s.app.ports.admin}/metrics`);
  const text = await res.body.text();
  const m = /^sluice_backoff_level\{provider="slowprov"\} (\d+)$/m.exec(text);
  return m ? Number(m[1]) : null;
}

async function send(to: string[]): Promise<string> {
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to, subject: 'backoff', text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  return r.body.id as string;
}

test('a 421 storm raises the level with its reason; mail is delivered; the level returns to 0 as good answers continue', async () => {
  const id = await send(['a@slow.test', 'b@slow.test', 'c@slow.test']);
  let maxLevel = 0;
  let maxMetric = 0;
  let reason: string | null = null;
  let final: any = null;
  const watching = (async () => {
    while (!final) {
      const st = await state();
      if (st.level > maxLevel) [maxLevel, reason] = [st.level, st.reason];
      maxMetric = Math.max(maxMetric, (await metricLevel()) ?? 0);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  final = await s.waitFinal(id, 20_000);
  await watching;
  for (const r of final.recipients) assert.is(r.state, 'delivered', JSON.stringify(r));
  assert.ok(final.recipients.some((r: { attempts: number }) => r.attempts > 1), 'some were deferred by the 421s first');
  assert.ok(maxLevel >= 2, `the level rose with repeated bursts (max ${maxLevel})`);
  assert.is(reason, SLOW, 'the reason is the provider\'s answer');
  assert.is(peer.commands.filter((c) => c.startsWith('RCPT')).length, SLOW_ANSWERS + 3, 'every 421 was seen, then one RCPT per recipient');
  assert.ok(maxMetric >= 1, `sluice_backoff_level showed the slowdown (max ${maxMetric})`);

  // Recovery needs good answers (the first message's own retries may already have brought it
  // down): keep a trickle of mail flowing until the level is back to 0.
  const seen: number[] = [(await state()).level];
  for (let i = 0; i < 60 && seen[seen.length - 1] !== 0; i++) {
    const f = await s.waitFinal(await send([`t${i}@slow.test`]), 20_000);
    assert.is(f.recipients[0].state, 'delivered');
    const lvl = (await state()).level;
    if (lvl !== seen[seen.length - 1]) seen.push(lvl);
    await new Promise((r) => setTimeout(r, 50));
  }
  // (One level per quiet period is checked with a pinned clock in test/queue; here only the outcome.)
  assert.is(seen[seen.length - 1], 0, `back to full speed (levels seen: ${seen.join(' → ')})`);
  assert.equal(await state(), { suspendedUntil: null, level: 0, reason: null });
  assert.is(await metricLevel(), 0, 'sluice_backoff_level shows full speed');
});

test.run();
