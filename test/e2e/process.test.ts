import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRedis, startLoadingOrphan, freePort, type TestRedis } from '../helpers/redis.js';
import { createRedis, type RedisClient } from '../../src/redis/client.js';
import { createKeys } from '../../src/redis/keys.js';
import { pingSocket, probeSocket } from '../../src/redis/embedded.js';
import {
  writeSluiceConfig, startSluiceProcess, spawnSluice, startSlowSink, submitAll, adminGet, metricValue, scrapeUntil, callApi,
  killAllSluiceProcesses, isAlive, waitGone, recipients, domainsOf, sleep, type SluiceInstance, type SlowSink,
} from '../helpers/sluice-process.js';
import { queueTotals, duplicatesOf } from '../helpers/fault-load.js';
import YAML from 'yaml';
import { generateApiKey, hashSecret } from '../../src/accounts/secrets.js';

/**
 * `sluice start` as a process: graceful shutdown on SIGTERM, the immediate exit on a second signal,
 * the embedded Redis default (and its absence), and what /metrics shows after real deliveries.
 */
const test = suite('e2e/process');

let redis: TestRedis;
/** Reads the queue of an external-Redis instance (closed by redis.stop()). */
let inspector: RedisClient;
let sink: SlowSink;
/** Milliseconds the sink waits before its 250; tests slow it down to hold transactions open. */
let sinkDelayMs = 5;
const instances: SluiceInstance[] = [];
const scratch: string[] = [];

test.before(async () => {
  redis = await startRedis();
  inspector = redis.client();
  sink = await startSlowSink(() => sinkDelayMs);
});

test.before.each(() => {
  sinkDelayMs = 5;
});

test.after(async () => {
  await killAllSluiceProcesses();
  await sink?.close();
  await redis?.stop();
  for (const i of instances) i.remove();
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
});

async function externalInstance(rcpts: readonly string[], overrides: Record<string, unknown> = {}, dkim?: ('rsa' | 'ed25519')[]) {
  const prefix = `t${randomUUID().slice(0, 8)}:`;
  const inst = await writeSluiceConfig({
    redisUrl: redis.url,
    prefix,
    transport: Object.fromEntries(domainsOf(rcpts).map((d) => [d, `${sink.host}:${sink.port}`])),
    overrides,
    ...(dkim ? { dkim } : {}),
  });
  instances.push(inst);
  return { inst, keys: createKeys(prefix) };
}

/** Resolves to the connect error code ('ECONNREFUSED'…) or 'connected'. */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve('connected')));
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** Sink copies per recipient of `rcpts`. */
function tally(rcpts: readonly string[]) {
  const missing = rcpts.filter((r) => !sink.counts.has(r));
  return { delivered: rcpts.length - missing.length, missing, duplicates: duplicatesOf(sink.counts, rcpts) };
}

/** Slows the sink and resolves once a transaction is open under the new delay. */
async function holdTransactionsOpen(delayMs: number): Promise<void> {
  sinkDelayMs = delayMs;
  const before = sink.total();
  for (let i = 0; i < 200 && sink.total() === before; i++) await sleep(20);
  assert.ok(sink.total() > before, 'a transaction reached the slowed sink');
}

