import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SmtpClient, SmtpConnectError, type SmtpClientOptions, type SmtpOutcome } from '../../src/delivery/smtp-client.js';
import { toDataBlock } from '../../src/render/data-block.js';
import { startCapturePeer, startScriptedPeer, type PeerScript } from '../helpers/smtp-peer.js';
import { freePort } from '../helpers/redis.js';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const test = suite('delivery/smtp-client');

// Short timeouts so a stalled peer is detected quickly; loopback answers in well under a millisecond.
const options = (port: number, over: Partial<SmtpClientOptions> = {}): SmtpClientOptions => ({
  host: '127.0.0.1',
  port,
  ehloName: 'sluice.test',
  tls: 'may',
  timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataBlockMs: 2000, dataMs: 2000 },
  ...over,
});

const MESSAGE = Buffer.from(
  'From: a@sender.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nfirst line\r\n.leading dot line\r\n..two dots\r\n.\r\nlast line\r\n',
);

async function connectFails(opts: SmtpClientOptions): Promise<SmtpOutcome> {
  try {
    const c = await SmtpClient.connect(opts);
    c.close();
  } catch (err) {
    assert.instance(err, SmtpConnectError);
    return (err as SmtpConnectError).outcome;
  }
  throw new Error('connect should have failed');
}

async function scripted(script: PeerScript, body: (client: SmtpClient, peer: Awaited<ReturnType<typeof startScriptedPeer>>) => Promise<void>, over: Partial<SmtpClientOptions> = {}) {
  const peer = await startScriptedPeer(script);
  // A peer left open (connect rejected) would keep the file from ending.
  const client = await SmtpClient.connect(options(peer.port, over)).catch(async (err: unknown) => {
    await peer.close();
    throw err;
  });
  try {
    await body(client, peer);
  } finally {
    client.close();
    await peer.close();
  }
}

test('several messages on one connection, one recipient each, bytes intact (with dot lines), STARTTLS when offered', async () => {
  const peer = await startCapturePeer({ tls: true });
  const client = await SmtpClient.connect(options(peer.port));
  try {
    assert.is(client.secure, true, 'upgraded with STARTTLS');
    assert.ok(client.serverExtensions.has('PIPELINING'));
    for (let i = 0; i < 3; i++) {
      const outcome = await client.send({ from: `b-${i}@bounce.test`, to: `r${i}@example.test` }, MESSAGE);
      assert.is(outcome.result, 'delivered', outcome.response);
      assert.is(outcome.code, 250);
      assert.is(outcome.connectionUsable, true);
    }
    assert.is(client.messagesSent, 3);
    const got = await peer.waitFor(3);
    assert.is(peer.connections(), 1);
    assert.is(new Set(got.map((m) => m.sessionId)).size, 1, 'one session');
    got.forEach((m, i) => {
      assert.equal(m.envelope, { from: `b-${i}@bounce.test`, to: [`r${i}@example.test`] });
      assert.is(m.secure, true);
      assert.is(m.raw.toString(), MESSAGE.toString(), 'dot-stuffed on the wire, unstuffed by the server: identical bytes');
    });
    await client.quit();
    assert.is(client.usable, false);
  } finally {
    client.close();
    await peer.close();
  }
});

test('plain text when STARTTLS is not offered, or when opportunistic TLS is off', async () => {
  const plain = await startCapturePeer();
  const tlsPeer = await startCapturePeer({ tls: true });
  try {
    const a = await SmtpClient.connect(options(plain.port));
    assert.is(a.secure, false);
    assert.is((await a.send({ from: 'b@bounce.test', to: 'x@example.test' }, Buffer.from('Subject: x\n\nbare LF body\n'))).result, 'delivered');
    await a.quit();
    const b = await SmtpClient.connect(options(tlsPeer.port, { tls: 'none' }));
    assert.is(b.secure, false);
    await b.quit();
    const [m] = await plain.waitFor(1);
    assert.is(m?.raw.toString(), 'Subject: x\r\n\r\nbare LF body\r\n', 'bare LF sent as CRLF');
    assert.is(m?.secure, false);
  } finally {
    await plain.close();
    await tlsPeer.close();
  }
});

test('a refused recipient bounces with its enhanced code; the next transaction on the connection works', async () => {
  const peer = await startCapturePeer({ onRcpt: (to) => (to.startsWith('nobody') ? { code: 550, message: '5.1.1 No such user here' } : null) });
  const client = await SmtpClient.connect(options(peer.port));
  try {
    const bad = await client.send({ from: 'b@bounce.test', to: 'nobody@example.test' }, MESSAGE);
    assert.is(bad.result, 'bounced');
    assert.is(bad.code, 550);
    assert.is(bad.enhanced, '5.1.1');
    assert.is(bad.command, 'RCPT TO');
    assert.is(bad.connectionUsable, true);
    const good = await client.send({ from: 'b@bounce.test', to: 'someone@example.test' }, MESSAGE);
    assert.is(good.result, 'delivered', good.response);
    assert.is((await peer.waitFor(1)).length, 1);
    assert.is(peer.connections(), 1);
  } finally {
    await client.quit();
    await peer.close();
  }
});

test('scripted 550 5.1.1 on RCPT → bounced; 451 → deferred; RSET precedes the next transaction', async () => {
  await scripted({ on: { RCPT: ['550 5.1.1 <x@example.test>: Recipient address rejected: User unknown', '451 4.3.0 try later', '250 ok'] } }, async (client, peer) => {
    const first = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE);
    assert.equal([first.result, first.code, first.enhanced, first.command, first.throttled], ['bounced', 550, '5.1.1', 'RCPT TO', false]);
    const second = await client.send({ from: 'b@bounce.test', to: 'y@example.test' }, MESSAGE);
    assert.equal([second.result, second.code, second.enhanced, second.connectionUsable], ['deferred', 451, '4.3.0', true]);
    const third = await client.send({ from: 'b@bounce.test', to: 'z@example.test' }, MESSAGE);
    assert.is(third.result, 'delivered');
    const verbs = peer.commands.map((c) => c.split(/[ :]/)[0]);
    assert.equal(verbs, ['EHLO', 'MAIL', 'RCPT', 'RSET', 'MAIL', 'RCPT', 'RSET', 'MAIL', 'RCPT', 'DATA']);
    assert.is(peer.messages[0]?.toString(), MESSAGE.toString().replace(/\r\n\./g, '\r\n..'), 'dot-stuffed on the wire');
  });
});

