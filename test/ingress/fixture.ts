import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request, type Dispatcher } from 'undici';
import type { Test } from 'uvu';
import { loadConfig } from '../../src/config/load.js';
import { startHttpApi, type HttpApi, type HttpApiOptions } from '../../src/ingress/http-api.js';
import type { Config } from '../../src/config/schema.js';
import { AccountRegistry } from '../../src/accounts/registry.js';
import { generateApiKey, hashSecret } from '../../src/accounts/secrets.js';
import { createLogger } from '../../src/observability/logger.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { MAX_EXPRESSIONS, MAX_NESTING, MAX_TEMPLATE_CHARS } from '../../src/render/campaign.js';

/** The brisk account's rate limit: recipients per hour (a fixed window, src/accounts/limits.ts). */
export const BRISK_PER_HOUR = 3;

/** Waits out the end of the current hour when it is near: the brisk account's window is hourly. */
export { awayFromHourBoundary } from '../helpers/clock.js';

/** Messages stored under the fixture's prefix (their records). */
export async function storedMessages(fx: IngressFixture): Promise<number> {
  return (await fx.client.keys(`${fx.keys.prefix}{m:*}:meta`)).length;
}

/** Recipients counted in the brisk account's current hourly rate window (exactly one must exist). */
export async function briskWindowCount(fx: IngressFixture): Promise<number> {
  const keys = await fx.client.keys(`${fx.keys.accountRate('brisk')}:h:*`);
  if (keys.length !== 1) throw new Error(`expected one hourly rate window, found ${keys.length}`);
  return Number(await fx.client.get(keys[0] as string));
}

/**
 * Accounts for the ingress tests, hashed with the real hashSecret:
 *   acme  — owns acme.example, no quota; API key + SMTP user acme / acme-password
 *   other — owns other.example
 *   tiny  — owns tiny.example, a daily quota of 3 recipients; SMTP user tiny / tiny-password
 *   brisk — owns brisk.example, a rate limit of 3 recipients per hour (fixed window); SMTP user
 *           brisk / brisk-password
 */
export interface IngressFixture {
  redis: TestRedis;
  client: RedisClient;
  keys: Keys;
  config: Config;
  registry: AccountRegistry;
  logger: ReturnType<typeof createLogger>;
  dataDir: string;
  apiKeys: { acme: string; other: string; tiny: string; brisk: string };
  stop(): Promise<void>;
}

/**
 * `o.trackingKeys`: a token key is configured (tracking.keys), as campaigns need for their copies'
 * unsubscribe links; without, the API takes no campaign.
 */