test('SIGTERM while delivering: stops accepting, drains, exits 0; after a restart each recipient arrived exactly once', async () => {
  const N = 300;
  const rcpts = recipients(N, 3, `g${randomUUID().slice(0, 4)}-`);
  const domains = domainsOf(rcpts);
  // A lease far longer than a held transaction: a graceful stop must not need leases to expire.
  const { inst, keys } = await externalInstance(rcpts, { delivery: { claimBatch: 5, lease: '30s' }, shaping: { default: { connections: 2 } } });
  const p = await startSluiceProcess(inst);
  await submitAll(p.ports.http as number, inst.account.apiKey, rcpts);
  for (let i = 0; i < 500 && tally(rcpts).delivered < 50; i++) await sleep(20);

  // Each open transaction now takes 1.5 s to be answered: the drain is long enough to watch.
  await holdTransactionsOpen(1500);
  p.signal('SIGTERM');
  await p.waitForLog((l) => l.msg === 'shutting down', 5000);
  // The log line can overtake the closing of the listening sockets by an event-loop turn: poll, bounded.
  const refused = async (port: number) => {
    let r = await tryConnect(port);
    for (let i = 0; i < 50 && r !== 'ECONNREFUSED'; i++) r = (await sleep(20), await tryConnect(port));
    return r;
  };
  assert.is(await refused(p.ports.http as number), 'ECONNREFUSED', 'HTTP API refuses new connections');
  assert.is(await refused(p.ports.smtp as number), 'ECONNREFUSED', 'SMTP submission refuses new connections');
  const ready = await adminGet(p.ports.admin, '/readyz');
  assert.is(p.exited, null, 'still draining while the ports are already closed');
  assert.is(ready.status, 503, `/readyz while draining: ${ready.text}`);
  assert.match(ready.text, /shutting down/);

  const exit = await p.waitExit(35_000); // GRACE_MS of src/cli/start.ts (30 s) plus slack
  assert.equal(exit, { code: 0, signal: null }, `exit: ${p.stderr()}`);
  assert.ok(p.logs.some((l) => l.msg === 'sluice stopped'), 'logged its clean stop');
  const atExit = await queueTotals(inspector, keys, domains);
  const deliveredAtExit = tally(rcpts).delivered;
  console.log(`  graceful: ${deliveredAtExit}/${N} delivered at exit, queue ${JSON.stringify(atExit)}`);
  assert.is(atExit.leased, 0, 'every claim was finished or released: no lease left behind');
  assert.is(atExit.ready, N - deliveredAtExit, 'what was not delivered is back in the queue');
  assert.ok(deliveredAtExit < N, 'the stop happened mid-run');

  sinkDelayMs = 5;
  const again = await startSluiceProcess(inst);
  await sink.waitDistinct(sink.counts.size + (N - deliveredAtExit), 20_000);
  const t = tally(rcpts);
  console.log(`  graceful: after restart ${t.delivered}/${N} delivered, ${t.duplicates} duplicates`);
  assert.equal(t.missing, []);
  assert.is(t.duplicates, 0, 'a graceful stop sends nothing twice');
  again.signal('SIGTERM');
  assert.is((await again.waitExit(35_000)).code, 0);
});

test('a second signal during the grace period exits at once (non-zero); a restart still delivers everything accepted', async () => {
  const N = 200;
  const rcpts = recipients(N, 2, `s${randomUUID().slice(0, 4)}-`);
  const domains = domainsOf(rcpts);
  const { inst, keys } = await externalInstance(rcpts, { delivery: { claimBatch: 5, lease: '2s' }, shaping: { default: { connections: 2 } } });
  const p = await startSluiceProcess(inst);
  await submitAll(p.ports.http as number, inst.account.apiKey, rcpts);
  for (let i = 0; i < 500 && tally(rcpts).delivered < 30; i++) await sleep(20);

  // Transactions now hang for 20 s, far beyond anything this test waits for.
  await holdTransactionsOpen(20_000);
  p.signal('SIGTERM');
  await p.waitForLog((l) => l.msg === 'shutting down', 5000);
  await sleep(100);
  assert.is(p.exited, null, 'still in its grace period');
  p.signal('SIGTERM');
  const exit = await p.waitExit(5000);
  assert.is(exit.code, 143, `128 + SIGTERM's number, as a shell reports it: ${JSON.stringify(exit)}`);
  const atExit = await queueTotals(inspector, keys, domains);
  const deliveredAtExit = tally(rcpts).delivered;
  console.log(`  second signal: exit ${exit.code}, ${deliveredAtExit}/${N} delivered, queue ${JSON.stringify(atExit)}`);
  assert.ok(atExit.leased > 0, 'the hung transactions were still leased');

  sinkDelayMs = 5;
  const again = await startSluiceProcess(inst);
  await sink.waitDistinct(sink.counts.size + (N - deliveredAtExit), 20_000);
  const t = tally(rcpts);
  console.log(`  second signal: after restart ${t.delivered}/${N} delivered, ${t.duplicates} duplicates (leased at exit: ${atExit.leased})`);
  assert.equal(t.missing, [], 'nothing acknowledged is lost');
  assert.ok(t.duplicates <= atExit.leased, `duplicates ${t.duplicates} ≤ leased at exit ${atExit.leased}`);
  again.signal('SIGTERM');
  assert.is((await again.waitExit(35_000)).code, 0);
});