test('421 → deferred, throttled, connection unusable; later sends are deferred without I/O', async () => {
  await scripted({ on: { MAIL: { reply: '421 4.7.0 Too many messages, slow down', then: 'drop' } } }, async (client) => {
    const o = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE);
    assert.equal([o.result, o.code, o.command, o.throttled, o.connectionUsable], ['deferred', 421, 'MAIL FROM', true, false]);
    assert.is(client.usable, false);
    const again = await client.send({ from: 'b@bounce.test', to: 'y@example.test' }, MESSAGE);
    assert.equal([again.result, again.code, again.connectionUsable], ['deferred', null, false]);
  });
});

test('pipelined MAIL/RCPT/DATA: a refused RCPT with a 354 anyway gets an empty message and RSET', async () => {
  await scripted({ ehlo: ['PIPELINING', 'SIZE 100000'], on: { RCPT: ['550 5.1.1 unknown', '250 ok'] } }, async (client, peer) => {
    const o = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE);
    assert.equal([o.result, o.enhanced, o.command, o.connectionUsable], ['bounced', '5.1.1', 'RCPT TO', true]);
    const ok = await client.send({ from: 'b@bounce.test', to: 'y@example.test' }, MESSAGE);
    assert.is(ok.result, 'delivered', ok.response);
    assert.is(peer.messages.length, 2);
    assert.is(peer.messages[0]?.length, 0, 'the empty message');
    assert.ok(peer.commands[1]?.startsWith('MAIL FROM:<b@bounce.test> SIZE='), peer.commands[1]);
    assert.ok(peer.commands.includes('RSET'));
  });
});

test('a drop in the middle of DATA → deferred, connection unusable', async () => {
  await scripted({ on: { BODY: 'drop' } }, async (client) => {
    const o = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, Buffer.alloc(256 * 1024, 'a'));
    assert.equal([o.result, o.code, o.command, o.connectionUsable], ['deferred', null, 'DATA', false]);
    assert.ok(/closed|reset|EPIPE/i.test(o.response), o.response);
  });
});

// sessionLost: nothing of the transaction reached the server (or was answered, MAIL FROM pipelined
// with the message), so the dispatcher gives the copy back and seeks another session rather than
// spending an attempt on it. A drop once the message was written is a deferral: the server may have it.
test('a session lost before the transaction got under way is marked sessionLost; one lost after the message was written is deferred, never delivered', async () => {
  const to = { from: 'b@bounce.test', to: 'x@example.test' };
  const cases: { ehlo: string[]; on: PeerScript['on']; command: string; lost: boolean }[] = [
    { ehlo: [], on: { MAIL: 'drop' }, command: 'MAIL FROM', lost: true },
    { ehlo: [], on: { RCPT: 'drop' }, command: 'RCPT TO', lost: true },
    { ehlo: [], on: { DATA: 'drop' }, command: 'DATA', lost: true },
    { ehlo: ['PIPELINING'], on: { MAIL: 'drop' }, command: 'MAIL FROM', lost: true },
    { ehlo: ['PIPELINING'], on: { RCPT: 'drop' }, command: 'RCPT TO', lost: true },
    { ehlo: ['PIPELINING', 'CHUNKING'], on: { MAIL: 'drop' }, command: 'MAIL FROM', lost: true },
    // The message went with MAIL, RCPT and BDAT, and MAIL was answered: the server may have it.
    { ehlo: ['PIPELINING', 'CHUNKING'], on: { RCPT: 'drop' }, command: 'RCPT TO', lost: false },
    { ehlo: [], on: { BODY: 'drop' }, command: 'DATA', lost: false },
    { ehlo: ['PIPELINING'], on: { '.': 'drop' }, command: 'DATA', lost: false },
  ];
  for (const c of cases) {
    await scripted({ ehlo: c.ehlo, on: c.on }, async (client) => {
      const o = await client.send(to, MESSAGE);
      const what = `${JSON.stringify(c)} → ${JSON.stringify(o)}`;
      assert.equal([o.result, o.code, o.command, o.connectionUsable], ['deferred', null, c.command, false], what);
      assert.is(o.sessionLost === true, c.lost, what);
    });
  }
  // The second of two transactions, after the first went well: the same.
  await scripted({ on: { MAIL: ['250 2.1.0 ok', 'drop'] } }, async (client) => {
    assert.is((await client.send(to, MESSAGE)).result, 'delivered');
    const o = await client.send(to, MESSAGE);
    assert.equal([o.result, o.command, o.sessionLost], ['deferred', 'MAIL FROM', true]);
    // A session already over: nothing is sent, and nothing was said about the copy either.
    assert.equal([(await client.send(to, MESSAGE)).sessionLost], [true]);
  });
  // The RSET after a failed transaction, dropped; a MAIL FROM never answered (the command timeout).
  await scripted({ on: { RCPT: '451 4.3.0 later', RSET: 'drop' } }, async (client) => {
    assert.is((await client.send(to, MESSAGE)).code, 451);
    const o = await client.send(to, MESSAGE);
    assert.equal([o.result, o.command, o.sessionLost], ['deferred', 'RSET', true]);
  });
  await scripted({ on: { MAIL: 'stall' } }, async (client) => {
    const o = await client.send(to, MESSAGE);
    assert.equal([o.result, o.command, o.sessionLost], ['deferred', 'MAIL FROM', true]);
    assert.match(o.response, /timeout after 300 ms/);
  }, { timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 300, dataBlockMs: 300, dataMs: 300 } });
  // An answer is not a lost session: a 451 to MAIL defers as before.
  await scripted({ on: { MAIL: '451 4.3.0 busy' } }, async (client) => {
    const o = await client.send(to, MESSAGE);
    assert.equal([o.result, o.code, o.sessionLost], ['deferred', 451, undefined]);
  });
});

