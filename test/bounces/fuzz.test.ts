/**
 * Fuzzing the bounce parser: random bytes and corpus mails mutated in the ways real and hostile
 * mail breaks (byte flips, truncation, duplicated and missing boundaries, deep multipart nesting,
 * 10 MB attachments, huge headers, line-end chaos, regex bait). classifyMessage must return a
 * well-formed answer for every input and must never hang; a few of the inputs then go through the
 * real inbound MX, which must keep answering and keep working.
 *
 * Reproducible: every case is generated from (FUZZ_SEED, case number) alone, and a failure names
 * both. The classifier runs in a worker thread so that a hang is caught by a watchdog in the main
 * thread (a synchronous loop cannot be interrupted from its own thread): the watchdog's limit is a
 * hang detector, hundreds of times a normal call, not a speed assertion.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { connect } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import nodemailer from 'nodemailer';
import { pino } from 'pino';
import { classifyMessage, REASONS, type BounceRecord } from '../../src/bounces/index.js';
import { CORPUS_DIR } from './corpus-eval.js';

/** Cases per run: ~1,500 corpus-sized inputs plus a few 10 MB ones take a few seconds on one core. */
const CASES = Number(process.env["FUZZ_CASES"] ?? 1_500);
/** Every this many cases is a 10 MB or huge-header monster (parsing is bounded at 4 MB; these check it). */
const MONSTER_EVERY = 150;
/**
 * No progress on one input for this long means a hang: a normal call takes ~1 ms and the worst
 * monster (4 MB parsed) ~150 ms here, so this is a 60x margin for a loaded machine, not a speed
 * assertion. A super-linear regex on a 100 KB token blows through it; at the 4 MB parse bound it
 * would block the inbound MX's event loop for hours.
 */
const HANG_MS = 10_000;
const SEED = Number(process.env['FUZZ_SEED'] ?? 0x5eed1e);
const TEN_MB = 10 * 1024 * 1024;

// ── deterministic generation ──────────────────────────────────────────────────

/** mulberry32: tiny, fast, good enough to pick mutations; the same seed gives the same cases. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rand = () => number;
const int = (r: Rand, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, xs.length)] as T;

function randomBytes(r: Rand, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 256);
  return b;
}

function lines(buf: Buffer): string[] {
  return buf.toString('latin1').split(/(?<=\n)/);
}

function boundaryLines(ls: string[]): number[] {
  const out: number[] = [];
  ls.forEach((l, i) => { if (/^--\S/.test(l)) out.push(i); });
  return out;
}

/** Strings that make careless regular expressions backtrack for ever. */
const REGEX_BAIT = [
  () => 'a'.repeat(200_000),
  () => '<'.repeat(50_000) + 'x',
  () => '@'.repeat(50_000),
  () => ' '.repeat(100_000) + '!',
  () => '5.1.1 '.repeat(20_000),
  () => 'said: 550 '.repeat(10_000),
  () => 'user@'.repeat(20_000) + 'example.com',
  () => 'Final-Recipient: rfc822; ' + 'x'.repeat(100_000),
  () => '=?utf-8?B?' + 'A'.repeat(100_000),
  () => '('.repeat(30_000) + ')'.repeat(10),
  () => 'in reply to RCPT TO command '.repeat(5_000),
];

const HOSTILE_CONTENT_TYPES = [
  'multipart/report; report-type=delivery-status; boundary=""',
  'multipart/report; report-type=delivery-status; boundary="(a+)+$"',
  'multipart/mixed; boundary="--"',
  'multipart/mixed',
  'multipart/report; report-type=feedback-report; boundary="x"; boundary="y"',
  'message/delivery-status; charset="x-unknown-charset"',
  'text/plain; charset="' + 'z'.repeat(5_000) + '"',
  'message/rfc822',
  '',
];

type Mutator = (r: Rand, buf: Buffer) => Buffer;