test('embedded default: redis-server on <dataDir>/redis/redis.sock with AOF, /readyz 200, stopped with Sluice on SIGTERM', async () => {
  const inst = await writeSluiceConfig({ redisUrl: null, transport: {} });
  instances.push(inst);
  const p = await startSluiceProcess(inst);
  const socket = join(inst.dataDir, 'redis', 'redis.sock');
  const line = await p.waitForLog((l) => l.msg === 'embedded redis-server started');
  assert.is(line['socket'], socket);
  const pid = p.redisPid as number;
  assert.ok(pid > 0 && pid !== p.pid && isAlive(pid), 'redis-server is a process of its own');
  assert.ok(existsSync(join(inst.dataDir, 'redis', 'appendonlydir')), 'AOF folder exists');
  const c = createRedis({ url: socket, name: 'process-test' });
  try {
    assert.equal(await c.config('GET', 'appendonly'), ['appendonly', 'yes']);
    assert.equal(await c.config('GET', 'port'), ['port', '0'], 'no TCP port: the socket only');
  } finally {
    c.disconnect();
  }

  const ready = await adminGet(p.ports.admin, '/readyz');
  assert.is(ready.status, 200, ready.text);
  assert.match(ready.text, /"ready"/);

  p.signal('SIGTERM');
  assert.is((await p.waitExit(35_000)).code, 0, p.stderr());
  assert.ok(await waitGone(pid), `redis-server ${pid} stopped with Sluice`);
  assert.not.ok(await pingSocket({ path: socket }), 'nothing answers on the socket any more');
});

test('the embedded redis-server killed while Sluice runs: Sluice logs it and exits 1; the next start brings it back with its data', async () => {
  const inst = await writeSluiceConfig({ redisUrl: null, transport: {} });
  instances.push(inst);
  const p = await startSluiceProcess(inst);
  const socket = join(inst.dataDir, 'redis', 'redis.sock');
  const c = createRedis({ url: socket, name: 'process-test' });
  // fsynced before it is answered, so the SIGKILL below cannot take it
  await c.config('SET', 'appendfsync', 'always');
  await c.set('process-test:kept', 'yes');
  c.disconnect();
  // The OOM killer's choice: the largest process of the service.
  process.kill(p.redisPid as number, 'SIGKILL');
  // Before: it ran on with every submission refused and /healthz 200, never to recover.
  const exit = await p.waitExit(35_000);
  assert.is(exit.code, 1, p.stderr());
  const line = p.logs.find((l) => l.level === 'error' && /embedded redis-server .*exited while Sluice ran/.test(l.msg ?? ''));
  assert.ok(line, JSON.stringify(p.logs.filter((l) => l.level !== 'info')));
  assert.match(String(line?.['exit']), 'SIGKILL');

  const again = await startSluiceProcess(inst);
  const ready = await adminGet(again.ports.admin, '/readyz');
  assert.is(ready.status, 200, ready.text);
  const c2 = createRedis({ url: socket, name: 'process-test' });
  try {
    assert.is(await c2.get('process-test:kept'), 'yes');
  } finally {
    c2.disconnect();
  }
  again.signal('SIGTERM');
  assert.is((await again.waitExit(35_000)).code, 0, again.stderr());
});

test('a signal while the embedded redis-server still loads its data gives the start up: the server is stopped, exit 130', async () => {
  // A stand-in for a redis-server reading a large AOF (minutes): it answers every command -LOADING.
  const bin = mkdtempSync(join(tmpdir(), 'sluice-loading-'));
  scratch.push(bin);
  const fake = join(bin, 'redis-server');
  writeFileSync(fake, `#!${process.execPath}
const args = process.argv.slice(2);
if (args[0] === '--version') process.exit(0);
const socket = args[args.indexOf('--unixsocket') + 1];
require('node:net').createServer((c) => c.on('data', () => c.write('-LOADING Redis is loading the dataset in memory\\r\\n'))).listen(socket);
process.on('SIGTERM', () => process.exit(0));
`);
  chmodSync(fake, 0o755);
  const inst = await writeSluiceConfig({ redisUrl: null, transport: {}, overrides: { redis: { embedded: { binary: fake } } } });
  instances.push(inst);
  const p = spawnSluice({ args: ['start', '--config', inst.configFile] });
  const dir = join(inst.dataDir, 'redis');
  let pid = 0;
  for (let i = 0; i < 1000 && !(pid > 0 && (await probeSocket({ path: join(dir, 'redis.sock') })) === 'loading'); i++) {
    await sleep(20);
    if (existsSync(join(dir, 'owner.json'))) pid = (JSON.parse(readFileSync(join(dir, 'owner.json'), 'utf8')) as { redisPid: number }).redisPid;
  }
  assert.ok(pid > 0 && isAlive(pid), 'the stand-in is loading');
  try {
    p.signal('SIGINT');
    const exit = await p.waitExit(20_000);
    // Before: node died of the signal (no code) and the server ran on, detached, with nobody to stop it.
    assert.equal(exit, { code: 130, signal: null }, p.stderr());
    assert.ok(await waitGone(pid), `the loading redis-server ${pid} was stopped`);
    assert.match(p.stderr(), 'SIGINT during start-up');
    assert.not.ok(p.logs.some((l) => l.msg === 'sluice started'));
  } finally {
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  }
});

