import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbeddedRedis } from '../../src/redis/embedded.js';
import { isSluiceError } from '../../src/core/errors.js';
import { startLoadingOrphan } from '../helpers/redis.js';

/**
 * The start lock of a data folder across processes: starts in several processes at once run one
 * redis-server, and a start that dies holding the lock leaves nothing behind that blocks the next.
 */
const test = suite('redis/embedded-lock');

type Answer = { ready?: true; started?: number; refused?: string; message?: string; stopped?: true };

/** A process running test/helpers/embedded-start-child.ts, and its answers one by one. */
interface Starter {
  child: ChildProcess;
  send(cmd: object): void;
  next(): Promise<Answer>;
}

function starter(): Starter {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('../helpers/embedded-start-child.ts', import.meta.url))], { stdio: ['pipe', 'pipe', 'inherit'] });
  const answers: Answer[] = [];
  const waiting: ((a: Answer) => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const a = JSON.parse(line) as Answer;
    const w = waiting.shift();
    if (w) w(a);
    else answers.push(a);
  });
  return {
    child,
    send: (cmd) => child.stdin!.write(`${JSON.stringify(cmd)}\n`),
    next: () => {
      const a = answers.shift();
      return a ? Promise.resolve(a) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

const ownerPid = (d: string) => {
  try {
    return (JSON.parse(readFileSync(join(d, 'owner.json'), 'utf8')) as { sluicePid: number }).sluicePid;
  } catch {
    return 0; // not written yet, or being written
  }
};

test('starts in several processes at once on a folder with a stale lock: in every round one server runs, the others are refused', async () => {
  // 4 processes on a 2-core machine: more contenders than cores, so some run truly at once.
  const starters = Array.from({ length: 4 }, starter);
  const dirs: string[] = [];
  try {
    for (const s of starters) assert.equal(await s.next(), { ready: true });
    for (let round = 0; round < 20; round++) {
      const d = mkdtempSync(join(tmpdir(), 'sluice-emb-lock-race-'));
      dirs.push(d);
      // A lock left by a start that died (Linux ignores it now; systems without the socket lock
      // take it over). Before: starts took it over at once, each removing the lock another had just
      // linked, and each started a server on the one AOF. Unreadable content counts as stale; its
      // size, 64 MB of nothing (sparse: no disk used), only widens the window between reading the
      // stale lock and removing it, so that the old takeover failed within a
      // few rounds in every run tried (4 of 4), rather than in some runs only.
      writeFileSync(join(d, 'start.lock'), '');
      truncateSync(join(d, 'start.lock'), 64 * 1024 * 1024);
      for (const s of starters) s.send({ start: d });
      const answers = await Promise.all(starters.map((s) => s.next()));
      const up = answers.filter((a) => a.started !== undefined);
      const refused = answers.filter((a) => a.refused !== undefined);
      const stopped = await Promise.all(starters.map((s) => (s.send({ stop: true }), s.next())));
      assert.ok(stopped.every((a) => a.stopped), JSON.stringify(stopped));
      assert.is(up.length, 1, `round ${round}: exactly one server started: ${JSON.stringify(answers)}`);
      assert.is(refused.length, starters.length - 1);
      for (const r of refused) {
        assert.is(r.refused, 'SLUICE_REDIS_UNAVAILABLE', r.message);
        // Refused by the lock, which names the start holding it, or once that start's server answers.
        assert.ok(/another Sluice \(pid \d+\) is starting the redis-server of|another redis-server already serves/.test(r.message ?? ''), r.message);
      }
    }
  } finally {
    for (const s of starters) s.child.kill('SIGKILL');
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
});

test('a start killed (SIGKILL) while it holds the lock leaves nothing that blocks the next start', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-emb-lock-kill-'));
  // A server left running and still loading (~100 s): the start in the child adopts it and waits
  // for it with the lock held.
  const orphan = await startLoadingOrphan(d);
  const s = starter();
  try {
    assert.equal(await s.next(), { ready: true });
    s.send({ start: d });
    const pid = s.child.pid as number;
    // Adopted (owner.json names the child) and still waiting: the lock is the child's.
    while (ownerPid(d) !== pid) await new Promise((r) => setTimeout(r, 10));
    try {
      await startEmbeddedRedis({ binary: 'redis-server', dir: d });
      assert.unreachable('a second start went on while the child held the lock');
    } catch (err) {
      assert.ok(isSluiceError(err, 'SLUICE_REDIS_UNAVAILABLE'), String(err));
      assert.match((err as Error).message, `another Sluice (pid ${pid}) is starting the redis-server of ${d}`);
    }
    s.child.kill('SIGKILL');
    await new Promise((resolve) => s.child.once('exit', resolve));
    // Before: start.lock stayed, naming the dead child, for the next start to judge stale or not.
    assert.not.ok(existsSync(join(d, 'start.lock')), 'no lock file is left behind');
    // The next start takes the lock at once: it gets to the server (adopts it again, as it is
    // still loading), and the signal it was given up with stops that server.
    const giveUp = new AbortController();
    const next = startEmbeddedRedis({ binary: 'redis-server', dir: d, signal: giveUp.signal });
    giveUp.abort();
    const err = await next.then(async (srv) => (await srv.stop(), 'a running server'), (e: unknown) => e);
    assert.ok(isSluiceError(err, 'SLUICE_SHUTTING_DOWN'), `start ended with ${String(err)}`);
    assert.match((err as Error).message, 'before the adopted redis-server');
  } finally {
    s.child.kill('SIGKILL');
    orphan.kill();
    rmSync(d, { recursive: true, force: true });
  }
});

test.run();
