import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, createHmac } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import nodemailer from 'nodemailer';
import { startHttpApi, type HttpApi } from '../../src/ingress/http-api.js';
import { startSubmissionServer, type SubmissionServer } from '../../src/ingress/smtp-server.js';
import { loadOrCreateTls } from '../../src/ingress/tls.js';
import { OperatorRegistry } from '../../src/accounts/operators.js';
import { generateOperatorKey, hashSecret } from '../../src/accounts/secrets.js';
import { ClosedAccounts, closedRecord } from '../../src/store/account-state.js';
import { readAudit } from '../../src/store/audit.js';
import { figuresOf, isPaused, pauseSender } from '../../src/store/reputation.js';
import { readHolds } from '../../src/queue/holds.js';
import { shardOf } from '../../src/redis/keys.js';
import { ingressFixture, type IngressFixture } from './fixture.js';
import { sluice } from '../cli/run-cli.js';

/**
 * Operator keys, account close/reopen and the audit log, over the real HTTP API, SMTP submission
 * and CLI on one Redis: an account key never gets admin rights; an operator acts on an account by
 * naming it; a closed account is refused on both interfaces at once; every change is audited with
 * who, what, where — and no secret or address in the clear.
 */
const test = suite('ingress/admin');
let fx: IngressFixture;
let api: HttpApi;
let smtp: SubmissionServer;
let base = '';
const opKey = generateOperatorKey('ops');
let cfgFile = '';

