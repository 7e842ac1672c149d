/**
 * What the process-level benchmarks (bench/e2e.ts, bench/campaign.ts) share: building Sluice, an
 * account with DKIM keys, the SMTP sink and a Sluice process started as in production
 * (`node bin/sluice.js start`), Redis and Prometheus readings, and sampling of the Sluice process's
 * resident memory and per-thread CPU from /proc.
 *
 *   bench script ──spawn──► node bin/sluice.js start --config <dir>/sluice.yaml [--roles …]
 *        │ fork + IPC                        │ unix socket           │ SMTP (transport '*')
 *        ▼                                   ▼                       ▼
 *     sink.ts  ◄─────────────────────────── redis-server          sink.ts
 */
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { request } from 'undici';
import { generateApiKey, hashSecret } from '../src/accounts/secrets.js';
import { merge } from '../src/config/load.js';
import { freePort } from '../test/helpers/redis.js';
import type { SinkStats } from './sink.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BENCH = join(ROOT, 'bench');

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** How many times a second `fn` runs on this thread, called back to back for `ms` milliseconds. */
export function opsPerSecond(fn: () => unknown, ms: number): number {
  let n = 0;
  const start = performance.now();
  const until = start + ms;
  while (performance.now() < until) {
    fn();
    n++;
  }
  return Math.round((n * 1000) / (performance.now() - start));
}

/**
 * This machine's signing speed on one core (node:crypto, as the render workers sign): the hosts this
 * VM lands on differ — RSA-2048 ran 2,300–2,700 signatures/s on a CPU with AVX-512 IFMA and ~1,300 on
 * one without — so figures from different runs compare only alongside it.
 */
export function signingSpeed(): { rsa2048_signs_per_s_one_core: number; ed25519_signs_per_s_one_core: number } {
  return { rsa2048_signs_per_s_one_core: signRate('rsa', 500), ed25519_signs_per_s_one_core: signRate('ed25519', 500) };
}

/** Signatures of 1 KB per second on this thread, over `ms` milliseconds (a fresh key, warmed up). */
export function signRate(type: 'rsa' | 'ed25519', ms: number): number {
  const data = Buffer.alloc(1024, 'h');
  const { privateKey } = type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519');
  const algorithm = type === 'rsa' ? 'sha256' : null;
  for (let i = 0; i < 20; i++) sign(algorithm, data, privateKey);
  return opsPerSecond(() => sign(algorithm, data, privateKey), ms);
}

export function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MB`;
}

/** `npm run build` unless BENCH_SKIP_BUILD=1: the benchmarks run the built bin/sluice.js. */
export function buildSluice(): void {
  if (process.env['BENCH_SKIP_BUILD'] === '1') return;
  console.log('building (npm run build)…');
  const b = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  if (b.status !== 0) throw new Error('npm run build failed');
}

/** Config trees merged as the config loader merges the file over its defaults (src/config/load.ts). */
export function mergeDeep(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  return merge(a, b) as Record<string, unknown>;
}

// ── account ─────────────────────────────────────────────────────────────────────────────────────

export interface Account {
  apiKey: string;
  dir: string;
  /** The account's entry of the `accounts` config key. */
  config: Record<string, unknown>;
}

/** One account owning two sending domains: rsa.bench.example (RSA-2048) and ed.bench.example (Ed25519). */
export async function makeAccount(dir: string): Promise<Account> {
  const pem = (alg: 'rsa' | 'ed25519') => {
    const { privateKey } = alg === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519');
    return privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  };
  const rsaFile = join(dir, 'rsa.pem');
  const edFile = join(dir, 'ed25519.pem');
  writeFileSync(rsaFile, pem('rsa'), { mode: 0o600 });
  writeFileSync(edFile, pem('ed25519'), { mode: 0o600 });
  const apiKey = generateApiKey('bench');
  return {
    apiKey,
    dir,
    config: {
      id: 'bench',
      domains: [
        { domain: 'rsa.bench.example', dkim: [{ selector: 'r2048', algorithm: 'rsa', keyFile: rsaFile }] },
        { domain: 'ed.bench.example', dkim: [{ selector: 'e1', algorithm: 'ed25519', keyFile: edFile }] },
      ],
      apiKeys: [await hashSecret(apiKey)],
      smtpUsers: [],
      dailyQuota: null,
      rateLimit: { perSecond: null, perMinute: null, perHour: null },
    },
  };
}

// ── child processes ────────────────────────────────────────────────────────────────────────────

/** Forks bench/<file> (TypeScript, through tsx) with an IPC channel. */
export function forkTs(file: string): ChildProcess {
  return fork(join(BENCH, file), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

/** The next IPC message matching `pred`, or a rejection at the timeout or if the child exits first. */
export function nextMessage<T>(child: ChildProcess, pred: (m: any) => boolean, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: unknown) => {
      if (!pred(m)) return;
      done();
      resolve(m as T);
    };
    const onExit = (code: number | null) => {
      done();
      reject(new Error(`child ${child.pid} exited (${code}) before answering`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`child ${child.pid} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

