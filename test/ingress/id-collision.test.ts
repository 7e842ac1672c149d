import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { persistMessage } from '../../src/ingress/persist.js';
import { storeMessage } from '../../src/store/messages.js';
import { acceptMessage, type Submission } from '../../src/ingress/accept.js';
import { newId, idTime } from '../../src/core/ids.js';
import { decodeSpecRecord, encodeSpecRecord, withMessageId } from '../../src/render/spec-record.js';
import type { MessageSpec } from '../../src/render/protocol.js';
import type { Account } from '../../src/accounts/registry.js';
import { ingressFixture, type IngressFixture } from './fixture.js';

/**
 * Ids are a millisecond and 30 random bits: two processes can mint the same one. The second message
 * must neither overwrite the first (its recipients would get the other sender's mail) nor be lost.
 */
const test = suite('ingress/id-collision');
let fx: IngressFixture;
const NOW = Date.UTC(2026, 0, 15, 12);

test.before(async () => {
  fx = await ingressFixture();
});
test.after(() => fx.stop());

const first = (id: string) => ({
  id, account: 'other', source: 'smtp' as const, kind: 'raw' as const, from: 'a@other.example', fromDomain: 'other.example',
  rcpts: [{ address: 'x@gmail.com', domain: 'gmail.com' }], acceptedAt: NOW, tags: [], metadata: {},
  body: Buffer.from('Subject: first\r\n\r\nfirst\r\n'), links: ['https://other.example/first'],
});

async function snapshot(id: string) {
  return {
    meta: await fx.client.hgetall(fx.keys.msgMeta(id)),
    body: (await fx.client.getBuffer(fx.keys.msgBody(id)))?.toString(),
    links: await fx.client.lrange(fx.keys.links(id), 0, -1),
  };
}

const account = (id: string) => fx.registry.get(id) as Account;
const deps = () => ({ redis: fx.client, keys: fx.keys, config: fx.config, registry: fx.registry, logger: fx.logger, now: () => NOW });

test('persist refuses an id in use and writes nothing over the message that has it', async () => {
  const id = newId(NOW);
  assert.is((await persistMessage(fx.client, fx.keys, 4, first(id), undefined, 1000)).stored, true);
  const before = await snapshot(id);
  const second = {
    ...first(id), account: 'acme', from: 'b@acme.example', fromDomain: 'acme.example',
    rcpts: [{ address: 'y@example.org', domain: 'example.org' }], body: Buffer.from('Subject: second\r\n\r\nsecond\r\n'), links: ['https://acme.example/second'],
  };
  const events = async () => (await fx.client.xrange(fx.keys.events(), '-', '+')).filter(([, f]) => f.includes(id)).map(([, f]) => f);
  const accepted = ['type', 'accepted', 'msgId', id, 'account', 'other', 'source', 'smtp', 'recipients', '1'];
  assert.equal(await events(), [accepted]);
  assert.equal(await persistMessage(fx.client, fx.keys, 4, second, undefined, 1000), { stored: false });
  assert.equal(await snapshot(id), before);
  assert.equal(await events(), [accepted], 'no event for the refused message');
  assert.is(before.meta['account'], 'other');
  assert.equal(before.links, ['https://other.example/first']);
  assert.is(await fx.client.zcard(fx.keys.ready('example.org')), 0, 'the refused message queued nothing');
  assert.equal(await fx.client.zrange(fx.keys.ready('gmail.com'), 0, -1), [`${id}:0:0`]);
});

test("an id whose message is finished (record kept, body gone) or whose body alone exists is refused, and no body of ours stays", async () => {
  const second = (id: string) => ({ ...first(id), account: 'acme', from: 'b@acme.example', fromDomain: 'acme.example', body: Buffer.from('Subject: second\r\n\r\nsecond\r\n') });
  // Finished: the last recipient's finishRecipient deleted the body and kept the record.
  const finished = newId(NOW);
  await persistMessage(fx.client, fx.keys, 4, first(finished));
  await fx.client.del(fx.keys.msgBody(finished));
  const before = await snapshot(finished);
  assert.equal(await persistMessage(fx.client, fx.keys, 4, second(finished)), { stored: false });
  assert.equal(await storeMessage(fx.client, fx.keys, second(finished)), false, 'the cluster path too');
  assert.equal(await snapshot(finished), before);
  assert.is(before.body, undefined, 'the SET NX wrote a body for the taken id, and it was deleted again');
  // A body without a record (never written by Sluice, but possible by hand): refused, left as it was.
  const stray = newId(NOW);
  await fx.client.set(fx.keys.msgBody(stray), 'not ours');
  assert.equal(await persistMessage(fx.client, fx.keys, 4, second(stray)), { stored: false });
  assert.equal(await storeMessage(fx.client, fx.keys, second(stray)), false);
  assert.equal(await snapshot(stray), { meta: {}, body: 'not ours', links: [] });
});

