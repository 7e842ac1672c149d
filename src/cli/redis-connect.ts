import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { SluiceError } from '../core/errors.js';
import { createRedis, type RedisClient } from '../redis/client.js';
import { redactUrlCredentials } from '../core/redact-url.js';

// The shared client retries forever (right for a server, which must survive a Redis restart); a
// command at a prompt must say at once that nothing answers. Five seconds covers a remote Redis
// over a slow link; a refused or missing socket fails on the first error, sooner.
const CONNECT_TIMEOUT_MS = 5_000;

/**
 * A Redis connection for a command that reads or changes state directly (REDIS_URL, the cluster
 * seeds, or the embedded server's socket of a 'sluice start' on this machine). Resolves once Redis
 * answers PING; the caller disconnects it.
 */
export async function connectForCommand(cfg: Config): Promise<RedisClient> {
  let url = cfg.redis.url;
  if (!url && cfg.redis.cluster.length === 0) {
    url = join(cfg.instance.dataDir, cfg.redis.embedded.dir, 'redis.sock');
    if (!existsSync(url)) throw new SluiceError('SLUICE_REDIS_UNAVAILABLE', `no Redis: REDIS_URL is unset and no embedded server runs at ${url} (is 'sluice start' running here?)`);
  }
  const where = cfg.redis.cluster.length > 0 ? `cluster ${cfg.redis.cluster.join(',')}` : redactUrlCredentials(url as string);
  const redis = createRedis({ url, cluster: cfg.redis.cluster, name: 'sluice-cli' });
  // Connection errors are reported once, below; without a listener ioredis would also print each
  // retry's error on the console.
  redis.on('error', () => undefined);
  let onError: ((err: Error) => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise<never>((_, reject) => {
        onError = (err) => reject(new SluiceError('SLUICE_REDIS_UNAVAILABLE', `cannot reach Redis at ${where}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err }));
        redis.on('error', onError);
        timer = setTimeout(() => reject(new SluiceError('SLUICE_REDIS_UNAVAILABLE', `cannot reach Redis at ${where}: no answer within ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
      }),
    ]);
  } catch (err) {
    redis.disconnect();
    throw err;
  } finally {
    clearTimeout(timer);
    if (onError) redis.off('error', onError);
  }
  return redis;
}
