/**
 * `sluice queue list` (mailq) over a running Sluice on a real Redis: recipients deferred by a real
 * greylisting peer are listed one per line with their message, state, attempts, next attempt,
 * account, sender, recipient and the peer's answer; a campaign's waiting recipients are one line;
 * --limit cuts the list and says how many more; the read is audited.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readAudit } from '../../src/store/audit.js';
import { placeHolds, releaseHolds } from '../../src/queue/holds.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { cliConfigFor, sluice } from './run-cli.js';

const test = suite('cli/queue-list');
const HOUR = 3_600_000;

let redis: TestRedis;
let peer: CapturePeer;
let s: SluiceFixture;
let dir: string;
let cfg: string;
const ids: string[] = [];

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-cli-list-'));
  redis = await startRedis();
  peer = await startCapturePeer({ onRcpt: () => ({ code: 451, message: '4.2.0 greylisted, come back in a while' }) });
  s = await startSluiceFixture(redis, { delivery: { transport: { 'grey.test': `${peer.host}:${peer.port}` } }, shaping: { default: { retry: ['1h'] } } });
  cfg = cliConfigFor(dir, redis, s.config);
  for (const to of [['ann@grey.test', 'bob@grey.test'], ['cat@grey.test']]) {
    const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to, subject: 'list me', text: 'x' } });
    assert.is(r.status, 202, JSON.stringify(r.body));
    ids.push(r.body.id);
  }
  for (const id of ids) {
    const rc = await s.waitRecipient(id, 'deferred');
    assert.is(rc?.state, 'deferred', JSON.stringify(rc));
  }
  // A campaign's two recipients waiting behind its pointer (as queue/campaign.ts pushes them).
  const k = s.app.keys;
  await s.app.redis.client.zadd(k.ready('grey.test'), Date.now() + HOUR, '@c9');
  await s.app.redis.client.rpush(k.campaignQueue('grey.test', 'c9'), '1', '2');
  await s.app.redis.client.hset(k.campaignPushed('grey.test'), 'c9', '0:2');
});

test.after(async () => {
  await s?.stop();
  await peer?.close();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

interface Listed { domain: string; waiting: number; sending: number; recipients: { msgId: string; idx: number; state: string; attempts: number; at: number; response: string | null; account: string; from: string; to: string }[]; campaigns: { campaignId: string; waiting: number; at: number | null }[] }

test('--json: each deferred recipient with its message, attempts, next attempt, account, sender, recipient and the answer that deferred it; the campaign as one entry; audited', async () => {
  const r = await sluice(['queue', 'list', '--config', cfg, '--domain', 'GREY.test', '--json']);
  assert.is(r.code, 0, r.err);
  const [l] = JSON.parse(r.out) as Listed[];
  assert.is(l?.domain, 'grey.test');
  assert.is(l?.waiting, 3, 'three recipients; the pointer is not one');
  assert.is(l?.sending, 0);
  const got = l!.recipients.map((x) => `${x.msgId}:${x.idx} ${x.to}`).sort();
  assert.equal(got, [`${ids[0]}:0 ann@grey.test`, `${ids[0]}:1 bob@grey.test`, `${ids[1]}:0 cat@grey.test`].sort());
  for (const x of l!.recipients) {
    assert.is(x.state, 'deferred');
    assert.is(x.attempts, 1);
    assert.is(x.account, 'acme');
    assert.is(x.from, 'news@acme.example');
    assert.match(x.response ?? '', /451 4\.2\.0 greylisted, come back in a while/);
    assert.ok(x.at > Date.now() + HOUR / 2, 'next attempt an hour on');
  }
  assert.equal(l?.campaigns.map((c) => [c.campaignId, c.waiting]), [['c9', 2]]);
  const [entry] = await readAudit(s.app.redis.client, s.app.keys, { limit: 1 });
  assert.is(entry?.action, 'queue.list');
  assert.is(entry?.target, 'grey.test');
});

test('the table: one line per recipient with the answer, the campaign line; --limit 1 says how many more', async () => {
  const r = await sluice(['queue', 'list', '--config', cfg, '--domain', 'grey.test']);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /^grey\.test: 3 waiting, 0 being sent, and the recipients of 1 campaign$/m);
  assert.match(r.out, /^ {2}ID\s+STATE\s+TRIES\s+NEXT\s+ACCOUNT\s+FROM\s+TO\s+LAST ANSWER$/m);
  assert.match(r.out, new RegExp(`^  ${ids[1]}:0\\s+deferred\\s+1\\s+in \\d+m\\s+acme\\s+news@acme\\.example\\s+cat@grey\\.test\\s+451 4\\.2\\.0 greylisted`, 'm'));
  assert.match(r.out, /^ {2}campaign c9: 2 recipients waiting, next in \d+m$/m);
  const one = await sluice(['queue', 'list', '--config', cfg, '--domain', 'grey.test', '--limit', '1']);
  assert.is(one.out.split('\n').filter((line) => line.includes(' deferred ')).length, 1);
  assert.match(one.out, '  … and 2 more (--limit)');
});

test('a destination with nothing queued lists nothing; without --domain, the busiest destinations', async () => {
  const r = await sluice(['queue', 'list', '--config', cfg, '--domain', 'empty.test']);
  assert.is(r.code, 0, r.err);
  assert.is(r.out.trim(), 'empty.test: 0 waiting, 0 being sent');
  const all = await sluice(['queue', 'list', '--config', cfg, '--json']);
  assert.is(all.code, 0, all.err);
  assert.equal((JSON.parse(all.out) as Listed[]).map((l) => [l.domain, l.recipients.length]), [['grey.test', 3]]);
});

test("a held destination's listing says so: its own hold, or its rule's, with the reason", async () => {
  const k = s.app.keys;
  const client = s.app.redis.client;
  await placeHolds(client, k, [{ kind: 'domain', name: 'grey.test' }], { until: null, reason: 'provider block', by: 'test', now: Date.now() });
  const r = await sluice(['queue', 'list', '--config', cfg, '--domain', 'grey.test']);
  assert.match(r.out, /^grey\.test: 3 waiting.*\n {2}held by the operator \(this domain\) until released: provider block$/m);
  await releaseHolds(client, k, 4, 'all', Date.now());
  await placeHolds(client, k, [{ kind: 'rule', name: 'default' }], { until: Date.now() + HOUR, reason: '', by: 'test', now: Date.now() });
  const j = JSON.parse((await sluice(['queue', 'list', '--config', cfg, '--domain', 'grey.test', '--json'])).out) as { held: { kind: string; name: string; until: number } | null }[];
  assert.equal([j[0]?.held?.kind, j[0]?.held?.name], ['rule', 'default']);
  await releaseHolds(client, k, 4, 'all', Date.now());
  const after = JSON.parse((await sluice(['queue', 'list', '--config', cfg, '--domain', 'grey.test', '--json'])).out) as { held: unknown }[];
  assert.is(after[0]?.held, null);
});

test.run();
