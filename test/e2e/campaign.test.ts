import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { createLogger } from '../../src/observability/logger.js';
import { startSluice, type RunningSluice } from '../../src/app/start.js';
import type { RedisClient } from '../../src/redis/client.js';
import { createKeys } from '../../src/redis/keys.js';
import { createTokenCodec, type TokenCodec } from '../../src/core/tokens.js';
import { createList } from '../../src/store/contacts.js';
import { importContacts } from '../../src/store/contact-import.js';
import { addSuppression, GLOBAL_LIST } from '../../src/store/suppression.js';
import { recordThrottleSignal } from '../../src/queue/backoff.js';
import { freePort, startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, startScriptedPeer, type CapturePeer, type CapturedMessage, type ScriptedPeer } from '../helpers/smtp-peer.js';
import { makeAccount, type AccountKeys } from '../helpers/sluice.js';
import { txtTable, verifyBoth } from '../helpers/dkim-verify.js';

/**
 * Campaigns end to end: a list imported into Redis, a campaign created over the HTTP API, the
 * enqueuer queueing the list behind per-destination pointers, the dispatcher rendering each copy in
 * the worker pool right before its transaction, and a capture peer on loopback receiving them.
 * Lifecycle (pause, resume, cancel, restart) and an unsubscribe arriving mid-campaign.
 */
const test = suite('e2e/campaign');

const BOUNCE_DOMAIN = 'bounce.sluice.test';
const DOMAINS = Array.from({ length: 10 }, (_, i) => `d${i}.test`);
const BIG = 5000;

let redis: TestRedis;
let client: RedisClient;
let sink: CapturePeer;
/** grey.test's MX: refuses each address's first RCPT with a 451 (greylisting), accepts it after. */
let grey: CapturePeer;
const greeted = new Set<string>();
/** cut.test's MX: the session is lost at MAIL FROM (the connection closed without an answer), every time. */
let cut: ScriptedPeer;
let app: RunningSluice;
let config: Config;
let dir: string;
let prefix: string;
let codec: TokenCodec;
let acme: AccountKeys;
/** An account with a daily quota of 4 recipients: its campaign copies count against it as they are sent. */
let capped: AccountKeys;
/** Where late.test is routed: nothing listens there until a test starts a peer on it. */
let latePort: number;
let txt: Record<string, string>;

function configFor(): Config {
  const transport = { ...Object.fromEntries([...DOMAINS, 'slow.test', 'quota.test'].map((d) => [d, `${sink.host}:${sink.port}`])), 'grey.test': `${grey.host}:${grey.port}`, 'cut.test': `${cut.host}:${cut.port}`, 'late.test': `127.0.0.1:${latePort}` };
  return loadConfig({
    env: {},
    overrides: {
      roles: ['ingress', 'delivery', 'tracking', 'housekeeping'],
      instance: { hostname: 'sluice.test', dataDir: dir },
      log: { level: 'silent' },
      redis: { url: redis.url, prefix, scheduleShards: 4 },
      admin: { host: '127.0.0.1', port: 0 },
      ingress: { smtp: { enabled: false }, http: { host: '127.0.0.1', port: 0 } },
      delivery: { bounceDomain: BOUNCE_DOMAIN, pollInterval: '50ms', pool: { threads: 2 }, dns: { servers: ['127.0.0.1:9'], timeout: '1s' }, transport },
      shaping: {
        rules: [
          { name: 'slow', match: { domains: ['slow.test'], mx: [] }, rate: { perSecond: 5, perMinute: null, perHour: null }, connections: 1 },
          { name: 'grey', match: { domains: ['grey.test'], mx: [] }, retry: ['1s'], maxAge: '10m' },
          { name: 'late', match: { domains: ['late.test'], mx: [] }, retry: ['1s'], maxAge: '10m' },
        ],
      },
      tracking: { host: '127.0.0.1', port: 0, publicBaseUrl: 'http://127.0.0.1', keys: [{ id: 'k1', secretFile: join(dir, 'k1.key'), notAfter: null }], signWith: 'k1' },
      accounts: [acme.account, { ...capped.account, dailyQuota: 4 }],
    },
  });
}

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
  prefix = redis.fresh().prefix;
  // An address that does not exist: refused at RCPT, a hard bounce (the other tests send no 'gone-' address).
  sink = await startCapturePeer({ onRcpt: (to) => (to.startsWith('gone-') ? { code: 550, message: `5.1.1 <${to}>: Recipient address rejected: User unknown` } : null) });
  cut = await startScriptedPeer({ ehlo: ['PIPELINING'], on: { MAIL: 'drop' } });
  grey = await startCapturePeer({ onRcpt: (to) => (greeted.has(to) ? null : (greeted.add(to), { code: 451, message: '4.7.1 Greylisted, try again later' })) });
  latePort = await freePort();
  dir = mkdtempSync(join(tmpdir(), 'sluice-campaign-'));
  const secret = randomBytes(32);
  writeFileSync(join(dir, 'k1.key'), secret, { mode: 0o600 });
  codec = createTokenCodec({ keys: [{ id: 'k1', secret }], signWith: 'k1' });
  acme = await makeAccount(dir, 'acme', 'acme.example');
  capped = await makeAccount(dir, 'capped', 'capped.example', ['ed25519']);
  txt = txtTable(acme.dkimKeys);
  config = configFor();
  app = await startSluice(config, { logger: createLogger(process.env['TEST_LOG'] ?? 'silent') });
});

