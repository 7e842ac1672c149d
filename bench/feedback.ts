/**
 * Feedback-loop throughput on this machine, two figures:
 *
 *   classify     every corpus mail (../shared/corpus/bounces/emails) through classifyMessage in a
 *                loop on the main thread — one core — for BENCH_CLASSIFY_SECONDS: messages/s.
 *   smtp ingest  client process ──SMTP (pooled connections)──► inbound MX (startInboundMx) ──► redis-server
 *                real bounces to the VERP addresses of a stored message, counted from the first
 *                send until the MX has stored (before 250), classified and acted on every one
 *                (suppressions, events): messages/s.
 *
 *   npm run bench:feedback
 *   env: BENCH_CLASSIFY_SECONDS (5), BENCH_INGEST (2000 messages), BENCH_INGEST_CONNECTIONS (8)
 *
 * Prints a table and writes bench/results/feedback.json (classify_per_s, smtp_ingest_per_s, …).
 * Target from the feedback issue: ≥ 2,000 classified DSNs/s on one core.
 */
import { fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import nodemailer from 'nodemailer';
import { pino } from 'pino';
import { classifyMessage } from '../src/bounces/index.js';
import { newId } from '../src/core/ids.js';
import { verpAddress } from '../src/core/verp.js';
import { startInboundMx } from '../src/feedback/inbound-mx.js';
import { createRedis } from '../src/redis/client.js';
import { startEmbeddedRedis } from '../src/redis/embedded.js';
import { createKeys } from '../src/redis/keys.js';
import { storeMessage } from '../src/store/messages.js';
import { round } from './proc.js';
import { CORPUS_DIR } from '../test/helpers/corpus.js';

const CORPUS = join(CORPUS_DIR, 'emails');
const RESULTS = fileURLToPath(new URL('./results/', import.meta.url));
const CLASSIFY_SECONDS = Number(process.env['BENCH_CLASSIFY_SECONDS'] ?? 5);
const INGEST = Number(process.env['BENCH_INGEST'] ?? 2_000);
/** 8 connections: a busy remote MTA delivering its bounce backlog, not a flood; the MX allows 100. */
const CONNECTIONS = Number(process.env['BENCH_INGEST_CONNECTIONS'] ?? 8);
const BOUNCE_DOMAIN = 'bounce.bench';
/** Bound on the ingest phase; on expiry the figure covers what was processed. */
const INGEST_TIMEOUT_MS = 180_000;

function corpus(): { name: string; raw: Buffer }[] {
  return readdirSync(CORPUS).filter((f) => f.endsWith('.eml')).sort().map((name) => ({ name, raw: readFileSync(join(CORPUS, name)) }));
}

// ── client process: sends the bounces ────────────────────────────────────────

interface ClientJob { port: number; msgId: string; count: number; connections: number }
type ClientMsg = { type: 'ready' } | { type: 'done'; sent: number; failed: number; firstError: string };

async function clientMain(): Promise<void> {
  const mails = corpus();
  const jobReceived = new Promise<ClientJob>((resolve) => process.once('message', (m) => resolve(m as ClientJob)));
  process.send!({ type: 'ready' } satisfies ClientMsg);
  const job = await jobReceived;
  const transport = nodemailer.createTransport({
    host: '127.0.0.1', port: job.port, secure: false, ignoreTLS: true,
    pool: true, maxConnections: job.connections, maxMessages: Infinity,
  });
  let sent = 0;
  let failed = 0;
  let firstError = '';
  let next = 0;
  const one = async () => {
    while (next < job.count) {
      const i = next++;
      const mail = mails[i % mails.length]!;
      try {
        await transport.sendMail({ envelope: { from: '', to: [verpAddress(job.msgId, i, BOUNCE_DOMAIN)] }, raw: mail.raw });
        sent++;
      } catch (err) {
        failed++;
        firstError ||= String((err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: job.connections }, one));
  transport.close();
  process.send!({ type: 'done', sent, failed, firstError } satisfies ClientMsg, () => process.exit(0));
}

// ── main process ──────────────────────────────────────────────────────────────

async function benchClassify(mails: { raw: Buffer }[]): Promise<{ messages: number; records: number; seconds: number; cpuSeconds: number }> {
  for (const m of mails) await classifyMessage(m.raw); // warm-up: JIT and regex compilation
  let messages = 0;
  let records = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const until = start + CLASSIFY_SECONDS * 1000;
  while (performance.now() < until) {
    for (const m of mails) {
      records += (await classifyMessage(m.raw)).length;
      messages++;
    }
  }
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { messages, records, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

async function benchIngest(): Promise<{ sent: number; failed: number; processed: number; seconds: number; clientSeconds: number; firstError: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-feedback-'));
  const server = await startEmbeddedRedis({ binary: 'redis-server', dir, appendfsync: 'everysec' });
  const redis = createRedis({ url: server.socket, name: 'bench-feedback' });
  const keys = createKeys('bench:');
  let processed = 0;
  const mx = await startInboundMx(
    { redis, keys, logger: pino({ level: 'silent' }), metrics: { outcome: () => void processed++ } },
    { host: '127.0.0.1', port: 0, bounceDomains: [BOUNCE_DOMAIN], fblAddresses: [], maxMessageSize: 10 * 1024 * 1024, rawRetentionMs: 3_600_000 },
  );
  const child = fork(fileURLToPath(import.meta.url), ['--client'], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  try {
    // One sent message with a recipient per bounce, so every bounce matches a copy and is acted on.
    const msgId = newId();
    const rcpts = Array.from({ length: INGEST }, (_, i) => ({ address: `r${i}@rcpt${i % 50}.bench`, domain: `rcpt${i % 50}.bench` }));
    await storeMessage(redis, keys, {
      id: msgId, account: 'bench', source: 'http', kind: 'raw', from: 'news@sender.bench', fromDomain: 'sender.bench',
      rcpts, acceptedAt: Date.now(), tags: [], metadata: {}, body: 'Subject: hi\r\n\r\nhello\r\n',
    });
    let ready!: () => void;
    const isReady = new Promise<void>((resolve) => { ready = resolve; });
    const done = new Promise<ClientMsg & { type: 'done' }>((resolve, reject) => {
      child.on('message', (m: ClientMsg) => { if (m.type === 'ready') ready(); else resolve(m); });
      child.on('exit', (code) => reject(new Error(`client exited (${code}) before reporting`)));
    });
    await isReady;
    const start = performance.now();
    child.send({ port: mx.port, msgId, count: INGEST, connections: CONNECTIONS } satisfies ClientJob);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('ingest timed out')), INGEST_TIMEOUT_MS); });
    const result = await Promise.race([done, timeout]);
    const clientSeconds = (performance.now() - start) / 1000;
    await Promise.race([mx.idle(), timeout]);
    clearTimeout(timer);
    return { sent: result.sent, failed: result.failed, processed, seconds: (performance.now() - start) / 1000, clientSeconds, firstError: result.firstError };
  } finally {
    if (child.exitCode === null) child.kill();
    await mx.close();
    await redis.quit().catch(() => redis.disconnect());
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const mails = corpus();
  const load = loadavg()[0] ?? 0;
  console.log(`corpus: ${mails.length} mails; ${cpus().length} CPUs, load average ${load.toFixed(2)} (the machine is shared: figures are noisy)`);
  const c = await benchClassify(mails);
  const classifyPerS = c.messages / c.seconds;
  const ingest = await benchIngest();
  const ingestPerS = ingest.processed / ingest.seconds;

  const rows: [string, string, string][] = [
    ['classify (1 core)', `${round(classifyPerS)} msg/s`, `${c.messages} mails in ${c.seconds.toFixed(1)} s, ${round(c.records / c.seconds)} records/s, CPU ${(c.cpuSeconds / c.seconds).toFixed(2)} cores; target ≥ 2000 msg/s`],
    ['smtp ingest', `${round(ingestPerS)} msg/s`, `${ingest.processed}/${INGEST} stored+classified+acted on in ${ingest.seconds.toFixed(1)} s over ${CONNECTIONS} connections; client done at ${round(ingest.sent / ingest.clientSeconds)} msg/s; ${ingest.failed} refused`],
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  for (const [a, b, note] of rows) console.log(`${a.padEnd(w0)}  ${b.padStart(w1)}  ${note}`);
  if (ingest.firstError) console.log(`first SMTP error: ${ingest.firstError}`);

  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, 'feedback.json'), JSON.stringify({
    date: new Date().toISOString(),
    cpus: cpus().length,
    load_average_1m: round(load, 2),
    corpus_mails: mails.length,
    classify_per_s: round(classifyPerS),
    classify_records_per_s: round(c.records / c.seconds),
    classify_cpu_cores: round(c.cpuSeconds / c.seconds, 2),
    smtp_ingest_per_s: round(ingestPerS),
    smtp_ingest: { messages: INGEST, connections: CONNECTIONS, processed: ingest.processed, refused: ingest.failed, seconds: round(ingest.seconds, 2), client_accept_per_s: round(ingest.sent / ingest.clientSeconds) },
  }, null, 2) + '\n');
  console.log(`wrote ${join(RESULTS, 'feedback.json')}`);
}

if (process.argv.includes('--client')) {
  await clientMain();
} else {
  await main();
}
