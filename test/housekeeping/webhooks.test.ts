/**
 * The webhook dispatcher against a real Redis and real HTTP receivers on loopback: events arrive
 * signed, batched and once each; 500s and timeouts are retried; an endpoint that stays down ends in
 * the dead-letter list and is replayed from there (by the function and by `sluice webhooks`); a
 * hanging endpoint does not hold up another account's; a dead consumer's pending entries are taken over;
 * events trimmed from the stream before they were routed are counted and logged; a finished POST's slot
 * is refilled at once, within the in-flight limits.
 */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { closeSync, constants as fsConstants, mkdtempSync, open, openSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Resolver } from 'node:dns/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { appendEvent, appendEventBatch, packEvent, type EventType } from '../../src/store/events.js';
import { createWebhook, deleteWebhook, openSecret, getWebhook, MAX_WEBHOOKS_PER_ACCOUNT } from '../../src/store/webhooks.js';
import { publicOnlyLookup, replayDeadLetters, verifyWebhookSignature, WebhookDispatcher, type WebhookDispatcherOptions } from '../../src/housekeeping/webhooks.js';
import { connect } from 'node:net';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startDnsStub } from '../helpers/dns-stub.js';
import { sluice } from '../cli/run-cli.js';

const test = suite('housekeeping/webhooks');
let redis: TestRedis;
let client: RedisClient;
const logger = createLogger('silent');
const servers: Receiver[] = [];
const dispatchers: WebhookDispatcher[] = [];

interface Received {
  headers: IncomingMessage['headers'];
  body: string;
  events: { id: string; type: string; time: string; account: string; msgId?: string }[];
}

/** A real HTTP receiver; `answer` decides each request's fate (a status, or 'hang' to never answer). */
interface Receiver {
  url: string;
  received: Received[];
  answered: number;
  answer: (n: number) => number | 'hang';
  server: Server;
  hanging: ServerResponse[];
}

async function receiver(answer: (n: number) => number | 'hang' = () => 200): Promise<Receiver> {
  const r = { received: [], answered: 0, answer, hanging: [] } as unknown as Receiver;
  r.server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      r.received.push({ headers: req.headers, body, events: (JSON.parse(body) as { events: Received['events'] }).events });
      const a = r.answer(r.received.length);
      if (a === 'hang') {
        r.hanging.push(res);
        return;
      }
      r.answered++;
      res.statusCode = a;
      res.end('ok');
    });
  });
  await new Promise<void>((resolve) => r.server.listen(0, '127.0.0.1', resolve));
  const addr = r.server.address() as { port: number };
  r.url = `http://127.0.0.1:${addr.port}/hook`;
  servers.push(r);
  return r;
}

function counter() {
  const counts: Record<string, number> = {};
  let lag = -1;
  let lost = 0;
  let dropped = 0;
  return {
    counts,
    lag: () => lag,
    lost: () => lost,
    dropped: () => dropped,
    metrics: {
      deliveries: { inc: (l: { result: string }) => void (counts[l.result] = (counts[l.result] ?? 0) + 1) },
      lagSeconds: { set: (v: number) => void (lag = v) },
      eventsLost: { inc: (n = 1) => void (lost += n) },
      deadLettersDropped: { inc: (n = 1) => void (dropped += n) },
    },
  };
}

/** A logger that keeps its warnings (and worse) as parsed lines. */
function warnings(): { logger: Logger; lines: { msg: string; lost?: number }[] } {
  const lines: { msg: string; lost?: number }[] = [];
  return { lines, logger: createLogger('warn', { write: (line: string) => void lines.push(JSON.parse(line)) }) };
}

/** Appends `n` events of `account` with appendEvents (500 a call), trimming the stream to about `maxLen`. */
async function appendMany(keys: Keys, account: string, n: number, maxLen: number): Promise<void> {
  for (let i = 0; i < n; i += 500) {
    const batch: string[] = [];
    for (let j = i; j < Math.min(n, i + 500); j++) batch.push(packEvent('delivered', { account, msgId: `m${j}`, idx: 0 }));
    await appendEventBatch(client, keys, maxLen, batch);
  }
}

function dispatcher(keys: Keys, opts: Partial<WebhookDispatcherOptions> = {}): WebhookDispatcher {
  const d = new WebhookDispatcher({ redis: client, keys, logger, endpointCacheMs: 0, allowPrivateTargets: true, ...opts });
  dispatchers.push(d);
  return d;
}

async function pass(d: WebhookDispatcher): Promise<void> {
  await d.tick();
  await d.drain();
}

async function until(cond: () => boolean | Promise<boolean>, what: string, limitMs = 10_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const event = (keys: Keys, type: EventType, account: string, msgId: string) => appendEvent(client, keys, type, { account, msgId, idx: 0 }, 100_000);

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});

test.after(async () => {
  for (const d of dispatchers) await d.stop();
  for (const s of servers) {
    for (const res of s.hanging) res.destroy();
    s.server.closeAllConnections();
    await new Promise((r) => s.server.close(r));
  }
  await redis.stop();
});

test('private targets are refused unless allowed: an IP-literal endpoint and a name resolving to loopback get nothing', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver();
  await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  await event(keys, 'delivered', 'acme', 'm-private');
  const c = counter();
  await pass(dispatcher(keys, { metrics: c.metrics, allowPrivateTargets: false }));
  assert.is(rx.received.length, 0, 'nothing was POSTed to 127.0.0.1');
  assert.equal(c.counts, { network_error: 1 });

  // A name is checked on the addresses it resolves to, where the socket connects.
  const dns = await startDnsStub({ 'loop.test': { A: ['127.0.0.1'] }, 'loop6.test': { AAAA: ['::1'] } });
  try {
    const resolver = new Resolver();
    resolver.setServers([dns.server]);
    for (const host of ['loop.test', 'loop6.test']) {
      const refused = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
        const sock = connect({ host, port: Number(new URL(rx.url).port), lookup: publicOnlyLookup(resolver) });
        sock.once('connect', () => (sock.destroy(), resolve(null)));
        sock.once('error', (err) => resolve(err));
      });
      assert.is(refused?.code, 'SLUICE_WEBHOOK_PRIVATE_TARGET', host);
    }
  } finally {
    await dns.close();
  }
});

/**
 * Blocks every thread of libuv's pool (where getaddrinfo, fs and crypto run) with opens of FIFOs no
 * writer has opened, as lookups to a name server that never answers block them; returns the release.
 */