test.after(async () => {
  await app?.stop(2000);
  await sink?.close();
  await grey?.close();
  await cut?.close();
  await redis?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function api(path: string, body?: unknown, method?: string, as: AccountKeys = acme): Promise<{ status: number; body: any; retryAfter?: string }> {
  const res = await request(`http://127.0.0.1:${app.ports.http}${path}`, {
    method: (method ?? (body !== undefined ? 'POST' : 'GET')) as 'GET',
    headers: { authorization: `Bearer ${as.apiKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.body.text();
  const retryAfter = res.headers['retry-after'];
  return { status: res.statusCode, body: text ? JSON.parse(text) : null, ...(typeof retryAfter === 'string' ? { retryAfter } : {}) };
}

async function* ndjson(rows: readonly object[]): AsyncIterable<string> {
  for (const r of rows) yield `${JSON.stringify(r)}\n`;
}

async function listOf(name: string, rows: readonly { email: string; fields?: Record<string, string> }[], account = 'acme'): Promise<string> {
  const keys = createKeys(prefix);
  const list = await createList(client, keys, account, name);
  const r = await importContacts(client, keys, account, list.id, ndjson(rows), { format: 'ndjson', limits: { maxBytes: 50_000_000, maxRows: 1_000_000 } });
  assert.is(r.imported, rows.length, `import of ${name}`);
  return list.id;
}

/**
 * A campaign sent now at 3 an hour to a new list `name` of `count` contacts <local><i>@<domain>;
 * its id, and how many messages the sink held before it.
 */
async function throttledCampaign(name: string, local: string, domain: string, count: number, subject: string): Promise<{ id: string; before: number }> {
  const rows = Array.from({ length: count }, (_, i) => ({ email: `${local}${i}@${domain}`, fields: { first_name: `${local.toUpperCase()}${i}` } }));
  const listId = await listOf(name, rows);
  const before = sink.messages.length;
  const created = await api('/v1/campaigns', { from: 'news@acme.example', subject, text: 'Hi {{first_name}}', listId, sendAt: 'now', throttle: { perHour: 3 } });
  assert.is(created.status, 201, JSON.stringify(created.body));
  return { id: created.body.id as string, before };
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/**
 * Resolves once nothing is leased at `domain`: every copy claimed there before (a pause, a cancel)
 * has had its outcome, and so has reached the peer if it was sent (the peer keeps it before its 250).
 */
const noneInFlight = (domain: string) =>
  waitFor(`the copies claimed at ${domain} to finish`, async () => ((await client.zcard(createKeys(prefix).leases(domain))) === 0 ? true : undefined), 15_000);
const toOf = (m: CapturedMessage) => m.envelope.to[0] as string;
const header = (raw: string, name: string): string | undefined => {
  const m = new RegExp(`^${name}:([^\\r\\n]*(?:\\r\\n[ \\t][^\\r\\n]*)*)`, 'im').exec(raw);
  return m ? (m[1] as string).replace(/\r\n[ \t]/g, ' ').trim() : undefined;
};

const HTML = `<html><body><p>Hello {{first_name}}{{#if city}} from {{city}}{{/if}},</p>
<p>Read <a href="https://acme.example/news?id=7">the news</a> or <a href="https://acme.example/shop">shop</a>.</p></body></html>`;

test(`a ${BIG}-recipient campaign: every copy its own merge values and tokens, signed, with RFC 8058 headers`, async () => {
  const rows = Array.from({ length: BIG }, (_, i) => ({ email: `user${i}@${DOMAINS[i % DOMAINS.length]}`, fields: { first_name: `F${i}`, city: i % 2 === 0 ? `<City ${i}>` : '' } }));
  const listId = await listOf('big', rows);
  const created = await api('/v1/campaigns', { name: 'big', from: { name: 'Acme', address: 'news@acme.example' }, subject: 'News for {{first_name}}', html: HTML, listId, sendAt: 'now', tags: ['t1'] });
  assert.is(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;

  const stats = await waitFor('the campaign to complete', async () => {
    const s = await api(`/v1/campaigns/${id}/stats`);
    return s.body.state === 'completed' ? s.body : undefined;
    // A bound on liveness, not a speed: ~25 s here on a quiet machine, and CI's may be several times slower.
  }, 200_000);
  assert.is(stats.delivered, BIG);
  assert.is(stats.recipients, BIG);
  assert.is(stats.pending, 0);

  const mine = sink.messages.filter((m) => m.raw.toString('latin1').includes(`Feedback-ID: ${id}:acme`) || header(m.raw.toString('latin1'), 'Feedback-ID')?.startsWith(id));
  assert.is(mine.length, BIG, 'one copy per recipient at the peer');
  assert.is(new Set(mine.map(toOf)).size, BIG, 'no recipient got two copies');

  const tokens = new Set<string>();
  for (const m of mine) {
    const raw = m.raw.toString('latin1');
    const i = Number(/^user(\d+)@/.exec(toOf(m))?.[1]);
    assert.ok(header(raw, 'To')?.includes(toOf(m)), 'To is the recipient');
    assert.ok(raw.includes(`Hello F${i}`), `merge value of ${i}`);
    if (i % 2 === 0) assert.ok(raw.includes(`from &lt;City ${i}&gt;`), 'fields are HTML-escaped');
    assert.ok(/^List-Unsubscribe-Post: List-Unsubscribe=One-Click\r?$/m.test(raw), 'List-Unsubscribe-Post');
    const lu = header(raw, 'List-Unsubscribe') as string;
    assert.match(lu, /<http:\/\/127\.0\.0\.1\/u\/[A-Za-z0-9_-]+>/);
    assert.match(lu, new RegExp(`<mailto:u-${id}-${i + 1}-[0-9a-z]{8}@${BOUNCE_DOMAIN.replace(/\./g, '\\.')}>`), 'the short mailto form, naming the copy');
    const found = [...raw.replace(/=\r\n/g, '').matchAll(/http:\/\/127\.0\.0\.1\/([ocu])\/([A-Za-z0-9_-]+)/g)];
    assert.ok(found.length >= 4, 'pixel, two clicks and an unsubscribe link');
    for (const [, kind, tok] of found) {
      const p = codec.verify(tok as string, Date.now());
      assert.ok(p, `token verifies (${kind})`);
      assert.is(p?.msgId, id);
      assert.is(p?.idx, i + 1, 'the token names the contact (numbered from 1)');
      tokens.add(`${kind}/${tok}`);
    }
  }
  assert.ok(tokens.size >= BIG * 3, 'tokens are per recipient');

  // Both signatures of a sample verify with two independent verifiers, RFC 8058 headers signed.
  for (const m of mine.slice(0, 10)) {
    const v = await verifyBoth(m.raw, txt);
    for (const verdicts of [v.mailauth, v.dkimpy]) {
      assert.equal(verdicts.map((d) => d.algo).sort(), ['ed25519-sha256', 'rsa-sha256']);
      for (const d of verdicts) assert.ok(d.pass, JSON.stringify(d));
    }
    const signatures = [...m.raw.toString('latin1').matchAll(/^DKIM-Signature:((?:[^\r\n]|\r\n[ \t])*)/gim)].map((x) => (x[1] as string).replace(/\r\n[ \t]/g, '').replace(/\s+/g, ''));
    assert.is(signatures.length, 2);
    for (const sig of signatures) {
      const h = (/;h=([^;]+)/.exec(sig)?.[1] ?? '').toLowerCase().split(':');
      assert.ok(h.includes('list-unsubscribe') && h.includes('list-unsubscribe-post') && h.includes('feedback-id'), `h= ${h.join(':')}`);
    }
  }
});

test('an unsubscribe recorded mid-campaign stops that recipient; pause stops claims, survives a restart, resume finishes; cancel drops the rest', async () => {
  const N = 60;
  const rows = Array.from({ length: N }, (_, i) => ({ email: `p${i}@slow.test`, fields: { first_name: `P${i}` } }));
  const listId = await listOf('slow', rows);
  const before = sink.messages.length;
  // Its own copies only: a test before that failed may leave copies arriving for other domains.
  const atPeer = () => sink.messages.slice(before).filter((m) => toOf(m).endsWith('@slow.test'));
  const created = await api('/v1/campaigns', { from: 'news@acme.example', subject: 'Slow', text: 'Hi {{first_name}}', listId, sendAt: 'now', tracking: { opens: false, clicks: false } });
  assert.is(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;

  // slow.test takes 5 messages a second: the campaign is sending for a good while.
  await waitFor('some deliveries', async () => (atPeer().length >= 5 ? true : undefined));
  // The last contact unsubscribes by the one-click POST of its own List-Unsubscribe URL (minted for it).
  const last = N;
  const token = codec.sign({ kind: 'u', account: 'acme', msgId: id, idx: last, issuedAt: Math.floor(Date.now() / 1000) });
  const unsub = await request(`http://127.0.0.1:${app.ports.tracking}/u/${token}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' });
  assert.is(unsub.statusCode, 200);
  await unsub.body.text();
  // The contact itself is unsubscribed in the list (a later campaign to it leaves the address out).
  const exported = await request(`http://127.0.0.1:${app.ports.http}/v1/lists/${listId}/contacts?format=ndjson`, { headers: { authorization: `Bearer ${acme.apiKey}` } });
  const statuses = new Map((await exported.body.text()).trim().split('\n').map((l) => JSON.parse(l) as { email: string; status: string }).map((c) => [c.email, c.status]));
  assert.is(statuses.get(`p${last - 1}@slow.test`), 'unsubscribed');
  assert.is([...statuses.values()].filter((v) => v !== 'subscribed').length, 1, 'only that contact');

  const paused = await api(`/v1/campaigns/${id}/pause`, {});
  assert.is(paused.status, 200, JSON.stringify(paused.body));
  assert.is(paused.body.state, 'paused');
  assert.is((await api(`/v1/campaigns/${id}/pause`, {})).status, 409, 'pausing twice is refused');
  await noneInFlight('slow.test'); // copies claimed before the pause
  const afterPause = atPeer().length;
  await sleep(1500);
  assert.is(atPeer().length, afterPause, 'nothing more is sent while paused');
  assert.ok(afterPause < N - 1, `the pause came before the end (${afterPause} sent)`);

  // A restart keeps the campaign paused.
  await app.stop(2000);
  app = await startSluice(config, { logger: createLogger(process.env['TEST_LOG'] ?? 'silent') });
  await sleep(1500);
  assert.is(atPeer().length, afterPause, 'still paused after a restart');
  assert.is((await api(`/v1/campaigns/${id}`)).body.state, 'paused');

  const resumed = await api(`/v1/campaigns/${id}/resume`, {});
  assert.is(resumed.body.state, 'sending');
  const done = await waitFor('the slow campaign to complete', async () => {
    const s = await api(`/v1/campaigns/${id}/stats`);
    return s.body.state === 'completed' ? s.body : undefined;
  }, 60_000);
  const got = atPeer().map(toOf);
  assert.is(new Set(got).size, got.length, 'nobody got two copies');
  assert.not.ok(got.includes(`p${last - 1}@slow.test`), 'the unsubscribed contact got nothing');
  assert.is(got.length, N - 1);
  assert.is(done.delivered, N - 1);
  assert.is(done.suppressed, 1);
  assert.is(done.unsubscribes, 1);

  // cancel: a second slow campaign, cancelled while it sends
  const second = await api('/v1/campaigns', { from: 'news@acme.example', subject: 'Again', text: 'Hi {{first_name}}', listId, sendAt: 'now' });
  const id2 = second.body.id as string;
  const base2 = sink.messages.length;
  await waitFor('the second campaign to send', async () => (sink.messages.length - base2 >= 3 ? true : undefined));
  const cancelled = await api(`/v1/campaigns/${id2}/cancel`, {});
  assert.is(cancelled.body.state, 'cancelled');
  await noneInFlight('slow.test');
  const sent2 = sink.messages.length - base2;
  await sleep(1000);
  assert.is(sink.messages.length - base2, sent2, 'nothing is sent after a cancel');
  // Copies claimed before the cancel are counted after their outcome (recordCampaignOutcome).
  const s2 = await waitFor('every copy of the cancelled campaign counted', async () => {
    const st = (await api(`/v1/campaigns/${id2}/stats`)).body;
    return st.delivered + st.cancelled + st.suppressed >= st.queued ? st : undefined;
  }, 15_000);
  assert.ok(s2.cancelled > 0, 'what waited is counted as cancelled');
  assert.is(s2.delivered + s2.cancelled + s2.suppressed, s2.queued, JSON.stringify(s2));
  assert.is((await api(`/v1/campaigns/${id2}/resume`, {})).status, 409, 'a cancelled campaign cannot resume');
});

test('bad input: a template that does not compile, an unknown list, a From domain the account does not own', async () => {
  const listId = await listOf('tiny', [{ email: 'x@d0.test' }]);
  const bad = await api('/v1/campaigns', { from: 'a@acme.example', subject: 'x', html: '<p>\n{{#if x}}never closed</p>', listId });
  assert.is(bad.status, 400);
  assert.is(bad.body.code, 'SLUICE_TEMPLATE_INVALID');
  assert.ok(bad.body.errors.some((e: any) => e.path === 'html' && typeof e.line === 'number' && typeof e.column === 'number'), JSON.stringify(bad.body));
  const unknown = await api('/v1/campaigns', { from: 'a@acme.example', subject: 'x', text: 'y', listId: '0000000000000000' });
  assert.is(unknown.status, 404);
  const foreign = await api('/v1/campaigns', { from: 'a@other.example', subject: 'x', text: 'y', listId });
  assert.is(foreign.status, 403);
  assert.is((await api('/v1/campaigns/0000000000000000')).status, 404);
  assert.is((await api('/v1/campaigns')).body.campaigns.some((c: any) => c.subject === 'x'), false, 'nothing was written');
});

test("a campaign's own throttle: a full bucket's worth goes at once, the rest waits behind the pointer", async () => {
  const { id, before } = await throttledCampaign('throttled', 't', 'd3.test', 10, 'Throttled');
  await waitFor('the first three copies', async () => (sink.messages.length - before >= 3 ? true : undefined));
  await sleep(1500);
  assert.is(sink.messages.length - before, 3, 'no more than the bucket held');
  // The peer has a copy before its 250; the campaign counts it after (recordCampaignOutcome).
  const s = await waitFor('the three deliveries counted', async () => {
    const st = (await api(`/v1/campaigns/${id}/stats`)).body;
    return st.delivered >= 3 ? st : undefined;
  }, 15_000);
  assert.equal([s.state, s.delivered, s.pending], ['sending', 3, 7]);
  const keys = createKeys(prefix);
  assert.is(await client.llen(keys.campaignQueue('d3.test', id)), 7, 'the rest wait as contact numbers');
  const due = Number(await client.zscore(keys.ready('d3.test'), `@${id}`));
  assert.ok(due > Date.now() + 60_000, 'the pointer waits for the bucket to refill (a token every 20 minutes)');
  const waiting = (await api(`/v1/campaigns/${id}/stats`)).body.waiting;
  assert.equal([waiting?.by, waiting?.limit], ['throttle.perHour', 3], JSON.stringify(waiting));
  assert.ok(Date.parse(waiting.until) > Date.now() + 60_000, `until the bucket refills: ${waiting.until}`);
  assert.is((await api(`/v1/campaigns/${id}/cancel`, {})).body.state, 'cancelled');
});

test("copies that are not sent (suppressed at claim time) take none of the campaign's throttle", async () => {
  const keys = createKeys(prefix);
  // d9.test is suspended for a few seconds (as after a run of 421s): the campaign is queued in full
  // before any copy is claimed, and two addresses are suppressed in between, so the claim drops them.
  const suspended = await recordThrottleSignal(client, keys, 'default:d9.test', { threshold: 1, windowMs: 60_000, suspendMs: 4_000, maxSuspendMs: 4_000, maxLevel: 1, recoverMs: 60_000, ratePerConnection: 100 }, Date.now(), '421 4.7.0 slow down');
  assert.ok(suspended.suspendedUntil !== null);
  const { id, before } = await throttledCampaign('throttled-suppressed', 's', 'd9.test', 6, 'Throttled, two suppressed');
  await waitFor('the whole list queued', async () => ((await api(`/v1/campaigns/${id}/stats`)).body.queued === 6 ? true : undefined));
  assert.ok(Date.now() < (suspended.suspendedUntil as number), 'queued while the destination is suspended');
  for (const gone of ['s0@d9.test', 's1@d9.test']) await addSuppression(client, keys, GLOBAL_LIST, gone, { reason: 'hardbounce', at: Date.now(), evidence: {} });
  await waitFor('three sent and two suppressed', async () => {
    const st = (await api(`/v1/campaigns/${id}/stats`)).body;
    return st.delivered + st.suppressed >= 5 ? true : undefined;
  });
  await sleep(1000);
  const st = (await api(`/v1/campaigns/${id}/stats`)).body;
  assert.equal([st.delivered, st.suppressed, st.pending], [3, 2, 1], JSON.stringify(st));
  const sent = sink.messages.slice(before).map((m) => m.envelope.to[0]).sort();
  assert.equal(sent, ['s2@d9.test', 's3@d9.test', 's4@d9.test'], "the campaign's three tokens went to three copies that were sent");
  assert.is((await api(`/v1/campaigns/${id}/cancel`, {})).body.state, 'cancelled');
});

test("copies given back unsent (the session lost before their transaction) get their campaign throttle tokens back", async () => {
  const keys = createKeys(prefix);
  const { id } = await throttledCampaign('throttled-cut', 'c', 'cut.test', 2, 'Throttled, session lost');
  // Both copies are claimed together and take a token each; the session is lost at the first MAIL
  // FROM, so both go back unsent, and the destination (one host) is deferred.
  const st = await waitFor('both copies deferred', async () => {
    const s = (await api(`/v1/campaigns/${id}/stats`)).body;
    return s.deferred >= 2 ? s : undefined;
  });
  assert.is(st.delivered, 0, JSON.stringify(st));
  assert.ok(cut.connections() >= 1, 'the session was opened');
  // Nothing reached a server: the bucket (3 an hour) is full again, not down to one token.
  const left = Number(await client.hget(keys.bucket(`campaign:${id}`), 'h'));
  assert.ok(left > 2.9, `${left} of the campaign's 3 tokens left`);
  assert.is((await api(`/v1/campaigns/${id}/cancel`, {})).body.state, 'cancelled');
});

/** The quota tests read the day's counter: started within 90 s of 00:00 UTC, they wait for the new day first. */
async function clearOfMidnight(): Promise<void> {
  const left = Math.floor(Date.now() / 86_400_000) * 86_400_000 + 86_400_000 - Date.now();
  if (left < 90_000) await sleep(left + 1000);
}

/** A campaign of the capped account to `listId`, sent now; its id. */
async function cappedCampaign(listId: string, subject: string, text: string): Promise<string> {
  const created = await api('/v1/campaigns', { from: 'news@capped.example', subject, text, listId, sendAt: 'now' }, undefined, capped);
  assert.is(created.status, 201, JSON.stringify(created.body));
  return created.body.id as string;
}

/** The capped account's campaign's stats once `done` holds for them. */
const cappedStatsOnce = (id: string, what: string, done: (st: any) => boolean, timeoutMs?: number): Promise<any> =>
  waitFor(what, async () => {
    const st = (await api(`/v1/campaigns/${id}/stats`, undefined, undefined, capped)).body;
    return done(st) ? st : undefined;
  }, timeoutMs);

test("campaign copies given back unsent (the session lost before their transaction) are taken off the account's quota again", async () => {
  await clearOfMidnight();
  const keys = createKeys(prefix);
  const listId = await listOf('quota-cut', [{ email: 'qc0@cut.test' }, { email: 'qc1@cut.test' }], 'capped');
  const id = await cappedCampaign(listId, 'Quota, session lost', 'Hi');
  const st = await cappedStatsOnce(id, 'both copies deferred', (s) => s.deferred >= 2);
  assert.is(st.delivered, 0, JSON.stringify(st));
  // Both were counted as they were rendered (2 of 4), and both went back: nothing reached a server.
  assert.is(await client.get(keys.quota('capped', new Date().toISOString().slice(0, 10))), '0');
  assert.is((await api(`/v1/campaigns/${id}/cancel`, {}, undefined, capped)).body.state, 'cancelled');
});

test("a campaign copy deferred and retried counts once on its account's quota, as a submission's recipient does", async () => {
  await clearOfMidnight();
  const keys = createKeys(prefix);
  const day = new Date().toISOString().slice(0, 10);
  // Greylisted once each (451, then taken a second later): three first attempts and three retries, quota 4.
  const listId = await listOf('quota-grey', [0, 1, 2].map((i) => ({ email: `qg${i}@grey.test` })), 'capped');
  const id = await cappedCampaign(listId, 'Quota, greylisted', 'Hi');
  const st = await cappedStatsOnce(id, 'all three delivered', (s) => s.delivered >= 3 || s.waiting !== null, 20_000);
  assert.equal([st.delivered, st.waiting], [3, null], JSON.stringify(st));
  assert.is(await client.get(keys.quota('capped', day)), '3', 'each recipient counted once');
  // The next test starts from an unused quota.
  await client.del(keys.quota('capped', day));
});

test("campaign copies first deferred without reaching a server (nothing listens) count on the account's quota when they are sent", async () => {
  await clearOfMidnight();
  const keys = createKeys(prefix);
  const day = new Date().toISOString().slice(0, 10);
  const listId = await listOf('quota-late', [0, 1, 2, 3, 4, 5].map((i) => ({ email: `ql${i}@late.test` })), 'capped');
  const id = await cappedCampaign(listId, 'Quota, no route yet', 'Hi');
  await cappedStatsOnce(id, 'every copy deferred once', (st) => st.deferred >= 6);
  assert.is(await client.get(keys.quota('capped', day)), null, 'nothing counted: nothing reached a server');
  const late = await startCapturePeer({ port: latePort, host: '127.0.0.1' });
  try {
    const st = await cappedStatsOnce(id, 'the quota reached', (s) => s.waiting !== null, 20_000);
    assert.equal([st.delivered, st.waiting?.by], [4, 'dailyQuota'], JSON.stringify(st));
    assert.is(late.messages.length, 4, 'no more than the quota went');
    assert.is(await client.get(keys.quota('capped', day)), '4');
  } finally {
    await late.close();
  }
  assert.is((await api(`/v1/campaigns/${id}/cancel`, {}, undefined, capped)).body.state, 'cancelled');
  await client.del(keys.quota('capped', day));
});

test("an account's daily quota counts its campaign copies as they are sent: the rest wait for the next UTC day, and its submissions are refused meanwhile", async () => {
  await clearOfMidnight();
  const keys = createKeys(prefix);
  const rows = Array.from({ length: 6 }, (_, i) => ({ email: `q${i}@quota.test`, fields: { first_name: `Q${i}` } }));
  const listId = await listOf('quota', rows, 'capped');
  const before = sink.messages.length;
  const id = await cappedCampaign(listId, 'Quota', 'Hi {{first_name}}');
  const s = await cappedStatsOnce(id, 'four delivered', (st) => st.delivered >= 4, 20_000);
  await sleep(1000);
  const st = await cappedStatsOnce(id, 'the stats', () => true);
  assert.equal([st.state, st.delivered, st.pending], ['sending', 4, 2], JSON.stringify({ s, st }));
  const got = sink.messages.slice(before).filter((m) => toOf(m).endsWith('@quota.test'));
  assert.is(got.length, 4, 'no more than the quota went');
  for (const m of got) {
    const v = await verifyBoth(m.raw, txtTable(capped.dkimKeys));
    for (const verdicts of [v.mailauth, v.dkimpy]) {
      assert.equal(verdicts.map((d) => [d.algo, d.pass]), [['ed25519-sha256', true]], `quota copy to ${toOf(m)}: ${JSON.stringify(verdicts)}`);
    }
  }
  const day = new Date().toISOString().slice(0, 10);
  assert.is(await client.get(keys.quota('capped', day)), '4', "the campaign's copies are on the account's quota counter");
  // The rest wait behind the pointer for the quota's reset (00:00 UTC), not re-claimed in the meantime.
  const due = Number(await client.zscore(keys.ready('quota.test'), `@${id}`));
  const midnight = Math.floor(Date.now() / 86_400_000) * 86_400_000 + 86_400_000;
  assert.ok(due >= midnight, `the pointer waits for the next UTC day (${new Date(due).toISOString()})`);
  // The stats say what the rest wait for: the account's quota, until 00:00 UTC; the metric counts them.
  assert.equal(st.waiting, { by: 'dailyQuota', limit: 4, until: new Date(midnight).toISOString() });
  const metrics = await (await request(`http://127.0.0.1:${app.ports.admin}/metrics`)).body.text();
  assert.ok(Number(/^sluice_campaign_copies_held_total\{by="dailyQuota"\} (\d+)$/m.exec(metrics)?.[1]) >= 2, 'sluice_campaign_copies_held_total{by="dailyQuota"}');
  // The same quota: the account's own submissions are refused until it resets.
  const r = await api('/v1/messages', { from: 'news@capped.example', to: 'one@quota.test', subject: 'over', text: 'x' }, undefined, capped);
  assert.is(r.status, 429, JSON.stringify(r.body));
  assert.ok(Number(r.retryAfter) > 0, 'with Retry-After');
  assert.is((await api(`/v1/campaigns/${id}/cancel`, {}, undefined, capped)).body.state, 'cancelled');
});

test("Redis refusing the account's count (its quota counter is not a counter): the chunk fails, and the campaign throttle tokens its copies took go back", async () => {
  await clearOfMidnight();
  const keys = createKeys(prefix);
  const quota = keys.quota('capped', new Date().toISOString().slice(0, 10));
  const [count, ttl] = await Promise.all([client.get(quota), client.pttl(quota)]);
  // A list where takeSending-1.lua reads a number: the script fails with WRONGTYPE, after the
  // campaign's own throttle granted its tokens.
  await client.del(quota);
  await client.rpush(quota, 'not a counter');
  try {
    const listId = await listOf('quota-refused', [{ email: 'refused0@quota.test' }, { email: 'refused1@quota.test' }], 'capped');
    const created = await api('/v1/campaigns', { from: 'news@capped.example', subject: 'Quota refused', text: 'Hi', listId, sendAt: 'now', throttle: { perHour: 3 } }, undefined, capped);
    assert.is(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id as string;
    const bucket = keys.bucket(`campaign:${id}`);
    // The bucket is made by the first take (3 tokens less 2) and refilled by the refund.
    const left = await waitFor('the bucket taken from and given back', async () => {
      const h = await client.hget(bucket, 'h');
      return h !== null && Number(h) > 2.9 ? Number(h) : undefined;
    }, 20_000);
    assert.ok(left <= 3, `${left}`);
    const st = await cappedStatsOnce(id, 'the stats', () => true);
    assert.is(st.delivered, 0, JSON.stringify(st));
    assert.is((await api(`/v1/campaigns/${id}/cancel`, {}, undefined, capped)).body.state, 'cancelled');
  } finally {
    await client.del(quota);
    if (count !== null) await client.set(quota, count, 'PX', ttl > 0 ? ttl : 172_800_000);
  }
});

test("a campaign copy first tried after the campaign's maxAge is retried: its retries count from its own first attempt", async () => {
  const keys = createKeys(prefix);
  const listId = await listOf('greylisted', ['g0', 'g1', 'g2'].map((l) => ({ email: `${l}@grey.test` })));
  const created = await api('/v1/campaigns', { from: 'news@acme.example', subject: 'Late copies', text: 'Hi', listId });
  assert.is(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  // It began sending 11 minutes ago (throttled, or paused a while): longer than grey.test's maxAge
  // of 10 minutes, and its copies are tried only now; the first try of each is greylisted.
  await client.hset(keys.msgMeta(id), 'state', 'sending', 'startedAt', Date.now() - 11 * 60_000);
  await client.zadd(keys.campaignsDue(), Date.now(), id);
  const st = await waitFor('every copy final', async () => {
    const s = (await api(`/v1/campaigns/${id}/stats`)).body;
    return s.queued === 3 && s.pending === 0 ? s : undefined;
  });
  assert.equal({ delivered: st.delivered, expired: st.expired, deferred: st.deferred }, { delivered: 3, expired: 0, deferred: 3 }, JSON.stringify(st));
  assert.equal(grey.messages.map(toOf).filter((a) => /^g\d@/.test(a)).sort(), ['g0@grey.test', 'g1@grey.test', 'g2@grey.test']);
  assert.is((await api(`/v1/campaigns/${id}`)).body.state, 'completed');
});

test('a contact deleted after its copy was queued: not sent, counted cancelled, not bounced', async () => {
  const keys = createKeys(prefix);
  // d8.test is suspended for a few seconds: the list is queued in full before any copy is claimed,
  // and one contact is deleted in between.
  const suspended = await recordThrottleSignal(client, keys, 'default:d8.test', { threshold: 1, windowMs: 60_000, suspendMs: 4_000, maxSuspendMs: 4_000, maxLevel: 1, recoverMs: 60_000, ratePerConnection: 100 }, Date.now(), '421 4.7.0 slow down');
  assert.ok(suspended.suspendedUntil !== null);
  const listId = await listOf('deleted-contact', ['x0', 'x1', 'x2'].map((l) => ({ email: `${l}@d8.test` })));
  const before = sink.messages.length;
  const created = await api('/v1/campaigns', { from: 'news@acme.example', subject: 'One deleted', text: 'Hi', listId, sendAt: 'now' });
  assert.is(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  await waitFor('the whole list queued', async () => ((await api(`/v1/campaigns/${id}/stats`)).body.queued === 3 ? true : undefined));
  assert.ok(Date.now() < (suspended.suspendedUntil as number), 'queued while the destination is suspended');
  assert.is((await api(`/v1/lists/${listId}/contacts/x1%40d8.test`, undefined, 'DELETE')).status, 200);
  const st = await waitFor('every copy final', async () => {
    const s = (await api(`/v1/campaigns/${id}/stats`)).body;
    return s.pending === 0 && s.delivered + s.bounced + s.cancelled === 3 ? s : undefined;
  });
  assert.equal({ delivered: st.delivered, bounced: st.bounced, cancelled: st.cancelled, byReason: st.bouncedByReason }, { delivered: 2, bounced: 0, cancelled: 1, byReason: {} }, JSON.stringify(st));
  assert.equal(sink.messages.slice(before).map(toOf).filter((to) => to.endsWith('@d8.test')).sort(), ['x0@d8.test', 'x2@d8.test']);
  assert.is((await api(`/v1/campaigns/${id}`)).body.state, 'completed');
});

test("a copy refused at RCPT as an address that does not exist: counted bounced once, its contact bounced (a later campaign to the list leaves it out)", async () => {
  const listId = await listOf('gone-contact', [{ email: 'gone-1@d9.test' }, { email: 'here-1@d9.test' }]);
  const created = await api('/v1/campaigns', { from: 'news@acme.example', subject: 'Gone', text: 'Hi', listId, sendAt: 'now' });
  assert.is(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  const st = await waitFor('every copy final', async () => {
    const x = (await api(`/v1/campaigns/${id}/stats`)).body;
    return x.pending === 0 && x.delivered + x.bounced === 2 ? x : undefined;
  });
  assert.equal([st.delivered, st.bounced, st.hardbounces], [1, 1, 1], JSON.stringify(st));
  const contact = await waitFor("the contact's status", async () => {
    const c = (await api(`/v1/lists/${listId}/contacts/gone-1%40d9.test`)).body;
    return c.status === 'subscribed' ? undefined : c;
  }, 10_000);
  assert.is(contact.status, 'bounced');
  assert.is((await api(`/v1/lists/${listId}/contacts/here-1%40d9.test`)).body.status, 'subscribed');
});

test.run();
