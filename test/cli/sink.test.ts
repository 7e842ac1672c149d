/**
 * `sluice sink` as a real process: it listens (port 0 takes a free port and prints it), writes each
 * message nodemailer sends as an .eml file, survives a client that vanishes mid-DATA, stops
 * on SIGTERM and SIGINT with exit 0, and continues its numbering when started again in the folder.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createTransport } from 'nodemailer';
import { sluice, startSluice, type SluiceProcess } from './run-cli.js';

const test = suite('cli/sink');
let dir: string;
const running = new Set<SluiceProcess>();

test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-cli-sink-'));
});
test.after(async () => {
  for (const p of running) p.child.kill('SIGKILL');
  await Promise.all([...running].map((p) => p.exited()));
  rmSync(dir, { recursive: true, force: true });
});

async function startSink(): Promise<{ p: SluiceProcess; port: number }> {
  const p = startSluice(['sink', '--port', '0', '--dir', dir]);
  running.add(p);
  const m = await p.waitFor(/sink listening on 127\.0\.0\.1:(\d+), writing to (.+)\n/);
  assert.is(m[2], dir);
  const port = Number(m[1]);
  assert.ok(port > 0, 'the bound port is printed, not 0');
  return { p, port };
}

async function stop(p: SluiceProcess, signal: NodeJS.Signals): Promise<number> {
  p.child.kill(signal);
  const code = await p.exited();
  running.delete(p);
  return code;
}

function mailer(port: number) {
  // ignoreTLS: the sink offers no STARTTLS; a closed pool per message keeps nothing open after the test.
  return createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, connectionTimeout: 10_000 });
}

/** A client that opens a transaction and resets the TCP connection in its middle. */
function resetMidTransaction(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ host: '127.0.0.1', port });
    const steps = ['EHLO rude.test', 'MAIL FROM:<rude@rude.test>', 'RCPT TO:<victim@sink.test>', 'DATA'];
    let buf = '';
    sock.on('error', () => undefined);
    sock.on('data', (d: Buffer) => {
      buf += d.toString();
      // Each reply ends in a line '<code> <text>' (no dash): answer it with the next command.
      if (!/^\d{3} [^\n]*\r\n$/m.test(buf.slice(buf.lastIndexOf('\n', buf.length - 3) + 1))) return;
      buf = '';
      const next = steps.shift();
      if (next) sock.write(`${next}\r\n`);
      else {
        sock.write('Subject: half a message\r\n');
        sock.resetAndDestroy();
        resolve();
      }
    });
    setTimeout(() => reject(new Error('rude client timed out')), 10_000).unref();
  });
}

test('receives a message from nodemailer as an .eml file, survives a client vanishing mid-DATA, stops on SIGTERM', async () => {
  const { p, port } = await startSink();
  const t = mailer(port);
  const info = await t.sendMail({ from: 'Alice <alice@acme.example>', to: ['bob@one.test', 'carol@two.test'], subject: 'to the sink', text: 'captured body ✓' });
  t.close();
  assert.match(String(info.response), /^250 .*captured/);
  const m = await p.waitFor(/received (\S+\.eml) \(from alice@acme\.example\)/);
  const file = m[1] as string;
  assert.is(basename(file), '000001-bob@one.test_carol@two.test.eml');
  const raw = readFileSync(file, 'utf8');
  assert.match(raw, 'Subject: to the sink');
  assert.match(raw, /^To: bob@one\.test, carol@two\.test\r?$/m);
  assert.match(raw, info.messageId);

  await resetMidTransaction(port);
  const t2 = mailer(port);
  await t2.sendMail({ from: 'alice@acme.example', to: 'dave@one.test', subject: 'after the reset', text: 'still here' });
  t2.close();
  await p.waitFor(/received \S+000002-dave@one\.test\.eml/);
  assert.is(p.child.exitCode, null, 'still running after a client reset');

  assert.is(await stop(p, 'SIGTERM'), 0, p.err());
  assert.match(p.out(), /sink stopped\n$/);
  assert.equal(readdirSync(dir).sort(), ['000001-bob@one.test_carol@two.test.eml', '000002-dave@one.test.eml']);
});

test('started again in the same folder it continues the numbering; SIGINT stops it with exit 0', async () => {
  const { p, port } = await startSink();
  const t = mailer(port);
  await t.sendMail({ from: 'alice@acme.example', to: 'erin@one.test', subject: 'second run', text: 'x' });
  t.close();
  await p.waitFor(/received \S+000003-erin@one\.test\.eml/);
  assert.match(readFileSync(join(dir, '000001-bob@one.test_carol@two.test.eml'), 'utf8'), 'Subject: to the sink', 'the first run is not overwritten');
  assert.is(await stop(p, 'SIGINT'), 0, p.err());
});

test('a bad or busy port: exit 2 with a message, in-process (nothing starts, no signal handler stays)', async () => {
  const bad = await sluice(['sink', '--port', '70000', '--dir', dir]);
  assert.is(bad.code, 2);
  assert.match(bad.err, "--port must be 0–65535, not '70000'");
  const busy: Server = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
  const port = (busy.address() as { port: number }).port;
  try {
    const r = await sluice(['sink', '--port', String(port), '--dir', dir]);
    assert.is(r.code, 2);
    assert.match(r.err, `cannot listen on 127.0.0.1:${port}: EADDRINUSE`);
  } finally {
    await new Promise<void>((r) => busy.close(() => r()));
  }
  assert.is(process.listenerCount('SIGINT'), 0);
  assert.not.ok(existsSync(join(dir, '000004-')));
});

test.run();
