/**
 * `sluice list` against a real Redis: create, import a file with bad rows (counts and lines printed),
 * a progress bar only on a terminal, export round trip, show, and another account's list.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { main } from '../../src/cli/main.js';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import { createList, findContact, getList } from '../../src/store/contacts.js';
import { readAudit } from '../../src/store/audit.js';
import { cliAccounts, sluice, startCliRedis, type CliRedis } from './run-cli.js';

const test = suite('cli/list');
let cli: CliRedis;
let client: RedisClient;
let keys: Keys;
let dir: string;
let cfg: string;

test.before(async () => {
  cli = await startCliRedis({ lists: { maxImportRows: 3000 }, accounts: cliAccounts('acme', 'other', 'many') });
  ({ client, keys, dir, cfg } = cli);
});
test.after(async () => {
  await cli?.stop();
});

async function create(name: string, account = 'acme'): Promise<string> {
  const r = await sluice(['list', 'create', name, '--account', account, '--config', cfg]);
  assert.is(r.code, 0, r.err);
  return r.out.trim();
}

test('create, import a file with bad rows, show, export and import the export again', async () => {
  const id = await create('Customers');
  assert.ok(await getList(client, keys, 'acme', id));
  const file = join(dir, 'contacts.csv');
  writeFileSync(file, 'email,first\nann@example.com,Ann\nnope,X\nbo@bücher.example,Bo\nANN@example.com,Annie\n');
  const imp = await sluice(['list', 'import', id, file, '--config', cfg]);
  assert.is(imp.code, 0, imp.err);
  assert.is(imp.out, `imported 3 rows into list ${id}: created 2, updated 0, duplicates 1; suppressed 0; invalid 1; 5 lines\nline 3: 'nope' is not a valid email address\n`);
  assert.is(imp.err, '', 'no progress bar when stderr is not a terminal');
  assert.is((await findContact(client, keys, id, 'ann@example.com'))?.fields['first'], 'Annie');

  const show = await sluice(['list', 'show', id, '--json', '--config', cfg]);
  const j = JSON.parse(show.out);
  assert.equal([j.name, j.count, j.statuses.subscribed, j.fields], ['Customers', 2, 2, ['first']]);
  const all = await sluice(['list', 'show', '--account', 'acme', '--config', cfg]);
  assert.match(all.out, new RegExp(`^${id}\\t2\\t.*\\tCustomers$`, 'm'));

  for (const format of ['csv', 'ndjson']) {
    const exp = await sluice(['list', 'export', id, '--format', format, '--config', cfg]);
    assert.is(exp.code, 0, exp.err);
    const copy = await create(`copy ${format}`);
    const back = await sluice(['list', 'import', copy, '-', '--format', format, '--json', '--config', cfg], { stdin: exp.out });
    assert.is(back.code, 0, back.err);
    assert.equal([JSON.parse(back.out).created, JSON.parse(back.out).invalid], [2, 0]);
    const again = await sluice(['list', 'export', copy, '--format', format, '--config', cfg]);
    const stable = (t: string) => t.replace(/"(created|updated)":"[^"]+"/g, '');
    assert.is(stable(again.out), stable(exp.out), `${format} round trip`);
  }
});

test('a progress bar on stderr when it is a terminal; a stopped import prints how far it got and exits 1', async () => {
  const id = await create('Big');
  const rows = Array.from({ length: 3500 }, (_, i) => `p${i}@example.com`).join('\n');
  const out = new PassThrough();
  const err = Object.assign(new PassThrough(), { isTTY: true });
  let outText = '';
  let errText = '';
  out.on('data', (d: Buffer) => (outText += d.toString()));
  err.on('data', (d: Buffer) => (errText += d.toString()));
  const code = await main(['list', 'import', id, '-', '--format', 'csv', '--config', cfg], { out, err, env: {}, stdin: Readable.from([`email\n${rows}\n`]) });
  assert.is(code, 1, 'the row limit (3000) stops it');
  assert.match(errText, /\r\x1b\[Kline [\d,]+ {2}[\d,]+ lines\/s {2}imported [\d,]+ {2}invalid 0/);
  assert.match(errText, /more than 3000 rows \(lists\.maxImportRows\) \(SLUICE_LIST_IMPORT_TOO_LARGE\)/);
  assert.match(outText, new RegExp(`^stopped after 3,000 rows into list ${id}: created 3,000, .*; 3,001 lines$`, 'm'));
  assert.is((await getList(client, keys, 'acme', id))?.count, 3000);
});

test('create and import (whole or stopped) are in the audit log, as over HTTP', async () => {
  const id = await create('Audited', 'other');
  const file = join(dir, 'audited.csv');
  writeFileSync(file, 'email\nzoe@example.com\n');
  assert.is((await sluice(['list', 'import', id, file, '--config', cfg])).code, 0);
  const rows = Array.from({ length: 3500 }, (_, i) => `q${i}@example.com`).join('\n');
  writeFileSync(file, `email\n${rows}\n`);
  assert.is((await sluice(['list', 'import', id, file, '--config', cfg])).code, 1, 'stopped by the row limit, after writing rows');
  const log = await readAudit(client, keys, { account: 'other', limit: 10 });
  assert.equal(log.map((e) => [e.action, e.target, e.from]), [['list.import', id, 'cli'], ['list.import', id, 'cli'], ['list.create', id, 'cli']]);
  assert.match(log[0]!.actor, /^cli/);
});

test('show without LIST prints every list of the account, read in pages of 1000', async () => {
  const made = await Promise.all(Array.from({ length: 1500 }, (_, i) => createList(client, keys, 'many', `l${i}`)));
  const r = await sluice(['list', 'show', '--account', 'many', '--json', '--config', cfg]);
  assert.is(r.code, 0, r.err);
  const ids = r.out.trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id);
  assert.equal([...new Set(ids)].sort(), made.map((l) => l.id).sort());
});

test("another account's list is not found; usage errors exit 2", async () => {
  const id = await create('Private');
  const r = await sluice(['list', 'show', id, '--account', 'other', '--config', cfg]);
  assert.is(r.code, 1);
  assert.match(r.err, 'SLUICE_LIST_NOT_FOUND');
  assert.is((await sluice(['list', 'create', 'x', '--config', cfg])).code, 2, 'create needs --account');
  assert.is((await sluice(['list', 'import', id, 'contacts.txt', '--config', cfg])).code, 2, 'format unknown from the name');
  assert.is((await sluice(['list', 'frob', '--config', cfg])).code, 2);
  const help = await sluice(['list', '--help']);
  assert.equal([help.code, help.out.startsWith('Usage: sluice list')], [0, true]);
});

test.run();
