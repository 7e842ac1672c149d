import { readdirSync, readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { isSluiceError } from '../../src/core/errors.js';
import { RenderPool } from '../../src/render/pool.js';
import type { DkimAlgorithm, MessageSpec, RenderResult, RenderTask } from '../../src/render/protocol.js';
import { makeKey, txtTable, verifyWithDkimpy, verifyWithMailauth, type TestKey } from '../helpers/dkim-verify.js';

const test = suite('render/pool');

const ACCEPTED_AT = Date.UTC(2025, 6, 1, 9, 5, 0);
let rsa: TestKey;
let ed: TestKey;
let table: Record<string, string>;
let pool: RenderPool;
const signed: [DkimAlgorithm, number][] = [];

test.before(() => {
  rsa = makeKey('pool.example', 'r1', 'rsa');
  ed = makeKey('pool.example', 'e1', 'ed25519');
  table = txtTable([rsa, ed]);
  const broken = { domain: 'broken.example', selector: 's1', algorithm: 'ed25519' as const, privateKeyPem: 'garbage' };
  pool = new RenderPool({
    threads: 2,
    queuePerThread: 2,
    init: { keys: [rsa, ed, broken], hostname: 'mta.pool.example' },
    onSigned: (a, s) => signed.push([a, s]),
  });
});

test.after(async () => {
  await pool.close();
});

const raw = (msgId: string, body = 'Hello from the pool', domain: string | null = 'pool.example'): RenderTask => ({
  msgId,
  kind: 'raw',
  source: Buffer.from(`From: sender@pool.example\nTo: rcpt@example.org\nSubject: ${msgId}\n\n${body}\n`),
  signingDomain: domain,
  acceptedAt: ACCEPTED_AT,
});

const SPEC: MessageSpec = {
  from: { name: 'Pool Sender', address: 'sender@pool.example' },
  to: [{ name: 'Ré Cipient', address: 'rcpt@example.org' }],
  cc: [],
  subject: 'Through the worker threads ✓',
  text: 'plain',
  html: '<p>html</p>',
  headers: { 'List-Unsubscribe': '<https://t.pool.example/u/1>', 'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click' },
  attachments: [{ filename: 'a.txt', contentBase64: Buffer.from('attached').toString('base64') }],
  messageId: '<01j2pool0000spec@pool.example>',
};

function ok(r: RenderResult): Extract<RenderResult, { ok: true }> {
  if (!r.ok) throw new Error(`render failed: ${r.code} ${r.message}`);
  return r;
}

test('worker threads load the .ts worker under tsx, render and sign; both verifiers pass', async () => {
  const before = signed.length;
  const r1 = ok(await pool.renderAndSign(raw('01j2pool00000001')));
  const r2 = ok(await pool.renderAndSign({ msgId: '01j2pool0000spec', kind: 'spec', source: JSON.stringify(SPEC), signingDomain: 'pool.example', acceptedAt: ACCEPTED_AT }));
  for (const r of [r1, r2]) {
    assert.equal(r.signatures, ['rsa', 'ed25519']);
    assert.ok(Buffer.isBuffer(r.message), 'delivered as a Buffer view of the transferred bytes');
    assert.ok(r.signMs.length === 2 && r.signMs.every((ms) => ms > 0) && r.renderMs >= 0, 'a time per signature');
  }
  const messages = [Buffer.from(r1.message), Buffer.from(r2.message)];
  const [p1, p2] = await verifyWithDkimpy(messages, table);
  for (const [i, m] of messages.entries()) {
    const mailauth = await verifyWithMailauth(m, table);
    assert.equal(mailauth.map((v) => v.pass), [true, true], JSON.stringify(mailauth));
    assert.equal((i === 0 ? p1 : p2)?.map((v) => v.pass), [true, true]);
  }
  assert.is(signed.length - before, 4, 'onSigned once per signature');
  assert.ok(signed.every(([a, s]) => (a === 'rsa' || a === 'ed25519') && s > 0 && s < 60));
});

test('backpressure: a burst far beyond maxQueue waits instead of failing, and no task is lost', async () => {
  const N = 60; // 15× the pool's maxQueue of 2 threads × 2
  let peakWaiting = 0;
  const pending: Promise<RenderResult>[] = [];
  for (let i = 0; i < N; i++) {
    pending.push(pool.renderAndSign(raw(`01j2burst${String(i).padStart(7, '0')}`, `body number ${i}`)));
    peakWaiting = Math.max(peakWaiting, pool.queueSize());
  }
  assert.ok(peakWaiting > 4, `queueSize() should show the waiting burst (peak ${peakWaiting})`);
  const results = await Promise.all(pending);
  assert.is(results.length, N);
  results.forEach((r, i) => {
    const m = Buffer.from(ok(r).message).toString();
    assert.ok(m.includes(`Subject: 01j2burst${String(i).padStart(7, '0')}\r\n`), `result ${i} belongs to task ${i}`);
    assert.ok(m.includes(`body number ${i}\r\n`));
  });
  assert.is(pool.queueSize(), 0);
  const u = pool.utilization();
  assert.ok(u >= 0 && u <= 1);
});

test('bad input returns ok:false or unsigned and never takes a worker down', async () => {
  const garbage = await pool.renderAndSign({ msgId: '01j2poolbad00001', kind: 'spec', source: '{"from":', signingDomain: 'pool.example', acceptedAt: ACCEPTED_AT });
  assert.equal(garbage.ok ? 'ok' : garbage.code, 'SLUICE_RENDER_FAILED');
  const corrupt = await pool.renderAndSign(raw('01j2poolbad00002', 'x', 'broken.example'));
  assert.equal(corrupt.ok ? 'ok' : corrupt.code, 'SLUICE_DKIM_KEY_INVALID');
  const unknown = ok(await pool.renderAndSign(raw('01j2poolbad00003', 'x', 'unknown.example')));
  assert.equal(unknown.signatures, []);
  const nonsense = await pool.renderAndSign({ msgId: 42, kind: 'raw' } as unknown as RenderTask);
  assert.equal(nonsense.ok ? 'ok' : nonsense.code, 'SLUICE_RENDER_FAILED');
  // The same workers still sign afterwards.
  const after = ok(await pool.renderAndSign(raw('01j2poolbad00004')));
  assert.equal(after.signatures, ['rsa', 'ed25519']);
});

test('renderMany: one worker task for several copies, results in order, framed DATA blocks on request', async () => {
  const tasks: RenderTask[] = [
    { ...raw('01j2pool00many01', '.line starting with a dot'), frame: true },
    { ...raw('01j2pool00many02'), source: 'not a buffer but fine' as unknown as Uint8Array, kind: 'spec', frame: true },
    { ...raw('01j2pool00many03', 'third'), frame: true },
  ];
  const results = await pool.renderMany(tasks);
  assert.is(results.length, 3);
  const first = ok(results[0] as RenderResult);
  assert.is(first.framed, true);
  assert.is(first.eightBit, false);
  const block = Buffer.from(first.message).toString();
  assert.ok(block.endsWith('\r\n.\r\n'), 'terminated');
  assert.match(block, /\r\n\.\.line starting with a dot\r\n/, 'dot-stuffed');
  assert.is((results[1] as RenderResult).ok, false, 'a bad task fails alone');
  assert.match(Buffer.from(ok(results[2] as RenderResult).message).toString(), /Subject: 01j2pool00many03/);
  // un-stuffed, the block is a message both verifiers accept
  const message = Buffer.from(block.slice(0, -3).replace(/\r\n\.\./g, '\r\n.'));
  for (const v of await verifyWithMailauth(message, table)) assert.ok(v.pass, `${v.algo}: ${v.detail}`);
});

test('BDAT chunks on request: the message itself, not dot-stuffed; a cached message stays whole after its chunks were transferred', async () => {
  // Shared (not single): the worker caches the signed message, and a chunk that needed no change is
  // that very buffer; transferring it to this thread would empty the cache entry.
  const shared = { ...raw('01j2pool0chunk01', '.line starting with a dot'), frame: true, chunked: true };
  const first = ok(await pool.renderAndSign(shared));
  assert.is(first.framed, true);
  assert.is(first.chunked, true);
  const text = Buffer.from(first.message).toString();
  assert.match(text, /\r\n\.line starting with a dot\r\n$/, 'not dot-stuffed, no terminator, ends in CRLF');
  assert.not.match(text, /(^|[^\r])\n/, 'CRLF line ends only');
  for (let i = 0; i < 3; i++) {
    const again = ok(await pool.renderAndSign(shared));
    assert.equal(again.signMs, [], 'served from the cache');
    assert.ok(Buffer.from(again.message).equals(Buffer.from(first.message)), `copy ${i} from the cache is whole`);
  }
  for (const v of await verifyWithMailauth(Buffer.from(first.message), table)) assert.ok(v.pass, `${v.algo}: ${v.detail}`);
  // A single-recipient copy is not cached: its chunk is moved, and is just as whole.
  const single = ok(await pool.renderAndSign({ ...raw('01j2pool0chunk02', 'single'), frame: true, chunked: true, single: true }));
  assert.match(Buffer.from(single.message).toString(), /Subject: 01j2pool0chunk02\r\n/);
});

test('renderMany calls of one event-loop turn are sent together and each caller gets its own results, in order', async () => {
  // 9 callers of 1–3 copies each, all in one turn: packed into a few worker tasks, answered apart.
  const calls = Array.from({ length: 9 }, (_, c) => Array.from({ length: (c % 3) + 1 }, (_, k) => raw(`01j2coal${String(c).padStart(4, '0')}${String(k).padStart(4, '0')}`)));
  const answers = await Promise.all(calls.map((tasks) => pool.renderMany(tasks)));
  answers.forEach((results, c) => {
    assert.is(results.length, (calls[c] as RenderTask[]).length, `caller ${c}: one result per task`);
    results.forEach((r, k) => assert.match(Buffer.from(ok(r).message).toString(), new RegExp(`Subject: ${(calls[c] as RenderTask[])[k]?.msgId}\r\n`), `caller ${c}, copy ${k}`));
  });
  const empty = await pool.renderMany([]);
  assert.equal(empty, []);
});

/** Nice value of each thread of this process (Linux /proc; field 19 of stat, after the parenthesised name). */
function threadNices(): number[] {
  return readdirSync('/proc/self/task').map((tid) => {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'latin1');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

test('delivery.pool.nice: each render thread runs that many nice values below the process, the rest of the process does not', async () => {
  const base = getPriority(0);
  const want = Math.min(19, base + 3);
  const before = threadNices().filter((n) => n === want).length;
  const niced = new RenderPool({ threads: 2, queuePerThread: 2, init: { keys: [ed], hostname: 'mta.pool.example', nice: 3 } });
  try {
    // Both threads have loaded the worker (and lowered themselves) once each has rendered.
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => niced.renderAndSign(raw(`01j2nice0000000${i}`))));
    for (const r of results) ok(r);
    const nices = threadNices();
    assert.is(nices.filter((n) => n === want).length - before, 2, `thread nice values: ${nices.join(' ')}`);
    assert.is(getPriority(0), base, 'the main thread keeps its priority');
  } finally {
    await niced.close();
  }
});

test('replaceInit (a reload with new DKIM keys): copies handed to the threads before are signed by them with the old key, every copy sent after by new threads with the new one; close() ends both', async () => {
  const own = new RenderPool({ threads: 1, queuePerThread: 4, init: { keys: [rsa], hostname: 'mta.pool.example' } });
  const rotated = makeKey('pool.example', 'r2', 'rsa');
  const before = Array.from({ length: 6 }, (_, i) => own.renderAndSign(raw(`01j2rotb${String(i).padStart(8, '0')}`)));
  own.replaceInit({ keys: [rotated], hostname: 'mta.pool.example' });
  const after = Array.from({ length: 6 }, (_, i) => own.renderAndSign(raw(`01j2rota${String(i).padStart(8, '0')}`)));
  const selectors = async (rs: Promise<RenderResult>[]) => Promise.all((await Promise.all(rs)).map((r) => /\bs=([^;\s]+)/.exec(Buffer.from(ok(r).message).toString('latin1'))?.[1]));
  // The first went to the old thread at once; those still waiting for room in the queue (1 thread ×
  // 4) when the keys changed are rendered by the new threads, with the new key: both are published.
  const old = await selectors(before);
  assert.is(old[0], 'r1', 'handed to the old thread: signed there with the key in force then');
  assert.ok(old.every((sel) => sel === 'r1' || sel === 'r2'), JSON.stringify(old));
  assert.equal(await selectors(after), Array(6).fill('r2'), 'sent after: the new key');
  const [late] = await Promise.all([own.renderAndSign(raw('01j2rotlate00001'))]);
  const verdicts = await verifyWithMailauth(Buffer.from(ok(late as RenderResult).message), txtTable([rotated]));
  assert.equal(verdicts.map((v) => [v.selector, v.pass]), [['r2', true]]);
  await own.close();
  try {
    await own.renderAndSign(raw('01j2rotclosed001'));
    assert.unreachable('closed');
  } catch (err) {
    assert.ok(isSluiceError(err, 'SLUICE_SHUTTING_DOWN'));
  }
  assert.throws(() => own.replaceInit({ keys: [rsa], hostname: 'x' }), (e: unknown) => isSluiceError(e, 'SLUICE_SHUTTING_DOWN'));
});

test('close() finishes accepted work, then refuses new tasks with SLUICE_SHUTTING_DOWN', async () => {
  const inFlight = Array.from({ length: 12 }, (_, i) => pool.renderAndSign(raw(`01j2close${String(i).padStart(7, '0')}`)));
  const closed = pool.close();
  const results = await Promise.all(inFlight);
  assert.ok(results.every((r) => r.ok), 'accepted tasks complete');
  await closed;
  try {
    await pool.renderAndSign(raw('01j2afterclose01'));
    assert.unreachable('a closed pool must refuse');
  } catch (err) {
    assert.ok(isSluiceError(err, 'SLUICE_SHUTTING_DOWN'));
  }
  await pool.close(); // idempotent
});

test.run();