test.before(async () => {
  fx = await ingressFixture({}, { trackingKeys: true });
  // Cache off: a close through the CLI (another "process") is seen by the next request.
  const closedAccounts = new ClosedAccounts(fx.client, fx.keys, 0);
  const deps = { redis: fx.client, keys: fx.keys, config: fx.config, registry: fx.registry, logger: fx.logger, closedAccounts, operators: new OperatorRegistry([{ id: 'ops', apiKeys: [await hashSecret(opKey)] }]) };
  api = await startHttpApi(deps, { host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${api.port}`;
  smtp = await startSubmissionServer(deps, { host: '127.0.0.1', port: 0, tls: await loadOrCreateTls(fx.config), allowInsecureAuth: true });
  cfgFile = join(fx.dataDir, 'sluice.yaml');
  const acct = (id: string) => `  - { id: ${id}, domains: [{ domain: ${id}.example, dkim: [] }], apiKeys: [], smtpUsers: [], dailyQuota: null, rateLimit: { perSecond: null, perMinute: null, perHour: null } }`;
  writeFileSync(cfgFile, `redis:\n  url: ${JSON.stringify(fx.redis.url)}\n  prefix: '${fx.keys.prefix}'\naccounts:\n${acct('acme')}\n${acct('other')}\n`);
});
test.after(async () => {
  await api.close();
  await smtp.close();
  await fx.stop();
});

async function call(method: string, path: string, key: string, body?: unknown) {
  const res = await request(base + path, {
    method: method as 'GET',
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.body.text();
  return { status: res.statusCode, json: (text ? JSON.parse(text) : {}) as Record<string, any> };
}

const MESSAGE = { from: 'a@acme.example', to: 'r@x.example', subject: 's', text: 't' };

function smtpSend(user: string, pass: string) {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port: smtp.port, secure: false, ignoreTLS: true, auth: { user, pass } });
  return t.sendMail({ from: 'a@acme.example', to: 'r@x.example', subject: 's', text: 't' }).finally(() => t.close());
}

test('an account key never gets admin rights; an operator key acts on the account it names', async () => {
  const denied = await call('GET', '/v1/accounts/acme', fx.apiKeys.acme);
  assert.is(denied.status, 403);
  assert.is(denied.json['code'], 'SLUICE_ADMIN_REQUIRED');
  assert.is((await call('GET', '/v1/audit', fx.apiKeys.acme)).status, 403);
  // An account key naming another account changes nothing: it stays its own.
  await call('POST', '/v1/suppressions', fx.apiKeys.other, { email: 'only-other@x.example' });
  const own = await call('GET', '/v1/suppressions?account=other', fx.apiKeys.acme);
  assert.equal(own.json['suppressions'], [], "acme's key with ?account=other still lists acme's own list");

  const noAccount = await call('GET', '/v1/suppressions', opKey);
  assert.is(noAccount.status, 400);
  assert.is(noAccount.json['code'], 'SLUICE_ADMIN_ACCOUNT_REQUIRED');
  const unknown = await call('GET', '/v1/suppressions?account=nobody', opKey);
  assert.is(unknown.status, 404);
  assert.is(unknown.json['code'], 'SLUICE_ACCOUNT_UNKNOWN');
  const theirs = await call('GET', '/v1/suppressions?account=other', opKey);
  assert.equal(theirs.json['suppressions'].map((s: { email: string }) => s.email), ['only-other@x.example']);
  const wrong = await call('GET', '/v1/accounts/acme', `op_ops_${'A'.repeat(32)}`);
  assert.is(wrong.status, 401);
});

test('close stops sending on HTTP and SMTP at once; reopen restores it; both are audited', async () => {
  assert.is((await call('POST', '/v1/messages', fx.apiKeys.acme, MESSAGE)).status, 202);
  const closed = await call('POST', '/v1/accounts/acme/close', opKey);
  assert.is(closed.status, 200, JSON.stringify(closed.json));
  assert.is(closed.json['state'], 'closed');
  const days = (Date.parse(closed.json['purgeAt']) - Date.parse(closed.json['closedAt'])) / 86_400_000;
  assert.is(days, 90, 'deleted after retention.closedAccounts (90 days)');

  const refused = await call('POST', '/v1/messages', fx.apiKeys.acme, MESSAGE);
  assert.is(refused.status, 403);
  assert.is(refused.json['code'], 'SLUICE_ACCOUNT_CLOSED');
  assert.match(refused.json['message'], /closed/);
  const err = await smtpSend('acme', 'acme-password').then(() => null, (e: { responseCode?: number; response?: string }) => e);
  assert.is(err?.responseCode, 554, 'SMTP refuses at MAIL FROM');
  assert.match(err?.response ?? '', /5\.7\.1 .*closed/);
  assert.is((await call('POST', '/v1/messages', fx.apiKeys.other, { ...MESSAGE, from: 'a@other.example' })).status, 202, 'other accounts send on');

  const again = await call('POST', '/v1/accounts/acme/close', opKey);
  assert.is(again.json['closedAt'], closed.json['closedAt'], 'closing twice keeps the first close');
  const reopened = await call('POST', '/v1/accounts/acme/reopen', opKey);
  assert.is(reopened.json['state'], 'open');
  assert.is((await call('POST', '/v1/messages', fx.apiKeys.acme, MESSAGE)).status, 202);
  await smtpSend('acme', 'acme-password');
  assert.is((await call('POST', '/v1/accounts/acme/reopen', opKey)).status, 404, 'reopening an open account: not closed');

  const log = await readAudit(fx.client, fx.keys, { account: 'acme', limit: 10 });
  assert.equal(log.map((e) => e.action).slice(0, 2), ['account.reopen', 'account.close'], 'one entry each; the no-op close is not audited');
  for (const e of log.slice(0, 2)) {
    assert.is(e.actor, 'operator:ops');
    assert.match(e.key ?? '', /^[0-9a-f]{12}$/);
    assert.is(e.from, '127.0.0.1');
  }
});

test("a closed account's key may read, delete and erase, and stop its campaigns, but adds or changes no data", async () => {
  const key = fx.apiKeys.brisk;
  const list = await call('POST', '/v1/lists', key, { name: 'before' });
  assert.is(list.status, 201, JSON.stringify(list.json));
  const campaign = await call('POST', '/v1/campaigns', key, { from: 'a@brisk.example', subject: 's', text: 't', listId: list.json['id'] });
  assert.is(campaign.status, 201, JSON.stringify(campaign.json));
  assert.is((await call('POST', '/v1/accounts/brisk/close', opKey)).status, 200);

  // What it wrote now would outlive the deletion of its data (the closed record stays): refused.
  const writes: [string, string, unknown][] = [
    ['POST', '/v1/lists', { name: 'after' }],
    ['PATCH', `/v1/lists/${list.json['id']}`, { name: 'renamed' }],
    ['POST', '/v1/webhooks', { url: 'https://hooks.brisk.example/', events: ['*'] }],
    ['POST', '/v1/suppressions', { email: 'someone@x.example' }],
    ['POST', '/v1/campaigns', { from: 'a@brisk.example', subject: 's', text: 't', recipients: [{ email: 'new.person@x.example' }] }],
    ['POST', `/v1/campaigns/${campaign.json['id']}/schedule`, {}],
  ];
  const before = (await fx.client.keys(`${fx.keys.prefix}*`)).filter((k) => !k.includes('audit') && !k.includes('authfail')).sort();
  for (const [method, path, body] of writes) {
    const r = await call(method, path, key, body);
    assert.is(r.status, 403, `${method} ${path} → ${r.status} ${JSON.stringify(r.json)}`);
    assert.is(r.json['code'], 'SLUICE_ACCOUNT_CLOSED');
    const op = await call(method, `${path}?account=brisk`, opKey, body);
    assert.is(op.status, 403, `an operator acting on it too: ${method} ${path} → ${op.status}`);
  }
  const after = (await fx.client.keys(`${fx.keys.prefix}*`)).filter((k) => !k.includes('audit') && !k.includes('authfail')).sort();
  assert.equal(after, before, 'no key was written');

  assert.is((await call('GET', '/v1/lists', key)).status, 200, 'it reads');
  assert.is((await call('GET', `/v1/recipients/${encodeURIComponent('r@x.example')}/export`, key)).status, 200, 'it exports');
  assert.is((await call('POST', `/v1/campaigns/${campaign.json['id']}/cancel`, key, {})).status, 200, 'it stops its campaigns');
  assert.is((await call('DELETE', `/v1/lists/${list.json['id']}`, key)).status, 200, 'it deletes');
  assert.is((await call('DELETE', `/v1/recipients/${encodeURIComponent('r@x.example')}`, key)).status, 200, 'it erases');
  assert.is((await call('POST', '/v1/accounts/brisk/reopen', opKey)).status, 200);
  assert.is((await call('POST', '/v1/lists', key, { name: 'after' })).status, 201, 'reopened: it writes again');
});

test('suppression and webhook changes are audited with the key id and no address or secret', async () => {
  await call('POST', '/v1/suppressions', fx.apiKeys.acme, { email: 'Private.Person@x.example' });
  await call('DELETE', `/v1/suppressions/${encodeURIComponent('private.person@x.example')}`, fx.apiKeys.acme);
  const hook = await call('POST', '/v1/webhooks', fx.apiKeys.acme, { url: 'https://hooks.acme.example/', events: ['*'] });
  await call('DELETE', `/v1/webhooks/${hook.json['id']}`, fx.apiKeys.acme);
  await call('GET', '/v1/suppressions', fx.apiKeys.acme); // a read: not audited

  const entries = await call('GET', '/v1/audit?account=acme&limit=4', opKey);
  assert.equal(entries.json['entries'].map((e: { action: string }) => e.action), ['webhook.delete', 'webhook.create', 'suppression.remove', 'suppression.add']);
  const [del, , rm, add] = entries.json['entries'];
  assert.is(del.target, hook.json['id']);
  assert.is(add.actor, 'account:acme');
  assert.match(add.target, /^hmac:[0-9a-f]{16}$/);
  assert.is(add.target, rm.target, 'the same address gives the same reference');
  // Keyed: a plain hash of the address (what a dictionary attack would compute) does not match it.
  const plain = createHash('sha256').update('private.person@x.example').digest('hex').slice(0, 16);
  assert.is.not(add.target, `hmac:${plain}`);
  assert.is(add.target, `hmac:${createHmac('sha256', Buffer.from((await fx.client.get(fx.keys.privacyKey())) as string, 'base64')).update('private.person@x.example').digest('hex').slice(0, 16)}`, 'HMAC under the deployment key');
  const raw = JSON.stringify(await fx.client.xrange(fx.keys.audit(), '-', '+'));
  for (const secret of ['private.person', hook.json['secret'], fx.apiKeys.acme, opKey]) assert.not.ok(raw.toLowerCase().includes(String(secret).toLowerCase()), `audit log holds no ${String(secret).slice(0, 8)}…`);
});

test('sluice account close / status / reopen and sluice audit, from the command line', async () => {
  const close = await sluice(['account', 'close', 'other', '--config', cfgFile]);
  assert.is(close.code, 0, close.err);
  assert.match(close.out, /closed other: sending stopped; its data is deleted after /);
  assert.ok(await closedRecord(fx.client, fx.keys, 'other'));
  const refused = await call('POST', '/v1/messages', fx.apiKeys.other, { ...MESSAGE, from: 'a@other.example' });
  assert.is(refused.json['code'], 'SLUICE_ACCOUNT_CLOSED', 'a close from the CLI stops the API');
  const status = await sluice(['account', 'status', 'other', '--json', '--config', cfgFile]);
  assert.is(JSON.parse(status.out).state, 'closed');
  assert.is((await sluice(['account', 'close', 'nobody', '--config', cfgFile])).code, 1);
  const reopen = await sluice(['account', 'reopen', 'other', '--config', cfgFile]);
  assert.is(reopen.code, 0, reopen.err);
  assert.is((await sluice(['account', 'reopen', 'other', '--config', cfgFile])).code, 1, 'not closed any more');
  await sluice(['suppression', 'add', '--account', 'other', 'x@y.example', '--config', cfgFile]);

  const audit = await sluice(['audit', '--account', 'other', '--limit', '3', '--json', '--config', cfgFile]);
  assert.is(audit.code, 0, audit.err);
  const rows = audit.out.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rows.map((r) => r.action), ['suppression.add', 'account.reopen', 'account.close']);
  for (const r of rows) {
    assert.match(r.actor, /^cli/);
    assert.is(r.from, 'cli');
  }
  const text = await sluice(['audit', '--limit', '1', '--config', cfgFile]);
  assert.match(text.out, /suppression\.add\tother\thmac:/);
});

test("an operator's pause of a sender (sluice sender pause) is not the account's to lift: its key gets 403, or the guard's pauses only; an operator's key lifts it", async () => {
  const opts = { now: Date.now(), eventsMaxLen: 1000 };
  const paused = await sluice(['sender', 'pause', '--account', 'acme', '--reason', 'abuse report 42 under review', '--config', cfgFile]);
  assert.is(paused.code, 0, paused.err);
  assert.match(paused.out, 'paused acme (the whole account)');
  const rec = await isPaused(fx.client, fx.keys, 'acme', 'acme.example');
  assert.equal([rec?.reason, rec?.note, rec?.by?.startsWith('cli')], ['operator', 'abuse report 42 under review', true]);
  const st = await call('GET', '/v1/sender', fx.apiKeys.acme);
  assert.equal(st.json['paused'].map((p: Record<string, unknown>) => [p['domain'], p['reason'], p['note']]), [[null, 'operator', 'abuse report 42 under review']]);

  const refused = await call('POST', '/v1/sender/resume', fx.apiKeys.acme, {});
  assert.is(refused.status, 403);
  assert.is(refused.json['code'], 'SLUICE_SENDER_PAUSED_BY_OPERATOR');
  assert.is((await isPaused(fx.client, fx.keys, 'acme', null))?.reason, 'operator', 'still paused');

  // A guard's pause beside it is the account's to lift; the operator's stays.
  await pauseSender(fx.client, fx.keys, 'acme', 'acme.example', 'complaints', figuresOf(1000, 0, 9), { threshold: 0.003, windowHours: 24 }, opts);
  const partly = await call('POST', '/v1/sender/resume', fx.apiKeys.acme, {});
  assert.is(partly.status, 200);
  assert.equal([partly.json['resumed'], partly.json['keptByOperator']], [['acme.example'], [null]]);

  const lifted = await call('POST', '/v1/sender/resume?account=acme', opKey, {});
  assert.is(lifted.status, 200, JSON.stringify(lifted.json));
  assert.equal(lifted.json['resumed'], [null]);
  assert.is(await isPaused(fx.client, fx.keys, 'acme', null), null);

  // Over the API: an operator's key pauses (one domain here), an account's key may not.
  assert.is((await call('POST', '/v1/sender/pause', fx.apiKeys.acme, { reason: 'self' })).status, 403);
  assert.is(await isPaused(fx.client, fx.keys, 'acme', 'acme.example'), null);
  const byApi = await call('POST', '/v1/sender/pause?account=acme', opKey, { domain: 'ACME.example', reason: 'ticket 7' });
  assert.is(byApi.status, 200, JSON.stringify(byApi.json));
  assert.equal([byApi.json['paused'].domain, byApi.json['paused'].reason, byApi.json['paused'].by, byApi.json['paused'].note], ['acme.example', 'operator', 'operator:ops', 'ticket 7']);
  assert.is((await call('POST', '/v1/sender/pause?account=acme', opKey, { domain: 'not a domain' })).status, 400);
  assert.is((await call('POST', '/v1/sender/resume', fx.apiKeys.acme, { domain: 'acme.example' })).status, 403);
  assert.is((await call('POST', '/v1/sender/resume?account=acme', opKey, { domain: 'acme.example' })).status, 200);
  const [audit] = await readAudit(fx.client, fx.keys, { limit: 1 });
  assert.equal([audit?.action, audit?.account], ['sender.resume', 'acme']);
  const events = (await fx.client.xrange(fx.keys.events(), '-', '+')).map(([, f]) => f.join(' '));
  assert.ok(events.some((e) => /sender_paused .*reason operator .*note abuse report 42 under review/.test(e)), 'a sender_paused event with the reason and note');
});

test('holds over the API (operator keys only): POST places one (a domain or a configured rule, for a while), GET lists them, DELETE releases and makes the destination due; bad input named; audited', async () => {
  assert.is((await call('GET', '/v1/holds', fx.apiKeys.acme)).status, 403, 'not for an account key');
  const placed = await call('POST', '/v1/holds', opKey, { domain: 'Blocked.Example', for: '2h', reason: 'S3150 listing' });
  assert.is(placed.status, 201, JSON.stringify(placed.json));
  assert.equal([placed.json['hold'].kind, placed.json['hold'].name, placed.json['hold'].reason, placed.json['hold'].by], ['domain', 'blocked.example', 'S3150 listing', 'operator:ops']);
  const until = Date.parse(placed.json['hold'].until);
  assert.ok(Math.abs(until - (Date.now() + 7_200_000)) < 10_000, 'for 2h');
  const rule = await call('POST', '/v1/holds', opKey, { rule: 'default' });
  assert.is(rule.status, 201);
  const list = await call('GET', '/v1/holds', opKey);
  assert.equal(list.json['holds'].map((h: Record<string, unknown>) => `${h['kind']}:${h['name']}`), ['domain:blocked.example', 'rule:default']);
  assert.equal((await readHolds(fx.client, fx.keys, Date.now())).length, 2, 'as the dispatcher reads them');

  for (const [body, path] of [[{ domain: 'x.example', rule: 'default' }, 'domain'], [{ rule: 'nosuch' }, 'rule'], [{ domain: 'x.example', for: 'soon' }, 'for'], [{ domain: 'x.example', colour: 'red' }, 'colour']] as const) {
    const bad = await call('POST', '/v1/holds', opKey, body);
    assert.is(bad.status, 400, JSON.stringify(body));
    assert.is(bad.json['errors'][0].path, path);
  }

  const sched = fx.keys.schedule(shardOf('blocked.example', fx.config.redis.scheduleShards));
  await fx.client.zadd(sched, Date.now() + 3_600_000, 'blocked.example');
  const released = await call('DELETE', '/v1/holds/domain/blocked.example', opKey);
  assert.is(released.status, 200, JSON.stringify(released.json));
  assert.is(released.json['released'].name, 'blocked.example');
  assert.ok(Number(await fx.client.zscore(sched, 'blocked.example')) <= Date.now(), 'due at once');
  assert.is((await call('DELETE', '/v1/holds/domain/blocked.example', opKey)).status, 404);
  assert.is((await call('DELETE', '/v1/holds/rule/default', opKey)).status, 200);
  assert.equal((await call('GET', '/v1/holds', opKey)).json['holds'], []);
  const [entry] = await readAudit(fx.client, fx.keys, { limit: 1 });
  assert.equal([entry?.action, entry?.target, entry?.actor], ['queue.release', 'rule:default', 'operator:ops']);
});

test('the queue over the API (operator keys only): GET /v1/queue as sluice queue --json, GET /v1/queue/:domain as sluice queue list (audited: it shows addresses)', async () => {
  const sent = await call('POST', '/v1/messages', fx.apiKeys.acme, { ...MESSAGE, to: 'reader@queued.example' });
  assert.is(sent.status, 202, JSON.stringify(sent.json));
  assert.is((await call('GET', '/v1/queue', fx.apiKeys.acme)).status, 403);
  const all = await call('GET', '/v1/queue?limit=1000', opKey);
  assert.is(all.status, 200);
  const row = all.json['destinations'].find((d: Record<string, unknown>) => d['domain'] === 'queued.example');
  assert.equal([row?.ready, row?.rule, row?.held], [1, 'default', null]);
  const one = await call('GET', '/v1/queue/Queued.Example', opKey);
  assert.is(one.status, 200, JSON.stringify(one.json));
  const d = one.json['destination'];
  assert.equal([d.domain, d.waiting, d.sending], ['queued.example', 1, 0]);
  assert.equal(d.recipients.map((r: Record<string, unknown>) => [r['msgId'], r['state'], r['account'], r['from'], r['to']]), [[sent.json['id'], 'queued', 'acme', 'a@acme.example', 'reader@queued.example']]);
  const [entry] = await readAudit(fx.client, fx.keys, { limit: 1 });
  assert.equal([entry?.action, entry?.target, entry?.actor], ['queue.list', 'queued.example', 'operator:ops']);
  assert.is((await call('GET', '/v1/queue?limit=0', opKey)).status, 400);
  assert.is((await call('POST', '/v1/queue', opKey, {})).status, 405);
});

test.run();
