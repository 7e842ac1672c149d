/**
 * What the event stream costs Redis per event, by entry format: the figure behind issue 4's share of
 * the ceiling (each open is one stream entry). Batches of tracking-open events go through the real
 * appendEvents-2.lua on an embedded redis-server (unix socket), with AOF on (as Sluice runs it) and
 * off; Redis's own CPU (utime + stime from /proc) is divided by the events appended.
 *
 *   per-event  today's format: one XADD per event, its 9 fields as they are (tracking/record.ts)
 *   two-field  one XADD per event, `type` plus the rest as one JSON field
 *   per-batch  one stream entry per batch, the events as one JSON field (consumers would unpack it;
 *              erasure could no longer XDEL one person's event)
 *
 *   npm run bench:event-stream
 *   env: BENCH_BATCHES (2000), BENCH_BATCH (100 events), BENCH_ROUNDS (2, interleaved; the median is kept)
 *
 * Prints a table and writes bench/results/event-stream.json. Linux only (/proc). Not a test.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRedis } from '../src/redis/client.js';
import { startEmbeddedRedis } from '../src/redis/embedded.js';

const BATCHES = Number(process.env['BENCH_BATCHES'] ?? 2000);
const BATCH = Number(process.env['BENCH_BATCH'] ?? 100);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 2);
const FORMATS = ['per-event', 'two-field', 'per-batch'] as const;
type Format = (typeof FORMATS)[number];

/** A tracking open's fields as tracking/record.ts writes them (full mode, a person, a repeat). */
function event(i: number): string[] {
  return [
    'type', 'opened', 'at', String(1_764_300_000_000 + i), 'account', 'acme', 'msgId', `01jd8x5m2kq7v3ht9wzr6ya${i % 100}`,
    'idx', String(i % 1000), 'first', '0', 'machine', '0', 'ip', '203.0.113.7',
    'ua', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36',
  ];
}

function batchArg(format: Format, first: number): string {
  const events = Array.from({ length: BATCH }, (_, j) => event(first + j));
  if (format === 'per-event') return JSON.stringify(events);
  if (format === 'two-field') return JSON.stringify(events.map((e) => ['type', e[1] as string, 'e', JSON.stringify(e.slice(2))]));
  return JSON.stringify([['type', 'batch', 'events', JSON.stringify(events)]]);
}

/** CPU ms the process has used (utime + stime; clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const fields = (readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1] as string).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function measure(format: Format, aof: boolean): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-stream-'));
  const server = await startEmbeddedRedis({ binary: 'redis-server', dir, args: aof ? [] : ['--appendonly', 'no'] });
  const redis = createRedis({ url: server.socket, name: 'bench-event-stream' });
  try {
    const before = cpuMs(server.pid);
    for (let b = 0; b < BATCHES; b++) await redis.appendEvents('bench:events', 'bench:{bench:events}:erased', 1_000_000, batchArg(format, b * BATCH));
    return ((cpuMs(server.pid) - before) * 1000) / (BATCHES * BATCH);
  } finally {
    redis.disconnect();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

const rows: { format: Format; aof: boolean; us_per_event: number; rounds: number[] }[] = [];
const load = loadavg()[0] as number;
for (const aof of [true, false]) {
  const runs = new Map<Format, number[]>(FORMATS.map((f) => [f, []]));
  for (let r = 0; r < ROUNDS; r++) for (const f of FORMATS) runs.get(f)?.push(await measure(f, aof));
  for (const f of FORMATS) {
    const xs = runs.get(f) as number[];
    rows.push({ format: f, aof, us_per_event: Number(median(xs).toFixed(2)), rounds: xs.map((x) => Number(x.toFixed(2))) });
  }
}
console.log(`event stream: ${BATCHES} batches of ${BATCH} tracking events per run, ${ROUNDS} round(s); Redis CPU µs per event (load average before: ${load.toFixed(2)})`);
console.log('format      AOF   µs/event  rounds');
for (const r of rows) console.log(`${r.format.padEnd(10)}  ${(r.aof ? 'on' : 'off').padEnd(4)}  ${String(r.us_per_event).padStart(8)}  ${r.rounds.join(' / ')}`);
const out = join(fileURLToPath(new URL('.', import.meta.url)), 'results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'event-stream.json'), `${JSON.stringify({ when: new Date().toISOString(), batches: BATCHES, batch: BATCH, rounds: ROUNDS, load_average_before: load, rows }, null, 2)}\n`);
console.log('wrote bench/results/event-stream.json');
