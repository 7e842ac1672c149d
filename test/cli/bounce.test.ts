/**
 * `sluice bounce classify` through main(): one JSON line per recipient, with exactly the fields of
 * the corpus labels (../shared/corpus/bounces/dev.jsonl), and the labelled values for two real mails:
 * a two-recipient Sendmail DSN and an ARF complaint without a recipient.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CORPUS_DIR } from '../bounces/corpus-eval.js';
import { sluice, spawnSluice } from './run-cli.js';

const test = suite('cli/bounce');

const FIELDS = ['file', 'recipient', 'status', 'reason', 'hardbounce', 'feedbacktype'];
const FILES = ['emails/lhost-sendmail-02.eml', 'emails/arf-11.eml'];

/** The labels of `file` in dev.jsonl, reduced to the fields the command prints. */
function labels(file: string): Record<string, unknown>[] {
  return readFileSync(join(CORPUS_DIR, 'dev.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((row) => row['file'] === file)
    .sort((a, b) => Number(a['index']) - Number(b['index']))
    .map((row) => ({ file: join(CORPUS_DIR, file), recipient: row['recipient'], status: row['status'], reason: row['reason'], hardbounce: row['hardbounce'], feedbacktype: row['feedbacktype'] }));
}

test('one JSON line per recipient, the dev.jsonl fields and values, exit 0', async () => {
  const paths = FILES.map((f) => join(CORPUS_DIR, f));
  const r = await sluice(['bounce', 'classify', ...paths]);
  assert.is(r.code, 0, r.err);
  assert.is(r.err, '');
  assert.ok(r.out.endsWith('\n'));
  const lines = r.out.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const l of lines) assert.equal(Object.keys(l), FIELDS);
  const expected = FILES.flatMap(labels);
  assert.is(expected.length, 3, 'two recipients in the DSN, one complaint');
  assert.equal(lines, expected);
  assert.is(lines[2]?.['recipient'], null, 'a complaint without a recipient prints null');
  assert.is(lines[2]?.['reason'], 'feedback');
});

test('a missing file is reported on stderr with exit 1; the other file is still classified', async () => {
  const missing = join(CORPUS_DIR, 'emails', 'no-such-bounce.eml');
  const r = await sluice(['bounce', 'classify', missing, join(CORPUS_DIR, FILES[1] as string)]);
  assert.is(r.code, 1);
  assert.match(r.err, `cannot read ${missing}: ENOENT`);
  assert.equal(r.out.trimEnd().split('\n').map((l) => JSON.parse(l) as unknown), labels(FILES[1] as string));
});

test('as a real process: same output', async () => {
  const r = await spawnSluice(['bounce', 'classify', join(CORPUS_DIR, FILES[0] as string)]);
  assert.is(r.code, 0, r.err);
  assert.equal(r.out.trimEnd().split('\n').map((l) => JSON.parse(l) as unknown), labels(FILES[0] as string));
});

test.run();
