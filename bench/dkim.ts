/**
 * DKIM signing throughput: signs/s per algorithm (RSA-2048, Ed25519, and both at once) on 10 KB and
 * 100 KB messages, in this thread (the pure signer) and through the RenderPool (render + sign +
 * transfer, one thread per CPU). Prints a table and writes bench/results/dkim.json.
 *   node --import tsx bench/dkim.ts            (BENCH_SECONDS=1 per measurement by default)
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { prepareSigner, signMessage } from '../src/render/dkim.js';
import { opsPerSecond } from './harness.js';
import { RenderPool } from '../src/render/pool.js';
import type { DkimAlgorithm, DkimKeyMaterial, RenderTask } from '../src/render/protocol.js';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 1);
const SIZES = [10 * 1024, 100 * 1024];
const VARIANTS: { name: string; domain: string; algorithms: DkimAlgorithm[] }[] = [
  { name: 'rsa-2048', domain: 'rsa.bench.example', algorithms: ['rsa'] },
  { name: 'ed25519', domain: 'ed.bench.example', algorithms: ['ed25519'] },
  { name: 'rsa+ed25519', domain: 'dual.bench.example', algorithms: ['rsa', 'ed25519'] },
];

function key(domain: string, algorithm: DkimAlgorithm): DkimKeyMaterial {
  const { privateKey } = algorithm === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519');
  return { domain, selector: algorithm === 'rsa' ? 'r1' : 'e1', algorithm, privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

/** A plain-text newsletter of about `size` bytes: 72-column lines, a few whitespace runs. */
function message(size: number, domain: string): Buffer {
  const head =
    `From: News <news@${domain}>\r\nTo: reader@example.org\r\nSubject: Weekly digest\r\n` +
    `Date: Tue, 01 Jul 2025 09:05:00 +0000\r\nMessage-ID: <bench@${domain}>\r\nMIME-Version: 1.0\r\n` +
    `Content-Type: text/plain; charset=utf-8\r\nList-Unsubscribe: <https://t.${domain}/u/x>\r\n` +
    'List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n';
  const line = 'Lorem ipsum dolor sit amet, consectetur  adipiscing elit, sed do eiusmod \r\n';
  return Buffer.from(head + line.repeat(Math.ceil((size - head.length) / line.length)));
}

const keys = VARIANTS.flatMap((v) => v.algorithms.map((a) => key(v.domain, a)));
const results: { variant: string; bytes: number; mode: 'single-thread' | 'pool'; threads: number; signsPerSecond: number }[] = [];

for (const v of VARIANTS) {
  const signers = keys.filter((k) => k.domain === v.domain).map(prepareSigner);
  for (const size of SIZES) {
    const msg = message(size, v.domain);
    results.push({ variant: v.name, bytes: size, mode: 'single-thread', threads: 1, signsPerSecond: opsPerSecond(() => signMessage(msg, signers), SECONDS * 1000) });
  }
}

const threads = availableParallelism();
const pool = new RenderPool({ threads, queuePerThread: 64, init: { keys, hostname: 'bench.example' } });
let seq = 0;
for (const v of VARIANTS) {
  for (const size of SIZES) {
    const source = message(size, v.domain);
    // Distinct msgIds so the workers' per-message cache never answers: every task is signed.
    const task = (): RenderTask => ({ msgId: `bench${(seq++).toString(36)}`, kind: 'raw', source, signingDomain: v.domain, acceptedAt: Date.now() });
    for (let i = 0; i < threads * 4; i++) await pool.renderAndSign(task()); // warm the threads
    let n = 0;
    const start = performance.now();
    const until = start + SECONDS * 1000;
    // Keep the pool saturated: a fixed number of submitters, each starting a new task when one ends.
    await Promise.all(
      Array.from({ length: threads * 8 }, async () => {
        while (performance.now() < until) {
          const r = await pool.renderAndSign(task());
          if (!r.ok) throw new Error(`${r.code}: ${r.message}`);
          n++;
        }
      }),
    );
    results.push({ variant: v.name, bytes: size, mode: 'pool', threads, signsPerSecond: Math.round((n * 1000) / (performance.now() - start)) });
  }
}
await pool.close();

console.log(`DKIM signing, ${SECONDS}s per row, ${cpus()[0]?.model ?? 'unknown CPU'} × ${threads}`);
console.log('variant        size    mode            threads  signs/s');
for (const r of results) {
  console.log(`${r.variant.padEnd(14)} ${`${r.bytes / 1024}KB`.padEnd(7)} ${r.mode.padEnd(15)} ${String(r.threads).padEnd(8)} ${r.signsPerSecond}`);
}
const out = fileURLToPath(new URL('./results/dkim.json', import.meta.url));
mkdirSync(fileURLToPath(new URL('./results/', import.meta.url)), { recursive: true });
writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), node: process.version, cpu: cpus()[0]?.model ?? null, threads, secondsPerRow: SECONDS, results }, null, 2) + '\n');
console.log(`wrote ${out}`);
