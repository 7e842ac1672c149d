import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { AuthThrottle, LimitError, recipientCap, reserveSending, returnSending, takeSending, utcDay } from '../../src/accounts/limits.js';
import type { Account } from '../../src/accounts/registry.js';
import { isSluiceError } from '../../src/core/errors.js';
import { replyLosingRelay, scriptSha, startRedis, type TestRedis } from '../helpers/redis.js';
import type { RedisClient } from '../../src/redis/client.js';

const test = suite('accounts/limits');
let redis: TestRedis;
let client: RedisClient;
const NOON = Date.UTC(2026, 0, 15, 12, 0, 0, 500);
const account = (over: Partial<Account>): Account => ({ id: 'acme', domains: new Set(['acme.example']), dailyQuota: null, rateLimit: { perSecond: null, perMinute: null, perHour: null }, tracking: { mode: 'full', anonymizeIp: 'none' }, ...over });

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});
test.after(() => redis.stop());

test('daily quota counts recipients per UTC day and refuses past it without counting', async () => {
  const { keys } = redis.fresh();
  const acc = account({ dailyQuota: 5 });
  await reserveSending(client, keys, acc, 3, NOON);
  try {
    await reserveSending(client, keys, acc, 3, NOON);
    assert.unreachable();
  } catch (err) {
    assert.ok(isSluiceError(err, 'SLUICE_INGRESS_QUOTA_EXCEEDED'));
    assert.is((err as LimitError).retryAfterMs, Date.UTC(2026, 0, 16) - NOON);
  }
  assert.is(await client.get(keys.quota('acme', utcDay(NOON))), '3', 'the refused reservation was given back');
  const r = await reserveSending(client, keys, acc, 2, NOON);
  assert.is(await client.get(keys.quota('acme', '2026-01-15')), '5');
  await r.release();
  await r.release();
  assert.is(await client.get(keys.quota('acme', '2026-01-15')), '3', 'release gives back once');
  const ttl = await client.pttl(keys.quota('acme', '2026-01-15'));
  assert.ok(ttl > 0 && ttl <= 2 * 86_400_000);
  // the next UTC day starts from zero
  await reserveSending(client, keys, acc, 5, Date.UTC(2026, 0, 16, 0, 0, 1));
});

test('a count whose reply a dropped connection lost, sent again by the client, counts once: a submission and a chunk of campaign copies', async () => {
  const relay = await replyLosingRelay(redis);
  try {
    const lossy = relay.redis.client();
    const { keys } = redis.fresh();
    const acc = account({ dailyQuota: 10 });
    const sha = scriptSha('takeSending');
    relay.lose((req) => req.includes(sha));
    await reserveSending(lossy, keys, acc, 5, NOON);
    assert.is(relay.lost, 1, 'a reply was lost');
    assert.is(await client.get(keys.quota('acme', utcDay(NOON))), '5', 'counted once');
    // The second message of 5 fits (the first run's count alone would have refused it).
    await reserveSending(lossy, keys, acc, 5, NOON);
    assert.is(await client.get(keys.quota('acme', utcDay(NOON))), '10');
    const { keys: k2 } = redis.fresh();
    relay.lose((req) => req.includes(sha));
    const t = await takeSending(lossy, k2, acc, 4, NOON);
    assert.is(relay.lost, 2);
    assert.equal([t.granted, await client.get(k2.quota('acme', utcDay(NOON)))], [4, '4']);
  } finally {
    await relay.close();
  }
});

test("a reservation given back after its rate window ended (a persist that failed seconds later) leaves no counter behind", async () => {
  const { keys } = redis.fresh();
  const r = await reserveSending(client, keys, account({ rateLimit: { perSecond: 5, perMinute: null, perHour: null } }), 2, NOON);
  const [counter] = await client.keys(`${keys.prefix}*rate*`);
  assert.ok(counter, 'the second window was counted');
  // The window's counter expires (its TTL is two windows): as it would have 2 s later.
  await client.del(counter as string);
  await r.release();
  assert.equal(await client.keys(`${keys.prefix}*rate*`), [], 'not recreated at -2 with no TTL');
});