test('a stalled server is deferred by the command or data timeout', async () => {
  const short = { timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 300, dataBlockMs: 300, dataMs: 300 } };
  await scripted({ on: { RCPT: 'stall' } }, async (client) => {
    const o = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE);
    assert.equal([o.result, o.code, o.command, o.connectionUsable], ['deferred', null, 'RCPT TO', false]);
    assert.ok(o.response.includes('timeout after 300 ms'), o.response);
  }, short);
  await scripted({ on: { '.': 'stall' } }, async (client) => {
    const o = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE);
    assert.equal([o.result, o.command, o.connectionUsable], ['deferred', 'DATA', false]);
  }, short);
  const peer = await startScriptedPeer({ greeting: 'stall' });
  try {
    const o = await connectFails(options(peer.port, { timeouts: { connectMs: 2000, greetingMs: 300, commandMs: 300, dataBlockMs: 300, dataMs: 300 } }));
    assert.equal([o.result, o.code, o.enhanced, o.command], ['deferred', null, '4.4.2', 'CONN'], 'connected, then no greeting: a bad connection');
    assert.ok(o.response.includes('timeout'), o.response);
  } finally {
    await peer.close();
  }
});

/**
 * A peer that answers EHLO (with `ehlo`'s keywords), MAIL and RCPT with 250, and at the message (after
 * its 354 to DATA, or at the BDAT line) hands the connection to `take`, with what it already read of
 * the message and the BDAT chunk's size (null for DATA). `take` reads the rest its own way.
 */
async function messagePeer(ehlo: string[], take: (socket: Socket, rest: Buffer, chunkSize: number | null) => void): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.write('220 peer.test ESMTP\r\n');
    let buf = Buffer.alloc(0);
    let taken = false;
    socket.on('data', (data: Buffer) => {
      if (taken) return;
      buf = Buffer.concat([buf, data]);
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.subarray(0, nl).toString().trim();
        const verb = line.split(/[ :]/)[0]?.toUpperCase();
        buf = buf.subarray(nl + 1);
        if (verb === 'EHLO') socket.write(['250' + (ehlo.length ? '-' : ' ') + 'peer.test', ...ehlo.map((k, i) => `250${i === ehlo.length - 1 ? ' ' : '-'}${k}`)].join('\r\n') + '\r\n');
        else if (verb === 'DATA' || verb === 'BDAT') {
          if (verb === 'DATA') socket.write('354 go ahead\r\n');
          taken = true;
          take(socket, buf, verb === 'BDAT' ? Number(line.split(' ')[1]) : null);
          return;
        } else socket.write('250 ok\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// A peer that answers 354 (or reads the BDAT command) and then stops reading the socket, a tarpit
// or a wedged server: the message is larger than loopback's buffers (net.ipv4.tcp_wmem's 4 MB
// sending, a receive window that does not grow while nothing is read), so the client's write never
// completes. The data block timeout (no progress) ends the transaction all the same: deferred with
// its text, the connection destroyed. What the peer reads once it reads again (what the kernels
// held) is less than the message: the write really was stuck.
const TARPIT_SIZE = 8 * 1024 * 1024;

async function tarpit(ehlo: string[]): Promise<{ port: number; unread: () => Promise<number>; close: () => Promise<void> }> {
  let stopped: Socket | null = null;
  let afterStop = 0;
  const peer = await messagePeer(ehlo, (socket, rest) => {
    // Stop reading: what already arrived is counted, nothing more is taken from the kernel.
    stopped = socket;
    afterStop = rest.length;
    socket.pause();
    socket.on('data', (data: Buffer) => (afterStop += data.length));
  });
  return {
    ...peer,
    // Reads again, to the end of the connection the client destroyed: all that was ever sent of the message.
    unread: () =>
      new Promise<number>((resolve) => {
        const s: Socket | null = stopped;
        if (!s) return resolve(-1);
        s.once('close', () => resolve(afterStop));
        s.resume();
      }),
  };
}

/** A message of `size` bytes in 78-byte lines of 'a', CRLF line ends (no dot to stuff). */
function bigMessage(size: number): Buffer {
  const message = Buffer.alloc(size, 'a');
  for (let i = 76; i < message.length; i += 78) message.write('\r\n', i - 2);
  return message;
}

const PEER_CASES = [
  { ehlo: [], command: 'DATA' },
  { ehlo: ['PIPELINING'], command: 'DATA' },
  { ehlo: ['CHUNKING'], command: 'BDAT' },
  { ehlo: ['PIPELINING', 'CHUNKING'], command: 'BDAT' },
];

test('a peer that stops reading in the middle of the message (DATA, BDAT): the data block timeout ends the transaction, deferred, connection destroyed', async () => {
  const message = bigMessage(TARPIT_SIZE);
  for (const c of PEER_CASES) {
    const peer = await tarpit(c.ehlo);
    try {
      // Only the data block timeout can end it: the final reply's would be a minute after the end.
      const client = await SmtpClient.connect(options(peer.port, { timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataBlockMs: 500, dataMs: 60_000 } }));
      const o = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, message);
      const what = `${JSON.stringify(c)} → ${JSON.stringify(o)}`;
      assert.equal([o.result, o.code, o.command, o.connectionUsable, o.sessionLost], ['deferred', null, c.command, false, undefined], what);
      assert.is(o.response, `data block timeout: the server took none of the message for 500 ms (during ${c.command})`, what);
      assert.is(client.usable, false);
      const got = await peer.unread();
      assert.ok(got >= 0 && got < message.length, `${JSON.stringify(c)}: the peer got ${got} of ${message.length} bytes: the write was stuck when the timeout fired`);
    } finally {
      await peer.close();
    }
  }
});

/**
 * A peer that reads the message `quota` bytes at a time, one such read every `tickMs` (`pace`), or
 * as fast as it comes (null); at its end (the "." line, or the chunk's size) it answers 250, or
 * nothing when `answer` is false. `done` resolves with the bytes it read.
 */
async function slowReader(ehlo: string[], pace: { quota: number; tickMs: number } | null, answer: boolean): Promise<{ port: number; done: Promise<number>; close: () => Promise<void> }> {
  let finish: (n: number) => void = () => undefined;
  const done = new Promise<number>((resolve) => (finish = resolve));
  const peer = await messagePeer(ehlo, (socket, rest, chunkSize) => {
    let read = rest.length;
    let tail = rest.subarray(-5);
    const ended = () => (chunkSize === null ? tail.equals(Buffer.from('\r\n.\r\n')) : read >= chunkSize);
    let allowance = pace?.quota ?? 0;
    const ticker = pace
      ? setInterval(() => {
          allowance = pace.quota;
          socket.resume();
        }, pace.tickMs)
      : undefined;
    const end = () => {
      clearInterval(ticker);
      if (answer) socket.write('250 2.0.0 queued\r\n');
      finish(read);
    };
    socket.on('close', () => clearInterval(ticker));
    socket.on('data', (data: Buffer) => {
      read += data.length;
      tail = Buffer.concat([tail, data]).subarray(-5);
      if (ended()) return end();
      allowance -= data.length;
      if (pace && allowance <= 0) socket.pause();
    });
    if (ended()) end();
  });
  return { ...peer, done };
}

// RFC 5321 §4.5.3.2.5: a slow link that keeps moving is not cut off, however long the message takes.
// The peer reads 2 MB every 100 ms (enough each time for the client's socket to take more: loopback
// wakes a writer when a third of its send buffer, at most 4 MB, is free), so the 48 MB message
// (far more than loopback's buffers hold, so the client's write keeps pace with the peer's reads)
// takes at least 23 ticks, 2.3 s: more than dataBlockMs and dataMs together. A deadline from the
// message's first byte (dataMs) fails it; one that each piece taken restarts (dataBlockMs) does not.
test('a peer that reads the message slowly but steadily, for longer than the data block and data timeouts together: delivered', async () => {
  const message = bigMessage(48 * 1024 * 1024);
  for (const c of [PEER_CASES[0], PEER_CASES[3]]) {
    if (!c) continue;
    const peer = await slowReader(c.ehlo, { quota: 2 * 1024 * 1024, tickMs: 100 }, true);
    try {
      const client = await SmtpClient.connect(options(peer.port, { timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataBlockMs: 1000, dataMs: 1000 } }));
      const o = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, message);
      const what = `${JSON.stringify(c)} → ${JSON.stringify(o)}`;
      assert.equal([o.result, o.code, o.command, o.connectionUsable], ['delivered', 250, c.command, true], what);
      assert.ok((await peer.done) >= message.length, `${JSON.stringify(c)}: the peer read the whole message`);
      client.close();
    } finally {
      await peer.close();
    }
  }
});

