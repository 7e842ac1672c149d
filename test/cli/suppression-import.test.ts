/**
 * `sluice suppression import` over a real Redis: CSV exports of another service (an address column
 * by any of its names, a reason read leniently, other columns ignored), NDJSON, plain text from
 * stdin; existing entries kept, repeats counted once, invalid rows reported by line, a file of
 * several batches, the global list, a broken file stopping with what it read written; audited.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readAudit } from '../../src/store/audit.js';
import { addSuppression, GLOBAL_LIST } from '../../src/store/suppression.js';
import type { Keys } from '../../src/redis/keys.js';
import type { RedisClient } from '../../src/redis/client.js';
import { cliAccounts, sluice, startCliRedis, type CliRedis } from './run-cli.js';

const test = suite('cli/suppression-import');

let cli: CliRedis;
let client: RedisClient;
let keys: Keys;
let cfg: string;

test.before(async () => {
  cli = await startCliRedis({ accounts: cliAccounts('acme') });
  ({ client, keys, cfg } = cli);
});

test.after(async () => {
  await cli?.stop();
});

const entry = async (list: string, address: string) => {
  const json = await client.hget(keys.suppression(list), address);
  return json === null ? null : (JSON.parse(json) as { reason: string; evidence: Record<string, string> });
};

test('a CSV export of another service: the address column by its name, reasons read leniently, other columns ignored; an existing entry kept; repeats and invalid rows counted; audited', async () => {
  await addSuppression(client, keys, 'acme', 'kept@example.com', { reason: 'complaint', at: 1, evidence: { source: 'feedback' } });
  const file = join(cli.dir, 'export.csv');
  writeFileSync(file, [
    'Email Address,Reason,Created',
    'Ann@Example.COM,unsubscribed,2024-01-02',
    'bob@example.com,Spam Report,2024-01-03',
    'cid@example.com,"550 5.1.1 <cid@example.com>: user unknown, sorry",2024-01-04',
    'not-an-address,unsubscribed,2024-01-05',
    'kept@example.com,unsubscribed,2024-01-06',
    'ann@example.com,bounce,2024-01-07',
    'dan@example.com,,2024-01-08',
    '',
  ].join('\r\n'));
  const r = await sluice(['suppression', 'import', '--account', 'acme', file, '--reason', 'hardbounce', '--config', cfg]);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, "7 rows read into account acme's list: 4 added, 2 already there (kept as they were), 1 invalid");
  assert.match(r.err, "line 5: 'not-an-address' is not an email address");
  assert.equal((await entry('acme', 'ann@example.com'))?.reason, 'unsubscribe', 'the first row of a repeated address counts');
  assert.equal((await entry('acme', 'bob@example.com'))?.reason, 'complaint');
  const cid = await entry('acme', 'cid@example.com');
  assert.is(cid?.reason, 'hardbounce', 'a reason not recognised: the default');
  assert.is(cid?.evidence['note'], '550 5.1.1 <cid@example.com>: user unknown, sorry');
  assert.is(cid?.evidence['source'], 'import');
  assert.match(cid?.evidence['by'] ?? '', /^cli/);
  assert.is((await entry('acme', 'dan@example.com'))?.reason, 'hardbounce', 'no reason: the default');
  assert.equal(await entry('acme', 'kept@example.com'), { reason: 'complaint', at: 1, evidence: { source: 'feedback' } }, 'kept as it was');
  const look = await sluice(['suppression', 'lookup', '--account', 'acme', 'ANN@example.com', '--config', cfg]);
  assert.match(look.out, "suppressed on account acme's list: unsubscribe");
  const [audit] = await readAudit(client, keys, { limit: 1 });
  assert.is(audit?.action, 'suppression.import');
  assert.is(audit?.account, 'acme');
  assert.match(audit?.target ?? '', /^4 added from /);
});

test('NDJSON (email or address, reason) and plain text from stdin with comments; --json counts', async () => {
  const file = join(cli.dir, 'list.jsonl');
  writeFileSync(file, '{"email":"eve@example.org","reason":"complaint"}\n{"address":"fay@example.org"}\nnot json\n{"name":"no address"}\n');
  const r = await sluice(['suppression', 'import', '--account', 'acme', file, '--json', '--config', cfg]);
  assert.is(r.code, 0, r.err);
  const j = JSON.parse(r.out) as { rows: number; added: number; invalid: number; errors: { line: number; reason: string }[]; stopped: string | null };
  assert.equal([j.rows, j.added, j.invalid, j.stopped], [4, 2, 2, null]);
  assert.equal(j.errors.map((e) => e.line), [3, 4]);
  assert.match(j.errors[0]!.reason, 'not valid JSON');
  assert.is((await entry('acme', 'eve@example.org'))?.reason, 'complaint');
  assert.is((await entry('acme', 'fay@example.org'))?.reason, 'manual');

  const t = await sluice(['suppression', 'import', '--global', '-', '--format', 'text', '--reason', 'hardbounce', '--config', cfg], { stdin: '# bounced at the old provider\r\ngone@example.net\r\n\r\nlost@example.net\r\n' });
  assert.is(t.code, 0, t.err);
  assert.match(t.out, '2 rows read into the global list: 2 added');
  assert.is((await entry(GLOBAL_LIST, 'gone@example.net'))?.reason, 'hardbounce');
});

test('a file of several batches is imported whole; a CSV without an address column stops at its header, exit 1', async () => {
  const file = join(cli.dir, 'big.csv');
  writeFileSync(file, `email\n${Array.from({ length: 2_500 }, (_, i) => `r${i}@big.example`).join('\n')}\n`);
  const r = await sluice(['suppression', 'import', '--account', 'acme', file, '--config', cfg]);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, '2500 rows read');
  assert.match(r.out, '2500 added');
  assert.is(await client.hexists(keys.suppression('acme'), 'r2499@big.example'), 1);

  const bad = join(cli.dir, 'bad.csv');
  writeFileSync(bad, 'name,created\nx,y\n');
  const b = await sluice(['suppression', 'import', '--account', 'acme', bad, '--config', cfg]);
  assert.is(b.code, 1);
  assert.match(b.err, "the import stopped: line 1 (the header): no address column");
});

test('usage: a file whose format cannot be told, a bad --format or --reason, --format elsewhere, an unknown account', async () => {
  for (const [argv, code, re] of [
    [['suppression', 'import', '--account', 'acme', 'list.dat'], 2, /give --format csv, ndjson or text/],
    [['suppression', 'import', '--account', 'acme', 'x.csv', '--format', 'xml'], 2, /--format must be one of csv, ndjson, text/],
    [['suppression', 'import', '--account', 'acme', 'x.csv', '--reason', 'meh'], 2, /--reason must be one of/],
    [['suppression', 'add', '--account', 'acme', 'a@b.example', '--format', 'csv'], 2, /--format is for import only/],
    [['suppression', 'import', '--account', 'nobody', 'x.csv'], 1, /no account 'nobody'/],
  ] as const) {
    const r = await sluice([...argv, '--config', cfg]);
    assert.is(r.code, code, `${argv.join(' ')}: ${r.out}${r.err}`);
    assert.match(r.err, re);
  }
});

test.run();
