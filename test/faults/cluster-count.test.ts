import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { startCluster, type TestCluster } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { writeSluiceConfig, startSluiceProcess, killAllSluiceProcesses, callApi, sleep, type SluiceInstance, type SluiceProcess } from '../helpers/sluice-process.js';
import { createKeys } from '../../src/redis/keys.js';
import { createList } from '../../src/store/contacts.js';
import { importContacts } from '../../src/store/contact-import.js';

/**
 * Fault: on a Redis Cluster a campaign copy's outcome (its destination's slot) and its count on the
 * campaign (the campaign's slot) are two calls; a process killed between them lost the count, and
 * the campaign stayed `sending` for good. Made deterministic: the campaign's count bitmap is made a
 * SET before it starts, so every count fails before it writes anything (WRONGTYPE), leaving what a
 * kill right after each outcome leaves; then the process is killed, the bitmap freed, and a new
 * process started. Each outcome noted the count it owed (queue/lua/lib/owed.lua): the new process's
 * reaper makes them, once, and the campaign completes without a copy sent again.
 */
const test = suite('faults/cluster-count');

const N = 40;
const DOMAINS = Array.from({ length: 7 }, (_, i) => `d${i}.test`);
let cluster: TestCluster;
let peer: CapturePeer;
let inst: SluiceInstance | undefined;
let keyDir: string | undefined;

test.before(async () => {
  cluster = await startCluster();
  peer = await startCapturePeer();
});

test.after(async () => {
  await killAllSluiceProcesses();
  await peer?.close();
  await cluster?.stop();
  inst?.remove();
  if (keyDir) rmSync(keyDir, { recursive: true, force: true });
});

test('counts a killed process owed its campaign are made by the next one: the campaign completes, each copy sent and counted once', async () => {
  const prefix = 'cc:';
  const keys = createKeys(prefix);
  const redis = cluster.client();
  // Campaign copies carry their one-click unsubscribe link: a token key.
  keyDir = mkdtempSync(join(tmpdir(), 'sluice-cc-'));
  const keyFile = join(keyDir, 'k1.key');
  writeFileSync(keyFile, randomBytes(32), { mode: 0o600 });
  inst = await writeSluiceConfig({
    redisUrl: null, prefix, transport: { '*': `127.0.0.1:${peer.port}` },
    overrides: {
      redis: { cluster: cluster.nodes }, delivery: { lease: '2s' },
      tracking: { host: '127.0.0.1', port: 0, publicBaseUrl: 'http://127.0.0.1', keys: [{ id: 'k1', secretFile: keyFile, notAfter: null }], signWith: 'k1' },
    },
  });
  const first: SluiceProcess = await startSluiceProcess(inst);
  let p = first;
  const api = (path: string, body?: unknown) => callApi(p.ports.http!, inst!.account.apiKey, path, body);

  const list = await createList(redis, keys, 'acme', 'kill');
  const rows = Array.from({ length: N }, (_, i) => JSON.stringify({ email: `c${i}@${DOMAINS[i % DOMAINS.length]}` })).join('\n');
  await importContacts(redis, keys, 'acme', list.id, Readable.from([Buffer.from(rows)]), { format: 'ndjson', limits: { maxBytes: 1_000_000, maxRows: 1000 } });
  const created = await api('/v1/campaigns', { name: 'kill', from: 'news@acme.example', subject: 'kill', text: 'hi', listId: list.id });
  assert.is(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  await redis.sadd(keys.copiesCounted(id), 'poison'); // every count refused until it is deleted
  assert.is((await api(`/v1/campaigns/${id}/schedule`, {})).status, 200);

  const sum = async (f: (d: string) => Promise<number>) => (await Promise.all(DOMAINS.map(f))).reduce((a, b) => a + b, 0);
  const owed = () => sum((d) => redis.zcard(keys.owed(d)));
  const queued = () => sum(async (d) => (await redis.zcard(keys.ready(d))) + (await redis.zcard(keys.leases(d))) + (await redis.llen(keys.campaignQueue(d, id))));
  for (let i = 0; i < 600 && !((await owed()) === N && (await queued()) === 0); i++) await sleep(100);
  assert.is(await owed(), N, 'every outcome written, and its count owed');
  const before = (await api(`/v1/campaigns/${id}/stats`)).body as { state: string; pending: number; delivered: number };
  assert.equal([before.state, before.pending, before.delivered], ['sending', N, 0], 'no count made');
  assert.ok(first.logs.some((l) => /could not count the outcome/.test(String(l.msg))), 'the failed counts are logged');

  first.signal('SIGKILL');
  await first.waitExit();
  await redis.del(keys.copiesCounted(id));
  p = await startSluiceProcess(inst);
  let s: { state?: string; pending?: number; delivered?: number } = {};
  for (let i = 0; i < 300 && s.state !== 'completed'; i++) {
    await sleep(100);
    s = (await api(`/v1/campaigns/${id}/stats`)).body;
  }
  assert.equal([s.state, s.pending, s.delivered], ['completed', 0, N], JSON.stringify(s));
  assert.is(await owed(), 0, 'nothing left owed');
  assert.is(await redis.bitcount(keys.copiesCounted(id)), N, 'each copy counted once');
  await sleep(500);
  const got = peer.messages.filter((m) => m.raw.toString('latin1').includes('Subject: kill'));
  assert.is(got.length, N, 'no copy sent again');
  assert.is(new Set(got.map((m) => m.envelope.to[0])).size, N);
});

test.run();