/** Resolves when the child has exited; SIGKILLs it after `timeoutMs`. */
export function exited(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

// ── the SMTP sink (bench/sink.ts) ──────────────────────────────────────────────────────────────

export interface SinkHandle {
  child: ChildProcess;
  port: number;
  ask(type: 'stats'): Promise<SinkStats>;
  waitFor(expected: number, timeoutMs: number): Promise<SinkStats>;
  /** Forgets every recipient and count so far (after a warm-up); answers the stats it had. */
  reset(): Promise<SinkStats>;
  close(): Promise<void>;
}

export async function startSink(): Promise<SinkHandle> {
  const child = forkTs('sink.ts');
  const { port } = await nextMessage<{ port: number }>(child, (m) => m?.type === 'listening', 20_000);
  let seq = 0;
  const call = (msg: Record<string, unknown>, timeoutMs: number) => {
    const id = ++seq;
    const p = nextMessage<SinkStats>(child, (m) => m?.type === 'stats' && m.id === id, timeoutMs);
    child.send({ ...msg, id });
    return p;
  };
  return {
    child,
    port,
    ask: () => call({ type: 'stats' }, 10_000),
    waitFor: (expected, timeoutMs) => call({ type: 'wait', expected, timeoutMs }, timeoutMs + 10_000),
    reset: () => call({ type: 'reset' }, 10_000),
    async close() {
      if (child.connected) child.send({ type: 'close' });
      await exited(child, 5_000);
    },
  };
}

// ── a Sluice process ───────────────────────────────────────────────────────────────────────────

export interface SluiceHandle {
  child: ChildProcess;
  pid: number;
  httpUrl: string;
  adminUrl: string;
  logFile: string;
  stop(): Promise<void>;
}

export interface SluiceProcessOptions {
  dir: string;
  redisUrl: string;
  /** Where transport '*' sends all mail. */
  sinkPort: number;
  account: Account;
  /** Config keys of the run (tuning); the connection keys below are merged over them. */
  tuning: Record<string, unknown>;
  roles?: string;
  cpuProfDir?: string;
  /** Node flags before bin/sluice.js; default SLUICE_NODE_FLAGS, as `npm start` and the Docker image run it. */
  nodeArgs?: string[];
}

/**
 * The node flags Sluice is run with (package.json `start`, docker/Dockerfile, bin/sluice.js's shebang):
 * a 4 MB young-generation semi-space. Sluice's garbage is short-lived copies; V8's default (16 MB,
 * ~100 MB committed on the main thread) bought no throughput and most of the RSS over 300 MB in
 * bench/campaign.ts. One V8 helper thread instead of Node's 4 (README "CPU"): on 2 cores they
 * competed with the main thread for a core.
 */
export const SLUICE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--initial-old-space-size=32', '--v8-pool-size=1'];

/**
 * `node bin/sluice.js start --config FILE [--roles …]`, waiting for /readyz. The log goes to <dir>/sluice.log.
 * A port picked free can be taken before Sluice binds it (an outbound connection's ephemeral port, on
 * a machine sending thousands of messages): such a start is tried again on fresh ports.
 */
export async function startSluiceProcess(opts: SluiceProcessOptions): Promise<SluiceHandle> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startSluiceOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !/EADDRINUSE/.test((err as Error).message)) throw err;
    }
  }
}

