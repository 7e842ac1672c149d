/**
 * DELETE /v1/messages/:id over a real Redis, with a Sluice that runs only the ingress role (nothing
 * is delivered, so each recipient's state is set up by the queue's own operations, as a dispatcher
 * would): the waiting recipients are cancelled with their events, one being sent is left to its
 * delivery, a delivered one keeps its state; another account's message is 404.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { claim } from '../../src/queue/claim.js';
import { ack, retry } from '../../src/queue/outcome.js';
import { streamFields } from '../../src/store/events.js';
import { recipientStates } from '../../src/queue/status.js';
import { cancelRecipients } from '../../src/ingress/message-cancel.js';
import { persistMessage, refsTtlMs } from '../../src/ingress/persist.js';
import { addressDigest } from '../../src/store/address-digest.js';
import { newId } from '../../src/core/ids.js';
import type { Keys } from '../../src/redis/keys.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { makeAccount, startSluiceFixture, type AccountKeys, type SluiceFixture } from '../helpers/sluice.js';

const test = suite('ingress/message-cancel');
const HOUR = 3_600_000;
let redis: TestRedis;
let other: AccountKeys;
let otherDir: string;
let s: SluiceFixture;
let keys: Keys;

test.before(async () => {
  redis = await startRedis();
  otherDir = mkdtempSync(join(tmpdir(), 'sluice-cancel-other-'));
  other = await makeAccount(otherDir, 'other', 'other.example', ['ed25519']);
  s = await startSluiceFixture(redis, { roles: ['ingress'] }, { extraAccounts: [other.account] });
  keys = s.app.keys;
});

test.after(async () => {
  await s?.stop();
  await redis?.stop();
  rmSync(otherDir, { recursive: true, force: true });
});

test('waiting recipients (queued, deferred) are cancelled with an event each; one being sent and one delivered keep their state; a second DELETE cancels nothing', async () => {
  const client = s.app.redis.client;
  const sent = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: ['q@q.test', 'd@d.test', 's@s.test', 'f@f.test'], subject: 'cancel me', text: 'hello' } });
  assert.is(sent.status, 202, JSON.stringify(sent.body));
  const id = sent.body.id as string;
  const now = Date.now();
  const one = async (domain: string) => (await claim(client, keys, { domain, max: 1, leaseMs: HOUR, now })).entries[0]!;
  await retry(client, keys, await one('d.test'), { now, nextAt: now + HOUR, code: 451, enhanced: '4.3.0', response: '451 4.3.0 later' });
  await one('s.test');
  await ack(client, keys, await one('f.test'), { now, code: 250, enhanced: '2.0.0', response: '250 2.0.0 ok', recordTtlMs: HOUR });
  // As the dispatcher does after an ack: the message counts the recipient off.
  await client.finishCopy(keys.msgMeta(id), keys.msgBody(id), keys.links(id), keys.msgStats(id), keys.copiesCounted(id), 3, 'delivered', '', '0', now, HOUR);

  const r = await s.api(`/v1/messages/${id}`, { method: 'DELETE' });
  assert.is(r.status, 200, JSON.stringify(r.body));
  assert.is(r.body.cancelled, 2);
  assert.is(r.body.sending, 1);
  const state: Record<string, { state: string; response: string; attempts: number }> = Object.fromEntries((r.body.recipients as { address: string; state: string; response: string; attempts: number }[]).map((x) => [x.address, x]));
  assert.is(state['q@q.test']?.state, 'cancelled');
  assert.is(state['q@q.test']?.response, 'not sent: the message was cancelled');
  assert.is(state['d@d.test']?.state, 'cancelled');
  assert.is(state['d@d.test']?.attempts, 1, 'its attempt is kept, none counted for the cancel');
  assert.is(state['s@s.test']?.state, 'sending');
  assert.is(state['f@f.test']?.state, 'delivered');
  // Nothing of the message is left waiting; the leased entry is still its holder's.
  for (const d of ['q.test', 'd.test']) assert.is(await client.zcard(keys.ready(d)), 0, d);
  assert.is(await client.zcard(keys.leases('s.test')), 1);
  // An event each, as delivery writes its outcomes (webhooks route them).
  const events = (await client.xrange(keys.events(), '-', '+')).map(([, f]) => streamFields(f)).filter((e) => e['msgId'] === id && e['type'] === 'cancelled');
  assert.equal(events.map((e) => Number(e['idx'])).sort(), [0, 1]);
  // Counted as every event written (sluice_events_total{type}).
  const counted = (await s.app.metrics.eventsAppended.get()).values.find((v) => v.labels['type'] === 'cancelled');
  assert.is(counted?.value, 2);
  // Two of four finished here, one delivered: one pending (the one being sent).
  assert.is(await client.hget(keys.msgMeta(id), 'pending'), '1');
  const again = await s.api(`/v1/messages/${id}`, { method: 'DELETE' });
  assert.is(again.status, 200);
  assert.is(again.body.cancelled, 0);
  const get = await s.api(`/v1/messages/${id}`);
  assert.is(get.body.recipients[0].state, 'cancelled', 'GET shows it too');
});

test('an entry retried between the read and the cancel (its member is one attempt later) is still cancelled, not reported as being sent', async () => {
  const client = s.app.redis.client;
  const sent = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'r@r.test', subject: 'moved', text: 'hello' } });
  const id = sent.body.id as string;
  const rcpts = [{ idx: 0, domain: 'r.test' }];
  const before = await recipientStates(client, keys, id, rcpts);
  assert.is(before[0]?.state, 'queued');
  // Meanwhile a dispatcher claims it and the attempt is deferred: it waits again, as <id>:0:1.
  const now = Date.now();
  const [entry] = (await claim(client, keys, { domain: 'r.test', max: 1, leaseMs: HOUR, now })).entries;
  await retry(client, keys, entry!, { now, nextAt: now + HOUR, code: 451, enhanced: '4.3.0', response: '451 4.3.0 later' });
  const r = await cancelRecipients(client, keys, id, 'acme', rcpts, before, { now, recordTtlMs: HOUR, refsTtlMs: 2 * HOUR, eventsMaxLen: 1000 });
  assert.equal(r, { cancelled: 1, sending: 0 });
  assert.is(await client.zcard(keys.ready('r.test')), 0, 'nothing of it left waiting');
  assert.is((await recipientStates(client, keys, id, rcpts))[0]?.state, 'cancelled');
  assert.is(await client.hget(keys.msgMeta(id), 'pending'), '0');
});

test('a message held past its queue age and cancelled keeps its recipients\' references as long as its record', async () => {
  const client = s.app.redis.client;
  // Held (its account closed, its sender paused) for a day longer than its references cover a finish.
  const refsMs = refsTtlMs(s.config);
  const at = Date.now() - (refsMs - s.config.retention.records) - 86_400_000;
  const id = newId(at);
  const address = 'held@h.test';
  await persistMessage(client, keys, s.config.redis.scheduleShards, {
    id, account: 'acme', source: 'http', kind: 'raw', from: 'news@acme.example', fromDomain: 'acme.example',
    rcpts: [{ address, domain: 'h.test' }], acceptedAt: at, tags: [], metadata: {}, body: `To: ${address}\r\n\r\nhi\r\n`,
  }, refsMs);
  const refs = keys.addressRefs(await addressDigest(client, keys, address));
  assert.is(Number(await client.zscore(refs, `m:${id}:0`)), at);
  const before = Date.now();
  const r = await s.api(`/v1/messages/${id}`, { method: 'DELETE' });
  assert.is(r.body.cancelled, 1, JSON.stringify(r.body));
  assert.ok(Number(await client.zscore(refs, `m:${id}:0`)) >= before, 'the reference now counts from the finish, as the record does');
});

test('an unknown id, a malformed one and another account\'s message are 404; other methods 405', async () => {
  for (const path of ['/v1/messages/0000000000000000', '/v1/messages/not-an-id']) {
    const r = await s.api(path, { method: 'DELETE' });
    assert.is(r.status, 404, `${path}: ${JSON.stringify(r.body)}`);
  }
  const sent = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: 'x@q.test', subject: 'mine', text: 'hello' } });
  // Another account's real key: answered as an unknown message, and nothing of acme's is cancelled.
  const foreign = await request(`http://127.0.0.1:${s.app.ports.http}/v1/messages/${sent.body.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${other.apiKey}` } });
  assert.is(foreign.statusCode, 404, await foreign.body.text());
  assert.is((await s.api(`/v1/messages/${sent.body.id}`)).body.recipients[0].state, 'queued');
  const put = await s.api(`/v1/messages/${sent.body.id}`, { method: 'PUT' });
  assert.is(put.status, 405);
});

test.run();
