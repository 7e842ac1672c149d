import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { createRedis, checkRedisVersion, type ConnectOptions, type RedisClient } from '../redis/client.js';
import { masterNodes } from '../redis/nodes.js';
import { exitReport, startEmbeddedRedis, type EmbeddedRedis } from '../redis/embedded.js';
import { SluiceError } from '../core/errors.js';
import { Cluster } from 'ioredis';
import { redactUrlCredentials } from '../core/redact-url.js';

/** Longest a strict-mode accept waits for the fsync before refusing (the client then retries). */
const WAITAOF_TIMEOUT_MS = 2_000;
/** Longest close() waits for a connection's QUIT (its commands still pending are answered first). */
const QUIT_TIMEOUT_MS = 2_000;

/**
 * Ends one connection within QUIT_TIMEOUT_MS. QUIT is sent after the commands already queued, so
 * they are answered first; a connection that is not up is dropped at once (its queue would wait for
 * a reconnection that is not coming: commands never give up, see redis/client.ts).
 */
async function closeConnection(c: RedisClient): Promise<void> {
  if (c.status !== 'ready') {
    c.disconnect();
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const quit = c.quit().then(() => true, () => false);
  const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), QUIT_TIMEOUT_MS)));
  const ok = await Promise.race([quit, late]);
  clearTimeout(timer);
  if (!ok) c.disconnect();
}

/**
 * Ends a connection to a server that is gone, failing the commands waiting in it and any sent later.
 * disconnect() alone leaves a connection that is between two reconnection attempts 'reconnecting'
 * for ever, its queued commands and later ones waiting (ioredis fails them when a socket closes, and
 * it has none then): what its close handler would do is done here (ioredis 5 internals, so each is
 * called only if present; test/app/embedded-start.test.ts hangs if they are gone).
 */
function dropConnection(c: RedisClient): void {
  c.disconnect();
  if (c.status === 'end') return;
  const internals = c as unknown as { flushQueue?: (err: Error) => void; setStatus?: (status: string) => void };
  internals.setStatus?.('end');
  internals.flushQueue?.(new Error('Connection is closed (the embedded redis-server exited).'));
}

/**
 * Strict durability: a message is acknowledged only once it is on disk. A server with
 * `appendfsync always` fsyncs before it replies, so nothing more is needed. Otherwise WAITAOF
 * (Redis 7.2+) waits for the local fsync. Anything else cannot give the guarantee: refused at start.
 */
async function strictBarrier(client: RedisClient, version: string): Promise<(() => Promise<void>) | undefined> {
  const nodes = await masterNodes(client);
  const fsyncs = await Promise.all(
    nodes.map((n) => n.config('GET', 'appendfsync').then((r) => (r as string[])[1] ?? '', () => 'unknown')),
  );
  if (fsyncs.every((f) => f === 'always')) return undefined;
  const [maj, min] = version.split('.').map(Number) as [number, number];
  if (!(client instanceof Cluster) && (maj > 7 || (maj === 7 && min >= 2))) {
    return async () => {
      const res = (await client.call('WAITAOF', '1', '0', String(WAITAOF_TIMEOUT_MS))) as [number, number];
      if (!Array.isArray(res) || Number(res[0]) < 1) {
        throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'the write could not be confirmed on disk in time (strict durability)');
      }
    };
  }
  throw new SluiceError(
    'SLUICE_CONFIG_INVALID',
    `redis.durability 'strict' needs a Redis server with appendfsync always (found: ${fsyncs.join(', ')}) or Redis 7.2+ for WAITAOF (found ${version}); ` +
      "set 'appendfsync always' on the server or use durability 'everysec'",
  );
}

/**
 * Connects to the configured Redis, or starts the embedded one when none is configured
 * (redis.url null and no cluster seeds): a private redis-server on a unix socket under
 * instance.dataDir, AOF on (fsync always in strict durability mode).
 */
