/**
 * Contact lists against a real Redis: the list model (create, rename, delete, another account's id),
 * contacts by number and address, streaming CSV and NDJSON import (bad rows reported exactly,
 * duplicates merged, IDN, suppression), export round trips, imports stopped midway, and a
 * 50,000-row import in constant memory.
 */
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { RedisClient } from '../../src/redis/client.js';
import type { Keys } from '../../src/redis/keys.js';
import {
  createList, deleteContact, deleteList, findContact, getList, listLists, patchContact, readContactRange, readContacts, renameList, setContactStatus, upsertContacts, MAX_FIELDS, MAX_LIST_FIELDS,
} from '../../src/store/contacts.js';
import { importContacts, ImportAborted, type ImportResult, type ListFormat } from '../../src/store/contact-import.js';
import { exportContacts } from '../../src/store/contact-export.js';
import { addSuppression, GLOBAL_LIST } from '../../src/store/suppression.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';

const test = suite('store/contacts');
let redis: TestRedis;
let client: RedisClient;
let keys: Keys;
const LIMITS = { maxBytes: 64 * 1024 * 1024, maxRows: 1_000_000 };

test.before(async () => {
  redis = await startRedis();
  client = redis.client();
});
test.before.each(() => {
  keys = redis.fresh().keys;
});
test.after(async () => {
  await redis.stop();
});

function chunks(text: string | Buffer, size = 7): Buffer[] {
  const b = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size));
  return out;
}

async function importText(listId: string, format: ListFormat, text: string | Buffer, limits = LIMITS, account = 'acme'): Promise<ImportResult> {
  return importContacts(client, keys, account, listId, Readable.from(chunks(text)), { format, limits });
}

async function exportText(listId: string, format: ListFormat): Promise<string> {
  let out = '';
  for await (const chunk of exportContacts(client, keys, listId, format, 3)) out += chunk;
  return out;
}

/** count, the contacts hash and the address index agree, and the status counters add up. */
async function assertConsistent(listId: string): Promise<number> {
  const list = await getList(client, keys, 'acme', listId);
  assert.ok(list, 'the list exists');
  const [contacts, emails] = await Promise.all([client.hlen(keys.listContacts(listId)), client.hlen(keys.listEmails(listId))]);
  assert.is(contacts, list.count, 'count = contacts');
  assert.is(emails, list.count, 'count = indexed addresses');
  const byStatus = Object.values(list.statuses).reduce((a, b) => a + b, 0);
  assert.is(byStatus, list.count, 'status counters add up to count');
  return list.count;
}

test('lists: create, get, list, rename, delete; another account sees none of them', async () => {
  const a = await createList(client, keys, 'acme', '  Newsletter  ', 1_700_000_000_000);
  const b = await createList(client, keys, 'acme', 'Customers');
  assert.is(a.name, 'Newsletter', 'trimmed');
  assert.equal({ count: a.count, created: a.created, account: a.account }, { count: 0, created: 1_700_000_000_000, account: 'acme' });
  assert.equal((await listLists(client, keys, 'acme')).map((l) => l.id), [a.id, b.id], 'oldest first');
  assert.is(await getList(client, keys, 'other', a.id), null);
  assert.equal(await listLists(client, keys, 'other'), []);
  assert.is(await renameList(client, keys, 'other', a.id, 'Hijacked'), null);
  assert.is(await deleteList(client, keys, 'other', a.id), false);
  assert.is((await getList(client, keys, 'acme', a.id))?.name, 'Newsletter', 'untouched by the other account');
  assert.is((await renameList(client, keys, 'acme', a.id, 'Weekly'))?.name, 'Weekly');
  try {
    await createList(client, keys, 'acme', '   ');
    assert.unreachable('an empty name is refused');
  } catch (err) {
    assert.is((err as { code: string }).code, 'SLUICE_INGRESS_BAD_REQUEST');
  }
  await upsertContacts(client, keys, 'acme', a.id, [{ email: 'x@example.com', fields: {} }], 1);
  assert.ok(await deleteList(client, keys, 'acme', a.id));
  assert.is(await getList(client, keys, 'acme', a.id), null);
  assert.is(await client.exists(keys.listMeta(a.id), keys.listContacts(a.id), keys.listEmails(a.id), keys.listFields(a.id)), 0, 'every key unlinked');
  assert.equal((await listLists(client, keys, 'acme')).map((l) => l.id), [b.id]);
  assert.is(await renameList(client, keys, 'acme', a.id, 'Back'), null, 'a rename after the delete does not bring it back');
  assert.is(await client.exists(keys.listMeta(a.id)), 0);
});

