import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import YAML from 'yaml';
import { SMTPServer } from 'smtp-server';
import { merge } from '../../src/config/load.js';
import { makeAccount, type AccountKeys } from './sluice.js';
import { freePort } from './redis.js';

/**
 * Sluice as a real operating-system process, for the tests that only a process can answer: what
 * SIGKILL, SIGTERM and a second signal do, and what `sluice start` does with its embedded Redis.
 *
 *   writeSluiceConfig ─► <dir>/sluice.yaml (free ports, an account with DKIM key files)
 *   startSluiceProcess ─► node --import tsx test/helpers/sluice-child.ts start --config <file>
 *                         stdout = pino JSON lines, parsed; resolves on {"msg":"sluice started"}
 *   startSlowSink ─► an MX that takes its time before answering the end of DATA, so a signal lands
 *                    while transactions are open
 *
 * Every child is spawned detached (its own process group) so cleanup can kill the group: Sluice and
 * an embedded redis-server it left behind.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = join(ROOT, 'test/helpers/sluice-child.ts');
/** tsx compiles the whole import graph on first start; on a busy 2-core machine that takes seconds. */
const START_TIMEOUT_MS = 20_000;

// ── configuration ─────────────────────────────────────────────────────────────

export interface SluiceInstance {
  /** Temporary folder: config file, key files, dataDir (embedded Redis lives in <dir>/var/redis). */
  dir: string;
  configFile: string;
  dataDir: string;
  /** The ports written to the config (the same on every restart, as in a real deployment). */
  ports: { admin: number; smtp: number; http: number };
  account: AccountKeys;
  /** Removes the folder. */
  remove(): void;
}

export interface InstanceOptions {
  /** External Redis (socket path or URL); null = the embedded default. */
  redisUrl: string | null;
  /** Key prefix (fresh per test on a shared Redis). */
  prefix?: string;
  /** Destination domain → 'host:port'. */
  transport: Record<string, string>;
  dkim?: ('rsa' | 'ed25519')[];
  /** Deep-merged over the base settings below. */
  overrides?: Record<string, unknown>;
}

