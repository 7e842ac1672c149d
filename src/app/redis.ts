import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { createRedis, checkRedisVersion, type RedisClient } from '../redis/client.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../redis/embedded.js';

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
  /** Opens another connection (blocking reads must not share the main one). */
  duplicate(name: string): RedisClient;
  close(): Promise<void>;
}

export async function openRedis(config: Config, logger: Logger): Promise<RedisHandle> {
  const r = config.redis;
  let embedded: EmbeddedRedis | null = null;
  let url = r.url;
  if (!url && r.cluster.length === 0) {
    embedded = await startEmbeddedRedis({
      binary: r.embedded.binary,
      dir: join(config.instance.dataDir, r.embedded.dir),
      maxmemory: r.embedded.maxmemory,
      appendfsync: r.durability === 'strict' ? 'always' : 'everysec',
    });
    url = embedded.socket;
    logger.info({ socket: embedded.socket, pid: embedded.pid }, 'embedded redis-server started');
  }
  const connect = (name: string) => createRedis({ url, cluster: r.cluster, name });
  const client = connect('sluice');
  client.on('error', (err: Error) => logger.warn({ err: { message: err.message } }, 'redis connection error'));
  let version: string;
  try {
    version = await checkRedisVersion(client);
  } catch (err) {
    client.disconnect();
    await embedded?.stop();
    throw err;
  }
  const address = r.cluster.length > 0 ? `cluster ${r.cluster.join(',')}` : (url ?? '').replace(/\/\/([^@/]*)@/, '//[redacted]@');
  const extra: RedisClient[] = [];
  return {
    client,
    embedded,
    version,
    address,
    duplicate(name: string) {
      const c = connect(name);
      extra.push(c);
      return c;
    },
    async close() {
      for (const c of [...extra, client]) await c.quit().catch(() => c.disconnect());
      await embedded?.stop();
    },
  };
}
