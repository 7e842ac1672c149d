import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, mkdirSync, rmSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EMBEDDED_AOF_REWRITE_MIN_SIZE, EMBEDDED_SNAPSHOT_INTERVAL_S, exitReport, procStart, startEmbeddedRedis, takeStartLock } from '../../src/redis/embedded.js';
import { startLoadingOrphan } from '../helpers/redis.js';
import { loadConfig } from '../../src/config/load.js';
import { createRedis, checkRedisVersion } from '../../src/redis/client.js';
import { isSluiceError, type ErrorCode } from '../../src/core/errors.js';

const test = suite('redis/embedded');

/**
 * startEmbeddedRedis(opts) must fail with the SluiceError `code` (`why` says what a success would
 * mean), its message holding each of `says`.
 */
async function refusedStart(opts: { dir: string; binary?: string }, code: ErrorCode, why: string, ...says: string[]): Promise<void> {
  try {
    await startEmbeddedRedis({ binary: 'redis-server', ...opts });
  } catch (err) {
    assert.ok(isSluiceError(err, code), String(err));
    for (const text of says) assert.match((err as Error).message, text);
    return;
  }
  assert.unreachable(why);
}
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
let dir = '';
/** A start that should have failed but returned a server: stopped, and told apart from an error. */
const started = async (s: { stop(): Promise<void> }) => {
  await s.stop();
  return 'a running server';
};
test.before(() => { dir = mkdtempSync(join(tmpdir(), 'sluice-emb-')); });
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('starts a private redis-server on a unix socket with AOF on, and stops it', async () => {
  const srv = await startEmbeddedRedis({ binary: 'redis-server', dir });
  const c = createRedis({ url: srv.socket });
  assert.is(await c.config('GET', 'appendonly').then((r) => (r as string[])[1]), 'yes');
  assert.is(await c.config('GET', 'port').then((r) => (r as string[])[1]), '0');
  // Not rewritten every 64 MB (Redis's default): every accepted body passes through the AOF.
  assert.is(await c.config('GET', 'auto-aof-rewrite-min-size').then((r) => (r as string[])[1]), String(EMBEDDED_AOF_REWRITE_MIN_SIZE));
  // An RDB snapshot at most hourly, not Redis's every minute under load (each one forks the server).
  assert.is(await c.config('GET', 'save').then((r) => (r as string[])[1]), `${EMBEDDED_SNAPSHOT_INTERVAL_S} 1`);
  assert.ok(/^\d+\.\d+\.\d+$/.test(await checkRedisVersion(c)));
  await c.set('k', 'v');
  c.disconnect();
  await srv.stop();
  assert.ok(existsSync(join(dir, 'appendonlydir')), 'AOF folder written');
  // a restart on the same folder sees the data (AOF replayed)
  const again = await startEmbeddedRedis({ binary: 'redis-server', dir });
  const c2 = createRedis({ url: again.socket });
  assert.is(await c2.get('k'), 'v');
  c2.disconnect();
  await again.stop();
});

test("the data folder (queued mail, the deployment's secrets) is its owner's alone, whatever the umask; a relative one works; one that cannot be used names the setting", async () => {
  const base = mkdtempSync(join(tmpdir(), 'sluice-emb-mode-'));
  const cwd = process.cwd();
  const old = process.umask(0o022);
  try {
    // An existing folder left open by an earlier version, given relative to the working folder.
    mkdirSync(join(base, 'var'), { mode: 0o755 });
    process.chdir(base);
    const srv = await startEmbeddedRedis({ binary: 'redis-server', dir: 'var' });
    process.chdir(cwd);
    assert.is(statSync(join(base, 'var')).mode & 0o777, 0o700);
    assert.is(srv.socket, join(base, 'var', 'redis.sock'), 'an absolute socket path');
    const c = createRedis({ url: srv.socket });
    await c.set('k', 'v');
    c.disconnect();
    await srv.stop();
    // A plain file where the folder should be.
    writeFileSync(join(base, 'file'), 'x');
    await refusedStart({ dir: join(base, 'file') }, 'SLUICE_CONFIG_INVALID', 'no folder to use', 'instance.dataDir', 'cannot use');
  } finally {
    process.chdir(cwd);
    process.umask(old);
    rmSync(base, { recursive: true, force: true });
  }
});