function blockThreadPool(): () => Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-pool-'));
  const fifos: string[] = [];
  for (let i = 0; i < Number(process.env['UV_THREADPOOL_SIZE'] ?? 4); i++) {
    const f = join(dir, `fifo${i}`);
    execFileSync('mkfifo', [f]);
    fifos.push(f);
    open(f, 'r', (err, fd) => void (err ? undefined : closeSync(fd)));
  }
  return async () => {
    // Non-blocking: a FIFO whose reader is not there yet (ENXIO) is tried again, never waited on.
    for (const f of fifos) {
      for (let i = 0; ; i++) {
        try {
          closeSync(openSync(f, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK));
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENXIO' || i > 500) throw err;
          await new Promise((r) => setTimeout(r, 10));
        }
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
}

test("an endpoint's name is resolved off libuv's thread pool: lookups hanging there (another account's dead name server) do not hold it up", async () => {
  const { keys } = redis.fresh();
  const rx = await receiver();
  const dns = await startDnsStub({ 'hook.test': { A: ['127.0.0.1'] } });
  await createWebhook(client, keys, 'acme', { url: `http://hook.test:${new URL(rx.url).port}/hook`, events: ['*'] });
  await event(keys, 'delivered', 'acme', 'm-pool');
  const c = counter();
  const w = warnings();
  const release = blockThreadPool();
  try {
    await pass(dispatcher(keys, { metrics: c.metrics, logger: w.logger, allowPrivateTargets: false, dnsServers: [dns.server], requestTimeoutMs: 3_000 }));
  } finally {
    await release();
    await dns.close();
  }
  // The name was resolved (to loopback, refused) while the pool was held, not timed out waiting for a thread.
  assert.equal(c.counts, { network_error: 1 });
  assert.is(rx.received.length, 0);
  assert.ok(await client.zcard(keys.webhookOutbox('acme', (await client.hkeys(keys.webhooks('acme')))[0]!)), 'kept for a retry');
});

test('events arrive signed, in bounded batches, once each; only subscribed types of the own account, after registration', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver();
  await event(keys, 'delivered', 'acme', 'before-registration');
  await new Promise((r) => setTimeout(r, 5));
  const { endpoint, secret } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['delivered', 'opened'] });
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push(await event(keys, 'delivered', 'acme', `m${i}`));
  ids.push(await event(keys, 'opened', 'acme', 'm4'));
  await event(keys, 'bounced', 'acme', 'not-subscribed');
  await event(keys, 'delivered', 'other', 'other-account');
  const m = counter();
  const d = dispatcher(keys, { maxBatchEvents: 3, metrics: m.metrics });
  await pass(d);

  assert.is(rx.received.length, 2, 'five events in batches of at most three');
  const got = rx.received.flatMap((r) => r.events);
  assert.equal(got.map((e) => e.id).sort(), [...ids].sort(), 'each event once, carrying its stream id');
  assert.ok(rx.received.every((r) => r.events.length <= 3));
  assert.ok(got.every((e) => e.account === 'acme' && ['delivered', 'opened'].includes(e.type) && !Number.isNaN(Date.parse(e.time))));
  for (const r of rx.received) {
    const header = r.headers['sluice-signature'] as string;
    const m2 = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
    assert.ok(m2, header);
    const expected = createHmac('sha256', secret).update(`${m2[1]}.${r.body}`).digest('hex');
    assert.is(m2[2], expected, 'HMAC-SHA256 of "t.body" with the secret shown at registration');
    assert.ok(Math.abs(Number(m2[1]) - Date.now() / 1000) < 300);
    assert.ok(verifyWebhookSignature(header, r.body, secret, Math.floor(Date.now() / 1000)));
    assert.not.ok(verifyWebhookSignature(header, r.body + ' ', secret, Math.floor(Date.now() / 1000)), 'a changed body fails');
    assert.not.ok(verifyWebhookSignature(header, r.body, secret, Number(m2[1]) + 301), 'outside the replay window fails');
    assert.is(r.headers['sluice-webhook-id'], endpoint.id);
    assert.match(r.headers['content-type'] as string, /^application\/json/);
  }
  assert.is(m.counts['success'], 2);

  await pass(d);
  assert.is(rx.received.length, 2, 'nothing is sent twice');
  assert.is(await client.zcard(keys.webhookOutbox('acme', endpoint.id)), 0);
  const pending = (await client.xpending(keys.events(), 'webhooks')) as [number, ...unknown[]];
  assert.is(pending[0], 0, 'every stream entry acknowledged');
});

test("an endpoint registered while a dispatcher has the account's empty list cached gets the events appended after registration", async () => {
  const { keys } = redis.fresh();
  const rx = await receiver();
  // The default cache (5 s): the first pass caches 'acme' as having no endpoint.
  const d = dispatcher(keys, { endpointCacheMs: 60_000 });
  await event(keys, 'delivered', 'acme', 'before-registration');
  await pass(d);
  const { endpoint } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const id = await event(keys, 'delivered', 'acme', 'after-registration');
  await pass(d);
  assert.equal(rx.received.flatMap((r) => r.events.map((e) => e.id)), [id], 'the event after registration, and only it');

  // Removal is seen at once too: nothing more is queued for the deleted endpoint.
  assert.ok(await deleteWebhook(client, keys, 'acme', endpoint.id));
  await event(keys, 'delivered', 'acme', 'after-removal');
  await pass(d);
  assert.is(await client.zcard(keys.webhookOutbox('acme', endpoint.id)), 0, 'no outbox re-created for a removed endpoint');
  assert.is(rx.received.length, 1);
});

test('a 500 is retried after the backoff with the same events; not before', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver((n) => (n === 1 ? 500 : 200));
  const { endpoint } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const id = await event(keys, 'delivered', 'acme', 'm1');
  let now = Date.now();
  const m = counter();
  const d = dispatcher(keys, { now: () => now, retryBaseMs: 60_000, metrics: m.metrics });
  await pass(d);
  assert.is(rx.received.length, 1);
  assert.is(m.counts['http_error'], 1);
  const [member, score] = await client.zrange(keys.webhookOutbox('acme', endpoint.id), 0, -1, 'WITHSCORES');
  assert.ok(Number(score) >= now + 60_000 * 0.8 && Number(score) <= now + 60_000 * 1.2, 'first retry ~ base delay (±20 % jitter)');
  assert.is(JSON.parse(member as string).n, 1, 'one failed attempt recorded');

  await pass(d);
  assert.is(rx.received.length, 1, 'not retried before it is due');
  now += 75_000;
  await pass(d);
  assert.is(rx.received.length, 2, 'retried once due');
  assert.equal(rx.received[1]!.events.map((e) => e.id), [id], 'same event id: receivers de-duplicate on it');
  assert.is(m.counts['success'], 1);
  assert.is(await client.zcard(keys.webhookOutbox('acme', endpoint.id)), 0);
  assert.ok(m.lag() >= 0);
});

