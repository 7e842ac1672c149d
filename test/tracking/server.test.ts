import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, request } from 'undici';
import { connect } from 'node:net';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { freePort, startRedis, type TestRedis } from '../helpers/redis.js';
import { createRedis } from '../../src/redis/client.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { createLogger } from '../../src/observability/logger.js';
import { createTokenCodec, tokenPath, type TokenPayload } from '../../src/core/tokens.js';
import { newId } from '../../src/core/ids.js';
import { deleteMessage, storeMessage } from '../../src/store/messages.js';
import { closeAccount } from '../../src/store/account-state.js';
import { suppressionOf } from '../../src/store/suppression.js';
import { eraseAddress } from '../../src/store/privacy.js';
import { startTrackingServer, PIXEL_GIF, type TrackingServer, type TrackingServerOptions } from '../../src/tracking/server.js';
import { unsubscribe } from '../../src/tracking/unsubscribe.js';
import type { TrackingDeps, TrackingMetrics, TrackingMode } from '../../src/tracking/deps.js';
import type { IpAnonymization } from '../../src/tracking/anonymize-ip.js';

const test = suite('tracking/server');
const NOW = Date.UTC(2026, 2, 1, 12);
/** Tokens issued an hour before NOW: a click then is not "too fast". */
const ISSUED = Math.floor(NOW / 1000) - 3600;
const LINKS = ['https://shop.example/a?x=1', 'https://shop.example/b', 'https://shop.example/c', 'https://shop.example/d'];
const codec = createTokenCodec({ keys: [{ id: 'k1', secret: 'tracking-test-secret-0123456789' }], signWith: 'k1' });
const logger = createLogger(process.env['DEBUG_TRACKING'] ? 'debug' : 'silent');
const agent = new Agent({ keepAliveTimeout: 100 });

let redis: TestRedis;
let client: RedisClient;

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});
test.after(async () => {
  await agent.close();
  await redis.stop();
});

interface Fixture {
  keys: Keys;
  msgId: string;
  server: TrackingServer;
  base: string;
  deps: TrackingDeps;
  token(kind: 'o' | 'c' | 'u', over?: Partial<TokenPayload>): string;
  events(): Promise<Record<string, string>[]>;
  close(): Promise<void>;
}

async function fixture(
  opts: { mode?: TrackingMode; ip?: IpAnonymization; account?: string; trustProxy?: boolean; headersTimeoutMs?: number; server?: Partial<TrackingServerOptions>; metrics?: TrackingMetrics } = {},
): Promise<Fixture> {
  const { keys } = redis.fresh();
  const account = opts.account ?? 'acme';
  const msgId = newId(NOW);
  await storeMessage(client, keys, {
    id: msgId, account, source: 'http', kind: 'raw', from: 'News <news@acme.example>', fromDomain: 'acme.example',
    rcpts: [{ address: 'ann@example.org', domain: 'example.org' }, { address: 'bob<b>@example.org', domain: 'example.org' }],
    acceptedAt: NOW, tags: [], metadata: {}, body: 'x', links: LINKS,
  });
  const deps: TrackingDeps = {
    redis: client, keys, codec, logger, now: () => NOW,
    settings: { mode: opts.mode ?? 'full', anonymizeIp: opts.ip ?? 'none' },
    // Opens and clicks go through the recorder thread, as in production.
    connect: { url: redis.url },
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
  };
  // A short click hold (event-batch.ts): the tests wait for the written events.
  const server = await startTrackingServer(deps, {
    host: '127.0.0.1', port: 0, publicBaseUrl: 'https://t.example.com', clickHoldMs: 200, ...(opts.trustProxy ? { trustProxy: true } : {}), ...(opts.headersTimeoutMs ? { headersTimeoutMs: opts.headersTimeoutMs } : {}), ...opts.server,
  });
  return {
    keys, msgId, server, deps,
    base: `http://127.0.0.1:${server.port}`,
    token: (kind, over = {}) => codec.sign({ kind, account, msgId, idx: 0, issuedAt: ISSUED, ...(kind === 'c' ? { link: 1 } : {}), ...over } as TokenPayload),
    async events() {
      await server.idle();
      const entries = await client.xrange(keys.events(), '-', '+');
      return entries.map(([, flat]) => {
        const o: Record<string, string> = {};
        for (let i = 0; i + 1 < flat.length; i += 2) o[flat[i] as string] = flat[i + 1] as string;
        return o;
      });
    },
    close: () => server.close(),
  };
}

