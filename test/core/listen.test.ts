import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SMTPServer } from 'smtp-server';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { isSluiceError } from '../../src/core/errors.js';
import { listenOn } from '../../src/core/listen.js';
import { startSluiceFixture } from '../helpers/sluice.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';

const test = suite('core/listen');

let redis: TestRedis;
test.before(async () => {
  redis = await startRedis();
});
test.after(async () => {
  await redis.stop();
});

/** A port some other server holds for the duration of `fn`. */
async function withBusyPort(fn: (port: number) => Promise<void>): Promise<void> {
  const holder: Server = createServer();
  const port = await listenOn(holder, 0, '127.0.0.1');
  try {
    await fn(port);
  } finally {
    await new Promise<void>((r) => holder.close(() => r()));
  }
}

async function refusal(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => assert.unreachable('bound a port another server holds'),
    (err: unknown) => err,
  );
}

test('port 0 resolves the port the kernel chose, and leaves no error listener behind', async () => {
  const server = createServer();
  const port = await listenOn(server, 0, '127.0.0.1');
  try {
    assert.ok(port > 0 && port < 65536, `port ${port}`);
    assert.is((server.address() as { port: number }).port, port);
    assert.is(server.listenerCount('error'), 0, 'the bind-time listener is removed');
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
});

test('a taken port rejects with SLUICE_CONFIG_INVALID naming the address and the errno', async () => {
  await withBusyPort(async (port) => {
    const server = createServer();
    const err = await refusal(listenOn(server, port, '127.0.0.1'));
    assert.ok(isSluiceError(err, 'SLUICE_CONFIG_INVALID'), String(err));
    assert.match((err as Error).message, `cannot listen on 127.0.0.1:${port}: EADDRINUSE`);
    assert.is(((err as Error).cause as NodeJS.ErrnoException).code, 'EADDRINUSE');
    assert.is(server.listening, false);
  });
});

test('an address this host does not have is refused the same way (smtp-server underneath)', async () => {
  const smtp = new SMTPServer({ logger: false, authOptional: true });
  // smtp-server re-emits its socket's errors on itself (Sluice's servers always listen for them).
  smtp.on('error', () => undefined);
  // 192.0.2.0/24 is TEST-NET-1: never a local address.
  const err = await refusal(listenOn(smtp.server, 0, '192.0.2.1'));
  assert.ok(isSluiceError(err, 'SLUICE_CONFIG_INVALID'), String(err));
  assert.match((err as Error).message, 'cannot listen on 192.0.2.1:0: EADDRNOTAVAIL');
});

test('sluice with its tracking port taken: start-up fails with the address and its settings, and what it started is stopped', async () => {
  await withBusyPort(async (port) => {
    const admin = redis.client();
    const clients = async () => Number(/connected_clients:(\d+)/.exec(await admin.info('clients'))?.[1]);
    const before = await clients();
    const dir = mkdtempSync(join(tmpdir(), 'sluice-listen-'));
    const secretFile = join(dir, 'k1.key');
    writeFileSync(secretFile, randomBytes(32));
    const err = await refusal(
      startSluiceFixture(redis, {
        roles: ['ingress', 'tracking'],
        tracking: { host: '127.0.0.1', port, publicBaseUrl: 'http://127.0.0.1', keys: [{ id: 'k1', secretFile, notAfter: null }], signWith: 'k1' },
      }),
    );
    assert.ok(isSluiceError(err, 'SLUICE_CONFIG_INVALID'), String(err));
    // The settings to change are named, not only the address (several servers may share a host).
    assert.match((err as Error).message, `cannot listen on 127.0.0.1:${port} (tracking.host, tracking.port): EADDRINUSE`);
    // The parts started before the tracking server (Redis connections, HTTP and SMTP ingress) are closed again.
    let after = Number.NaN;
    for (let i = 0; i < 50; i++) {
      after = await clients();
      if (after <= before) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(after <= before, `Redis clients ${before} before, ${after} after`);
    rmSync(dir, { recursive: true, force: true });
  });
});

test.run();