const MUTATORS: Record<string, Mutator> = {
  flip(r, buf) {
    const out = Buffer.from(buf);
    const n = 1 + int(r, 32);
    for (let i = 0; i < n && out.length > 0; i++) {
      const at = int(r, out.length);
      out[at] = (out[at] as number) ^ (1 << int(r, 8));
    }
    return out;
  },
  truncate: (r, buf) => buf.subarray(0, int(r, buf.length + 1)),
  duplicateBoundary(r, buf) {
    const ls = lines(buf);
    const bs = boundaryLines(ls);
    if (bs.length === 0) return buf;
    const line = ls[pick(r, bs)] as string;
    for (let k = 1 + int(r, 5); k > 0; k--) ls.splice(int(r, ls.length + 1), 0, line);
    return Buffer.from(ls.join(''), 'latin1');
  },
  removeBoundary(r, buf) {
    const ls = lines(buf);
    const bs = boundaryLines(ls);
    if (bs.length === 0) return buf;
    ls.splice(pick(r, bs), 1);
    return Buffer.from(ls.join(''), 'latin1');
  },
  shuffleLines(r, buf) {
    const ls = lines(buf);
    for (let k = 1 + int(r, 10); k > 0 && ls.length > 1; k--) {
      const i = int(r, ls.length);
      const j = int(r, ls.length);
      [ls[i], ls[j]] = [ls[j] as string, ls[i] as string];
    }
    return Buffer.from(ls.join(''), 'latin1');
  },
  noise(r, buf) {
    const at = int(r, buf.length + 1);
    return Buffer.concat([buf.subarray(0, at), randomBytes(r, 1 + int(r, 4096)), buf.subarray(at)]);
  },
  lineEnds(r, buf) {
    const s = buf.toString('latin1');
    const to = pick(r, ['\n', '\r', '\r\r\n', '\n\r']);
    return Buffer.from(s.replace(/\r?\n/g, to), 'latin1');
  },
  contentType(r, buf) {
    const s = buf.toString('latin1');
    const ct = pick(r, HOSTILE_CONTENT_TYPES);
    let n = 0;
    const target = int(r, 4);
    return Buffer.from(s.replace(/^Content-Type:[^\n]*(?:\n[ \t][^\n]*)*/gim, (m) => (n++ === target ? `Content-Type: ${ct}` : m)), 'latin1');
  },
  encoding(r, buf) {
    const s = buf.toString('latin1');
    const cte = pick(r, ['base64', 'quoted-printable', 'x-uuencode', '7bit', 'base64; junk']);
    return Buffer.from(s.replace(/^(Content-Type:[^\n]*\n)/im, `$1Content-Transfer-Encoding: ${cte}\n`).replace(/=([0-9A-F]{2})/g, '=Z$1'), 'latin1');
  },
  regexBait(r, buf) {
    const at = int(r, buf.length + 1);
    return Buffer.concat([buf.subarray(0, at), Buffer.from(pick(r, REGEX_BAIT)(), 'latin1'), buf.subarray(at)]);
  },
  splice(r, buf) {
    const other = pick(r, corpus());
    return Buffer.concat([buf.subarray(0, int(r, buf.length + 1)), other.subarray(int(r, other.length + 1))]);
  },
  nest(r, buf) {
    const depth = 10 + int(r, 2_000);
    const kind = pick(r, ['multipart', 'rfc822', 'mixed']);
    let body = buf.toString('latin1');
    for (let i = 0; i < depth; i++) {
      const multipart = kind === 'multipart' || (kind === 'mixed' && i % 2 === 0);
      body = multipart
        ? `Content-Type: multipart/mixed; boundary="n${i}"\r\n\r\n--n${i}\r\n${body}\r\n--n${i}--\r\n`
        : `Content-Type: message/rfc822\r\n\r\n${body}`;
    }
    return Buffer.from(`From: MAILER-DAEMON@fuzz.example\r\nSubject: Undelivered Mail\r\n${body}`, 'latin1');
  },
};