// RFC 5321 §4.5.3.2.6: the final reply still has its own deadline, from the end of the message.
test('a peer that reads the whole message and never answers: the final reply timeout (data) ends the transaction, deferred, connection destroyed', async () => {
  for (const c of PEER_CASES) {
    const peer = await slowReader(c.ehlo, null, false);
    try {
      // Only the final reply's timeout can end it: the data block's is a minute.
      const client = await SmtpClient.connect(options(peer.port, { timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataBlockMs: 60_000, dataMs: 300 } }));
      const o = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE);
      const what = `${JSON.stringify(c)} → ${JSON.stringify(o)}`;
      assert.equal([o.result, o.code, o.command, o.connectionUsable, o.sessionLost], ['deferred', null, c.command, false, undefined], what);
      assert.is(o.response, `timeout after 300 ms waiting for the final reply to ${c.command} (after the end of the message) (during ${c.command})`, what);
      assert.ok((await peer.done) > 0, `${JSON.stringify(c)}: the peer read the message`);
      assert.is(client.usable, false);
    } finally {
      await peer.close();
    }
  }
});

test('garbage replies → deferred, no crash, connection unusable', async () => {
  await scripted({ on: { MAIL: 'hello there, I am not SMTP' } }, async (client) => {
    const o = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE);
    assert.equal([o.result, o.code, o.connectionUsable], ['deferred', null, false]);
    assert.ok(o.response.includes('protocol error'), o.response);
  });
  const peer = await startScriptedPeer({ greeting: 'SSH-2.0-OpenSSH_9.6' });
  try {
    const o = await connectFails(options(peer.port));
    assert.equal([o.result, o.command], ['deferred', 'CONN']);
  } finally {
    await peer.close();
  }
});

test('5xx greeting → connect rejects with a bounced outcome; 421 greeting → deferred and throttled', async () => {
  const p554 = await startScriptedPeer({ greeting: '554 5.7.1 No SMTP service here' });
  const p421 = await startScriptedPeer({ greeting: '421 4.7.0 Too many connections' });
  try {
    const a = await connectFails(options(p554.port));
    assert.equal([a.result, a.code, a.enhanced, a.command, a.connectionUsable], ['bounced', 554, '5.7.1', 'CONN', false]);
    const b = await connectFails(options(p421.port));
    assert.equal([b.result, b.code, b.throttled], ['deferred', 421, true]);
  } finally {
    await p554.close();
    await p421.close();
  }
});

