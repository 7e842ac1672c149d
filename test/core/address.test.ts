import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseAddress } from '../../src/core/address.js';
import { normaliseAddress } from '../../src/store/address-digest.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { createList, upsertContacts } from '../../src/store/contacts.js';

/** One mailbox, one form: what suppression lists, contact lists and erasure digests key on. */
const test = suite('core/address');
let redis: TestRedis;
test.before(async () => {
  redis = await startRedis();
});
test.after(() => redis.stop());

test('a quoted local part that needs no quotes is the dot-atom (RFC 5321 §4.1.2); one that needs them stays quoted', () => {
  assert.is(parseAddress('"ann"@X.org')?.address, 'ann@x.org');
  assert.is(parseAddress('"a\\.b"@x.org')?.address, 'a.b@x.org');
  assert.is(parseAddress('"a b"@x.org')?.address, '"a b"@x.org');
  assert.is(parseAddress('"a..b"@x.org')?.address, '"a..b"@x.org', 'not a dot-atom unquoted');
  assert.is(parseAddress('""@x.org')?.address, '""@x.org');
  assert.is(parseAddress('a b@x.org'), undefined);
});

test('a non-ASCII local part is in NFC (RFC 6532 §3.1): the two ways of writing é are one address; one NFC makes invalid is refused', () => {
  const decomposed = 'cafe\u0301@x.org';
  const composed = 'caf\u00e9@x.org';
  assert.is(parseAddress(decomposed)?.address, composed);
  assert.is(parseAddress(composed)?.address, composed);
  // U+037E (Greek question mark) is ';' in NFC, which a local part may not hold unquoted.
  assert.is(parseAddress('a\u037eb@example.com'), undefined);
});

test('suppression and contact lookups compare in the same form: an entry made from "ann"@x or café in NFD matches ann@x and café', () => {
  assert.is(normaliseAddress(' "Ann"@X.org '), 'ann@x.org');
  assert.is(normaliseAddress('cafe\u0301@x.org'), normaliseAddress('caf\u00e9@x.org'));
  assert.is(normaliseAddress('"a b"@x.org'), '"a b"@x.org');
  assert.is(normaliseAddress('Bob@Example.org'), 'bob@example.org');
});

test('a list import of ann@x.org, "ann"@x.org and both forms of café@x.org keeps two contacts', async () => {
  const { keys } = redis.fresh();
  const client = redis.client();
  const list = await createList(client, keys, 'acme', 'forms');
  const r = await upsertContacts(client, keys, 'acme', list.id, ['ann@x.org', '"ann"@x.org', 'cafe\u0301@x.org', 'caf\u00e9@x.org'].map((email) => ({ email, fields: {} })), Date.now());
  assert.is(await client.hlen(keys.listEmails(list.id)), 2, JSON.stringify(r));
});

test.run();