const MONSTERS: Record<string, Mutator> = {
  /** The original mail inside multipart/mixed with a 10 MB base64 attachment, as a careless MTA returns it. */
  attachment10mb(r, buf) {
    const payload = randomBytes(r, 64 * 1024).toString('base64').replace(/.{76}/g, '$&\r\n');
    const repeat = Math.ceil(TEN_MB / payload.length);
    return Buffer.concat([
      Buffer.from('From: MAILER-DAEMON@fuzz.example\r\nSubject: Delivery Status Notification (Failure)\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="big"\r\n\r\n--big\r\n', 'latin1'),
      buf,
      Buffer.from('\r\n--big\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n', 'latin1'),
      Buffer.from(payload.repeat(repeat), 'latin1'),
      Buffer.from('\r\n--big--\r\n', 'latin1'),
    ]);
  },
  /** One 4 MB header line, then the mail. */
  hugeHeaderLine: (_r, buf) => Buffer.concat([Buffer.from(`X-Huge: ${'h'.repeat(4 * 1024 * 1024)}\r\n`, 'latin1'), buf]),
  /** 200,000 header fields, then the mail. */
  headerFlood: (_r, buf) => Buffer.concat([Buffer.from('X-Flood: a\r\n'.repeat(200_000), 'latin1'), buf]),
  /** One header folded over 300,000 continuation lines. */
  foldedHeader: (_r, buf) => Buffer.concat([Buffer.from(`Subject: x${'\r\n y'.repeat(300_000)}\r\n`, 'latin1'), buf]),
  /** 10 MB without one line end. */
  endlessLine: (r, buf) => Buffer.concat([buf, Buffer.from(pick(r, ['=', 'a', ' ', '-']).repeat(TEN_MB), 'latin1')]),
};

let corpusCache: Buffer[] | undefined;
function corpus(): Buffer[] {
  corpusCache ??= readdirSync(join(CORPUS_DIR, 'emails')).filter((f) => f.endsWith('.eml')).sort()
    .map((f) => readFileSync(join(CORPUS_DIR, 'emails', f)));
  return corpusCache;
}

export interface FuzzCase { n: number; kind: string; input: Buffer }

/** Case `n` of seed `seed`: the same pair always gives the same bytes. */
export function fuzzCase(seed: number, n: number): FuzzCase {
  const r = rng((seed ^ Math.imul(n + 1, 0x9e3779b1)) >>> 0);
  if (n > 0 && n % MONSTER_EVERY === 0) {
    const name = Object.keys(MONSTERS)[(n / MONSTER_EVERY) % Object.keys(MONSTERS).length] as string;
    return { n, kind: `monster:${name}`, input: (MONSTERS[name] as Mutator)(r, pick(r, corpus())) };
  }
  if (n % 10 === 0) return { n, kind: 'random-bytes', input: randomBytes(r, int(r, 64 * 1024)) };
  const names = Object.keys(MUTATORS);
  const applied: string[] = [];
  let input = pick(r, corpus());
  for (let k = 1 + int(r, 3); k > 0; k--) {
    const name = pick(r, names);
    applied.push(name);
    input = (MUTATORS[name] as Mutator)(r, input);
  }
  return { n, kind: applied.join('+'), input };
}

// ── the checks ────────────────────────────────────────────────────────────────

const KNOWN_REASONS = new Set<string>(REASONS);

/** What a caller may rely on for every record, whatever the input was. Empty when all is well. */
function violations(records: unknown): string[] {
  if (!Array.isArray(records)) return ['not an array'];
  const out: string[] = [];
  for (const rec of records as BounceRecord[]) {
    if (typeof rec.recipient !== 'string' || (rec.recipient !== '' && !rec.recipient.includes('@'))) out.push(`recipient ${JSON.stringify(rec.recipient)}`);
    if (typeof rec.status !== 'string' || !/^(?:[245]\.\d{1,3}\.\d{1,3})?$/.test(rec.status)) out.push(`status ${JSON.stringify(rec.status)}`);
    if (!KNOWN_REASONS.has(rec.reason)) out.push(`reason ${JSON.stringify(rec.reason)}`);
    if (typeof rec.hardbounce !== 'boolean') out.push('hardbounce not boolean');
    if (rec.feedbacktype !== null && typeof rec.feedbacktype !== 'string') out.push('feedbacktype');
    if (rec.diagnostic !== undefined && rec.diagnostic.length > 1000) out.push('diagnostic longer than 1000');
  }
  return out;
}

type FromWorker =
  | { type: 'start'; n: number; kind: string; bytes: number }
  | { type: 'done'; n: number; records: number; bad: string[]; ms: number; threw?: string }
  | { type: 'end'; classified: number; withRecords: number };

