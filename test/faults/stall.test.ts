import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SMTPServer } from 'smtp-server';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { createKeys } from '../../src/redis/keys.js';
import { writeSluiceConfig, startSluiceProcess, killAllSluiceProcesses, callApi, sleep } from '../helpers/sluice-process.js';
import { reapExpired } from '../../src/queue/reap.js';
import { claim } from '../../src/queue/claim.js';
import { ack } from '../../src/queue/outcome.js';

/**
 * Fault: a delivery process stalled (SIGSTOP: a VM pause, swap, a debugger) for longer than its
 * lease, while another process reaps its leases, claims the copies and delivers one of them. When
 * it resumes, the copy it had on the wire is its to finish (the peer may have taken it), but the
 * next copy of its batch is another holder's now: it must not be sent again. After a stall the
 * process handles the I/O that waited (the peer's 250) before the timer that renews its leases,
 * so without a look at its leases before each copy it sent the next one first.
 */
const test = suite('faults/stall');

let redis: TestRedis;
let server: SMTPServer;
const seen: string[] = [];
let release: (() => void) | undefined;
let firstAtPeer: () => void = () => undefined;
const firstArrived = new Promise<void>((resolve) => (firstAtPeer = resolve));

test.before(async () => {
  redis = await startRedis();
  // Records each RCPT, and holds the answer to the first message's data until the test says.
  server = new SMTPServer({
    logger: false, authOptional: true, disabledCommands: ['AUTH', 'STARTTLS'], closeTimeout: 50,
    onRcptTo(a, _s, cb) {
      seen.push(a.address);
      cb();
    },
    onData(stream, _s, cb) {
      stream.resume();
      stream.on('end', () => {
        if (!release) {
          release = () => cb();
          firstAtPeer();
        } else cb();
      });
    },
  });
  server.on('error', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
});

test.after(async () => {
  await killAllSluiceProcesses();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await redis?.stop();
});

test('a process that resumes after a stall longer than its lease does not send the copies another process took meanwhile', async () => {
  const port = (server.server.address() as { port: number }).port;
  const prefix = 'stall:';
  const keys = createKeys(prefix);
  const inst = await writeSluiceConfig({
    redisUrl: redis.url, prefix, transport: { 'x.test': `127.0.0.1:${port}` },
    // Its own reaper off: the other process below is the one that reaps.
    overrides: { roles: ['ingress', 'delivery'], delivery: { lease: '2s', claimBatch: 2 }, log: { level: 'info' } },
  });
  const a = await startSluiceProcess(inst);
  const r = await callApi(a.ports.http!, inst.account.apiKey, '/v1/messages', { from: 'news@acme.example', to: ['r0@x.test', 'r1@x.test'], subject: 's', text: 't' });
  assert.is(r.status, 202, JSON.stringify(r.body));
  const id = r.body.id as string;
  await firstArrived; // copy 0 is at the peer, which keeps its 250; copy 1 waits its turn in the same batch
  a.signal('SIGSTOP');
  try {
    const c = redis.client();
    await sleep(3000); // longer than the lease
    // What another process's reaper and dispatcher do meanwhile: both copies back, claimed, r1 delivered.
    assert.is(await reapExpired(c, keys, 'x.test', Date.now(), 1000), 2);
    const { entries } = await claim(c, keys, { domain: 'x.test', max: 2, leaseMs: 60_000, now: Date.now() });
    const second = entries.find((e) => e.idx === 1);
    assert.ok(second, 'the other process holds r1');
    assert.is(await ack(c, keys, second!, { now: Date.now(), code: 250, enhanced: '2.0.0', response: '250 ok (the other process)', recordTtlMs: 60_000 }), 2);
    release?.(); // the peer's 250 for copy 0 waits in the stopped process's socket
    await sleep(100);
  } finally {
    a.signal('SIGCONT');
  }
  for (const until = Date.now() + 10_000; Date.now() < until && !a.logs.some((l) => /lease lost before sending/.test(String(l.msg))); ) await sleep(50);
  await sleep(500);
  assert.equal(seen, ['r0@x.test'], 'r1 was not sent again by the resumed process');
  assert.ok(a.logs.some((l) => /lease lost before sending/.test(String(l.msg)) && l['idx'] === 1), 'and it says so');
  assert.is((await redis.client().hget(keys.rcptState('x.test', id, 1), 'response')), '250 ok (the other process)');
});

test.run();