test('batches go out in stream order; after an outage the batch that waited longest goes as soon as the endpoint takes one, not at its own backoff', async () => {
  const { keys } = redis.fresh();
  let down = false;
  const rx = await receiver(() => (down ? 503 : 200));
  await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  let now = Date.now();
  const d = dispatcher(keys, { now: () => now, maxBatchEvents: 10, perEndpointInFlight: 1, retryBaseMs: 60_000, retryMaxDelayMs: 3_600_000 });
  await appendMany(keys, 'acme', 100, 100_000);
  await pass(d);
  assert.equal(rx.received.map((r) => r.events[0]?.['msgId']), ['m0', 'm10', 'm20', 'm30', 'm40', 'm50', 'm60', 'm70', 'm80', 'm90'], 'ten batches of one pass, oldest first');

  down = true;
  await event(keys, 'delivered', 'acme', 'old');
  await pass(d);
  // Hours of failures: its backoff grows to retryMaxDelay (an hour).
  for (let i = 0; i < 20; i++) {
    now += 20 * 60_000;
    await pass(d);
  }
  await event(keys, 'delivered', 'acme', 'new');
  await pass(d);
  // What the endpoint takes from now on (it answered 503 to everything before).
  const from = rx.received.length;
  down = false;
  const seen = () => rx.received.slice(from).flatMap((r) => r.events.map((e) => e['msgId']));
  const deliveredAt: Record<string, number> = {};
  for (let minute = 1; minute <= 70 && deliveredAt['old'] === undefined; minute++) {
    now += 60_000;
    await pass(d);
    await pass(d);
    for (const m of seen()) deliveredAt[m as string] ??= minute;
  }
  assert.ok((deliveredAt['new'] ?? 99) <= 2, 'the new batch at its first retry (a minute, ±20 %)');
  assert.is(deliveredAt['old'], deliveredAt['new'], 'the old one with it, woken by its success (it was due up to an hour later)');
});

test('a batch put back after an erasure walked the outbox sends nothing of the erased copy: its events go before the POST', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver((n) => (n === 1 ? 500 : 200));
  const { endpoint } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  await event(keys, 'delivered', 'acme', 'gone');
  const kept = await event(keys, 'delivered', 'acme', 'stays');
  let now = Date.now();
  const d = dispatcher(keys, { now: () => now, retryBaseMs: 60_000 });
  await pass(d);
  assert.equal(rx.received[0]?.events.map((e) => e['msgId']), ['gone', 'stays'], 'the first POST, failed, had both');
  // The erasure of gone:0 ran while that POST was in flight: its walk found nothing, and the batch
  // came back afterwards. Its copy is in the stream's erased set (store/privacy.ts guardEvents).
  await client.zadd(keys.eventsErased(), Date.now(), 'gone:0');
  now += 75_000;
  await pass(d);
  await pass(d);
  assert.is(rx.received.length, 2);
  assert.equal(rx.received[1]?.events.map((e) => e.id), [kept], 'only the other copy\'s event is sent');
  assert.is(await client.zcard(keys.webhookOutbox('acme', endpoint.id)), 0);
  assert.not.match(JSON.stringify(await client.lrange(keys.webhookDead('acme', endpoint.id), 0, -1)), 'gone');
});

test('a retry never waits longer than retryMaxDelay, jitter included', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver(() => 500);
  const { endpoint } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const now = Date.now();
  const d = dispatcher(keys, { now: () => now, retryBaseMs: 60_000, retryMaxDelayMs: 10_000, maxBatchEvents: 1 });
  for (let i = 0; i < 20; i++) await event(keys, 'delivered', 'acme', `cap${i}`);
  await pass(d);
  const scores = (await client.zrange(keys.webhookOutbox('acme', endpoint.id), 0, -1, 'WITHSCORES')).filter((_, i) => i % 2 === 1).map(Number);
  assert.is(scores.length, 20, 'twenty batches, each put back after its 500');
  for (const sc of scores) assert.ok(sc > now + 7_999 && sc <= now + 10_000, `due in ${sc - now} ms: within 80-100 % of the cap`);
});

test('webhook lag is the age of the oldest event not yet delivered, batches waiting for a retry included', async () => {
  const { keys } = redis.fresh();
  let answer = 500;
  const rx = await receiver(() => answer);
  const { endpoint } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const id = await event(keys, 'delivered', 'acme', 'm1');
  const at = Number(id.split('-')[0]);
  let now = at;
  const m = counter();
  const d = dispatcher(keys, { now: () => now, retryBaseMs: 2 * 3600_000, retryMaxDelayMs: 2 * 3600_000, metrics: m.metrics });
  await pass(d);
  assert.is(m.counts['http_error'], 1);
  // Half an hour on, the batch waits for its retry (due in ~2 h): the lag is its event's age.
  now = at + 30 * 60_000;
  await pass(d);
  assert.is(rx.received.length, 1, 'not retried yet');
  assert.ok(Math.abs(m.lag() - 1800) < 5, `lag ${m.lag()} s, not 0`);
  // Delivered at its retry: nothing is awaited any more.
  answer = 200;
  now = at + 3 * 3600_000;
  await pass(d);
  assert.is(rx.received.length, 2);
  await pass(d);
  assert.is(m.lag(), 0);
  assert.is(await client.zcard(keys.webhookAges('acme', endpoint.id)), 0, 'the delivered batch left the ages');
});

test('webhook lag forgets an endpoint deleted elsewhere at the next pass: its backlog is no longer awaited', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver(() => 500);
  const { endpoint } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const at = Number((await event(keys, 'delivered', 'acme', 'm1')).split('-')[0]);
  let now = at;
  const m = counter();
  const d = dispatcher(keys, { now: () => now, retryBaseMs: 2 * 3600_000, retryMaxDelayMs: 2 * 3600_000, metrics: m.metrics });
  await pass(d);
  now = at + 30 * 60_000;
  await pass(d);
  assert.ok(Math.abs(m.lag() - 1800) < 5, `lag ${m.lag()} s while the batch waits`);
  // Deleted through the API (another process): its outbox goes with it, and nothing is awaited.
  assert.ok(await deleteWebhook(client, keys, 'acme', endpoint.id));
  await pass(d);
  assert.is(m.lag(), 0, 'the deleted backlog is not reported as lag');
});

