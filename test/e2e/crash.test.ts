import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { createRedis, type RedisClient } from '../../src/redis/client.js';
import { createKeys } from '../../src/redis/keys.js';
import {
  writeSluiceConfig, startSluiceProcess, startSlowSink, submitAll, killAllSluiceProcesses, isAlive, waitGone,
  recipients, domainsOf, type SluiceInstance, type SlowSink,
} from '../helpers/sluice-process.js';
import { queueTotals, waitQueueEmpty, duplicatesOf } from '../helpers/fault-load.js';

/**
 * "A delivery process killed with SIGKILL mid-batch and restarted loses no accepted message."
 * A real `sluice start` delivers 2,000 single-recipient messages over 5 destination domains to a
 * slow MX; after a few hundred it is SIGKILLed, then started again with the same config. Every
 * accepted recipient must arrive, and copies sent twice must be no more than what was leased
 * (in flight) at the kill. Once with an external Redis that survives, once with the embedded default.
 */
const test = suite('e2e/crash');

const N = 2_000;
const DOMAINS = 5;
/** Kill once this many have arrived: well into the run, far from its end. */
const KILL_AFTER = 300;
const CLAIM_BATCH = 10;
const CONNECTIONS_PER_DOMAIN = 2;
/** The most a process can hold leased: every connection with a full batch. */
const IN_FLIGHT_BOUND = CLAIM_BATCH * CONNECTIONS_PER_DOMAIN * DOMAINS;

let redis: TestRedis;
let sink: SlowSink;
const instances: SluiceInstance[] = [];
/** Every inspection client, disconnected in `after` even when an assertion failed first. */
const clients: RedisClient[] = [];
const inspect = (url: string) => {
  const c = createRedis({ url, name: 'crash-test-inspector' });
  clients.push(c);
  return c;
};

test.before(async () => {
  redis = await startRedis();
  // 5–20 ms between the end of data and the 250: most kills land inside an open transaction.
  sink = await startSlowSink(() => 5 + Math.floor(Math.random() * 15));
});

test.after(async () => {
  for (const c of clients) c.disconnect();
  await killAllSluiceProcesses();
  await sink?.close();
  await redis?.stop();
  for (const i of instances) i.remove();
});

async function crashAndRecover(variant: 'external' | 'embedded'): Promise<void> {
  const tag = `${variant[0]}${randomUUID().slice(0, 4)}-`;
  const rcpts = recipients(N, DOMAINS, tag);
  const domains = domainsOf(rcpts);
  const prefix = `t${randomUUID().slice(0, 8)}:`;
  const keys = createKeys(prefix);
  const inst = await writeSluiceConfig({
    redisUrl: variant === 'external' ? redis.url : null,
    prefix,
    transport: Object.fromEntries(domains.map((d) => [d, `${sink.host}:${sink.port}`])),
    overrides: { delivery: { claimBatch: CLAIM_BATCH }, shaping: { default: { connections: CONNECTIONS_PER_DOMAIN } } },
  });
  instances.push(inst);
  const ours = () => rcpts.reduce((n, r) => n + (sink.counts.has(r) ? 1 : 0), 0);
  const baseline = sink.counts.size;

  const first = await startSluiceProcess(inst);
  await submitAll(first.ports.http as number, inst.account.apiKey, rcpts);
  await sink.waitDistinct(baseline + KILL_AFTER, 20_000);
  first.signal('SIGKILL');
  const exit = await first.waitExit();
  assert.is(exit.signal, 'SIGKILL');
  const deliveredAtKill = ours();
  assert.ok(deliveredAtKill < N, `the kill must land mid-run (${deliveredAtKill}/${N} delivered)`);

  // What the killed process held: its leases, still in Redis (for the embedded variant: in the
  // redis-server the killed Sluice left running).
  const socket = variant === 'external' ? redis.url : join(inst.dataDir, 'redis', 'redis.sock');
  if (variant === 'embedded') {
    assert.ok(first.redisPid !== null && isAlive(first.redisPid), 'a SIGKILLed Sluice leaves its embedded redis-server running (nothing can stop it)');
  }
  const inspector = inspect(socket);
  const atKill = await queueTotals(inspector, keys, domains);
  // Disconnect before the restart: the restarted Sluice may look at who else uses its embedded server.
  await inspector.quit();
  console.log(`  [${variant}] killed with ${deliveredAtKill}/${N} delivered, ${atKill.leased} leased, ${atKill.ready} ready`);
  assert.ok(atKill.leased <= IN_FLIGHT_BOUND, `leased at kill ${atKill.leased} ≤ claimBatch × connections = ${IN_FLIGHT_BOUND}`);

  // Restart with the same config. The embedded variant must cope with the orphaned redis-server.
  const second = await startSluiceProcess(inst);
  if (variant === 'embedded') {
    console.log(`  [embedded] restart: redis-server ${second.redisPid === first.redisPid ? `${second.redisPid} adopted from the killed process` : `${second.redisPid} started (orphan ${first.redisPid} ${isAlive(first.redisPid as number) ? 'still running' : 'gone'})`}`);
  }
  await sink.waitDistinct(baseline + N, 25_000);

  // Every copy arrived; wait until the last acknowledgements are in Redis too.
  const after = inspect(socket);
  const totals = await waitQueueEmpty(after, keys, domains);
  await after.quit();
  assert.equal(totals, { ready: 0, leased: 0 }, 'nothing left in the queue');

  const missing = rcpts.filter((r) => !sink.counts.has(r));
  const duplicates = duplicatesOf(sink.counts, rcpts);
  console.log(`  [${variant}] after restart: ${N - missing.length}/${N} delivered, ${duplicates} duplicates (in flight at kill: ${atKill.leased}, bound ${IN_FLIGHT_BOUND})`);
  assert.equal(missing, [], 'every accepted recipient arrived at least once');
  assert.ok(duplicates <= atKill.leased, `duplicates (${duplicates}) ≤ leased at the kill (${atKill.leased})`);
  // Tighter: a connection sends one copy at a time and acknowledges it before the next, so only the
  // copy between the MX's commit and our ack can go twice — one per connection.
  assert.ok(duplicates <= CONNECTIONS_PER_DOMAIN * DOMAINS, `duplicates (${duplicates}) ≤ one per connection (${CONNECTIONS_PER_DOMAIN * DOMAINS})`);

  second.signal('SIGTERM');
  const stopped = await second.waitExit(30_000);
  assert.is(stopped.code, 0, `graceful exit: ${second.stderr()}`);
  if (variant === 'embedded') {
    // After the clean stop no redis-server of this data folder may be left: neither the restart's
    // own nor the one the killed process orphaned.
    for (const pid of [first.redisPid, second.redisPid]) {
      if (pid !== null) assert.ok(await waitGone(pid), `redis-server ${pid} is gone after the final SIGTERM`);
    }
  }
}

test('SIGKILL mid-batch with an external Redis: restarted, every accepted recipient arrives; duplicates ≤ what was leased', async () => {
  await crashAndRecover('external');
});

test('SIGKILL mid-batch with the embedded Redis: the restart copes with the orphaned redis-server and loses nothing', async () => {
  await crashAndRecover('embedded');
});

test.run();