export async function writeSluiceConfig(opts: InstanceOptions): Promise<SluiceInstance> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-proc-'));
  const dataDir = join(dir, 'var');
  const account = await makeAccount(dir, 'acme', 'acme.example', opts.dkim ?? ['ed25519']);
  const ports = { admin: await freePort(), smtp: await freePort(), http: await freePort() };
  const base = {
    roles: ['ingress', 'delivery', 'housekeeping'],
    instance: { hostname: 'sluice.test', dataDir },
    log: { level: 'info' },
    redis: { url: opts.redisUrl, prefix: opts.prefix ?? 'sluice:', scheduleShards: 4 },
    admin: { host: '127.0.0.1', port: ports.admin },
    ingress: { smtp: { host: '127.0.0.1', port: ports.smtp }, http: { host: '127.0.0.1', port: ports.http } },
    delivery: {
      pollInterval: '50ms',
      // A killed process's claims come back after 2 s instead of the production 5 minutes.
      lease: '2s',
      pool: { threads: 1 },
      // Every destination is in the transport map; a stray MX lookup goes to the discard port.
      dns: { servers: ['127.0.0.1:9'], timeout: '1s' },
      transport: opts.transport,
    },
    shaping: { default: { retry: ['300ms', '600ms'] } },
    accounts: [account.account],
  };
  const config = merge(base, opts.overrides ?? {});
  const configFile = join(dir, 'sluice.yaml');
  writeFileSync(configFile, YAML.stringify(config));
  return { dir, configFile, dataDir, ports, account, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

// ── the process ───────────────────────────────────────────────────────────────

export interface LogLine {
  msg?: string;
  level?: string;
  [key: string]: unknown;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SluiceProcess {
  readonly pid: number;
  /** Ports from the "sluice started" log line. */
  readonly ports: { admin: number; smtp?: number; http?: number };
  /** pid of the embedded redis-server, from its log line (null with an external Redis). */
  readonly redisPid: number | null;
  /** JSON log lines so far (stdout). */
  readonly logs: LogLine[];
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Resolves with the first log line (past or future) that matches; rejects on exit or timeout. */
  waitForLog(match: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  signal(sig: NodeJS.Signals): void;
  /** Resolves when the process has exited; rejects after timeoutMs. */
  waitExit(timeoutMs?: number): Promise<Exit>;
  readonly exited: Exit | null;
}

export interface SpawnOptions {
  /** Environment of the child; REDIS_URL and SLUICE_* of the test's own environment never leak in. */
  env?: Record<string, string>;
  args?: string[];
}

const live = new Set<ChildProcess>();
const strayPids = new Set<number>();

/** Spawns `sluice <args>` and collects its output; does not wait for anything. */
export function spawnSluice(opts: SpawnOptions & { args: string[] }): SluiceProcess {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && k !== 'REDIS_URL' && !k.startsWith('SLUICE')) env[k] = v;
  Object.assign(env, opts.env ?? {});
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...opts.args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  live.add(child);
  const logs: LogLine[] = [];
  const watchers: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let stderr = '';
  let partial = '';
  let exited: Exit | null = null;
  const exitWaiters: (() => void)[] = [];
  const state = { ports: { admin: 0 } as SluiceProcess['ports'], redisPid: null as number | null };

  child.stdout?.on('data', (d: Buffer) => {
    partial += d.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const text of lines) {
      if (!text.trim()) continue;
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        line = { msg: text };
      }
      logs.push(line);
      if (line.msg === 'embedded redis-server started') {
        // The line carries the server's pid as `pid`, repeating the key of pino's own `pid` binding
        // (JSON.parse keeps the last, the server's); `redisPid` is preferred should it be renamed.
        const pid = typeof line['redisPid'] === 'number' ? line['redisPid'] : line['pid'];
        if (typeof pid === 'number') {
          state.redisPid = pid;
          strayPids.add(pid);
        }
      }
      for (const w of watchers.filter((w) => w.match(line))) {
        watchers.splice(watchers.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  child.once('exit', (code, signal) => {
    exited = { code, signal };
    live.delete(child);
    for (const w of exitWaiters.splice(0)) w();
  });

  const describe = () => `exit ${JSON.stringify(exited)}; stderr: ${stderr.slice(-2000)}; last log: ${JSON.stringify(logs.slice(-3))}`;
  const onExit = (fn: () => void) => (exited ? fn() : exitWaiters.push(fn));

  return {
    pid: child.pid ?? 0,
    // One object for the process's life: startSluiceProcess fills it from the "sluice started" line.
    get ports() {
      return state.ports;
    },
    get redisPid() {
      return state.redisPid;
    },
    logs,
    stderr: () => stderr,
    get exited() {
      return exited;
    },
    waitForLog(match, timeoutMs = START_TIMEOUT_MS) {
      const seen = logs.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = {
          match,
          resolve: (l: LogLine) => {
            clearTimeout(timer);
            resolve(l);
          },
        };
        const timer = setTimeout(() => {
          watchers.splice(watchers.indexOf(w), 1);
          reject(new Error(`log line not seen within ${timeoutMs} ms; ${describe()}`));
        }, timeoutMs);
        watchers.push(w);
        onExit(() => {
          if (!watchers.includes(w)) return;
          watchers.splice(watchers.indexOf(w), 1);
          clearTimeout(timer);
          reject(new Error(`process exited before the log line; ${describe()}`));
        });
      });
    },
    signal(sig) {
      if (!exited) child.kill(sig);
    },
    waitExit(timeoutMs = START_TIMEOUT_MS) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`process ${child.pid} still running after ${timeoutMs} ms; ${describe()}`)), timeoutMs);
        onExit(() => {
          clearTimeout(timer);
          resolve(exited as Exit);
        });
      });
    },
  };
}

/** `sluice start --config <file>`; resolves once it logged "sluice started" (ports known). */
export async function startSluiceProcess(instance: SluiceInstance, opts: SpawnOptions = {}): Promise<SluiceProcess> {
  const p = spawnSluice({ ...opts, args: ['start', '--config', instance.configFile, ...(opts.args ?? [])] });
  const started = await p.waitForLog((l) => l.msg === 'sluice started');
  Object.assign(p.ports, started['ports'] as object);
  return p;
}

/** Whether a process with this pid exists (a zombie counts until its parent reaps it). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Polls until `pid` is gone; false if it is still there after timeoutMs. */
export async function waitGone(pid: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/**
 * SIGKILLs every Sluice this module spawned, with its process group, and every embedded
 * redis-server one of them reported (a SIGKILLed Sluice leaves its redis-server running). For `after`.
 */
export async function killAllSluiceProcesses(): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const child of live) {
    waits.push(new Promise((r) => child.once('exit', r)));
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
  }
  for (const pid of strayPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    waits.push(waitGone(pid));
  }
  strayPids.clear();
  await Promise.all(waits);
}

// ── talking to it ─────────────────────────────────────────────────────────────

export interface ApiAnswer {
  status: number;
  body: any;
}

