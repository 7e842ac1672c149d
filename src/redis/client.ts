import { Redis, Cluster, type RedisOptions } from 'ioredis';
import { SluiceError } from '../core/errors.js';
import { defineScripts } from './scripts.js';
import { masterNodes } from './nodes.js';

/** A connection to Redis: a single server or a cluster. All Sluice code takes this type. */
export type RedisClient = Redis | Cluster;

export interface ConnectOptions {
  /** redis://…, rediss://…, or a unix socket path. */
  url?: string | null;
  /** Cluster seed nodes 'host:port'. */
  cluster?: readonly string[];
  /** Name shown in CLIENT LIST. */
  name?: string;
  /** Fail commands at once instead of queueing them while disconnected. */
  lazy?: boolean;
}

const BASE: RedisOptions = {
  // Keep retrying: a Redis restart must not kill Sluice; commands wait in the offline queue.
  retryStrategy: (times) => Math.min(50 * 2 ** times, 2000),
  maxRetriesPerRequest: null,
  enableAutoPipelining: true,
};

export function createRedis(opts: ConnectOptions): RedisClient {
  const name = opts.name ?? 'sluice';
  let client: RedisClient;
  if (opts.cluster && opts.cluster.length > 0) {
    const nodes = opts.cluster.map((hp) => {
      const i = hp.lastIndexOf(':');
      // '[2001:db8::7]:6379': the address without its brackets (the config checked the form).
      return { host: hp.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(hp.slice(i + 1)) };
    });
    client = new Cluster(nodes, { redisOptions: { ...BASE, connectionName: name }, enableAutoPipelining: true, scaleReads: 'master' });
  } else if (opts.url && (opts.url.startsWith('redis://') || opts.url.startsWith('rediss://'))) {
    client = new Redis(opts.url, { ...BASE, connectionName: name });
  } else if (opts.url) {
    const path = opts.url.startsWith('unix://') ? opts.url.slice('unix://'.length) : opts.url;
    client = new Redis({ ...BASE, path, connectionName: name });
  } else {
    throw new SluiceError('SLUICE_CONFIG_INVALID', 'no Redis address: set redis.url / REDIS_URL or redis.cluster');
  }
  defineScripts(client);
  return client;
}

/**
 * Throws SLUICE_REDIS_UNAVAILABLE unless the connection is up. The client keeps its commands in the
 * offline queue while it reconnects (so work in progress survives a Redis restart), which means a
 * request that starts during an outage would wait for the whole outage. The ingress servers call this
 * first, so a client is told at once to retry later (503 / 451) instead of hanging.
 */
export function assertRedisReady(client: RedisClient): void {
  if (client.status !== 'ready') throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `Storage is unavailable (Redis connection ${client.status}), try again later`);
}

/** Checks the server answers and is recent enough (ZADD GT/LT and GETDEL need 6.2). */
export async function checkRedisVersion(client: RedisClient): Promise<string> {
  const [node] = await masterNodes(client);
  if (!node) throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', 'no Redis node reachable');
  const info = await node.info('server');
  const m = /redis_version:(\d+)\.(\d+)\.(\d+)/.exec(info);
  if (!m) throw new SluiceError('SLUICE_REDIS_VERSION', 'cannot read the Redis version');
  const [maj, min] = [Number(m[1]), Number(m[2])];
  if (maj < 6 || (maj === 6 && min < 2)) {
    throw new SluiceError('SLUICE_REDIS_VERSION', `Redis ${m[1]}.${m[2]}.${m[3]} is too old; Sluice needs 6.2 or newer`);
  }
  return `${m[1]}.${m[2]}.${m[3]}`;
}