test('an unreadable batch dropped from the outbox leaves the ages with it: the lag reports only batches still awaited', async () => {
  const { keys } = redis.fresh();
  let answer = 500;
  const rx = await receiver(() => answer);
  const { endpoint } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const outbox = keys.webhookOutbox('acme', endpoint.id);
  const ages = keys.webhookAges('acme', endpoint.id);
  const at = Number((await event(keys, 'delivered', 'acme', 'm1')).split('-')[0]);
  let now = at;
  const m = counter();
  const d = dispatcher(keys, { now: () => now, retryBaseMs: 2 * 3600_000, retryMaxDelayMs: 2 * 3600_000, metrics: m.metrics });
  await pass(d);
  const [first] = await client.zrange(outbox, 0, 0);
  await event(keys, 'delivered', 'acme', 'm2');
  await pass(d);
  assert.is(m.counts['http_error'], 2, 'two batches wait for their retries');
  const second = (await client.zrange(outbox, 0, -1)).find((b) => b !== first) as string;
  const idOf = (member: string): string => (JSON.parse(member) as { b: string }).b;
  // The first batch cut short (a hand edit, a restored dump): unreadable, its id still at its head. Due now.
  await client.zrem(outbox, first as string);
  await client.zadd(outbox, now, (first as string).slice(0, (first as string).indexOf(',"n"') + 3));
  now = at + 30 * 60_000;
  await pass(d);
  assert.equal(await client.zrange(outbox, 0, -1), [second], 'the unreadable batch was dropped, the other waits');
  assert.equal(await client.zrange(ages, 0, -1), [idOf(second)], 'the dropped batch left the ages');
  assert.ok(Math.abs(m.lag() - 1800) < 5, `lag ${m.lag()} s: the waiting batch's`);
  assert.is(m.counts['unreadable'], 1, 'the dropped batch is counted');

  // A batch with nothing readable left, not even its id, and its age: gone once the outbox is empty.
  await client.zadd(outbox, now, 'not json');
  await client.zadd(ages, at - 60_000, 'lost-id');
  answer = 200;
  now = at + 3 * 3600_000;
  await pass(d);
  await pass(d);
  assert.is(rx.received.length, 3, 'the readable batch was delivered; nothing unreadable was POSTed');
  assert.is(await client.zcard(outbox), 0);
  assert.equal(await client.zrange(ages, 0, -1), [], 'an empty outbox awaits nothing');
  assert.is(await client.exists(keys.webhookOutboxEvents('acme', endpoint.id)), 0, 'the event count went with the last batch');
  assert.is(m.lag(), 0, 'no lag once nothing is awaited');
  assert.is(m.counts['unreadable'], 2, 'both unreadable batches counted');
});

test('a redirect is not followed: the target gets nothing and the batch is retried', async () => {
  const { keys } = redis.fresh();
  const target = await receiver();
  const redirecting = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(307, { location: target.url }).end());
  });
  await new Promise<void>((resolve) => redirecting.listen(0, '127.0.0.1', resolve));
  try {
    const { endpoint } = await createWebhook(client, keys, 'acme', { url: `http://127.0.0.1:${(redirecting.address() as { port: number }).port}/hook`, events: ['*'] });
    await event(keys, 'delivered', 'acme', 'm-redirect');
    const m = counter();
    await pass(dispatcher(keys, { metrics: m.metrics }));
    assert.equal(m.counts, { http_error: 1 });
    assert.is(target.received.length, 0, 'the Location was not requested');
    assert.is(await client.zcard(keys.webhookOutbox('acme', endpoint.id)), 1, 'kept for a retry');
  } finally {
    redirecting.closeAllConnections();
    await new Promise((r) => redirecting.close(r));
  }
});

test('a receiver that does not answer within the timeout is retried', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver((n) => (n === 1 ? 'hang' : 204));
  const { endpoint } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['delivered'] });
  const id = await event(keys, 'delivered', 'acme', 'm1');
  let now = Date.now();
  const m = counter();
  // The timeout bounds the whole exchange: at 300 ms the answered retry itself timed out on a loaded
  // machine. The hanging first POST waits it out whatever its length.
  const d = dispatcher(keys, { now: () => now, requestTimeoutMs: 2_000, retryBaseMs: 1_000, metrics: m.metrics });
  await pass(d);
  assert.is(m.counts['timeout'], 1, 'counted as a timeout');
  assert.is(await client.zcard(keys.webhookOutbox('acme', endpoint.id)), 1, 'still in the outbox');
  now += 2_000;
  await pass(d);
  assert.is(rx.received.length, 2);
  assert.equal(rx.received[1]!.events.map((e) => e.id), [id]);
  assert.is(m.counts['success'], 1);
  assert.is(await client.zcard(keys.webhookOutbox('acme', endpoint.id)), 0);
});

test('an endpoint that stays down lands in dead letters; replay (function and CLI) delivers them', async () => {
  const { prefix, keys } = redis.fresh();
  let up = false;
  const rx = await receiver(() => (up ? 200 : 503));
  const { endpoint } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const first = await event(keys, 'delivered', 'acme', 'm1');
  let now = Date.now();
  const m = counter();
  const d = dispatcher(keys, { now: () => now, retryBaseMs: 1_000, retryMaxDelayMs: 4_000, maxAttemptsWindowMs: 20_000, metrics: m.metrics });
  // Attempts at 0, ~1, ~3, ~7, ~11, ~15, ~19 s; the first one past 20 s gives up. Bounded loop.
  for (let i = 0; i < 40 && (await client.llen(keys.webhookDead('acme', endpoint.id))) === 0; i++) {
    await pass(d);
    now += 1_000;
  }
  assert.is(await client.llen(keys.webhookDead('acme', endpoint.id)), 1, 'dead-lettered');
  assert.is(await client.zcard(keys.webhookOutbox('acme', endpoint.id)), 0, 'no longer retried');
  assert.is(m.counts['dead_letter'], 1);
  const attempts = rx.received.length;
  assert.ok(attempts >= 4 && attempts <= 12, `retried with backoff (${attempts} attempts in the window)`);
  const dead = JSON.parse((await client.lindex(keys.webhookDead('acme', endpoint.id), 0)) as string);
  assert.is(dead.n, attempts);
  assert.match(dead.lastError, /503/);

  up = true;
  await pass(d);
  assert.is(rx.received.length, attempts, 'dead letters are not sent by themselves');
  // An unreadable item (a hand edit, a damaged restore) at the head: kept where it is and reported, not dropped.
  await client.lpush(keys.webhookDead('acme', endpoint.id), '{"b":"cut short');
  assert.equal(await replayDeadLetters(client, keys, 'acme', endpoint.id, now), { moved: 1, unreadable: 1 });
  assert.equal(await client.lrange(keys.webhookDead('acme', endpoint.id), 0, -1), ['{"b":"cut short']);
  await client.del(keys.webhookDead('acme', endpoint.id));
  await pass(d);
  assert.is(rx.received.length, attempts + 1);
  assert.equal(rx.received.at(-1)!.events.map((e) => e.id), [first]);

  // Once more, through the command line: an event dead-lettered again, listed, then replayed.
  up = false;
  const second = await event(keys, 'clicked', 'acme', 'm2');
  for (let i = 0; i < 40 && (await client.llen(keys.webhookDead('acme', endpoint.id))) === 0; i++) {
    await pass(d);
    now += 1_000;
  }
  const dir = mkdtempSync(join(tmpdir(), 'sluice-webhooks-cli-'));
  try {
    const cfg = join(dir, 'sluice.yaml');
    writeFileSync(cfg, `redis:\n  url: ${JSON.stringify(redis.url)}\n  prefix: '${prefix}'\n`);
    const list = await sluice(['webhooks', 'list', '--account', 'acme', '--config', cfg, '--json']);
    assert.is(list.code, 0, list.err);
    const rows = JSON.parse(list.out) as { id: string; url: string; deadLetters: number; outbox: number }[];
    assert.equal(rows.map((r) => [r.id, r.url, r.deadLetters, r.outbox]), [[endpoint.id, rx.url, 1, 0]]);
    const table = await sluice(['webhooks', 'list', '--account', 'acme', '--config', cfg]);
    assert.match(table.out, endpoint.id);
    const unknown = await sluice(['webhooks', 'replay', '--account', 'acme', '--endpoint', '0000000000000000', '--config', cfg]);
    assert.is(unknown.code, 1);
    const usage = await sluice(['webhooks', 'replay', '--config', cfg]);
    assert.is(usage.code, 2, 'no --account is a usage error');
    const replay = await sluice(['webhooks', 'replay', '--account', 'acme', '--endpoint', endpoint.id, '--config', cfg]);
    assert.is(replay.code, 0, replay.err);
    assert.match(replay.out, 'replayed 1 batch');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  up = true;
  await pass(d);
  assert.equal(rx.received.at(-1)!.events.map((e) => e.id), [second]);
  assert.is(await client.llen(keys.webhookDead('acme', endpoint.id)), 0);
});

test('dead letters dropped to keep the list at its bound are counted and logged, not lost in silence', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver(() => 503);
  const { endpoint } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const m = counter();
  const w = warnings();
  // No retry window: each failed batch goes to the dead-letter list at once, which holds two.
  const d = dispatcher(keys, { maxAttemptsWindowMs: 0, deadLetterMax: 2, metrics: m.metrics, logger: w.logger });
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    ids.push(await event(keys, 'delivered', 'acme', `m${i}`));
    await pass(d);
  }
  assert.is(m.counts['dead_letter'], 3);
  const dead = (await client.lrange(keys.webhookDead('acme', endpoint.id), 0, -1)).map((b) => (JSON.parse(b) as { e: { id: string }[] }).e[0]!.id);
  assert.equal(dead, [ids[1], ids[2]], 'the oldest went');
  assert.is(m.dropped(), 1, 'the dropped batch is counted');
  const said = w.lines.filter((l) => /dropped/.test(l.msg));
  assert.is(said.length, 1, JSON.stringify(w.lines));
  assert.is((said[0] as { dropped?: number }).dropped, 1);
});