async function workerMain(): Promise<void> {
  const { seed, cases } = workerData as { seed: number; cases: number };
  let withRecords = 0;
  for (let n = 0; n < cases; n++) {
    const c = fuzzCase(seed, n);
    parentPort!.postMessage({ type: 'start', n, kind: c.kind, bytes: c.input.length } satisfies FromWorker);
    const t0 = performance.now();
    try {
      const records = await classifyMessage(c.input);
      if (records.length > 0) withRecords++;
      // Deterministic: the same bytes give the same answer (checked on a sample; it doubles the cost).
      const bad = violations(records);
      if (n % 25 === 1 && JSON.stringify(await classifyMessage(c.input)) !== JSON.stringify(records)) bad.push('a second call answered differently');
      parentPort!.postMessage({ type: 'done', n, records: records.length, bad, ms: performance.now() - t0 } satisfies FromWorker);
    } catch (err) {
      parentPort!.postMessage({ type: 'done', n, records: 0, bad: [], ms: performance.now() - t0, threw: String((err as Error)?.stack ?? err) } satisfies FromWorker);
    }
  }
  parentPort!.postMessage({ type: 'end', classified: cases, withRecords } satisfies FromWorker);
}

if (!isMainThread) {
  await workerMain();
} else {
  await mainThread();
}

