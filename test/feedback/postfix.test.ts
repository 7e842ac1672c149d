import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startSluiceFixture, type SluiceFixture } from '../helpers/sluice.js';
import { GLOBAL_LIST, suppressionOf } from '../../src/store/suppression.js';
import { loadFeedback } from '../../src/feedback/raw-store.js';
import { classifyMessage } from '../../src/bounces/index.js';

/**
 * Interoperability with a real MTA: Debian's Postfix as the receiving MX on loopback.
 *
 *   Sluice ──SMTP──► Postfix (127.0.0.1:<free>)  250 queued: it accepts for pfx.test …
 *                      │ local(8): no such user ─► bounce(8) writes a real RFC 3464 DSN
 *                      └──SMTP (transport map: bounce.test) ──► Sluice inbound MX
 *                                                  classify ─► suppress globally ─► next send 'suppressed'
 *
 * Nothing here imitates Postfix: the DSN is whatever Postfix's bounce daemon writes. The instance
 * is private (own config, queue and data directories under a temp folder, its own log file), so it
 * neither touches nor needs the system's Postfix, and it can send mail nowhere but to Sluice.
 * Postfix's master must start as root (it drops to the `postfix` user); CI runs as root. If Postfix
 * is missing it is installed with apt-get; only if that is impossible is the test skipped.
 */
const test = suite('feedback/postfix');

const POSTFIX = '/usr/sbin/postfix';
const BOUNCE_DOMAIN = 'bounce.test';
const PFX_DOMAIN = 'pfx.test';
/**
 * An address Postfix accepts at RCPT (the domain is its own and it does not check local users at
 * the door) but cannot deliver: no such Unix account and no alias table. Not "nobody": that account
 * exists on Debian, and local(8) would happily deliver to /var/mail/nobody.
 */