test("an endpoint's outbox holds at most maxOutbox events: new batches beyond go to its dead letters, counted and logged, and are replayed", async () => {
  const { keys } = redis.fresh();
  let up = false;
  const rx = await receiver(() => (up ? 200 : 503));
  const { endpoint } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const outbox = keys.webhookOutbox('acme', endpoint.id);
  const held = keys.webhookOutboxEvents('acme', endpoint.id);
  const dead = keys.webhookDead('acme', endpoint.id);
  let now = Date.now();
  const m = counter();
  let full = 0;
  const w = warnings();
  // Two dispatchers (two housekeeping processes) share the stream; retries wait an hour.
  const opts = { now: () => now, maxOutbox: 5, maxBatchEvents: 2, readCount: 3, retryBaseMs: 3600_000, logger: w.logger, metrics: { ...m.metrics, outboxFull: { inc: (n = 1) => void (full += n) } } };
  const [d1, d2] = [dispatcher(keys, { ...opts, consumer: 'one' }), dispatcher(keys, { ...opts, consumer: 'two' })];
  const ids: string[] = [];
  for (let i = 0; i < 12; i++) ids.push(await event(keys, 'delivered', 'acme', `m${i}`));
  for (let i = 0; i < 3; i++) {
    await Promise.all([d1.tick(), d2.tick()]);
    await Promise.all([d1.drain(), d2.drain()]);
  }
  const inOutbox = (await client.zrange(outbox, 0, -1)).flatMap((b) => (JSON.parse(b) as { e: { id: string }[] }).e.map((e) => e.id));
  const deadLettered = (await client.lrange(dead, 0, -1)).map((b) => JSON.parse(b) as { lastError: string; e: { id: string }[] });
  assert.ok(inOutbox.length <= 5, `${inOutbox.length} events in the outbox, at most 5`);
  assert.is(Number(await client.get(held)), inOutbox.length, 'the count is the events the outbox holds');
  assert.equal([...inOutbox, ...deadLettered.flatMap((b) => b.e.map((e) => e.id))].sort(), [...ids].sort(), 'each event in one of the two');
  assert.ok(deadLettered.length > 0 && deadLettered.every((b) => /outbox full/.test(b.lastError)));
  assert.is(full, deadLettered.length, 'each batch turned away counted');
  const said = w.lines.filter((l) => /outbox full/.test(l.msg)) as { account?: string; endpoint?: string }[];
  assert.ok(said.length >= 1 && said.length <= 2, `logged once per process, not per pass (${said.length})`);
  assert.equal([said[0]?.account, said[0]?.endpoint], ['acme', endpoint.id]);

  // Back up: the retries and a replay deliver everything, and the outbox's count goes with its batches.
  up = true;
  const before = rx.received.length;
  now += 2 * 3600_000;
  assert.equal(await replayDeadLetters(client, keys, 'acme', endpoint.id, now), { moved: deadLettered.length, unreadable: 0 });
  for (let i = 0; i < 5 && (await client.zcard(outbox)) > 0; i++) await pass(d1);
  assert.equal([...new Set(rx.received.slice(before).flatMap((r) => r.events.map((e) => e.id)))].sort(), [...ids].sort(), 'every event delivered once up');
  assert.is(await client.zcard(outbox), 0);
  assert.is(await client.exists(held), 0, 'no count left for an empty outbox');
});

test('a dead-letter page that changed after it was read is not trimmed by count (no batch dropped unreplayed)', async () => {
  const { keys } = redis.fresh();
  const dead = keys.webhookDead('acme', 'ep1');
  const outbox = keys.webhookOutbox('acme', 'ep1');
  await client.rpush(dead, 'b1', 'b2', 'b3');
  // Read b1, b2; meanwhile a dispatcher pushes b4 and trims the oldest (b1) at the list's bound.
  const page = await client.lrange(dead, 0, 1);
  await client.rpush(dead, 'b4');
  await client.ltrim(dead, -3, -1);
  const ages = keys.webhookAges('acme', 'ep1');
  const held = keys.webhookOutboxEvents('acme', 'ep1');
  assert.is(await client.replayDeadPage(dead, outbox, ages, held, 1000, 0, page.length, '1'.repeat(page.length), ...page, 'new1', 'id1', 500, 1, 'new2', 'id2', 600, 1), 0, 'refused: the head is no longer the page');
  assert.equal(await client.lrange(dead, 0, -1), ['b2', 'b3', 'b4'], 'nothing trimmed');
  assert.is(await client.zcard(outbox), 0, 'nothing queued');
  const again = await client.lrange(dead, 0, 1);
  assert.is(await client.replayDeadPage(dead, outbox, ages, held, 1000, 0, again.length, '11', ...again, 'new2', 'id2', 600, 1, 'new3', 'id3', 700, 2), 1);
  assert.equal(await client.lrange(dead, 0, -1), ['b4']);
  assert.equal(await client.zrange(outbox, 0, -1), ['new2', 'new3']);
  assert.equal(await client.zrange(ages, 0, -1, 'WITHSCORES'), ['id2', '600', 'id3', '700'], 'each replayed batch awaited since its oldest event');
  assert.is(await client.get(held), '3', 'their events counted in the outbox');
});