test('a signal while an adopted redis-server still loads its data gives the start up at once: the server is stopped, exit 143', async () => {
  const inst = await writeSluiceConfig({ redisUrl: null, transport: {} });
  instances.push(inst);
  const dir = join(inst.dataDir, 'redis');
  // Left by a Sluice that was killed, loading its AOF for ~100 s.
  const orphan = await startLoadingOrphan(dir);
  try {
    const p = spawnSluice({ args: ['start', '--config', inst.configFile] });
    const ownerPid = () => {
      try {
        return (JSON.parse(readFileSync(join(dir, 'owner.json'), 'utf8')) as { sluicePid: number }).sluicePid;
      } catch {
        return 0; // being written
      }
    };
    for (let i = 0; i < 1000 && ownerPid() !== p.pid && p.exited === null; i++) await sleep(20);
    assert.is(ownerPid(), p.pid, `adopted by the new start: ${p.stderr()}`);
    p.signal('SIGTERM');
    // Before: the start went on waiting for the server to finish loading, deaf to the signal.
    const exit = await p.waitExit(20_000);
    assert.equal(exit, { code: 143, signal: null }, p.stderr());
    assert.ok(await waitGone(orphan.pid), `the loading redis-server ${orphan.pid} was stopped`);
    assert.match(p.stderr(), 'SIGTERM during start-up');
  } finally {
    orphan.kill();
  }
});

test('an embedded redis-server that exits at start (corrupt AOF): `sluice start` exits 1 naming its exit code and log line', async () => {
  const inst = await writeSluiceConfig({ redisUrl: null, transport: {} });
  instances.push(inst);
  const aof = join(inst.dataDir, 'redis', 'appendonlydir');
  mkdirSync(aof, { recursive: true });
  writeFileSync(join(aof, 'appendonly.aof.manifest'), 'file appendonly.aof.1.incr.aof seq 1 type i\n');
  writeFileSync(join(aof, 'appendonly.aof.1.incr.aof'), 'this is not an AOF\r\n');
  const p = spawnSluice({ args: ['start', '--config', inst.configFile] });
  const exit = await p.waitExit(20_000);
  assert.equal(exit, { code: 1, signal: null }, p.stderr());
  // Before: "redis-server exited at start: see …/redis.log".
  assert.match(p.stderr(), 'redis-server exited before it was ready (code 1');
  assert.match(p.stderr(), 'Bad file format reading the append only file');
  assert.not.ok(p.logs.some((l) => l.msg === 'sluice started'));
});

