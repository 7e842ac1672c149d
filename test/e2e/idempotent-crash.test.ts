import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { writeSluiceConfig, startSluiceProcess, killAllSluiceProcesses, type SluiceInstance } from '../helpers/sluice-process.js';
import { createKeys } from '../../src/redis/keys.js';

/**
 * "An Idempotency-Key makes a retried request return the first answer instead of sending twice",
 * across a crash: a real `sluice start` (ingress only) is SIGKILLed while it persists a batch of
 * 400 messages sent with an Idempotency-Key, after some are stored and before it answers. The
 * client's retry, once the request's in-flight lease has lapsed (30 s; the test removes the marker
 * instead of waiting), answers for the stored ones as they were stored and stores only the rest:
 * every recipient has exactly one message.
 */
const test = suite('e2e/idempotent-crash');
const N = 400;
const PREFIX = 'idem:';
let redis: TestRedis;
let inst: SluiceInstance;

test.before(async () => {
  redis = await startRedis();
  inst = await writeSluiceConfig({ redisUrl: redis.url, prefix: PREFIX, transport: { '*': '127.0.0.1:9' }, overrides: { roles: ['ingress'] } });
});

test.after(async () => {
  await killAllSluiceProcesses();
  inst?.remove();
  await redis?.stop();
});

test('a batch whose process died mid-way is stored once when retried with its Idempotency-Key', async () => {
  const client = redis.client();
  const keys = createKeys(PREFIX);
  const stored = async (): Promise<Map<string, number>> => {
    const byRcpt = new Map<string, number>();
    for (const k of await client.keys(`${PREFIX}{m:*}:meta`)) {
      const rcpts = JSON.parse((await client.hget(k, 'rcpts')) ?? '[]') as { address?: string }[] | string[];
      for (const r of rcpts) {
        const a = typeof r === 'string' ? r : r.address ?? '';
        byRcpt.set(a, (byRcpt.get(a) ?? 0) + 1);
      }
    }
    return byRcpt;
  };
  const messages = Array.from({ length: N }, (_, i) => ({ from: 'news@acme.example', to: `r${i}@dest.example`, subject: `s${i}`, text: 'x'.repeat(4000) }));
  const body = JSON.stringify({ messages });
  const post = (port: number) =>
    request(`http://127.0.0.1:${port}/v1/messages/batch`, {
      method: 'POST', body,
      headers: { authorization: `Bearer ${inst.account.apiKey}`, 'content-type': 'application/json', 'idempotency-key': 'batch-K' },
    });

  let p = await startSluiceProcess(inst);
  const first = post(p.ports.http as number).then(
    async (r) => `answered ${r.statusCode}: ${(await r.body.text()).slice(0, 80)}`,
    (err: unknown) => `no answer: ${(err as Error).message}`,
  );
  // Killed once the first messages are stored, before the batch's answer.
  for (let i = 0; i < 5000 && (await client.keys(`${PREFIX}{m:*}:meta`)).length === 0; i++) await new Promise((r) => setTimeout(r, 2));
  p.signal('SIGKILL');
  await p.waitExit();
  const answer = await first;
  assert.ok(answer.startsWith('no answer'), `the first request must die unanswered for this test to mean anything (${answer})`);
  const before = await stored();
  assert.ok(before.size > 0 && before.size < N, `some but not all stored at the kill: ${before.size}`);

  // The in-flight marker lapses 30 s after the process died: removed here instead of waited for.
  const marker = keys.idempotency('acme', createHash('sha256').update('batch-K').digest('base64url'));
  assert.is(await client.del(marker), 1);
  p = await startSluiceProcess(inst);
  const r = await post(p.ports.http as number);
  assert.is(r.statusCode, 202);
  const json = (await r.body.json()) as { accepted: number; results: { id?: string }[] };
  assert.is(json.accepted, N);
  const after = await stored();
  assert.is(after.size, N, 'every recipient has a message');
  const twice = [...after].filter(([, n]) => n > 1).map(([a]) => a);
  assert.equal(twice, [], 'and none has two');
  // The answer names the stored message of each, the earlier run's among them.
  const ids = new Set(json.results.map((x) => x.id));
  assert.is(ids.size, N);
  for (const k of await client.keys(`${PREFIX}{m:*}:meta`)) assert.ok(ids.has(/\{m:([^}]+)\}/.exec(k)?.[1]), `${k} is in the answer`);
  // A retry after the answer replays it.
  const again = await post(p.ports.http as number);
  assert.is(again.headers['idempotent-replayed'], 'true');
  assert.is(((await again.body.json()) as { accepted: number }).accepted, N);
  p.signal('SIGTERM');
  await p.waitExit();
});

test.run();
