/**
 * `sluice queue cancel --domain D` over a real Redis holding mail accepted by a Sluice that runs only
 * the ingress role (nothing is delivered, the entries stay): the waiting recipients of the messages
 * queued for D are cancelled, as DELETE /v1/messages/:id cancels them (state, event, the message
 * counted off), one being sent (leased) is left to its delivery, a campaign's copies are left to
 * their campaign, other destinations are untouched, and the action is in the audit log.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { claim } from '../../src/queue/claim.js';
import { createKeys } from '../../src/redis/keys.js';
import { readAudit } from '../../src/store/audit.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { cliConfigFor, sluice } from './run-cli.js';

const test = suite('cli/queue-cancel');

let redis: TestRedis;
let s: SluiceFixture;
let dir: string;
let cfgFile: string;

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-cli-cancel-'));
  redis = await startRedis();
  s = await startSluiceFixture(redis, { roles: ['ingress'] });
  cfgFile = cliConfigFor(dir, redis, s.config);
});

test.after(async () => {
  await s?.stop();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function send(to: string[]): Promise<string> {
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to, subject: 'queued', text: 'stays queued' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  return r.body.id as string;
}

test('a destination\'s waiting recipients are cancelled, one being sent is left, a campaign is left, another destination is untouched; audited', async () => {
  const client = redis.client();
  const keys = createKeys(s.config.redis.prefix);
  const first = await send(['a@dead.test', 'b@dead.test', 'c@live.test']);
  // One of the first message's dead.test recipients is being sent, as a dispatcher claims it.
  const claimed = await claim(client, keys, { domain: 'dead.test', max: 1, leaseMs: 60_000, now: Date.now() });
  assert.is(claimed.entries.length, 1);
  const second = await send(['d@dead.test']);
  // A campaign's pointer at the destination: its copies are its campaign's to pause or cancel.
  await client.hset(keys.msgMeta('camp1'), { kind: 'campaign', account: 'acme' });
  await client.zadd(keys.ready('dead.test'), Date.now(), '@camp1');
  const eventsBefore = (await client.xrange(keys.events(), '-', '+')).filter(([, f]) => f[1] === 'cancelled').length;

  const r = await sluice(['queue', 'cancel', '--config', cfgFile, '--domain', 'DEAD.test.']);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, 'dead.test: 2 recipients of 2 messages cancelled; 1 being sent, left to their delivery; copies of 1 campaign left (pause or cancel the campaign)');
  assert.match(r.out, '2 recipients cancelled');

  const states = async (id: string) => ((await s.api(`/v1/messages/${id}`)).body.recipients as { address: string; state: string; response?: string }[]);
  const one = await states(first);
  const byAddress = Object.fromEntries(one.map((x) => [x.address, x.state]));
  const sendingAddress = one.find((x) => x.state === 'sending')?.address;
  assert.ok(sendingAddress === 'a@dead.test' || sendingAddress === 'b@dead.test', JSON.stringify(one));
  assert.is(byAddress[sendingAddress === 'a@dead.test' ? 'b@dead.test' : 'a@dead.test'], 'cancelled');
  assert.is(byAddress['c@live.test'], 'queued', 'another destination is untouched');
  const two = await states(second);
  assert.is(two[0]?.state, 'cancelled');
  assert.match(JSON.stringify(two[0]), 'cancelled by the operator');
  assert.equal(await client.zrange(keys.ready('dead.test'), 0, -1), ['@camp1'], 'only the campaign pointer waits there');
  assert.is(await client.zcard(keys.ready('live.test')), 1);
  const eventsAfter = (await client.xrange(keys.events(), '-', '+')).filter(([, f]) => f[1] === 'cancelled').length;
  assert.is(eventsAfter - eventsBefore, 2, 'a cancelled event each');
  const [entry] = await readAudit(client, keys, { limit: 1 });
  assert.is(entry?.action, 'queue.cancel');
  assert.is(entry?.target, 'dead.test');

  // Again: nothing is left to cancel; --json.
  const again = await sluice(['queue', 'cancel', '--config', cfgFile, '--domain', 'dead.test', '--json']);
  assert.is(again.code, 0, again.err);
  const j = JSON.parse(again.out) as { cancelled: number; destinations: Record<string, { cancelled: number; sending: number; campaigns: number }> };
  assert.is(j.cancelled, 0);
  assert.equal(j.destinations['dead.test'], { cancelled: 0, sending: 1, messages: 0, campaigns: 1 });
});

test('without --domain: a usage error, nothing cancelled', async () => {
  const r = await sluice(['queue', 'cancel', '--config', cfgFile]);
  assert.is(r.code, 2);
  assert.match(r.err, 'queue cancel needs --domain');
  const bad = await sluice(['queue', 'cancel', '--config', cfgFile, '--domain', 'not a domain']);
  assert.is(bad.code, 2);
});

test.run();
