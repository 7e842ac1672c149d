/**
 * The yardstick issue 2 names, measured on this machine: Postfix relaying 5 KB messages to a sink,
 * without and with OpenDKIM signing (RSA-2048). The issue gives 700–800/s and 350–380/s for the
 * machine it was written on; bench:e2e's figures are read against what this prints on the same host.
 *
 *   smtp-source (C, BENCH_SESSIONS sessions) ──SMTP──► Postfix ──SMTP──► smtp-sink (C)
 *                                                        │ milter (dkim phase)
 *                                                     opendkim (RSA-2048, relaxed/relaxed)
 *
 * Postfix is a private instance on loopback (test/helpers/postfix.ts): its own config, queue and log
 * under a temp folder, Postfix's defaults otherwise (queue files fsynced before the 250, 20
 * connections a destination, connection caching to the relay). smtp-source and smtp-sink are
 * Postfix's own load tools (C; Debian's postfix package), so the generator and the sink take little
 * CPU from the MTA. Each phase: a fresh instance, 200 messages to warm it up (not counted), then
 * BENCH_MESSAGES measured from the first connection to the last message the sink has.
 * The dkim phase first checks that OpenDKIM really signs: a few messages are kept by the sink and
 * their signatures verified by dkimpy (python3-dkim) against the public key.
 *
 *   npm run bench:postfix
 *   env: BENCH_MESSAGES (20000), BENCH_SESSIONS (20), BENCH_BYTES (5120)
 *   needs: postfix (installed by the README's first command); opendkim for the dkim phase
 *          (apt-get install -y opendkim), skipped with a note when missing. Runs as root (Postfix's master).
 *
 * Prints a table and writes bench/results/postfix.json. Takes ~3–4 min here (the OpenDKIM phase is the long one).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../test/helpers/redis.js';
import { ensurePostfix, startPostfix, type PrivatePostfix } from '../test/helpers/postfix.js';
import { verifyWithDkimpy } from '../test/helpers/dkim-verify.js';
import { until } from '../test/helpers/fault-load.js';
import { BENCH, exited, signingSpeed, sleep } from './harness.js';
import { machineBusySeconds, round } from './proc.js';

const MESSAGES = Number(process.env['BENCH_MESSAGES'] ?? 20_000);
const SESSIONS = Number(process.env['BENCH_SESSIONS'] ?? 20);
const BYTES = Number(process.env['BENCH_BYTES'] ?? 5_120);
const WARMUP = 200;
/** Messages the sink keeps for the signature check of the dkim phase. */
const CHECKED = 3;
/** Give up on a phase after this long (Postfix at 50 msgs/s would still finish 20,000 in time). */
const PHASE_TIMEOUT_MS = 600_000;
const SMTP_SOURCE = '/usr/sbin/smtp-source';
const SMTP_SINK = '/usr/sbin/smtp-sink';
const OPENDKIM = '/usr/sbin/opendkim';
const FROM_DOMAIN = 'bench.test';
const SELECTOR = 'bench';
const DEST = 'dest.test';

interface PhaseResult {
  phase: 'plain' | 'dkim';
  messages: number;
  bytes: number;
  sessions: number;
  /** smtp-source done: every message had its 250 (queued, fsynced). */
  accepted_per_s: number;
  /** The sink had every message. */
  delivered_per_s: number;
  seconds: number;
  /** CPU of the whole machine (all processes) while the phase ran, in cores. */
  machine_cores_busy: number;
  delivered: number;
  signatures_checked?: number;
}

/** smtp-sink counting DATA completions (-c); its running counter is read from stdout. */
interface Sink {
  port: number;
  count(): number;
  stop(): Promise<void>;
}