test('a server that forgot its scripts (SCRIPT FLUSH): the MULTI is sent again after loading it, and writes once', async () => {
  for (const store of [(id: string) => persistMessage(fx.client, fx.keys, 4, first(id)).then((r) => r.stored), (id: string) => storeMessage(fx.client, fx.keys, first(id))]) {
    await fx.client.script('FLUSH');
    const id = newId(NOW);
    assert.is(await store(id), true);
    const s = await snapshot(id);
    assert.is(s.meta['account'], 'other');
    assert.is(s.body, 'Subject: first\r\n\r\nfirst\r\n');
    assert.equal(s.links, ['https://other.example/first']);
  }
});

test('accept takes another id for a raw message and leaves the first intact', async () => {
  const taken = newId(NOW);
  await persistMessage(fx.client, fx.keys, 4, first(taken));
  const before = await snapshot(taken);
  const sub: Submission = {
    account: account('acme'), source: 'smtp', kind: 'raw', from: 'b@acme.example', recipients: ['y@example.net'],
    body: Buffer.from('Subject: second\r\n\r\nsecond\r\n'), links: ['https://acme.example/l'], id: taken, acceptedAt: NOW,
  };
  const r = await acceptMessage(deps(), sub);
  assert.is.not(r.id, taken);
  assert.is(idTime(r.id), NOW, 'the new id keeps the acceptance time');
  assert.equal(await snapshot(taken), before);
  const now = await snapshot(r.id);
  assert.is(now.meta['account'], 'acme');
  assert.is(now.body, 'Subject: second\r\n\r\nsecond\r\n');
  assert.equal(now.links, ['https://acme.example/l']);
  assert.equal(await fx.client.zrange(fx.keys.ready('example.net'), 0, -1), [`${r.id}:0:0`]);
});

test("accept rewrites a spec's Message-ID with the new id; the html is untouched", async () => {
  const taken = newId(NOW);
  await persistMessage(fx.client, fx.keys, 4, first(taken));
  // The html names the taken id the way the header does: only the header's copy may change.
  const html = `<p>"messageId":"<${taken}@sluice.test>"</p>`;
  const spec: MessageSpec = {
    from: { address: 'news@acme.example' }, to: [{ address: 'z@example.com' }], cc: [], subject: 'Hi', html, headers: {}, attachments: [],
    messageId: `<${taken}@sluice.test>`,
  };
  const sub: Submission = {
    account: account('acme'), source: 'http', kind: 'spec', from: 'news@acme.example', recipients: ['z@example.com'],
    body: encodeSpecRecord(spec), id: taken, acceptedAt: NOW,
  };
  const r = await acceptMessage(deps(), sub);
  assert.is.not(r.id, taken);
  const stored = decodeSpecRecord((await fx.client.getBuffer(fx.keys.msgBody(r.id))) as Buffer) as MessageSpec;
  assert.is(stored.messageId, `<${r.id}@sluice.test>`);
  assert.is(stored.html, html);
  assert.is((await snapshot(taken)).meta['account'], 'other');
});

test('withMessageId: a plain JSON record (no html) too; an id of another length is refused', () => {
  const a = newId(NOW);
  const b = newId(NOW);
  const spec: MessageSpec = { from: { address: 'n@acme.example' }, to: [], cc: [], subject: 'x', text: `"messageId":"<${a}@h>"`, headers: {}, attachments: [], messageId: `<${a}@h>` };
  const plain = encodeSpecRecord(spec);
  assert.is(plain[0], 0x7b, 'no html: the whole spec is JSON');
  const out = decodeSpecRecord(withMessageId(plain, a, b)) as MessageSpec;
  assert.is(out.messageId, `<${b}@h>`);
  assert.is(out.text, `"messageId":"<${a}@h>"`);
  assert.throws(() => withMessageId(plain, a, 'short'), /length/);
});

test.run();