async function startSluiceOnce(opts: SluiceProcessOptions): Promise<SluiceHandle> {
  const [httpPort, adminPort] = [await freePort(), await freePort()];
  const config = mergeDeep(opts.tuning, {
    instance: { hostname: 'sluice.bench.test', dataDir: opts.dir },
    redis: { url: opts.redisUrl },
    admin: { host: '127.0.0.1', port: adminPort },
    ingress: { smtp: { enabled: false }, http: { host: '127.0.0.1', port: httpPort } },
    delivery: { transport: { '*': `127.0.0.1:${opts.sinkPort}` }, tls: { opportunistic: false } },
    accounts: [opts.account.config],
  });
  const configFile = join(opts.dir, 'sluice.yaml');
  writeFileSync(configFile, JSON.stringify(config, null, 2)); // JSON is YAML
  const logFile = join(opts.dir, 'sluice.log');
  const fd = openSync(logFile, 'a');
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k === 'REDIS_URL' || k === 'SLUICE_CONFIG' || k === 'SLUICE_LOG_LEVEL' || k.startsWith('SLUICE__')) delete env[k];
  const args = [
    ...(opts.nodeArgs ?? (process.env['BENCH_NODE_FLAGS'] !== undefined ? process.env['BENCH_NODE_FLAGS'].split(' ').filter(Boolean) : SLUICE_NODE_FLAGS)),
    ...(opts.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfDir}`] : []),
    join(ROOT, 'bin/sluice.js'), 'start', '--config', configFile,
    ...(opts.roles ? ['--roles', opts.roles] : []),
  ];
  const child = spawn(process.execPath, args, { cwd: opts.dir, env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sluice exited (${child.exitCode}) at start:\n${readFileSync(logFile, 'utf8').slice(-2000)}`);
    const ok = await request(`${adminUrl}/readyz`).then(
      async (r) => (await r.body.text(), r.statusCode === 200),
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`sluice not ready after 30 s:\n${readFileSync(logFile, 'utf8').slice(-2000)}`);
    }
    await sleep(100);
  }
  return {
    child,
    pid: child.pid ?? 0,
    httpUrl: `http://127.0.0.1:${httpPort}`,
    adminUrl,
    logFile,
    async stop() {
      child.kill('SIGTERM');
      // Sluice's own grace is 30 s; with nothing in flight it stops in well under a second.
      await exited(child, 40_000);
    },
  };
}

// ── readings ───────────────────────────────────────────────────────────────────────────────────

export async function redisMemory(client: Redis): Promise<{ used: number; peak: number; keys: number }> {
  const info = await client.info('memory');
  const num = (k: string) => Number(new RegExp(`^${k}:(\\d+)`, 'm').exec(info)?.[1] ?? 0);
  return { used: num('used_memory'), peak: num('used_memory_peak'), keys: await client.dbsize() };
}

/** The Prometheus text of a Sluice process's /metrics ('' when it does not answer). */
export function fetchMetrics(adminUrl: string): Promise<string> {
  return request(`${adminUrl}/metrics`).then((r) => r.body.text()).catch(() => '');
}

/** Sum and count of a Prometheus histogram (all label sets), from /metrics text. */
export function histogram(text: string, name: string): { sum: number; count: number } {
  let sum = 0;
  let count = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}_sum`)) sum += Number(line.split(' ').pop());
    else if (line.startsWith(`${name}_count`)) count += Number(line.split(' ').pop());
  }
  return { sum, count };
}

/** A counter or gauge summed over its label sets, from /metrics text. */
export function counter(text: string, name: string): number {
  return text.split('\n').filter((l) => (l.startsWith(`${name} `) || l.startsWith(`${name}{`))).reduce((a, l) => a + Number(l.split(' ').pop()), 0);
}

/** Resident memory now (VmRSS) and its high-water mark (VmHWM), in bytes; zeros once the process is gone. */
export function rss(pid: number): { now: number; hwm: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { now: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return { now: 0, hwm: 0 };
  }
}

export interface RssSampler {
  /** The highest resident size seen so far: samples and the kernel's high-water mark (VmHWM), bytes. */
  peak(): number;
  /** The last sample, bytes. */
  last(): number;
  /** Stops sampling (reads VmHWM once more first: call before the process exits). */
  stop(): number;
}

/**
 * Samples a process's resident memory every `intervalMs`. The kernel's VmHWM is exact for one
 * process; the samples add when it happened (`onSample`), e.g. to tell import from send.
 */
export function sampleRss(pid: number, intervalMs = 250, onSample?: (bytes: number) => void): RssSampler {
  let peak = 0;
  let last = 0;
  const read = () => {
    const r = rss(pid);
    if (r.now === 0) return;
    last = r.now;
    peak = Math.max(peak, r.now, r.hwm);
    onSample?.(r.now);
  };
  read();
  const timer = setInterval(read, intervalMs);
  timer.unref();
  return {
    peak: () => peak,
    last: () => last,
    stop() {
      read();
      clearInterval(timer);
      return peak;
    },
  };
}
