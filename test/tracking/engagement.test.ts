import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, request } from 'undici';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { createLogger } from '../../src/observability/logger.js';
import { createTokenCodec, tokenPath, type TokenPayload } from '../../src/core/tokens.js';
import { newId } from '../../src/core/ids.js';
import { storeMessage } from '../../src/store/messages.js';
import { createMessageSource } from '../../src/store/message-source.js';
import { NO_ENGAGEMENT, readEngagement, sumEngagement, toEngagement, type Engagement } from '../../src/store/engagement.js';
import { startTrackingServer, type TrackingServer } from '../../src/tracking/server.js';
import { unsubscribe } from '../../src/tracking/unsubscribe.js';
import type { TrackingMode } from '../../src/tracking/deps.js';

const test = suite('tracking/engagement');
const NOW = Date.UTC(2026, 2, 1, 12);
/** Tokens issued an hour before NOW: a click then is not "too fast". */
const ISSUED = Math.floor(NOW / 1000) - 3600;
const RETENTION_MS = 3_600_000;
const LINKS = ['https://shop.example/a', 'https://shop.example/b', 'https://shop.example/c', 'https://shop.example/d'];
const BROWSER = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15';
const APPLE_PROXY = 'Mozilla/5.0';
const SCANNER = 'Mozilla/5.0 (compatible; Barracuda Sentinel)';
const codec = createTokenCodec({ keys: [{ id: 'k1', secret: 'tracking-test-secret-0123456789' }], signWith: 'k1' });
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
  open(idx: number, userAgent?: string): Promise<void>;
  click(idx: number, link: number, userAgent?: string): Promise<number>;
  unsubscribe(idx: number): Promise<void>;
  stats(): Promise<Engagement>;
  close(): Promise<void>;
}

async function fixture(mode: TrackingMode = 'full', links: readonly string[] = LINKS): Promise<Fixture> {
  const { keys } = redis.fresh();
  const msgId = newId(NOW);
  await storeMessage(client, keys, {
    id: msgId, account: 'acme', source: 'http', kind: 'raw', from: 'News <news@acme.example>', fromDomain: 'acme.example',
    rcpts: [0, 1, 2].map((i) => ({ address: `r${i}@example.org`, domain: 'example.org' })),
    acceptedAt: NOW, tags: [], metadata: {}, body: 'x', links: [...links],
  });
  const deps = { redis: client, keys, codec, logger: createLogger('silent'), now: () => NOW, settings: { mode }, retentionMs: RETENTION_MS, connect: { url: redis.url } };
  // A short click hold: the tests wait for the written events (the hold has tests of its own).
  const server = await startTrackingServer(deps, { host: '127.0.0.1', port: 0, publicBaseUrl: 'https://t.example.com', clickHoldMs: 200 });
  const base = `http://127.0.0.1:${server.port}`;
  const sign = (p: Omit<TokenPayload, 'account' | 'msgId' | 'issuedAt'>) => codec.sign({ account: 'acme', msgId, issuedAt: ISSUED, ...p } as TokenPayload);
  const get = async (path: string, userAgent: string) => {
    const res = await request(base + path, { dispatcher: agent, headers: { 'user-agent': userAgent } });
    await res.body.dump();
    return res.statusCode;
  };
  return {
    keys, msgId, server,
    async open(idx, userAgent = BROWSER) {
      assert.is(await get(tokenPath('o', sign({ kind: 'o', idx })), userAgent), 200);
      // Opens are written after their answer, in batches: wait so each lands in its own batch, in order.
      await server.idle();
    },
    click: (idx, link, userAgent = BROWSER) => get(tokenPath('c', sign({ kind: 'c', idx, link })), userAgent),
    async unsubscribe(idx) {
      const r = await unsubscribe(deps, sign({ kind: 'u', idx }), { via: 'mail' });
      assert.ok(r.ok);
    },
    async stats() {
      await server.idle();
      return readEngagement(client, keys, msgId);
    },
    close: () => server.close(),
  };
}

const counts = (over: Partial<Engagement>): Engagement => ({ ...NO_ENGAGEMENT, ...over });

test('opens: the first human open of a recipient counts unique once, a repeat does not, a machine open only raw', async () => {
  const f = await fixture();
  try {
    await f.open(0);
    assert.equal(await f.stats(), counts({ opens: 1, opensHuman: 1, opensUniqueHuman: 1 }));
    await f.open(0);
    assert.equal(await f.stats(), counts({ opens: 2, opensHuman: 2, opensUniqueHuman: 1 }), 'a repeat is not unique');
    // Apple's proxy fetches for recipient 1 first: a machine open, which leaves 1's first human open unused.
    await f.open(1, APPLE_PROXY);
    assert.equal(await f.stats(), counts({ opens: 3, opensHuman: 2, opensUniqueHuman: 1, machineOpens: 1 }));
    await f.open(1);
    await f.open(1, APPLE_PROXY);
    assert.equal(await f.stats(), counts({ opens: 5, opensHuman: 3, opensUniqueHuman: 2, machineOpens: 2 }));
  } finally {
    await f.close();
  }
});