test("a hanging endpoint does not delay another account's webhooks", async () => {
  const { keys } = redis.fresh();
  const slow = await receiver(() => 'hang');
  const fast = await receiver();
  await createWebhook(client, keys, 'slow', { url: slow.url, events: ['*'] });
  await createWebhook(client, keys, 'acme', { url: fast.url, events: ['*'] });
  const d = dispatcher(keys, { pollIntervalMs: 20, requestTimeoutMs: 30_000 });
  d.start();
  await event(keys, 'delivered', 'slow', 's1');
  await until(() => slow.received.length === 1, 'the slow endpoint to be called');
  const ids = [await event(keys, 'delivered', 'acme', 'a1')];
  await until(() => fast.received.length === 1, 'the fast endpoint');
  // More of both while the slow request is still open: the fast endpoint keeps flowing.
  await event(keys, 'delivered', 'slow', 's2');
  ids.push(await event(keys, 'delivered', 'acme', 'a2'));
  await until(() => fast.received.flatMap((r) => r.events).length === 2, "the fast endpoint's second event");
  assert.equal(fast.received.flatMap((r) => r.events.map((e) => e.id)), ids);
  assert.is(slow.answered, 0, 'the slow request is still hanging');
  for (const res of slow.hanging) res.end();
  slow.answer = () => 200;
  await d.stop();
});

test("a hanging endpoint does not delay another account's endpoint on the same host and port", async () => {
  const { keys } = redis.fresh();
  // One receiver for both (a webhook relay service): /slow never answers, every other path does.
  const shared = await receiver();
  const hanging: ServerResponse[] = [];
  shared.server.removeAllListeners('request');
  const fastEvents: string[] = [];
  shared.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/slow') return void hanging.push(res);
      fastEvents.push(...(JSON.parse(Buffer.concat(chunks).toString()) as { events: { id: string }[] }).events.map((e) => e.id));
      res.end('ok');
    });
  });
  const origin = new URL(shared.url).origin;
  await createWebhook(client, keys, 'slow', { url: `${origin}/slow`, events: ['*'] });
  await createWebhook(client, keys, 'acme', { url: `${origin}/fast`, events: ['*'] });
  // Two batches in flight per endpoint: both of the slow endpoint's hang, holding its two sockets.
  const d = dispatcher(keys, { pollIntervalMs: 20, requestTimeoutMs: 30_000, maxBatchEvents: 1 });
  await event(keys, 'delivered', 'slow', 's1');
  await event(keys, 'delivered', 'slow', 's2');
  d.start();
  await until(() => hanging.length === 2, 'both slow requests to be open');
  const ids = [await event(keys, 'delivered', 'acme', 'a1'), await event(keys, 'delivered', 'acme', 'a2')];
  await until(() => fastEvents.length === 2, "the other account's events, well before the slow requests' 30 s timeout", 5_000);
  assert.equal(fastEvents.sort(), [...ids].sort());
  for (const res of hanging) res.end('ok');
  await d.stop();
});

test('of two dispatchers that both read a batch as due, one POSTs it (whichever clock is ahead)', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver();
  await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const id = await event(keys, 'delivered', 'acme', 'm1');
  const t = Date.now();
  // Routed into the outbox (due from t) by a dispatcher with no slots to POST it.
  await pass(dispatcher(keys, { now: () => t, consumer: 'router', maxInFlight: 0 }));
  assert.is(rx.received.length, 0);
  const b = dispatcher(keys, { now: () => t, consumer: 'b' });
  // A reads the batch as due; before it claims it, B (its clock 10 s behind A's) claims it and starts its POST.
  let raced = false;
  const slowA = new Proxy(client, {
    get(target, prop) {
      const v = Reflect.get(target, prop) as unknown;
      if (prop === 'zrangebyscore' && !raced) {
        return async (...args: unknown[]) => {
          const due = (await (v as (...a: unknown[]) => Promise<string[]>).apply(target, args)) as string[];
          if (due.length > 0) {
            raced = true;
            await b.tick();
          }
          return due;
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  const a = dispatcher(keys, { redis: slowA, now: () => t + 10_000, consumer: 'a' });
  await pass(a);
  await b.drain();
  assert.ok(raced);
  assert.equal(rx.received.flatMap((r) => r.events.map((e) => e.id)), [id], 'POSTed once');
});

/**
 * A receiver answering each POST after `delayMs`, keeping how many were open at once (per path and in all).
 * With `gather`, a POST is answered only once `gather` are open on its path (or after `gatherLimitMs`):
 * on a loaded machine the first may otherwise be answered before the second arrives.
 */
async function slowReceiver(delayMs: number, gather = 0, gatherLimitMs = 5_000): Promise<{ url: string; events: Map<string, number>; most: Map<string, number> }> {
  const r = await receiver();
  r.server.removeAllListeners('request');
  const open = new Map<string, number>();
  const most = new Map<string, number>();
  const events = new Map<string, number>();
  const add = (k: string, d: number) => {
    const n = (open.get(k) ?? 0) + d;
    open.set(k, n);
    most.set(k, Math.max(most.get(k) ?? 0, n));
  };
  r.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '';
    add(path, 1);
    add('*', 1);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const n = (JSON.parse(Buffer.concat(chunks).toString()) as { events: unknown[] }).events.length;
      for (const end = Date.now() + gatherLimitMs; (open.get(path) ?? 0) < gather && (most.get(path) ?? 0) < gather && Date.now() < end;) {
        await new Promise((r) => setTimeout(r, 5));
      }
      setTimeout(() => {
        add(path, -1);
        add('*', -1);
        events.set(path, (events.get(path) ?? 0) + n);
        res.end('ok');
      }, delayMs);
    });
  });
  return { url: new URL(r.url).origin, events, most };
}