async function mainThread(): Promise<void> {
  const { startRedis } = await import('../helpers/redis.js');
  const { newId } = await import('../../src/core/ids.js');
  const { verpAddress } = await import('../../src/core/verp.js');
  const { storeMessage } = await import('../../src/store/messages.js');
  const { GLOBAL_LIST, suppressionOf } = await import('../../src/store/suppression.js');
  const { startInboundMx } = await import('../../src/feedback/inbound-mx.js');
  const { loadFeedback } = await import('../../src/feedback/raw-store.js');

  const test = suite('bounces/fuzz');

  test(`classifyMessage answers well-formed records for ${CASES} fuzzed inputs and never hangs (FUZZ_SEED=${SEED})`, async () => {
    // tsx's hooks do not reach a worker thread by themselves: its entry is a small script that
    // registers them, then imports this .ts file.
    const boot = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}); })`;
    const worker = new Worker(boot, { eval: true, workerData: { seed: SEED, cases: CASES } });
    const failures: string[] = [];
    let current: { n: number; kind: string; bytes: number } | undefined;
    let summary: { classified: number; withRecords: number } | undefined;
    let kinds = 0;
    const seenKinds = new Set<string>();
    /** Printed, not asserted: where the parser spends its time, for whoever makes it faster. */
    const slowest: { n: number; kind: string; ms: number }[] = [];
    try {
      await new Promise<void>((resolve, reject) => {
        let watchdog: NodeJS.Timeout;
        const arm = () => {
          clearTimeout(watchdog);
          watchdog = setTimeout(() => {
            const c = current ? `case ${current.n} (${current.kind}, ${current.bytes} bytes)` : 'start-up';
            reject(new Error(`no progress for ${HANG_MS} ms at ${c}: reproduce with FUZZ_SEED=${SEED} and fuzzCase(${SEED}, ${current?.n})`));
          }, HANG_MS);
        };
        arm();
        worker.on('message', (m: FromWorker) => {
          arm();
          if (m.type === 'start') {
            current = m;
            seenKinds.add(m.kind.split(/[+:]/)[m.kind.startsWith('monster:') ? 1 : 0] as string);
          } else if (m.type === 'done') {
            slowest.push({ n: m.n, kind: current?.kind ?? '', ms: m.ms });
            slowest.sort((a, b) => b.ms - a.ms).splice(5);
            if (m.threw) failures.push(`case ${m.n} (${current?.kind}) threw: ${m.threw}`);
            if (m.bad.length > 0) failures.push(`case ${m.n} (${current?.kind}): ${m.bad.join('; ')}`);
          } else {
            summary = m;
            clearTimeout(watchdog);
            resolve();
          }
        });
        worker.on('error', (err) => { clearTimeout(watchdog); reject(err); });
        worker.on('exit', (code) => {
          clearTimeout(watchdog);
          if (!summary) reject(new Error(`the worker died (exit ${code}) at case ${current?.n} (${current?.kind}); FUZZ_SEED=${SEED}`));
        });
      });
    } finally {
      await worker.terminate();
    }
    kinds = seenKinds.size;
    if (process.env['FUZZ_VERBOSE']) console.log('slowest cases:', slowest.map((x) => `#${x.n} ${x.kind} ${x.ms.toFixed(0)} ms`).join(' | '));
    assert.equal(failures.slice(0, 10), [], `${failures.length} failing cases, FUZZ_SEED=${SEED}`);
    assert.is(summary?.classified, CASES);
    // The generator really exercised what it claims: every mutator and monster kind came up.
    assert.ok(kinds >= Object.keys(MUTATORS).length + Object.keys(MONSTERS).length, `only ${kinds} kinds of input: ${[...seenKinds].join(', ')}`);
    // Mildly damaged bounces are still bounces: far from all fuzzed inputs must read as nothing.
    assert.ok(summary!.withRecords > CASES / 10, `only ${summary!.withRecords} of ${CASES} fuzzed inputs yielded a record`);
  });

  test('the real inbound MX takes fuzzed mail, keeps answering, and still acts on a good DSN afterwards', async () => {
    const redis = await startRedis();
    const client = redis.client();
    const { keys } = redis.fresh();
    const mx = await startInboundMx(
      { redis: client, keys, logger: pino({ level: 'silent' }) },
      // 12 MB: the 10 MB monsters must be accepted and parsed, not refused at the door.
      { host: '127.0.0.1', port: 0, bounceDomains: ['bounce.test'], fblAddresses: [], maxMessageSize: 12 * 1024 * 1024, rawRetentionMs: 3_600_000 },
    );
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: mx.port, secure: false, ignoreTLS: true });
    try {
      const msgId = newId();
      await storeMessage(client, keys, {
        id: msgId, account: 'acme', source: 'http', kind: 'raw', from: 'news@sender.test', fromDomain: 'sender.test',
        rcpts: [{ address: 'fuzzed@rcpt.test', domain: 'rcpt.test' }, { address: 'kijitora@rcpt.test', domain: 'rcpt.test' }],
        acceptedAt: Date.now(), tags: [], metadata: {}, body: 'Subject: hi\r\n\r\nhello\r\n',
      });

      // Fuzzed mail to the VERP address of a real sent copy (so matching and acting run too),
      // including two 10 MB monsters; each must be stored (250) and processed to some outcome.
      const ids: string[] = [];
      const sample = [1, 2, 3, 5, 7, 10, 11, 13, 17, 19, 23, 29, 31, 37, MONSTER_EVERY, MONSTER_EVERY * 5];
      for (const n of sample) {
        const { input, kind } = fuzzCase(SEED ^ 0x1234, n);
        const info = await transport.sendMail({ envelope: { from: '', to: [verpAddress(msgId, 0, 'bounce.test')] }, raw: input });
        const id = /stored as (\S+)/.exec(info.response)?.[1];
        assert.ok(id, `case ${n} (${kind}): ${info.response}`);
        ids.push(id);
      }

      // Not even SMTP: raw bytes on a fresh connection. The server may hang up; it must not fall over.
      await new Promise<void>((resolve) => {
        const sock = connect(mx.port, '127.0.0.1', () => sock.end(Buffer.concat([randomBytes(rng(SEED), 64 * 1024), Buffer.from('\r\nQUIT\r\n')])));
        sock.on('error', () => resolve());
        sock.on('close', () => resolve());
        sock.resume();
      });

      await mx.idle();
      for (const id of ids) {
        const stored = await loadFeedback(client, keys, id);
        assert.ok(stored, `${id} kept`);
        assert.ok(stored!.outcome !== '', `${id} processed to an outcome (got none)`);
      }

      // Still working: a real Courier DSN (5.1.1) for the other recipient suppresses it.
      const dsn = readFileSync(join(CORPUS_DIR, 'emails', 'lhost-courier-01.eml'));
      await transport.sendMail({ envelope: { from: '', to: [verpAddress(msgId, 1, 'bounce.test')] }, raw: dsn });
      await mx.idle();
      const entry = await suppressionOf(client, keys, 'acme', 'kijitora@rcpt.test');
      assert.ok(entry, 'the good DSN after the fuzzing was acted on');
      assert.is(entry!.list, GLOBAL_LIST);
    } finally {
      transport.close();
      await mx.close();
      await redis.stop();
    }
  });

  test.run();
}
