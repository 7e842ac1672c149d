import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { createRedis } from '../../src/redis/client.js';
import { createKeys } from '../../src/redis/keys.js';
import { startEmbeddedRedis, pingSocket } from '../../src/redis/embedded.js';
import {
  writeSluiceConfig, startSluiceProcess, startSlowSink, submitAll, killAllSluiceProcesses, isAlive, waitGone, sleep,
  type SluiceInstance, type SlowSink, type SluiceProcess, type LogLine,
} from '../helpers/sluice-process.js';
import { queueTotals } from '../helpers/fault-load.js';

/**
 * Shutdown as an operator's terminal and a supervisor cause it:
 * - Ctrl-C: SIGINT to the whole foreground process group. The embedded redis-server must not get it
 *   (it used to die at once, before Sluice had written its outcomes, and shutdown hung reconnecting
 *   to it); Sluice stops it itself, last.
 * - An external Redis that is gone: shutdown stops waiting for it and exits, never hangs.
 */
const test = suite('e2e/shutdown');

let sink: SlowSink;
/** Milliseconds the sink waits before its 250: long enough for a signal to land inside the transaction. */
let sinkDelayMs = 5;
const instances: SluiceInstance[] = [];
const servers: TestRedis[] = [];

test.before(async () => {
  sink = await startSlowSink(() => sinkDelayMs);
});

test.after(async () => {
  await killAllSluiceProcesses();
  await sink?.close();
  for (const s of servers) await s.stop();
  for (const i of instances) i.remove();
});

/** One message to `rcpt`, held open at the sink (its data complete, the 250 pending) when this resolves. */
async function oneTransactionOpen(p: SluiceProcess, inst: SluiceInstance, rcpt: string, delayMs: number): Promise<void> {
  sinkDelayMs = delayMs;
  const before = sink.total();
  await submitAll(p.ports.http as number, inst.account.apiKey, [rcpt]);
  for (let i = 0; i < 500 && sink.total() === before; i++) await sleep(20);
  assert.ok(sink.total() > before, 'the message reached the sink');
}

const index = (logs: readonly LogLine[], msg: string) => logs.findIndex((l) => l.msg === msg);

test('Ctrl-C (SIGINT to the process group) with the embedded Redis: the open transaction is acknowledged in Redis, Redis stops last, nothing is left running', async () => {
  const domain = `c${randomUUID().slice(0, 6)}.test`;
  const rcpt = `ctrl-c@${domain}`;
  // A lease far longer than the test: the queue below shows what was written, not what expired.
  const inst = await writeSluiceConfig({ redisUrl: null, transport: { [domain]: `${sink.host}:${sink.port}` }, overrides: { delivery: { lease: '5m' } } });
  instances.push(inst);
  const p = await startSluiceProcess(inst);
  const redisPid = p.redisPid as number;
  assert.ok(redisPid > 0, 'the embedded redis-server reported its pid');
  // The sink answers 3 s after the data, as the auditor's peer did (8 s there).
  await oneTransactionOpen(p, inst, rcpt, 3000);

  const t0 = Date.now();
  process.kill(-p.pid, 'SIGINT'); // what a terminal does on Ctrl-C: the whole foreground group
  await sleep(300);
  assert.ok(isAlive(redisPid), 'the redis-server did not get the terminal\'s SIGINT');
  const exit = await p.waitExit(20_000);
  const ms = Date.now() - t0;
  console.log(`  ctrl-c: exited ${JSON.stringify(exit)} after ${ms} ms`);
  assert.equal(exit, { code: 0, signal: null }, `clean exit: ${p.stderr()}`);
  assert.ok(await waitGone(redisPid, 5000), `redis-server ${redisPid} is gone after Sluice exited`);
  assert.not.ok(await pingSocket({ path: join(inst.dataDir, 'redis', 'redis.sock') }), 'nothing answers on the socket');

  // The order in the log: every role stopped, then the embedded server, then "sluice stopped".
  const logs = p.logs;
  const down = index(logs, 'shutting down');
  const redisStopped = index(logs, 'embedded redis-server stopped');
  assert.ok(down >= 0 && redisStopped > down && index(logs, 'sluice stopped') > redisStopped, `log order: ${logs.map((l) => l.msg).join(' | ')}`);
  assert.not.ok(logs.slice(down, redisStopped).some((l) => l.msg === 'redis connection error'), 'Redis stayed reachable until Sluice stopped it');

  // What the AOF holds: the delivery was acknowledged (nothing ready or leased), so a restart sends nothing again.
  const dir = join(inst.dataDir, 'redis');
  const srv = await startEmbeddedRedis({ binary: 'redis-server', dir });
  const c = createRedis({ url: srv.socket, name: 'shutdown-test' });
  try {
    assert.equal(await queueTotals(c, createKeys('sluice:'), [domain]), { ready: 0, leased: 0 }, 'the ack written during shutdown is in the AOF');
  } finally {
    c.disconnect();
    await srv.stop();
  }
  assert.is(sink.counts.get(rcpt), 1, 'delivered once');
});