test('CSV import reports bad rows with their line and reason; duplicates, IDN and suppressed rows are counted', async () => {
  const list = await createList(client, keys, 'acme', 'mixed');
  await addSuppression(client, keys, 'acme', 'gone@example.com', { reason: 'unsubscribe', at: 1, evidence: {} });
  await addSuppression(client, keys, GLOBAL_LIST, 'nobody@example.org', { reason: 'hardbounce', at: 1, evidence: {} });
  const csv = [
    'Email,First Name,Plan,status', //                        1 header
    'ann@example.com,Ann,gold,', //                           2 created
    'not-an-address,Bob,silver,', //                          3 bad address
    'ANN@Example.COM,,platinum,', //                          4 duplicate of 2 (same address, other case)
    '"carl@bücher.example","Carl ""C"", Jr.",,', //           5 IDN, quoted value with a quote and comma
    'dora@example.com,Dora,gold', //                          6 three values, header has four
    '', //                                                    7 empty: skipped
    'gone@example.com,Gone,gold,', //                         8 suppressed (account list)
    'nobody@example.org,No,,subscribed', //                   9 suppressed (global list)
    'eve@example.com,Eve,bronze,maybe', //                   10 bad status
    'fred@example.com,"Fred', //                             11 multi-line value: lines 11-12
    'the second",,unsubscribed', //                          12
    'gina@example.com,Gina,gold,', //                        13
  ].join('\n');
  const r = await importText(list.id, 'csv', `${csv}\n`);
  assert.equal(r.errors, [
    { line: 3, reason: "'not-an-address' is not a valid email address" },
    { line: 6, reason: '3 values, the header has 4' },
    { line: 10, reason: "status 'maybe' is not one of subscribed, unsubscribed, bounced, complained" },
  ]);
  assert.equal(
    { imported: r.imported, created: r.created, updated: r.updated, duplicates: r.duplicates, suppressed: r.suppressed, invalid: r.invalid, lines: r.lines, complete: r.complete },
    { imported: 7, created: 6, updated: 0, duplicates: 1, suppressed: 2, invalid: 3, lines: 13, complete: true },
  );
  const ann = await findContact(client, keys, list.id, 'ann@example.com');
  assert.equal(ann?.fields, { 'First Name': 'Ann', Plan: 'platinum' }, 'merged: later wins, an empty value erases nothing');
  assert.is(ann?.status, 'subscribed');
  const carl = await findContact(client, keys, list.id, 'carl@xn--bcher-kva.example');
  assert.is(carl?.domain, 'xn--bcher-kva.example', 'IDN stored as its A-label');
  assert.equal(carl?.fields, { 'First Name': 'Carl "C", Jr.' });
  assert.is((await findContact(client, keys, list.id, 'carl@BÜCHER.example'))?.no, carl?.no, 'found by its U-label too');
  assert.is((await findContact(client, keys, list.id, 'gone@example.com'))?.status, 'unsubscribed', 'suppressed: stored out of sending');
  assert.is((await findContact(client, keys, list.id, 'nobody@example.org'))?.status, 'bounced', 'a global hard bounce overrides the row status');
  const fred = await findContact(client, keys, list.id, 'fred@example.com');
  assert.equal([fred?.fields['First Name'], fred?.status], ['Fred\nthe second', 'unsubscribed']);
  await assertConsistent(list.id);
  const l = await getList(client, keys, 'acme', list.id);
  assert.equal(l?.statuses, { subscribed: 3, unsubscribed: 2, bounced: 1, complained: 0 });
});

