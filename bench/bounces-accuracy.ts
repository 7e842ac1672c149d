/**
 * Accuracy of the bounce classifier on the shared corpus (../shared/corpus/bounces): per-field
 * accuracy and every mismatch, printed and written to bench/results/bounces.json.
 *   node --import tsx bench/bounces-accuracy.ts
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { evaluate, formatReport } from '../test/bounces/corpus-eval.js';

const started = process.hrtime.bigint();
const report = await evaluate();
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
process.stdout.write(formatReport(report) + `\n  wall time     ${seconds.toFixed(2)} s\n`);
const dir = fileURLToPath(new URL('./results/', import.meta.url));
mkdirSync(dir, { recursive: true });
writeFileSync(dir + 'bounces.json', JSON.stringify({ date: new Date().toISOString(), seconds, ...report }, null, 2) + '\n');
