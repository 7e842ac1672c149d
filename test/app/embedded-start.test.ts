import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSluice } from '../../src/app/start.js';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import { createRedis } from '../../src/redis/client.js';
import { startEmbeddedRedis } from '../../src/redis/embedded.js';
import { isSluiceError } from '../../src/core/errors.js';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

/**
 * startSluice with its embedded redis-server dying before Sluice is ready: the start ends with why,
 * instead of waiting for ever on a Redis command that its connection retries.
 */
const test = suite('app/embedded-start');

interface LogLine {
  msg?: string;
  level?: string;
}

/** A logger whose lines are collected, and a wait for one of them. */
function capture(): { logger: ReturnType<typeof createLogger>; lines: LogLine[]; waitFor(msg: string): Promise<void> } {
  const lines: LogLine[] = [];
  const waiting: { msg: string; resolve: () => void }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const text of chunk.toString().split('\n').filter(Boolean)) {
        const line = JSON.parse(text) as LogLine;
        lines.push(line);
        for (const w of waiting) if (line.msg === w.msg) w.resolve();
      }
      done();
    },
  });
  return {
    logger: createLogger('info', stream),
    lines,
    waitFor: (msg) => (lines.some((l) => l.msg === msg) ? Promise.resolve() : new Promise((resolve) => waiting.push({ msg, resolve }))),
  };
}

test('the adopted embedded server dies while the start waits on it: the start fails naming the death, and stops what it started', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'sluice-app-emb-'));
  const dir = join(dataDir, 'redis');
  // A server left by a Sluice that died, which takes no writes for now (CLIENT PAUSE WRITE): the
  // start adopts it, reads its version, then waits on its first write (the shared secret).
  const orphan = await startEmbeddedRedis({ binary: 'redis-server', dir });
  const c = createRedis({ url: orphan.socket, name: 'sluice-test' });
  await c.call('CLIENT', 'PAUSE', '600000', 'WRITE');
  c.disconnect();
  writeFileSync(join(dir, 'owner.json'), JSON.stringify({ sluicePid: spawnSync('true').pid, redisPid: orphan.pid }));
  const log = capture();
  const config = loadConfig({ env: {}, overrides: { roles: ['housekeeping'], instance: { dataDir }, admin: { host: '127.0.0.1', port: 0 } } });
  // A bound so that the hang this test is about fails it rather than the run.
  let bound: NodeJS.Timeout | undefined;
  const hung = new Promise<string>((resolve) => (bound = setTimeout(() => resolve('still starting 20 s after the server died'), 20_000)));
  try {
    const start = startSluice(config, { logger: log.logger }).then(async (app) => {
      await app.stop(1000);
      return 'started';
    }, (err: unknown) => err);
    await log.waitFor('redis connected');
    process.kill(orphan.pid, 'SIGKILL');
    const outcome = await Promise.race([start, hung]);
    assert.ok(isSluiceError(outcome, 'SLUICE_REDIS_UNAVAILABLE'), `start ended with: ${String(outcome)}\n${log.lines.map((l) => JSON.stringify(l)).join('\n')}`);
    assert.match((outcome as Error).message, `the embedded redis-server (pid ${orphan.pid}) exited during start-up (gone`);
    assert.ok(log.lines.some((l) => l.level === 'error' && l.msg?.includes('exited during start-up')), 'logged at error level');
    assert.not.ok(log.lines.some((l) => l.msg === 'sluice started'));
  } finally {
    clearTimeout(bound);
    await orphan.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test.run();
