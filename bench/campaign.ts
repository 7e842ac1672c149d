/**
 * A million-recipient campaign through a whole Sluice process, on this machine (issue 3, Benchmark):
 *
 *   this script ──HTTP──► Sluice process (`node bin/sluice.js start`) ──SMTP──► sink process
 *                              │ unix socket
 *                         redis-server (AOF everysec, one for the whole run: each phase needs the last one's data)
 *
 *   1 import   BENCH_CONTACTS contacts (100 domains, 3 merge fields), generated as a CSV stream into
 *              POST /v1/lists/:id/contacts in one request           → import_per_s
 *   2 queue    the same process, roles ingress,housekeeping,tracking (no delivery): POST /v1/campaigns
 *              (~10 KB html, merge fields, 5 tracked links, opens, sendAt now), wait for listQueued;
 *              Redis used_memory after − before, over recipients queued → redis_bytes_per_recipient
 *              (the contacts were stored before, so they are not counted), with MEMORY USAGE of the
 *              campaign's queue LISTs as the breakdown
 *   3 send     Sluice restarted with every role, transport '*' → the sink, until the sink holds every
 *              copy or BENCH_SEND_TIMEOUT                           → delivered_per_s, render_sign_per_s_per_core
 *
 * The Sluice process's resident memory is sampled every 250 ms in every phase (and its kernel
 * high-water mark read before it stops): peak_rss_mb is the highest over both processes.
 *
 * render_sign_per_s_per_core = copies delivered ÷ CPU seconds of the render pool's threads over the
 * send phase. The pool's threads are told apart by /proc/<pid>/task CPU time (Node names every thread
 * "node"): they are the `delivery.pool.threads` busiest threads other than the main thread. Every
 * delivered copy was rendered and signed exactly once there (the sink answers 250 to everything,
 * so there are no retries). sluice_render_duration_seconds is not used: it is the wall time of a
 * whole renderMany batch (queueing included) observed once per copy. The DKIM part alone comes from
 * sluice_dkim_sign_duration_seconds (time inside the worker per signature).
 *
 *   npm run bench:campaign
 *   env: BENCH_CONTACTS (1000000), BENCH_SEND_TIMEOUT (s, 3600), BENCH_QUEUE_TIMEOUT (s, 900),
 *        BENCH_SKIP_BUILD=1, BENCH_SLUICE='{json config overrides}', BENCH_NODE_ARGS='--max-old-space-size=…',
 *        BENCH_OUT (result file, default bench/results/campaign.json)
 *
 * Prints progress and writes bench/results/campaign.json after every phase (and every 30 s while
 * sending, with "complete": false), so a long run that is stopped still leaves its figures.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { startEmbeddedRedis, type EmbeddedRedis } from '../src/redis/embedded.js';
import { freePort } from '../test/helpers/redis.js';
import { newsletterTemplate, recipient } from './content.js';
import { SLUICE_NODE_FLAGS,
  BENCH, buildSluice, fetchMetrics, histogram, makeAccount, mb, mergeDeep, redisMemory, sampleRss, sleep, startSink, startSluiceProcess,
  type Account, type RssSampler, type SinkHandle, type SluiceHandle,
} from './harness.js';
import { cpuDelta, cpuTimes, machineBusySeconds, round, threadCpu, threadSplit } from './proc.js';

const CONTACTS = Number(process.env['BENCH_CONTACTS'] ?? 1_000_000);
const DOMAINS = 100;
const SEND_TIMEOUT_MS = Number(process.env['BENCH_SEND_TIMEOUT'] ?? 3600) * 1000;
const QUEUE_TIMEOUT_MS = Number(process.env['BENCH_QUEUE_TIMEOUT'] ?? 900) * 1000;
/** Experiments write elsewhere so that they do not overwrite the reference result. */
const RESULT_FILE = process.env['BENCH_OUT'] ?? join(BENCH, 'results', 'campaign.json');
/** Unset: the flags Sluice runs with (harness SLUICE_NODE_FLAGS). */
const NODE_ARGS = process.env['BENCH_NODE_ARGS'] === undefined ? undefined : process.env['BENCH_NODE_ARGS'].split(' ').filter(Boolean);
const TEMPLATE_BYTES = 10 * 1024;
const TRACKED_LINKS = 5;
/** CSV rows per chunk of the request body: ~64 KB, so the stream's backpressure is fine-grained. */
const ROWS_PER_CHUNK = 1000;
const CITIES = ['Lisbon', 'Oslo', 'Kraków', 'Lyon', 'Porto', 'Ghent', 'Turin', 'Malmö', 'Tartu', 'Cork', 'Graz', 'Brno'];
const FROM = 'News <news@rsa.bench.example>';
const POOL_THREADS_DEFAULT = 2;