test('a reservation that does not fit counts nothing, even for a moment: one that fits, sent at the same time, is taken', async () => {
  const { keys } = redis.fresh();
  const acc = account({ dailyQuota: 3, rateLimit: { perSecond: null, perMinute: 10, perHour: null } });
  await reserveSending(client, keys, acc, 2, NOON);
  // Both on the wire before either answers (a batch's messages, or two clients at once).
  const [big, small] = await Promise.allSettled([reserveSending(client, keys, acc, 2, NOON), reserveSending(client, keys, acc, 1, NOON)]);
  assert.is(big.status, 'rejected');
  assert.ok(big.status === 'rejected' && isSluiceError(big.reason, 'SLUICE_INGRESS_QUOTA_EXCEEDED'));
  assert.is(small.status, 'fulfilled', 'the one that fits is not refused for room the other took and gave back');
  assert.is(await client.get(keys.quota('acme', utcDay(NOON))), '3');
  const minute = await client.keys(`${keys.accountRate('acme')}:m:*`);
  assert.is(await client.get(minute[0] as string), '3', 'the rate window counted the same');
});

test('campaign copies (takeSending) take what every counter has room for, on the counters submissions use; returnSending gives back, never below 0 nor into a window that is over', async () => {
  const { keys } = redis.fresh();
  const acc = account({ dailyQuota: 10, rateLimit: { perSecond: null, perMinute: 4, perHour: null } });
  const day = keys.quota('acme', utcDay(NOON));
  const minute = `${keys.accountRate('acme')}:m:${Math.floor(NOON / 60_000)}`;
  await reserveSending(client, keys, acc, 1, NOON);
  // Room: 9 in the day, 3 in the minute. The minute stops the rest until it ends.
  const t = await takeSending(client, keys, acc, 5, NOON);
  assert.is(t.granted, 3);
  assert.is(t.retryAt, Math.floor(NOON / 60_000) * 60_000 + 60_000);
  assert.match(String(t.what), /per minute/);
  assert.equal([await client.get(day), await client.get(minute)], ['4', '4']);
  assert.equal(await client.exists(`${keys.accountRate('acme')}:s:${Math.floor(NOON / 1000)}`, `${keys.accountRate('acme')}:h:${Math.floor(NOON / 3_600_000)}`), 0, 'a window with no limit is not counted');
  // Full: nothing granted, nothing counted, a submission refused.
  const none = await takeSending(client, keys, acc, 2, NOON + 10);
  assert.equal([none.granted, none.counters], [0, null]);
  assert.equal([await client.get(day), await client.get(minute)], ['4', '4']);
  try {
    await reserveSending(client, keys, acc, 1, NOON + 20);
    assert.unreachable();
  } catch (err) {
    assert.ok(isSluiceError(err, 'SLUICE_INGRESS_RATE_LIMITED'), String(err));
  }
  // Two copies went back unsent: both counters get them back.
  await returnSending(client, t.counters!, 2);
  assert.equal([await client.get(day), await client.get(minute)], ['2', '2']);
  // The minute's window ended (its key expired): only the day's counter is decremented, and no key without a TTL is made.
  await client.del(minute);
  await returnSending(client, t.counters!, 1);
  assert.equal([await client.get(day), await client.get(minute)], ['1', null]);
  await returnSending(client, t.counters!, 5);
  assert.is(await client.get(day), '0', 'never below 0');
  assert.ok((await client.pttl(day)) > 0);
  // The next minute has room again.
  assert.is((await takeSending(client, keys, acc, 5, NOON + 60_000)).granted, 4);
  // No limits: everything granted, nothing counted.
  const free = await takeSending(client, keys, account({}), 7, NOON);
  assert.equal([free.granted, free.retryAt, free.counters], [7, null, null]);
});

test('rate windows: per-second limit refuses the excess and says when to retry', async () => {
  const { keys } = redis.fresh();
  const acc = account({ rateLimit: { perSecond: 4, perMinute: 100, perHour: null } });
  await reserveSending(client, keys, acc, 4, NOON);
  try {
    await reserveSending(client, keys, acc, 1, NOON);
    assert.unreachable();
  } catch (err) {
    assert.ok(isSluiceError(err, 'SLUICE_INGRESS_RATE_LIMITED'));
    assert.is((err as LimitError).retryAfterMs, 500);
  }
  // next second: allowed again, the minute window still counts everything accepted
  await reserveSending(client, keys, acc, 4, NOON + 1000);
  const minuteKeys = await client.keys(`${keys.accountRate('acme')}:m:*`);
  assert.is(minuteKeys.length, 1);
  assert.is(await client.get(minuteKeys[0] as string), '8');
});

