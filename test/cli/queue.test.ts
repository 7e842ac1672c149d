/**
 * `sluice queue` over a real Redis holding queued mail: mail is accepted by a Sluice that runs only
 * the ingress role (so nothing is delivered and the entries stay), part of it is then leased as a
 * dispatcher would, and the command must show each destination's counts and shaping rule. The queue
 * gauges (sluice_queue_recipients / sluice_queue_leases) of that Sluice are read from its /metrics.
 * One test runs a Sluice with the delivery role, whose dispatcher resolves a destination's MX.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { claim } from '../../src/queue/claim.js';
import { recordThrottleSignal } from '../../src/queue/backoff.js';
import { resolveShaping } from '../../src/queue/shaping.js';
import { enqueueRecipients } from '../../src/queue/enqueue.js';
import { createKeys } from '../../src/redis/keys.js';
import { freePort, startRedis, type TestRedis } from '../helpers/redis.js';
import { startDnsStub } from '../helpers/dns-stub.js';
import { adminGet, metricValue, scrapeUntil } from '../helpers/sluice-process.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { cliConfigFor, sluice, spawnSluice } from './run-cli.js';

const test = suite('cli/queue');

let redis: TestRedis;
let s: SluiceFixture;
let dir: string;
let cfgFile: string;

interface Row { domain: string; ready: number; due: number; leased: number; rule: string; tls: string; scope: string; connections: number; connectionLimit: number }

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-cli-queue-'));
  redis = await startRedis();
  s = await startSluiceFixture(redis, { roles: ['ingress'] });
  const send = async (to: string[]) => {
    const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to, subject: 'queued', text: 'stays queued' } });
    assert.is(r.status, 202, JSON.stringify(r.body));
  };
  await send(['a@one.test', 'b@one.test', 'c@one.test']);
  await send(['d@one.test', 'e@gmail.com', 'f@gmail.com']);
  await send(['g@two.test']);
  // Lease two of one.test's four entries, as a dispatcher does before delivering them.
  const client = redis.client();
  const claimed = await claim(client, createKeys(s.config.redis.prefix), { domain: 'one.test', max: 2, leaseMs: 60_000, now: Date.now() });
  assert.is(claimed.entries.length, 2);
  cfgFile = cliConfigFor(dir, redis, s.config);
});

test.after(async () => {
  await s?.stop();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('the queue gauges count recipients and leases by provider, both from the first scrape', async () => {
  const text = (await adminGet(s.app.ports.admin, '/metrics')).text;
  const v = (name: string, provider: string) => metricValue(text, name, { provider });
  // one.test: 2 ready + 2 leased, two.test: 1 (default); gmail.com: 2 (google, by domain)
  assert.equal(
    { recipients: v('sluice_queue_recipients', 'default'), leased: v('sluice_queue_leases', 'default'), google: v('sluice_queue_recipients', 'google'), googleLeased: v('sluice_queue_leases', 'google') },
    { recipients: 3, leased: 2, google: 2, googleLeased: 0 },
    text.split('\n').filter((l) => l.startsWith('sluice_queue_')).join('\n'),
  );
});

test('--json: one row per destination with ready, due, leased counts and the matching rule', async () => {
  const r = await sluice(['queue', '--config', cfgFile, '--json']);
  assert.is(r.code, 0, r.err);
  const rows = JSON.parse(r.out) as Row[];
  const by = new Map(rows.map((x) => [x.domain, x]));
  assert.equal([...by.keys()].sort(), ['gmail.com', 'one.test', 'two.test']);
  assert.equal(
    { ready: by.get('one.test')?.ready, due: by.get('one.test')?.due, leased: by.get('one.test')?.leased, rule: by.get('one.test')?.rule },
    { ready: 2, due: 2, leased: 2, rule: 'default' },
  );
  assert.equal({ ready: by.get('gmail.com')?.ready, leased: by.get('gmail.com')?.leased, rule: by.get('gmail.com')?.rule }, { ready: 2, leased: 0, rule: 'google' });
  assert.is(by.get('gmail.com')?.connectionLimit, 20, "the google rule's connection limit");
  assert.is(by.get('two.test')?.ready, 1);
  assert.is(by.get('two.test')?.connectionLimit, 10, 'the default connection limit');
  assert.equal(rows.map((x) => x.tls), ['may', 'may', 'may'], 'delivery.tls: opportunistic');
  // The policy delivery would use: delivery.tls.verify for a rule without its own, a rule's tls over it.
  const strict = join(dir, 'strict.yaml');
  writeFileSync(
    strict,
    `${readFileSync(cfgFile, 'utf8')}delivery:\n  tls:\n    verify: true\nshaping:\n  rules:\n    - name: two\n      match: { domains: ['two.test'], mx: [] }\n      tls: encrypt\n`,
  );
  const v = await sluice(['queue', '--config', strict, '--json']);
  assert.is(v.code, 0, v.err);
  assert.equal(Object.fromEntries((JSON.parse(v.out) as Row[]).map((x) => [x.domain, x.tls])), { 'one.test': 'verify', 'gmail.com': 'verify', 'two.test': 'encrypt' });
});

test('the table lists each destination with its counts and rule, busiest first; --limit cuts it', async () => {
  const r = await sluice(['queue', '--config', cfgFile]);
  assert.is(r.code, 0, r.err);
  const lines = r.out.trimEnd().split('\n');
  assert.match(lines[0] as string, /^DESTINATION\s+READY\s+CAMPAIGNS\s+DUE\s+LEASED\s+NEXT\s+HELD\s+RULE\s+TLS\s+CONNS\s+TOKENS\s+BACKOFF$/);
  const cells = lines.slice(1).map((l) => l.split(/\s+/));
  assert.equal(cells.map((c) => c[0]), ['one.test', 'gmail.com', 'two.test'], `due desc, then ready+leased, then name:\n${r.out}`);
  assert.equal(cells[0]?.slice(0, 8), ['one.test', '2', '0', '2', '2', 'now', '-', 'default']);
  assert.equal(cells[1]?.slice(0, 8), ['gmail.com', '2', '0', '2', '0', 'now', '-', 'google']);
  assert.equal(cells[2]?.slice(0, 8), ['two.test', '1', '0', '1', '0', 'now', '-', 'default']);
  assert.equal(cells.map((c) => c[8]), ['may', 'may', 'may'], 'STARTTLS policy');
  assert.equal(cells.map((c) => c[9]), ['0/10', '0/20', '0/10'], 'connections in use / limit');

  const limited = await sluice(['queue', '--config', cfgFile, '--limit', '1', '--json']);
  assert.equal((JSON.parse(limited.out) as Row[]).map((x) => x.domain), ['one.test']);
  const bad = await sluice(['queue', '--config', cfgFile, '--limit', 'all']);
  assert.is(bad.code, 2);
  assert.match(bad.err, '--limit must be a positive whole number');
});

test('a provider slowed by 421s shows its level, reason and reduced limits', async () => {
  const keys = createKeys(s.config.redis.prefix);
  const scope = resolveShaping(s.config.shaping, 'two.test', []).scope;
  const cfg = { threshold: 5, windowMs: 60_000, suspendMs: 60_000, maxSuspendMs: 3_600_000, maxLevel: 4, recoverMs: 300_000, ratePerConnection: 1 };
  const client = redis.client();
  const now = Date.now();
  for (let i = 0; i < 5; i++) await recordThrottleSignal(client, keys, scope, cfg, now, '421 4.7.0 Try again later, too many connections');
  const r = await sluice(['queue', '--config', cfgFile, '--json']);
  assert.is(r.code, 0, r.err);
  const row = (JSON.parse(r.out) as (Row & { backoffLevel: number; backoffReason: string | null; configuredConnectionLimit: number })[]).find((x) => x.domain === 'two.test');
  assert.is(row?.backoffLevel, 1);
  assert.match(String(row?.backoffReason), 'Try again later');
  assert.is(row?.configuredConnectionLimit, 10);
  assert.is(row?.connectionLimit, 5, 'one level halves the connections');
  const table = await sluice(['queue', '--config', cfgFile]);
  assert.match(table.out, /^two\.test\s.*level 1, suspended until \S+: 421 4\.7\.0 Try again later/m);
});

test('an empty queue says so', async () => {
  const empty = join(dir, 'empty.yaml');
  writeFileSync(empty, `redis:\n  url: ${JSON.stringify(redis.url)}\n  prefix: 'nothing-here:'\n`);
  const r = await sluice(['queue', '--config', empty]);
  assert.is(r.code, 0, r.err);
  assert.is(r.out, 'queue is empty\n');
});

test('no Redis: a clear error and exit 1, never a hang', async () => {
  const port = await freePort();
  const refused = await sluice(['queue'], { env: { REDIS_URL: `redis://user:pw@127.0.0.1:${port}` } });
  assert.is(refused.code, 1);
  assert.match(refused.err, `cannot reach Redis at redis://[redacted]@127.0.0.1:${port}: ECONNREFUSED`);
  assert.not.ok(refused.err.includes(':pw@'), 'the password is not printed');

  const noEmbedded = join(dir, 'no-embedded.yaml');
  writeFileSync(noEmbedded, `instance:\n  dataDir: ${JSON.stringify(join(dir, 'var'))}\n`);
  const none = await sluice(['queue', '--config', noEmbedded]);
  assert.is(none.code, 1);
  assert.match(none.err, `no embedded server runs at ${join(dir, 'var', 'redis', 'redis.sock')}`);

  const stale = await sluice(['queue'], { env: { REDIS_URL: join(dir, 'stale.sock') } });
  assert.is(stale.code, 1);
  assert.match(stale.err, 'cannot reach Redis at');
});

test('a destination whose rule matches only by MX: once the dispatcher resolved it, `sluice queue` and the gauges name the provider its attempts count under', async () => {
  // hosted.test is sent to a host under google.com (which the shipped google rule matches by MX,
  // '*.google.com'); nothing listens on its port, so every attempt is deferred and the mail stays.
  // The host is reached as a named smarthost (delivery.transport), which Sluice resolves and shapes
  // by like an MX host, so that the test does not depend on port 25 of this machine.
  const deadPort = await freePort();
  const dns = await startDnsStub({ 'mx1.hosted.google.com': { A: ['127.0.0.1'] } });
  const d = await startSluiceFixture(redis, {
    delivery: { dns: { servers: [dns.server] }, transport: { 'hosted.test': `mx1.hosted.google.com:${deadPort}` } },
    shaping: { default: { retry: ['10m'] } },
  });
  try {
    assert.is(resolveShaping(d.config.shaping, 'hosted.test', []).rule, 'default', 'the domain alone matches no rule');
    const sent = await d.api('/v1/messages', { body: { from: 'news@acme.example', to: ['x@hosted.test', 'y@hosted.test'], subject: 'held', text: 'deferred' } });
    assert.is(sent.status, 202, JSON.stringify(sent.body));
    let text = await scrapeUntil(d.app.ports.admin, (t) => metricValue(t, 'sluice_delivery_attempts_total', { result: 'deferred' }) === 2);
    assert.is(metricValue(text, 'sluice_delivery_attempts_total', { result: 'deferred', provider: 'google' }), 2, 'the dispatcher shaped it as google');
    // A scrape may show an earlier queue read, made before the dispatcher recorded the rule.
    text = await scrapeUntil(d.app.ports.admin, (t) => metricValue(t, 'sluice_queue_recipients', { provider: 'google' }) === 2);
    assert.is(metricValue(text, 'sluice_queue_recipients', { provider: 'google' }), 2, 'the gauge counts it under google too');
    assert.is(metricValue(text, 'sluice_queue_recipients', { provider: 'default' }), 0, 'and not under default (0: nothing waits there)');

    const file = cliConfigFor(dir, redis, d.config, 'delivery.yaml');
    const r = await sluice(['queue', '--config', file, '--json']);
    assert.is(r.code, 0, r.err);
    const rows = JSON.parse(r.out) as Row[];
    assert.equal(rows.map((x) => ({ domain: x.domain, ready: x.ready, rule: x.rule, scope: x.scope, connectionLimit: x.connectionLimit })), [
      { domain: 'hosted.test', ready: 2, rule: 'google', scope: 'google', connectionLimit: 20 },
    ]);
    assert.not.ok('recordedRule' in (rows[0] as object), 'the output keeps its shape');
    const table = await sluice(['queue', '--config', file]);
    assert.match(table.out, /^hosted\.test\s+2\s+0\s+0\s+0\s+in \d+m\s+-\s+google\s+may\s+0\/20\s/m);
  } finally {
    await d.stop();
    await dns.close();
  }
});

test('with more than 500 destinations the gauges still count every one; the listing stops at --limit', async () => {
  const keys = createKeys(s.config.redis.prefix);
  const N = 600;
  // each extra destination holds one recipient due in an hour (after the fixture's own, in the listing)
  await enqueueRecipients(redis.client(), keys, s.config.redis.scheduleShards, Array.from({ length: N }, (_, i) => ({ msgId: 'many', idx: i, domain: `d${i}.many.test`, dueAt: Date.now() + 3_600_000 })));
  // A scrape may show an earlier queue read (a slow one is reused for a while).
  const text = await scrapeUntil(s.app.ports.admin, (t) => metricValue(t, 'sluice_queue_recipients', { provider: 'default' }) === 3 + N);
  assert.is(metricValue(text, 'sluice_queue_recipients', { provider: 'default' }), 3 + N);
  assert.is(metricValue(text, 'sluice_queue_leases', { provider: 'default' }), 2);
  assert.is(metricValue(text, 'sluice_queue_recipients', { provider: 'google' }), 2);

  const listed = await sluice(['queue', '--config', cfgFile, '--json']);
  assert.is((JSON.parse(listed.out) as Row[]).length, 50, 'the default --limit');
  const all = await sluice(['queue', '--config', cfgFile, '--json', '--limit', '1000']);
  assert.is((JSON.parse(all.out) as Row[]).length, 3 + N);
});

test('as a real process: prints the table and exits 0', async () => {
  const r = await spawnSluice(['queue', '--config', cfgFile]);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /^one\.test\s+2\s+0\s+2\s+2\s/m);
});

test.run();