test('concurrent opens: two of one recipient count unique once; a forged token counts nothing', async () => {
  const f = await fixture();
  try {
    const sign = (idx: number) => codec.sign({ kind: 'o', account: 'acme', msgId: f.msgId, idx, issuedAt: ISSUED });
    const base = `http://127.0.0.1:${f.server.port}`;
    const forged = sign(2).replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
    // Concurrent requests: the batch gathers them into one script call.
    await Promise.all([sign(0), sign(0), sign(2), forged].map(async (t) => (await request(base + tokenPath('o', t), { dispatcher: agent, headers: { 'user-agent': BROWSER } })).body.dump()));
    assert.equal(await f.stats(), counts({ opens: 3, opensHuman: 3, opensUniqueHuman: 2 }));
  } finally {
    await f.close();
  }
});

test('clicks: unique human clickers, repeats and other links of one recipient, scanners, bursts, missing links', async () => {
  const f = await fixture();
  try {
    assert.is(await f.click(0, 0), 302);
    assert.is(await f.click(0, 0), 302);
    assert.equal(await f.stats(), counts({ clicks: 2, clicksHuman: 2, clicksUniqueHuman: 1 }));
    // Another link of the same recipient: a new human click, the same clicker.
    assert.is(await f.click(0, 1), 302);
    assert.equal(await f.stats(), counts({ clicks: 3, clicksHuman: 3, clicksUniqueHuman: 1 }));
    // A scanner's click for recipient 1 does not use up 1's first human click.
    assert.is(await f.click(1, 0, SCANNER), 302);
    assert.equal(await f.stats(), counts({ clicks: 4, clicksHuman: 3, clicksUniqueHuman: 1, machineClicks: 1 }));
    assert.is(await f.click(1, 2), 302);
    assert.equal(await f.stats(), counts({ clicks: 5, clicksHuman: 4, clicksUniqueHuman: 2, machineClicks: 1 }));
    // A link the table lacks: 404, nothing counted.
    assert.is(await f.click(1, 99), 404);
    assert.equal(await f.stats(), counts({ clicks: 5, clicksHuman: 4, clicksUniqueHuman: 2, machineClicks: 1 }));
  } finally {
    await f.close();
  }
});

test('clicks: every link at once is a burst: all its clicks count as machine clicks, the two before the third too', async () => {
  const f = await fixture();
  try {
    assert.is(await f.click(2, 0), 302);
    assert.is(await f.click(2, 1), 302);
    assert.equal(await f.stats(), counts({ clicks: 2, clicksHuman: 2, clicksUniqueHuman: 1 }), 'two links: a person, so far');
    for (const link of [2, 3]) assert.is(await f.click(2, link), 302);
    assert.equal(await f.stats(), counts({ clicks: 4, machineClicks: 4 }), 'the third makes it a burst: the first two move to machine, and the recipient is no unique clicker');
  } finally {
    await f.close();
  }
});

test('clicks: both links of a two-link mail at once are a burst; one link clicked twice is not', async () => {
  const f = await fixture('full', LINKS.slice(0, 2));
  try {
    assert.is(await f.click(0, 0), 302);
    assert.is(await f.click(0, 0), 302);
    assert.equal(await f.stats(), counts({ clicks: 2, clicksHuman: 2, clicksUniqueHuman: 1 }), 'a repeat of one link is a person');
    assert.is(await f.click(1, 0), 302);
    assert.is(await f.click(1, 1), 302);
    assert.equal(await f.stats(), counts({ clicks: 4, clicksHuman: 2, clicksUniqueHuman: 1, machineClicks: 2 }), "both links within 2 s are a scanner's");
  } finally {
    await f.close();
  }
});

test('unsubscribes count recipients, not repeats', async () => {
  const f = await fixture();
  try {
    await f.unsubscribe(0);
    await f.unsubscribe(0);
    await f.unsubscribe(1);
    assert.equal(await f.stats(), counts({ unsubscribes: 2 }));
  } finally {
    await f.close();
  }
});