test('NDJSON import: nested and flat objects; bad JSON, invalid UTF-8 and wrong shapes reported by line', async () => {
  const list = await createList(client, keys, 'acme', 'nd');
  const lines = [
    Buffer.from('{"email":"a@example.com","fields":{"name":"A","age":41},"status":"subscribed"}\n'), // 1
    Buffer.from('{"email":"b@example.com","name":"B","vip":true,"nothing":null}\n'), //               2 flat
    Buffer.from('{"email":"c@example.com",\n'), //                                                   3 bad JSON
    Buffer.concat([Buffer.from('{"email":"d@example.com","name":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]), // 4 invalid UTF-8
    Buffer.from('\n'), //                                                                             5 empty
    Buffer.from('["e@example.com"]\n'), //                                                            6 not an object
    Buffer.from('{"email":"f@example.com","fields":{"x":"1"},"extra":1}\n'), //                       7 unknown key
    Buffer.from('{"email":"g@example.com","fields":{"n":{"deep":1}}}\n'), //                          8 nested value
    Buffer.from('{"name":"no address"}\n'), //                                                        9 no email
    Buffer.from('{"email":"A@example.com","fields":{"name":"A2"}}'), //                              10 duplicate, no final newline
  ];
  const r = await importText(list.id, 'ndjson', Buffer.concat(lines));
  assert.equal(r.errors.map((e) => e.line), [3, 4, 6, 7, 8, 9]);
  assert.match((r.errors[0] as { reason: string }).reason, /^not valid JSON: /);
  assert.equal(r.errors.slice(1).map((e) => e.reason), [
    'not valid UTF-8',
    'not a JSON object',
    "unknown key 'extra' beside 'fields'",
    "field 'n' is not a string, number or boolean",
    "no 'email' string",
  ]);
  assert.equal([r.imported, r.created, r.duplicates, r.invalid, r.lines], [3, 2, 1, 6, 10]);
  assert.equal((await findContact(client, keys, list.id, 'a@example.com'))?.fields, { name: 'A2', age: '41' });
  assert.equal((await findContact(client, keys, list.id, 'b@example.com'))?.fields, { name: 'B', vip: 'true' });
  await assertConsistent(list.id);
});

test('dedupe: a later import updates known contacts and never resubscribes a refusal', async () => {
  const list = await createList(client, keys, 'acme', 'dedupe');
  const first = await importText(list.id, 'csv', 'email,name,status\nx@example.com,X,\ny@example.com,Y,unsubscribed\n');
  assert.equal([first.created, first.updated, first.duplicates], [2, 0, 0]);
  const second = await importText(list.id, 'csv', 'email,city,status\nX@example.com,Oslo,\ny@example.com,Rome,subscribed\nz@example.com,Lima,\nx@example.com,Bergen,\n');
  assert.equal([second.created, second.updated, second.duplicates], [1, 2, 1]);
  const x = await findContact(client, keys, list.id, 'x@example.com');
  assert.equal([x?.email, x?.fields], ['x@example.com', { name: 'X', city: 'Bergen' }], 'fields merged across imports, later wins');
  const y = await findContact(client, keys, list.id, 'y@example.com');
  assert.equal([y?.status, y?.fields['city']], ['unsubscribed', 'Rome'], 'fields updated, the unsubscribe kept');
  assert.is(await assertConsistent(list.id), 3);
});

test('contacts by number: ranges skip holes, statuses and patches keep the counters right', async () => {
  const list = await createList(client, keys, 'acme', 'numbers');
  const rows = Array.from({ length: 5 }, (_, i) => ({ email: `n${i + 1}@example.com`, fields: { i: String(i + 1) } }));
  const out = await upsertContacts(client, keys, 'acme', list.id, rows, 1000);
  assert.equal(out.map((o) => (o.ok ? o.no : 0)), [1, 2, 3, 4, 5]);
  assert.ok(await deleteContact(client, keys, 'acme', list.id, 'n3@example.com'));
  assert.is(await deleteContact(client, keys, 'other', list.id, 'n4@example.com'), null, "another account's list");
  const page = await readContactRange(client, keys, list.id, 2, 3);
  assert.equal([page.contacts.map((c) => c.no), page.next], [[2, 4], 5]);
  assert.equal((await readContactRange(client, keys, list.id, 5, 3)).next, null, 'past the end');
  assert.equal((await readContacts(client, keys, list.id, [1, 3, 9])).map((c) => c?.email ?? null), ['n1@example.com', null, null]);
  assert.ok(await setContactStatus(client, keys, list.id, 2, 'complained', 2000));
  assert.is(await setContactStatus(client, keys, list.id, 3, 'bounced', 2000), false, 'a deleted contact');
  const n2 = (await readContacts(client, keys, list.id, [2]))[0];
  assert.equal([n2?.status, n2?.updated], ['complained', 2000]);
  const patched = await patchContact(client, keys, 'acme', list.id, 'N1@EXAMPLE.COM', { fields: { i: null, city: 'Oslo' }, status: 'unsubscribed' });
  assert.equal([patched?.fields, patched?.status], [{ city: 'Oslo' }, 'unsubscribed']);
  await addSuppression(client, keys, 'acme', 'n1@example.com', { reason: 'unsubscribe', at: 1, evidence: {} });
  try {
    await patchContact(client, keys, 'acme', list.id, 'n1@example.com', { status: 'subscribed' });
    assert.unreachable('a suppressed address is not resubscribed');
  } catch (err) {
    assert.is((err as { code: string }).code, 'SLUICE_LIST_CONTACT_SUPPRESSED');
  }
  assert.is(await assertConsistent(list.id), 4);
  assert.equal((await getList(client, keys, 'acme', list.id))?.statuses, { subscribed: 2, unsubscribed: 1, bounced: 0, complained: 1 });
  // the new field is an export column
  assert.match((await exportText(list.id, 'csv')).split('\r\n')[0] as string, /^email,status,i,city$/);
});

test(`a contact never gets more than ${MAX_FIELDS} fields: not by an import merging new fields, not by a patch`, async () => {
  const list = await createList(client, keys, 'acme', 'bounded');
  const named = (prefix: string, n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`${prefix}${i}`, 'v']));
  await upsertContacts(client, keys, 'acme', list.id, [{ email: 'ann@example.com', fields: named('a', 60) }], 1000);
  // Line 2 would give Ann 120 fields; line 3, 100 (40 new): only line 2 is refused, and nothing of it is written.
  const rows = [{ email: 'ann@example.com', ...named('b', 60) }, { email: 'ann@example.com', ...named('c', 40) }];
  const r = await importText(list.id, 'ndjson', rows.map((o) => JSON.stringify(o)).join('\n'));
  assert.equal([r.imported, r.invalid, r.errors], [1, 1, [{ line: 1, reason: `the contact would have more than ${MAX_FIELDS} fields (with those it has)` }]]);
  const ann = await findContact(client, keys, list.id, 'ann@example.com');
  assert.is(Object.keys(ann?.fields ?? {}).length, MAX_FIELDS);
  assert.not.ok(Object.keys(ann?.fields ?? {}).some((k) => k.startsWith('b')), 'the refused row wrote nothing');
  const refused = async (fields: Record<string, string | null>, why: string) => {
    try {
      await patchContact(client, keys, 'acme', list.id, 'ann@example.com', { fields, status: 'unsubscribed' });
      assert.unreachable(why);
    } catch (err) {
      assert.is((err as { code: string }).code, 'SLUICE_INGRESS_BAD_REQUEST', why);
    }
  };
  await refused({ d0: 'x' }, 'one more field than the bound');
  await refused(named('e', MAX_FIELDS + 1), 'a patch of more fields than the bound');
  const unchanged = await findContact(client, keys, list.id, 'ann@example.com');
  assert.equal([Object.keys(unchanged?.fields ?? {}).length, unchanged?.status], [MAX_FIELDS, 'subscribed'], 'a refused patch changes nothing, status included');
  // Removing one makes room for another.
  const swapped = await patchContact(client, keys, 'acme', list.id, 'ann@example.com', { fields: { a0: null, d0: 'x' } });
  assert.equal([Object.keys(swapped?.fields ?? {}).length, swapped?.fields['d0']], [MAX_FIELDS, 'x']);
  assert.is(await assertConsistent(list.id), 1);
});

for (const format of ['csv', 'ndjson'] as const) {
  test(`export round-trips an import (${format})`, async () => {
    const list = await createList(client, keys, 'acme', 'source');
    const input = [
      'email,name,note,status',
      'ann@example.com,Ann,"likes ""quotes"", commas",',
      'bo@bücher.example,Bö,"two\nlines",unsubscribed',
      'cy@example.com,,only status,complained',
      'dee@example.com,Dee,,',
    ].join('\r\n');
    await importText(list.id, 'csv', input);
    await deleteContact(client, keys, 'acme', list.id, 'cy@example.com');
    await importText(list.id, 'csv', 'email,name\ncy@example.com,Cy\n');
    const exported = await exportText(list.id, format);
    const copy = await createList(client, keys, 'acme', 'copy');
    const r = await importText(copy.id, format, exported);
    assert.equal([r.invalid, r.created], [0, 4], JSON.stringify(r.errors));
    const again = await exportText(copy.id, format);
    const stable = (text: string) => text.replace(/"(created|updated)":"[^"]+"/g, '"$1":"-"');
    assert.is(stable(again), stable(exported), 'the copy exports the same');
    const [orig, copied] = await Promise.all([readContactRange(client, keys, list.id, 1, 10), readContactRange(client, keys, copy.id, 1, 10)]);
    const shape = (cs: { email: string; status: string; fields: object }[]) => cs.map((c) => ({ email: c.email, status: c.status, fields: c.fields })).sort((a, b) => a.email.localeCompare(b.email));
    assert.equal(shape(copied.contacts), shape(orig.contacts));
    if (format === 'csv') assert.match(exported, /^email,status,name,note\r\n/);
  });
}

test(`a list has at most ${MAX_LIST_FIELDS} field names: rows and patches that would add more are refused, known names still go in`, async () => {
  const list = await createList(client, keys, 'acme', 'names bound');
  const per = MAX_FIELDS;
  const rows = Array.from({ length: MAX_LIST_FIELDS / per }, (_, r) => JSON.stringify({ email: `r${r}@example.com`, ...Object.fromEntries(Array.from({ length: per }, (_, i) => [`f${r * per + i}`, 'v'])) }));
  rows.push(JSON.stringify({ email: 'late@example.com', f0: 'v', fresh: 'v' }), JSON.stringify({ email: 'known@example.com', f0: 'v', f999: 'v' }));
  const r = await importText(list.id, 'ndjson', rows.join('\n'));
  assert.equal([r.imported, r.errors], [rows.length - 1, [{ line: rows.length - 1, reason: `the list would have more than ${MAX_LIST_FIELDS} field names` }]]);
  assert.is(await client.hlen(keys.listFields(list.id)), MAX_LIST_FIELDS);
  assert.is(await findContact(client, keys, list.id, 'late@example.com'), null, 'nothing of the refused row is written');
  try {
    await patchContact(client, keys, 'acme', list.id, 'known@example.com', { fields: { another: 'v' } });
    assert.unreachable('a patch adding a name');
  } catch (err) {
    assert.is((err as { code: string }).code, 'SLUICE_INGRESS_BAD_REQUEST');
  }
  assert.equal((await patchContact(client, keys, 'acme', list.id, 'known@example.com', { fields: { f5: 'w' } }))?.fields, { f0: 'v', f999: 'v', f5: 'w' });
  assert.is((await exportText(list.id, 'csv')).split('\r\n')[0]?.split(',').length, 2 + MAX_LIST_FIELDS);
  assert.is(await assertConsistent(list.id), rows.length - 1);
});

test('field names that differ only in case are two fields in both formats, so a CSV export of them imports back; a name with outer spaces is refused', async () => {
  const list = await createList(client, keys, 'acme', 'names');
  const r = await importText(list.id, 'ndjson', ['{"email":"ann@example.com","Name":"Ann","name":"ann"}', '{"email":"bo@example.com"," city":"Oslo","city":"Rome"}'].join('\n'));
  assert.equal([r.imported, r.errors], [1, [{ line: 2, reason: "field name ' city' begins or ends with spaces" }]]);
  const csv = await exportText(list.id, 'csv');
  assert.is(csv.split('\r\n')[0], 'email,status,Name,name');
  const copy = await createList(client, keys, 'acme', 'names copy');
  const back = await importText(copy.id, 'csv', csv);
  assert.equal([back.imported, back.invalid], [1, 0]);
  assert.equal((await findContact(client, keys, copy.id, 'ann@example.com'))?.fields, { Name: 'Ann', name: 'ann' });
  try {
    await importText(copy.id, 'csv', 'email,name,name\nann@example.com,a,b\n');
    assert.unreachable('a column named twice');
  } catch (err) {
    assert.match((err as Error).message, "column 'name' appears twice");
  }
});

test('an import over the byte limit stops midway: whole batches written, the result says how far', async () => {
  const list = await createList(client, keys, 'acme', 'limit');
  const body = `email,n\n${Array.from({ length: 400 }, (_, i) => `u${i + 2}@example.com,${i + 2}`).join('\n')}\n`;
  try {
    await importContacts(client, keys, 'acme', list.id, Readable.from(chunks(body, 64)), { format: 'csv', limits: { maxBytes: 4000, maxRows: 1000 }, batchSize: 50 });
    assert.unreachable('the limit stops it');
  } catch (err) {
    assert.instance(err, ImportAborted);
    const e = err as ImportAborted;
    assert.is(e.code, 'SLUICE_LIST_IMPORT_TOO_LARGE');
    assert.is(e.http, 413);
    assert.is(e.result.complete, false);
    assert.ok(e.result.lines > 100 && e.result.lines < 401, `stopped midway at line ${e.result.lines}`);
    assert.is(e.result.imported, e.result.lines - 1, 'every data row up to `lines` is written');
    assert.is(await assertConsistent(list.id), e.result.lines - 1);
    const last = await findContact(client, keys, list.id, `u${e.result.lines}@example.com`);
    assert.ok(last, 'the row on the last line reported is there');
    assert.is(await findContact(client, keys, list.id, `u${e.result.lines + 1}@example.com`), null, 'the next one is not');
    assert.is((e.toJSON() as { result?: ImportResult }).result?.lines, e.result.lines, 'the HTTP body carries the progress');
  }
});

test('a row limit, an unclosed quote and a deleted list stop an import with a clear error', async () => {
  const list = await createList(client, keys, 'acme', 'stops');
  const rows = (n: number) => Array.from({ length: n }, (_, i) => `r${i}@example.com`).join('\n');
  const tooMany = await importContacts(client, keys, 'acme', list.id, Readable.from([`email\n${rows(30)}\n`]), { format: 'csv', limits: { maxBytes: 1e6, maxRows: 25 }, batchSize: 10 }).catch((e: ImportAborted) => e);
  assert.instance(tooMany, ImportAborted);
  assert.equal([(tooMany as ImportAborted).code, (tooMany as ImportAborted).result.imported, (tooMany as ImportAborted).result.lines], ['SLUICE_LIST_IMPORT_TOO_LARGE', 25, 26]);

  // An unclosed quote swallows the rest of the file until the record size limit.
  const open = `email,name\nok@example.com,Ok\nbad@example.com,"never closed\n${'x@example.com,filler\n'.repeat(10_000)}`;
  const unclosed = await importText(list.id, 'csv', open).catch((e: ImportAborted) => e);
  assert.instance(unclosed, ImportAborted);
  assert.is((unclosed as ImportAborted).code, 'SLUICE_LIST_IMPORT_BAD_FORMAT');
  assert.match((unclosed as ImportAborted).message, /^line \d+: a record longer than/);
  assert.ok(await findContact(client, keys, list.id, 'ok@example.com'), 'the rows before it are written');

  const header = await importText(list.id, 'csv', 'mail,name\na@example.com,A\n').catch((e: ImportAborted) => e);
  assert.equal([(header as ImportAborted).code, (header as ImportAborted).message], ['SLUICE_LIST_IMPORT_BAD_FORMAT', "line 1 (the header): no 'email' column"]);
  const latin1 = await importText(list.id, 'csv', Buffer.from('email,name\nz@example.com,Zoë\n', 'latin1'));
  assert.equal(latin1.errors, [{ line: 2, reason: 'not valid UTF-8' }], 'a Latin-1 row is reported, not imported garbled');

  const doomed = await createList(client, keys, 'acme', 'doomed');
  async function* slow() {
    yield 'email\n';
    for (let i = 0; i < 50; i++) {
      yield `d${i}@example.com\n`;
      if (i === 20) await deleteList(client, keys, 'acme', doomed.id);
    }
  }
  const gone = await importContacts(client, keys, 'acme', doomed.id, slow(), { format: 'csv', limits: LIMITS, batchSize: 5 }).catch((e: ImportAborted) => e);
  assert.instance(gone, ImportAborted);
  assert.is((gone as ImportAborted).code, 'SLUICE_LIST_NOT_FOUND');
  assert.is(await client.exists(keys.listMeta(doomed.id), keys.listContacts(doomed.id)), 0, 'the import did not bring the list back');
  const unknown: unknown = await importText('0000000000000000', 'csv', 'email\na@example.com\n').catch((e: Error) => e);
  assert.is((unknown as { code: string }).code, 'SLUICE_LIST_NOT_FOUND');
  const foreign: unknown = await importText(list.id, 'csv', 'email\na@example.com\n', LIMITS, 'other').catch((e: Error) => e);
  assert.is((foreign as { code: string }).code, 'SLUICE_LIST_NOT_FOUND', "another account's list is not found");
});

test('a 50,000-row import runs in constant memory: bounded read-ahead and a flat heap', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const list = await createList(client, keys, 'acme', 'big');
  const ROWS = 50_000;
  const pad = 'p'.repeat(200);
  let produced = 0; // rows handed to the importer so far
  async function* source() {
    yield 'email,first,pad\n';
    for (let i = 0; i < ROWS; i += 100) {
      let chunk = '';
      for (let j = i; j < i + 100; j++) chunk += `user${j}@example.com,U${j},${pad}\n`;
      produced = i + 100;
      yield chunk;
    }
  }
  let maxAhead = 0;
  const heap: number[] = [];
  const r = await importContacts(client, keys, 'acme', list.id, source(), {
    format: 'csv',
    limits: LIMITS,
    onProgress: (p) => {
      maxAhead = Math.max(maxAhead, produced - p.imported);
      if (p.imported % 10_000 === 0) {
        gc();
        heap.push(process.memoryUsage().heapUsed);
      }
    },
  });
  assert.equal([r.imported, r.created, r.invalid, r.complete], [ROWS, ROWS, 0, true]);
  // The file is 50,000 × ~230 B = 11 MB. Reading ahead of the writes is bounded by stream buffers
  // (a batch plus the parser's and the generator's few chunks), whatever the file's size.
  assert.ok(maxAhead < 3_000, `read at most a few batches ahead of Redis (${maxAhead} rows)`);
  assert.ok(heap.length >= 4, `heap sampled ${heap.length} times`);
  const growth = (heap[heap.length - 1] as number) - (heap[0] as number);
  assert.ok(growth < 8 * 1024 * 1024, `heap after GC grew ${(growth / 1048576).toFixed(1)} MB from 10k to 50k rows`);
  assert.is(await assertConsistent(list.id), ROWS);
});

test.run();
