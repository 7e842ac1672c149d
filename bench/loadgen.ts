/**
 * The load generator, run as its own process (forked by bench/e2e.ts): POSTs /v1/messages/batch
 * with `batch` messages per request over `concurrency` keep-alive connections (undici Pool) and
 * records each request's latency — from the first byte written to the last byte of the 202 read,
 * i.e. the latency of accepting (persisting and queueing) a whole batch.
 *
 * Two kinds of message:
 *   personal — one recipient each, HTML of `bytes` bytes with the recipient's name, address and
 *              unsubscribe token merged in (bench/content.ts): every copy differs;
 *   fanout   — `recipientsPerMessage` recipients each (one To, the rest Bcc) and a short text body,
 *              for measuring the queue's cost per recipient.
 *
 * IPC: says { type: 'ready' } once loaded, receives one LoadgenJob, answers one LoadgenResult, then exits.
 */
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';
import { messageJsonPiecesFactory, recipient } from './content.js';

export interface LoadgenJob {
  type: 'run';
  url: string;
  apiKey: string;
  from: string;
  /** Messages to submit, numbered first … first+count-1 (the recipient index). */
  first: number;
  count: number;
  batch: number;
  concurrency: number;
  domains: number;
  kind: 'personal' | 'fanout';
  /** personal: HTML size. */
  bytes: number;
  /** fanout: recipients of each message. */
  recipientsPerMessage: number;
  /** Give up (and report what was done) after this long. */
  timeoutMs: number;
}

export interface LoadgenResult {
  type: 'result';
  messages: number;
  recipientsAccepted: number;
  messagesRejected: number;
  requestsFailed: number;
  /** First few error answers, for the report. */
  errors: string[];
  latenciesMs: number[];
  startAt: number;
  endAt: number;
  bytesSent: number;
  timedOut: boolean;
  /** This process's CPU seconds (all threads) from receiving the job to answering. */
  cpuUserS: number;
  cpuSystemS: number;
}

function fanoutJsonFactory(job: LoadgenJob): (i: number, out: Buffer[]) => void {
  const from = JSON.stringify(job.from);
  return (i, out) => {
    const base = i * job.recipientsPerMessage;
    const addrs: string[] = [];
    for (let k = 0; k < job.recipientsPerMessage; k++) addrs.push(JSON.stringify(recipient(base + k, job.domains).address));
    const [to, ...bcc] = addrs;
    out.push(Buffer.from(`{"from":${from},"to":[${to}],"bcc":[${bcc.join(',')}],"subject":"Announcement ${i}","text":"A short announcement to many readers, number ${i}.\\nRegards, the team"}`));
  };
}

const OPEN = Buffer.from('{"messages":[');
const COMMA = Buffer.from(',');
const CLOSE = Buffer.from(']}');

async function run(job: LoadgenJob): Promise<LoadgenResult> {
  const cpu0 = process.cpuUsage();
  const make = job.kind === 'personal' ? messageJsonPiecesFactory({ bytes: job.bytes, from: job.from, domains: job.domains }) : fanoutJsonFactory(job);
  const url = new URL(job.url);
  const pool = new Pool(url.origin, { connections: job.concurrency, pipelining: 1, keepAliveTimeout: 60_000, bodyTimeout: job.timeoutMs, headersTimeout: job.timeoutMs });
  const result: LoadgenResult = { type: 'result', messages: 0, recipientsAccepted: 0, messagesRejected: 0, requestsFailed: 0, errors: [], latenciesMs: [], startAt: Date.now(), endAt: 0, bytesSent: 0, timedOut: false, cpuUserS: 0, cpuSystemS: 0 };
  const deadline = Date.now() + job.timeoutMs;
  let next = job.first;
  const end = job.first + job.count;

  const worker = async () => {
    while (next < end) {
      if (Date.now() > deadline) {
        result.timedOut = true;
        return;
      }
      const from = next;
      const to = Math.min(end, from + job.batch);
      next = to;
      // The request body in one copy of pre-encoded pieces (see content.ts).
      const parts: Buffer[] = [OPEN];
      for (let i = from; i < to; i++) {
        if (i > from) parts.push(COMMA);
        make(i, parts);
      }
      parts.push(CLOSE);
      const body = Buffer.concat(parts);
      result.bytesSent += body.length;
      const t0 = performance.now();
      try {
        const res = await pool.request({ path: '/v1/messages/batch', method: 'POST', headers: { authorization: `Bearer ${job.apiKey}`, 'content-type': 'application/json' }, body });
        const text = await res.body.text();
        result.latenciesMs.push(performance.now() - t0);
        if (res.statusCode !== 202) {
          result.requestsFailed++;
          if (result.errors.length < 5) result.errors.push(`${res.statusCode} ${text.slice(0, 300)}`);
          continue;
        }
        const answer = JSON.parse(text) as { results: ({ recipients: string[] } | { error: { code: string; message: string } })[] };
        for (const r of answer.results) {
          result.messages++;
          if ('recipients' in r) result.recipientsAccepted += r.recipients.length;
          else {
            result.messagesRejected++;
            if (result.errors.length < 5) result.errors.push(`${r.error.code}: ${r.error.message}`);
          }
        }
      } catch (err) {
        result.requestsFailed++;
        if (result.errors.length < 5) result.errors.push(String((err as Error).message ?? err));
      }
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, worker));
  result.endAt = Date.now();
  await pool.close();
  const cpu = process.cpuUsage(cpu0);
  result.cpuUserS = cpu.user / 1e6;
  result.cpuSystemS = cpu.system / 1e6;
  return result;
}

process.send?.({ type: 'ready' });
process.once('message', (job: LoadgenJob) => {
  run(job).then(
    (r) => process.send?.(r, () => process.disconnect()),
    (err: unknown) => {
      process.send?.({ type: 'result', messages: 0, recipientsAccepted: 0, messagesRejected: 0, requestsFailed: 1, errors: [String(err)], latenciesMs: [], startAt: 0, endAt: 0, bytesSent: 0, timedOut: false, cpuUserS: 0, cpuSystemS: 0 } satisfies LoadgenResult, () => process.disconnect());
    },
  );
});
