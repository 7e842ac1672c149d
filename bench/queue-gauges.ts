/**
 * Cost of the queue gauges' read (queue/stats.ts queueTotals) over many destinations: wall time,
 * this process's CPU and Redis's CPU (INFO commandstats) per call.
 *
 *   npm run bench:queue-gauges [-- DESTINATIONS]    (default 100,000)
 *
 * Fills a fresh redis-server with DESTINATIONS destinations over 16 schedule shards: each holds one
 * ready entry, every 10th one leased entry and a recorded rule, every 50th a campaign pointer with
 * three recipients behind it. Then reads the totals three times. Prints a line per call and writes
 * bench/results/queue-gauges.json.
 */
import { writeFileSync } from 'node:fs';
import { startRedis } from '../test/helpers/redis.js';
import { createRedis } from '../src/redis/client.js';
import { createKeys } from '../src/redis/keys.js';
import { queueTotals } from '../src/queue/stats.js';

const N = Number(process.argv[2] ?? 100_000);
const SHARDS = 16;
const server = await startRedis();
const redis = createRedis({ url: server.url });
const keys = createKeys('bench:');
try {
  for (let i = 0; i < N; i += 1000) {
    const p = redis.pipeline();
    for (let j = i; j < Math.min(N, i + 1000); j++) {
      const d = `d${j}.example`;
      p.sadd(keys.destinations(j % SHARDS), d);
      p.zadd(keys.ready(d), 1, `m${j}:0:0`);
      if (j % 10 === 0) p.zadd(keys.leases(d), 1, `m${j}:1:0`).set(keys.destinationRule(d), 'google');
      if (j % 50 === 0) p.hset(keys.campaignPushed(d), 'c1', '5').rpush(keys.campaignQueue(d, 'c1'), '1', '2', '3').zadd(keys.ready(d), 1, '@c1');
    }
    await p.exec();
  }
  const expected = N + Math.ceil(N / 50) * 3; // a pointer is not counted; its 3 recipients are
  const calls: { wall_ms: number; client_cpu_ms: number; redis_cpu_ms: number }[] = [];
  for (let k = 0; k < 3; k++) {
    await redis.config('RESETSTAT');
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const totals = await queueTotals(redis, keys, SHARDS, (_d, rule) => rule ?? 'default');
    const wall = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const usec = [...(await redis.info('commandstats')).matchAll(/usec=(\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
    const counted = [...totals.values()].reduce((a, t) => a + t.recipients, 0);
    if (counted !== expected) throw new Error(`counted ${counted} recipients, expected ${expected}`);
    const call = { wall_ms: Math.round(wall), client_cpu_ms: Math.round((cpu.user + cpu.system) / 1000), redis_cpu_ms: Math.round(usec / 1000) };
    calls.push(call);
    console.log(`${N} destinations: ${call.wall_ms} ms, Sluice CPU ${call.client_cpu_ms} ms, Redis CPU ${call.redis_cpu_ms} ms`);
  }
  writeFileSync(new URL('./results/queue-gauges.json', import.meta.url), JSON.stringify({ date: new Date().toISOString(), destinations: N, calls }, null, 2) + '\n');
  console.log('wrote bench/results/queue-gauges.json');
} finally {
  await redis.quit();
  await server.stop();
}