test('snapshots follow redis.embedded.snapshotInterval (default 1h); null turns them off', async () => {
  assert.is(loadConfig({ env: {} }).redis.embedded.snapshotInterval, EMBEDDED_SNAPSHOT_INTERVAL_S * 1000);
  assert.is(loadConfig({ env: {}, overrides: { redis: { embedded: { snapshotInterval: null } } } }).redis.embedded.snapshotInterval, null);
  assert.is(loadConfig({ env: {}, overrides: { redis: { embedded: { snapshotInterval: '15m' } } } }).redis.embedded.snapshotInterval, 900_000);
  for (const [snapshotIntervalS, rule] of [[null, ''], [900, '900 1']] as const) {
    const srv = await startEmbeddedRedis({ binary: 'redis-server', dir, snapshotIntervalS });
    const c = createRedis({ url: srv.socket });
    assert.is(await c.config('GET', 'save').then((r) => (r as string[])[1]), rule);
    c.disconnect();
    await srv.stop();
  }
});

test('the AOF rewrite threshold comes from redis.embedded.aofRewriteMinSize, whose default is the server\'s own default', async () => {
  assert.is(loadConfig({ env: {} }).redis.embedded.aofRewriteMinSize, EMBEDDED_AOF_REWRITE_MIN_SIZE);
  const srv = await startEmbeddedRedis({ binary: 'redis-server', dir, aofRewriteMinSize: 256 * 1024 * 1024 });
  const c = createRedis({ url: srv.socket });
  assert.is(await c.config('GET', 'auto-aof-rewrite-min-size').then((r) => (r as string[])[1]), String(256 * 1024 * 1024));
  c.disconnect();
  await srv.stop();
});

test('refuses a second server on the same folder while the first runs', async () => {
  const srv = await startEmbeddedRedis({ binary: 'redis-server', dir });
  try {
    await refusedStart({ dir }, 'SLUICE_REDIS_UNAVAILABLE', 'second start should fail');
  } finally {
    await srv.stop();
  }
});

test('a server left by a Sluice that died is adopted, keeps its data, and is stopped on shutdown', async () => {
  const orphan = await startEmbeddedRedis({ binary: 'redis-server', dir });
  const c = createRedis({ url: orphan.socket });
  await c.set('queued', 'still-here');
  c.disconnect();
  // The owner file now names a process that no longer runs, as after a SIGKILL of Sluice.
  const dead = spawnSync('true').pid as number;
  writeFileSync(join(dir, 'owner.json'), JSON.stringify({ sluicePid: dead, redisPid: orphan.pid }));
  const adopted = await startEmbeddedRedis({ binary: 'redis-server', dir });
  assert.is(adopted.adopted, true);
  assert.is(adopted.pid, orphan.pid);
  const c2 = createRedis({ url: adopted.socket });
  assert.is(await c2.get('queued'), 'still-here');
  c2.disconnect();
  await adopted.stop();
  assert.throws(() => process.kill(orphan.pid, 0), 'the adopted server is gone after stop()');
  await orphan.stop(); // reaps our own child handle; no-op for the signal
});

test('onExit tells how the server ended: our child by its signal, an adopted one (not our child) once it is gone', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-emb-exit-'));
  // The server and the watch of an adopted one's pid are unref'd (they keep no process alive): in
  // Sluice its servers do; here this timer, or the test run ends while waiting.
  const hold = setInterval(() => undefined, 1000);
  try {
    const own = await startEmbeddedRedis({ binary: 'redis-server', dir: d });
    const ownExit = new Promise<string>((resolve) => own.onExit(resolve));
    process.kill(own.pid, 'SIGKILL');
    assert.is(await ownExit, 'signal SIGKILL');

    const orphan = await startEmbeddedRedis({ binary: 'redis-server', dir: d });
    writeFileSync(join(d, 'owner.json'), JSON.stringify({ sluicePid: spawnSync('true').pid, redisPid: orphan.pid }));
    const adopted = await startEmbeddedRedis({ binary: 'redis-server', dir: d });
    assert.is(adopted.adopted, true);
    const adoptedExit = new Promise<string>((resolve) => adopted.onExit(resolve));
    process.kill(orphan.pid, 'SIGKILL');
    assert.is(await adoptedExit, 'gone');
    await orphan.stop();
  } finally {
    clearInterval(hold);
    rmSync(d, { recursive: true, force: true });
  }
});

