import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomUUID } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { startEmbeddedRedis, pingSocket, probeSocket, type EmbeddedRedis } from '../../src/redis/embedded.js';
import { createRedis, type RedisClient } from '../../src/redis/client.js';
import { createKeys, type Keys } from '../../src/redis/keys.js';
import { loadScripts } from '../../src/redis/scripts.js';
import { suite, type Test } from 'uvu';
import { Redis } from 'ioredis';

/**
 * A real redis-server for one test file, on a unix socket in a fresh temporary folder. Each test
 * takes a fresh key prefix, so tests in one file never see each other's keys.
 */
export interface TestRedis {
  readonly url: string;
  readonly server: EmbeddedRedis;
  readonly dir: string;
  /** A new client with scripts defined. Closed by stop(). */
  client(): RedisClient;
  /** A unique key prefix and its key builder. */
  fresh(): { prefix: string; keys: Keys };
  stop(): Promise<void>;
}

export async function startRedis(opts: { appendfsync?: 'everysec' | 'always'; port?: number } = {}): Promise<TestRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-redis-'));
  const server = await startEmbeddedRedis({ binary: 'redis-server', dir, appendfsync: opts.appendfsync ?? 'everysec', ...(opts.port ? { port: opts.port } : {}) });
  const { track, closeAll } = clientTracker();
  return {
    url: server.socket,
    server,
    dir,
    client: () => track(createRedis({ url: server.socket, name: 'sluice-test' })),
    fresh,
    async stop() {
      await closeAll();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A real redis-server of the data folder `dir` left running by a Sluice that died (owner.json names
 * a Sluice pid that no longer runs) and still loading its AOF: 50,000 keys in its RDB base, each
 * loaded 2 ms late (`key-load-delay`, ~100 s), answering -LOADING meanwhile. Resolves once it does.
 * Not our child's handle: `pid` is for signals, `kill()` ends it.
 */
export async function startLoadingOrphan(dir: string): Promise<{ pid: number; kill(): void }> {
  const seed = await startEmbeddedRedis({ binary: 'redis-server', dir });
  const c = createRedis({ url: seed.socket, name: 'sluice-test-seed' });
  for (let i = 0; i < 50_000; i += 5_000) {
    const p = c.pipeline();
    for (let j = i; j < i + 5_000; j++) p.set(`seed:${j}`, 'x');
    await p.exec();
  }
  // The keys into the AOF's RDB base: key-load-delay slows the loading of an RDB.
  await c.bgrewriteaof();
  while (/aof_rewrite_in_progress:1|aof_rewrite_scheduled:1/.test(await c.info('persistence'))) await new Promise((r) => setTimeout(r, 50));
  c.disconnect();
  await seed.stop();
  const socket = join(dir, 'redis.sock');
  const child = spawn('redis-server', [
    '--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--dir', dir, '--daemonize', 'no', '--appendonly', 'yes',
    '--loglevel', 'warning', '--logfile', join(dir, 'redis.log'),
    '--key-load-delay', '2000', '--loading-process-events-interval-bytes', '1024',
  ], { stdio: 'ignore', detached: true });
  child.unref();
  const pid = child.pid as number;
  writeFileSync(join(dir, 'owner.json'), JSON.stringify({ sluicePid: spawnSync('true').pid, redisPid: pid }));
  for (let i = 0; (await probeSocket({ path: socket })) !== 'loading'; i++) {
    if (i > 500) throw new Error(`the loading redis-server of ${dir} never answered -LOADING`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    pid,
    kill() {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    },
  };
}

/** A unique key prefix and its key builder: tests sharing a server never see each other's keys. */
function fresh(): { prefix: string; keys: Keys } {
  const prefix = `t${randomUUID().slice(0, 8)}:`;
  return { prefix, keys: createKeys(prefix) };
}

/** Clients handed out by a test server, all closed by its stop(). */
function clientTracker(): { track: (c: RedisClient) => RedisClient; closeAll: () => Promise<void> } {
  const clients: RedisClient[] = [];
  return {
    track(c) {
      clients.push(c);
      return c;
    },
    async closeAll() {
      await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
    },
  };
}

/**
 * A uvu suite with a redis-server of its own, started before its first test and stopped after its
 * last: `env.redis` and `env.client` are set by then. Each test takes fresh keys with env.redis.fresh().
 */
export function redisSuite(name: string): { test: Test; env: { redis: TestRedis; client: RedisClient } } {
  const test = suite(name);
  const env = {} as { redis: TestRedis; client: RedisClient };
  test.before(async () => {
    env.redis = await startRedis();
    env.client = env.redis.client();
  });
  test.after(() => env.redis?.stop());
  return { test, env };
}

/**
 * Every key and value under `prefix` as one lower-case text (strings, hashes, lists, sets, zsets,
 * streams): what privacy tests search for an address that must be gone from every key and value.
 */
export async function keyspaceText(client: RedisClient, prefix: string): Promise<string> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    for (const key of found) {
      out.push(key);
      const type = await client.type(key);
      if (type === 'string') out.push((await client.getBuffer(key))?.toString('latin1') ?? '');
      else if (type === 'hash') out.push(...Object.entries(await client.hgetall(key)).flat());
      else if (type === 'list') out.push(...(await client.lrange(key, 0, -1)));
      else if (type === 'set') out.push(...(await client.smembers(key)));
      else if (type === 'zset') out.push(...(await client.zrange(key, 0, -1)));
      else if (type === 'stream') out.push(JSON.stringify(await client.xrange(key, '-', '+')));
      else if (type !== 'none') throw new Error(`unexpected type ${type} of ${key}`);
    }
  } while (cursor !== '0');
  return out.join('\n').toLowerCase();
}

/**
 * The commands the server ran on `key` (or any of `keys`) while `fn` ran, in the order it ran them,
 * scripts' commands included, as MONITOR saw them (the name lower-case, then the arguments): for
 * tests that a walk reads or trims a big key in bounded steps, or that one write comes before another.
 */
export async function commandsOn(redis: TestRedis, keys: string | readonly string[], fn: () => Promise<unknown>): Promise<string[][]> {
  const watched = new Set(typeof keys === 'string' ? [keys] : keys);
  const monitor = await startMonitor(redis.url);
  const seen: string[][] = [];
  const marker = `monitor-end-${randomUUID()}`;
  const ended = new Promise<void>((resolve) => {
    monitor.on('monitor', (_time: string, args: string[]) => {
      if (watched.has(args[1] as string)) seen.push([(args[0] as string).toLowerCase(), ...args.slice(1)]);
      if (args[1] === marker) resolve();
    });
  });
  try {
    await fn();
    const probe = new Redis({ path: redis.url });
    await probe.exists(marker);
    probe.disconnect();
    await ended;
  } finally {
    monitor.disconnect();
  }
  return seen;
}

/**
 * A MONITOR connection. ioredis switches a connection to monitor mode a microtask after MONITOR's
 * OK, so a monitored command arriving in the same read as the OK (a busy server) finds no command
 * waiting for it: "Command queue state error", which rejects the connection's setup. Nothing was
 * watched yet then, so a new connection is as good: up to 5 tries, each failed one closed.
 */
async function startMonitor(path: string): Promise<Redis> {
  for (let attempt = 1; ; attempt++) {
    const conn = new Redis({ path, monitor: true, lazyConnect: false });
    try {
      await new Promise<void>((resolve, reject) => {
        conn.once('monitoring', () => resolve());
        // `on`, not `once`: the rest of the same read fails the same way, and must not go unhandled.
        conn.on('error', reject);
      });
      return conn;
    } catch (err) {
      conn.disconnect();
      if (attempt === 5 || !String((err as Error).message).includes('Command queue state error')) throw err;
    }
  }
}

/**
 * A client whose every request reaches the server `delayMs` later (a unix-socket relay in front of
 * it, order kept): a Redis at a distance. Each round trip then takes at least that long whatever
 * the machine's speed, so a test can make work of N round trips outlast a lease by construction
 * instead of hoping the machine is slow enough. The relay and the client close with `close()`.
 */
export async function distantClient(redis: TestRedis, delayMs: number): Promise<{ client: RedisClient; close(): Promise<void> }> {
  const path = join(redis.dir, `relay-${randomUUID().slice(0, 8)}.sock`);
  const sockets = new Set<Socket>();
  const relay = createServer((near) => {
    const far = connect(redis.url);
    sockets.add(near).add(far);
    near.on('data', (chunk: Buffer) => void setTimeout(() => far.write(chunk), delayMs));
    far.on('data', (chunk: Buffer) => near.write(chunk));
    near.on('close', () => void setTimeout(() => far.destroy(), delayMs));
    far.on('close', () => near.destroy());
    near.on('error', () => far.destroy());
    far.on('error', () => near.destroy());
  });
  await new Promise<void>((resolve, reject) => relay.once('error', reject).listen(path, () => resolve()));
  const client = createRedis({ url: path, name: 'sluice-test-distant' });
  return {
    client,
    async close() {
      await client.quit().catch(() => client.disconnect());
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => relay.close(resolve));
    },
  };
}

