import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startSubmissionServer } from '../../src/ingress/smtp-server.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { RawSmtp } from '../helpers/raw-smtp.js';
import { ingressFixture, storedMessages } from './fixture.js';

/**
 * A shutdown's close timeout must not cut a session whose message is being stored: told 421 (try
 * again) while its message was stored and queued all the same, the client sent it twice. Redis is
 * held still (SIGSTOP) from the final dot until after the close timeout, as a slow Redis (a strict
 * durability's WAITAOF, a fork) holds a store.
 */
test('a message being stored when the close timeout passes gets its 250 and is stored once; an idle session gets 421', async () => {
  const fx = await ingressFixture({ smtp: { maxMessageSize: 32 * 1024 } });
  const server = await startSubmissionServer({ redis: fx.client, keys: fx.keys, config: fx.config, registry: fx.registry, logger: createLogger('silent') }, { host: '127.0.0.1', port: 0, closeTimeoutMs: 500 });
  const pid = fx.redis.server.pid as number;
  const open = async () => {
    const { client } = await RawSmtp.open(server.port);
    await client.startTls();
    assert.is((await client.auth('acme', 'acme-password')).code, 235);
    return client;
  };
  const [storing, idle] = [await open(), await open()];
  try {
    assert.is((await storing.cmd('MAIL FROM:<news@acme.example>')).code, 250);
    assert.is((await storing.cmd('RCPT TO:<x@gmail.com>')).code, 250);
    assert.is((await storing.cmd('DATA')).code, 354);
    const before = await storedMessages(fx);
    process.kill(pid, 'SIGSTOP');
    await storing.write('From: news@acme.example\r\nTo: x@gmail.com\r\nSubject: s\r\n\r\nbody\r\n.\r\n');
    await new Promise((r) => setTimeout(r, 100)); // the dot is read and the store has begun
    const closed = server.close();
    const idleAnswer = await idle.reply(3_000);
    assert.is(idleAnswer.code, 421, 'the idle session is cut at the close timeout');
    await new Promise((r) => setTimeout(r, 300));
    process.kill(pid, 'SIGCONT');
    const answer = await storing.reply(10_000);
    assert.is(answer.code, 250, `stored, and told so: ${answer.text}`);
    await closed;
    assert.is(await storedMessages(fx), before + 1, 'stored once');
  } finally {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // already gone
    }
    storing.close();
    idle.close();
    await server.close();
    await fx.stop();
  }
});

test('Redis gone at the end of DATA: 451 4.3.0, and the message is counted as refused', async () => {
  const fx = await ingressFixture({ smtp: { maxMessageSize: 32 * 1024 } });
  const metrics = createMetrics();
  const server = await startSubmissionServer({ redis: fx.client, keys: fx.keys, config: fx.config, registry: fx.registry, logger: createLogger('silent'), metrics }, { host: '127.0.0.1', port: 0 });
  const { client } = await RawSmtp.open(server.port);
  try {
    await client.startTls();
    assert.is((await client.auth('acme', 'acme-password')).code, 235);
    assert.is((await client.cmd('MAIL FROM:<news@acme.example>')).code, 250);
    assert.is((await client.cmd('RCPT TO:<x@gmail.com>')).code, 250);
    assert.is((await client.cmd('DATA')).code, 354);
    await fx.redis.server.stop();
    for (let i = 0; i < 100 && fx.client.status === 'ready'; i++) await new Promise((r) => setTimeout(r, 20));
    const answer = await client.cmd('From: news@acme.example\r\nTo: x@gmail.com\r\nSubject: s\r\n\r\nbody\r\n.');
    assert.is(answer.code, 451, answer.text);
    assert.match(answer.text, '4.3.0');
    const counted = (await metrics.messagesRejected.get()).values.find((v) => v.labels['source'] === 'smtp' && v.labels['code'] === 'SLUICE_REDIS_UNAVAILABLE')?.value ?? 0;
    assert.is(counted, 1, 'sluice_messages_rejected_total counts it');
  } finally {
    client.close();
    await server.close();
    await fx.stop();
  }
});

test.run();