export interface RedisHandle {
  readonly client: RedisClient;
  readonly embedded: EmbeddedRedis | null;
  readonly version: string;
  /** Where it connected: socket path, redis URL (password redacted) or cluster seeds. */
  readonly address: string;
  /**
   * In strict durability mode with a server that does not fsync every write: waits until the
   * writes of this connection are fsynced (WAITAOF, Redis 7.2+). Undefined when not needed.
   */
  readonly confirmDurable: (() => Promise<void>) | undefined;
  /** Where it connected, for a worker thread to open a connection of its own. */
  readonly connectOptions: ConnectOptions;
  /** Opens another connection (its errors logged like the main one's): for work that must not queue behind the main one's commands. */
  duplicate(name: string): RedisClient;
  /** Ends every connection at once, failing their waiting commands: the embedded server died during start-up. */
  abandon(): void;
  /** Whether the main connection is up (false while it reconnects). */
  reachable(): boolean;
  /**
   * Closes every connection (each QUIT bounded; a connection that is down is dropped), then stops the
   * embedded server. Never waits for Redis longer than a few seconds.
   */
  close(): Promise<void>;
}

/**
 * Why Sluice cannot go on, when the embedded server exited `how` `when` ('while Sluice ran', 'during
 * start-up'): its pid, exit and last log lines.
 */
export function embeddedExitReason(embedded: EmbeddedRedis, how: string, when: string): string {
  return `the embedded redis-server (pid ${embedded.pid}) exited ${when} (${exitReport(embedded.logFile, how)})`;
}

/** `signal`: gives up the start of the embedded server (see EmbeddedOptions.signal). */
export async function openRedis(config: Config, logger: Logger, signal?: AbortSignal): Promise<RedisHandle> {
  const r = config.redis;
  let embedded: EmbeddedRedis | null = null;
  let url = r.url;
  if (!url && r.cluster.length === 0) {
    embedded = await startEmbeddedRedis({
      binary: r.embedded.binary,
      dir: join(config.instance.dataDir, r.embedded.dir),
      maxmemory: r.embedded.maxmemory,
      aofRewriteMinSize: r.embedded.aofRewriteMinSize,
      snapshotIntervalS: r.embedded.snapshotInterval === null ? null : r.embedded.snapshotInterval / 1000,
      appendfsync: r.durability === 'strict' ? 'always' : 'everysec',
      ...(signal ? { signal } : {}),
    });
    url = embedded.socket;
    logger.info({ socket: embedded.socket, redisPid: embedded.pid, adopted: embedded.adopted ?? false }, embedded.adopted ? 'embedded redis-server adopted (left running by a Sluice that died)' : 'embedded redis-server started');
  }
  const connect = (name: string) => createRedis({ url, cluster: r.cluster, name });
  const client = connect('sluice');
  client.on('error', (err: Error) => logger.warn({ err: { message: err.message } }, 'redis connection error'));
  // The embedded server dying before this returns (startSluice watches it from then on): the
  // connection would retry for ever and the start never end. Dropped, its commands fail at once.
  let opened = false;
  let died: string | null = null;
  embedded?.onExit((how) => {
    if (opened) return;
    died = how;
    dropConnection(client);
  });
  const failed = async (err: unknown): Promise<never> => {
    client.disconnect();
    await embedded?.stop();
    if (died !== null && embedded) throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', embeddedExitReason(embedded, died, 'during start-up'), { cause: err });
    throw err;
  };
  let version: string;
  try {
    version = await checkRedisVersion(client);
  } catch (err) {
    return failed(err);
  }
  let confirmDurable: (() => Promise<void>) | undefined;
  if (r.durability === 'strict') {
    try {
      confirmDurable = await strictBarrier(client, version);
    } catch (err) {
      return failed(err);
    }
  }
  opened = true;
  const address = r.cluster.length > 0 ? `cluster ${r.cluster.join(',')}` : redactUrlCredentials(url ?? '');
  const extra: RedisClient[] = [];
  let abandoned = false;
  return {
    client,
    embedded,
    version,
    address,
    confirmDurable,
    connectOptions: { url, cluster: r.cluster },
    duplicate(name: string) {
      const c = connect(name);
      c.on('error', (err: Error) => logger.warn({ err: { message: err.message }, connection: name }, 'redis connection error'));
      extra.push(c);
      if (abandoned) dropConnection(c);
      return c;
    },
    abandon() {
      abandoned = true;
      for (const c of [...extra, client]) dropConnection(c);
    },
    reachable: () => client.status === 'ready',
    async close() {
      await Promise.all([...extra, client].map(closeConnection));
      if (embedded) {
        await embedded.stop();
        logger.info({ redisPid: embedded.pid }, 'embedded redis-server stopped');
      }
    },
  };
}
