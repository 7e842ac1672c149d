import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/redis/embedded.js';
import { createRedis, type RedisClient } from '../../src/redis/client.js';
import { createKeys } from '../../src/redis/keys.js';
import {
  writeSluiceConfig, startSluiceProcess, startSlowSink, killAllSluiceProcesses, adminGet, sleep, type SluiceInstance, type SlowSink,
} from '../helpers/sluice-process.js';
import { recordFigures } from '../helpers/fault-figures.js';
import { startSubmitter, waitQueueEmpty, duplicatesOf, until } from '../helpers/fault-load.js';

/**
 * Fault: the Redis server dies (SIGKILL, no shutdown save) in the middle of a send and comes back a
 * few seconds later from its AOF. The server runs with `appendfsync always`, so every write Redis
 * answered is on disk before the answer, and so is every message Sluice answered 202 for: none may
 * be lost. (With the default `everysec` a crash of the Redis host can lose up to a second of
 * acknowledged writes; that is Redis's documented trade-off, and `redis.durability: strict` exists
 * for operators who cannot take it. The fault here is the server process, so `always` is what makes
 * "nothing acknowledged lost" a claim the test can hold Sluice to.)
 *
 * While Redis is down, a submission must be refused at once with 503 SLUICE_REDIS_UNAVAILABLE (the
 * client retries later), not left hanging; once it is back, Sluice reconnects by itself and answers
 * 202 again, and everything accepted before, during and after is delivered.
 */
const test = suite('faults/redis-restart');

const N = 5_000;
const DOMAINS = 5;
const CLAIM_BATCH = 20;
const CONNECTIONS_PER_DOMAIN = 2;
const INFLIGHT_BOUND = CLAIM_BATCH * CONNECTIONS_PER_DOMAIN * DOMAINS;
/** Kill once this many are accepted: the send goes on through the outage and after it. */
const KILL_AFTER = 2_000;
/** How long Redis stays down: longer than the 2 s lease, so expired leases meet the restart. */
const OUTAGE_MS = 4_000;
/** A refusal must come well within this; a hang would run into it. */
const PROBE_TIMEOUT_MS = 2_000;
const DELIVER_TIMEOUT_MS = 90_000;

let dir: string;
let server: EmbeddedRedis | undefined;
let sink: SlowSink;
let inst: SluiceInstance | undefined;
const clients: RedisClient[] = [];

const startServer = () => startEmbeddedRedis({ binary: 'redis-server', dir, appendfsync: 'always' });

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-fault-redis-'));
  server = await startServer();
  sink = await startSlowSink(() => Math.floor(Math.random() * 5));
});

test.after(async () => {
  for (const c of clients) c.disconnect();
  await killAllSluiceProcesses();
  await sink?.close();
  await server?.stop();
  inst?.remove();
  rmSync(dir, { recursive: true, force: true });
});

interface Probe {
  status: number | 'timeout' | 'error';
  code: string | null;
  ms: number;
}

