import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, linkSync, mkdirSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { SluiceError } from '../core/errors.js';

/**
 * The embedded default: when no Redis address is configured, Sluice runs its own private
 * redis-server, listening only on a unix socket (no TCP port), with AOF on, and stops it on shutdown.
 * The test harness starts its servers with the same function.
 */

/**
 * `auto-aof-rewrite-min-size` of the embedded server (redis.embedded.aofRewriteMinSize). Redis's 64 MB
 * suits a cache; a mail queue writes every accepted body into the AOF and deletes it after delivery,
 * so at 100 KB × ~300 messages/s the AOF grew past twice its base every few seconds and Redis forked a
 * rewrite child 8 times in a 22-second bench:e2e run, each writing the whole dataset: 15–18 % of a
 * core outside Sluice and Redis. With 1 GB: none in that run, at the cost of up to ~1 GB more AOF on
 * disk and a longer load at restart. Above 1 GB, Redis's percentage rule (rewrite at twice the
 * rewritten size) applies as before.
 */
export const EMBEDDED_AOF_REWRITE_MIN_SIZE = 1024 ** 3;

/**
 * How often the embedded server writes an RDB snapshot (redis.embedded.snapshotInterval), at most,
 * when anything changed. Redis's own rule (`save 3600 1 300 100 60 10000`) snapshots every minute
 * under load. The AOF already holds every acknowledged write, so those snapshots only cost: each
 * forks the server, which stalls it for the page-table copy — 11.8 ms for 237 MB here (`INFO stats`
 * latest_fork_usec after BGSAVE), so ~0.2 s a minute at the 4 GB default ceiling — and copies pages
 * on write while the child runs. Hourly still leaves a compact dump.rdb for backups.
 */
export const EMBEDDED_SNAPSHOT_INTERVAL_S = 3600;

export interface EmbeddedOptions {
  binary: string;
  dir: string;
  /** bytes; 0 = no limit */
  maxmemory?: number;
  appendfsync?: 'everysec' | 'always';
  /** AOF size (bytes) below which it is never rewritten; default EMBEDDED_AOF_REWRITE_MIN_SIZE. */
  aofRewriteMinSize?: number;
  /** Seconds between RDB snapshots at most (when anything changed); null = none. Default EMBEDDED_SNAPSHOT_INTERVAL_S. */
  snapshotIntervalS?: number | null;
  /** Extra redis-server arguments ('--name', 'value', …). */
  args?: string[];
  /** TCP port instead of (in addition to) the socket: 0 = none. */
  port?: number;
  /**
   * Gives up the start (Sluice got a signal): the server being started, which may be loading its
   * data for minutes, is stopped, and the start rejects with SLUICE_SHUTTING_DOWN.
   */
  signal?: AbortSignal;
}

export interface EmbeddedRedis {
  /** Unix socket path, usable as a Redis url. */
  readonly socket: string;
  readonly port: number;
  readonly pid: number;
  /** True when this is a server left by a previous Sluice that died, taken over rather than started. */
  readonly adopted?: boolean;
  /** Its log file (redis-server writes its warnings and errors there, not to stderr). */
  readonly logFile: string;
  stop(): Promise<void>;
  /**
   * SIGTERM without waiting (redis-server still writes its AOF and exits): for a Sluice that must
   * exit at once (a second signal) and should not leave its server running.
   */
  terminate(): void;
  /** SIGKILL without a shutdown save (tests of crash recovery). */
  kill(): Promise<void>;
  /**
   * Calls `listener` once when the server exits, whoever ended it (stop() too): how it ended, e.g.
   * 'signal SIGKILL' or 'code 1' ('gone' for an adopted server, which is not our child).
   */
  onExit(listener: (how: string) => void): void;
}

export const INSTALL_HINT = 'install it with: apt-get update && apt-get install -y redis-server';

export function findRedisServer(binary: string): boolean {
  const r = spawnSync(binary, ['--version'], { stdio: 'ignore' });
  return r.status === 0;
}

/** Sends PING over the socket; resolves true on +PONG. */
export async function pingSocket(target: { path: string } | { port: number; host: string }, timeoutMs = 500): Promise<boolean> {
  return (await probeSocket(target, timeoutMs)) === 'ready';
}