// RFC 5321 §4.2.1: every line of a multiline reply carries the same code. A server that mixes codes
// is acted on by its last line's code, as Postfix does (smtp_chat.c), with the whole text recorded.
test('a greeting that mixes codes is acted on by its last line: 554 bounces the session, 421 defers it, 220 opens it', async () => {
  const refused = await startScriptedPeer({ greeting: '220-mx.test ESMTP\n554 5.7.1 no service for you' });
  const busy = await startScriptedPeer({ greeting: '220-mx.test ESMTP\n421 4.3.2 busy' });
  const ready = await startScriptedPeer({ greeting: '554-5.7.1 wait for it\n220 mx.test ready' });
  try {
    const a = await connectFails(options(refused.port));
    assert.equal([a.result, a.code, a.enhanced, a.command], ['bounced', 554, '5.7.1', 'CONN']);
    assert.is(a.response, '220-mx.test ESMTP\n554 5.7.1 no service for you', 'the whole reply is kept');
    const b = await connectFails(options(busy.port));
    assert.equal([b.result, b.code, b.enhanced, b.throttled], ['deferred', 421, '4.3.2', true]);
    const c = await SmtpClient.connect(options(ready.port));
    try {
      assert.is((await c.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE)).result, 'delivered');
    } finally {
      c.close();
    }
  } finally {
    await Promise.all([refused.close(), busy.close(), ready.close()]);
  }
});

test('an EHLO answer that mixes codes: a last 5xx falls back to HELO; a last 250 gives the keywords of its 250 lines', async () => {
  await scripted({ on: { EHLO: '250-mx.test hello\n250-PIPELINING\n502 5.5.2 changed my mind' } }, async (client, peer) => {
    assert.equal(peer.commands.slice(0, 2), ['EHLO sluice.test', 'HELO sluice.test']);
    assert.is(client.serverExtensions.size, 0);
  });
  await scripted({ on: { EHLO: '500-5.5.1 what\n250-mx.test hello\n250 PIPELINING' } }, async (client, peer) => {
    assert.equal([...client.serverExtensions], ['PIPELINING'], 'not the hostname line, nor the 500 line');
    assert.not.ok(peer.commands.some((c) => c.startsWith('HELO')));
  });
});

for (const ehlo of [[], ['PIPELINING']]) {
  const how = ehlo.length ? 'pipelined' : 'one by one';
  for (const [verb, command, refusal, result, code, enhanced] of [
    ['MAIL', 'MAIL FROM', '250-2.1.0 sender ok\n550 5.7.1 sender refused', 'bounced', 550, '5.7.1'],
    ['RCPT', 'RCPT TO', '250-2.1.5 ok\n451 4.3.0 try later', 'deferred', 451, '4.3.0'],
  ] as const) {
    test(`${verb} answers that mix codes are acted on by their last line, the whole text recorded; the session stays in step (${how})`, async () => {
      // The n-th use of the step takes the n-th answer: the first transaction is refused, the second goes.
      await scripted({ ehlo, on: { [verb]: [refusal, '550-5.1.0 not so fast\n250 2.1.0 ok after all'] } }, async (client, peer) => {
        const refused = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE);
        assert.equal([refused.result, refused.code, refused.enhanced, refused.command, refused.connectionUsable], [result, code, enhanced, command, true]);
        assert.is(refused.response, refusal, 'the whole reply is kept');
        const ok = await client.send({ from: 'b@bounce.test', to: 'y@example.test' }, MESSAGE);
        assert.equal([ok.result, ok.code, ok.enhanced], ['delivered', 250, '2.0.0'], ok.response);
        assert.is(peer.messages.filter((m) => m.length > 0).length, 1, 'one message sent, to y');
      });
    });
  }
}

test('the answer after the data that mixes codes is acted on by its last line: 451 defers, 250 delivers', async () => {
  await scripted({ on: { '.': ['250-2.0.0 queued\n451 4.3.0 lost it', '451-4.3.0 hmm\n250 2.0.0 queued as X1'] } }, async (client) => {
    const lost = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE);
    assert.equal([lost.result, lost.code, lost.enhanced, lost.command, lost.connectionUsable], ['deferred', 451, '4.3.0', 'DATA', true]);
    assert.is(lost.response, '250-2.0.0 queued\n451 4.3.0 lost it');
    const queued = await client.send({ from: 'b@bounce.test', to: 'y@example.test' }, MESSAGE);
    assert.equal([queued.result, queued.code, queued.enhanced], ['delivered', 250, '2.0.0']);
    assert.is(queued.response, '451-4.3.0 hmm\n250 2.0.0 queued as X1');
    assert.is(client.messagesSent, 1);
  });
});

test('a STARTTLS whose handshake breaks fails marked tlsFailed; a refusal in words is not', async () => {
  const broken = await startScriptedPeer({ ehlo: ['STARTTLS'], on: { STARTTLS: { reply: '220 2.0.0 go ahead', then: 'drop' } } });
  const garbled = await startScriptedPeer({ ehlo: ['STARTTLS'], on: { STARTTLS: '220 2.0.0 go ahead' } });
  const busy = await startScriptedPeer({ greeting: '421 4.3.2 busy' });
  try {
    for (const peer of [broken, garbled]) {
      const err = await SmtpClient.connect(options(peer.port)).then(
        (c) => (c.close(), null),
        (e: unknown) => e,
      );
      assert.instance(err, SmtpConnectError);
      assert.is((err as SmtpConnectError).tlsFailed, true, (err as Error).message);
      assert.match((err as SmtpConnectError).outcome.response, /STARTTLS failed/);
      assert.is((err as SmtpConnectError).outcome.enhanced, '4.7.5');
      // The same host without STARTTLS works.
      const plain = await SmtpClient.connect(options(peer.port, { tls: 'none' }));
      assert.is(plain.secure, false);
      plain.close();
    }
    const err = await SmtpClient.connect(options(busy.port)).then(
      (c) => (c.close(), null),
      (e: unknown) => e,
    );
    assert.instance(err, SmtpConnectError);
    assert.is((err as SmtpConnectError).tlsFailed, false);
  } finally {
    await Promise.all([broken.close(), garbled.close(), busy.close()]);
  }
});