async function startSmtpSink(dumpDir?: string): Promise<Sink> {
  const port = await freePort();
  // -u postfix: it drops root; -d: one file per message (the signature check only); backlog 1024.
  const args = ['-c', '-u', 'postfix', ...(dumpDir ? ['-d', `${dumpDir}/%H%M%S.`] : []), `127.0.0.1:${port}`, '1024'];
  const child = spawn(SMTP_SINK, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let tail = '';
  let count = 0;
  const read = (chunk: Buffer): void => {
    tail = (tail + chunk.toString('latin1')).slice(-400);
    const all = [...tail.matchAll(/mesg=(\d+)/g)];
    const last = all[all.length - 1];
    if (last) count = Number(last[1]);
  };
  child.stdout?.on('data', read);
  let errors = '';
  child.stderr?.on('data', (c: Buffer) => (errors += c.toString()));
  await waitPort(port, child, () => `smtp-sink: ${errors}`);
  return { port, count: () => count, stop: () => stopChild(child) };
}

/** OpenDKIM as a milter on loopback, signing FROM_DOMAIN with an RSA-2048 key; its public key for the check. */
async function startOpendkim(dir: string): Promise<{ milter: string; publicKeyB64: string; stop(): Promise<void> }> {
  const port = await freePort();
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyFile = join(dir, `${SELECTOR}.private`);
  writeFileSync(keyFile, privateKey.export({ type: 'pkcs1', format: 'pem' }));
  // opendkim drops to its own user (UserID) and must read the key from there.
  chmodSync(keyFile, 0o644);
  const conf = join(dir, 'opendkim.conf');
  writeFileSync(conf, [
    'Syslog no',
    'Mode s',
    `Domain ${FROM_DOMAIN}`,
    `Selector ${SELECTOR}`,
    `KeyFile ${keyFile}`,
    // A key readable by others would be refused otherwise; this one is a throw-away bench key.
    'RequireSafeKeys false',
    'Canonicalization relaxed/relaxed',
    'SignatureAlgorithm rsa-sha256',
    `Socket inet:${port}@127.0.0.1`,
    'UserID opendkim',
    `PidFile ${join(dir, 'opendkim.pid')}`,
    '',
  ].join('\n'));
  const child = spawn(OPENDKIM, ['-f', '-x', conf], { stdio: ['ignore', 'inherit', 'inherit'] });
  await waitPort(port, child, () => 'opendkim');
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return { milter: `inet:127.0.0.1:${port}`, publicKeyB64: der.toString('base64'), stop: () => stopChild(child) };
}

/** Runs smtp-source: `count` messages of BYTES from bench@FROM_DOMAIN to rcpt@DEST over SESSIONS sessions. */
function source(port: number, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const args = ['-s', String(Math.min(SESSIONS, count)), '-l', String(BYTES), '-m', String(count), '-f', `bench@${FROM_DOMAIN}`, '-t', `rcpt@${DEST}`, `127.0.0.1:${port}`];
    const child = spawn(SMTP_SOURCE, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`smtp-source exited ${code}: ${err.trim()}`))));
  });
}

/** Waits for `cond` (polled every 20 ms), or throws naming `what`. */
async function reach(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  if (!(await until(cond, timeoutMs, 20))) throw new Error(`timed out waiting for ${what}`);
}

async function runPhase(phase: 'plain' | 'dkim'): Promise<PhaseResult> {
  const dir = mkdtempSync(join(tmpdir(), `sluice-bench-postfix-${phase}-`));
  chmodSync(dir, 0o755);
  // Everything started is stopped at the end, newest first, once; `release` stops one early.
  const running: { stop(): Promise<void> }[] = [];
  const own = <T extends { stop(): Promise<void> }>(x: T): T => (running.unshift(x), x);
  const release = async (x: { stop(): Promise<void> }): Promise<void> => {
    running.splice(running.indexOf(x), 1);
    await x.stop();
  };
  try {
    const dkim = phase === 'dkim' ? own(await startOpendkim(dir)) : undefined;
    const postfixPort = await freePort();
    const start = async (sink: Sink): Promise<PrivatePostfix> =>
      own(await startPostfix({ port: postfixPort, domain: 'relay.bench.test', routes: { [DEST]: `127.0.0.1:${sink.port}` }, ...(dkim ? { milter: dkim.milter } : {}) }));

    let checked: number | undefined;
    if (dkim) {
      // Does OpenDKIM sign what Postfix relays? A sink that keeps the messages, a verifier that is not ours.
      const dump = join(dir, 'dump');
      mkdirSync(dump);
      // smtp-sink writes there as the postfix user.
      chmodSync(dump, 0o777);
      const keeper = own(await startSmtpSink(dump));
      const pf = await start(keeper);
      await source(postfixPort, CHECKED);
      await reach('the checked messages at the sink', () => keeper.count() >= CHECKED, 30_000);
      await sleep(200);
      const files = readdirSync(dump).map((f) => readFileSync(join(dump, f)));
      const verdicts = await verifyWithDkimpy(files, { [`${SELECTOR}._domainkey.${FROM_DOMAIN}`]: `v=DKIM1; k=rsa; p=${dkim.publicKeyB64}` });
      const bad = verdicts.filter((v) => !(v.length === 1 && v[0]?.pass && v[0].domain === FROM_DOMAIN));
      if (files.length < CHECKED || bad.length > 0) throw new Error(`OpenDKIM's signatures did not verify: ${JSON.stringify(verdicts)}\n${pf.log().slice(-2000)}`);
      checked = files.length;
      await release(pf);
      await release(keeper);
    }

    const sink = own(await startSmtpSink());
    const pf = await start(sink);
    await source(postfixPort, WARMUP);
    await reach('the warm-up messages at the sink', () => sink.count() >= WARMUP, 60_000);
    const base = sink.count();

    const busy0 = machineBusySeconds();
    const t0 = performance.now();
    let acceptedAt = 0;
    const submitted = source(postfixPort, MESSAGES).then(() => (acceptedAt = performance.now()));
    try {
      await reach('every message at the sink', () => sink.count() - base >= MESSAGES, PHASE_TIMEOUT_MS);
    } catch (err) {
      throw new Error(`${(err as Error).message} (${sink.count() - base} of ${MESSAGES})\n${pf.log().slice(-2000)}`);
    }
    const t1 = performance.now();
    await submitted;
    const seconds = (t1 - t0) / 1000;
    return {
      phase,
      messages: MESSAGES,
      bytes: BYTES,
      sessions: SESSIONS,
      accepted_per_s: Math.round(MESSAGES / ((acceptedAt - t0) / 1000)),
      delivered_per_s: Math.round(MESSAGES / seconds),
      seconds: round(seconds, 2),
      machine_cores_busy: round((machineBusySeconds() - busy0) / seconds, 2),
      delivered: sink.count() - base,
      ...(checked !== undefined ? { signatures_checked: checked } : {}),
    };
  } finally {
    for (const x of running) await x.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function waitPort(port: number, child: ChildProcess, what: () => string): Promise<void> {
  let exited = false;
  child.once('exit', () => (exited = true));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited) throw new Error(`${what()} exited before listening on ${port}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what()} is not listening on ${port}`);
    await sleep(50);
  }
}