/**
 * What answers on the socket: 'ready' (+PONG), 'loading' (a redis-server still reading its AOF or
 * RDB answers every command -LOADING, for minutes with a large queue: it is there, and it is not to
 * be replaced or killed), 'other' (some other answer), or 'none'.
 */
export function probeSocket(target: { path: string } | { port: number; host: string }, timeoutMs = 500): Promise<'ready' | 'loading' | 'other' | 'none'> {
  return new Promise((resolve) => {
    const sock = createConnection(target as never);
    const done = (r: 'ready' | 'loading' | 'other' | 'none') => {
      sock.destroy();
      resolve(r);
    };
    sock.setTimeout(timeoutMs, () => done('none'));
    sock.once('error', () => done('none'));
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.once('data', (d) => {
      const text = d.toString();
      done(text.startsWith('+PONG') ? 'ready' : text.startsWith('-LOADING') ? 'loading' : 'other');
    });
  });
}

/**
 * Whether `pid` runs the redis-server of `dir`. After a reboot (or enough time) the pid in an old
 * owner.json names an unrelated process, or another folder's redis-server: not ours, not to be
 * refused over nor adopted. Linux: its title (`redis-server unixsocket:<socket>`) or its working
 * folder (redis-server changes to --dir) names the folder. Elsewhere: whether it runs at all.
 */
function runsRedisOf(pid: number, dir: string, socket: string): boolean {
  if (!alive(pid)) return false;
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
  } catch {
    return true;
  }
  if (!cmdline.includes('redis-server')) return false;
  if (cmdline.includes(socket)) return true;
  try {
    return readlinkSync(`/proc/${pid}/cwd`) === realpathSync(dir);
  } catch {
    return false; // another user's process (its cwd is not readable): not one this Sluice started
  }
}

/**
 * Who started the server in a data folder: written next to the socket. The start times tell a pid
 * reused by another process (after a reboot, or once pids wrap) from the process that wrote it.
 */
interface OwnerFile {
  sluicePid: number;
  redisPid: number;
  /** procStart of each pid when written; absent in files of older versions, or without /proc. */
  sluiceStart?: string;
  redisStart?: string;
}

/**
 * When `pid` started, as `<boot id>:<start time in clock ticks since boot>` (Linux /proc), or
 * undefined when unknown (no /proc, process gone). Two processes never share it: a pid reused after
 * a reboot differs by boot id, one reused in the same boot by start time.
 */
export function procStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // pid (comm) state ppid … : comm may hold spaces and parentheses, so fields count from its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = fields[19]; // field 22, starttime
    if (!ticks || !/^\d+$/.test(ticks)) return undefined;
    return `${readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim()}:${ticks}`;
  } catch {
    return undefined;
  }
}