const UNKNOWN = `no-such-user@${PFX_DOMAIN}`;
/** apt-get update + install on a cold CI machine: minutes at worst, not hours. */
const INSTALL_TIMEOUT_MS = 300_000;
/** Postfix answers within a second on loopback; 20 s absorbs a loaded shared machine. */
const DSN_TIMEOUT_MS = 20_000;

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeout = 60_000): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}${err && code === 1 && !stdout && !stderr ? err.message : ''}` });
    });
  });
}

/** Postfix's path, installing the Debian package when it is missing; otherwise why it cannot be had. */
async function ensurePostfix(): Promise<{ ok: true } | { ok: false; why: string }> {
  if (existsSync(POSTFIX)) return { ok: true };
  if (process.getuid?.() !== 0) return { ok: false, why: 'postfix is not installed and this process is not root, so it cannot install it' };
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const update = await run('apt-get', ['update', '-qq'], env, INSTALL_TIMEOUT_MS);
  const install = update.code === 0 ? await run('apt-get', ['install', '-y', '-qq', 'postfix'], env, INSTALL_TIMEOUT_MS) : update;
  if (install.code !== 0 || !existsSync(POSTFIX)) return { ok: false, why: `apt-get could not install postfix: ${install.out.trim().split('\n').slice(-3).join(' / ')}` };
  return { ok: true };
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  if (typeof addr !== 'object' || !addr) throw new Error('no port');
  return addr.port;
}

interface PrivatePostfix {
  dir: string;
  port: number;
  log(): string;
  stop(): Promise<void>;
}

/**
 * A private Postfix instance: `postfix -c <dir>/etc` reads only our main.cf and master.cf. Every
 * setting below is there for a reason, said beside it; the rest are Postfix's defaults.
 */
async function startPostfix(port: number, feedbackPort: number): Promise<PrivatePostfix> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-postfix-'));
  // Postfix's daemons run as the `postfix` user and chdir into the queue below: the folder must be traversable.
  chmodSync(dir, 0o755);
  const etc = join(dir, 'etc');
  const log = join(dir, 'maillog');
  writeFileSync(join(dir, 'transport'), [
    // The only destination reachable from this instance: the bounce domain, at Sluice's inbound MX.
    // [brackets]: connect to that address as given, no MX lookup (there is no DNS for .test).
    `${BOUNCE_DOMAIN} smtp:[127.0.0.1]:${feedbackPort}`,
    '',
  ].join('\n'));
  const main = [
    // Current defaults, and no "backwards-compatible default setting" warnings in the log.
    'compatibility_level = 3.6',
    // Everything stateful lives under the temp folder, nothing under /var or /etc of the system.
    `queue_directory = ${dir}/spool`,
    // Left for Postfix to create: it must be owned by the postfix user (master.lock lives there).
    `data_directory = ${dir}/data`,
    // No syslog in a container: postlogd writes here, and a failure message quotes it.
    `maillog_file = ${log}`,
    `maillog_file_prefixes = ${dir}`,
    // Identity in the greeting, Received: and Reporting-MTA of the DSN.
    `myhostname = mx.${PFX_DOMAIN}`,
    `mydomain = ${PFX_DOMAIN}`,
    `myorigin = ${PFX_DOMAIN}`,
    // pfx.test is this machine's own mail domain: RCPT to it is accepted and delivered by local(8).
    `mydestination = ${PFX_DOMAIN}`,
    // Empty: smtpd does not look local users up at RCPT time, so the unknown user is ACCEPTED (250)
    // and only local(8) finds out it does not exist — the "accept, then bounce" path of a real MX
    // (a gateway in front of the mailbox store) that forces Postfix to write a DSN.
    'local_recipient_maps =',
    // No /etc/aliases: the private instance must not depend on or rebuild the system's alias db.
    'alias_maps =',
    'alias_database =',
    // Listen on loopback only (the smtpd line in master.cf names 127.0.0.1 and the port too).
    'inet_interfaces = loopback-only',
    'inet_protocols = ipv4',
    'mynetworks = 127.0.0.0/8',
    // Relays nothing to the internet: the bounce domain goes to Sluice (transport map), everything
    // else fails at once with a bounce instead of leaving the machine.
    `transport_maps = texthash:${join(dir, 'transport')}`,
    'default_transport = error:this test instance delivers nowhere else',
    'relay_transport = error:this test instance relays nothing',
    // Plain SMTP both ways: no certificates to make, and Sluice's inbound MX offers no STARTTLS.
    'smtpd_tls_security_level = none',
    'smtp_tls_security_level = none',
    '',
  ];
  const master = [
    // service          type  private unpriv chroot wakeup maxproc command
    // No chroot (the 5th column 'n') anywhere: a chroot would need copies of /etc files in the queue.
    `127.0.0.1:${port}  inet  n       -      n      -      -       smtpd`,
    'pickup             unix  n       -      n      60     1       pickup',
    'cleanup            unix  n       -      n      -      0       cleanup',
    'qmgr               unix  n       -      n      300    1       qmgr',
    'rewrite            unix  -       -      n      -      -       trivial-rewrite',
    'bounce             unix  -       -      n      -      0       bounce',
    'defer              unix  -       -      n      -      0       bounce',
    'trace              unix  -       -      n      -      0       bounce',
    'verify             unix  -       -      n      -      1       verify',
    'flush              unix  n       -      n      1000?  0       flush',
    'proxymap           unix  -       -      n      -      -       proxymap',
    'smtp               unix  -       -      n      -      -       smtp',
    'relay              unix  -       -      n      -      -       smtp',
    'showq              unix  n       -      n      -      -       showq',
    'error              unix  -       -      n      -      -       error',
    'retry              unix  -       -      n      -      -       error',
    'discard            unix  -       -      n      -      -       discard',
    // local(8) runs as root to switch to the recipient's account; here it only finds there is none.
    'local              unix  -       n      n      -      -       local',
    'anvil              unix  -       -      n      -      1       anvil',
    'scache             unix  -       -      n      -      1       scache',
    'postlog            unix-dgram n  -      n      -      1       postlogd',
    '',
  ];
  mkdirSync(etc);
  // The queue's root is root's (Postfix refuses anything else); `postfix start` fills in its subfolders.
  mkdirSync(join(dir, 'spool'), { mode: 0o755 });
  writeFileSync(join(etc, 'main.cf'), main.join('\n'));
  writeFileSync(join(etc, 'master.cf'), master.join('\n'));
  const readLog = () => (existsSync(log) ? readFileSync(log, 'utf8') : '');

  // `postfix start` creates the queue directories with the right owners, then starts master(8).
  const started = await run(POSTFIX, ['-c', etc, 'start']);
  if (started.code !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`postfix did not start (exit ${started.code}): ${started.out}\n${readLog()}`);
  }
  return {
    dir,
    port,
    log: readLog,
    async stop() {
      // `stop` waits up to 5 s for master(8) to exit and then kills its process group.
      const stopped = await run(POSTFIX, ['-c', etc, 'stop']);
      if (stopped.code !== 0) await run(POSTFIX, ['-c', etc, 'abort']);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const available = await ensurePostfix();
let redis: TestRedis | undefined;
let s: SluiceFixture | undefined;
let postfix: PrivatePostfix | undefined;
/** uvu drops an error thrown by a `before` hook without a word: keep it and fail the test with it. */
let setupError: unknown;

test.before(async () => {
  if (!available.ok) return;
  try {
    redis = await startRedis();
    const postfixPort = await freePort();
    s = await startSluiceFixture(redis, {
      roles: ['ingress', 'delivery', 'feedback'],
      feedback: { host: '127.0.0.1', port: 0 },
      delivery: { bounceDomain: BOUNCE_DOMAIN, transport: { [PFX_DOMAIN]: `127.0.0.1:${postfixPort}` } },
    });
    postfix = await startPostfix(postfixPort, s.app.ports.feedback as number);
  } catch (err) {
    setupError = err;
  }
});

test.after(async () => {
  await postfix?.stop();
  await s?.stop();
  await redis?.stop();
});

/** Sessions Postfix's smtpd accepted mail in (one "client=" line per queued message). */
function postfixIntake(): number {
  return (postfix!.log().match(/postfix\/smtpd\[\d+\]: [0-9A-F]+: client=/g) ?? []).length;
}

const postfixTest = available.ok ? test : test.skip;
if (!available.ok) console.log(`SKIP feedback/postfix: ${available.why}`);

postfixTest('Postfix accepts, bounces with its own DSN to the VERP address; Sluice classifies it and suppresses the recipient', async () => {
  if (setupError) throw setupError;
  const fx = s!;
  const first = await fx.api('/v1/messages', { body: { from: 'news@acme.example', to: UNKNOWN, subject: 'hello', text: 'x' } });
  assert.is(first.status, 202, JSON.stringify(first.body));
  const final = await fx.waitFinal(first.body.id);
  assert.is(final.recipients[0].state, 'delivered', 'Postfix answered 250 to the message');
  assert.is(postfixIntake(), 1, postfix!.log());

  let entry = null;
  for (const deadline = Date.now() + DSN_TIMEOUT_MS; !entry && Date.now() < deadline;) {
    entry = await suppressionOf(fx.app.redis.client, fx.app.keys, 'acme', UNKNOWN);
    if (!entry) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(entry, `not suppressed; postfix log:\n${postfix!.log()}`);
  assert.is(entry!.list, GLOBAL_LIST, 'an unknown user goes on the global list');
  assert.is(entry!.reason, 'hardbounce');
  assert.is(entry!.evidence['status'], '5.1.1');

  // The evidence leads to the stored mail: Postfix's own DSN, as its bounce daemon wrote it.
  const stored = await loadFeedback(fx.app.redis.client, fx.app.keys, String(entry!.evidence['feedbackId']));
  assert.ok(stored, 'the DSN is kept raw');
  assert.is(stored!.mailFrom, '', 'a DSN has the null return path');
  assert.is(stored!.rcpts.length, 1);
  assert.match(stored!.rcpts[0]!, new RegExp(`^b-[0-9a-z]+-0-[0-9a-z]{8}@${BOUNCE_DOMAIN.replace('.', '\\.')}$`), 'sent to the VERP address');
  const raw = stored!.raw.toString('latin1');
  assert.match(raw, /report-type=delivery-status/);
  assert.match(raw, new RegExp(`Reporting-MTA: dns; mx\\.${PFX_DOMAIN.replace('.', '\\.')}`));
  assert.match(raw, /X-Postfix-Queue-ID: [0-9A-F]+/);
  assert.match(postfix!.log(), /sender non-delivery notification/);

  const records = await classifyMessage(stored!.raw);
  assert.is(records.length, 1, JSON.stringify(records));
  assert.is(records[0]!.recipient, UNKNOWN);
  assert.is(records[0]!.reason, 'userunknown');
  assert.is(records[0]!.status, '5.1.1');
  assert.is(records[0]!.hardbounce, true);

  // The next message to the address is dropped before it costs anything: Postfix never sees it.
  const second = await fx.api('/v1/messages', { body: { from: 'news@acme.example', to: UNKNOWN, subject: 'again', text: 'x' } });
  const again = await fx.waitFinal(second.body.id);
  assert.is(again.recipients[0].state, 'suppressed');
  assert.is(postfixIntake(), 1, 'no second message reached Postfix');
});

test.run();
