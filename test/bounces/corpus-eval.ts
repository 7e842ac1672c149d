/**
 * Runs the classifier over the shared bounce corpus and scores it field by field against dev.jsonl.
 * Shared by test/bounces/corpus.test.ts (asserts floors) and bench/bounces-accuracy.ts (prints, saves).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { classifyMessage, type BounceRecord } from '../../src/bounces/index.js';
import { CORPUS_DIR } from '../helpers/corpus.js';

export { CORPUS_DIR };

interface Expected {
  file: string; index: number; recipient: string | null; status: string | null; status_pseudo: boolean;
  reason: string; hardbounce: boolean; feedbacktype: string | null;
}

export const FIELDS = ['recipient', 'status', 'reason', 'hardbounce', 'feedbacktype', 'all'] as const;
export type Field = (typeof FIELDS)[number];

export interface Mismatch { file: string; field: string; expected: unknown; got: unknown }

export interface Report {
  lines: number;
  correct: Record<Field, number>;
  accuracy: Record<Field, number>;
  negatives: { files: number; withOutput: string[] };
  extraRecords: number;
  mismatches: Mismatch[];
}

function readJsonl<T>(path: string): T[] {
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as T);
}

function statusMatches(exp: Expected, got: string): boolean {
  if (exp.status === null) return got === '';
  // Pseudo codes (X.0.9NN) never occur in the message: only their class digit is meaningful.
  if (exp.status_pseudo) return got[0] === exp.status[0];
  return got === exp.status;
}

export async function evaluate(dir = CORPUS_DIR): Promise<Report> {
  const expected = readJsonl<Expected>(join(dir, 'dev.jsonl'));
  const negatives = readJsonl<{ file: string }>(join(dir, 'negatives.jsonl'));
  const byFile = new Map<string, Expected[]>();
  for (const e of expected) byFile.set(e.file, [...(byFile.get(e.file) ?? []), e]);

  const correct = Object.fromEntries(FIELDS.map((f) => [f, 0])) as Record<Field, number>;
  const mismatches: Mismatch[] = [];
  let extraRecords = 0;
  for (const [file, exps] of byFile) {
    const got = await classifyMessage(readFileSync(join(dir, file)));
    const used = new Set<number>();
    exps.sort((a, b) => a.index - b.index);
    for (const [i, exp] of exps.entries()) {
      const want = exp.recipient ?? '';
      let k = got.findIndex((g, j) => !used.has(j) && g.recipient === want);
      if (k < 0) k = got.findIndex((_g, j) => !used.has(j) && j === i);
      if (k < 0) k = got.findIndex((_g, j) => !used.has(j));
      const g: BounceRecord | undefined = k >= 0 ? got[k] : undefined;
      if (k >= 0) used.add(k);
      const ok: Record<Exclude<Field, 'all'>, boolean> = {
        recipient: g !== undefined && g.recipient === want,
        status: g !== undefined && statusMatches(exp, g.status),
        reason: g !== undefined && g.reason === exp.reason,
        hardbounce: g !== undefined && g.hardbounce === exp.hardbounce,
        feedbacktype: g !== undefined && g.feedbacktype === exp.feedbacktype,
      };
      for (const f of ['recipient', 'status', 'reason', 'hardbounce', 'feedbacktype'] as const) {
        if (ok[f]) correct[f]++;
        else mismatches.push({ file, field: f, expected: f === 'recipient' ? want : exp[f], got: g ? g[f] : '(no record)' });
      }
      if (Object.values(ok).every(Boolean)) correct.all++;
    }
    extraRecords += Math.max(0, got.length - exps.length);
  }
  const withOutput: string[] = [];
  for (const n of negatives) {
    const got = await classifyMessage(readFileSync(join(dir, n.file)));
    if (got.length > 0) withOutput.push(n.file);
  }
  const accuracy = Object.fromEntries(FIELDS.map((f) => [f, correct[f] / expected.length])) as Record<Field, number>;
  return { lines: expected.length, correct, accuracy, negatives: { files: negatives.length, withOutput }, extraRecords, mismatches };
}

export function formatReport(r: Report): string {
  const out: string[] = [`bounce corpus: ${r.lines} recipient lines`];
  for (const f of FIELDS) out.push(`  ${f.padEnd(13)} ${(r.accuracy[f] * 100).toFixed(1).padStart(5)} %  (${r.correct[f]}/${r.lines})`);
  out.push(`  negatives     ${r.negatives.files - r.negatives.withOutput.length}/${r.negatives.files} produced nothing`);
  out.push(`  extra records ${r.extraRecords}`);
  if (r.mismatches.length > 0) {
    out.push(`mismatches (${r.mismatches.length}):`);
    for (const m of r.mismatches) out.push(`  ${m.file}  ${m.field}: expected ${JSON.stringify(m.expected)}, got ${JSON.stringify(m.got)}`);
  }
  return out.join('\n');
}