/** Whether `pid` runs and is the process that had start time `start` (when both are known). */
function stillRuns(pid: number, start: string | undefined): boolean {
  if (!alive(pid)) return false;
  if (start === undefined) return true;
  const now = procStart(pid);
  return now === undefined || now === start;
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function writeOwner(file: string, redisPid: number): void {
  const o: OwnerFile = { sluicePid: process.pid, redisPid };
  const sluiceStart = procStart(process.pid);
  const redisStart = procStart(redisPid);
  if (sluiceStart) o.sluiceStart = sluiceStart;
  if (redisStart) o.redisStart = redisStart;
  writeFileSync(file, JSON.stringify(o));
}

function readOwner(file: string): OwnerFile | undefined {
  try {
    const o = JSON.parse(readFileSync(file, 'utf8')) as OwnerFile;
    if (typeof o.sluicePid !== 'number' || typeof o.redisPid !== 'number') return undefined;
    return {
      sluicePid: o.sluicePid,
      redisPid: o.redisPid,
      ...(typeof o.sluiceStart === 'string' ? { sluiceStart: o.sluiceStart } : {}),
      ...(typeof o.redisStart === 'string' ? { redisStart: o.redisStart } : {}),
    };
  } catch {
    return undefined;
  }
}

/**
 * How a server of the folder ended, for an operator: how it exited, what it wrote to stderr (before
 * its log file was open: a bad argument, an unwritable folder) and the last lines of its log (a
 * corrupt AOF, a failed fsync), each without redis-server's pid and timestamp prefix.
 */
export function exitReport(logFile: string, how: string, stderr = ''): string {
  let lines: string[] = [];
  try {
    lines = readFileSync(logFile, 'utf8')
      .split('\n')
      .map((l) => l.replace(/^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [.\-*#] /, '').trim())
      // Redis warns about vm.overcommit_memory at every start, in one ~400-character line: it says
      // nothing about why this server ended and would push out a line that does.
      .filter((l) => l !== '' && !l.startsWith('WARNING Memory overcommit'))
      .slice(-3)
      .map((l) => (l.length > 300 ? `${l.slice(0, 300)}…` : l));
  } catch {
    // no log (yet): stderr says why, if anything does
  }
  const err = stderr.trim() ? `; stderr: ${stderr.trim().split('\n').slice(-3).join(' / ')}` : '';
  return `${how}${err}; ${lines.length > 0 ? `last lines of ${logFile}: ${lines.join(' / ')}` : `${logFile} has nothing`}`;
}

/** How waitReady sees the server it waits for. */
interface Starting {
  socket: string;
  logFile: string;
  /** How it ended, or null while it runs. */
  exited(): string | null;
  stderr(): string;
  /** Stops it (given up: a signal), waiting for its exit. */
  stop(): Promise<void>;
  /** Ends it when it never answered. */
  silent(): void;
}

/**
 * Waits until the server answers PING: 10 s to answer at all, then as long as it says it is loading
 * its data (a large AOF takes minutes). Throws SLUICE_SHUTTING_DOWN, after stopping it, when `signal`
 * gives the start up; SLUICE_REDIS_UNAVAILABLE, with its exit code and last log lines, when it exits.
 */
async function waitReady(server: Starting, signal: AbortSignal | undefined, adopted: boolean): Promise<void> {
  let deadline = Date.now() + 10_000;
  const whose = adopted ? 'the adopted redis-server (left running by a Sluice that died)' : 'redis-server';
  for (;;) {
    const state = await probeSocket({ path: server.socket }, 200);
    if (state === 'ready') return;
    if (state === 'loading') deadline = Date.now() + 10_000;
    const how = server.exited();
    if (signal?.aborted && how === null) {
      // redis-server exits on SIGTERM while loading, without writing anything.
      await server.stop();
      throw new SluiceError('SLUICE_SHUTTING_DOWN', `start-up given up before ${whose} answered on ${server.socket}; it was stopped`);
    }
    if (how !== null) throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `${whose} exited before it was ready (${exitReport(server.logFile, how, server.stderr())})`);
    if (Date.now() > deadline) {
      server.silent();
      throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `${whose} did not answer on ${server.socket} within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A redis-server left running by a Sluice that died without stopping it (SIGKILL, OOM kill) is
 * adopted rather than refused: it holds the queue, it is ours (its owner file names a Sluice pid
 * that no longer runs), and it is stopped like our own child on shutdown. A server whose owner is
 * still alive belongs to another running Sluice: refused. One still loading its data is waited for
 * as our own is (waitReady): a signal meanwhile stops it, and its death ends the start.
 */
async function adopt(socket: string, ownerFile: string, owner: OwnerFile, opts: EmbeddedOptions): Promise<EmbeddedRedis> {
  writeOwner(ownerFile, owner.redisPid);
  const logFile = join(opts.dir, 'redis.log');
  // Not our child: no exit event, so its pid is looked at once a second while anyone listens.
  let watch: NodeJS.Timeout | undefined;
  const listeners: ((how: string) => void)[] = [];
  const gone = async (timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (alive(owner.redisPid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return !alive(owner.redisPid);
  };
  const server: EmbeddedRedis = {
    socket,
    port: opts.port ?? 0,
    pid: owner.redisPid,
    adopted: true,
    logFile,
    async stop() {
      // SIGTERM makes redis-server write its AOF and exit, as for our own child.
      if (alive(owner.redisPid)) process.kill(owner.redisPid, 'SIGTERM');
      if (!(await gone(10_000))) process.kill(owner.redisPid, 'SIGKILL');
    },
    terminate() {
      if (alive(owner.redisPid)) process.kill(owner.redisPid, 'SIGTERM');
    },
    async kill() {
      if (alive(owner.redisPid)) process.kill(owner.redisPid, 'SIGKILL');
      await gone(5_000);
    },
    onExit(listener) {
      listeners.push(listener);
      watch ??= setInterval(() => {
        if (alive(owner.redisPid)) return;
        clearInterval(watch);
        for (const l of listeners) l('gone');
      }, 1_000).unref();
    },
  };
  await waitReady(
    {
      socket, logFile,
      exited: () => (alive(owner.redisPid) ? null : 'gone'),
      stderr: () => '',
      stop: () => server.stop(),
      silent: () => undefined, // not ours to kill: the refusal of the next start names its pid
    },
    opts.signal,
    true,
  );
  return server;
}

/** What a start lock holds or answers: `<pid> <procStart>` of the start holding it. */
function holderLine(): string {
  return `${process.pid} ${procStart(process.pid) ?? ''}`.trim();
}

/**
 * The start lock of a data folder: held from the checks of startLocked until its server answers or
 * the start fails, so that those checks and the spawn are one start's alone. Resolves to its
 * release; throws SLUICE_REDIS_UNAVAILABLE, naming the holder's pid, while another start holds it.
 * Linux: a listening unix socket on an abstract name (takeSocketLock), which the kernel frees when
 * its holder exits, however it ends: nothing is ever taken over. Elsewhere (no abstract sockets):
 * start.lock (takeFileLock). A start sees no lock of the other kind: a platform uses one kind only.
 */
export async function takeStartLock(dir: string, kind: 'socket' | 'file' = process.platform === 'linux' ? 'socket' : 'file'): Promise<() => Promise<void>> {
  if (kind === 'socket') return takeSocketLock(dir);
  const file = join(dir, 'start.lock');
  const lock = takeFileLock(file);
  // A start killed while its server loaded (minutes), then a reboot: the lock's pid may run anything.
  if (!lock.held) {
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `another Sluice (pid ${lock.pid}) is starting the redis-server of ${dir} (is another Sluice running with the same data folder? if none runs, the pid is another process's now: remove ${file})`);
  }
  return async () => rmSync(file, { force: true });
}

/**
 * sun_path's size (Linux). An abstract name is every byte of the address given to bind(): Node 20
 * gives all of sun_path, the name's trailing NULs included, where a libuv that counts only the
 * name's own bytes would bind another name. A name that fills sun_path is the same for both.
 */
const SUN_PATH_BYTES = 108;

/**
 * The abstract socket name of a folder's start lock (Linux: a name of the network namespace, not a
 * file). The folder is named by its device and inode, not its path: one folder reached by two
 * paths (a bind mount, a symlink) is one lock. A process of another network namespace (a container
 * of its own, systemd PrivateNetwork=) sees other names: not excluded.
 */
function startLockName(dir: string): string {
  const { dev, ino } = statSync(dir, { bigint: true });
  return `\0sluice-start-${createHash('sha256').update(`${dev}:${ino}`).digest('hex')}`.padEnd(SUN_PATH_BYTES, '.');
}

/**
 * A start one waits for to say who it is: it answers from its event loop, which a start never
 * blocks for long. Silent beyond that: refused without its pid.
 */
const LOCK_ASK_TIMEOUT_MS = 1000;

/**
 * Takes the start lock of `dir` as a unix socket listening on its abstract name: bind() fails with
 * EADDRINUSE while another process listens there. The listener answers each connection with its
 * holderLine, for the refusal to name the pid. Neither it nor its connections keep the process
 * running, and redis-server does not inherit it (libuv opens sockets close-on-exec).
 */
async function takeSocketLock(dir: string): Promise<() => Promise<void>> {
  const name = startLockName(dir);
  const line = holderLine();
  // The holder may release between our bind and our question: bind again. Every round means a
  // start came and went; 20 bound a loop over a name that someone else keeps taking and freeing.
  for (let round = 0; ; round++) {
    const asking = new Set<Socket>();
    const server = createServer((c) => {
      asking.add(c);
      c.unref();
      c.on('error', () => undefined); // the asker gone already
      c.once('close', () => asking.delete(c));
      c.end(line);
    });
    const failed = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      server.once('error', resolve);
      server.listen(name, () => resolve(undefined));
    });
    if (!failed) {
      server.unref();
      return () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          // close() waits for open connections: an asker that never closes its end must not hold
          // up the start.
          for (const c of asking) c.destroy();
        });
    }
    if (failed.code !== 'EADDRINUSE') {
      throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `could not take the start lock of ${dir} (a unix socket on an abstract name): ${failed.message}`, { cause: failed });
    }
    const holder = await askHolder(name);
    if (holder === 'gone' && round < 20) continue;
    const who = typeof holder === 'number' ? `another Sluice (pid ${holder})` : 'another Sluice';
    throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `${who} is starting the redis-server of ${dir} (is another Sluice running with the same data folder?)`);
  }
}