/**
 * A relay in front of `redis` (a unix socket) that can lose replies: once told which requests to
 * lose (`lose`), it passes the next matching request on to Redis, lets Redis run it, and then cuts
 * the client's connection without passing the reply back — what a network drop, a proxy or Redis's
 * own `timeout` does to a command in flight. ioredis reconnects and sends the command again
 * (autoResendUnfulfilledCommands): the write runs twice unless it is safe to. `redis` is the same
 * server seen through the relay: a Sluice given it talks to Redis only through the relay.
 */
export async function replyLosingRelay(target: TestRedis): Promise<{
  redis: TestRedis;
  /** The next `times` requests (each a chunk a client wrote) whose text `match` accepts are run and their replies lost. */
  lose(match: (request: string) => boolean, times?: number): void;
  /** Replies lost so far. */
  readonly lost: number;
  close(): Promise<void>;
}> {
  // Every script known to Redis first: an EVALSHA it does not know is refused (NOSCRIPT) and sent
  // again as EVAL, so its lost reply would lose nothing.
  const loader = target.client();
  for (const s of loadScripts()) await loader.script('LOAD', s.lua);
  const path = join(target.dir, `lossy-${randomUUID().slice(0, 8)}.sock`);
  const sockets = new Set<Socket>();
  let match: ((request: string) => boolean) | null = null;
  let left = 0;
  let lost = 0;
  const relay = createServer((near) => {
    const far = connect(target.url);
    sockets.add(near).add(far);
    let cut = false;
    near.on('data', (chunk: Buffer) => {
      if (cut) return;
      if (match && match(chunk.toString('latin1'))) {
        if (--left <= 0) match = null;
        cut = true;
        lost++;
        far.write(chunk);
        // Long enough for Redis on loopback to have run it; whatever it answers meanwhile is dropped.
        setTimeout(() => {
          near.destroy();
          far.destroy();
        }, 100);
        return;
      }
      far.write(chunk);
    });
    far.on('data', (chunk: Buffer) => {
      if (!cut) near.write(chunk);
    });
    near.on('close', () => far.destroy());
    far.on('close', () => near.destroy());
    near.on('error', () => far.destroy());
    far.on('error', () => near.destroy());
  });
  await new Promise<void>((resolve, reject) => relay.once('error', reject).listen(path, () => resolve()));
  const { track, closeAll } = clientTracker();
  return {
    redis: { ...target, url: path, client: () => track(createRedis({ url: path, name: 'sluice-test-lossy' })), stop: () => target.stop() },
    lose(m, times = 1) {
      match = m;
      left = times;
    },
    get lost() {
      return lost;
    },
    async close() {
      await closeAll();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => relay.close(resolve));
    },
  };
}

