/**
 * Runs the `sluice` program for the CLI tests, two ways:
 *   sluice()      — main(argv, io) in this process, with in-memory out/err and env/stdin we control;
 *   spawnSluice() — a real child process of the built-less entry (node --import tsx
 *                   test/helpers/sluice-child.ts), for exit codes, real stdin and signals.
 * startCliRedis() gives the commands that read and change Redis a real one and a config file for it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { main } from '../../src/cli/main.js';
import { merge } from '../../src/config/load.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = fileURLToPath(new URL('../helpers/sluice-child.ts', import.meta.url));

export interface CliRun {
  code: number;
  out: string;
  err: string;
}

function collect(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

/** main() in-process. `stdin` defaults to an empty stream, `env` to an empty environment. */
export async function sluice(argv: string[], opts: { env?: NodeJS.ProcessEnv; stdin?: string | Readable } = {}): Promise<CliRun> {
  const out = collect();
  const err = collect();
  const stdin = opts.stdin instanceof Readable ? opts.stdin : Readable.from(opts.stdin === undefined ? [] : [Buffer.from(opts.stdin)]);
  const code = await main(argv, { out: out.stream, err: err.stream, env: opts.env ?? {}, stdin });
  return { code, out: out.text(), err: err.text() };
}

// Node + tsx start-up is ~1 s on this machine; 60 s means the process is stuck, not slow.
const SPAWN_TIMEOUT_MS = 60_000;

/** A child process of the program, with its output so far and a way to wait for a line. */
export interface SluiceProcess {
  child: ChildProcess;
  out(): string;
  err(): string;
  /** Resolves with the first match of `re` in stdout (rejects after timeoutMs or on exit). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** Resolves with the exit code (signal deaths as 128 + n); kills the child after timeoutMs. */
  exited(timeoutMs?: number): Promise<number>;
}

export function startSluice(argv: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {}): SluiceProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...argv], {
    cwd: opts.cwd ?? ROOT,
    // PATH and HOME only: the program must not depend on the test's own environment.
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const watchers = new Set<() => void>();
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    for (const w of watchers) w();
  });
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  child.stdin!.end(opts.input ?? '');
  let closed = false;
  // 'close', not 'exit': it comes after stdout and stderr are drained, so no output is missed.
  const exit = new Promise<number>((resolve) => {
    child.once('close', (code, signal) => {
      closed = true;
      for (const w of watchers) w();
      resolve(code ?? 128 + (signal === 'SIGKILL' ? 9 : signal === 'SIGTERM' ? 15 : 2));
    });
  });
  return {
    child,
    out: () => out,
    err: () => err,
    waitFor(re, timeoutMs = SPAWN_TIMEOUT_MS) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => done(new Error(`no ${re} in stdout after ${timeoutMs} ms; stdout: ${out}\nstderr: ${err}`)), timeoutMs);
        const check = () => {
          const m = re.exec(out);
          if (m) done(null, m);
          else if (closed) done(new Error(`exited (${child.exitCode ?? child.signalCode}) before ${re}; stdout: ${out}\nstderr: ${err}`));
        };
        const done = (e: Error | null, m?: RegExpExecArray) => {
          clearTimeout(timer);
          watchers.delete(check);
          if (e) reject(e);
          else resolve(m as RegExpExecArray);
        };
        watchers.add(check);
        check();
      });
    },
    exited(timeoutMs = SPAWN_TIMEOUT_MS) {
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      return exit.finally(() => clearTimeout(timer));
    },
  };
}

/** Runs the program to its end as a child process. */
export async function spawnSluice(argv: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {}): Promise<CliRun> {
  const p = startSluice(argv, opts);
  const code = await p.exited();
  return { code, out: p.out(), err: p.err() };
}

/** A real Redis under a fresh key prefix, and a config file in a temporary folder pointing `sluice` at it. */
/** A config file in `dir` for the CLI to reach a Sluice fixture's Redis: its URL, key prefix and schedule shards. */
export function cliConfigFor(dir: string, redis: { url: string }, config: { redis: { prefix: string; scheduleShards: number } }, name = 'sluice.yaml'): string {
  const file = join(dir, name);
  writeFileSync(file, `redis:\n  url: ${JSON.stringify(redis.url)}\n  prefix: '${config.redis.prefix}'\n  scheduleShards: ${config.redis.scheduleShards}\n`);
  return file;
}

export interface CliRedis {
  redis: TestRedis;
  client: RedisClient;
  keys: Keys;
  /** The temporary folder; a test may put its input files there too. */
  dir: string;
  /** The config file, for `--config`. */
  cfg: string;
  /** Stops Redis and removes the folder. */
  stop(): Promise<void>;
}

/** `settings` are merged over `redis: { url, prefix }` in the config file. */
/** Accounts for commands that write an account's data (they refuse one not in the configuration). */
export function cliAccounts(...ids: string[]): Record<string, unknown>[] {
  return ids.map((id) => ({ id, domains: [{ domain: `${id}.example`, dkim: [] }], apiKeys: [] }));
}

export async function startCliRedis(settings: Record<string, unknown> = {}): Promise<CliRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-cli-'));
  const redis = await startRedis();
  const { prefix, keys } = redis.fresh();
  const cfg = join(dir, 'sluice.yaml');
  writeFileSync(cfg, YAML.stringify(merge({ redis: { url: redis.url, prefix } }, settings)));
  return {
    redis, client: redis.client(), keys, dir, cfg,
    async stop() {
      await redis.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
