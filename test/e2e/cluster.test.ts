import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Cluster, Redis } from 'ioredis';
import { startCluster, type TestCluster, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { scanNodes } from '../../src/store/retention.js';
import { verifyWithMailauth } from '../helpers/dkim-verify.js';
import { Readable } from 'node:stream';
import { createList } from '../../src/store/contacts.js';
import { importContacts } from '../../src/store/contact-import.js';

/**
 * A whole Sluice (`startSluice`, as `sluice start` runs it) on a real 3-master Redis Cluster: the
 * queue's flows are proven on the cluster by test/queue/cluster.test.ts; this proves the program
 * starts and delivers on one, and walks every master.
 */
const test = suite('e2e/cluster');

let cluster: TestCluster;
let peer: CapturePeer;
let s: SluiceFixture;

test.before(async () => {
  cluster = await startCluster();
  peer = await startCapturePeer();
  // The fixture's Redis is the cluster: `redis.cluster` set, `url` is then ignored. The token key:
  // a campaign's copies carry their one-click unsubscribe link.
  const shim = { url: 'redis://127.0.0.1:1', fresh: () => cluster.fresh() } as unknown as TestRedis;
  s = await startSluiceFixture(shim, {
    redis: { cluster: cluster.nodes },
    delivery: { transport: { '*': `127.0.0.1:${peer.port}` } },
  }, { tracking: true });
});

test.after(async () => {
  await s?.stop();
  await peer?.close();
  await cluster?.stop();
});

test('sluice starts on a cluster, accepts by the HTTP API and delivers, signed', async () => {
  assert.ok(s.app.redis.client instanceof Cluster, 'the app runs on the cluster');
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: ['ann@one.test', 'bob@two.test'], subject: 'on a cluster', text: 'hello' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const final = await s.waitFinal(r.body.id);
  assert.equal(final.recipients.map((x: { state: string }) => x.state), ['delivered', 'delivered']);
  const got = peer.messages.filter((m) => m.raw.toString('latin1').includes('on a cluster'));
  assert.equal(got.map((m) => m.envelope.to[0]).sort(), ['ann@one.test', 'bob@two.test']);
  const checks = await verifyWithMailauth(got[0]!.raw, s.txt);
  assert.ok(checks.length === 2 && checks.every((c) => c.pass), JSON.stringify(checks));
});

test('a campaign completes on a cluster: every copy delivered once and counted (its count and its outcome are in two slots)', async () => {
  const client = s.app.redis.client;
  const list = await createList(client, s.app.keys, 'acme', 'cluster');
  const N = 40;
  const rows = Array.from({ length: N }, (_, i) => JSON.stringify({ email: `c${i}@d${i % 7}.test` })).join('\n');
  assert.is((await importContacts(client, s.app.keys, 'acme', list.id, Readable.from([Buffer.from(rows)]), { format: 'ndjson', limits: { maxBytes: 1_000_000, maxRows: 1000 } })).imported, N);
  const created = await s.api('/v1/campaigns', { body: { from: 'news@acme.example', subject: 'cluster', text: 'hi', listId: list.id, sendAt: 'now' } });
  assert.is(created.status, 201, JSON.stringify(created.body));
  let stats: { state?: string; delivered?: number; pending?: number } = {};
  for (const until = Date.now() + 60_000; stats.state !== 'completed' && Date.now() < until; await new Promise((r) => setTimeout(r, 100))) {
    stats = (await s.api(`/v1/campaigns/${created.body.id}/stats`)).body;
  }
  assert.is(stats.state, 'completed', JSON.stringify(stats));
  assert.is(stats.delivered, N);
  assert.is(stats.pending, 0);
  const got = peer.messages.filter((m) => m.raw.toString('latin1').includes('Subject: cluster'));
  assert.is(new Set(got.map((m) => m.envelope.to[0])).size, N);
  assert.is(got.length, N, 'each once');
  // Each outcome noted the count it owed the campaign (another slot), and the count, made, was
  // taken off the note: nothing is left for the reaper (queue/lua/lib/owed.lua).
  for (let d = 0; d < 7; d++) assert.is(await client.zcard(s.app.keys.owed(`d${d}.test`)), 0, `d${d}.test owes nothing`);
  assert.is(await client.bitcount(s.app.keys.copiesCounted(created.body.id)), N, 'every copy counted, once');
});

test('a plain message on a cluster: its recipients at destinations on other masters are counted off it, and its body goes with the last', async () => {
  const client = s.app.redis.client;
  const r = await s.api('/v1/messages', { body: { from: 'news@acme.example', to: ['a@m1.test', 'b@m2.test', 'c@m3.test'], subject: 'counted', text: 'x' } });
  assert.is(r.status, 202, JSON.stringify(r.body));
  await s.waitFinal(r.body.id);
  for (const until = Date.now() + 10_000; (await client.exists(s.app.keys.msgBody(r.body.id))) === 1 && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
  assert.is(await client.exists(s.app.keys.msgBody(r.body.id)), 0, 'the body went with the last recipient');
  assert.is(await client.hget(s.app.keys.msgMeta(r.body.id), 'pending'), '0');
  assert.is(await client.bitcount(s.app.keys.copiesCounted(r.body.id)), 3);
  for (const d of ['m1.test', 'm2.test', 'm3.test']) assert.is(await client.zcard(s.app.keys.owed(d)), 0);
});

test('a keyspace walk visits every master, also one whose connection the client lost', async () => {
  // An idle client: the app's own routes commands to every master all the time, which re-adds one.
  const client = cluster.client() as Cluster;
  assert.is((await scanNodes(client)).length, 3);
  await Promise.all(client.nodes('master').map((n) => n.ping())); // connected (the pool connects lazily)
  // The server closes the client's connections to one master (its `timeout`, a reset): ioredis
  // drops that master from its pool until a command is routed to it again.
  const [victim] = client.nodes('master');
  const port = victim!.options.port;
  const outside = new Redis({ host: '127.0.0.1', port: port! });
  await outside.call('CLIENT', 'KILL', 'TYPE', 'normal'); // every client's but its own (SKIPME yes)
  outside.disconnect();
  for (const until = Date.now() + 5000; client.nodes('master').some((n) => n.options.port === port) && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
  assert.is(client.nodes('master').length, 2, 'the pool lost the master');
  const nodes = await scanNodes(client);
  assert.is(nodes.length, 3, nodes.map((n) => n.name).join(','));
  assert.ok(nodes.some((n) => n.node.options.port === port));
});

test.run();