test('a finished POST starts the next due batch at once, not at the next pass, within the per-endpoint limit', async () => {
  const { keys } = redis.fresh();
  // The receiver holds the first POSTs until two are open at once: under load the first could be
  // answered before the second arrived, and "two at once" would not be seen.
  const rx = await slowReceiver(10, 2);
  await createWebhook(client, keys, 'acme', { url: `${rx.url}/a`, events: ['*'] });
  for (let i = 0; i < 100; i++) await event(keys, 'delivered', 'acme', `m${i}`);
  // Ten batches, two in flight, and no second pass for a minute: only refilled slots deliver them all
  // (the bound leaves a loaded machine time, and is still far from the pass).
  const d = dispatcher(keys, { pollIntervalMs: 60_000, maxBatchEvents: 10 });
  d.start();
  await until(() => rx.events.get('/a') === 100, 'all ten batches, long before the next pass', 20_000);
  assert.ok((rx.most.get('/a') ?? 0) <= 2, `never more than perEndpointInFlight at once (${rx.most.get('/a')})`);
  assert.is(rx.most.get('/a'), 2, 'two in flight at once: the limit is used');
  await d.stop();
});

test('when the global in-flight limit holds endpoints back, a finished POST wakes a pass; nothing runs once all is delivered', async () => {
  const { keys } = redis.fresh();
  const rx = await slowReceiver(10);
  await createWebhook(client, keys, 'acme', { url: `${rx.url}/a`, events: ['*'] });
  await createWebhook(client, keys, 'beta', { url: `${rx.url}/b`, events: ['*'] });
  for (let i = 0; i < 60; i++) {
    await event(keys, 'delivered', 'acme', `a${i}`);
    await event(keys, 'delivered', 'beta', `b${i}`);
  }
  const d = dispatcher(keys, { pollIntervalMs: 60_000, maxBatchEvents: 10, maxInFlight: 3 });
  const inner = d as unknown as { pass: () => Promise<boolean> };
  const pass0 = inner.pass.bind(d);
  let passes = 0;
  inner.pass = () => (passes++, pass0());
  d.start();
  await until(() => rx.events.get('/a') === 60 && rx.events.get('/b') === 60, "both endpoints' six batches", 4_000);
  assert.ok((rx.most.get('*') ?? 0) <= 3, `${rx.most.get('*')} in flight at once, limit 3`);
  assert.ok((rx.most.get('/a') ?? 0) <= 2 && (rx.most.get('/b') ?? 0) <= 2);
  await d.drain();
  const after = passes;
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(passes - after <= 1, `${passes - after} passes while nothing was due`);
  await d.stop();
});

test("an unreadable endpoint record, or an endpoint whose keys Redis refuses, stops only itself: another account's endpoint gets its events", async () => {
  const { keys } = redis.fresh();
  const rx = await receiver();
  // A record without `events` (written by hand, cut short), of an account with events of its own.
  const badId = '0000000000000001';
  await client.hset(keys.webhooks('broken'), badId, JSON.stringify({ id: badId, url: rx.url, created: 0, secret: 'plain:x' }));
  // An endpoint whose outbox Redis refuses (WRONGTYPE), as a failing cluster node would: its events come first.
  const refused = await createWebhook(client, keys, 'refused', { url: rx.url, events: ['*'] });
  await client.set(keys.webhookOutbox('refused', refused.endpoint.id), 'not a zset');
  // An account whose endpoint list itself Redis refuses: its events first too.
  await client.set(keys.webhooks('listless'), 'not a hash');
  await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  await event(keys, 'delivered', 'listless', 'l1');
  await event(keys, 'delivered', 'broken', 'b1');
  await event(keys, 'delivered', 'refused', 'r1');
  const id = await event(keys, 'delivered', 'acme', 'a1');
  const w = warnings();
  const d = dispatcher(keys, { logger: w.logger });
  await pass(d);
  await pass(d);
  assert.equal(rx.received.flatMap((r) => r.events.map((e) => e.id)), [id], "acme's event, and only it");
  const said = (what: RegExp) => w.lines.filter((l) => what.test(l.msg)).map((l) => (l as { endpoint?: string }).endpoint);
  assert.equal(said(/unreadable webhook endpoint record/), [badId], 'the bad record is named once over two passes');
  assert.equal(said(/due webhook batches failed/), [refused.endpoint.id], 'the refused endpoint is named once over two passes');
  assert.is(said(/webhook endpoints cannot be read/).length, 1, 'the refused list is named once over two passes');
  assert.is(Number((await client.xpending(keys.events(), 'webhooks'))[0]), 0, 'every entry of the pass was acknowledged');
});

test("a stopped process's consumer (nothing pending, idle past deadConsumerIdleMs) leaves the group; one with entries pending stays until they are taken over", async () => {
  const { keys } = redis.fresh();
  await createWebhook(client, keys, 'acme', { url: (await receiver()).url, events: ['*'] });
  await event(keys, 'delivered', 'acme', 'c1');
  await pass(dispatcher(keys, { consumer: 'host:1' }));
  // host:2 read an entry and stopped with it pending.
  await event(keys, 'delivered', 'acme', 'c2');
  await client.xreadgroup('GROUP', 'webhooks', 'host:2', 'COUNT', 10, 'STREAMS', keys.events(), '>');
  await new Promise((r) => setTimeout(r, 150));
  const d = dispatcher(keys, { consumer: 'host:3', deadConsumerIdleMs: 100 });
  await pass(d);
  await pass(d);
  const names = ((await client.xinfo('CONSUMERS', keys.events(), 'webhooks')) as (string | number)[][]).map((row) => String(row[row.indexOf('name') + 1]));
  assert.not.ok(names.includes('host:1'), `host:1 (nothing pending) removed: ${names.join(', ')}`);
  assert.ok(names.includes('host:2'), 'host:2 keeps its pending entry, and so its place');
});

test("a dead consumer's pending entries are taken over and delivered", async () => {
  const { keys } = redis.fresh();
  const rx = await receiver();
  await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const id = await event(keys, 'delivered', 'acme', 'm1');
  await client.xgroup('CREATE', keys.events(), 'webhooks', '0', 'MKSTREAM');
  // A consumer that read the entry and died before routing it.
  await client.xreadgroup('GROUP', 'webhooks', 'crashed', 'COUNT', 10, 'STREAMS', keys.events(), '>');
  const d = dispatcher(keys, { claimIdleMs: 0, consumer: 'survivor' });
  await pass(d);
  assert.equal(rx.received.flatMap((r) => r.events.map((e) => e.id)), [id]);
  const pending = (await client.xpending(keys.events(), 'webhooks')) as [number, ...unknown[]];
  assert.is(pending[0], 0);
});

