/**
 * `sluice bounce classify` through main(): one JSON line per recipient, with exactly the fields of
 * the corpus labels (../shared/corpus/bounces/dev.jsonl), and the labelled values for two real mails:
 * a two-recipient Sendmail DSN and an ARF complaint without a recipient.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { PassThrough, Readable } from 'node:stream';
import { CORPUS_DIR } from '../bounces/corpus-eval.js';
import { sluice, spawnSluice, startCliRedis } from './run-cli.js';
import { main } from '../../src/cli/main.js';
import { newId } from '../../src/core/ids.js';
import { recordOutcome, storeFeedback, type FeedbackOutcome } from '../../src/feedback/raw-store.js';
import { readAudit } from '../../src/store/audit.js';

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

test('list: the mail the MX stored and did not act on, newest first, with its envelope and size; show: one mail as received, audited', async () => {
  const cli = await startCliRedis();
  try {
    const hour = 3_600_000;
    const t0 = Date.now() - 10_000;
    const stored: { id: string; raw: Buffer }[] = [];
    const store = async (rcpt: string, raw: string, outcome: FeedbackOutcome, at: number) => {
      const id = newId(at);
      assert.ok(await storeFeedback(cli.client, cli.keys, { id, raw: Buffer.from(raw, 'latin1'), rcpts: [rcpt], mailFrom: 'admin@provider.test', receivedAt: at }, hour));
      await recordOutcome(cli.client, cli.keys, id, outcome, at, hour);
      stored.push({ id, raw: Buffer.from(raw, 'latin1') });
      return id;
    };
    const garbage = await store('b-x@bounce.test', 'garbage', 'unparsed', t0);
    await store('b-y@bounce.test', 'a bounce we acted on', 'processed', t0 + 1);
    const gone = await store('b-z@bounce.test', 'expired', 'unmatched', t0 + 2);
    await cli.client.del(cli.keys.feedbackRaw(gone));
    const note = 'Subject: blocked\r\n\r\nYou are \x1b[2Jblocked\xe9 \xc3\xa9 \xc2\x9b1m.\r\n';
    const postmaster = await store('Postmaster', note, 'unparsed', t0 + 3);

    const r = await sluice(['bounce', 'list', '--config', cli.cfg]);
    assert.is(r.code, 0, r.err);
    const lines = r.out.trimEnd().split('\n');
    assert.is(lines.length, 2, `the processed and the expired mail are not listed: ${r.out}`);
    assert.ok(lines[0]?.startsWith(`${postmaster}  ${new Date(t0 + 3).toISOString()}  unparsed  to Postmaster  from <admin@provider.test>  ${Buffer.byteLength(note, 'latin1')} bytes`), lines[0]);
    assert.ok(lines[1]?.startsWith(`${garbage}  `), 'newest first');
    const json = await sluice(['bounce', 'list', '--json', '--limit', '1', '--config', cli.cfg]);
    assert.equal(JSON.parse(json.out), { id: postmaster, receivedAt: new Date(t0 + 3).toISOString(), outcome: 'unparsed', rcpts: ['Postmaster'], mailFrom: 'admin@provider.test', bytes: Buffer.byteLength(note, 'latin1') });

    const shown = await sluiceBytes(['bounce', 'show', postmaster, '--config', cli.cfg]);
    assert.is(shown.code, 0);
    assert.ok(shown.out.equals(Buffer.from(note, 'latin1')), 'the bytes as received');
    const [entry] = await readAudit(cli.client, cli.keys, { limit: 1 });
    assert.equal([entry?.action, entry?.target, entry?.from], ['feedback.read', postmaster, 'cli']);
    // On a terminal, a hostile mail's control characters (here: clear the screen) are not written.
    const tty = await sluiceBytes(['bounce', 'show', postmaster, '--config', cli.cfg], true);
    assert.is(tty.out.toString('latin1'), note.replace('\x1b', '?').replace('\xc2\x9b', '??'), 'other bytes (latin1 é, UTF-8 é) as they are');

    const missing = await sluice(['bounce', 'show', gone, '--config', cli.cfg]);
    assert.is(missing.code, 1);
    assert.match(missing.err, `no stored feedback mail ${gone}`);
    assert.is((await sluice(['bounce', 'show', 'not-an-id', '--config', cli.cfg])).code, 2);
    assert.is((await sluice(['bounce', 'list', '--limit', '0', '--config', cli.cfg])).code, 2);
    await cli.client.del(cli.keys.feedbackUnprocessed());
    assert.is((await sluice(['bounce', 'list', '--config', cli.cfg])).out, 'no stored feedback mail waits for an operator\n');
  } finally {
    await cli.stop();
  }
});

/** main() with stdout kept as bytes; `tty` makes it look like a terminal. */
async function sluiceBytes(argv: string[], tty = false): Promise<{ code: number; out: Buffer }> {
  const out = Object.assign(new PassThrough(), { isTTY: tty });
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const code = await main(argv, { out, err: new PassThrough(), env: {}, stdin: Readable.from([]) });
  return { code, out: Buffer.concat(chunks) };
}

test.run();