/** One single-message POST with a client-side deadline. */
async function probe(port: number, apiKey: string, to: string): Promise<Probe> {
  const t0 = Date.now();
  try {
    const res = await request(`http://127.0.0.1:${port}/v1/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ from: 'news@acme.example', to, subject: 'probe', text: 'probe' }),
      headersTimeout: PROBE_TIMEOUT_MS,
      bodyTimeout: PROBE_TIMEOUT_MS,
    });
    const body = (await res.body.json()) as { code?: string };
    return { status: res.statusCode, code: body.code ?? null, ms: Date.now() - t0 };
  } catch (err) {
    const timeout = (err as { code?: string }).code === 'UND_ERR_HEADERS_TIMEOUT';
    return { status: timeout ? 'timeout' : 'error', code: null, ms: Date.now() - t0 };
  }
}

test('Redis killed and restarted from its AOF mid-send: 503 while it is down, 202 after, nothing acknowledged lost', async () => {
  const tag = `r${randomUUID().slice(0, 6)}-`;
  const domains = Array.from({ length: DOMAINS }, (_, i) => `r${i}.redis-restart.test`);
  const prefix = `t${randomUUID().slice(0, 8)}:`;
  const keys = createKeys(prefix);
  inst = await writeSluiceConfig({
    redisUrl: (server as EmbeddedRedis).socket,
    prefix,
    transport: Object.fromEntries(domains.map((d) => [d, `${sink.host}:${sink.port}`])),
    overrides: {
      delivery: { claimBatch: CLAIM_BATCH, pool: { threads: 1 } },
      shaping: { default: { connections: CONNECTIONS_PER_DOMAIN, messagesPerConnection: 1000 } },
    },
  });
  const started = Date.now();
  const sluice = await startSluiceProcess(inst);
  const http = sluice.ports.http as number;
  const apiKey = inst.account.apiKey;
  const load = startSubmitter({ port: () => http, apiKey, tag, domains, total: N, batch: 100, pauseMs: 50 });

  await until(() => load.accepted.length >= KILL_AFTER, DELIVER_TIMEOUT_MS, 5);
  await (server as EmbeddedRedis).kill();
  const acceptedAtKill = load.accepted.length;
  const killedAt = Date.now();

  // While it is down: probes are refused quickly and clearly, and /readyz says why.
  await sleep(200);
  const during: Probe[] = [];
  const probeRcpts: string[] = [];
  while (Date.now() - killedAt < OUTAGE_MS - PROBE_TIMEOUT_MS) {
    const to = `${tag}probe${probeRcpts.length}@${domains[0]}`;
    probeRcpts.push(to);
    during.push(await probe(http, apiKey, to));
    await sleep(200);
  }
  const ready = await adminGet(sluice.ports.admin, '/readyz');
  await sleep(Math.max(0, OUTAGE_MS - (Date.now() - killedAt)));

  server = await startServer();
  const restartedAt = Date.now();
  // Accepts resume by themselves: the first 202 after the restart.
  let after: Probe | undefined;
  let resumeMs = -1;
  for (let i = 0; i < 100; i++) {
    const to = `${tag}after${i}@${domains[0]}`;
    const p = await probe(http, apiKey, to);
    if (p.status === 202) {
      after = p;
      resumeMs = Date.now() - restartedAt;
      load.accepted.push(to);
      break;
    }
    await sleep(100);
  }
  await load.done;

  const missing = () => load.accepted.filter((r) => !sink.counts.has(r));
  await until(() => missing().length === 0, DELIVER_TIMEOUT_MS);
  const inspector = createRedis({ url: (server as EmbeddedRedis).socket, name: 'fault-inspector' });
  clients.push(inspector);
  const totals = await waitQueueEmpty(inspector, keys, domains);
  const lost = missing().length;
  const duplicated = duplicatesOf(sink.counts, load.accepted);
  const refusedDuring = during.filter((p) => p.status === 503).length;
  await recordFigures('redis_restart', {
    sent: load.accepted.length,
    lost,
    duplicated,
    inflight_bound: INFLIGHT_BOUND,
    accepted_before_kill: acceptedAtKill,
    outage_ms: OUTAGE_MS,
    probes_during_outage: during.length,
    refused_503_during_outage: refusedDuring,
    slowest_refusal_ms: Math.max(0, ...during.map((p) => p.ms)),
    accepts_resumed_after_ms: resumeMs,
    load_refusals: JSON.stringify(Object.fromEntries(load.refusals)),
    seconds: Math.round((Date.now() - started) / 100) / 10,
  });

  assert.ok(during.length >= 2, 'probes ran during the outage');
  for (const p of during) {
    assert.is(p.status, 503, `a submission during the outage is refused, not left hanging (${JSON.stringify(p)})`);
    assert.is(p.code, 'SLUICE_REDIS_UNAVAILABLE');
  }
  assert.is(ready.status, 503, `/readyz reports the outage: ${ready.text}`);
  assert.ok(after, 'accepts resumed after the restart');
  assert.is(lost, 0, `every accepted message was delivered (missing e.g. ${missing().slice(0, 3).join(', ')})`);
  assert.equal(totals, { ready: 0, leased: 0 }, 'nothing left in the queue');
  assert.ok(duplicated <= INFLIGHT_BOUND, `duplicates (${duplicated}) ≤ what can be in flight (${INFLIGHT_BOUND})`);
  // Refused probes were never persisted: no copy of one reaches the MX.
  const probeCopies = probeRcpts.filter((r) => sink.counts.has(r)).length;
  assert.is(probeCopies, 0, 'a refused submission is not delivered');

  sluice.signal('SIGTERM');
  const stopped = await sluice.waitExit(30_000);
  assert.is(stopped.code, 0, `graceful exit after the run: ${sluice.stderr().slice(-1000)}`);
});

test.run();
