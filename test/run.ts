/**
 * Runs every test file (test/**\/*.test.ts) in its own Node process, a few at a time, and prints
 * one closing line: `N passed, N failed` (the sum of uvu's per-file summaries). A file whose process
 * dies without a summary counts as one failure. Arguments filter files by substring.
 *   node --import tsx test/run.ts [filter…]
 * Env: TEST_JOBS (parallel files, default 2), TEST_TIMEOUT_S (per file, default 300).
 */
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const testDir = join(root, 'test');
const filters = process.argv.slice(2);
const suiteDir = process.env['TEST_SUITE'] ?? '';

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (name === 'helpers' || name === 'fixtures') continue;
      out.push(...walk(p));
    } else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

// The fault suite (test/faults) runs only when asked for (npm run test:faults) or with TEST_SUITE=all.
const files = walk(testDir)
  .filter((f) => {
    const rel = relative(testDir, f);
    const isFault = rel.startsWith('faults/');
    if (suiteDir === 'faults') return isFault;
    if (suiteDir === 'all') return true;
    return !isFault;
  })
  .filter((f) => filters.length === 0 || filters.some((x) => relative(root, f).includes(x)))
  .sort();

const jobs = Number(process.env['TEST_JOBS'] ?? 2);
const timeoutS = Number(process.env['TEST_TIMEOUT_S'] ?? 300);
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

interface Result { file: string; passed: number; failed: number; skipped: number; ms: number; output: string }

function runFile(file: string): Promise<Result> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file], { cwd: root, env: { ...process.env, FORCE_COLOR: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      output += `\n[runner] timed out after ${timeoutS}s, killed\n`;
      child.kill('SIGKILL');
    }, timeoutS * 1000);
    child.on('close', (code) => {
      clearTimeout(timer);
      const text = output.replace(ANSI, '');
      const total = /Total:\s+(\d+)/.exec(text);
      const passed = /Passed:\s+(\d+)/.exec(text);
      const skipped = /Skipped:\s+(\d+)/.exec(text);
      let p = passed ? Number(passed[1]) : 0;
      const s = skipped ? Number(skipped[1]) : 0;
      let f = total ? Number(total[1]) - p - s : 0;
      if (!total || (code !== 0 && f === 0)) f += 1; // died without (or despite) a summary
      if (!total) p = 0;
      resolve({ file: relative(root, file), passed: p, failed: f, skipped: s, ms: Date.now() - started, output: text });
    });
  });
}

const results: Result[] = [];
let next = 0;
async function worker(): Promise<void> {
  while (next < files.length) {
    const file = files[next++] as string;
    const r = await runFile(file);
    results.push(r);
    const mark = r.failed > 0 ? 'FAIL' : 'ok  ';
    process.stdout.write(`${mark} ${r.file}  ${r.passed} passed, ${r.failed} failed${r.skipped ? `, ${r.skipped} skipped` : ''}  (${(r.ms / 1000).toFixed(1)}s)\n`);
    if (r.failed > 0) process.stdout.write(r.output.split('\n').map((l) => `     | ${l}`).join('\n') + '\n');
  }
}
await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker));

const sum = (k: 'passed' | 'failed' | 'skipped') => results.reduce((a, r) => a + r[k], 0);
const skipped = sum('skipped');
if (files.length === 0) process.stdout.write('no test files matched\n');
process.stdout.write(`${sum('passed')} passed, ${sum('failed')} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
process.exitCode = sum('failed') > 0 || files.length === 0 ? 1 : 0;