test('no limits configured: nothing is written', async () => {
  const { keys, prefix } = redis.fresh();
  await reserveSending(client, keys, account({}), 1000, NOON);
  assert.equal(await client.keys(`${prefix}*`), []);
});

test('auth throttle: delays after N failures, refuses after more, across instances (shared Redis)', async () => {
  const { keys } = redis.fresh();
  const a = new AuthThrottle(client, keys, { delayAfter: 2, refuseAfter: 4, baseDelayMs: 10 });
  const b = new AuthThrottle(redis.client(), keys, { delayAfter: 2, refuseAfter: 4, baseDelayMs: 10 });
  assert.is((await a.check('10.0.0.1', 'bob')).delayMs, 0);
  assert.is((await a.fail('10.0.0.1', 'bob')).delayMs, 0);
  assert.is((await b.fail('10.0.0.1', 'bob')).delayMs, 10);
  assert.is((await a.fail('10.0.0.1', 'bob')).delayMs, 20);
  await b.fail('10.0.0.1', 'bob');
  for (const t of [a, b]) {
    try {
      await t.check('10.0.0.1');
      assert.unreachable();
    } catch (err) {
      assert.ok(isSluiceError(err, 'SLUICE_AUTH_THROTTLED'));
    }
  }
  // the user is throttled from another IP too; a different user from another IP is not
  try {
    await a.check('10.0.0.2', 'bob');
    assert.unreachable();
  } catch (err) {
    assert.ok(isSluiceError(err, 'SLUICE_AUTH_THROTTLED'));
  }
  assert.is((await a.check('10.0.0.2', 'alice')).delayMs, 0);
  await a.succeed('bob');
  assert.is((await a.check('10.0.0.2', 'bob')).delayMs, 0, 'success clears the user count');
});

test('auth throttle: guesses sent at once by several processes (many IPs, one user) never get more than refuseAfter passwords checked', async () => {
  // Four "processes", each its own connection whose replies come 1 ms late (Redis on another host),
  // 60 guessers looping begin → check → fail → end until refused. Reading the failures before taking
  // a slot let an attempt that ended between the two reads be seen in neither: up to ~40 checked.
  for (let round = 0; round < 10; round++) {
    const { keys } = redis.fresh();
    const throttles = Array.from({ length: 4 }, () => {
      const c = redis.client();
      const get = c.get.bind(c) as (...a: unknown[]) => Promise<unknown>;
      (c as unknown as { get: (...a: unknown[]) => Promise<unknown> }).get = async (...a: unknown[]) => {
        const r = await get(...a);
        await new Promise((z) => setTimeout(z, 1));
        return r;
      };
      return new AuthThrottle(c, keys, { delayAfter: 1000, refuseAfter: 20 });
    });
    let checked = 0;
    await Promise.all(Array.from({ length: 60 }, async (_, i) => {
      const t = throttles[i % throttles.length] as AuthThrottle;
      for (;;) {
        const attempt = await t.begin(`10.9.${round}.${i}`, 'victim').catch(() => null);
        if (!attempt) return;
        checked++;
        await new Promise((r) => setTimeout(r, Math.random() * 3)); // the password check
        try {
          await t.fail(`10.9.${round}.${i}`, 'victim');
        } finally {
          await t.end(attempt);
        }
      }
    }));
    assert.ok(checked <= 20, `round ${round}: ${checked} passwords checked, the limit is 20`);
  }
});

/** Runs `fn` while Redis refuses writes: at maxmemory (OOM), or with too few replicas (NOREPLICAS: every write, DEL too). */
async function refusingWrites<T>(how: 'oom' | 'noreplicas', fn: () => Promise<T>): Promise<T> {
  const [name, on, off] = how === 'oom' ? ['maxmemory', '1', '0'] : ['min-replicas-to-write', '1', '0'];
  await client.config('SET', name, on);
  try {
    return await fn();
  } finally {
    await client.config('SET', name, off);
  }
}