/**
 * Sluice's tuning for the run. The delivery values are bench/e2e.ts's (why: see there) — 2 render
 * threads (one per core), 2 connections to each of the 100 destinations — except claimBatch 10: a
 * connection renders its whole claim ahead of sending it, so up to connections × claimBatch rendered
 * copies (~20 KB each) wait in memory; 200 × 50 peaked the process at 475 MB, 200 × 10 at 353 MB,
 * at the same delivered/s (100k and 30k runs on this machine). requestTimeout 1h: the whole million-row import is one streamed request. log warn: info logs a
 * line per connection.
 */
const TUNING = mergeDeep(
  {
    log: { level: 'warn' },
    ingress: { http: { requestTimeout: '1h' } },
    delivery: { pool: { threads: POOL_THREADS_DEFAULT, queuePerThread: 64 }, claimBatch: 10, maxConnections: 200 },
    shaping: { default: { connections: 2, messagesPerConnection: 1000 } },
  },
  JSON.parse(process.env['BENCH_SLUICE'] ?? '{}') as Record<string, unknown>,
);
const POOL_THREADS = Number(((TUNING['delivery'] as Record<string, any>)['pool'] as Record<string, unknown>)['threads'] ?? POOL_THREADS_DEFAULT);

// ── content ────────────────────────────────────────────────────────────────────────────────────

/**
 * bench/content.ts's ~10 KB newsletter with the list's merge fields, Sluice's one-click unsubscribe
 * URL in place of the newsletter's own, and TRACKED_LINKS story links (the others become plain text).
 */
function campaignHtml(): string {
  let links = 0;
  return newsletterTemplate(TEMPLATE_BYTES)
    .replaceAll('{{first}}', '{{first_name}}')
    .replaceAll('{{name}}', '{{first_name}} {{last_name}} of {{city}}')
    .replace(/ · <a href="https:\/\/news\.example\/prefs\/\{\{token\}\}"[^>]*>Preferences<\/a>/, '')
    .replace('https://news.example/u/{{token}}', '{{unsubscribe_url}}')
    .replace(/<a href="https:\/\/news\.example\/stories\/[^"]*"[^>]*>([^<]*)<\/a>/g, (a: string, text: string) => (++links <= TRACKED_LINKS ? a : text));
}

/** The import body, made as it is read: `email,first_name,last_name,city`, contact i on domain d<i % 100>.bench.test. */
async function* contactsCsv(count: number, progress: (rows: number) => void): AsyncGenerator<string> {
  yield 'email,first_name,last_name,city\n';
  for (let start = 0; start < count; start += ROWS_PER_CHUNK) {
    let chunk = '';
    const end = Math.min(count, start + ROWS_PER_CHUNK);
    for (let i = start; i < end; i++) {
      const r = recipient(i, DOMAINS);
      const [first, last] = r.name.split(' ') as [string, string];
      chunk += `${r.address},${first},${last},${CITIES[i % CITIES.length]}\n`;
    }
    yield chunk;
    progress(end);
  }
}

// ── HTTP ───────────────────────────────────────────────────────────────────────────────────────