test('a stream or consumer group deleted under a running dispatcher is created again: the next events are delivered, not NOGROUP every pass', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver();
  await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const w = warnings();
  const d = dispatcher(keys, { logger: w.logger });
  const first = await event(keys, 'delivered', 'acme', 'm1');
  await pass(d);
  // FLUSHDB, a careless DEL: the stream and its group are gone.
  await client.del(keys.events());
  await pass(d);
  const second = await event(keys, 'delivered', 'acme', 'm2');
  await pass(d);
  // XGROUP DESTROY alone: the group is made again and the stream's entries come again (at least once).
  await client.xgroup('DESTROY', keys.events(), 'webhooks');
  const third = await event(keys, 'delivered', 'acme', 'm3');
  await pass(d);
  await pass(d);
  const got = rx.received.flatMap((r) => r.events.map((e) => e.id));
  assert.equal(got, [first, second, second, third], 'each event after each loss; m2 again when only the group went');
  assert.is(w.lines.filter((l) => /consumer group is gone/.test(l.msg)).length, 2, 'said once per loss');
});

test('events trimmed from the stream before the dispatcher routed them are counted and logged, once each', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver();
  await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const m = counter();
  const w = warnings();
  const d = dispatcher(keys, { metrics: m.metrics, logger: w.logger });
  await pass(d);
  // The dispatcher idle (down) while 3000 events go through a stream bounded at ~500.
  await appendMany(keys, 'acme', 3000, 500);
  const kept = await client.xlen(keys.events());
  assert.ok(kept < 1500, `trimmed to ${kept}`);
  for (let i = 0; i < 4; i++) await pass(d);
  const delivered = () => rx.received.reduce((n, r) => n + r.events.length, 0);
  assert.is(delivered(), kept, 'what the stream still held is delivered');
  assert.is(m.lost(), 3000 - kept, 'the rest is counted as lost');
  assert.equal(w.lines.map((l) => [l.msg, l.lost]), [['webhook events were trimmed from the event stream before they were routed (retention.eventsMaxLen, retention.events)', 3000 - kept]]);

  // Counted once; and a second gap is counted on its own, not with the first again.
  await pass(d);
  assert.is(m.lost(), 3000 - kept);
  await appendMany(keys, 'acme', 1000, 500);
  for (let i = 0; i < 4; i++) await pass(d);
  assert.is(delivered() + m.lost(), 4000, `${delivered()} delivered + ${m.lost()} lost`);
  assert.ok(m.lost() > 3000 - kept);

  // A gap while an erasure's XDEL lies in the stream ahead of the group, where Redis gives no lag:
  // counted too (nothing was before), the erased entry with it (the two cannot be told apart).
  const [sent, lost] = [delivered(), m.lost()];
  await appendMany(keys, 'acme', 1000, 300);
  const held = (await client.xrange(keys.events(), '-', '+')) as [string, string[]][];
  assert.ok(held.length < 1000, `trimmed to ${held.length}`);
  assert.is(await client.xdel(keys.events(), held[Math.floor(held.length / 2)]![0]), 1);
  for (let i = 0; i < 4; i++) await pass(d);
  assert.is(delivered() - sent, held.length - 1, 'what the stream still held is delivered');
  assert.is(m.lost() - lost, 1000 - (held.length - 1));
  assert.is(w.lines.length, 3, 'said once a gap');
});

test("no loss is counted for entries trimmed before the group existed or erased unread; a dead consumer's pending entries trimmed are", async () => {
  const { keys } = redis.fresh();
  // A stream trimmed before the first dispatcher ran: those entries were never the group's.
  await appendMany(keys, 'nobody', 2000, 100);
  const rx = await receiver();
  await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] });
  const m = counter();
  const d = dispatcher(keys, { metrics: m.metrics, claimIdleMs: 0 });
  await pass(d);
  assert.is(m.lost(), 0, 'nothing lost by the group');
  // An erasure deletes unread entries (XDEL): deliberate, not lost.
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) ids.push(await event(keys, 'delivered', 'acme', `e${i}`));
  await client.xdel(keys.events(), ids[1]!, ids[4]!);
  await pass(d);
  assert.equal(rx.received.flatMap((r) => r.events.map((e) => e.id)), [ids[0], ids[2], ids[3], ids[5]]);
  assert.is(m.lost(), 0);
  // Entries a dead consumer read and never routed, trimmed while pending: lost too.
  const a = [await event(keys, 'delivered', 'acme', 'p1'), await event(keys, 'delivered', 'acme', 'p2')];
  const kept = await event(keys, 'delivered', 'acme', 'p3');
  await client.xreadgroup('GROUP', 'webhooks', 'crashed', 'COUNT', 10, 'STREAMS', keys.events(), '>');
  await client.xtrim(keys.events(), 'MINID', kept);
  await pass(d);
  assert.equal(rx.received.flatMap((r) => r.events.map((e) => e.id)).slice(4), [kept]);
  assert.is(m.lost(), 2, `${a.join(', ')} trimmed while pending`);
  const pending = (await client.xpending(keys.events(), 'webhooks')) as [number, ...unknown[]];
  assert.is(pending[0], 0);
});

test('concurrent registrations cannot take an account past its webhook limit', async () => {
  const { keys } = redis.fresh();
  const tries = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => createWebhook(client, keys, 'acme', { url: `https://hooks.acme.test/${i}`, events: ['*'] })));
  const refused = tries.filter((t): t is PromiseRejectedResult => t.status === 'rejected');
  assert.is(tries.length - refused.length, MAX_WEBHOOKS_PER_ACCOUNT);
  assert.ok(refused.every((t) => (t.reason as { code?: string }).code === 'SLUICE_INGRESS_BAD_REQUEST'), String(refused[0]?.reason));
  assert.is(await client.hlen(keys.webhooks('acme')), MAX_WEBHOOKS_PER_ACCOUNT);
});

test('a secret sealed with a key is not stored in clear, signs with the key, and refuses a wrong key', async () => {
  const { keys } = redis.fresh();
  const rx = await receiver();
  const key = Buffer.alloc(32, 7);
  const { endpoint, secret } = await createWebhook(client, keys, 'acme', { url: rx.url, events: ['*'] }, { secretKey: key });
  const raw = (await client.hget(keys.webhooks('acme'), endpoint.id)) as string;
  assert.not.match(raw, secret);
  assert.match(raw, '"gcm:');
  const sealed = (await getWebhook(client, keys, 'acme', endpoint.id))!;
  assert.is(openSecret(sealed, key), secret);
  assert.throws(() => openSecret(sealed, Buffer.alloc(32, 8)), /does not open/);
  assert.throws(() => openSecret({ ...sealed, id: '0000000000000000' }, key), /does not open/, 'bound to its endpoint');
  await event(keys, 'delivered', 'acme', 'm1');
  await pass(dispatcher(keys, { secretKey: key }));
  const r = rx.received[0]!;
  assert.ok(verifyWebhookSignature(r.headers['sluice-signature'] as string, r.body, secret, Math.floor(Date.now() / 1000)));
});

test.run();
