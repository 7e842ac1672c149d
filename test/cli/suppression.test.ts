/**
 * `sluice suppression` and `sluice sender` against a real Redis: add, list, look up and remove per
 * account and on the global list, one account's entries invisible to another, and paused senders'
 * status and resume.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { addSuppression, GLOBAL_LIST, suppressionOf } from '../../src/store/suppression.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { figuresOf, isPaused, pauseSender, recordOutcome } from '../../src/store/reputation.js';
import { cliAccounts, sluice, startCliRedis, type CliRedis } from './run-cli.js';

const test = suite('cli/suppression');
let cli: CliRedis;
let client: RedisClient;
let keys: Keys;
let cfg: string;

test.before(async () => {
  cli = await startCliRedis({ accounts: cliAccounts('acme', 'other') });
  ({ client, keys, cfg } = cli);
});
test.after(async () => {
  await cli?.stop();
});

test('add, lookup, list and remove on an account\'s list', async () => {
  const add = await sluice(['suppression', 'add', '--account', 'acme', 'Reader@Example.com', '--reason', 'complaint', '--config', cfg]);
  assert.is(add.code, 0, add.err);
  assert.is((await suppressionOf(client, keys, 'acme', 'reader@example.com'))?.reason, 'complaint');

  const look = await sluice(['suppression', 'lookup', '--account', 'acme', 'reader@example.com', '--json', '--config', cfg]);
  assert.is(look.code, 0, look.err);
  const j = JSON.parse(look.out);
  assert.equal({ list: j.list, reason: j.reason, suppressed: j.suppressed, evidence: j.evidence }, { list: 'account', reason: 'complaint', suppressed: true, evidence: { source: 'cli' } });

  const list = await sluice(['suppression', 'list', '--account', 'acme', '--json', '--config', cfg]);
  assert.is(list.code, 0, list.err);
  assert.equal(list.out.trim().split('\n').map((l) => JSON.parse(l).email), ['reader@example.com']);

  const rm = await sluice(['suppression', 'remove', '--account', 'acme', 'reader@example.com', '--config', cfg]);
  assert.is(rm.code, 0, rm.err);
  assert.is(await suppressionOf(client, keys, 'acme', 'reader@example.com'), null);
  const again = await sluice(['suppression', 'remove', '--account', 'acme', 'reader@example.com', '--config', cfg]);
  assert.is(again.code, 1, 'not on the list any more');
});

test("another account's entry is invisible; a global entry shows in every account's lookup", async () => {
  await sluice(['suppression', 'add', '--account', 'acme', 'mine@example.com', '--config', cfg]);
  const other = await sluice(['suppression', 'lookup', '--account', 'other', 'mine@example.com', '--config', cfg]);
  assert.is(other.code, 1);
  assert.match(other.out, /not suppressed/);
  assert.is((await sluice(['suppression', 'list', '--account', 'other', '--json', '--config', cfg])).out, '');

  await addSuppression(client, keys, GLOBAL_LIST, 'nobody@example.net', { reason: 'hardbounce', at: 1, evidence: { status: '5.1.1' } });
  const g = await sluice(['suppression', 'lookup', '--account', 'other', 'nobody@example.net', '--config', cfg]);
  assert.is(g.code, 0);
  assert.match(g.out, /global list: hardbounce .*status=5\.1\.1/);
  // An operator manages the global list with --global.
  assert.match((await sluice(['suppression', 'list', '--global', '--config', cfg])).out, /^nobody@example\.net\thardbounce\t/m);
  assert.is((await sluice(['suppression', 'remove', '--global', 'nobody@example.net', '--config', cfg])).code, 0);
  assert.is(await suppressionOf(client, keys, 'other', 'nobody@example.net'), null);
});

test('usage errors exit 2 and name the problem', async () => {
  const cases: [string[], RegExp][] = [
    [['suppression', 'add', 'a@example.com'], /--account ID and --global/],
    [['suppression', 'add', '--account', 'acme', '--global', 'a@example.com'], /--account ID and --global/],
    [['suppression', 'add', '--account', 'acme', 'not-an-address'], /not a valid email/],
    [['suppression', 'add', '--account', 'acme', 'a@example.com', '--reason', 'whim'], /--reason must be one of/],
    [['suppression', 'drop', '--account', 'acme'], /unknown subcommand/],
    [['sender', 'resume'], /needs --account/],
    [['sender', 'status', '--domain', 'x.example'], /--domain is for pause and resume/],
  ];
  for (const [argv, re] of cases) {
    const r = await sluice([...argv, '--config', cfg]);
    assert.is(r.code, 2, `${argv.join(' ')}: ${r.err}`);
    assert.match(r.err, re);
  }
});

test('sender status lists the pauses with their figures; resume lifts them', async () => {
  const opts = { now: Date.now(), eventsMaxLen: 1000 };
  await pauseSender(client, keys, 'acme', 'acme.example', 'complaints', figuresOf(1000, 0, 4), { threshold: 0.003, windowHours: 24 }, opts);
  await pauseSender(client, keys, 'other', null, 'hardbounces', figuresOf(900, 100, 0), { threshold: 0.05, windowHours: 24 }, opts);

  const st = await sluice(['sender', 'status', '--json', '--config', cfg]);
  assert.is(st.code, 0, st.err);
  const rows = st.out.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rows.map((r) => [r.account, r.domain, r.reason, r.figures.sent]).sort(), [['acme', 'acme.example', 'complaints', 1000], ['other', null, 'hardbounces', 1000]]);
  const text = await sluice(['sender', 'status', '--account', 'acme', '--config', cfg]);
  assert.match(text.out, /acme acme\.example: paused .* for complaints above 0\.30% over 24 h — sent 1000, hard bounces 0 \(0\.00%\), complaints 4 \(0\.40%\)/);

  const r = await sluice(['sender', 'resume', '--account', 'acme', '--domain', 'ACME.example', '--config', cfg]);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /resumed acme acme\.example/);
  assert.is(await isPaused(client, keys, 'acme', 'acme.example'), null);
  assert.is((await sluice(['sender', 'resume', '--account', 'acme', '--config', cfg])).code, 1, 'nothing left to resume');
  assert.is((await sluice(['sender', 'resume', '--account', 'other', '--config', cfg])).code, 0);
  assert.match((await sluice(['sender', 'status', '--config', cfg])).out, /no sender is paused/);
});

test('an account that is not in the configuration: add, sender resume and list create exit 1 naming it and write nothing; reading its list is allowed', async () => {
  for (const argv of [
    ['suppression', 'add', '--account', 'acmee', 'typo@example.com'],
    ['sender', 'resume', '--account', 'acmee'],
    ['list', 'create', 'Typo', '--account', 'acmee'],
  ]) {
    const r = await sluice([...argv, '--config', cfg]);
    assert.is(r.code, 1, `${argv.join(' ')}: ${r.out}`);
    assert.match(r.err, "no account 'acmee' in the configuration (SLUICE_ACCOUNT_UNKNOWN)");
  }
  assert.is(await suppressionOf(client, keys, 'acmee', 'typo@example.com'), null);
  assert.is((await client.keys(`${keys.prefix}*acmee*`)).length, 0, 'nothing written for it');
  assert.is((await sluice(['suppression', 'list', '--account', 'acmee', '--config', cfg])).code, 0);
});

test("sender status reads the current figures over the configured reputation.window, not the default 24 h", async () => {
  const wide = join(cli.dir, 'wide-window.yaml');
  writeFileSync(wide, YAML.stringify({ ...(YAML.parse(readFileSync(cfg, 'utf8')) as object), reputation: { window: '72h' } }));
  const now = Date.now();
  await pauseSender(client, keys, 'other', 'late.example', 'hardbounces', figuresOf(0, 1, 0), { threshold: 0.05, windowHours: 72 }, { now, eventsMaxLen: 1000 });
  // Within 72 h, not within 24.
  await recordOutcome(client, keys, { account: 'other', domain: 'late.example', kind: 'hardbounce', now: now - 30 * 3_600_000 }, 72);
  try {
    const st = await sluice(['sender', 'status', '--account', 'other', '--json', '--config', wide]);
    assert.is(st.code, 0, st.err);
    const row = JSON.parse(st.out.trim()) as { domain: string; current: { hardbounces: number } };
    assert.equal([row.domain, row.current.hardbounces], ['late.example', 1]);
  } finally {
    await sluice(['sender', 'resume', '--account', 'other', '--config', cfg]);
  }
});

test.run();