/** An HTTP API call with the account's key. */
export async function callApi(port: number, apiKey: string, path: string, body?: unknown): Promise<ApiAnswer> {
  const res = await request(`http://127.0.0.1:${port}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${apiKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? JSON.parse(text) : null };
}

/** GET on the admin port; status and body text. */
export async function adminGet(port: number, path: string): Promise<{ status: number; text: string }> {
  const res = await request(`http://127.0.0.1:${port}${path}`);
  return { status: res.statusCode, text: await res.body.text() };
}

/**
 * Scrapes /metrics every 50 ms until `done` holds of the text, at most `tries` times; returns the last
 * text (the caller asserts). Counters move after the state they count, and the queue gauges may show
 * an earlier read (app/start.ts reuses a slow one for a while).
 */
export async function scrapeUntil(port: number, done: (text: string) => boolean, tries = 200): Promise<string> {
  let text = '';
  for (let i = 0; i < tries; i++) {
    text = (await adminGet(port, '/metrics')).text;
    if (done(text)) break;
    await sleep(50);
  }
  return text;
}

/** Submits single-recipient messages in batches (the API takes up to ingress.http.maxBatch = 1000). */
export async function submitAll(port: number, apiKey: string, recipients: readonly string[], batch = 500): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < recipients.length; i += batch) {
    const messages = recipients.slice(i, i + batch).map((to, j) => ({ from: 'news@acme.example', to, subject: `m ${i + j}`, text: `message ${i + j} for ${to}` }));
    const r = await callApi(port, apiKey, '/v1/messages/batch', { messages });
    if (r.status !== 202 || r.body.accepted !== messages.length) throw new Error(`batch refused: ${r.status} ${JSON.stringify(r.body).slice(0, 500)}`);
    for (const res of r.body.results as { id: string }[]) ids.push(res.id);
  }
  return ids;
}

/**
 * Reads one sample of a Prometheus text exposition: `name{a="b",…} value`. Labels given must all
 * match; samples matching are summed. null when no sample matches.
 */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | null {
  let sum: number | null = null;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const lm of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have.set(lm[1] as string, lm[2] as string);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) sum = (sum ?? 0) + Number(m[3]);
  }
  return sum;
}

// ── a slow MX ─────────────────────────────────────────────────────────────────

export interface SlowSink {
  host: string;
  port: number;
  /** Copies received per recipient address (a copy counts once its data is complete). */
  counts: Map<string, number>;
  /** Copies received in all. */
  total(): number;
  /** Resolves once `n` distinct recipients have a copy; rejects after timeoutMs. */
  waitDistinct(n: number, timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * An MX that commits each message as soon as its data is complete (that is when a real MTA has
 * it) and then waits `delayMs()` before answering 250. test/helpers/smtp-peer.ts's capture peer
 * answers synchronously; this one keeps transactions open long enough for a signal to land inside
 * them, which is the case where a copy is delivered but not yet acknowledged in Redis.
 */
export async function startSlowSink(delayMs: () => number): Promise<SlowSink> {
  const counts = new Map<string, number>();
  let total = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  /** Answers not yet given; cleared on close so a held transaction cannot keep the test alive. */
  const pending = new Set<NodeJS.Timeout>();
  const server = new SMTPServer({
    logger: false,
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    // smtp-server waits 30 s for open sessions on close(); a test sink cuts them at once.
    closeTimeout: 50,
    onData(stream, session, cb) {
      stream.on('data', () => undefined);
      stream.on('end', () => {
        for (const r of session.envelope.rcptTo) counts.set(r.address, (counts.get(r.address) ?? 0) + 1);
        total++;
        for (const w of waiters.filter((w) => counts.size >= w.n)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
        const t = setTimeout(() => {
          pending.delete(t);
          cb();
        }, delayMs());
        pending.add(t);
      });
    },
  });
  server.on('error', () => undefined); // a client killed mid-session is the point of these tests
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.server.address();
  return {
    host: '127.0.0.1',
    port: typeof addr === 'object' && addr ? addr.port : 0,
    counts,
    total: () => total,
    waitDistinct(n, timeoutMs) {
      if (counts.size >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const w = { n, resolve: () => (clearTimeout(timer), resolve()) };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`waited ${timeoutMs} ms for ${n} distinct recipients, have ${counts.size}`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
    close: () => {
      for (const t of pending) clearTimeout(t);
      pending.clear();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Recipients spread over `domains`, each address distinct: r<i>@d<i % domains>.test. */
export function recipients(n: number, domains: number, tag: string): string[] {
  return Array.from({ length: n }, (_, i) => `${tag}${i}@d${i % domains}.test`);
}

export function domainsOf(addresses: readonly string[]): string[] {
  return [...new Set(addresses.map((a) => a.slice(a.indexOf('@') + 1)))];
}