test('anonymous mode still counts raw, human and machine events, keeps no marks and so no unique counts', async () => {
  const f = await fixture('anonymous');
  try {
    await f.open(0);
    await f.open(0);
    await f.open(1, APPLE_PROXY);
    assert.is(await f.click(0, 1), 302);
    assert.is(await f.click(1, 1, SCANNER), 302);
    assert.is(await f.click(1, 99), 404);
    assert.equal(await f.stats(), counts({ opens: 3, opensHuman: 2, machineOpens: 1, clicks: 2, clicksHuman: 1, machineClicks: 1 }));
    assert.is(await client.exists(f.keys.trackMarks(f.msgId)), 0, 'nothing per recipient');
  } finally {
    await f.close();
  }
});

test('off mode counts nothing; the counters expire with the message record', async () => {
  const off = await fixture('off');
  const f = await fixture();
  try {
    await off.open(0);
    assert.is(await off.click(0, 1), 302);
    assert.is(await client.exists(off.keys.msgStats(off.msgId)), 0);

    await f.open(0);
    const pttl = await client.pttl(f.keys.msgStats(f.msgId));
    assert.ok(pttl > 0 && pttl <= RETENTION_MS, 'a new counters hash gets the retention at once');
    // The last recipient finishes: the record and its counters get the records TTL together.
    const source = createMessageSource(client, f.keys, 60_000, 3_600_000);
    for (let i = 0; i < 3; i++) await source.countCopy({ msgId: f.msgId, idx: i }, { counter: 'delivered' }, Date.now());
    const [meta, stats] = await Promise.all([client.pttl(f.keys.msgMeta(f.msgId)), client.pttl(f.keys.msgStats(f.msgId))]);
    assert.ok(meta > 0 && meta <= 60_000);
    assert.ok(stats > 0 && stats <= 60_000, `stats TTL ${stats}`);
    // Later events keep counting without stretching that expiry.
    await f.open(1);
    assert.ok((await client.pttl(f.keys.msgStats(f.msgId))) <= 60_000);
    assert.is((await f.stats()).opensUniqueHuman, 2);
  } finally {
    await off.close();
    await f.close();
  }
});

test("a campaign's counters (its delivery counts in the same hash) are kept as the campaign is: its first open or click gives them no TTL", async () => {
  const f = await fixture();
  try {
    // Kept until its account goes (no TTL), its delivery counted before anyone opened it.
    await client.hset(f.keys.msgMeta(f.msgId), 'kind', 'campaign');
    await client.hset(f.keys.msgStats(f.msgId), 'delivered', '3');
    await f.open(0);
    assert.is(await f.click(1, 0), 302);
    const stats = await f.stats();
    assert.equal([stats.opensHuman, stats.clicks], [1, 1]);
    assert.is(await client.pttl(f.keys.msgStats(f.msgId)), -1, 'no TTL');
    assert.is(await client.hget(f.keys.msgStats(f.msgId), 'delivered'), '3');
    // A click alone (recordTrackingEvent-4.lua) makes the counters of another campaign the same way.
    const g = await fixture();
    try {
      await client.hset(g.keys.msgMeta(g.msgId), 'kind', 'campaign');
      assert.is(await g.click(0, 1), 302);
      await g.stats();
      assert.is(await client.pttl(g.keys.msgStats(g.msgId)), -1);
    } finally {
      await g.close();
    }
  } finally {
    await f.close();
  }
});

test('toEngagement and sumEngagement: absent or malformed fields read as 0; sums add field by field', () => {
  assert.equal(toEngagement({}), NO_ENGAGEMENT);
  assert.equal(
    toEngagement({ opens: '5', opens_human: '4', opens_unique_human: '2', machine_opens: 'x', clicks: '-3', clicks_human: '1.5', unsubscribes: '1', other: '9' }),
    counts({ opens: 4, opensHuman: 4, opensUniqueHuman: 2, unsubscribes: 1 }),
    'the raw totals are human + machine; stored opens/clicks fields are not read',
  );
  assert.equal(toEngagement({ opens_human: '4', machine_opens: '3', clicks_human: '2', machine_clicks: '5' }), counts({ opens: 7, opensHuman: 4, machineOpens: 3, clicks: 7, clicksHuman: 2, machineClicks: 5 }));
  const a = counts({ opens: 3, opensUniqueHuman: 1, clicks: 2 });
  const b = counts({ opens: 4, machineOpens: 4, unsubscribes: 1 });
  assert.equal(sumEngagement([a, b]), counts({ opens: 7, opensUniqueHuman: 1, machineOpens: 4, clicks: 2, unsubscribes: 1 }));
  assert.equal(sumEngagement([]), NO_ENGAGEMENT);
});

test.run();
