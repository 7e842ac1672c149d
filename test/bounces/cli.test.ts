/**
 * `sluice bounce classify FILE...`: one JSON line per recipient with dev.jsonl's fields; an
 * unreadable file is reported and sets exit code 1 without stopping the others.
 */
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runBounceClassify } from '../../src/cli/bounce-classify.js';
import { CORPUS_DIR } from './corpus-eval.js';

const test = suite('bounces/cli');

function collect(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

test('prints one JSON object per recipient with exactly the dev.jsonl fields', async () => {
  const out = collect();
  const err = collect();
  const files = [join(CORPUS_DIR, 'emails/lhost-exim-02.eml'), join(CORPUS_DIR, 'emails/arf-14.eml')];
  const code = await runBounceClassify(files, out.stream, err.stream);
  assert.is(code, 0);
  assert.is(err.text(), '');
  const lines = out.text().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.is(lines.length, 3);
  for (const l of lines) assert.equal(Object.keys(l), ['file', 'recipient', 'status', 'reason', 'hardbounce', 'feedbacktype']);
  assert.equal(lines[0], { file: files[0], recipient: 'kijitora@example.jp', status: '5.1.1', reason: 'userunknown', hardbounce: true, feedbacktype: null });
  assert.equal(lines[2], { file: files[1], recipient: 'kijitora@y.example.com', status: null, reason: 'feedback', hardbounce: false, feedbacktype: 'abuse' });
});

test('an unreadable file is reported, the others still run, exit code is 1', async () => {
  const out = collect();
  const err = collect();
  const missing = join(CORPUS_DIR, 'emails/does-not-exist.eml');
  const code = await runBounceClassify([missing, join(CORPUS_DIR, 'emails/lhost-postfix-05.eml')], out.stream, err.stream);
  assert.is(code, 1);
  assert.match(err.text(), 'does-not-exist.eml');
  assert.match(out.text(), '"recipient":"kijitora@example.org"');
});

test('a non-bounce prints nothing', async () => {
  const out = collect();
  const err = collect();
  assert.is(await runBounceClassify([join(CORPUS_DIR, 'emails/is-not-bounce-02.eml')], out.stream, err.stream), 0);
  assert.is(out.text(), '');
});

test.run();