test('a second Ctrl-C exits at once and still stops the embedded redis-server', async () => {
  const domain = `s${randomUUID().slice(0, 6)}.test`;
  const inst = await writeSluiceConfig({ redisUrl: null, transport: { [domain]: `${sink.host}:${sink.port}` } });
  instances.push(inst);
  const p = await startSluiceProcess(inst);
  const redisPid = p.redisPid as number;
  // The sink holds the transaction far beyond anything this test waits for.
  await oneTransactionOpen(p, inst, `twice@${domain}`, 20_000);
  process.kill(-p.pid, 'SIGINT');
  await p.waitForLog((l) => l.msg === 'shutting down', 5000);
  await sleep(200);
  assert.is(p.exited, null, 'still in its grace period');
  process.kill(-p.pid, 'SIGINT');
  const exit = await p.waitExit(5000);
  assert.is(exit.code, 130, `128 + SIGINT's number: ${JSON.stringify(exit)}`);
  assert.ok(await waitGone(redisPid, 10_000), `redis-server ${redisPid} was stopped, not left behind`);
  sinkDelayMs = 5;
});

test('SIGTERM with an external Redis that is already gone: Sluice stops waiting for it and exits, saying what it left', async () => {
  const ext = await startRedis();
  servers.push(ext);
  const domain = `x${randomUUID().slice(0, 6)}.test`;
  const prefix = `t${randomUUID().slice(0, 8)}:`;
  // The default grace period (30 s): the exit must not need it to run out.
  const inst = await writeSluiceConfig({ redisUrl: ext.url, prefix, transport: { [domain]: `${sink.host}:${sink.port}` }, overrides: { delivery: { lease: '5m' } } });
  instances.push(inst);
  const p = await startSluiceProcess(inst);
  await oneTransactionOpen(p, inst, `gone@${domain}`, 1000);
  await ext.server.kill();
  const t0 = Date.now();
  p.signal('SIGTERM');
  const exit = await p.waitExit(20_000);
  const ms = Date.now() - t0;
  console.log(`  redis gone: exited ${JSON.stringify(exit)} after ${ms} ms`);
  assert.is(exit.code, 1, `exit code 1 (outcomes may be missing): ${JSON.stringify(exit)} ${p.stderr()}`);
  const line = p.logs.find((l) => l.msg?.startsWith('shutdown incomplete'));
  assert.ok(line, `a log line says the shutdown is incomplete: ${p.logs.map((l) => l.msg).join(' | ')}`);
  assert.ok(Array.isArray(line['unfinished']) && line['unfinished'].length > 0, `it names the parts it stopped waiting for: ${JSON.stringify(line)}`);
  assert.ok(p.logs.some((l) => l.msg === 'sluice stopped'));
  sinkDelayMs = 5;
});

test("a host that holds its greeting (a tarpit) does not hold the shutdown past its grace: the connect ends, the copy stays queued unattempted, exit 0", async () => {
  const ext = await startRedis();
  servers.push(ext);
  const held: Socket[] = [];
  const tarpit = createServer((s) => {
    s.on('error', () => undefined);
    held.push(s); // accepted, never greeted
  });
  await new Promise<void>((r) => tarpit.listen(0, '127.0.0.1', () => r()));
  const port = (tarpit.address() as { port: number }).port;
  const domain = `t${randomUUID().slice(0, 6)}.test`;
  const prefix = `t${randomUUID().slice(0, 8)}:`;
  const inst = await writeSluiceConfig({ redisUrl: ext.url, prefix, transport: { [domain]: `127.0.0.1:${port}` }, overrides: { instance: { shutdownGrace: '1s' } } });
  instances.push(inst);
  try {
    const p = await startSluiceProcess(inst);
    await submitAll(p.ports.http as number, inst.account.apiKey, [`slow@${domain}`]);
    for (let i = 0; i < 500 && held.length === 0; i++) await sleep(20);
    assert.ok(held.length > 0, 'Sluice connected and waits for the greeting');
    p.signal('SIGTERM');
    const exit = await p.waitExit(12_000);
    assert.is(exit.code, 0, `${JSON.stringify(exit)} ${p.logs.map((l) => l.msg).join(' | ')}`);
    assert.not.ok(p.logs.some((l) => l.msg?.startsWith('shutdown incomplete')));
    const c = createRedis({ url: ext.url, name: 'shutdown-test' });
    try {
      const keys = createKeys(prefix);
      assert.equal(await queueTotals(c, keys, [domain]), { ready: 1, leased: 0 }, 'queued again, not leased');
      const [entry] = await c.zrange(keys.ready(domain), 0, -1);
      assert.match(String(entry), /:0$/, 'no attempt counted');
    } finally {
      c.disconnect();
    }
  } finally {
    for (const s of held) s.destroy();
    tarpit.close();
  }
});

test.run();