test('a reply that comes with the 220 to STARTTLS (injected plain text, CVE-2011-0411) ends the session at once, not marked tlsFailed', async () => {
  const peer = await startScriptedPeer({ ehlo: ['STARTTLS'], on: { STARTTLS: '220 2.0.0 go ahead\n250 injected' } });
  try {
    const err = await SmtpClient.connect(options(peer.port)).then(
      (c) => (c.close(), null),
      (e: unknown) => e,
    );
    assert.instance(err, SmtpConnectError);
    const e = err as SmtpConnectError;
    assert.is(e.tlsFailed, false, 'TLS did not fail: the server spoke out of turn');
    assert.is(e.outcome.result, 'deferred');
    assert.is(e.outcome.command, 'STARTTLS');
    // Not "TLS handshake timed out": no handshake was tried on the closed socket.
    assert.match(e.outcome.response, /unsolicited reply: 250 injected/);
  } finally {
    await peer.close();
  }
});

test('EHLO refused → HELO; a refused STARTTLS continues in plain text', async () => {
  await scripted({ on: { EHLO: '502 5.5.2 command not recognized' } }, async (client, peer) => {
    assert.is((await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE)).result, 'delivered');
    assert.equal(peer.commands.slice(0, 2), ['EHLO sluice.test', 'HELO sluice.test']);
  });
  await scripted({ ehlo: ['STARTTLS'] }, async (client, peer) => {
    assert.is(client.secure, false);
    assert.ok(peer.commands.includes('STARTTLS'));
    assert.is((await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE)).result, 'delivered');
  });
});

test("a 421 to STARTTLS ends the session, deferred and throttled, under 'may' too: the server is closing, nothing goes on in plain text", async () => {
  const peer = await startScriptedPeer({ ehlo: ['PIPELINING', 'STARTTLS'], on: { STARTTLS: '421 4.3.2 Service shutting down' } });
  try {
    const o = await connectFails(options(peer.port));
    assert.equal([o.result, o.code, o.command, o.throttled, o.connectionUsable], ['deferred', 421, 'STARTTLS', true, false]);
    assert.match(o.response, 'Service shutting down');
    assert.not.ok(peer.commands.some((c) => c.startsWith('MAIL')), peer.commands.join(' | '));
  } finally {
    await peer.close();
  }
});

test("mandatory TLS ('encrypt', 'verify'): no STARTTLS offered, or STARTTLS refused, ends the setup deferred 4.7.4 naming the host, before any MAIL", async () => {
  const plain = await startScriptedPeer({ ehlo: ['PIPELINING', 'CHUNKING'] });
  const refusing = await startScriptedPeer({ ehlo: ['PIPELINING', 'STARTTLS'], on: { STARTTLS: '554 5.7.3 no TLS for you' } });
  try {
    for (const tls of ['encrypt', 'verify'] as const) {
      const notOffered = await SmtpClient.connect(options(plain.port, { tls, tlsName: 'mx.plain.test' })).then(
        (c) => (c.close(), null),
        (e: unknown) => e,
      );
      assert.instance(notOffered, SmtpConnectError, tls);
      const o = (notOffered as SmtpConnectError).outcome;
      assert.equal([o.result, o.code, o.enhanced, o.throttled, o.connectionUsable], ['deferred', null, '4.7.4', false, false]);
      assert.is(o.response, `TLS is required, but was not offered by host mx.plain.test[127.0.0.1]:${plain.port}`);
      assert.is((notOffered as SmtpConnectError).tlsFailed, false, 'nothing broke: no plain-text retry is called for');

      // A 5xx to STARTTLS is no verdict on any recipient: deferred as well, with the server's words.
      const refused = await SmtpClient.connect(options(refusing.port, { tls })).then(
        (c) => (c.close(), null),
        (e: unknown) => e,
      );
      assert.instance(refused, SmtpConnectError, tls);
      const r = (refused as SmtpConnectError).outcome;
      assert.equal([r.result, r.code, r.enhanced, r.command], ['deferred', null, '4.7.4', 'STARTTLS']);
      assert.is(r.response, `TLS is required, but host 127.0.0.1:${refusing.port} refused to start TLS: 554 5.7.3 no TLS for you`);
    }
    assert.equal(plain.commands.filter((c) => !c.startsWith('EHLO')), [], 'nothing but EHLO reached the host without STARTTLS');
    assert.equal(refusing.commands.filter((c) => !c.startsWith('EHLO') && c !== 'STARTTLS'), []);
    // 'may' goes on in plain text with both, as before.
    for (const peer of [plain, refusing]) {
      const c = await SmtpClient.connect(options(peer.port, { tls: 'may' }));
      assert.is(c.secure, false);
      c.close();
    }
  } finally {
    await Promise.all([plain.close(), refusing.close()]);
  }
});

test("'verify' refuses a self-signed certificate (4.7.5, marked tlsFailed); 'encrypt' takes it and delivers over TLS", async () => {
  const peer = await startCapturePeer({ tls: true });
  try {
    const err = await SmtpClient.connect(options(peer.port, { tls: 'verify', tlsName: 'mx.self.test' })).then(
      (c) => (c.close(), null),
      (e: unknown) => e,
    );
    assert.instance(err, SmtpConnectError);
    assert.is((err as SmtpConnectError).tlsFailed, true);
    const o = (err as SmtpConnectError).outcome;
    assert.equal([o.result, o.code, o.enhanced], ['deferred', null, '4.7.5']);
    assert.match(o.response, new RegExp(`^TLS is required, but STARTTLS failed with mx\\.self\\.test\\[127\\.0\\.0\\.1\\]:${peer.port}: .*certificate`));

    const client = await SmtpClient.connect(options(peer.port, { tls: 'encrypt', tlsName: 'mx.self.test' }));
    try {
      assert.is(client.secure, true);
      assert.is((await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE)).result, 'delivered');
      const [m] = await peer.waitFor(1);
      assert.is(m?.secure, true);
    } finally {
      client.close();
    }
  } finally {
    await peer.close();
  }
});

