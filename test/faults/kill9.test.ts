import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { createKeys } from '../../src/redis/keys.js';
import {
  writeSluiceConfig, startSluiceProcess, startSlowSink, killAllSluiceProcesses, type SluiceInstance, type SlowSink,
} from '../helpers/sluice-process.js';
import { recordFigures } from '../helpers/fault-figures.js';
import { startSubmitter, queueTotals, waitQueueEmpty, duplicatesOf, until } from '../helpers/fault-load.js';

/**
 * Fault: `kill -9` of Sluice in the middle of a 10,000-message send, then a restart on the same
 * Redis. A client keeps submitting batches through the HTTP API the whole time (it sees refused
 * connections while Sluice is down and carries on); what counts as sent is what was answered 202.
 * Every one of those must reach the MX; copies that reach it twice are counted and must be no more
 * than what the killed process held in flight, read from its leases in Redis right after the kill
 * (they stay there until they expire) and bounded statically by claimBatch × connections.
 */
const test = suite('faults/kill9');

const N = 10_000;
const DOMAINS = 10;
const CLAIM_BATCH = 20;
const CONNECTIONS_PER_DOMAIN = 2;
/** The most one process can hold leased: every connection of every destination with a full claim. */
const INFLIGHT_BOUND = CLAIM_BATCH * CONNECTIONS_PER_DOMAIN * DOMAINS;
/** Kill once this share has arrived: well inside the run. */
const KILL_AFTER = 3_000;
/** Generous: two tsx start-ups and 10,000 deliveries on a busy 2-core machine. */
const DELIVER_TIMEOUT_MS = 120_000;

let redis: TestRedis;
let sink: SlowSink;
let inst: SluiceInstance | undefined;

test.before(async () => {
  redis = await startRedis();
  // 0–4 ms between the end of data and the 250: the kill lands inside open transactions.
  sink = await startSlowSink(() => Math.floor(Math.random() * 5));
});

test.after(async () => {
  await killAllSluiceProcesses();
  await sink?.close();
  await redis?.stop();
  inst?.remove();
});

test('kill -9 during a 10,000-message send, restart on the same Redis: nothing accepted is lost, duplicates ≤ in flight', async () => {
  const tag = `k${randomUUID().slice(0, 6)}-`;
  const domains = Array.from({ length: DOMAINS }, (_, i) => `k${i}.kill9.test`);
  const prefix = `t${randomUUID().slice(0, 8)}:`;
  const keys = createKeys(prefix);
  inst = await writeSluiceConfig({
    redisUrl: redis.url,
    prefix,
    transport: Object.fromEntries(domains.map((d) => [d, `${sink.host}:${sink.port}`])),
    overrides: {
      delivery: { claimBatch: CLAIM_BATCH, pool: { threads: 1 } },
      shaping: { default: { connections: CONNECTIONS_PER_DOMAIN, messagesPerConnection: 1000 } },
    },
  });
  const started = Date.now();
  let http = inst.ports.http;
  const first = await startSluiceProcess(inst);
  const client = startSubmitter({ port: () => http, apiKey: inst.account.apiKey, tag, domains, total: N });

  await sink.waitDistinct(KILL_AFTER, DELIVER_TIMEOUT_MS);
  first.signal('SIGKILL');
  const exit = await first.waitExit();
  assert.is(exit.signal, 'SIGKILL');
  const inspector = redis.client();
  const atKill = await queueTotals(inspector, keys, domains);
  const deliveredAtKill = sink.counts.size;
  const acceptedAtKill = client.accepted.length;

  const second = await startSluiceProcess(inst);
  http = second.ports.http ?? http;
  await client.done;
  assert.is(client.accepted.length, N, 'the client got N recipients accepted in the end');
  // Every accepted recipient arrives (the leases of the killed process expire and go again).
  const missing = () => client.accepted.filter((r) => !sink.counts.has(r));
  await until(() => missing().length === 0, DELIVER_TIMEOUT_MS);
  const totals = await waitQueueEmpty(inspector, keys, domains);

  const lost = missing().length;
  const duplicated = duplicatesOf(sink.counts, client.accepted);
  const extras = [...sink.counts.keys()].filter((r) => r.startsWith(tag)).length - (N - lost);
  await recordFigures('kill9', {
    sent: N,
    lost,
    duplicated,
    inflight_at_kill: atKill.leased,
    inflight_bound: INFLIGHT_BOUND,
    delivered_at_kill: deliveredAtKill,
    accepted_at_kill: acceptedAtKill,
    unacknowledged_extras_delivered: extras,
    refused_batches: [...client.refusals.values()].reduce((a, b) => a + b, 0),
    seconds: Math.round((Date.now() - started) / 100) / 10,
  });

  assert.is(lost, 0, 'every accepted (202) message was delivered');
  assert.equal(totals, { ready: 0, leased: 0 }, 'nothing left in the queue');
  assert.ok(deliveredAtKill < N, `the kill landed mid-run (${deliveredAtKill}/${N} delivered)`);
  assert.ok(atKill.leased <= INFLIGHT_BOUND, `leased at the kill (${atKill.leased}) ≤ claimBatch × connections × domains (${INFLIGHT_BOUND})`);
  assert.ok(duplicated <= atKill.leased, `duplicates (${duplicated}) ≤ in flight at the kill (${atKill.leased})`);
  // Unacknowledged submissions may or may not have been persisted; they must never exceed what was
  // refused (a copy the client was not told about cannot come from nowhere).
  assert.ok(extras >= 0 && extras <= client.unanswered(), `extras (${extras}) ≤ unanswered recipients (${client.unanswered()})`);

  second.signal('SIGTERM');
  const stopped = await second.waitExit(30_000);
  assert.is(stopped.code, 0, `graceful exit after the run: ${second.stderr().slice(-1000)}`);
});

test.run();