/**
 * Asks the holder of the lock `name` for its pid: the pid, 'gone' (released meanwhile: nothing
 * listens, or it closed without a word), or 'unknown' (no answer in time, not a pid).
 */
function askHolder(name: string): Promise<number | 'gone' | 'unknown'> {
  return new Promise((resolve) => {
    const sock = createConnection(name);
    let text = '';
    const done = (r: number | 'gone' | 'unknown') => {
      sock.destroy();
      resolve(r);
    };
    sock.setTimeout(LOCK_ASK_TIMEOUT_MS, () => done('unknown'));
    sock.on('error', (err: NodeJS.ErrnoException) => done(err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET' ? 'gone' : 'unknown'));
    sock.on('data', (d) => {
      text += d.toString('latin1');
      if (text.length > 200) done('unknown');
    });
    sock.on('end', () => {
      const pid = Number(text.split(' ')[0]);
      done(text === '' ? 'gone' : Number.isInteger(pid) && pid > 0 ? pid : 'unknown');
    });
  });
}

/**
 * Takes `file` for this process: created only if absent (link() of a file already holding our pid,
 * so a reader never sees it empty), or taken over from a process that no longer runs. Returns
 * false when a live process holds it. Used only where abstract sockets are missing, for its flaw:
 * two starts that read one stale lock at the same instant may both take it over (the second removes
 * the lock the first has just linked), where the socket lock has nothing to take over.
 */
function takeFileLock(file: string): { held: true } | { held: false; pid: number } {
  const mine = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  // `<pid> <procStart>`: a pid that runs another process by now (after a reboot) does not hold it.
  writeFileSync(mine, holderLine());
  try {
    for (;;) {
      try {
        linkSync(mine, file);
        return { held: true };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      let pid = NaN;
      let start: string | undefined;
      try {
        const [p, s] = readFileSync(file, 'utf8').trim().split(' ');
        pid = Number(p);
        start = s || undefined;
      } catch {
        continue; // released meanwhile
      }
      if (stillRuns(pid, start)) return { held: false, pid };
      rmSync(file, { force: true }); // left by a start that died
    }
  } finally {
    rmSync(mine, { force: true });
  }
}

export async function startEmbeddedRedis(given: EmbeddedOptions): Promise<EmbeddedRedis> {
  if (!findRedisServer(given.binary)) {
    throw new SluiceError('SLUICE_REDIS_NOT_INSTALLED', `${given.binary} was not found on PATH; ${INSTALL_HINT} (or set REDIS_URL to use an existing server)`);
  }
  // Absolute: redis-server changes into --dir before it opens its log file and socket, so a relative
  // folder (instance.dataDir from the environment) was looked for inside itself.
  const opts = { ...given, dir: resolve(given.dir) };
  // The folder holds every queued message and the deployment's HMAC secrets (AOF and RDB): its
  // owner's alone, whatever the umask made of it (0755 and 0644 files under the usual 022), as the
  // TLS folder is. A folder that cannot be made is the setting's fault, named as such.
  try {
    mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
    // Only its owner may change a folder's mode: one an operator made for Sluice (another owner,
    // writable by Sluice's group) is used as it is, as before.
    if (statSync(opts.dir).uid === process.getuid?.()) chmodSync(opts.dir, 0o700);
  } catch (err) {
    throw new SluiceError('SLUICE_CONFIG_INVALID', `instance.dataDir: cannot use ${opts.dir} for the embedded Redis (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
  }
  // Two starts at the same instant on a folder both found no socket and each started a server: two
  // redis-servers writing one AOF. The checks below and the start are one start's alone (the start
  // lock, held until its server answers or the start fails, a signal included); after that the
  // socket answers, and the checks refuse or adopt.
  const release = await takeStartLock(opts.dir);
  try {
    return await startLocked(opts);
  } finally {
    await release();
  }
}

async function startLocked(opts: EmbeddedOptions): Promise<EmbeddedRedis> {
  const socket = join(opts.dir, 'redis.sock');
  const ownerFile = join(opts.dir, 'owner.json');
  if (existsSync(socket)) {
    const found = await probeSocket({ path: socket });
    const owner = readOwner(ownerFile);
    if (found === 'ready' || found === 'loading') {
      if (owner && !stillRuns(owner.sluicePid, owner.sluiceStart) && runsRedisOf(owner.redisPid, opts.dir, socket)) return adopt(socket, ownerFile, owner, opts);
      throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `another redis-server already serves ${socket} (is another Sluice running with the same data folder?)`);
    }
    // A second server on the same folder would write the same AOF: never while the last one runs,
    // even if it does not answer (stopped, hung).
    if (owner && runsRedisOf(owner.redisPid, opts.dir, socket)) {
      throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `the redis-server of ${opts.dir} (pid ${owner.redisPid}) still runs but does not answer on ${socket}; stop it (kill ${owner.redisPid}) and start again`);
    }
    rmSync(socket, { force: true });
  }
  const port = opts.port ?? 0;
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--unixsocket', socket,
    '--unixsocketperm', '700',
    '--dir', opts.dir,
    '--daemonize', 'no',
    '--appendonly', 'yes',
    '--appendfsync', opts.appendfsync ?? 'everysec',
    '--auto-aof-rewrite-min-size', String(opts.aofRewriteMinSize ?? EMBEDDED_AOF_REWRITE_MIN_SIZE),
    '--save', snapshotRule(opts.snapshotIntervalS === undefined ? EMBEDDED_SNAPSHOT_INTERVAL_S : opts.snapshotIntervalS),
    '--maxmemory', String(opts.maxmemory ?? 0),
    '--maxmemory-policy', 'noeviction',
    '--loglevel', 'warning',
    '--logfile', join(opts.dir, 'redis.log'),
    ...(opts.args ?? []),
  ];
  // detached: its own session and process group. A terminal's Ctrl-C (SIGINT to the whole foreground
  // group) or a hangup reached redis-server together with Sluice, so it died before Sluice had written
  // the outcomes of its last transactions; only Sluice stops it, last (stop()). A Sluice that dies
  // without stopping it (SIGKILL) leaves it running: the next start adopts it (adopt()).
  const child: ChildProcess = spawn(opts.binary, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  let exited = false;
  let how = '';
  const exit = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = true;
      how = signal ? `signal ${signal}` : `code ${code}`;
      resolve();
    }),
  );

  // Written before it answers: a Sluice that dies while its server loads leaves a server the next
  // start adopts, not one it would start a second server beside. A file that cannot be written (a
  // full disk, another user's file) stops the server it would have named, or it ran on unowned.
  try {
    writeOwner(ownerFile, child.pid ?? 0);
  } catch (err) {
    child.kill('SIGKILL');
    await exit;
    throw new SluiceError('SLUICE_CONFIG_INVALID', `instance.dataDir: cannot write ${ownerFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
  }
  const logFile = join(opts.dir, 'redis.log');
  await waitReady(
    {
      socket, logFile,
      exited: () => (exited ? how : null),
      stderr: () => stderr,
      async stop() {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exit;
        clearTimeout(t);
      },
      silent: () => child.kill('SIGKILL'),
    },
    opts.signal,
    false,
  );

  // The server alone (or its stderr pipe) does not keep this process running: a Sluice whose shutdown
  // gave up on something can still exit. stop() and kill() hold it again until the server has exited.
  child.unref();
  (child.stderr as { unref?: () => void } | null)?.unref?.();
  return {
    socket,
    port,
    pid: child.pid ?? 0,
    logFile,
    async stop() {
      if (exited) return;
      child.ref(); // wait for its exit even when nothing else keeps this process running
      // SIGTERM makes redis-server fsync the AOF and exit cleanly.
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exit;
      clearTimeout(t);
    },
    terminate() {
      if (!exited) child.kill('SIGTERM');
    },
    async kill() {
      if (exited) return;
      child.ref();
      child.kill('SIGKILL');
      await exit;
    },
    onExit(listener) {
      void exit.then(() => listener(how));
    },
  };
}

/** redis-server's `save` rule: one snapshot point of `seconds` and 1 change, or none. */
function snapshotRule(seconds: number | null): string {
  return seconds === null ? '' : `${Math.max(1, Math.round(seconds))} 1`;
}
