import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { randomBytes } from 'node:crypto';
import { createTokenCodec, type TokenCodec } from '../../src/core/tokens.js';
import { loadConfig, merge } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { generateApiKey, hashSecret } from '../../src/accounts/secrets.js';
import { createLogger } from '../../src/observability/logger.js';
import { startSluice, type RunningSluice } from '../../src/app/start.js';
import type { ReloadResult } from '../../src/app/reload.js';
import { makeKey, txtTable, type TestKey } from './dkim-verify.js';
import { startRedis, type TestRedis } from './redis.js';
import { startCapturePeer, type CapturePeer } from './smtp-peer.js';

/**
 * A whole Sluice for end-to-end tests: one account ('acme', domain acme.example) with an RSA-2048
 * and an Ed25519 DKIM key (dual signing), an API key and an SMTP user; every port ephemeral; the
 * test's own Redis with a fresh prefix; retries short so deferrals are seen within a test.
 */
export interface SluiceFixture {
  app: RunningSluice;
  config: Config;
  /** The API key api() sends (a test that rotates acme's key sets the new one here). */
  apiKey: string;
  smtpUser: { user: string; pass: string };
  dkimKeys: TestKey[];
  /** TXT records of the DKIM keys, for the verifiers. */
  txt: Record<string, string>;
  /** The folder of the key files (and dataDir): makeAccount(dir, …) writes another account's there. */
  dir: string;
  /** 'acme' as configured (makeAccount's `account`), for a reload that keeps it. */
  account: Record<string, unknown>;
  /** With `start.tracking`: a codec of the configured token key, to mint the links a copy carries. */
  codec?: TokenCodec;
  /** The configuration as the test gave it (before loading), deep-merged with `patch` (lists replace), reloaded (RunningSluice.reload). */
  reloadWith(patch: Record<string, unknown>): Promise<ReloadResult>;
  api(path: string, init?: { method?: string; body?: unknown; headers?: Record<string, string> }): Promise<{ status: number; body: any }>;
  /** Polls GET /v1/messages/:id until every recipient is in a final state (or timeout). */
  waitFinal(id: string, timeoutMs?: number): Promise<any>;
  /** Polls GET /v1/messages/:id until its first recipient is in `state`; returns that recipient as last seen (the caller asserts). */
  waitRecipient(id: string, state: string, timeoutMs?: number): Promise<any>;
  /**
   * Polls until delivery is done with message `id` (not a campaign): its body goes when its last
   * recipient is counted off, the last step of an outcome (settle), after any suppression. What a
   * final state (waitFinal) shows comes first, so "nothing was suppressed" is read after this.
   */
  waitSettled(id: string, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface AccountKeys {
  dir: string;
  apiKey: string;
  smtpPass: string;
  dkimKeys: TestKey[];
  account: Record<string, unknown>;
}

/** An account with fresh keys written to files under `dir`. */
export async function makeAccount(dir: string, id = 'acme', domain = 'acme.example', algorithms: ('rsa' | 'ed25519')[] = ['rsa', 'ed25519']): Promise<AccountKeys> {
  const dkimKeys = algorithms.map((a, i) => makeKey(domain, `s${i}${a}`, a));
  const dkim = dkimKeys.map((k) => {
    const file = join(dir, `${k.selector}.pem`);
    writeFileSync(file, k.privateKeyPem, { mode: 0o600 });
    return { selector: k.selector, algorithm: k.algorithm, keyFile: file };
  });
  const apiKey = generateApiKey(id);
  const smtpPass = `${id}-smtp-password`;
  return {
    dir, apiKey, smtpPass, dkimKeys,
    account: {
      id, domains: [{ domain, dkim }], apiKeys: [await hashSecret(apiKey)],
      smtpUsers: [{ username: id, passwordHash: await hashSecret(smtpPass) }], dailyQuota: null,
      rateLimit: { perSecond: null, perMinute: null, perHour: null },
    },
  };
}

/**
 * `start.mxPort`: the port MX hosts are reached on (peers on loopback addresses share an ephemeral one).
 * `start.extraAccounts`: more accounts beside 'acme' (makeAccount(...).account).
 * `start.tracking`: a token key (k1) written and configured, the tracking server on an ephemeral port
 * when `roles` has 'tracking', and `codec` for the test (campaigns need the key: their unsubscribe links).
 */
export async function startSluiceFixture(redis: TestRedis, overrides: Record<string, unknown> = {}, start: { mxPort?: number; extraAccounts?: Record<string, unknown>[]; tracking?: boolean } = {}): Promise<SluiceFixture> {
  const dataDir = mkdtempSync(join(tmpdir(), 'sluice-e2e-'));
  const acct = await makeAccount(dataDir);
  const { prefix } = redis.fresh();
  const secret = randomBytes(32);
  if (start.tracking) writeFileSync(join(dataDir, 'k1.key'), secret, { mode: 0o600 });
  const base = {
    roles: ['ingress', 'delivery', 'housekeeping'],
    instance: { hostname: 'sluice.test', dataDir },
    log: { level: 'silent' },
    redis: { url: redis.url, prefix, scheduleShards: 4 },
    admin: { host: '127.0.0.1', port: 0 },
    ingress: { smtp: { host: '127.0.0.1', port: 0 }, http: { host: '127.0.0.1', port: 0 } },
    delivery: { pollInterval: '50ms', pool: { threads: 1 }, dns: { servers: ['127.0.0.1:9'], timeout: '1s' } },
    shaping: { default: { retry: ['300ms', '600ms'] } },
    accounts: [acct.account, ...(start.extraAccounts ?? [])],
    ...(start.tracking ? { tracking: { host: '127.0.0.1', port: 0, publicBaseUrl: 'http://127.0.0.1', keys: [{ id: 'k1', secretFile: join(dataDir, 'k1.key'), notAfter: null }], signWith: 'k1' } } : {}),
  };
  const raw = merge(base, overrides);
  const config = loadConfig({ env: {}, overrides: raw });
  const app = await startSluice(config, { logger: createLogger(process.env['TEST_LOG'] ?? 'silent'), ...(start.mxPort !== undefined ? { mxPort: start.mxPort } : {}) });
  const url = `http://127.0.0.1:${app.ports.http}`;
  const api: SluiceFixture['api'] = async (path, init = {}) => {
    const res = await request(url + path, {
      method: (init.method ?? (init.body !== undefined ? 'POST' : 'GET')) as 'GET',
      headers: { authorization: `Bearer ${fixture.apiKey}`, ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}), ...init.headers },
      ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
    });
    const text = await res.body.text();
    return { status: res.statusCode, body: text ? JSON.parse(text) : null };
  };
  /** GET /v1/messages/:id every 50 ms until `done` says so of its recipients, or until timeoutMs. */
  const pollStatus = async (id: string, timeoutMs: number, done: (rcpts: { state: string }[]) => boolean): Promise<{ body: any; done: boolean }> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await api(`/v1/messages/${id}`);
      if (done((r.body?.recipients ?? []) as { state: string }[])) return { body: r.body, done: true };
      if (Date.now() > deadline) return { body: r.body, done: false };
      await new Promise((res) => setTimeout(res, 50));
    }
  };
  const fixture: SluiceFixture = {
    app, config, apiKey: acct.apiKey, smtpUser: { user: 'acme', pass: acct.smtpPass }, dkimKeys: acct.dkimKeys, txt: txtTable(acct.dkimKeys), api,
    dir: dataDir, account: acct.account,
    ...(start.tracking ? { codec: createTokenCodec({ keys: [{ id: 'k1', secret }], signWith: 'k1' }) } : {}),
    reloadWith: (patch) => app.reload(() => loadConfig({ env: {}, overrides: merge(raw, patch) })),
    async waitFinal(id, timeoutMs = 15_000) {
      const { body, done } = await pollStatus(id, timeoutMs, (rcpts) => rcpts.length > 0 && rcpts.every((x) => ['delivered', 'bounced', 'expired', 'suppressed', 'cancelled'].includes(x.state)));
      if (!done) throw new Error(`message ${id} not final after ${timeoutMs} ms: ${JSON.stringify(body)}`);
      return body;
    },
    async waitRecipient(id, state, timeoutMs = 15_000) {
      return (await pollStatus(id, timeoutMs, (rcpts) => rcpts[0]?.state === state)).body?.recipients?.[0];
    },
    async waitSettled(id, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while ((await app.redis.client.exists(app.keys.msgBody(id))) === 1) {
        if (Date.now() > deadline) throw new Error(`message ${id} still has its body after ${timeoutMs} ms: its outcome did not finish`);
        await new Promise((res) => setTimeout(res, 25));
      }
    },
    async stop() {
      await app.stop(2000);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return fixture;
}

/** A whole Sluice on a Redis of its own that delivers every destination to one capture peer. */
export interface PeerSluice {
  redis: TestRedis;
  peer: CapturePeer;
  s: SluiceFixture;
  /** Stops Sluice, then the peer, then Redis. */
  stop(): Promise<void>;
}

export async function startSluiceWithPeer(): Promise<PeerSluice> {
  const redis = await startRedis();
  const peer = await startCapturePeer().catch(async (err: unknown) => {
    await redis.stop();
    throw err;
  });
  try {
    const s = await startSluiceFixture(redis, { delivery: { transport: { '*': `127.0.0.1:${peer.port}` } } });
    return {
      redis, peer, s,
      async stop() {
        await s.stop();
        await peer.close();
        await redis.stop();
      },
    };
  } catch (err) {
    await peer.close();
    await redis.stop();
    throw err;
  }
}