export async function ingressFixture(ingress: Record<string, unknown> = {}, o: { trackingKeys?: boolean } = {}): Promise<IngressFixture> {
  const redis = await startRedis();
  const client = redis.client();
  const { prefix, keys } = redis.fresh();
  const dataDir = mkdtempSync(join(tmpdir(), 'sluice-ingress-'));
  if (o.trackingKeys) writeFileSync(join(dataDir, 'k1.key'), Buffer.alloc(32, 7), { mode: 0o600 });
  const tracking = o.trackingKeys ? { tracking: { publicBaseUrl: 'http://127.0.0.1', keys: [{ id: 'k1', secretFile: join(dataDir, 'k1.key'), notAfter: null }], signWith: 'k1' } } : {};
  const apiKeys = { acme: generateApiKey('acme'), other: generateApiKey('other'), tiny: generateApiKey('tiny'), brisk: generateApiKey('brisk') };
  const noRate = { perSecond: null, perMinute: null, perHour: null };
  const config = loadConfig({
    env: {},
    overrides: {
      instance: { hostname: 'sluice.test', dataDir },
      redis: { url: redis.url, prefix, scheduleShards: 4 },
      ingress,
      ...tracking,
      accounts: [
        {
          id: 'acme', domains: [{ domain: 'Acme.Example', dkim: [] }], apiKeys: [await hashSecret(apiKeys.acme)],
          smtpUsers: [{ username: 'acme', passwordHash: await hashSecret('acme-password') }], dailyQuota: null, rateLimit: noRate,
        },
        { id: 'other', domains: [{ domain: 'other.example', dkim: [] }], apiKeys: [await hashSecret(apiKeys.other)], smtpUsers: [], dailyQuota: null, rateLimit: noRate },
        {
          id: 'tiny', domains: [{ domain: 'tiny.example', dkim: [] }], apiKeys: [await hashSecret(apiKeys.tiny)],
          smtpUsers: [{ username: 'tiny', passwordHash: await hashSecret('tiny-password') }], dailyQuota: 3, rateLimit: noRate,
        },
        {
          id: 'brisk', domains: [{ domain: 'brisk.example', dkim: [] }], apiKeys: [await hashSecret(apiKeys.brisk)],
          smtpUsers: [{ username: 'brisk', passwordHash: await hashSecret('brisk-password') }], dailyQuota: null,
          rateLimit: { perSecond: null, perMinute: null, perHour: BRISK_PER_HOUR },
        },
      ],
    },
  });
  return {
    redis, client, keys, config, registry: new AccountRegistry(config.accounts), logger: createLogger('silent'), dataDir, apiKeys,
    async stop() {
      await redis.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The HTTP API on an ephemeral loopback port over a fixture's Redis and accounts. */
export async function startFixtureApi(fx: IngressFixture, opts: HttpApiOptions = {}): Promise<{ api: HttpApi; base: string }> {
  const api = await startHttpApi({ redis: fx.client, keys: fx.keys, config: fx.config, registry: fx.registry, logger: fx.logger }, { ...opts, host: '127.0.0.1', port: 0 });
  return { api, base: `http://127.0.0.1:${api.port}` };
}

/**
 * A suite's HTTP API over a fresh fixture: started before its tests, closed after them. `ready`
 * receives the fixture and the API's base URL.
 */
export function withFixtureApi(test: Test, ready: (fx: IngressFixture, base: string) => void, ingress: Record<string, unknown> = {}): void {
  let fx: IngressFixture | undefined;
  let api: HttpApi | undefined;
  test.before(async () => {
    fx = await ingressFixture(ingress);
    const started = await startFixtureApi(fx);
    api = started.api;
    ready(fx, started.base);
  });
  test.after(async () => {
    await api?.close();
    await fx?.stop();
  });
}

/**
 * One request to the HTTP API at `base`, answered with its status, headers, body text and parsed
 * JSON ({} when empty). `key` goes as the bearer token (none when null); `body` as JSON, or as it is
 * when it is a string (for the malformed-body cases).
 */
export async function apiCall<J = Record<string, any>>(
  base: string,
  method: Dispatcher.HttpMethod,
  path: string,
  opts: { body?: unknown; key?: string | null; headers?: Record<string, string> } = {},
) {
  const { body, key = null, headers = {} } = opts;
  const res = await request(base + path, {
    method,
    headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text, json: (text ? JSON.parse(text) : {}) as J };
}

/**
 * A campaign html template at every limit of render/campaign.ts at once, the most preparation work
 * one campaign can ask for: ~1 MB, 1,000 expressions, 50 nested blocks, 900 tracked links.
 */
export function limitCampaignHtml(): string {
  let html = `<html><body>${'{{#if vip}}'.repeat(MAX_NESTING)}x${'{{/if}}'.repeat(MAX_NESTING)}`;
  for (let i = 0; i < MAX_EXPRESSIONS - 2 * MAX_NESTING; i++) html += `<p>Hello {{first}} <a href="https://shop.acme.example/p/${i}">item ${i}</a></p>\n`;
  const pad = `<p>${'lorem ipsum dolor sit amet '.repeat(10)}</p>\n`;
  while (html.length + pad.length + 20 < MAX_TEMPLATE_CHARS) html += pad;
  return `${html}</body></html>`;
}
