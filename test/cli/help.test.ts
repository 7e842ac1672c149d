/**
 * `sluice --help`, every command's --help, and the usage errors: an unknown command, an unknown
 * flag, a missing or unknown subcommand. Usage errors exit 2 and point at the help.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { sluice, spawnSluice, ROOT } from './run-cli.js';

const test = suite('cli/help');

const COMMANDS: [string[], RegExp][] = [
  [['start'], /^Usage: sluice start/],
  [['send'], /^Usage: sluice send/],
  [['queue'], /^Usage: sluice queue/],
  [['dkim'], /^Usage: sluice dkim keygen/],
  [['dkim', 'keygen'], /^Usage: sluice dkim keygen/],
  [['secret'], /^Usage: sluice secret hash/],
  [['secret', 'hash'], /^Usage: sluice secret hash/],
  [['config'], /^Usage: sluice config show/],
  [['config', 'check'], /^Usage: sluice config show/],
  [['bounce'], /^Usage: sluice bounce classify/],
  [['bounce', 'classify'], /^Usage: sluice bounce classify/],
  [['sink'], /^Usage: sluice sink/],
  [['campaign'], /^Usage: sluice campaign/],
  [['account'], /^Usage: sluice account/],
  [['audit'], /^Usage: sluice audit/],
  [['privacy'], /^Usage: sluice privacy/],
  [['webhooks'], /^Usage: sluice webhooks/],
  [['suppression'], /^Usage: sluice suppression/],
  [['list'], /^Usage: sluice list/],
];

test('sluice --help lists every command and exits 0', async () => {
  for (const flag of ['--help', '-h', 'help']) {
    const r = await sluice([flag]);
    assert.is(r.code, 0, flag);
    assert.is(r.err, '');
    for (const cmd of ['start', 'send', 'queue', 'dkim keygen', 'secret hash', 'bounce classify', 'config show', 'config check', 'sink']) {
      assert.ok(r.out.includes(`\n  ${cmd} `), `${flag} lists ${cmd}`);
    }
  }
});

test("each command's --help prints its usage on stdout and exits 0", async () => {
  for (const [cmd, usage] of COMMANDS) {
    for (const flag of ['--help', '-h']) {
      const r = await sluice([...cmd, flag]);
      assert.is(r.code, 0, `${cmd.join(' ')} ${flag}: ${r.err}`);
      assert.match(r.out, usage, `${cmd.join(' ')} ${flag}`);
      assert.is(r.err, '', `${cmd.join(' ')} ${flag} writes nothing on stderr`);
    }
  }
});

test('privacy and audit help name addresses in the audit log as they are written: hmac:… references', async () => {
  for (const cmd of ['privacy', 'audit']) {
    const r = await sluice([cmd, '--help']);
    assert.match(r.out, 'hmac:', cmd);
    assert.not.match(r.out, 'sha256', `${cmd}: store/audit.ts addressRef writes keyed hmac: references, not sha256`);
  }
});

test('no command at all prints the help and exits 2', async () => {
  const r = await sluice([]);
  assert.is(r.code, 2);
  assert.match(r.out, 'Usage: sluice <command>');
});

test('an unknown command exits 2 and names the help', async () => {
  const r = await sluice(['frobnicate', '--now']);
  assert.is(r.code, 2);
  assert.is(r.out, '');
  assert.match(r.err, "unknown command 'frobnicate'");
  assert.match(r.err, "Run 'sluice <command> --help'");
});

test('an unknown flag exits 2, names the flag and the help of that command', async () => {
  for (const [cmd, name] of [[['queue'], 'queue'], [['send'], 'send'], [['dkim', 'keygen'], 'dkim'], [['config', 'show'], 'config'], [['secret', 'hash'], 'secret'], [['sink'], 'sink'], [['start'], 'start']] as const) {
    const r = await sluice([...cmd, '--bogus']);
    assert.is(r.code, 2, `${cmd.join(' ')} --bogus`);
    assert.match(r.err, "'--bogus'");
    assert.match(r.err, `Run 'sluice ${name} --help' for usage.`);
    assert.is(r.out, '');
  }
});

test('a missing, unknown or extra subcommand exits 2 with a message on stderr', async () => {
  const missing = await sluice(['dkim', '--domain', 'a.example']);
  assert.is(missing.code, 2);
  assert.match(missing.err, 'missing subcommand (keygen)');
  const unknown = await sluice(['config', 'validate']);
  assert.is(unknown.code, 2);
  assert.match(unknown.err, "unknown subcommand 'validate' (known: show, check)");
  assert.match(unknown.err, "Run 'sluice config --help'");
  const extra = await sluice(['secret', 'hash', 'hunter2']);
  assert.is(extra.code, 2);
  assert.match(extra.err, "unexpected argument 'hunter2'");
  const bounce = await sluice(['bounce', 'classify']);
  assert.is(bounce.code, 2, 'bounce classify without files');
  assert.match(bounce.err, 'Usage: sluice bounce classify');
  assert.is(bounce.out, '');
});

test('a flag that needs a value and has none is a usage error', async () => {
  const r = await sluice(['queue', '--limit']);
  assert.is(r.code, 2);
  assert.match(r.err, '--limit');
});

test('as a real process: --help exits 0, an unknown command exits 2, --version prints it', async () => {
  const [help, unknown, version] = await Promise.all([spawnSluice(['--help']), spawnSluice(['nope']), spawnSluice(['--version'])]);
  assert.is(help.code, 0, help.err);
  assert.match(help.out, 'Usage: sluice <command> [options]');
  assert.is(unknown.code, 2);
  assert.match(unknown.err, "unknown command 'nope'");
  assert.is(version.code, 0);
  assert.match(version.out, /^\d+\.\d+\.\d+\n$/);
});

test('output to a reader that went away (`sluice config show | true`): a quiet end, exit 0, no EPIPE', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('../helpers/sluice-child.ts', import.meta.url)), 'config', 'show'], {
    cwd: ROOT, env: { ...process.env, SLUICE_CONFIG: '' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.destroy(); // the reader is gone before the first write
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  assert.not.match(err, /EPIPE|Error/, err);
  assert.is(code, 0);
});

test.run();