test("'verify' checks the certificate against the MX host name (tlsName), not the address connected to", async () => {
  // A CA of the test's own, trusted by a child process (NODE_EXTRA_CA_CERTS is read at start-up
  // only), and a certificate it issued for mx.verified.test, served at 127.0.0.1.
  const dir = mkdtempSync(join(tmpdir(), 'sluice-tls-'));
  const run = promisify(execFile);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const at = (f: string) => join(dir, f);
  let peer: Awaited<ReturnType<typeof startCapturePeer>> | undefined;
  try {
    await run('openssl', ['req', '-x509', ...ec, '-days', '2', '-subj', '/CN=Sluice test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign', '-keyout', at('ca.key'), '-out', at('ca.pem')]);
    await run('openssl', ['req', ...ec, '-subj', '/CN=mx.verified.test', '-keyout', at('mx.key'), '-out', at('mx.csr')]);
    writeFileSync(at('ext'), 'subjectAltName=DNS:mx.verified.test\n');
    await run('openssl', ['x509', '-req', '-in', at('mx.csr'), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', at('ext'), '-out', at('mx.pem')]);
    peer = await startCapturePeer({ tls: true, key: readFileSync(at('mx.key')), cert: readFileSync(at('mx.pem')) });
    const child = fileURLToPath(new URL('../helpers/smtp-connect-child.ts', import.meta.url));
    const connect = async (tls: string, name: string) => {
      const { stdout } = await run(process.execPath, ['--import', 'tsx', child, String(peer!.port), tls, name], { env: { ...process.env, NODE_EXTRA_CA_CERTS: at('ca.pem') } });
      return JSON.parse(stdout.trim()) as { secure?: boolean; enhanced?: string; response?: string };
    };
    assert.equal(await connect('verify', 'mx.verified.test'), { secure: true }, 'verified for the MX name, although reached by its address');
    const other = await connect('verify', 'mx.other.test');
    assert.is(other.enhanced, '4.7.5', JSON.stringify(other));
    assert.match(other.response ?? '', /mx\.other\.test\[127\.0\.0\.1\].*(altnames|does not match)/);
    assert.is((await connect('verify', '')).enhanced, '4.7.5', 'without a name, the address is what the certificate must name');
  } finally {
    await peer?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a message larger than the SIZE the server declared is not sent: bounced 5.3.4 locally, the session goes on', async () => {
  await scripted({ ehlo: ['PIPELINING', 'SIZE 100'] }, async (client, peer) => {
    const big = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, Buffer.alloc(1000, 'a'));
    assert.equal([big.result, big.code, big.enhanced, big.command, big.connectionUsable], ['bounced', null, '5.3.4', 'MAIL FROM', true]);
    assert.match(big.response, /exceeds size limit 100/);
    assert.is(peer.commands.filter((c) => c.startsWith('MAIL')).length, 0, 'no transaction was started');
    assert.is(peer.messages.length, 0);
    // A message within the limit goes, on the same session, without an RSET first.
    const small = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, Buffer.from('Subject: s\r\n\r\nhi\r\n'));
    assert.is(small.result, 'delivered', small.response);
    assert.ok(!peer.commands.includes('RSET'));
  });
  // RFC 1870 §3: the size is the message's own octets, not the doubled dots nor the final ".": a
  // message of exactly the limit goes (as bytes, and as a block the render thread framed), one more does not.
  const exact = Buffer.from('Subject: s\r\n\r\n.dot\r\n' + 'x'.repeat(78) + '\r\n');
  assert.is(exact.length, 100);
  await scripted({ ehlo: ['PIPELINING', 'SIZE 100'] }, async (client, peer) => {
    const sent = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, exact);
    assert.is(sent.result, 'delivered', sent.response);
    assert.ok(peer.commands.includes('MAIL FROM:<b@bounce.test> SIZE=100'), peer.commands.join(' | '));
    const framed = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, toDataBlock(exact));
    assert.is(framed.result, 'delivered', framed.response);
    const over = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, Buffer.concat([exact, Buffer.from('y')]));
    assert.equal([over.result, over.enhanced], ['bounced', '5.3.4']);
    assert.match(over.response, /message size 103 exceeds size limit 100/, 'the unended last line counts its CRLF');
  });
  // SIZE 0 (or without a number) declares no limit (RFC 1870 §4).
  await scripted({ ehlo: ['SIZE 0'] }, async (client) => {
    assert.is((await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, Buffer.alloc(1000, 'a'))).result, 'delivered');
  });
});

/**
 * A PIPELINING + CHUNKING server (the scripted peer knows no BDAT) that answers MAIL with `mail`
 * (two replies when it misbehaves), BDAT with `bdat`, and writes the answers to each read at once.
 */
async function bdatPeer(mail: string, bdat: string): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.write('220 bdat.test ESMTP\r\n');
    let buf = Buffer.alloc(0);
    let chunkLeft = 0;
    socket.on('data', (data: Buffer) => {
      buf = Buffer.concat([buf, data]);
      let out = '';
      for (;;) {
        if (chunkLeft > 0) {
          const take = Math.min(chunkLeft, buf.length);
          chunkLeft -= take;
          buf = buf.subarray(take);
          if (chunkLeft > 0) break;
          out += `${bdat}\r\n`;
          continue;
        }
        const nl = buf.indexOf('\n');
        if (nl === -1) break;
        const line = buf.subarray(0, nl).toString().trim();
        buf = buf.subarray(nl + 1);
        const verb = line.split(/[ :]/)[0]?.toUpperCase();
        if (verb === 'EHLO') out += '250-bdat.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n';
        else if (verb === 'MAIL') out += mail.split('\n').join('\r\n') + '\r\n';
        else if (verb === 'RCPT') out += '250 2.1.5 ok\r\n';
        else if (verb === 'BDAT') chunkLeft = Number(line.split(' ')[1]);
        else out += '250 2.0.0 ok\r\n';
      }
      if (out !== '') socket.write(out);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise<void>((resolve) => (sockets.forEach((s) => s.destroy()), server.close(() => resolve()))) };
}