test('without redis-server on PATH, `sluice start` exits non-zero naming `apt-get install -y redis-server`', async () => {
  const inst = await writeSluiceConfig({ redisUrl: null, transport: {} });
  instances.push(inst);
  // A PATH holding node and nothing else (node and redis-server share /usr/bin on many systems).
  const bin = mkdtempSync(join(tmpdir(), 'sluice-path-'));
  scratch.push(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  const p = spawnSluice({ args: ['start', '--config', inst.configFile], env: { PATH: bin } });
  const exit = await p.waitExit(20_000);
  assert.ok(exit.code !== 0 && exit.code !== null, `exit ${JSON.stringify(exit)}`);
  assert.match(p.stderr(), /apt-get install -y redis-server/);
  assert.not.ok(p.logs.some((l) => l.msg === 'sluice started'));
});

test('SIGHUP reloads the configuration: a key added to the file works without a restart; a broken file is refused, logged, and changes nothing', async () => {
  const rcpt = [`hup-${randomUUID().slice(0, 6)}@hup.test`];
  const { inst } = await externalInstance(rcpt);
  const p = await startSluiceProcess(inst);
  const send = (key: string, to: string) => callApi(p.ports.http as number, key, '/v1/messages', { from: 'news@acme.example', to, subject: 'hup', text: 'x' });
  const second = generateApiKey('acme');
  assert.is((await send(second, rcpt[0] as string)).status, 401);

  const tree = YAML.parse(readFileSync(inst.configFile, 'utf8')) as { accounts: { apiKeys: string[] }[] };
  (tree.accounts[0] as { apiKeys: string[] }).apiKeys.push(await hashSecret(second));
  writeFileSync(inst.configFile, YAML.stringify(tree));
  p.signal('SIGHUP');
  const done = await p.waitForLog((l) => l.msg === 'configuration reloaded', 10_000);
  assert.equal(done['accounts'], { added: [], removed: [], changed: ['acme'] });
  assert.is((await send(second, rcpt[0] as string)).status, 202, 'the added key works');
  assert.is((await send(inst.account.apiKey, rcpt[0] as string)).status, 202, 'the first key still does');

  writeFileSync(inst.configFile, 'accounts: [ this is not YAML');
  p.signal('SIGHUP');
  const refused = await p.waitForLog((l) => String(l.msg).startsWith('configuration reload refused'), 10_000);
  assert.is(refused['code'], 'SLUICE_CONFIG_INVALID');
  assert.is((await send(second, rcpt[0] as string)).status, 202, 'the configuration in force stays');
  const text = (await adminGet(p.ports.admin, '/metrics')).text;
  assert.is(metricValue(text, 'sluice_config_reloads_total', { result: 'applied' }), 1);
  assert.is(metricValue(text, 'sluice_config_reloads_total', { result: 'refused' }), 1);
  assert.is(metricValue(text, 'sluice_config_last_reload_successful'), 0);
  assert.is(p.exited, null, 'still running');
  p.signal('SIGTERM');
  assert.is((await p.waitExit(35_000)).code, 0);
});

test('/metrics after real deliveries: accepted, attempts, DKIM and SMTP timings, pool utilization, queue depth', async () => {
  const N = 40;
  const DEFERRED = 7;
  const good = recipients(N, 2, `m${randomUUID().slice(0, 4)}-`);
  const dead = recipients(DEFERRED, 1, 'nobody-').map((a) => a.replace(/@.*/, '@dead.test'));
  // A port nothing listens on: every attempt there fails to connect and is deferred for a minute.
  const deadPort = await freePort();
  const { inst } = await externalInstance(good, { delivery: { transport: { 'dead.test': `127.0.0.1:${deadPort}` } }, shaping: { default: { retry: ['1m'] } } }, ['rsa', 'ed25519']);
  const p = await startSluiceProcess(inst);
  await submitAll(p.ports.http as number, inst.account.apiKey, [...good, ...dead]);
  for (let i = 0; i < 500 && tally(good).delivered < N; i++) await sleep(20);
  const text = await scrapeUntil(p.ports.admin, (t) => (metricValue(t, 'sluice_delivery_attempts_total', { result: 'delivered' }) ?? 0) + (metricValue(t, 'sluice_delivery_attempts_total', { result: 'deferred' }) ?? 0) >= N + DEFERRED, 100);
  const v = (name: string, labels: Record<string, string> = {}) => metricValue(text, name, labels);
  assert.is(v('sluice_messages_accepted_total', { source: 'http' }), N + DEFERRED);
  assert.is(v('sluice_delivery_attempts_total', { result: 'delivered', provider: 'default' }), N);
  assert.is(v('sluice_delivery_attempts_total', { result: 'deferred', provider: 'default' }), DEFERRED);
  assert.is(v('sluice_messages_delivered_total'), N);
  // Each delivered copy was signed once per key; the deferred ones never got as far as rendering.
  for (const algorithm of ['rsa', 'ed25519']) {
    assert.is(v('sluice_dkim_sign_duration_seconds_count', { algorithm }), N, `${algorithm} signatures`);
    const sum = v('sluice_dkim_sign_duration_seconds_sum', { algorithm }) as number;
    assert.ok(sum > 0 && sum / N < 1, `${algorithm}: mean signing time ${sum / N} s is plausible`);
  }
  assert.is(v('sluice_smtp_transaction_duration_seconds_count', { result: 'delivered' }), N);
  const util = v('sluice_render_pool_utilization_ratio');
  assert.ok(util !== null && util >= 0 && util <= 1, `pool utilization ${util} in [0, 1]`);
  assert.is(v('sluice_queue_recipients', { provider: 'default' }), DEFERRED, 'the deferred recipients wait in the queue');
  p.signal('SIGTERM');
  assert.is((await p.waitExit(35_000)).code, 0);
});

test.run();