async function get(url: string, init: { method?: 'GET' | 'HEAD' | 'POST'; headers?: Record<string, string>; body?: string | Buffer } = {}) {
  const res = await request(url, { dispatcher: agent, method: init.method ?? 'GET', headers: init.headers ?? { 'user-agent': 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/130.0' }, body: init.body ?? null });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body, text: body.toString('utf8') };
}

const BROWSER = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15';

test('an open answers the 43-byte GIF, uncached, and is recorded once with its fields', async () => {
  const f = await fixture();
  try {
    const res = await get(f.base + tokenPath('o', f.token('o')), { headers: { 'user-agent': BROWSER } });
    assert.is(res.status, 200);
    assert.is(res.headers['content-type'], 'image/gif');
    assert.is(res.headers['cache-control'], 'no-store, max-age=0');
    assert.is(PIXEL_GIF.length, 43);
    assert.equal(res.body, PIXEL_GIF);
    const [ev, ...more] = await f.events();
    assert.equal(more, []);
    assert.equal(ev, { type: 'opened', at: String(NOW), account: 'acme', msgId: f.msgId, idx: '0', first: '1', machine: '0', ip: '127.0.0.1', ua: BROWSER });
    await get(f.base + tokenPath('o', f.token('o')), { headers: { 'user-agent': BROWSER } });
    const all = await f.events();
    assert.is(all.length, 2);
    assert.is(all[1]?.['first'], '0', 'a second open is a repeat');
  } finally {
    await f.close();
  }
});

test('close() returns once the recorder thread has written every answered open', async () => {
  // 150 opens of each of two recipients within the minute: no per-recipient limit here.
  const f = await fixture({ server: { opensPerRecipientMinute: 1_000 } });
  const n = 300;
  // Answered, not yet written: the recorder thread holds them (or they wait for it) when close() starts.
  const answers = await Promise.all(Array.from({ length: n }, (_, i) => get(f.base + tokenPath('o', f.token('o', { idx: i % 2 })), { headers: { 'user-agent': BROWSER } })));
  assert.ok(answers.every((a) => a.status === 200));
  await f.close();
  const entries = await client.xrange(f.keys.events(), '-', '+');
  assert.is(entries.length, n, 'every answered open is in the stream once close() has returned');
  const stats = await client.hgetall(f.keys.msgStats(f.msgId));
  assert.is(stats['opens_human'], String(n));
  assert.is(stats['opens_unique_human'], '2', 'two recipients, one first open each');
});

/** Metrics that count held pixels and request results (the other tracking metrics are ignored). */
function holdCounter(): { metrics: TrackingMetrics; seen: { held: number; results: Record<string, number> } } {
  const seen = { held: 0, results: {} as Record<string, number> };
  const metrics: TrackingMetrics = {
    requests: { inc: (l, n = 1) => void (seen.results[`${l.endpoint}:${l.result}`] = (seen.results[`${l.endpoint}:${l.result}`] ?? 0) + n) },
    events: { inc: () => undefined },
    duration: { observe: () => undefined },
    pixelsHeld: { inc: () => void seen.held++ },
  };
  return { metrics, seen };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('while the recorder is behind (over half its bound waiting), pixel answers wait until it catches up; nothing is dropped', async () => {
  const { metrics, seen } = holdCounter();
  const f = await fixture({ server: { maxPendingRecords: 40, pixelHoldMs: 60_000 }, metrics });
  const pixel = (i: number) => get(f.base + tokenPath('o', f.token('o', { idx: i % 2 })), { headers: { 'user-agent': BROWSER } });
  try {
    await pixel(0); // the recorder thread is started and connected
    await f.server.idle();
    // Redis takes no write: the recorder's flush waits, and what it was given stays pending.
    await client.call('CLIENT', 'PAUSE', '60000', 'WRITE');
    const early = await Promise.all(Array.from({ length: 20 }, (_, i) => pixel(i)));
    assert.ok(early.every((r) => r.status === 200 && r.body.equals(PIXEL_GIF)), 'under half the bound: answered at once');
    let answered = 0;
    const late = Array.from({ length: 10 }, (_, i) => pixel(i).then((r) => (answered++, r)));
    await sleep(300);
    assert.is(answered, 0, 'over half the bound: held while nothing can be written');
    assert.is(seen.held, 10);
    await client.call('CLIENT', 'UNPAUSE');
    const res = await Promise.all(late);
    assert.ok(res.every((r) => r.status === 200 && r.body.equals(PIXEL_GIF)), 'answered once the recorder caught up');
    assert.is((await f.events()).length, 31, 'every open written');
    assert.is(seen.results['open:shed'], undefined, 'none dropped');
    assert.is(seen.results['open:ok'], 31);
  } finally {
    await client.call('CLIENT', 'UNPAUSE');
    await f.close();
  }
});

test('a held pixel is answered after pixelHoldMs even while Redis takes nothing; past the bound opens are dropped and counted, the pixel still answers', async () => {
  const { metrics, seen } = holdCounter();
  const f = await fixture({ server: { maxPendingRecords: 10, pixelHoldMs: 100 }, metrics });
  const pixel = (i: number) => get(f.base + tokenPath('o', f.token('o', { idx: i % 2 })), { headers: { 'user-agent': BROWSER } });
  try {
    await pixel(0);
    await f.server.idle();
    await client.call('CLIENT', 'PAUSE', '60000', 'WRITE');
    // 5 at once, then 10 held (each answered after 100 ms, Redis still paused): 5 recorded, 5 dropped.
    const res = await Promise.all(Array.from({ length: 15 }, (_, i) => pixel(i)));
    assert.ok(res.every((r) => r.status === 200 && r.body.equals(PIXEL_GIF)), 'every pixel answered while Redis is paused');
    assert.is(seen.held, 10, 'held: every request over half the bound, the dropped ones too');
    assert.is(seen.results['open:shed'], 5, 'over the bound: dropped, counted');
    await client.call('CLIENT', 'UNPAUSE');
    assert.is((await f.events()).length, 11, 'the warm-up and the ten within the bound');
  } finally {
    await client.call('CLIENT', 'UNPAUSE');
    await f.close();
  }
});

test('a click answered 503 because Redis was silent past its deadline: the first-click mark and count written meanwhile get their event', async () => {
  const f = await fixture();
  const admin = redis.client();
  try {
    await admin.call('CLIENT', 'PAUSE', '6500', 'ALL');
    const res = await get(f.base + tokenPath('c', f.token('c')), { headers: { 'user-agent': BROWSER } });
    assert.is(res.status, 503, 'the recipient is answered at the deadline');
    // Redis answers again; the click's marks are written, then its event.
    let clicks: Record<string, string>[] = [];
    for (let i = 0; i < 100 && clicks.length === 0; i++) {
      await sleep(100);
      await f.server.idle();
      clicks = (await f.events()).filter((e) => e['type'] === 'clicked');
    }
    assert.equal(clicks.map((e) => e['first']), ['1'], 'the first click is written, once');
    assert.is((await client.hgetall(f.keys.msgStats(f.msgId)))['clicks_unique_human'], '1');
  } finally {
    await admin.call('CLIENT', 'UNPAUSE').catch(() => undefined);
    await f.close();
  }
});

test('clicks waiting on a silent Redis are bounded (maxRedisWork): past the bound a click is answered 503 at once, and served again once Redis answers', async () => {
  const { metrics, seen } = holdCounter();
  const f = await fixture({ server: { maxRedisWork: 3 }, metrics });
  const admin = redis.client();
  try {
    await admin.call('CLIENT', 'PAUSE', '1500', 'ALL');
    const started = Date.now();
    const clicks = Array.from({ length: 3 }, (_, link) => get(f.base + tokenPath('c', f.token('c', { link })), { headers: { 'user-agent': BROWSER } }));
    // The three are waiting on Redis (each sent its command): a fourth and fifth find the bound reached.
    await sleep(300);
    const over = await Promise.all([0, 1].map((link) => get(f.base + tokenPath('c', f.token('c', { link })), { headers: { 'user-agent': BROWSER } })));
    assert.equal(over.map((r) => r.status), [503, 503]);
    assert.ok(Date.now() - started < 1_400, 'answered before Redis answers again');
    assert.equal(over.map((r) => r.headers['retry-after']), ['30', '30']);
    assert.equal((await Promise.all(clicks)).map((r) => r.status), [302, 302, 302], 'those waiting are answered once Redis is');
    assert.is(seen.results['click:busy'], 2);
    const again = await get(f.base + tokenPath('c', f.token('c', { link: 2 })), { headers: { 'user-agent': BROWSER } });
    assert.is(again.status, 302, 'room again');
  } finally {
    await admin.call('CLIENT', 'UNPAUSE').catch(() => undefined);
    await f.close();
  }
});

test('close() with Redis silent past the recorder\'s grace: the answered opens it could not write are counted lost and close() fails, not a clean stop', async () => {
  const { metrics, seen } = holdCounter();
  const f = await fixture({ server: { recorderCloseGraceMs: 300 }, metrics });
  const admin = redis.client();
  try {
    await admin.call('CLIENT', 'PAUSE', '3000', 'ALL');
    const answers = await Promise.all(Array.from({ length: 5 }, (_, i) => get(f.base + tokenPath('o', f.token('o', { idx: i % 2 })), { headers: { 'user-agent': BROWSER } })));
    assert.equal(answers.map((a) => a.status), [200, 200, 200, 200, 200]);
    const closed = await f.close().then(() => null, (err: Error) => err);
    assert.match(String(closed?.message), /5 answered events not written/);
    assert.is(seen.results['open:lost'], 5);
  } finally {
    await admin.call('CLIENT', 'UNPAUSE').catch(() => undefined);
  }
});

test('one copy\'s pixel or link requested over and over: answered every time, recorded up to its per-minute limit (result throttled), its first open and click always', async () => {
  const { metrics, seen } = holdCounter();
  const f = await fixture({ server: { opensPerRecipientMinute: 3, clicksPerRecipientMinute: 2 }, metrics });
  try {
    const opens = await Promise.all(Array.from({ length: 10 }, () => get(f.base + tokenPath('o', f.token('o')), { headers: { 'user-agent': BROWSER } })));
    assert.ok(opens.every((r) => r.status === 200 && r.body.equals(PIXEL_GIF)), 'every pixel answered');
    const other = await get(f.base + tokenPath('o', f.token('o', { idx: 1 })), { headers: { 'user-agent': BROWSER } });
    assert.is(other.status, 200);
    const clicks = [];
    for (let i = 0; i < 5; i++) clicks.push(await get(f.base + tokenPath('c', f.token('c')), { headers: { 'user-agent': BROWSER } }));
    assert.equal(clicks.map((r) => [r.status, r.headers['location']]), Array.from({ length: 5 }, () => [302, LINKS[1]]), 'every click redirected');
    await sleep(400);
    const events = await f.events();
    assert.equal(events.filter((e) => e['type'] === 'opened').map((e) => `${e['idx']}:${e['first']}`).sort(), ['0:0', '0:0', '0:1', '1:1'], "three of recipient 0's opens (the first among them), and recipient 1's");
    assert.is(events.filter((e) => e['type'] === 'clicked').length, 2);
    assert.is(seen.results['open:throttled'], 7);
    assert.is(seen.results['click:throttled'], 3);
    const stats = await client.hgetall(f.keys.msgStats(f.msgId));
    assert.is(stats['opens_human'], '4', 'throttled opens are not counted either');
  } finally {
    await f.close();
  }
});

/** Nice values of this process's threads by thread id (Linux: field 19 of /proc/self/task/<tid>/stat). */
function threadNices(): Map<number, number> {
  return new Map(readdirSync('/proc/self/task').map((tid) => {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    // After the command name in parentheses: state is field 3, nice field 19.
    return [Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])] as const;
  }));
}

test('the recorder thread runs at recorderNice, the rest of the process keeps its priority', async () => {
  if (!existsSync('/proc/self/task')) return void console.log('  (no /proc: skipped)');
  // The main thread is the one whose id is the process id: readdir lists the tasks sorted as text
  // (libuv), so a thread id with fewer digits or past a pid wrap-around comes before it.
  const before = threadNices();
  assert.not.ok([...before.values()].includes(7), 'no thread at nice 7 before the server starts');
  assert.ok(before.has(process.pid), 'the main thread is listed');
  const f = await fixture({ server: { recorderNice: 7 } });
  try {
    // The thread starts with the first event.
    await get(f.base + tokenPath('o', f.token('o')), { headers: { 'user-agent': BROWSER } });
    assert.is((await f.events()).length, 1);
    const nices = threadNices();
    const at7 = [...nices].filter(([, n]) => n === 7).map(([tid]) => tid);
    assert.is(at7.length, 1, `one thread at nice 7: ${[...nices].map(([tid, n]) => `${tid}:${n}`).join(',')}`);
    assert.is.not(at7[0], process.pid, 'the thread at nice 7 is not the main thread');
    assert.is(nices.get(process.pid), before.get(process.pid), 'the main thread (its id is the process id) keeps its nice value');
  } finally {
    await f.close();
  }
});

test('a click redirects to the link of the message table and is recorded once', async () => {
  const f = await fixture();
  try {
    const res = await get(f.base + tokenPath('c', f.token('c', { link: 1 })), { headers: { 'user-agent': BROWSER } });
    assert.is(res.status, 302);
    assert.is(res.headers['location'], LINKS[1]);
    const evs = await f.events();
    assert.is(evs.length, 1);
    assert.equal(evs[0], { type: 'clicked', at: String(NOW), account: 'acme', msgId: f.msgId, idx: '0', link: '1', first: '1', machine: '0', ip: '127.0.0.1', ua: BROWSER });
    const missing = await get(f.base + tokenPath('c', f.token('c', { link: 99 })));
    assert.is(missing.status, 404);
    assert.is(missing.headers['location'], undefined);
    assert.is((await f.events()).length, 1, 'a link the table lacks records nothing');
  } finally {
    await f.close();
  }
});

test('tampered tokens record nothing, never redirect, and the pixel still answers', async () => {
  const f = await fixture();
  try {
    const raw = Buffer.from(f.token('c'), 'base64url');
    for (let i = 0; i < raw.length; i++) {
      const b = Buffer.from(raw);
      b[i] = (b[i] as number) ^ 0x01;
      const res = await get(f.base + '/c/' + b.toString('base64url'));
      assert.is(res.status, 404, `byte ${i}`);
      assert.is(res.headers['location'], undefined);
    }
    // Every byte of a pixel token and of an unsubscribe token, each flipped in turn.
    const open = Buffer.from(f.token('o'), 'base64url');
    for (let i = 0; i < open.length; i++) {
      const b = Buffer.from(open);
      b[i] = (b[i] as number) ^ 0x80;
      const pixel = await get(f.base + tokenPath('o', b.toString('base64url')));
      assert.is(pixel.status, 200, `pixel byte ${i}`);
      assert.equal(pixel.body, PIXEL_GIF);
    }
    const unsub = Buffer.from(f.token('u'), 'base64url');
    for (let i = 0; i < unsub.length; i++) {
      const b = Buffer.from(unsub);
      b[i] = (b[i] as number) ^ 0x01;
      const url = f.base + '/u/' + b.toString('base64url');
      assert.is((await get(url)).status, 404, `unsubscribe page byte ${i}`);
      const post = await get(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
      assert.is(post.status, 404, `one-click byte ${i}`);
    }
    assert.is(await suppressionOf(client, f.keys, 'acme', 'ann@example.org'), null, 'no tampered unsubscribe suppressed anyone');
    // A valid token of the wrong kind is refused too.
    assert.is((await get(f.base + '/c/' + f.token('o'))).status, 404);
    assert.is((await get(f.base + '/c/' + f.token('c') + '/../x')).status, 404);
    assert.equal(await f.events(), []);
    assert.is(await client.exists(f.keys.trackMarks(f.msgId)), 0);
  } finally {
    await f.close();
  }
});

test('a link as written in the HTML (non-ASCII, a wrapped line, an IDN host) redirects where a browser would have gone; a non-http link is not followed', async () => {
  const f = await fixture();
  try {
    const msgId = newId(NOW);
    const links = ['https://shop.example/straße?q=été', 'https://例え.jp/日本語', 'https://shop.example/spring-\nsale?a=1 ', 'javascript:alert(1)', 'https://shop.example/a b'];
    await storeMessage(client, f.keys, {
      id: msgId, account: 'acme', source: 'http', kind: 'raw', from: 'News <news@acme.example>', fromDomain: 'acme.example',
      rcpts: [{ address: 'ann@example.org', domain: 'example.org' }], acceptedAt: NOW, tags: [], metadata: {}, body: 'x', links,
    });
    const locations = [];
    for (const link of links.keys()) {
      const res = await get(f.base + '/c/' + f.token('c', { msgId, link }), { headers: { 'user-agent': BROWSER } });
      locations.push(res.status === 302 ? res.headers['location'] : res.status);
    }
    assert.equal(locations, [
      'https://shop.example/stra%C3%9Fe?q=%C3%A9t%C3%A9',
      'https://xn--r8jz45g.jp/%E6%97%A5%E6%9C%AC%E8%AA%9E',
      'https://shop.example/spring-sale?a=1',
      404,
      'https://shop.example/a%20b',
    ]);
  } finally {
    await f.close();
  }
});

test('while Redis is unreachable, a click and the unsubscribe page are answered 503 at once; the pixel still answers', async () => {
  const dead = `redis://127.0.0.1:${await freePort()}`;
  const down = createRedis({ url: dead });
  down.on('error', () => undefined);
  const { keys } = redis.fresh();
  const server = await startTrackingServer(
    { redis: down, keys, codec, logger, now: () => NOW, settings: { mode: 'full', anonymizeIp: 'none' }, connect: { url: dead } },
    { host: '127.0.0.1', port: 0, publicBaseUrl: 'https://t.example.com' },
  );
  const base = `http://127.0.0.1:${server.port}`;
  const msgId = newId(NOW);
  const sign = (kind: 'o' | 'c' | 'u') => codec.sign({ kind, account: 'acme', msgId, idx: 0, issuedAt: ISSUED, ...(kind === 'c' ? { link: 0 } : {}) } as TokenPayload);
  try {
    const started = Date.now();
    const click = await get(base + '/c/' + sign('c'), { headers: { 'user-agent': BROWSER } });
    const page = await get(base + '/u/' + sign('u'), { headers: { 'user-agent': BROWSER } });
    const oneClick = await get(base + '/u/' + sign('u'), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
    assert.equal([click.status, page.status, oneClick.status], [503, 503, 503]);
    assert.is(click.headers['retry-after'], '30');
    assert.ok(Date.now() - started < 3000, 'answered at once, not after a timeout');
    // A bad link is no link whatever Redis's state: 404, not "try again", as a bad unsubscribe link.
    const forged = sign('c').slice(0, -2) + (sign('c').endsWith('AA') ? 'BB' : 'AA');
    const badClick = await get(base + '/c/' + forged);
    const badPage = await get(base + '/u/' + sign('u').slice(0, -3));
    assert.equal([badClick.status, badPage.status], [404, 404]);
    assert.is(badClick.headers['retry-after'], undefined);
    const pixel = await get(base + tokenPath('o', sign('o')), { headers: { 'user-agent': BROWSER } });
    assert.is(pixel.status, 200);
    assert.equal(pixel.body, PIXEL_GIF);
  } finally {
    await Promise.race([server.close(), new Promise((r) => setTimeout(r, 3000))]);
    down.disconnect();
  }
});

test('while Redis refuses writes (maxmemory, too few replicas), a click still redirects, recording nothing; an unsubscribe is 503 to retry', async () => {
  const f = await fixture();
  try {
    for (const [name, on] of [['maxmemory', '1'], ['min-replicas-to-write', '1']] as const) {
      await client.config('SET', name, on);
      try {
        const res = await get(f.base + tokenPath('c', f.token('c', { link: 3 })), { headers: { 'user-agent': BROWSER } });
        assert.is(res.status, 302, name);
        assert.is(res.headers['location'], LINKS[3]);
        assert.is((await get(f.base + tokenPath('c', f.token('c', { link: 99 })))).status, 404, `${name}: a link the table lacks`);
        const unsub = await get(f.base + '/u/' + f.token('u'), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
        assert.is(unsub.status, 503, `${name}: the unsubscribe cannot be written`);
        assert.is(unsub.headers['retry-after'], '30');
      } finally {
        await client.config('SET', name, '0');
      }
    }
    assert.equal(await f.events(), []);
    assert.is(await client.exists(f.keys.trackMarks(f.msgId)), 0);
    // Writes taken again: the next click is recorded.
    assert.is((await get(f.base + tokenPath('c', f.token('c', { link: 3 })), { headers: { 'user-agent': BROWSER } })).status, 302);
    assert.is((await f.events()).length, 1);
  } finally {
    await f.close();
  }
});

test("a token from another message cannot reach this message's links", async () => {
  const f = await fixture();
  try {
    const otherId = newId(NOW + 5);
    await client.rpush(f.keys.links(otherId), 'https://other.example/only');
    const other = (link: number) => codec.sign({ kind: 'c', account: 'acme', msgId: otherId, idx: 0, link, issuedAt: ISSUED });
    assert.is((await get(f.base + '/c/' + other(0))).headers['location'], 'https://other.example/only');
    // Link 2 exists in this message's table, not in the other's: no redirect.
    const res = await get(f.base + '/c/' + other(2));
    assert.is(res.status, 404);
    assert.is(res.headers['location'], undefined);
  } finally {
    await f.close();
  }
});

test('RFC 8058: the exact POST Gmail sends unsubscribes at once, recorded once', async () => {
  const f = await fixture();
  try {
    const res = await get(f.base + '/u/' + f.token('u'), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'user-agent': 'Mozilla/5.0 (compatible; Google-Mail-Unsubscribe)' },
      body: 'List-Unsubscribe=One-Click',
    });
    assert.is(res.status, 200);
    assert.match(res.text, 'ann@example.org');
    const s = await suppressionOf(client, f.keys, 'acme', 'ann@example.org');
    assert.is(s?.reason, 'unsubscribe');
    const eventId = (await client.xrange(f.keys.events(), '-', '+'))[0]?.[0];
    assert.equal(s?.evidence, { event: eventId, msgId: f.msgId, idx: 0, via: 'http' }, 'the evidence names the event');
    const evs = await f.events();
    assert.is(evs.length, 1);
    assert.is(evs[0]?.['type'], 'unsubscribed');
    assert.is(evs[0]?.['idx'], '0');
    assert.is(evs[0]?.['first'], '1');
  } finally {
    await f.close();
  }
});

test('after its record is purged, an unsubscribe link that carries the address still unsubscribes (no sender named, nothing of the message written); one without, or of a closed account, is invalid', async () => {
  const f = await fixture();
  try {
    const sealed = (idx: number, address: string) => codec.signer({ account: 'acme', msgId: f.msgId, idx, issuedAt: ISSUED, address })('u');
    const url = f.base + '/u/' + sealed(1, 'bob<b>@example.org');
    // The end of retention.records: the message's record, body and link table are gone.
    await deleteMessage(client, f.keys, f.msgId);
    const page = await get(url);
    assert.is(page.status, 200);
    assert.match(page.text, 'Stop mail from this sender to <strong>bob&lt;b&gt;@example.org</strong>?');
    assert.is(await suppressionOf(client, f.keys, 'acme', 'bob<b>@example.org'), null, 'the page alone unsubscribes nobody');

    const oneClick = () => get(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
    const done = await oneClick();
    assert.is(done.status, 200);
    assert.match(done.text, 'will no longer receive mail from this sender');
    const entry = await suppressionOf(client, f.keys, 'acme', 'bob<b>@example.org');
    assert.is(entry?.reason, 'unsubscribe');
    assert.is(entry?.list, 'acme');
    const eventId = (await client.xrange(f.keys.events(), '-', '+'))[0]?.[0];
    assert.equal(entry?.evidence, { event: eventId, msgId: f.msgId, idx: 1, via: 'http' });
    assert.is((await oneClick()).status, 200, 'a repeat is answered the same');
    const evs = await f.events();
    assert.equal(evs.map((e) => [e['type'], e['msgId'], e['idx'], e['first']]), [['unsubscribed', f.msgId, '1', '1'], ['unsubscribed', f.msgId, '1', '0']]);
    // No marks or counters made again for the purged message.
    assert.equal(await client.keys(`*${f.msgId}*`), []);

    // A token without the address has nothing left to name.
    assert.is((await get(f.base + '/u/' + f.token('u', { idx: 0 }))).status, 404);
    assert.is((await get(f.base + '/u/' + f.token('u', { idx: 0 }), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' })).status, 404);
    // A closed account's data is being deleted (its purgeAt has come): nothing is written for it any more.
    await closeAccount(client, f.keys, 'acme', { now: NOW, windowMs: 0, by: 'cli' });
    const closed = await get(f.base + '/u/' + sealed(0, 'ann@example.org'), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
    assert.is(closed.status, 404);
    assert.is(await suppressionOf(client, f.keys, 'acme', 'ann@example.org'), null);
  } finally {
    await f.close();
  }
});

test("after its record is purged, an erased recipient's link that carries the address answers 404 and writes nothing when the erasure kept its suppression; without one it is an opt-out", async () => {
  const f = await fixture();
  try {
    const sealed = (idx: number, address: string) => codec.signer({ account: 'acme', msgId: f.msgId, idx, issuedAt: ISSUED, address })('u');
    const oneClick = (token: string) => get(f.base + '/u/' + token, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
    await deleteMessage(client, f.keys, f.msgId);
    assert.is((await oneClick(sealed(1, 'bob<b>@example.org'))).status, 200);
    await eraseAddress(client, f.keys, 'bob<b>@example.org', { accounts: ['acme'], all: true }, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'hmac:test' });
    const fields = await client.hkeys(f.keys.suppression('acme'));
    assert.ok(fields.length === 1 && fields[0]?.startsWith('erased:'), 'the erasure kept the suppression as a digest');
    const events = (await f.events()).length;

    // The same link again: the address would be written in clear beside its digest.
    assert.is((await get(f.base + '/u/' + sealed(1, 'BOB<b>@example.org'))).status, 404);
    assert.is((await oneClick(sealed(1, 'BOB<b>@example.org'))).status, 404);
    assert.equal(await client.hkeys(f.keys.suppression('acme')), fields);
    assert.is((await f.events()).length, events);
    assert.ok((await suppressionOf(client, f.keys, 'acme', 'bob<b>@example.org')) !== null, 'still never mailed');

    // Erased with no suppression kept, nothing tells the address from any other: the click opts it out.
    await eraseAddress(client, f.keys, 'ann@example.org', { accounts: ['acme'], all: true }, { eventsMaxLen: 1000, recordTtlMs: 60_000, refsTtlMs: 3_600_000, ref: 'hmac:test' });
    assert.is((await oneClick(sealed(0, 'ann@example.org'))).status, 200);
    assert.is((await suppressionOf(client, f.keys, 'acme', 'ann@example.org'))?.reason, 'unsubscribe');
  } finally {
    await f.close();
  }
});

test("a closed account's recipient may still opt out until its deletion is due; from then the link is invalid and writes nothing, the message's record kept or not", async () => {
  const f = await fixture();
  try {
    const oneClick = (token: string) => get(f.base + '/u/' + token, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
    // Closed, data kept for a day: its mail is held, and goes out again if it is reopened.
    await closeAccount(client, f.keys, 'acme', { now: NOW - 1000, windowMs: 86_400_000, by: 'cli' });
    assert.is((await oneClick(f.token('u', { idx: 1 }))).status, 200);
    assert.is((await suppressionOf(client, f.keys, 'acme', 'bob<b>@example.org'))?.reason, 'unsubscribe');

    // The deletion is due: the retention walk is removing the account's keys, the record of this
    // message among them, in keyspace order. A suppression written now could outlive it.
    await client.hdel(f.keys.closedAccounts(), 'acme');
    await closeAccount(client, f.keys, 'acme', { now: NOW - 1000, windowMs: 1000, by: 'cli' });
    const before = (await f.events()).length;
    const page = await get(f.base + '/u/' + f.token('u'));
    assert.is(page.status, 404, 'the page of a kept record');
    assert.match(page.text, 'not valid');
    assert.is((await oneClick(f.token('u'))).status, 404, 'the one-click of a kept record');
    assert.is(await suppressionOf(client, f.keys, 'acme', 'ann@example.org'), null);
    assert.is((await f.events()).length, before, 'no event');
    assert.is(await client.hget(f.keys.trackMarks(f.msgId), 'u:0'), null, 'no mark');
  } finally {
    await f.close();
  }
});

test('with a path in publicBaseUrl, the URLs written into mail reach every endpoint as a proxy passes them on, the path kept or stripped', async () => {
  const f = await fixture({ server: { publicBaseUrl: 'https://example.com/track' } });
  try {
    for (const prefix of ['/track', '']) {
      const pixel = await get(f.base + prefix + tokenPath('o', f.token('o')), { headers: { 'user-agent': BROWSER } });
      assert.is(pixel.status, 200, `${prefix} pixel`);
      assert.equal(pixel.body, PIXEL_GIF);
      const click = await get(f.base + prefix + tokenPath('c', f.token('c', { link: 2 })) + '?utm=x', { headers: { 'user-agent': BROWSER } });
      assert.is(click.status, 302, `${prefix} click`);
      assert.is(click.headers['location'], LINKS[2]);
      assert.is((await get(f.base + prefix + '/u/' + f.token('u'))).status, 200, `${prefix} page`);
      assert.is((await get(f.base + prefix + '/healthz')).status, 200);
    }
    const done = await get(f.base + '/track/u/' + f.token('u', { idx: 1 }), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
    assert.is(done.status, 200);
    assert.is((await suppressionOf(client, f.keys, 'acme', 'bob<b>@example.org'))?.reason, 'unsubscribe');
    // A person's first click is held for the burst window: the stream's order is not the requests'.
    assert.equal((await f.events()).map((e) => e['type']).sort(), ['clicked', 'clicked', 'opened', 'opened', 'unsubscribed']);
    // Only the whole path segment: /trackx/… is not /track/….
    assert.is((await get(f.base + '/trackx/c/' + f.token('c'))).status, 404);
  } finally {
    await f.close();
  }
});

test('a request in absolute form (GET http://host/c/…, RFC 9112 §3.2.2) is served as its path', async () => {
  const f = await fixture();
  const port = Number(new URL(f.base).port);
  /** One request with `target` over a raw socket: its status line and Location. */
  const raw = (target: string): Promise<{ status: number; location: string | undefined }> =>
    new Promise((resolve, reject) => {
      const s = connect(port, '127.0.0.1');
      let text = '';
      s.on('data', (d) => (text += d.toString('latin1')));
      s.on('error', reject);
      s.on('end', () => resolve({ status: Number(text.split(' ')[1]), location: /\r\nlocation: ([^\r]*)/i.exec(text)?.[1] }));
      s.write(`GET ${target} HTTP/1.1\r\nHost: t.example.com\r\nUser-Agent: ${BROWSER}\r\nConnection: close\r\n\r\n`);
    });
  try {
    const click = await raw('http://t.example.com' + tokenPath('c', f.token('c', { link: 1 })));
    assert.equal([click.status, click.location], [302, LINKS[1]]);
    assert.is((await raw('HTTPS://t.example.com:443' + tokenPath('o', f.token('o')))).status, 200);
    assert.is((await raw('http://t.example.com/healthz')).status, 200);
    assert.is((await raw('http://t.example.com')).status, 404, 'no path: the root');
  } finally {
    await f.close();
  }
});

test('a one-click body that arrives slowly is waited for (within the request timeout), not answered 503 as if Redis were down', async () => {
  // The body used to be read inside the 5 s Redis deadline: a client taking longer got 503 Retry-After
  // and a warning blaming Redis, and its unsubscribe was lost.
  const f = await fixture({ server: { requestTimeoutMs: 20_000 } });
  try {
    const answer = await new Promise<string>((resolve, reject) => {
      const body = 'List-Unsubscribe=One-Click';
      const sock = connect(f.server.port, '127.0.0.1', () => {
        sock.write(`POST /u/${f.token('u')} HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body.slice(0, 5)}`);
        setTimeout(() => sock.write(body.slice(5)), 6_000);
      });
      let out = '';
      sock.on('data', (d) => (out += d.toString('latin1')));
      sock.on('close', () => resolve(out));
      sock.on('error', reject);
    });
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.is((await suppressionOf(client, f.keys, 'acme', 'ann@example.org'))?.reason, 'unsubscribe');
  } finally {
    await f.close();
  }
});

test('GET shows the page and never unsubscribes; its own form does', async () => {
  const f = await fixture();
  try {
    const url = f.base + '/u/' + f.token('u', { idx: 1 });
    const page = await get(url);
    assert.is(page.status, 200);
    assert.match(page.text, 'bob&lt;b&gt;@example.org', 'the address is shown, escaped');
    assert.match(page.text, 'News &lt;news@acme.example&gt;');
    assert.not.match(page.text, '<script');
    assert.is((await get(url, { method: 'HEAD' })).status, 200);
    assert.is(await suppressionOf(client, f.keys, 'acme', 'bob<b>@example.org'), null);
    assert.equal(await f.events(), []);

    // Submit the page's form as a browser would: its fields, urlencoded, to the page's URL.
    const fields = [...page.text.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]+)">/g)].map((m): [string, string] => [m[1] as string, m[2] as string]);
    assert.is(fields.length, 1);
    const done = await get(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString() });
    assert.is(done.status, 200);
    assert.match(done.text, 'no longer receive');
    assert.is((await suppressionOf(client, f.keys, 'acme', 'bob<b>@example.org'))?.reason, 'unsubscribe');
    assert.is((await f.events()).length, 1);
  } finally {
    await f.close();
  }
});

test('a multipart one-click POST unsubscribes; other bodies and bad tokens write nothing', async () => {
  const f = await fixture();
  try {
    const url = f.base + '/u/' + f.token('u');
    const bad = await get(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=Yes' });
    assert.is(bad.status, 400);
    const forged = Buffer.from(f.token('u'), 'base64url');
    forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 1;
    const invalid = await get(f.base + '/u/' + forged.toString('base64url'), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
    assert.is(invalid.status, 404);
    assert.match(invalid.text, 'not valid');
    assert.is(await suppressionOf(client, f.keys, 'acme', 'ann@example.org'), null);
    assert.equal(await f.events(), []);

    const boundary = '----sluiceTestBoundary';
    const body = `--${boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--${boundary}--\r\n`;
    const ok = await get(url, { method: 'POST', headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, body });
    assert.is(ok.status, 200);
    assert.is((await suppressionOf(client, f.keys, 'acme', 'ann@example.org'))?.reason, 'unsubscribe');
  } finally {
    await f.close();
  }
});

test('the mailto path: unsubscribe(deps, token) suppresses and records via mail', async () => {
  const f = await fixture();
  try {
    assert.equal(await unsubscribe(f.deps, 'garbage'), { ok: false, reason: 'invalid-token' });
    assert.equal(await unsubscribe(f.deps, f.token('o')), { ok: false, reason: 'invalid-token' });
    assert.equal(await unsubscribe(f.deps, f.token('u', { idx: 9 })), { ok: false, reason: 'unknown-recipient' });
    assert.equal(await unsubscribe(f.deps, f.token('u', { account: 'mallory' })), { ok: false, reason: 'unknown-recipient' }, 'a token never acts across accounts');
    const r = await unsubscribe(f.deps, f.token('u'), { via: 'mail' });
    assert.ok(r.ok);
    assert.is((await suppressionOf(client, f.keys, 'acme', 'ann@example.org'))?.evidence['via'], 'mail');
    const evs = await f.events();
    assert.is(evs.length, 1);
    assert.is(evs[0]?.['via'], 'mail');
  } finally {
    await f.close();
  }
});

test('machine opens and clicks are classified, and do not use up the first human event', async () => {
  const f = await fixture();
  try {
    await get(f.base + tokenPath('o', f.token('o')), { headers: { 'user-agent': 'Mozilla/5.0' } });
    await get(f.base + tokenPath('o', f.token('o')), { method: 'HEAD', headers: { 'user-agent': BROWSER } });
    await get(f.base + tokenPath('o', f.token('o')), { headers: { 'user-agent': BROWSER } });
    await get(f.base + '/c/' + f.token('c', { link: 0 }), { headers: { 'user-agent': 'Mozilla/5.0 (compatible; Barracuda Sentinel)' } });
    await get(f.base + '/c/' + f.token('c', { link: 0, issuedAt: Math.floor(NOW / 1000) - 2 }), { headers: { 'user-agent': BROWSER } });
    await get(f.base + '/c/' + f.token('c', { link: 0 }), { headers: { 'user-agent': BROWSER } });
    const evs = await f.events();
    const summary = evs.map((e) => [e['type'], e['machine'], e['reason'] ?? '-', e['first']]);
    assert.equal(summary, [
      ['opened', '1', 'apple-mpp', '1'],
      ['opened', '1', 'head', '0'],
      ['opened', '0', '-', '1'],
      ['clicked', '1', 'scanner', '1'],
      ['clicked', '1', 'too-fast', '0'],
      ['clicked', '0', '-', '1'],
    ]);
  } finally {
    await f.close();
  }
});

test('all links clicked at once is a burst: every click of it is written as a machine click, the two before the third too', async () => {
  // A hold longer than the clicks may take on a busy machine (the fixture's 200 ms could run out
  // before the burst-making click); close() then writes what is still held at once.
  const f = await fixture({ server: { clickHoldMs: 60_000 } });
  try {
    // Recipient 0, a person: two links, each held for the burst window, then written as a person's.
    for (const link of [0, 2]) await get(f.base + '/c/' + f.token('c', { idx: 0, link }), { headers: { 'user-agent': BROWSER } });
    // Recipient 1, a scanner: every link at once.
    for (const link of [0, 1, 2, 3]) await get(f.base + '/c/' + f.token('c', { idx: 1, link }), { headers: { 'user-agent': BROWSER } });
  } finally {
    await f.close();
  }
  const events = (await client.xrange(f.keys.events(), '-', '+')).map(([, flat]) => {
    const o: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) o[flat[i] as string] = flat[i + 1] as string;
    return o;
  });
  const of = (idx: string) => events.filter((e) => e['idx'] === idx).map((e) => `${e['link']}:${e['machine']}:${e['reason'] ?? 'human'}`);
  assert.equal(of('1'), ['0:1:burst', '1:1:burst', '2:1:burst', '3:1:burst'], 'the scanner');
  assert.equal(of('0'), ['0:0:human', '2:0:human'], 'the person');
  const stats = await client.hgetall(f.keys.msgStats(f.msgId));
  assert.equal([stats['clicks_human'], stats['machine_clicks'], stats['clicks_unique_human']], ['2', '4', '1'], 'the counters say the same');
});

test('close() writes the clicks held for the burst window at once', async () => {
  // A hold far longer than the close may take: close() must not wait it out.
  const f = await fixture({ server: { clickHoldMs: 5_000 } });
  await get(f.base + '/c/' + f.token('c', { link: 0 }), { headers: { 'user-agent': BROWSER } });
  const started = Date.now();
  await f.close();
  assert.ok(Date.now() - started < 3_000, `close took ${Date.now() - started} ms`);
  const entries = await client.xrange(f.keys.events(), '-', '+');
  assert.is(entries.length, 1, 'the held click is in the stream');
});

test('IP anonymisation: truncate zeroes the host part, drop stores none', async () => {
  const t = await fixture({ ip: 'truncate', trustProxy: true });
  const d = await fixture({ ip: 'drop' });
  try {
    await get(t.base + tokenPath('o', t.token('o')), { headers: { 'user-agent': BROWSER, 'x-forwarded-for': '198.51.100.7, 2001:db8:1234:5678::1' } });
    await get(t.base + tokenPath('o', t.token('o')), { headers: { 'user-agent': BROWSER, 'x-forwarded-for': '203.0.113.99' } });
    assert.equal((await t.events()).map((e) => e['ip']), ['2001:db8:1234::', '203.0.113.0']);
    await get(d.base + tokenPath('o', d.token('o')), { headers: { 'user-agent': BROWSER } });
    const [ev] = await d.events();
    assert.is(ev?.['ip'], undefined);
    assert.is(ev?.['ua'], BROWSER, 'drop concerns the IP only');
  } finally {
    await t.close();
    await d.close();
  }
});

test('anonymous mode stores no recipient; off mode records nothing but still redirects', async () => {
  const a = await fixture({ mode: 'anonymous' });
  const o = await fixture({ mode: 'off' });
  try {
    await get(a.base + tokenPath('o', a.token('o')), { headers: { 'user-agent': BROWSER } });
    assert.is((await get(a.base + '/c/' + a.token('c'))).status, 302);
    const evs = await a.events();
    assert.is(evs.length, 2);
    for (const e of evs) {
      for (const field of ['idx', 'ip', 'ua', 'first']) assert.is(e[field], undefined, `${e['type']} has no ${field}`);
      assert.is(e['msgId'], a.msgId);
    }
    assert.is(await client.exists(a.keys.trackMarks(a.msgId)), 0, 'no per-recipient marks');

    await get(o.base + tokenPath('o', o.token('o')));
    const res = await get(o.base + '/c/' + o.token('c', { link: 2 }));
    assert.is(res.headers['location'], LINKS[2]);
    assert.equal(await o.events(), []);
  } finally {
    await a.close();
    await o.close();
  }
});

test("updateSettings (a configuration reload) applies from the next request, in the answering thread and the recorder thread: full → anonymous → off, and the IP's anonymisation", async () => {
  const f = await fixture({ mode: 'full' });
  try {
    const open = () => get(f.base + tokenPath('o', f.token('o')), { headers: { 'user-agent': BROWSER } });
    await open();
    let evs = await f.events();
    assert.is(evs.length, 1);
    assert.is(evs[0]?.['idx'], '0', 'full: the recipient is in the event');
    assert.ok(evs[0]?.['ip'], 'full: the address is kept');

    // The recorder thread is running (it wrote the open): the new settings reach it by message.
    f.server.updateSettings({ accounts: new Map([['acme', { mode: 'anonymous', anonymizeIp: 'none' }]]) });
    await open();
    assert.is((await get(f.base + '/c/' + f.token('c'))).status, 302);
    evs = await f.events();
    assert.is(evs.length, 3);
    for (const e of evs.slice(1)) {
      for (const field of ['idx', 'ip', 'ua', 'first']) assert.is(e[field], undefined, `anonymous ${e['type']} has no ${field}`);
    }

    f.server.updateSettings({ accounts: new Map([['acme', { mode: 'full', anonymizeIp: 'drop' }]]) });
    await open();
    evs = await f.events();
    assert.is(evs.length, 4);
    assert.is(evs[3]?.['idx'], '0');
    assert.is(evs[3]?.['ip'], undefined, 'drop: no address');

    f.server.updateSettings({ accounts: new Map([['acme', { mode: 'off', anonymizeIp: 'none' }]]) });
    await open();
    const click = await get(f.base + '/c/' + f.token('c', { link: 2 }));
    assert.is(click.headers['location'], LINKS[2], 'off still redirects');
    assert.is((await f.events()).length, 4, 'off: nothing recorded');
  } finally {
    await f.close();
  }
});

test('a reload does not reach events answered before it: opens waiting for the recorder thread and a held first click keep the mode and IP setting of their answer', async () => {
  // anonymous: opens keep no recipient; drop: a click keeps no address. The thread is not started
  // yet (no request so far), so the opens reach it with the reload's message right behind them.
  const f = await fixture({ mode: 'anonymous', ip: 'drop' });
  try {
    const opens = await Promise.all(Array.from({ length: 20 }, () => get(f.base + tokenPath('o', f.token('o')), { headers: { 'user-agent': BROWSER } })));
    assert.ok(opens.every((r) => r.status === 200));
    f.server.updateSettings({ mode: 'full', anonymizeIp: 'none' });
    // Answered under the new settings, but with the old IP setting: held for the burst window meanwhile.
    f.server.updateSettings({ mode: 'full', anonymizeIp: 'drop' });
    assert.is((await get(f.base + '/c/' + f.token('c'), { headers: { 'user-agent': BROWSER } })).status, 302);
    f.server.updateSettings({ mode: 'full', anonymizeIp: 'none' });
    const evs = await f.events();
    assert.equal(evs.map((e) => e['type']), [...Array<string>(20).fill('opened'), 'clicked']);
    for (const e of evs.slice(0, 20)) for (const field of ['idx', 'ip', 'ua', 'first']) assert.is(e[field], undefined, `an open answered in anonymous mode has no ${field}`);
    assert.is(evs[20]?.['idx'], '0');
    assert.is(evs[20]?.['ip'], undefined, 'the click was answered under drop');
  } finally {
    await f.close();
  }
});

test('limits: huge headers get 431, a huge body 413, slow or garbage clients are dropped; the server keeps serving', async () => {
  const f = await fixture();
  try {
    const big = await get(f.base + '/healthz', { headers: { 'x-junk': 'a'.repeat(20_000) } });
    assert.is(big.status, 431);
    const huge = await get(f.base + '/u/' + f.token('u'), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: Buffer.alloc(1024 * 1024, 0x61) });
    assert.is(huge.status, 413);
    assert.is(await suppressionOf(client, f.keys, 'acme', 'ann@example.org'), null);

    const garbage = await rawExchange(f.server.port, 'NOT HTTP AT ALL\r\n\r\n');
    assert.match(garbage, /^HTTP\/1\.1 400/);
    assert.is((await get(f.base + '/healthz')).status, 200);
    assert.is((await get(f.base + '/readyz')).status, 200);
    assert.is((await get(f.base + '/nope')).status, 404);
    assert.is((await get(f.base + '/c/x', { method: 'POST', body: '' })).status, 405);
  } finally {
    await f.close();
  }
});

test('a bad request pipelined behind a click still being answered cuts the connection: no 431 that the client would read as the click\'s answer', async () => {
  const f = await fixture();
  try {
    const pipelined = `GET /c/${f.token('c')} HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: ${'a'.repeat(20_000)}\r\n\r\n`;
    const answer = await rawExchange(f.server.port, pipelined).catch(() => '');
    assert.not.match(answer, /^HTTP\/1\.1 431/, 'the 431 is not the first answer');
    if (answer !== '') assert.match(answer, /^HTTP\/1\.1 302 /);
    // Alone, the bad request still gets its 431.
    assert.match(await rawExchange(f.server.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: ${'a'.repeat(20_000)}\r\n\r\n`), /^HTTP\/1\.1 431 /);
    assert.is((await get(f.base + '/healthz')).status, 200);
  } finally {
    await f.close();
  }
});

test('slow-loris: a client that never finishes its headers is answered 408 and dropped', async () => {
  const f = await fixture({ headersTimeoutMs: 300 });
  try {
    const answer = await rawExchange(f.server.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    assert.match(answer, /^HTTP\/1\.1 408/);
    assert.is((await get(f.base + '/healthz')).status, 200);
  } finally {
    await f.close();
  }
});

/** Counts of sluice_tracking_connections_refused_total by reason (the other tracking metrics are ignored). */
function refusalCounter(): { metrics: TrackingMetrics; refused: Record<string, number> } {
  const refused: Record<string, number> = {};
  const metrics: TrackingMetrics = {
    requests: { inc: () => undefined },
    events: { inc: () => undefined },
    duration: { observe: () => undefined },
    connectionsRefused: { inc: ({ reason }) => void (refused[reason] = (refused[reason] ?? 0) + 1) },
  };
  return { metrics, refused };
}

/** A connection that stays open, idle, until end() is called. */
async function idleConnection(port: number): Promise<{ end(): Promise<void> }> {
  const sock = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  return { end: () => new Promise<void>((resolve) => { sock.once('close', () => resolve()); sock.end(); }) };
}

test('one client holding maxConnectionsPerClient connections gets 503 on the next, recorded nowhere; a freed slot serves again', async () => {
  const { metrics, refused } = refusalCounter();
  // Loopback is exempt by default; here it is counted like any client.
  const f = await fixture({ server: { maxConnectionsPerClient: 2, clientLimitExempt: [] }, metrics });
  try {
    const held = [await idleConnection(f.server.port), await idleConnection(f.server.port)];
    const pixel = `GET ${tokenPath('o', f.token('o'))} HTTP/1.1\r\nHost: t.example.com\r\nUser-Agent: ${BROWSER}\r\n\r\n`;
    const answer = await rawExchange(f.server.port, pixel);
    assert.match(answer, /^HTTP\/1\.1 503 /);
    assert.match(answer, /Too many connections/);
    assert.not.match(answer, /image\/gif/);
    assert.equal(refused, { client_limit: 1 });
    assert.equal(await f.events(), [], 'no open recorded from a refused connection');

    await held[0]?.end();
    const served = await rawExchange(f.server.port, pixel.replace('HTTP/1.1\r\n', 'HTTP/1.1\r\nConnection: close\r\n'));
    assert.match(served, /^HTTP\/1\.1 200 /);
    assert.is((await f.events()).length, 1);
    await held[1]?.end();
  } finally {
    await f.close();
  }
});

test('an exempt network, or any client behind a trusted proxy, is not counted by maxConnectionsPerClient; maxConnections closes connections beyond it', async () => {
  const exempt = await fixture({ server: { maxConnectionsPerClient: 1, clientLimitExempt: ['127.0.0.0/8'] } });
  try {
    const held = [await idleConnection(exempt.server.port), await idleConnection(exempt.server.port)];
    assert.match(await rawExchange(exempt.server.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 /);
    for (const h of held) await h.end();
  } finally {
    await exempt.close();
  }

  // Behind a proxy (trustProxy) every connection comes from the proxy: no per-client cap.
  const proxied = await fixture({ trustProxy: true, server: { maxConnectionsPerClient: 1, clientLimitExempt: [] } });
  try {
    const held = await idleConnection(proxied.server.port);
    assert.match(await rawExchange(proxied.server.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 /);
    await held.end();
  } finally {
    await proxied.close();
  }

  const { metrics, refused } = refusalCounter();
  const f = await fixture({ server: { maxConnections: 1 }, metrics });
  try {
    const held = await idleConnection(f.server.port);
    assert.is(await closedUnanswered(f.server.port), '', 'closed unanswered');
    assert.equal(refused, { server_limit: 1 });
    await held.end();
    assert.match(await rawExchange(f.server.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 /);
  } finally {
    await f.close();
  }
});

/** Connects, sends nothing, and returns what the server sent before it closed the connection. */
function closedUnanswered(port: number): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    let out = '';
    sock.on('data', (d) => (out += d.toString('latin1')));
    sock.on('close', () => resolve(out));
    // A reset instead of a FIN is closed too.
    sock.on('error', () => undefined);
  });
}

/** Sends raw bytes and returns whatever the server answers before closing. */
function rawExchange(port: number, data: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1', () => sock.write(data));
    let out = '';
    sock.on('data', (d) => (out += d.toString('latin1')));
    sock.on('close', () => resolve(out));
    sock.on('error', reject);
  });
}

test.run();