/** SIGTERM, then SIGKILL if it has not exited after 5 s. */
function stopChild(child: ChildProcess): Promise<void> {
  child.kill('SIGTERM');
  return exited(child, 5_000);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("Postfix's master must start as root: run this as root");
  const pf = await ensurePostfix();
  if (!pf.ok) throw new Error(pf.why);
  for (const tool of [SMTP_SOURCE, SMTP_SINK]) if (!existsSync(tool)) throw new Error(`${tool} not found (Debian's postfix package has it)`);
  const signing = signingSpeed();
  console.log(`this machine, one core: ${signing.rsa2048_signs_per_s_one_core} RSA-2048 and ${signing.ed25519_signs_per_s_one_core} Ed25519 signatures/s (${cpus()[0]?.model ?? 'unknown CPU'})`);
  console.log(`postfix bench: ${MESSAGES} messages of ${BYTES} B, ${SESSIONS} smtp-source sessions, after ${WARMUP} to warm up`);
  const load = loadavg()[0] ?? 0;
  const results: PhaseResult[] = [];
  let skipped: string | undefined;
  results.push(await runPhase('plain'));
  if (existsSync(OPENDKIM)) results.push(await runPhase('dkim'));
  else skipped = `dkim phase skipped: ${OPENDKIM} not found (apt-get install -y opendkim)`;

  console.log('\nphase   delivered/s  accepted/s  seconds  machine cores busy');
  for (const r of results) {
    console.log(`${r.phase.padEnd(7)} ${String(r.delivered_per_s).padStart(11)} ${String(r.accepted_per_s).padStart(11)} ${r.seconds.toFixed(1).padStart(8)} ${r.machine_cores_busy.toFixed(2).padStart(19)}`);
  }
  const dkimRow = results.find((r) => r.phase === 'dkim');
  if (dkimRow?.signatures_checked) console.log(`OpenDKIM's RSA-2048 signatures verified by dkimpy on ${dkimRow.signatures_checked} relayed messages`);
  if (skipped) console.log(skipped);
  console.log("issue 2's reference machine: 700–800/s plain, 350–380/s with OpenDKIM");

  const out = {
    when: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', loadavg_1m_before: round(load, 2), ...signing },
    setup: { messages: MESSAGES, bytes: BYTES, sessions: SESSIONS, warmup: WARMUP, postfix: 'private instance, Debian defaults (test/helpers/postfix.ts)', load: 'smtp-source', sink: 'smtp-sink' },
    postfix_delivered_per_s: results.find((r) => r.phase === 'plain')?.delivered_per_s ?? null,
    postfix_opendkim_delivered_per_s: dkimRow?.delivered_per_s ?? null,
    phases: results,
    ...(skipped ? { skipped } : {}),
  };
  mkdirSync(join(BENCH, 'results'), { recursive: true });
  writeFileSync(join(BENCH, 'results', 'postfix.json'), `${JSON.stringify(out, null, 2)}\n`);
  console.log('\nwrote bench/results/postfix.json');
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
