/**
 * `sluice dkim keygen`: the key file (PEM, 0600, the right type), and the printed TXT record proven
 * publishable — a message signed with the new key by our signer passes two verifiers that are not
 * ours (mailauth, dkimpy), whose DNS answers are built from the PRINTED line, not from dnsRecord().
 */
import { createPrivateKey } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import YAML from 'yaml';
import { prepareSigner, signMessage } from '../../src/render/dkim.js';
import { verifyWithDkimpy, verifyWithMailauth } from '../helpers/dkim-verify.js';
import { sluice } from './run-cli.js';

const test = suite('cli/dkim');
let dir: string;

test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-cli-dkim-'));
});
test.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The DNS name and TXT value an operator would publish from the printed line (quoted strings joined, as resolvers do). */
function printedRecord(out: string): { name: string; value: string; strings: string[] } {
  const m = /^(\S+)\. IN TXT ((?:"[^"]*"\s*)+)$/m.exec(out);
  assert.ok(m, `a zone-file TXT line in:\n${out}`);
  const strings = [...(m[2] as string).matchAll(/"([^"]*)"/g)].map((x) => x[1] as string);
  return { name: m[1] as string, value: strings.join(''), strings };
}

const MESSAGE = Buffer.from(
  'From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: keygen check\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <k1@example.org>\r\n\r\nHello,\r\nthis message is signed with the new key.\r\n',
);

async function assertPublishable(keyFile: string, out: string, domain: string, selector: string, algorithm: 'rsa' | 'ed25519') {
  const rec = printedRecord(out);
  assert.is(rec.name, `${selector}._domainkey.${domain}`);
  for (const s of rec.strings) assert.ok(s.length <= 255, `TXT string of ${s.length} > 255 octets`);
  assert.match(rec.value, new RegExp(`^v=DKIM1; k=${algorithm}; p=[A-Za-z0-9+/]+=*$`));
  const signer = prepareSigner({ domain, selector, algorithm, privateKeyPem: readFileSync(keyFile, 'utf8') });
  const { signed } = signMessage(MESSAGE, [signer]);
  const table = { [rec.name.toLowerCase()]: rec.value };
  const ma = await verifyWithMailauth(signed, table);
  assert.is(ma.length, 1, JSON.stringify(ma));
  assert.ok(ma[0]?.pass, `mailauth: ${ma[0]?.detail}`);
  assert.is(ma[0]?.algo, algorithm === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256');
  const [py] = await verifyWithDkimpy([signed], table);
  assert.is(py?.length, 1, JSON.stringify(py));
  assert.ok(py?.[0]?.pass, `dkimpy: ${py?.[0]?.detail}`);
  // The same message under a record with another key must fail: the check above is not vacuous.
  const other = await sluice(['dkim', 'keygen', '--domain', domain, '--selector', selector, '--type', algorithm, '--out', join(dir, `other-${algorithm}.pem`), '--force']);
  const wrong = await verifyWithMailauth(signed, { [rec.name.toLowerCase()]: printedRecord(other.out).value });
  assert.not.ok(wrong[0]?.pass, 'a record of another key does not verify');
}

test('rsa: writes a 0600 PKCS#8 PEM of a 2048-bit RSA key, and the printed record verifies', async () => {
  const keyFile = join(dir, 'rsa', 'acme.pem');
  const r = await sluice(['dkim', 'keygen', '--domain', 'Acme.Example', '--selector', 's2026', '--out', keyFile]);
  assert.is(r.code, 0, r.err);
  assert.is(statSync(keyFile).mode & 0o777, 0o600);
  const pem = readFileSync(keyFile, 'utf8');
  assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n/);
  const key = createPrivateKey(pem);
  assert.is(key.asymmetricKeyType, 'rsa');
  assert.is(key.asymmetricKeyDetails?.modulusLength, 2048);
  assert.match(r.out, `private key written to ${keyFile}`);
  const rec = printedRecord(r.out);
  assert.ok(rec.strings.length >= 2, 'a 2048-bit record needs more than one TXT string');
  await assertPublishable(keyFile, r.out, 'acme.example', 's2026', 'rsa');
});

test('ed25519: writes an Ed25519 key, and the printed record (raw 32-byte key) verifies', async () => {
  const keyFile = join(dir, 'ed.pem');
  const r = await sluice(['dkim', 'keygen', '--domain', 'acme.example', '--selector', 'e2026', '--type', 'ed25519', '--out', keyFile]);
  assert.is(r.code, 0, r.err);
  assert.is(statSync(keyFile).mode & 0o777, 0o600);
  assert.is(createPrivateKey(readFileSync(keyFile, 'utf8')).asymmetricKeyType, 'ed25519');
  const rec = printedRecord(r.out);
  assert.is(Buffer.from(rec.value.split('p=')[1] as string, 'base64').length, 32);
  await assertPublishable(keyFile, r.out, 'acme.example', 'e2026', 'ed25519');
});

test('the printed config lines are YAML the config schema takes, with the absolute key path', async () => {
  const keyFile = join(dir, 'with space', 'k.pem');
  const r = await sluice(['dkim', 'keygen', '--domain', 'acme.example', '--selector', 'sel.v2', '--type', 'ed25519', '--out', keyFile]);
  assert.is(r.code, 0, r.err);
  const snippet = r.out.slice(r.out.indexOf('  dkim:'));
  const parsed = YAML.parse(snippet) as { dkim: unknown[] };
  assert.equal(parsed.dkim, [{ selector: 'sel.v2', algorithm: 'ed25519', keyFile }]);
});

test('an existing file is kept without --force (exit 2); --force replaces it with a 0600 file', async () => {
  const keyFile = join(dir, 'exists.pem');
  writeFileSync(keyFile, 'old contents');
  chmodSync(keyFile, 0o644);
  const refused = await sluice(['dkim', 'keygen', '--domain', 'acme.example', '--selector', 's1', '--type', 'ed25519', '--out', keyFile]);
  assert.is(refused.code, 2);
  assert.match(refused.err, 'exists; pass --force');
  assert.is(readFileSync(keyFile, 'utf8'), 'old contents');
  const forced = await sluice(['dkim', 'keygen', '--domain', 'acme.example', '--selector', 's1', '--type', 'ed25519', '--out', keyFile, '--force']);
  assert.is(forced.code, 0, forced.err);
  assert.is(createPrivateKey(readFileSync(keyFile, 'utf8')).asymmetricKeyType, 'ed25519');
  assert.is(statSync(keyFile).mode & 0o777, 0o600, 'the replaced key does not keep the old 0644');
});

test('a key that cannot be written (its folder is a file) exits 1 saying why, not that the key exists', async () => {
  const file = join(dir, 'a-file');
  writeFileSync(file, 'x');
  const r = await sluice(['dkim', 'keygen', '--domain', 'acme.example', '--selector', 's1', '--type', 'ed25519', '--out', join(file, 'key.pem')]);
  assert.is(r.code, 1, r.err);
  assert.match(r.err, `cannot create the folder ${file} for the key`);
  assert.not.match(r.err, 'exists; pass --force');
  assert.not.match(r.out, 'Publish this DNS TXT record', 'no record for a key that was not written');
});

test('bad domain, selector, type or bits: exit 2 with a clear message, and no file', async () => {
  const keyFile = join(dir, 'never.pem');
  const cases: [string[], string][] = [
    [['--selector', 's1'], '--domain is required'],
    [['--domain', 'no_underscores.example', '--selector', 's1'], "--domain 'no_underscores.example' is not a valid domain name"],
    [['--domain', 'localhost', '--selector', 's1'], 'is not a valid domain name'],
    [['--domain', 'acme.example'], '--selector is required'],
    [['--domain', 'acme.example', '--selector', 'bad selector'], "--selector 'bad selector' is not valid"],
    [['--domain', 'acme.example', '--selector=-lead'], "--selector '-lead' is not valid"],
    [['--domain', 'acme.example', '--selector', 'x'.repeat(64)], 'is not valid'],
    // An empty label: the record name would be x.._domainkey.acme.example, which no DNS takes.
    [['--domain', 'acme.example', '--selector', 'x.'], "--selector 'x.' is not valid"],
    [['--domain', 'acme.example', '--selector', 'a..b'], "--selector 'a..b' is not valid"],
    [['--domain', 'acme.example', '--selector', 's1', '--type', 'dsa'], "--type must be 'rsa' or 'ed25519', not 'dsa'"],
    [['--domain', 'acme.example', '--selector', 's1', '--bits', '1024'], '--bits must be 2048, 3072, 4096'],
    [['--domain', 'acme.example', '--selector', 's1', '--bits', 'lots'], '--bits must be'],
    [['--domain', 'acme.example', '--selector', 's1', '--type', 'ed25519', '--bits', '2048'], '--bits applies to RSA keys only'],
  ];
  for (const [args, message] of cases) {
    const r = await sluice(['dkim', 'keygen', ...args, '--out', keyFile]);
    assert.is(r.code, 2, args.join(' '));
    assert.match(r.err, message, args.join(' '));
    assert.is(r.out, '');
  }
  assert.not.ok(existsSync(keyFile));
});

test.run();
