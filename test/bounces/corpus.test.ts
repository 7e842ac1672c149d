/**
 * The classifier against the real bounce corpus (../shared/corpus/bounces, DEV set): per-field
 * accuracy and mismatches are printed; floors are asserted so a regression fails the suite.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { evaluate, formatReport, type Report } from './corpus-eval.js';

const test = suite('bounces/corpus');
let report: Report;

test.before(async () => {
  report = await evaluate();
  process.stdout.write(formatReport(report) + '\n');
});

// Floors sit just under what the classifier reaches today (see bench/bounces-accuracy.ts).
const FLOORS = { recipient: 0.97, status: 0.93, reason: 0.88, hardbounce: 0.94, feedbacktype: 0.98, all: 0.85 } as const;

for (const [field, floor] of Object.entries(FLOORS)) {
  test(`${field} accuracy is at least ${(floor * 100).toFixed(0)} %`, () => {
    const got = report.accuracy[field as keyof typeof FLOORS];
    assert.ok(got >= floor, `${field}: ${(got * 100).toFixed(1)} % < ${(floor * 100).toFixed(0)} %`);
  });
}

test('mails that are not bounces produce no record', () => {
  assert.ok(report.negatives.files > 0);
  assert.equal(report.negatives.withOutput, []);
});

test.run();