test('a server still loading its data (-LOADING) is not replaced: the socket stays and a second start is refused', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-emb-loading-'));
  const socket = join(d, 'redis.sock');
  // A stand-in for a redis-server reading a large AOF: it answers every command -LOADING.
  const loading = createServer((c) => c.on('data', () => c.write('-LOADING Redis is loading the dataset in memory\r\n')));
  await new Promise<void>((resolve) => loading.listen(socket, () => resolve()));
  writeFileSync(join(d, 'owner.json'), JSON.stringify({ sluicePid: process.pid, redisPid: process.pid }));
  try {
    await refusedStart({ dir: d }, 'SLUICE_REDIS_UNAVAILABLE', 'a second server was started beside a loading one', 'another redis-server already serves');
  } finally {
    assert.ok(existsSync(socket), 'the loading server\'s socket is left alone');
    await new Promise<void>((resolve) => loading.close(() => resolve()));
    rmSync(d, { recursive: true, force: true });
  }
});

test('a redis-server of the folder that still runs but does not answer is not started beside', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-emb-hung-'));
  const hung = await startEmbeddedRedis({ binary: 'redis-server', dir: d });
  // The folder's server, stopped (SIGSTOP) or hung, left by a Sluice that died: its socket takes
  // the connection and never answers.
  process.kill(hung.pid, 'SIGSTOP');
  writeFileSync(join(d, 'owner.json'), JSON.stringify({ sluicePid: spawnSync('true').pid, redisPid: hung.pid }));
  try {
    await refusedStart({ dir: d }, 'SLUICE_REDIS_UNAVAILABLE', 'a second server was started on the folder', `pid ${hung.pid}`);
  } finally {
    process.kill(hung.pid, 'SIGCONT');
    await hung.stop();
    rmSync(d, { recursive: true, force: true });
  }
});

test('an owner.json whose redis pid now runs something else (another folder\'s redis-server, any process) does not block the start', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-emb-reused-'));
  // After a reboot the pids of the old owner.json name whatever runs now: here another folder's
  // redis-server, and a sleep.
  const other = await startEmbeddedRedis({ binary: 'redis-server', dir: join(d, 'other') });
  const sleep = spawn('sleep', ['60'], { stdio: 'ignore' });
  try {
    for (const pid of [other.pid, sleep.pid as number]) {
      writeFileSync(join(d, 'redis.sock'), ''); // the old server's socket file, nothing listens
      writeFileSync(join(d, 'owner.json'), JSON.stringify({ sluicePid: spawnSync('true').pid, redisPid: pid }));
      const srv = await startEmbeddedRedis({ binary: 'redis-server', dir: d });
      assert.is.not(srv.pid, pid);
      assert.is(srv.adopted, undefined);
      await srv.stop();
      assert.ok(alive(pid), 'the unrelated process is left alone');
    }
  } finally {
    sleep.kill();
    await other.stop();
    rmSync(d, { recursive: true, force: true });
  }
});

