import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTransport } from 'nodemailer';
import { request } from 'undici';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import { startSluice, type RunningSluice } from '../../src/app/start.js';
import { generateOperatorKey, hashSecret } from '../../src/accounts/secrets.js';
import type { RedisClient } from '../../src/redis/client.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startCapturePeer, type CapturePeer, type CapturedMessage } from '../helpers/smtp-peer.js';
import { makeAccount, type AccountKeys } from '../helpers/sluice.js';
import { spawnSluice } from '../cli/run-cli.js';
import { CORPUS_EMAILS } from '../helpers/corpus.js';

/**
 * Recipients' rights against a whole running Sluice (ingress, delivery, tracking, feedback,
 * housekeeping), with every piece of data made by the path that makes it in production:
 *
 *   HTTP API messages to the address: delivered (with another recipient, under an Idempotency-Key),
 *   deferred by a 451 (next attempt an hour away), bounced by a 550 5.1.1; a campaign copy sent to a
 *   list holding it and a campaign scheduled for tomorrow; an open, a click and a one-click
 *   unsubscribe through the tracking server, with the tokens found in the mail the peer received; a
 *   corpus DSN sent to the inbound MX at the VERP return path the peer saw; a webhook endpoint that
 *   answers 500, so batches naming the address wait for a retry and others sit in dead letters.
 *   A second account ('beta') holds a message to the same address.
 *
 * Export (HTTP, each account's key; CLI, operator scope) holds each kind of data and nothing of the
 * other account's. Erase (HTTP with acme's key, then the CLI across every account) leaves neither the
 * address (any case), its local part, its VERP addresses nor its tracking tokens in any key or value
 * (stream entries included); the digest still blocks a new send; tracking and feedback ignore the
 * erased recipient's old tokens and VERP address; the controller gets an `erased` event.
 */
const test = suite('e2e/privacy');

const BOUNCE_DOMAIN = 'bounce.sluice.test';
const ANN = 'Ann.Person@one.test';
const ann = ANN.toLowerCase();
const OTHER = 'bob@one.test';
const CORPUS = CORPUS_EMAILS;

let redis: TestRedis;
let client: RedisClient;
let sink: CapturePeer;
let hooks: Server;
let hookCalls = 0;
let app: RunningSluice;
let dir: string;
let prefix: string;
let acme: AccountKeys;
let beta: AccountKeys;
const opKey = generateOperatorKey('ops');
/** Every transaction that reached DATA at the peer, refused ones included (the VERP of a bounce). */
const seen: CapturedMessage[] = [];

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
  prefix = redis.fresh().prefix;
  sink = await startCapturePeer({
    onData(msg) {
      seen.push(msg);
      const raw = msg.raw.toString('latin1');
      if (/^Subject: bounce-me/m.test(raw)) return { code: 550, message: `5.1.1 <${ANN}>: user unknown` };
      if (/^Subject: defer-me/m.test(raw)) return { code: 451, message: `4.3.0 <${ANN}>: mailbox busy, try later` };
      return null;
    },
  });
  hooks = createServer((req, res) => {
    hookCalls++;
    req.resume();
    req.on('end', () => res.writeHead(500).end('no'));
  });
  await new Promise<void>((r) => hooks.listen(0, '127.0.0.1', r));
  dir = mkdtempSync(join(tmpdir(), 'sluice-privacy-'));
  writeFileSync(join(dir, 'k1.key'), randomBytes(32), { mode: 0o600 });
  acme = await makeAccount(mkdtempSync(join(dir, 'acme-')), 'acme', 'acme.example');
  beta = await makeAccount(mkdtempSync(join(dir, 'beta-')), 'beta', 'beta.example', ['rsa']);
  const config = loadConfig({
    env: {},
    overrides: {
      roles: ['ingress', 'delivery', 'tracking', 'feedback', 'housekeeping'],
      instance: { hostname: 'sluice.test', dataDir: dir },
      log: { level: 'silent' },
      redis: { url: redis.url, prefix, scheduleShards: 4 },
      admin: { host: '127.0.0.1', port: 0 },
      ingress: { smtp: { enabled: false }, http: { host: '127.0.0.1', port: 0 } },
      delivery: { bounceDomain: BOUNCE_DOMAIN, pollInterval: '50ms', pool: { threads: 1 }, dns: { servers: ['127.0.0.1:9'], timeout: '1s' }, transport: { 'one.test': `${sink.host}:${sink.port}` } },
      // A deferred copy waits an hour: still queued when it is erased.
      shaping: { default: { retry: ['1h'] } },
      feedback: { host: '127.0.0.1', port: 0 },
      tracking: { host: '127.0.0.1', port: 0, publicBaseUrl: 'http://127.0.0.1', keys: [{ id: 'k1', secretFile: join(dir, 'k1.key'), notAfter: null }], signWith: 'k1' },
      // Batches fail for 3 s, then go to dead letters: early events end there, late ones wait for a retry.
      webhooks: { retryWindow: '3s', retryBase: '200ms', retryMaxDelay: '500ms', pollInterval: '100ms', allowPrivateTargets: true },
      operators: [{ id: 'ops', apiKeys: [await hashSecret(opKey)] }],
      accounts: [acme.account, beta.account],
    },
  });
  app = await startSluice(config, { logger: createLogger(process.env['TEST_LOG'] ?? 'silent') });
});