/** The SHA1 Redis knows script `name` (src/queue/lua/<name>-<keys>.lua) by: what an EVALSHA of it carries. */
export function scriptSha(name: string): string {
  const s = loadScripts().find((x) => x.name === name);
  if (!s) throw new Error(`no script ${name}`);
  return createHash('sha1').update(s.lua).digest('hex');
}

/** A free TCP port on 127.0.0.1 (closed again before returning). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A real 3-master Redis Cluster on loopback: three redis-server processes in cluster mode, joined
 * with `redis-cli --cluster create`. Ports are chosen free; the cluster bus uses port + 10000, so
 * ports are picked below 55535.
 */
export interface TestCluster {
  readonly nodes: string[];
  client(): RedisClient;
  fresh(): { prefix: string; keys: Keys };
  stop(): Promise<void>;
}

async function freeClusterPort(): Promise<number> {
  for (;;) {
    const p = await freePort();
    if (p < 55535) {
      // the bus port must be free too
      const ok = await new Promise<boolean>((resolve) => {
        const s = createServer();
        s.once('error', () => resolve(false));
        s.listen(p + 10000, '127.0.0.1', () => s.close(() => resolve(true)));
      });
      if (ok) return p;
    }
  }
}

export async function startCluster(masters = 3): Promise<TestCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-cluster-'));
  const procs: ChildProcess[] = [];
  const ports: number[] = [];
  // A port found free may be taken (it or its bus port, +10000) by another test file's server before
  // this node binds it: the node then exits at once, and is started again on other ports instead of
  // being waited for until the deadline (which failed the file's whole suite in CI once).
  for (let i = 0; i < masters; i++) {
    for (let attempt = 1; ; attempt++) {
      const port = await freeClusterPort();
      const nodeDir = join(dir, String(port));
      spawnSync('mkdir', ['-p', nodeDir]);
      const proc = spawn('redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
        '--cluster-config-file', join(nodeDir, 'nodes.conf'), '--dir', nodeDir,
        '--appendonly', 'no', '--save', '', '--daemonize', 'no', '--loglevel', 'warning',
        '--cluster-node-timeout', '2000',
      ], { stdio: 'ignore' });
      let exited = false;
      proc.once('exit', () => (exited = true));
      const deadline = Date.now() + 10_000;
      while (!exited && !(await pingSocket({ port, host: '127.0.0.1' }, 200))) {
        if (Date.now() > deadline) throw new Error(`cluster node ${port} did not start`);
        await new Promise((r) => setTimeout(r, 20));
      }
      if (!exited) {
        procs.push(proc);
        ports.push(port);
        break;
      }
      if (attempt >= 5) throw new Error(`cluster node: redis-server exited at start ${attempt} times (ports taken?)`);
    }
  }
  const create = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
  if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
  // wait until every node reports cluster_state:ok
  const deadline = Date.now() + 15_000;
  for (const port of ports) {
    for (;;) {
      const r = spawnSync('redis-cli', ['-p', String(port), 'cluster', 'info'], { encoding: 'utf8' });
      if (r.stdout.includes('cluster_state:ok')) break;
      if (Date.now() > deadline) throw new Error('cluster did not reach state ok');
      await new Promise((res) => setTimeout(res, 50));
    }
  }
  const nodes = ports.map((p) => `127.0.0.1:${p}`);
  const { track, closeAll } = clientTracker();
  return {
    nodes,
    client: () => track(createRedis({ cluster: nodes, name: 'sluice-test' })),
    fresh,
    async stop() {
      await closeAll();
      await Promise.all(
        procs.map((p) => new Promise<void>((resolve) => {
          if (p.exitCode !== null) return resolve();
          p.once('exit', () => resolve());
          p.kill('SIGKILL');
        })),
      );
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