async function api<T>(sluice: SluiceHandle, account: Account, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const r = await request(`${sluice.httpUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${account.apiKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await r.body.text();
  if (r.statusCode >= 300) throw new Error(`${method} ${path}: ${r.statusCode} ${text.slice(0, 500)}`);
  return JSON.parse(text) as T;
}

interface CampaignView {
  id: string;
  state: string;
  recipients: { queued: number; skipped: number; pending: number; listQueued: boolean };
}

// ── result ─────────────────────────────────────────────────────────────────────────────────────

const result: Record<string, unknown> = {
  complete: false,
  contacts: CONTACTS,
  import_per_s: null,
  redis_bytes_per_recipient: null,
  render_sign_per_s_per_core: null,
  delivered_per_s: null,
  peak_rss_mb: null,
};

function save(): void {
  const out = {
    ...result,
    settings: { contacts: CONTACTS, domains: DOMAINS, template_bytes: TEMPLATE_BYTES, tracked_links: TRACKED_LINKS, send_timeout_s: SEND_TIMEOUT_MS / 1000, node_args: NODE_ARGS ?? SLUICE_NODE_FLAGS, sluice: TUNING, redis: 'redis-server, AOF appendfsync everysec, unix socket' },
    machine: { nproc: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown', node: process.version, load_average_1m: round(loadavg()[0] ?? 0, 2), date: new Date().toISOString() },
  };
  mkdirSync(dirname(RESULT_FILE), { recursive: true });
  writeFileSync(RESULT_FILE, JSON.stringify(out, null, 2) + '\n');
}

const peaks: Record<string, number> = {};
function notePeak(phase: string, sampler: RssSampler): void {
  peaks[phase] = Math.max(peaks[phase] ?? 0, sampler.peak());
  result['peak_rss_mb'] = round(Math.max(...Object.values(peaks)) / 1024 / 1024, 1);
  result['peak_rss_mb_by_phase'] = Object.fromEntries(Object.entries(peaks).map(([k, v]) => [k, round(v / 1024 / 1024, 1)]));
}

// ── phases ─────────────────────────────────────────────────────────────────────────────────────

async function importPhase(sluice: SluiceHandle, account: Account, rssSampler: RssSampler, client: Redis): Promise<string> {
  const list = await api<{ id: string }>(sluice, account, 'POST', '/v1/lists', { name: 'bench million' });
  const memBefore = await redisMemory(client);
  let generated = 0;
  let lastPrint = Date.now();
  const t0 = Date.now();
  const r = await request(`${sluice.httpUrl}/v1/lists/${list.id}/contacts`, {
    method: 'POST',
    headers: { authorization: `Bearer ${account.apiKey}`, 'content-type': 'text/csv' },
    body: Readable.from(contactsCsv(CONTACTS, (rows) => {
      generated = rows;
      if (Date.now() - lastPrint >= 10_000) {
        lastPrint = Date.now();
        console.log(`  import: ${rows} rows sent, ${round(rows / ((Date.now() - t0) / 1000))}/s, sluice RSS ${mb(rssSampler.last())}`);
      }
    })),
    // The answer comes only once the last row is written: no client-side timeout.
    headersTimeout: 0,
    bodyTimeout: 0,
  });
  const text = await r.body.text();
  const seconds = (Date.now() - t0) / 1000;
  if (r.statusCode !== 200) throw new Error(`import answered ${r.statusCode}: ${text.slice(0, 1000)}`);
  const answer = JSON.parse(text) as { imported: number; created: number; invalid: number; duplicates: number; bytes: number };
  await sleep(1000);
  const memAfter = await redisMemory(client);
  result['import_per_s'] = round(answer.imported / seconds);
  result['import'] = {
    rows_sent: generated,
    imported: answer.imported,
    created: answer.created,
    invalid: answer.invalid,
    duplicates: answer.duplicates,
    bytes: answer.bytes,
    seconds: round(seconds, 1),
    redis_bytes_per_contact: round((memAfter.used - memBefore.used) / Math.max(1, answer.created), 1),
  };
  console.log(`  imported ${answer.imported} (${answer.invalid} invalid) in ${round(seconds, 1)} s: ${result['import_per_s']}/s; Redis ${(result['import'] as Record<string, number>)['redis_bytes_per_contact']} B per contact`);
  return list.id;
}

async function queuePhase(sluice: SluiceHandle, account: Account, listId: string, client: Redis): Promise<{ id: string; queued: number }> {
  const html = campaignHtml();
  await sleep(1000);
  const m0 = await redisMemory(client);
  const t0 = Date.now();
  const created = await api<CampaignView>(sluice, account, 'POST', '/v1/campaigns', {
    name: 'bench campaign',
    from: FROM,
    subject: '{{first_name}}, your weekly digest',
    html,
    tracking: { opens: true, clicks: true },
    tags: ['bench'],
    listId,
    sendAt: 'now',
  });
  let c = created;
  let lastPrint = Date.now();
  while (!c.recipients.listQueued) {
    if (Date.now() - t0 > QUEUE_TIMEOUT_MS) throw new Error(`the list was not queued within ${QUEUE_TIMEOUT_MS / 1000} s (${c.recipients.queued} queued)`);
    await sleep(500);
    c = await api<CampaignView>(sluice, account, 'GET', `/v1/campaigns/${created.id}`);
    if (Date.now() - lastPrint >= 10_000) {
      lastPrint = Date.now();
      console.log(`  queue: ${c.recipients.queued} queued, ${c.recipients.skipped} skipped`);
    }
  }
  const seconds = (Date.now() - t0) / 1000;
  await sleep(1000);
  const m1 = await redisMemory(client);
  const queued = c.recipients.queued;

  // Breakdown: what the campaign's queue LISTs ({d:<dest>}:cq:<id>) take, by MEMORY USAGE (every element).
  let listBytes = 0;
  let listKeys = 0;
  let cursor = '0';
  do {
    const [next, found] = await client.scan(cursor, 'MATCH', `*:cq:${created.id}`, 'COUNT', 1000);
    cursor = next;
    for (const k of found) {
      listBytes += Number(await client.call('MEMORY', 'USAGE', k, 'SAMPLES', '0'));
      listKeys++;
    }
  } while (cursor !== '0');
  const delta = m1.used - m0.used;
  result['queued'] = queued;
  result['redis_bytes_per_recipient'] = round(delta / Math.max(1, queued), 1);
  result['queue'] = {
    html_bytes: Buffer.byteLength(html),
    tracked_links: TRACKED_LINKS,
    campaign: created.id,
    queued,
    skipped: c.recipients.skipped,
    seconds: round(seconds, 1),
    queued_per_s: round(queued / seconds),
    redis_used_before: m0.used,
    redis_used_after: m1.used,
    redis_delta_bytes: delta,
    keys_added: m1.keys - m0.keys,
    breakdown: {
      queue_lists: listKeys,
      queue_list_bytes_per_recipient: round(listBytes / Math.max(1, queued), 2),
      everything_else_bytes: delta - listBytes,
    },
    note: 'INFO used_memory after − before creating the campaign, roles ingress,housekeeping,tracking (nothing is sent). The breakdown is MEMORY USAGE … SAMPLES 0 of the campaign\'s {d:<dest>}:cq:<id> LISTs (contact numbers); the rest is the campaign record, template, link table, per-destination pointers and bookkeeping.',
  };
  console.log(`  queued ${queued} in ${round(seconds, 1)} s; Redis +${delta} B = ${result['redis_bytes_per_recipient']} B per recipient (queue LISTs ${round(listBytes / Math.max(1, queued), 2)} B)`);
  return { id: created.id, queued };
}

async function sendPhase(sluice: SluiceHandle, account: Account, campaign: { id: string; queued: number }, sink: SinkHandle, redisPid: number, rssSampler: RssSampler): Promise<void> {
  const t0 = Date.now();
  const cpu0 = { sluice: cpuTimes(sluice.pid), redis: cpuTimes(redisPid), sink: cpuTimes(sink.child.pid ?? 0) };
  const threads0 = threadCpu(sluice.pid);
  const busy0 = machineBusySeconds();
  let stats = await sink.ask('stats');
  let lastPrint = Date.now();
  let timedOut = false;
  const figures = () => {
    const { deltas, main, pool, poolSeconds } = threadSplit(threads0, threadCpu(sluice.pid), sluice.pid, POOL_THREADS);
    const delivered = stats.distinct;
    const last = stats.lastAt ?? Date.now();
    return { deltas, main, pool, poolSeconds, delivered, seconds: (last - t0) / 1000 };
  };
  const record = (final: boolean) => {
    const f = figures();
    const metrics = final ? lastMetrics : '';
    const sign = histogram(metrics, 'sluice_dkim_sign_duration_seconds');
    const cpu = { sluice: cpuDelta(cpu0.sluice, cpuTimes(sluice.pid)), redis: cpuDelta(cpu0.redis, cpuTimes(redisPid)), sink: cpuDelta(cpu0.sink, cpuTimes(sink.child.pid ?? 0)) };
    const wall = (Date.now() - t0) / 1000;
    result['delivered'] = f.delivered;
    result['delivered_per_s'] = f.seconds > 0 ? round(f.delivered / f.seconds) : null;
    result['render_sign_per_s_per_core'] = f.poolSeconds > 0 ? round(f.delivered / f.poolSeconds) : null;
    result['send'] = {
      complete: final && !timedOut,
      timed_out: timedOut,
      delivered_distinct: f.delivered,
      sink_messages: stats.messages,
      duplicates: stats.duplicates,
      bad_content: stats.badContent,
      sink_connections: stats.connections,
      seconds_ready_to_last_delivery: round(f.seconds, 1),
      delivered_per_s_first_to_last: stats.firstAt && stats.lastAt && stats.lastAt > stats.firstAt ? round(f.delivered / ((stats.lastAt - stats.firstAt) / 1000)) : null,
      cpu_seconds: cpu,
      cpu_percent_of_one_core: { sluice: round((cpu.sluice.total / wall) * 100), redis: round((cpu.redis.total / wall) * 100), sink: round((cpu.sink.total / wall) * 100), machine_busy: round(((machineBusySeconds() - busy0) / wall) * 100) },
      sluice_cpu_ms_per_delivered: f.delivered > 0 ? round((cpu.sluice.total * 1000) / f.delivered, 3) : null,
      render_pool: {
        method: `copies delivered ÷ CPU seconds of the ${POOL_THREADS} busiest non-main threads of the Sluice process (/proc/<pid>/task/<tid>/stat) over the send phase`,
        threads: f.pool,
        cpu_seconds: round(f.poolSeconds, 2),
        ms_per_copy: f.delivered > 0 ? round((f.poolSeconds * 1000) / f.delivered, 3) : null,
      },
      main_thread_cpu_seconds: f.main,
      main_thread_ms_per_copy: f.delivered > 0 ? round((f.main * 1000) / f.delivered, 3) : null,
      thread_cpu_seconds: f.deltas.slice(0, 8),
      ...(final
        ? {
            dkim_sign_mean_ms: sign.count > 0 ? round((sign.sum / sign.count) * 1000, 3) : null,
            dkim_sign_per_s_per_core: sign.sum > 0 ? round(sign.count / sign.sum) : null,
            campaign_stats: campaignStats,
          }
        : {}),
    };
    notePeak('send', rssSampler);
    save();
  };
  let lastMetrics = '';
  let campaignStats: unknown = null;
  for (;;) {
    stats = await sink.ask('stats');
    if (stats.distinct >= campaign.queued) break;
    if (Date.now() - t0 > SEND_TIMEOUT_MS) {
      timedOut = true;
      break;
    }
    if (Date.now() - lastPrint >= 30_000) {
      lastPrint = Date.now();
      record(false);
      console.log(`  send: ${stats.distinct}/${campaign.queued} delivered, ${result['delivered_per_s']}/s, render+sign ${result['render_sign_per_s_per_core']}/s/core, sluice RSS ${mb(rssSampler.last())} (peak ${mb(rssSampler.peak())}), ${stats.duplicates} duplicates`);
    }
    await sleep(1000);
  }
  lastMetrics = await fetchMetrics(sluice.adminUrl);
  // The sink counts a copy at its 250; give the last acknowledgements a moment to reach the campaign's counters.
  await sleep(2000);
  campaignStats = await api(sluice, account, 'GET', `/v1/campaigns/${campaign.id}/stats`).catch((err: unknown) => String(err));
  stats = await sink.ask('stats');
  record(true);
}

// ── main ───────────────────────────────────────────────────────────────────────────────────────

async function main(): Promise<void> {
  buildSluice();
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-campaign-'));
  let redis: EmbeddedRedis | undefined;
  let sink: SinkHandle | undefined;
  let sluice: SluiceHandle | undefined;
  let sampler: RssSampler | undefined;
  let client: Redis | undefined;
  try {
    const account = await makeAccount(dir);
    const trackingKey = join(dir, 'tracking.key');
    writeFileSync(trackingKey, randomBytes(32), { mode: 0o600 });
    const tuning = mergeDeep(TUNING, {
      tracking: { host: '127.0.0.1', port: await freePort(), publicBaseUrl: 'https://t.bench.example', keys: [{ id: 'k1', secretFile: trackingKey, notAfter: null }], signWith: 'k1' },
      feedback: { host: '127.0.0.1', port: await freePort() },
    });
    redis = await startEmbeddedRedis({ binary: 'redis-server', dir: join(dir, 'redis'), appendfsync: 'everysec' });
    client = new Redis({ path: redis.socket, maxRetriesPerRequest: 2 });
    sink = await startSink();
    const start = (roles: string) =>
      startSluiceProcess({ dir, redisUrl: redis!.socket, sinkPort: sink!.port, account, tuning, roles, ...(NODE_ARGS ? { nodeArgs: NODE_ARGS } : {}) });

    console.log(`phase 1: import ${CONTACTS} contacts (roles ingress,housekeeping,tracking)…`);
    sluice = await start('ingress,housekeeping,tracking');
    sampler = sampleRss(sluice.pid);
    const listId = await importPhase(sluice, account, sampler, client);
    notePeak('import', sampler);
    save();

    console.log('phase 2: queue the campaign (no delivery role)…');
    const campaign = await queuePhase(sluice, account, listId, client);
    notePeak('queue', sampler);
    save();
    sampler.stop();
    notePeak('queue', sampler);
    await sluice.stop();
    sluice = undefined;

    console.log('phase 3: send (every role)…');
    sluice = await start('ingress,delivery,housekeeping,tracking,feedback');
    sampler = sampleRss(sluice.pid);
    await sendPhase(sluice, account, campaign, sink, redis.pid, sampler);
    sampler.stop();
    notePeak('send', sampler);
    result['complete'] = Boolean((result['send'] as { complete: boolean }).complete);
    save();
    const send = result['send'] as Record<string, unknown>;
    console.log(
      `\nimport ${result['import_per_s']}/s · Redis ${result['redis_bytes_per_recipient']} B per queued recipient · delivered ${result['delivered']}/${campaign.queued} at ${result['delivered_per_s']}/s ` +
        `(${send['duplicates']} duplicates, ${send['bad_content']} bad) · render+sign ${result['render_sign_per_s_per_core']}/s per core (DKIM alone ${send['dkim_sign_per_s_per_core']}/s) · ` +
        `peak RSS ${result['peak_rss_mb']} MB ${JSON.stringify(result['peak_rss_mb_by_phase'])}`,
    );
    console.log(`wrote ${RESULT_FILE}`);
  } catch (err) {
    result['failure'] = String((err as Error).message ?? err);
    if (sluice) result['sluice_log_tail'] = readFileSync(sluice.logFile, 'utf8').slice(-2000);
    save();
    throw err;
  } finally {
    sampler?.stop();
    await sluice?.stop();
    await sink?.close();
    client?.disconnect();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
