/**
 * `sluice secret hash`: the printed hash is one verifySecret accepts for the secret given (on stdin
 * or in SLUICE_SECRET) and refuses for any other; `--api-key ID` prints a key and its hash that match.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { apiKeyAccount, isSecretHash, verifySecret } from '../../src/accounts/secrets.js';
import { sluice, spawnSluice } from './run-cli.js';

const test = suite('cli/secret');

function oneHash(out: string): string {
  const lines = out.trimEnd().split('\n');
  assert.is(lines.length, 1, `one line: ${out}`);
  assert.ok(isSecretHash(lines[0] as string), `a well-formed scrypt hash: ${out}`);
  return lines[0] as string;
}

test('--stdin: the first line of standard input is hashed (CRLF and later lines ignored)', async () => {
  const r = await sluice(['secret', 'hash', '--stdin'], { stdin: 'correct horse battery staple\r\nsecond line\n' });
  assert.is(r.code, 0, r.err);
  const hash = oneHash(r.out);
  assert.ok(await verifySecret('correct horse battery staple', hash));
  assert.not.ok(await verifySecret('correct horse battery staple\r', hash));
  assert.not.ok(await verifySecret('Correct horse battery staple', hash));
  assert.not.ok(await verifySecret('second line', hash));
});

test('SLUICE_SECRET: the variable is hashed; two runs salt differently', async () => {
  const env = { SLUICE_SECRET: 'pässwörd ✓' };
  const [a, b] = await Promise.all([sluice(['secret', 'hash'], { env }), sluice(['secret', 'hash'], { env })]);
  assert.is(a.code, 0, a.err);
  const ha = oneHash(a.out);
  const hb = oneHash(b.out);
  assert.is.not(ha, hb, 'fresh salt each time');
  assert.ok(await verifySecret('pässwörd ✓', ha));
  assert.ok(await verifySecret('pässwörd ✓', hb));
  assert.not.ok(await verifySecret('passwort ✓', ha));
});

test('--stdin as a real process reads the piped secret, multi-byte characters intact', async () => {
  const r = await spawnSluice(['secret', 'hash', '--stdin'], { input: 'sécret-über-密码\n' });
  assert.is(r.code, 0, r.err);
  const hash = oneHash(r.out);
  assert.ok(await verifySecret('sécret-über-密码', hash));
  assert.not.ok(await verifySecret('secret-uber', hash));
});

test('--api-key ID prints a key for that account and a hash that matches it', async () => {
  const r = await sluice(['secret', 'hash', '--api-key', 'acme']);
  assert.is(r.code, 0, r.err);
  const key = /^api key: (\S+)$/m.exec(r.out)?.[1];
  const hash = /^hash: +(\S+)$/m.exec(r.out)?.[1];
  assert.ok(key && hash, r.out);
  assert.is(apiKeyAccount(key), 'acme');
  assert.ok(await verifySecret(key, hash));
  assert.not.ok(await verifySecret(`${key.slice(0, -1)}${key.endsWith('A') ? 'B' : 'A'}`, hash));
  const again = await sluice(['secret', 'hash', '--api-key', 'acme']);
  assert.is.not(/^api key: (\S+)$/m.exec(again.out)?.[1], key, 'a new key each time');
});

test('no secret, an empty one, or a bad account id: exit 2 with a message, nothing on stdout', async () => {
  const cases: [string[], { env?: NodeJS.ProcessEnv; stdin?: string }, string][] = [
    [['secret', 'hash'], {}, 'no secret given'],
    [['secret', 'hash'], { env: { SLUICE_SECRET: '' } }, 'no secret given'],
    [['secret', 'hash', '--stdin'], { stdin: '' }, 'no secret given'],
    [['secret', 'hash', '--stdin'], { stdin: '\nlater\n' }, 'no secret given'],
    [['secret', 'hash', '--stdin'], { stdin: 'x'.repeat(10_000) }, 'longer than 4096'],
    [['secret', 'hash', '--api-key', 'Acme Corp'], {}, "--api-key 'Acme Corp' is not an account id"],
    [['secret', 'hash', '--api-key', 'acme', '--stdin'], {}, 'takes no --stdin'],
  ];
  for (const [argv, opts, message] of cases) {
    const r = await sluice(argv, opts);
    assert.is(r.code, 2, `${argv.join(' ')} ${JSON.stringify(opts).slice(0, 60)}`);
    assert.match(r.err, message);
    assert.is(r.out, '');
  }
});

test.run();