test('Redis refusing writes: a reservation is SLUICE_REDIS_UNAVAILABLE (retry later), not an internal error', async () => {
  const { keys } = redis.fresh();
  const acc = account({ dailyQuota: 5, rateLimit: { perSecond: 4, perMinute: null, perHour: null } });
  for (const how of ['oom', 'noreplicas'] as const) {
    const err = await refusingWrites(how, () => reserveSending(client, keys, acc, 1, NOON).then(() => null, (e: unknown) => e));
    assert.ok(isSluiceError(err, 'SLUICE_REDIS_UNAVAILABLE'), `${how}: ${String(err)}`);
  }
  assert.is(await client.get(keys.quota('acme', utcDay(NOON))), null, 'nothing counted');
});

test('Redis refusing writes: a failed login is SLUICE_REDIS_UNAVAILABLE; a good one still succeeds, its count left to expire', async () => {
  const { keys } = redis.fresh();
  const t = new AuthThrottle(client, keys, { delayAfter: 2, refuseAfter: 4, baseDelayMs: 10 });
  await t.fail('10.0.0.1', 'bob');
  for (const how of ['oom', 'noreplicas'] as const) {
    const err = await refusingWrites(how, () => t.fail('10.0.0.1', 'bob').then(() => null, (e: unknown) => e));
    assert.ok(isSluiceError(err, 'SLUICE_REDIS_UNAVAILABLE'), `${how}: ${String(err)}`);
  }
  // DEL is refused too without replicas: clearing the count is not worth refusing the right password.
  await refusingWrites('noreplicas', () => t.succeed('bob'));
  assert.is((await t.check('10.0.0.1', 'bob')).userFailures, 1);
});

test('a message with more recipients than a limit can ever count is refused for good (too many recipients), not told to retry', async () => {
  const { keys, prefix } = redis.fresh();
  const cases: [Partial<Account>, number, RegExp][] = [
    [{ rateLimit: { perSecond: 4, perMinute: 100, perHour: null } }, 4, /at most 4 recipients per message \(its rate limit of 4 per second\)/],
    [{ dailyQuota: 5, rateLimit: { perSecond: null, perMinute: 10, perHour: null } }, 5, /at most 5 recipients per message \(its daily quota of 5\)/],
  ];
  for (const [over, cap, text] of cases) {
    const acc = account(over);
    assert.is(recipientCap(acc), cap);
    const err = await reserveSending(client, keys, acc, 6, NOON).then(() => null, (e: unknown) => e);
    assert.ok(isSluiceError(err, 'SLUICE_INGRESS_TOO_MANY_RECIPIENTS'), String(err));
    assert.match((err as Error).message, text);
  }
  assert.equal(await client.keys(`${prefix}*`), [], 'nothing counted');
  assert.is(recipientCap(account({})), null);
  // As many as the smallest limit still fits a fresh window.
  await reserveSending(client, keys, account({ rateLimit: { perSecond: 4, perMinute: 100, perHour: null } }), 4, NOON);
});

test('auth throttle with lockUsers off (API keys): a user\'s failures from many IPs never refuse it, its IP is still refused', async () => {
  const { keys } = redis.fresh();
  const t = new AuthThrottle(client, keys, { delayAfter: 2, refuseAfter: 4, baseDelayMs: 10, lockUsers: false });
  for (let i = 1; i <= 4; i++) await t.fail(`10.0.1.${i}`, 'api:acme');
  await t.fail('10.0.1.1', 'api:acme');
  await t.fail('10.0.1.1', 'api:acme');
  await t.fail('10.0.1.1', 'api:acme');
  const v = await t.check('10.0.2.1', 'api:acme');
  assert.is(v.userFailures, 7, 'still counted');
  const err = await t.check('10.0.1.1', 'api:acme').then(() => null, (e: unknown) => e);
  assert.ok(isSluiceError(err, 'SLUICE_AUTH_THROTTLED'), 'the IP with 4 failures is refused');
});

test.run();