test.after(async () => {
  await app?.stop(2000);
  await sink?.close();
  await new Promise((r) => hooks?.close(r));
  await redis?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function call(key: string, path: string, init: { method?: string; body?: unknown; raw?: string; type?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: any }> {
  const payload = init.raw ?? (init.body !== undefined ? JSON.stringify(init.body) : undefined);
  const res = await request(`http://127.0.0.1:${app.ports.http}${path}`, {
    method: (init.method ?? (payload !== undefined ? 'POST' : 'GET')) as 'GET',
    headers: { authorization: `Bearer ${key}`, ...(payload !== undefined ? { 'content-type': init.type ?? 'application/json' } : {}), ...init.headers },
    ...(payload !== undefined ? { body: payload } : {}),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? JSON.parse(text) : null };
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stateOf(key: string, id: string, idx = 0): Promise<string | undefined> {
  return (await call(key, `/v1/messages/${id}`)).body?.recipients?.[idx]?.state;
}

const unfold = (raw: Buffer) => raw.toString('latin1').replace(/=\r\n/g, '');
const tokensIn = (m: CapturedMessage) => [...unfold(m.raw).matchAll(/http:\/\/127\.0\.0\.1\/([ocu])\/([A-Za-z0-9_-]+)/g)].map((x) => ({ kind: x[1] as string, token: (x[2] as string).replace(/\.gif$/, '') }));
const tokenOf = (m: CapturedMessage, kind: string) => tokensIn(m).find((t) => t.kind === kind)?.token as string;

async function tracking(path: string, init: { method?: 'GET' | 'POST'; body?: string } = {}): Promise<number> {
  const res = await request(`http://127.0.0.1:${app.ports.tracking}${path}`, {
    method: init.method ?? 'GET',
    headers: { 'user-agent': 'Mozilla/5.0 (test)', ...(init.body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
    ...(init.body ? { body: init.body } : {}),
  });
  await res.body.text();
  return res.statusCode;
}

async function sendDsn(verp: string): Promise<void> {
  const t = createTransport({ host: '127.0.0.1', port: app.ports.feedback, secure: false, ignoreTLS: true });
  try {
    await t.sendMail({ envelope: { from: '', to: [verp] }, raw: readFileSync(new URL('lhost-courier-01.eml', CORPUS)) });
  } finally {
    t.close();
  }
}

/** Every key of the server and every value in it, as lower-case text, one entry per key. */
async function dump(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, found] = await client.scan(cursor, 'COUNT', 1000);
    cursor = next;
    for (const key of found) {
      const type = await client.type(key);
      let text: string;
      if (type === 'string') text = (await client.getBuffer(key))?.toString('latin1') ?? '';
      else if (type === 'hash') text = (await client.hgetallBuffer(key) ? Object.entries(await client.hgetallBuffer(key)).map(([f, v]) => `${f}=${v.toString('latin1')}`).join('\n') : '');
      else if (type === 'list') text = (await client.lrangeBuffer(key, 0, -1)).map((b) => b.toString('latin1')).join('\n');
      else if (type === 'set') text = (await client.smembers(key)).join('\n');
      else if (type === 'zset') text = (await client.zrange(key, 0, -1, 'WITHSCORES')).join('\n');
      else if (type === 'stream') text = JSON.stringify(await client.xrange(key, '-', '+'));
      else if (type === 'none') continue;
      else throw new Error(`unexpected type ${type} of ${key}`);
      out.set(key.toLowerCase(), `${key}\n${text}`.toLowerCase());
    }
  } while (cursor !== '0');
  return out;
}

/** The keys whose name or value holds one of the needles. */
function holding(d: Map<string, string>, needles: readonly string[]): Map<string, string[]> {
  const hits = new Map<string, string[]>();
  for (const [key, text] of d) {
    const found = needles.filter((n) => text.includes(n.toLowerCase()));
    if (found.length > 0) hits.set(key, found);
  }
  return hits;
}

async function streamEvents(): Promise<{ id: string; f: Record<string, string> }[]> {
  const rows = (await client.xrange(`${prefix}events`, '-', '+')) as [string, string[]][];
  return rows.map(([id, flat]) => ({ id, f: Object.fromEntries(flat.flatMap((v, i) => (i % 2 === 0 ? [[v, flat[i + 1] as string]] : []))) }));
}

async function webhookBatches(account: string): Promise<{ outbox: string[]; dead: string[] }> {
  const outbox: string[] = [];
  const dead: string[] = [];
  for (const key of (await dump()).keys()) {
    if (!key.startsWith(`${prefix}{a:${account}}:`.toLowerCase())) continue;
    const type = await client.type(key);
    if (key.includes(':outbox') && type === 'zset') outbox.push(...(await client.zrange(key, 0, -1)));
    if (key.includes(':dead') && type === 'list') dead.push(...(await client.lrange(key, 0, -1)));
  }
  return { outbox, dead };
}

const names = (batch: string, pairs: readonly string[]) => (JSON.parse(batch) as { e: { msgId?: string; idx?: string | number }[] }).e.some((e) => pairs.includes(`${e.msgId}:${e.idx}`));

test('export and erase of an address with data in every state, made through the running Sluice', async () => {
  // ── a webhook that fails, a list and two campaigns ──────────────────────────────────────
  const hook = await call(acme.apiKey, '/v1/webhooks', { body: { url: `http://127.0.0.1:${(hooks.address() as { port: number }).port}/hook`, events: ['*'] } });
  assert.is(hook.status, 201, JSON.stringify(hook.body));
  const list = await call(acme.apiKey, '/v1/lists', { body: { name: 'news' } });
  assert.is(list.status, 201, JSON.stringify(list.body));
  const rows = [{ email: ANN, fields: { first_name: 'Ann', city: 'Oslo' } }, { email: 'carl@one.test', fields: { first_name: 'Carl' } }];
  const imported = await call(acme.apiKey, `/v1/lists/${list.body.id}/contacts`, { raw: rows.map((r) => JSON.stringify(r)).join('\n') + '\n', type: 'application/x-ndjson' });
  assert.ok(imported.status < 300, JSON.stringify(imported.body));

  // ── messages: delivered (tracked, two recipients, Idempotency-Key), campaign copy, deferred ──
  const html = '<p>Hello Ann, read <a href="https://acme.example/news">the news</a>.</p>';
  const delivered = await call(acme.apiKey, '/v1/messages', { body: { from: 'news@acme.example', to: [ANN, OTHER], subject: 'hello', html }, headers: { 'idempotency-key': 'order-42' } });
  assert.is(delivered.status, 202, JSON.stringify(delivered.body));
  const camp = await call(acme.apiKey, '/v1/campaigns', { body: { name: 'spring', from: 'news@acme.example', subject: 'Spring {{first_name}}', html: '<p>Hi {{first_name}} <a href="https://acme.example/shop">shop</a></p>', listId: list.body.id, sendAt: 'now' } });
  assert.is(camp.status, 201, JSON.stringify(camp.body));
  const later = await call(acme.apiKey, '/v1/campaigns', { body: { name: 'tomorrow', from: 'news@acme.example', subject: 'Later', text: 'Hi {{first_name}}', listId: list.body.id, sendAt: new Date(Date.now() + 86_400_000).toISOString() } });
  assert.is(later.status, 201, JSON.stringify(later.body));
  const deferred = await call(acme.apiKey, '/v1/messages', { body: { from: 'news@acme.example', to: ANN, subject: 'defer-me', text: `Dear ${ANN}` } });
  const betaMsg = await call(beta.apiKey, '/v1/messages', { body: { from: 'hi@beta.example', to: ANN, subject: 'from beta', text: 'x' } });
  assert.is(betaMsg.status, 202);

  await waitFor('the first deliveries', async () => ((await stateOf(acme.apiKey, delivered.body.id)) === 'delivered' && (await stateOf(acme.apiKey, deferred.body.id)) === 'deferred' && (await stateOf(beta.apiKey, betaMsg.body.id)) === 'delivered' ? true : undefined));
  const copy = await waitFor('the campaign copy', async () => sink.messages.find((m) => m.envelope.to[0]?.toLowerCase() === ann && /^Subject: Spring Ann/m.test(m.raw.toString('latin1'))));
  const mail = sink.messages.find((m) => m.envelope.to[0]?.toLowerCase() === ann && /^Subject: hello/m.test(m.raw.toString('latin1'))) as CapturedMessage;
  assert.ok(mail, 'the delivered copy reached the peer');

  // ── bounced: a 550 at the peer, then a real DSN to its VERP at the inbound MX ──
  const bounced = await call(acme.apiKey, '/v1/messages', { body: { from: 'news@acme.example', to: ANN, subject: 'bounce-me', text: 'x' } });
  await waitFor('the bounce', async () => ((await stateOf(acme.apiKey, bounced.body.id)) === 'bounced' ? true : undefined));
  const bounceVerp = seen.find((m) => /^Subject: bounce-me/m.test(m.raw.toString('latin1')))?.envelope.from as string;
  assert.match(bounceVerp, new RegExp(`@${BOUNCE_DOMAIN}$`));
  await sendDsn(bounceVerp);

  // ── tracking: open and click of the delivered copy, one-click unsubscribe of the campaign copy ──
  assert.is(await tracking(`/o/${tokenOf(mail, 'o')}.gif`), 200);
  assert.is(await tracking(`/c/${tokenOf(mail, 'c')}`), 302);
  assert.is(await tracking(`/u/${tokenOf(copy, 'u')}`, { method: 'POST', body: 'List-Unsubscribe=One-Click' }), 200);

  const ids = { delivered: delivered.body.id as string, deferred: deferred.body.id as string, bounced: bounced.body.id as string, campaign: camp.body.id as string, later: later.body.id as string, beta: betaMsg.body.id as string };
  const contactNo = Number(/-(\d+)-/.exec(copy.envelope.from)?.[1]);
  const annPairs = [`${ids.delivered}:0`, `${ids.deferred}:0`, `${ids.bounced}:0`, `${ids.campaign}:${contactNo}`];
  const events = await waitFor('every kind of event', async () => {
    const ev = await streamEvents();
    const types = new Set(ev.filter((e) => annPairs.includes(`${e.f['msgId']}:${e.f['idx']}`)).map((e) => `${e.f['type']}${e.f['feedbackId'] ? '+fb' : ''}`));
    return ['delivered', 'deferred', 'bounced', 'bounced+fb', 'opened', 'clicked', 'unsubscribed'].every((t) => types.has(t)) ? ev : undefined;
  });
  assert.ok(events.length > 0);
  // Webhooks: early batches went to dead letters, a fresh open waits for its retry.
  await waitFor('a dead-lettered batch naming the address', async () => ((await webhookBatches('acme')).dead.some((b) => names(b, annPairs)) ? true : undefined));
  assert.is(await tracking(`/o/${tokenOf(copy, 'o')}.gif`), 200);
  await waitFor('a batch in retry naming the address', async () => ((await webhookBatches('acme')).outbox.some((b) => names(b, annPairs)) ? true : undefined));
  assert.ok(hookCalls > 0, 'the endpoint was called (and failed)');

  // ── export ──
  const tokens = [...tokensIn(mail), ...tokensIn(copy)].map((t) => t.token);
  const verps = seen.filter((m) => m.envelope.to[0]?.toLowerCase() === ann).map((m) => m.envelope.from);
  const exp = await call(acme.apiKey, `/v1/recipients/${encodeURIComponent(ANN.toUpperCase())}/export`);
  assert.is(exp.status, 200, JSON.stringify(exp.body));
  const e = exp.body;
  assert.is(e.email, ann);
  assert.equal(e.contacts.map((c: any) => c.fields), [{ first_name: 'Ann', city: 'Oslo' }]);
  assert.equal(new Set(e.suppressions.map((s: any) => `${s.list}:${s.reason}`)), new Set(['global:hardbounce', 'acme:unsubscribe']));
  const byId = new Map<string, any>(e.messages.map((m: any) => [m.id, m]));
  assert.is(byId.get(ids.delivered)?.delivery?.state, 'delivered');
  assert.is(byId.get(ids.deferred)?.delivery?.state, 'deferred');
  assert.is(byId.get(ids.bounced)?.delivery?.state, 'bounced');
  assert.is(byId.get(ids.campaign)?.kind, 'campaign');
  assert.ok(byId.has(ids.later), 'the scheduled campaign to the list');
  assert.not.ok(byId.has(ids.beta), "beta's message is not acme's to see");
  for (const kind of ['opens', 'clicks', 'unsubscribes', 'bounces', 'feedback']) assert.ok(e[kind].length > 0, kind);
  assert.not.match(JSON.stringify(e), OTHER, 'another recipient is not in it');
  // Beta's key sees only beta's message; an unknown address is an empty export, not an error.
  const betaExp = (await call(beta.apiKey, `/v1/recipients/${encodeURIComponent(ANN)}/export`)).body;
  assert.equal(betaExp.messages.map((m: any) => m.id), [ids.beta]);
  assert.equal([betaExp.contacts.length, betaExp.opens.length, betaExp.clicks.length, betaExp.unsubscribes.length, betaExp.feedback.length], [0, 0, 0, 0, 0]);
  assert.not.ok(JSON.stringify(betaExp).includes(ids.delivered));
  assert.equal(betaExp.suppressions.map((s: any) => s.list), ['global'], 'the global list is everyone\'s');
  const beforeErase = holding(await dump(), [ann]);
  assert.ok(beforeErase.size > 10, `the address is in many keys before (${beforeErase.size})`);

  // ── erase with acme's key ──
  const del = await call(acme.apiKey, `/v1/recipients/${encodeURIComponent(ANN)}`, { method: 'DELETE' });
  assert.is(del.status, 200, JSON.stringify(del.body));
  assert.is(del.body.erased.contacts, 1);
  assert.ok(del.body.erased.queued >= 1, 'the deferred entry left the queue');
  assert.is(del.body.erased.idempotency, 1, 'the stored Idempotency-Key answer');
  const needles = [ann, 'ann.person', ...verps, ...tokens];
  const left = holding(await dump(), needles);
  // Only beta's message may still hold it: beta's data is beta's to erase.
  for (const [key, found] of left) assert.ok(key.includes(`{m:${ids.beta}}`) || key.includes(`:rs:${ids.beta}:`), `${key} still holds ${found.join(', ')}`);
  assert.ok(left.size > 0, "beta's message is untouched");
  const wh = await webhookBatches('acme');
  assert.not.ok([...wh.outbox, ...wh.dead].some((b) => names(b, annPairs)), 'no webhook batch names the erased recipient');
  const after = await streamEvents();
  assert.not.ok(after.some((x) => annPairs.includes(`${x.f['msgId']}:${x.f['idx']}`)), 'no event names the erased recipient');
  const erasedEvents = after.filter((x) => x.f['type'] === 'erased');
  assert.equal(erasedEvents.map((x) => x.f['account']), ['acme']);
  assert.not.ok(JSON.stringify(erasedEvents).toLowerCase().includes(ann));
  // the other recipient of the same message is intact
  assert.is(await stateOf(acme.apiKey, ids.delivered, 1), 'delivered');

  // ── the erased recipient's old tokens and VERP do nothing now ──
  assert.is(await tracking(`/u/${tokenOf(mail, 'u')}`), 404, 'no page for an erased recipient');
  assert.is(await tracking(`/u/${tokenOf(mail, 'u')}`, { method: 'POST', body: 'List-Unsubscribe=One-Click' }), 404);
  // The pixel still answers and the link still leads where it led, but neither records anything.
  assert.is(await tracking(`/o/${tokenOf(mail, 'o')}.gif`), 200);
  assert.is(await tracking(`/c/${tokenOf(mail, 'c')}`), 302);
  assert.is(await tracking(`/o/${tokenOf(copy, 'o')}.gif`), 200);
  await sendDsn(mail.envelope.from);
  await new Promise((r) => setTimeout(r, 500));
  const later2 = await streamEvents();
  assert.not.ok(later2.some((x) => annPairs.includes(`${x.f['msgId']}:${x.f['idx']}`)), 'feedback, tracking and unsubscribe did not act');
  const [mailPair, copyPair] = [annPairs.find((p) => p.startsWith(`${ids.delivered}:`)), annPairs.find((p) => p.startsWith(`${ids.campaign}:`))];
  for (const pair of [mailPair, copyPair]) {
    const [msgId, idx] = (pair as string).split(':') as [string, string];
    const marks = await client.hkeys(`${prefix}{m:${msgId}}:track`);
    assert.not.ok(marks.some((f) => new RegExp(`^m?[oc]:${idx}(:|$)`).test(f)), `no open or click mark of the erased recipient (${pair}): ${marks.join(',')}`);
  }
  assert.not.ok((await client.hkeys(`${prefix}{x:acme}:suppressed`)).includes(''), 'no suppression of an empty address');

  // ── idempotent ──
  const second = await call(acme.apiKey, `/v1/recipients/${encodeURIComponent(ANN)}`, { method: 'DELETE' });
  assert.is(second.status, 200);
  assert.equal({ ...second.body.erased, suppressions: 0, messages: 0 }, { contacts: 0, messages: 0, queued: 0, events: 0, feedback: 0, notices: 0, webhookBatches: 0, suppressions: 0, idempotency: 0 });

  // ── still never mailed, by digest ──
  const before = sink.messages.length;
  const again = await call(acme.apiKey, '/v1/messages', { body: { from: 'news@acme.example', to: ANN, subject: 'again', text: 'x' } });
  await waitFor('the new send to be suppressed', async () => ((await stateOf(acme.apiKey, again.body.id)) === 'suppressed' ? true : undefined));
  assert.is(sink.messages.length, before, 'never sent');

  // ── the CLI, a real process on the same Redis: export and erase across every account ──
  const cfgFile = join(dir, 'cli.yaml');
  writeFileSync(cfgFile, JSON.stringify({ redis: { url: redis.url, prefix, scheduleShards: 4 }, accounts: [acme.account, beta.account] }));
  const cliBeta = await spawnSluice(['privacy', 'export', ANN, '--account', 'beta', '--config', cfgFile]);
  assert.is(cliBeta.code, 0, cliBeta.err);
  assert.equal(JSON.parse(cliBeta.out).messages.map((m: any) => m.id), [ids.beta]);
  const cliAll = await spawnSluice(['privacy', 'export', ANN, '--config', cfgFile]);
  assert.is(cliAll.code, 0, cliAll.err);
  assert.ok(JSON.parse(cliAll.out).messages.some((m: any) => m.id === ids.beta), 'the operator sees beta\'s message');
  const cliErase = await spawnSluice(['privacy', 'erase', ANN, '--config', cfgFile]);
  assert.is(cliErase.code, 0, cliErase.err);
  // beta's message, and the refused new send (a record of its own, holding the address)
  assert.is(JSON.parse(cliErase.out).erased.messages, 2);

  const clean = holding(await dump(), needles);
  assert.equal([...clean.keys()], [], `still holding it: ${JSON.stringify([...clean])}`);
  const betaAgain = await call(beta.apiKey, '/v1/messages', { body: { from: 'hi@beta.example', to: ANN, subject: 'beta again', text: 'x' } });
  await waitFor("beta's new send to be suppressed (global list, by digest)", async () => ((await stateOf(beta.apiKey, betaAgain.body.id)) === 'suppressed' ? true : undefined));
  // one per erasure and account touched: acme's two DELETEs, then the CLI's for acme (the refused send) and beta
  assert.equal((await streamEvents()).filter((x) => x.f['type'] === 'erased').map((x) => x.f['account']).sort(), ['acme', 'acme', 'acme', 'beta']);
});

test('bad input: a path that is not an address is a 400, a wrong method a 405, no key a 401', async () => {
  const bad = await call(acme.apiKey, '/v1/recipients/not-an-address/export');
  assert.is(bad.status, 400);
  assert.is(bad.body.code, 'SLUICE_INGRESS_BAD_ADDRESS');
  assert.is((await call(acme.apiKey, `/v1/recipients/${encodeURIComponent(ANN)}`)).status, 405);
  const res = await request(`http://127.0.0.1:${app.ports.http}/v1/recipients/${encodeURIComponent(ANN)}`, { method: 'DELETE' });
  await res.body.text();
  assert.is(res.statusCode, 401);
});

test.run();