test('two starts at the same instant on a fresh folder: one server runs, the other start is refused', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-emb-race-'));
  // A start that died before its server answered left its lock file (an older version's, or one of
  // a system without abstract sockets): on Linux no file is read, none is written.
  writeFileSync(join(d, 'start.lock'), String(spawnSync('true').pid));
  try {
    const both = await Promise.allSettled([startEmbeddedRedis({ binary: 'redis-server', dir: d }), startEmbeddedRedis({ binary: 'redis-server', dir: d })]);
    const up = both.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const refused = both.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
    for (const s of up) await s.stop();
    assert.is(up.length, 1, 'exactly one server started');
    assert.ok(isSluiceError(refused[0], 'SLUICE_REDIS_UNAVAILABLE'), String(refused[0]));
    assert.match(refused[0]!.message, `another Sluice (pid ${process.pid}) is starting the redis-server of ${d} (is another Sluice running with the same data folder?)`);
    // The lock is released: a start now gets past it (and starts the server again).
    const again = await startEmbeddedRedis({ binary: 'redis-server', dir: d });
    await again.stop();
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('the file lock (systems without abstract sockets): a stale one is taken over, a held one refused naming its pid and the file', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-emb-filelock-'));
  const file = join(d, 'start.lock');
  const sleep = spawn('sleep', ['60'], { stdio: 'ignore' });
  try {
    // Left by a start that died; then by one whose pid runs an unrelated process by now (the
    // sleep, started at another time: after a reboot).
    for (const stale of [String(spawnSync('true').pid), `${sleep.pid} ${procStart(sleep.pid as number)!.split(':')[0]}:1`]) {
      writeFileSync(file, stale);
      const release = await takeStartLock(d, 'file');
      assert.is(readFileSync(file, 'utf8'), `${process.pid} ${procStart(process.pid)}`);
      try {
        await takeStartLock(d, 'file');
        assert.unreachable('a held lock was taken');
      } catch (err) {
        assert.ok(isSluiceError(err, 'SLUICE_REDIS_UNAVAILABLE'), String(err));
        assert.match((err as Error).message, `another Sluice (pid ${process.pid}) is starting the redis-server of ${d}`);
        assert.match((err as Error).message, `if none runs, the pid is another process's now: remove ${file}`);
      }
      await release();
      assert.not.ok(existsSync(file), 'the lock is released');
    }
    assert.ok(alive(sleep.pid as number), 'the unrelated process is left alone');
  } finally {
    sleep.kill();
    rmSync(d, { recursive: true, force: true });
  }
});

test('a redis-server that exits at start (corrupt AOF) fails the start with its exit code and last log lines', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-emb-corrupt-'));
  mkdirSync(join(d, 'appendonlydir'));
  writeFileSync(join(d, 'appendonlydir', 'appendonly.aof.manifest'), 'file appendonly.aof.1.incr.aof seq 1 type i\n');
  writeFileSync(join(d, 'appendonlydir', 'appendonly.aof.1.incr.aof'), 'this is not an AOF\r\n');
  try {
    // Before: "redis-server exited at start: see <dir>/redis.log", neither how nor why.
    await refusedStart({ dir: d }, 'SLUICE_REDIS_UNAVAILABLE', 'a server with a corrupt AOF started',
      'exited before it was ready (code 1', `last lines of ${join(d, 'redis.log')}`, 'Bad file format reading the append only file');
    await (await takeStartLock(d))(); // released on failure too
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('an adopted server still loading its data is waited for: a signal meanwhile stops it and gives the start up', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-emb-adopt-sig-'));
  const orphan = await startLoadingOrphan(d);
  try {
    const giveUp = new AbortController();
    const start = startEmbeddedRedis({ binary: 'redis-server', dir: d, signal: giveUp.signal });
    giveUp.abort();
    // Before: adopted at once, loading (a start then waited on Redis for as long as it loaded, deaf to the signal).
    const err = await start.then(started, (e: unknown) => e);
    assert.ok(isSluiceError(err, 'SLUICE_SHUTTING_DOWN'), `start ended with ${String(err)}`);
    assert.match((err as Error).message, 'before the adopted redis-server');
    assert.not.ok(alive(orphan.pid), 'the loading server was stopped');
    // The lock is released: taken at once.
    await (await takeStartLock(d))();
  } finally {
    orphan.kill();
    rmSync(d, { recursive: true, force: true });
  }
});

test('an adopted server that dies while loading fails the start, naming it', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-emb-adopt-die-'));
  const orphan = await startLoadingOrphan(d);
  try {
    const start = startEmbeddedRedis({ binary: 'redis-server', dir: d });
    const outcome = start.then(started, (e: unknown) => e);
    // Once adopted (owner.json names this process), not before: a server that died before its
    // adoption is simply started again.
    const ownerPid = () => {
      try {
        return (JSON.parse(readFileSync(join(d, 'owner.json'), 'utf8')) as { sluicePid: number }).sluicePid;
      } catch {
        return 0; // being written
      }
    };
    while (ownerPid() !== process.pid) await new Promise((r) => setTimeout(r, 10));
    process.kill(orphan.pid, 'SIGKILL');
    const err = await outcome;
    assert.ok(isSluiceError(err, 'SLUICE_REDIS_UNAVAILABLE'), `start ended with ${String(err)}`);
    assert.match((err as Error).message, 'the adopted redis-server (left running by a Sluice that died) exited before it was ready (gone');
  } finally {
    orphan.kill();
    rmSync(d, { recursive: true, force: true });
  }
});

test('owner.json records start times: a pid reused by an unrelated process is not taken for the Sluice that wrote them', async () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-emb-pidreuse-'));
  const sleep = spawn('sleep', ['60'], { stdio: 'ignore' });
  const other = procStart(sleep.pid as number);
  assert.ok(other, '/proc gives start times');
  // What a Sluice writes: its pid and its start time, its server's too.
  const orphan = await startEmbeddedRedis({ binary: 'redis-server', dir: d });
  try {
    const written = JSON.parse(readFileSync(join(d, 'owner.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(written, { sluicePid: process.pid, redisPid: orphan.pid, sluiceStart: procStart(process.pid), redisStart: procStart(orphan.pid) });
    // The Sluice that started the server died; its pid now runs the sleep (started at another time).
    const stale = `${other!.split(':')[0]}:1`;
    writeFileSync(join(d, 'owner.json'), JSON.stringify({ sluicePid: sleep.pid, sluiceStart: stale, redisPid: orphan.pid, redisStart: procStart(orphan.pid) }));
    // Before: refused ("another redis-server already serves").
    const adopted = await startEmbeddedRedis({ binary: 'redis-server', dir: d });
    assert.is(adopted.adopted, true);
    assert.is(adopted.pid, orphan.pid);
    await adopted.stop();
    assert.ok(alive(sleep.pid as number), 'the unrelated process is left alone');
    // Its own start time in the file: the pid is the Sluice that wrote it, still running: refused.
    const again = await startEmbeddedRedis({ binary: 'redis-server', dir: d });
    writeFileSync(join(d, 'owner.json'), JSON.stringify({ sluicePid: sleep.pid, sluiceStart: other, redisPid: again.pid }));
    try {
      await refusedStart({ dir: d }, 'SLUICE_REDIS_UNAVAILABLE', 'a server whose Sluice runs was adopted', 'another redis-server already serves');
    } finally {
      await again.stop();
    }
  } finally {
    sleep.kill();
    await orphan.stop();
    rmSync(d, { recursive: true, force: true });
  }
});

test('a missing redis-server binary names the install command', async () => {
  await refusedStart({ dir, binary: 'redis-server-that-does-not-exist' }, 'SLUICE_REDIS_NOT_INSTALLED', 'should fail', 'apt-get install -y redis-server');
});

test('exitReport: the last log lines that say why, without the overcommit warning every start writes', () => {
  const log = join(dir, 'report.log');
  writeFileSync(log, [
    '4242:C 28 Nov 2026 04:00:00.000 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo',
    '4242:M 28 Nov 2026 04:00:00.001 * Reading RDB base file on AOF loading...',
    '4242:M 28 Nov 2026 04:00:00.002 # Bad file format reading the append only file appendonly.aof.1.incr.aof',
    "4242:M 28 Nov 2026 04:00:00.003 # WARNING Memory overcommit must be enabled! Without it, a background save or replication may fail under low memory condition.",
    '',
  ].join('\n'));
  const report = exitReport(log, 'exited with code 1', 'stderr line\n');
  assert.ok(report.startsWith('exited with code 1; stderr: stderr line; last lines of '), report);
  assert.ok(report.includes('Bad file format reading the append only file'), report);
  assert.ok(report.includes('Redis is starting'), report);
  assert.not.ok(report.includes('overcommit'), report);
  assert.not.ok(report.includes('4242:M'), report);
});

test.run();