test('BDAT: a server that answers MAIL twice cannot have its refusal of the message taken for a 250 (deferred, not delivered)', async () => {
  const cases = [
    { mail: '250 2.1.0 ok', bdat: '552 5.3.4 message refused', want: ['bounced', 552, true] },
    { mail: '250 2.1.0 ok\n250 2.1.0 ok', bdat: '552 5.3.4 message refused', want: ['deferred', null, false] },
    { mail: '250 2.1.0 ok\n250 2.1.0 ok', bdat: '250 2.0.0 queued', want: ['deferred', null, false] },
    // A 421 after the last answer is the server hanging up, not a second answer: the 250 stands.
    { mail: '250 2.1.0 ok', bdat: '250 2.0.0 queued\n421 4.3.2 closing', want: ['delivered', 250, false] },
  ];
  for (const c of cases) {
    const peer = await bdatPeer(c.mail, c.bdat);
    const client = await SmtpClient.connect(options(peer.port));
    try {
      assert.ok(client.chunking);
      const o = await client.send({ from: 'b@bounce.test', to: 'x@example.test' }, MESSAGE);
      await new Promise((r) => setImmediate(r));
      assert.equal([o.result, o.code, client.usable], c.want, `${JSON.stringify(c)} → ${o.response}`);
      if (c.want[0] === 'deferred') assert.match(o.response, /more replies than commands/);
    } finally {
      client.close();
      await peer.close();
    }
  }
});

test('a non-ASCII address goes only to a server that offers SMTPUTF8: else bounced 5.6.7 locally, nothing sent', async () => {
  await scripted({ ehlo: ['PIPELINING', '8BITMIME'] }, async (client, peer) => {
    const o = await client.send({ from: 'b@bounce.test', to: 'jösé@example.test' }, MESSAGE);
    assert.equal([o.result, o.code, o.enhanced, o.command, o.connectionUsable], ['bounced', null, '5.6.7', 'RCPT TO', true]);
    assert.match(o.response, /SMTPUTF8/);
    assert.is(peer.commands.filter((c) => c.startsWith('MAIL') || c.startsWith('RCPT')).length, 0);
    assert.is((await client.send({ from: 'b@bounce.test', to: 'jose@example.test' }, MESSAGE)).result, 'delivered');
  });
  await scripted({ ehlo: ['PIPELINING', 'SMTPUTF8'] }, async (client, peer) => {
    assert.is((await client.send({ from: 'b@bounce.test', to: 'jösé@example.test' }, MESSAGE)).result, 'delivered');
    assert.ok(peer.commands.includes('MAIL FROM:<b@bounce.test> SMTPUTF8'), JSON.stringify(peer.commands));
  });
});

// RFC 6531 §3.4 and RFC 6532: UTF-8 in the header section takes SMTPUTF8 where the server offers
// it; 8-bit bytes in the body alone do not (that is 8BITMIME's). Where it is not offered the message
// goes as it is, as Postfix sends mail not submitted with SMTPUTF8 (only an address needs it).
test('a message with UTF-8 header fields goes with SMTPUTF8 where it is offered, and as it is where not', async () => {
  const to = { from: 'b@bounce.test', to: 'x@example.test' };
  const utf8Header = Buffer.from('From: Jörg <j@sender.test>\r\nTo: x@example.test\r\nSubject: Grüße\r\n\r\nHallo\r\n');
  const utf8Body = Buffer.from('From: j@sender.test\r\nTo: x@example.test\r\nSubject: hi\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n');
  await scripted({ ehlo: ['PIPELINING', '8BITMIME'] }, async (client, peer) => {
    assert.is((await client.send(to, utf8Header)).result, 'delivered');
    assert.is((await client.send(to, utf8Body)).result, 'delivered', 'an 8-bit body with ASCII headers goes');
    assert.equal(peer.commands.filter((c) => c.startsWith('MAIL')), ['MAIL FROM:<b@bounce.test> BODY=8BITMIME', 'MAIL FROM:<b@bounce.test> BODY=8BITMIME']);
  });
  await scripted({ ehlo: ['PIPELINING', '8BITMIME', 'SMTPUTF8'] }, async (client, peer) => {
    assert.is((await client.send(to, utf8Header)).result, 'delivered');
    assert.is((await client.send(to, utf8Body)).result, 'delivered');
    assert.equal(peer.commands.filter((c) => c.startsWith('MAIL')), ['MAIL FROM:<b@bounce.test> BODY=8BITMIME SMTPUTF8', 'MAIL FROM:<b@bounce.test> BODY=8BITMIME']);
  });
});

test('connection refused → deferred 4.4.1 CONN with the socket error text', async () => {
  const port = await freePort();
  const o = await connectFails(options(port));
  assert.equal([o.result, o.code, o.enhanced, o.command, o.connectionUsable], ['deferred', null, '4.4.1', 'CONN', false], 'no answer from the host');
  assert.is(o.response, `connect ECONNREFUSED 127.0.0.1:${port}`);
});

test('an address with a line break is refused locally, nothing is injected', async () => {
  await scripted({}, async (client, peer) => {
    const o = await client.send({ from: 'b@bounce.test', to: 'x@example.test>\r\nRCPT TO:<evil@example.test' }, MESSAGE);
    assert.equal([o.result, o.command, o.connectionUsable], ['bounced', 'RCPT TO', true]);
    assert.ok(!peer.commands.some((c) => c.includes('evil')));
  });
});

test.run();
