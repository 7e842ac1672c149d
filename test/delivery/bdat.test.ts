import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SmtpClient } from '../../src/delivery/smtp-client.js';
import { toChunk, toDataBlock } from '../../src/render/data-block.js';
import { freePort } from '../helpers/redis.js';
import { ensurePostfix, startPostfix, type PrivatePostfix } from '../helpers/postfix.js';
import { startCapturePeer, type CapturePeer } from '../helpers/smtp-peer.js';

/**
 * BDAT (RFC 3030 CHUNKING) against a real implementation: Debian's Postfix, whose smtpd offers
 * CHUNKING and PIPELINING. Sluice's client sends to Postfix with BDAT; Postfix relays each message
 * to a capture peer (with DATA: smtp-server offers no CHUNKING), so what arrived can be compared
 * byte for byte with what was sent. Nothing here imitates the server side of BDAT.
 */
const test = suite('delivery/bdat');

const DOMAIN = 'chunk.test';
const TIMEOUTS = { connectMs: 5_000, greetingMs: 10_000, commandMs: 10_000, dataBlockMs: 20_000, dataMs: 20_000 };
const available = await ensurePostfix();
let postfix: PrivatePostfix | undefined;
let peer: CapturePeer | undefined;
let setupError: unknown;

test.before(async () => {
  if (!available.ok) return;
  try {
    peer = await startCapturePeer();
    postfix = await startPostfix({ port: await freePort(), domain: 'pfx.test', routes: { [DOMAIN]: `127.0.0.1:${peer.port}` }, refuse: [`refused@${DOMAIN}`] });
  } catch (err) {
    setupError = err;
  }
});

test.after(async () => {
  await postfix?.stop();
  await peer?.close();
});

const connect = (chunking?: boolean) =>
  SmtpClient.connect({ host: '127.0.0.1', port: postfix!.port, ehloName: 'sluice.test', tls: 'none', timeouts: TIMEOUTS, ...(chunking === undefined ? {} : { chunking }) });

function message(n: number): Buffer {
  // Complete headers (Postfix's cleanup adds a missing Date), a line that starts with a dot (DATA
  // stuffs it, BDAT must not) and 8-bit text.
  return Buffer.from(`From: sender@sluice.test\r\nTo: rcpt${n}@${DOMAIN}\r\nSubject: bdat ${n}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bdat-${n}@sluice.test>\r\n\r\n.a line that starts with a dot\r\nGrüße ✓ ${n}\r\n..two dots\r\n`, 'utf8');
}

/** The captured copy of message n: Postfix prepends its Received header, the rest must be ours exactly. */
function arrived(n: number): Buffer | undefined {
  return peer!.messages.find((m) => m.envelope.to.includes(`rcpt${n}@${DOMAIN}`))?.raw;
}

const postfixTest = available.ok ? test : test.skip;
if (!available.ok) console.log(`SKIP delivery/bdat: ${available.why}`);

postfixTest('with CHUNKING and PIPELINING a message goes as BDAT in one write; Postfix relays it byte for byte, and a refused recipient leaves the session in step', async () => {
  if (setupError) throw setupError;
  const client = await connect();
  assert.ok(client.serverExtensions.has('CHUNKING'), `Postfix offers CHUNKING: ${[...client.serverExtensions].join(' ')}`);
  assert.ok(client.chunking);

  const first = await client.send({ from: 'sender@sluice.test', to: `rcpt1@${DOMAIN}` }, toChunk(message(1)));
  assert.is(first.result, 'delivered', first.response);
  assert.is(first.command, 'BDAT');

  // Refused at RCPT: the chunk that followed in the same write is read and refused too; the
  // outcome is the RCPT refusal, and the next transaction works (after RSET).
  const refused = await client.send({ from: 'sender@sluice.test', to: `refused@${DOMAIN}` }, toChunk(message(99)));
  assert.is(refused.result, 'bounced', refused.response);
  assert.is(refused.command, 'RCPT TO');
  assert.is(refused.code, 554);
  assert.ok(refused.connectionUsable);

  // A message given as it is (bare LF line ends) is made a chunk by the client itself.
  const plain = await client.send({ from: 'sender@sluice.test', to: `rcpt2@${DOMAIN}` }, Buffer.from(message(2).toString('utf8').replace(/\r\n/g, '\n'), 'utf8'));
  assert.is(plain.result, 'delivered', plain.response);
  assert.is(plain.command, 'BDAT');
  // A DATA block already framed goes with DATA, on the same session.
  const framed = await client.send({ from: 'sender@sluice.test', to: `rcpt3@${DOMAIN}` }, toDataBlock(message(3)));
  assert.is(framed.result, 'delivered', framed.response);
  assert.is(framed.command, 'DATA');
  assert.is(client.messagesSent, 3);
  await client.quit();

  await peer!.waitFor(3, 30_000).catch(() => assert.unreachable(`relayed: ${peer!.messages.length}; postfix log:\n${postfix!.log()}`));
  for (const n of [1, 2, 3]) {
    const got = arrived(n);
    assert.ok(got, `message ${n} arrived`);
    assert.ok(got!.subarray(got!.length - message(n).length).equals(message(n)), `message ${n} arrived exactly as sent:\n${got!.toString('utf8')}`);
  }
  assert.is(arrived(99), undefined, 'the refused one went nowhere');
});

postfixTest('chunking: false sends with DATA although the server offers CHUNKING', async () => {
  if (setupError) throw setupError;
  const client = await connect(false);
  assert.ok(client.serverExtensions.has('CHUNKING'));
  assert.not.ok(client.chunking);
  // Even a chunk made for BDAT goes out as a DATA block.
  const o = await client.send({ from: 'sender@sluice.test', to: `rcpt4@${DOMAIN}` }, toChunk(message(4)));
  assert.is(o.result, 'delivered', o.response);
  assert.is(o.command, 'DATA');
  await client.quit();
  await peer!.waitFor(4, 30_000);
  const got = arrived(4);
  assert.ok(got && got.subarray(got.length - message(4).length).equals(message(4)), 'arrived exactly as sent');
});

test.run();
