import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { RawSmtp, type NoReply, type SmtpReply } from '../helpers/raw-smtp.js';
import {
  writeSluiceConfig, startSluiceProcess, killAllSluiceProcesses, adminGet, metricValue, sleep, type SluiceInstance, type SluiceProcess,
} from '../helpers/sluice-process.js';
import { recordFigures } from '../helpers/fault-figures.js';

/**
 * Fault: bad input on the two SMTP servers of a real Sluice process — submission (STARTTLS + AUTH)
 * and the feedback role's inbound MX. Malformed commands, a 1,000-recipient flood, 50 MB messages,
 * very long lines, bare LF, NUL bytes, invalid UTF-8 and slow-loris connections: each gets its own
 * refusal code (asserted), and a well-behaved client is served meanwhile and afterwards.
 *
 * Submission refuses malformed content (554 5.6.0, src/ingress/message-check.ts): what it accepts
 * is signed and relayed as it is. The inbound MX takes bounces from any MTA on the internet, however
 * broken; a bounce refused is a bounce lost (nobody bounces a bounce), so it refuses what breaks its
 * limits (size, recipients, line length of commands, idle time) but accepts odd content — bare LF, NUL,
 * invalid UTF-8 — and stores and parses it without harm. That is asserted too.
 */
const test = suite('faults/smtp-input');

const SOCKET_TIMEOUT_MS = 2_000;
const MAX_CLIENTS = 40;
const SUBMISSION_MAX_RCPTS = 100;
const MX_MAX_RCPTS = 50;
const FBL = 'fbl@bounce.localhost';
/** More FBL addresses than the MX takes per transaction, so a flood of valid recipients passes its limit. */
const FBLS = Array.from({ length: MX_MAX_RCPTS + 10 }, (_, i) => `fbl${i}@bounce.localhost`);
const GOOD = 'From: news@acme.example\r\nTo: someone@example.net\r\nSubject: hello\r\n\r\nA well-behaved message.\r\n';

let redis: TestRedis;
let inst: SluiceInstance | undefined;
let sluice: SluiceProcess;
let mxPort = 0;
const open: RawSmtp[] = [];
const tally = { tried: 0, refused: 0, servedMeanwhile: 0, submissionsAccepted: 0 };

test.before(async () => {
  redis = await startRedis();
  inst = await writeSluiceConfig({
    redisUrl: redis.url,
    prefix: `t${randomUUID().slice(0, 8)}:`,
    transport: {},
    overrides: {
      roles: ['ingress', 'feedback'],
      ingress: { smtp: { socketTimeout: `${SOCKET_TIMEOUT_MS}ms`, maxClients: MAX_CLIENTS, maxRecipients: SUBMISSION_MAX_RCPTS } },
      feedback: { host: '127.0.0.1', port: 0, socketTimeout: `${SOCKET_TIMEOUT_MS}ms`, maxClients: MAX_CLIENTS, maxRecipients: MX_MAX_RCPTS, fblAddresses: [FBL, ...FBLS] },
    },
  });
  sluice = await startSluiceProcess(inst);
  mxPort = (sluice.logs.find((l) => l.msg === 'sluice started')?.['ports'] as { feedback: number }).feedback;
});

test.after(async () => {
  for (const c of open) c.close();
  await killAllSluiceProcesses();
  await redis?.stop();
  inst?.remove();
});

async function connect(port: number): Promise<RawSmtp> {
  const { client, greeting } = await RawSmtp.open(port);
  open.push(client);
  assert.is(greeting.code, 220, `greeting: ${greeting.text}`);
  return client;
}

/** An authenticated submission session. */
async function submission(): Promise<RawSmtp> {
  const c = await connect(sluice.ports.smtp as number);
  await c.startTls();
  const auth = await c.auth('acme', (inst as SluiceInstance).account.smtpPass);
  assert.is(auth.code, 235, `auth: ${auth.text}`);
  return c;
}

async function mx(): Promise<RawSmtp> {
  const c = await connect(mxPort);
  assert.is((await c.cmd('EHLO client.test')).code, 250);
  return c;
}

/** Asserts a refusal's code (and enhanced code when given), and counts it. */
function refused(r: SmtpReply | NoReply, code: number, what: string, enhanced?: string): void {
  tally.tried++;
  assert.is(r.code, code, `${what}: expected ${code}, got ${JSON.stringify(r.text).slice(0, 200)}`);
  if (enhanced) assert.ok(r.text.startsWith(`${code} ${enhanced}`), `${what}: enhanced code ${enhanced} in ${JSON.stringify(r.text).slice(0, 200)}`);
  tally.refused++;
}

/** MAIL, RCPT, DATA, the payload (CRLF.CRLF added) and the final answer. */
async function transaction(c: RawSmtp, from: string, to: string, payload: Buffer | string, timeoutMs = 10_000): Promise<SmtpReply | NoReply> {
  assert.is((await c.cmd(`MAIL FROM:<${from}>`)).code, 250, 'MAIL');
  assert.is((await c.cmd(`RCPT TO:<${to}>`)).code, 250, 'RCPT');
  assert.is((await c.cmd('DATA')).code, 354, 'DATA');
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'latin1');
  await c.write(Buffer.concat([body, Buffer.from(body.subarray(-2).equals(Buffer.from('\r\n')) ? '.\r\n' : '\r\n.\r\n')]));
  return c.reply(timeoutMs);
}

/** A well-behaved client, served while the bad ones are at it. */
async function wellBehavedSubmission(): Promise<void> {
  const c = await submission();
  const r = await transaction(c, 'news@acme.example', 'someone@example.net', GOOD);
  assert.is(r.code, 250, `a well-behaved submission is served: ${r.text}`);
  assert.is((await c.cmd('QUIT')).code, 221);
  tally.servedMeanwhile++;
  tally.submissionsAccepted++;
}

async function wellBehavedMx(): Promise<void> {
  const c = await mx();
  const r = await transaction(c, '', FBL, 'From: fbl@provider.example\r\nTo: fbl@bounce.localhost\r\nSubject: report\r\n\r\nA complaint report.\r\n');
  assert.is(r.code, 250, `a well-behaved sender is served by the MX: ${r.text}`);
  tally.servedMeanwhile++;
}

const bytes = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));

// ── submission ────────────────────────────────────────────────────────────────────────────────

test('submission: malformed commands get 500 / 501 / 503 and the session goes on', async () => {
  const c = await submission();
  refused(await c.cmd('HELLO WORLD'), 500, 'unknown command');
  refused(await c.cmd('RCPT TO:<a@example.net>'), 503, 'RCPT before MAIL');
  refused(await c.cmd('DATA'), 503, 'DATA before MAIL');
  refused(await c.cmd('MAIL FROM:<not an address'), 501, 'unterminated address');
  refused(await c.cmd('MAIL FROM:<ne\0ws@acme.example>'), 501, 'NUL in a command');
  refused(await c.cmd('MAIL FROM:<someone@other.example>'), 550, 'From domain not owned', '5.7.1');
  assert.is((await c.cmd('NOOP')).code, 250, 'still serving this session');
});

test('submission: invalid UTF-8 in addresses gets 553 5.1.3', async () => {
  const c = await submission();
  refused(await c.cmd(bytes('MAIL FROM:<n', [0xff, 0xfe], '@acme.example>')), 553, 'invalid UTF-8 sender', '5.1.3');
  assert.is((await c.cmd('MAIL FROM:<news@acme.example>')).code, 250);
  refused(await c.cmd(bytes('RCPT TO:<r', [0xc3, 0x28], '@example.net>')), 553, 'invalid UTF-8 recipient', '5.1.3');
  assert.is((await c.cmd('RCPT TO:<fine@example.net>')).code, 250, 'a valid recipient after it is taken');
});

test('submission: a pipelined 1,000-recipient flood gets 250 up to the limit and 452 4.5.3 beyond', async () => {
  const c = await submission();
  assert.is((await c.cmd('MAIL FROM:<news@acme.example>')).code, 250);
  await c.write(Array.from({ length: 1000 }, (_, i) => `RCPT TO:<r${i}@example.net>\r\n`).join(''));
  const codes: number[] = [];
  for (let i = 0; i < 1000; i++) codes.push((await c.reply()).code);
  assert.equal(codes.slice(0, SUBMISSION_MAX_RCPTS), new Array(SUBMISSION_MAX_RCPTS).fill(250));
  const beyond = codes.slice(SUBMISSION_MAX_RCPTS);
  tally.tried += beyond.length;
  assert.ok(beyond.every((x) => x === 452), `every recipient beyond ${SUBMISSION_MAX_RCPTS} refused with 452: ${[...new Set(beyond)].join(',')}`);
  tally.refused += beyond.length;
  await wellBehavedSubmission();
});

test('submission: 50 MB messages get 552 (declared at MAIL, or streamed) while a well-behaved client is served', async () => {
  const declared = await submission();
  refused(await declared.cmd('MAIL FROM:<news@acme.example> SIZE=52428800'), 552, 'SIZE=50MB declared');
  const c = await submission();
  const line = 'y'.repeat(998) + '\r\n';
  const big = Buffer.from(GOOD + line.repeat(Math.ceil((50 * 1024 * 1024) / line.length)), 'latin1');
  const [answer] = await Promise.all([transaction(c, 'news@acme.example', 'someone@example.net', big, 60_000), wellBehavedSubmission()]);
  refused(answer, 552, '50 MB streamed', '5.3.4');
  assert.is((await c.cmd('NOOP')).code, 250, 'the session survives the refusal');
});

test('submission: long lines — a 100 KB command gets 421 and the close, a 100 KB data line 554 5.6.0', async () => {
  const c = await submission();
  refused(await c.cmd(`MAIL FROM:<${'a'.repeat(100_000)}@acme.example>`), 421, '100 KB command line');
  await c.closed;
  const d = await submission();
  refused(await transaction(d, 'news@acme.example', 'someone@example.net', GOOD + 'z'.repeat(100_000) + '\r\n'), 554, '100 KB line in the data', '5.6.0');
  refused(await transaction(d, 'news@acme.example', 'someone@example.net', GOOD + 'z'.repeat(999) + '\r\n'), 554, '999-octet line in the data', '5.6.0');
  assert.is((await transaction(d, 'news@acme.example', 'someone@example.net', GOOD + 'z'.repeat(998) + '\r\n')).code, 250, 'a 998-octet line is fine');
  tally.submissionsAccepted++;
});

test('submission: bare LF, bare CR, NUL and non-UTF-8 headers get 554 5.6.0; a smuggled "\\n.\\n" ends nothing', async () => {
  const c = await submission();
  // The smuggling attempt: after a bare-LF "end of data", a second transaction. Only one answer may
  // come, for the whole thing, and it is a refusal.
  const smuggle = 'From: news@acme.example\r\nTo: a@example.net\r\nSubject: x\r\n\r\nbody\n.\nMAIL FROM:<news@acme.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n';
  refused(await transaction(c, 'news@acme.example', 'a@example.net', smuggle), 554, 'bare LF (smuggling)', '5.6.0');
  assert.is((await c.reply(300)).text, 'timeout', 'no second answer: the smuggled commands were data');
  refused(await transaction(c, 'news@acme.example', 'a@example.net', 'From: news@acme.example\nTo: a@example.net\nSubject: x\n\nbody\n'), 554, 'bare LF line ends', '5.6.0');
  refused(await transaction(c, 'news@acme.example', 'a@example.net', GOOD + 'a\rb\r\n'), 554, 'bare CR', '5.6.0');
  refused(await transaction(c, 'news@acme.example', 'a@example.net', GOOD + 'nul\0byte\r\n'), 554, 'NUL in the body', '5.6.0');
  refused(await transaction(c, 'news@acme.example', 'a@example.net', bytes('From: news@acme.example\r\nSubject: h', [0xff, 0xc3], 'i\r\n\r\nbody\r\n')), 554, 'invalid UTF-8 header', '5.6.0');
  // An 8-bit body in another charset is legitimate (8BITMIME) and accepted.
  assert.is((await transaction(c, 'news@acme.example', 'a@example.net', bytes('From: news@acme.example\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nna', [0xef], 've\r\n'))).code, 250, 'a latin-1 body is fine');
  tally.submissionsAccepted++;
});

test('submission: slow-loris — idle clients get 421 at the socket timeout, clients past maxClients 421 at once, others are served', async () => {
  const idle = await connect(sluice.ports.smtp as number);
  const t0 = Date.now();
  // Trickling clients: a byte every 300 ms of a command that never ends.
  const tricklers = await Promise.all(Array.from({ length: 10 }, () => connect(sluice.ports.smtp as number)));
  let trickling = true;
  const trickle = (async () => {
    for (let i = 0; trickling; i++) {
      await Promise.all(tricklers.map((t) => t.write(i === 0 ? 'MAIL FROM:<' : 'a')));
      await sleep(300);
    }
  })();
  await wellBehavedSubmission();
  const r = await idle.reply(SOCKET_TIMEOUT_MS + 3_000);
  const idleMs = Date.now() - t0;
  refused(r, 421, 'idle connection');
  assert.ok(idleMs >= SOCKET_TIMEOUT_MS - 200 && idleMs < SOCKET_TIMEOUT_MS + 2_000, `closed after the socket timeout (${idleMs} ms)`);
  // Fill the remaining slots: the one past maxClients is refused at its greeting.
  const filler = await Promise.all(Array.from({ length: MAX_CLIENTS - tricklers.length }, () => RawSmtp.open(sluice.ports.smtp as number)));
  for (const f of filler) open.push(f.client);
  const past = await RawSmtp.open(sluice.ports.smtp as number);
  open.push(past.client);
  refused(past.greeting, 421, 'connection past maxClients');
  trickling = false;
  await trickle;
  for (const t of [...tricklers, ...filler.map((f) => f.client)]) t.close();
  await sleep(200);
  await wellBehavedSubmission();
});

// ── inbound MX (feedback role) ────────────────────────────────────────────────────────────────

test('inbound MX: malformed commands and foreign recipients are refused, the session goes on', async () => {
  const c = await mx();
  refused(await c.cmd('FOO BAR'), 500, 'unknown command');
  refused(await c.cmd(`RCPT TO:<${FBL}>`), 503, 'RCPT before MAIL');
  refused(await c.cmd('MAIL FROM:<broken'), 501, 'unterminated address');
  assert.is((await c.cmd('MAIL FROM:<>')).code, 250);
  refused(await c.cmd('RCPT TO:<someone@example.net>'), 550, 'relaying', '5.1.1');
  refused(await c.cmd(bytes('RCPT TO:<fbl', [0xff], '@bounce.localhost>')), 550, 'invalid UTF-8 recipient', '5.1.1');
  refused(await c.cmd(`RCPT TO:<${'b'.repeat(100_000)}@bounce.localhost>`), 421, '100 KB command line');
  await c.closed;
  await wellBehavedMx();
});

test('inbound MX: a 1,000-recipient flood gets 452 4.5.3 past its limit; 50 MB gets 552', async () => {
  const c = await mx();
  assert.is((await c.cmd('MAIL FROM:<>')).code, 250);
  // Distinct recipients (a repeated one is the same recipient): the FBL addresses first, then
  // foreign ones; past the limit every one gets 452, whatever it is.
  const flood = Array.from({ length: 1000 }, (_, i) => FBLS[i] ?? `r${i}@example.net`);
  await c.write(flood.map((a) => `RCPT TO:<${a}>\r\n`).join(''));
  const codes: number[] = [];
  for (let i = 0; i < 1000; i++) codes.push((await c.reply()).code);
  assert.equal(codes.slice(0, MX_MAX_RCPTS), new Array(MX_MAX_RCPTS).fill(250));
  const beyond = codes.slice(MX_MAX_RCPTS);
  tally.tried += beyond.length;
  assert.ok(beyond.every((x) => x === 452), `beyond ${MX_MAX_RCPTS}: 452 (${[...new Set(beyond)].join(',')})`);
  tally.refused += beyond.length;
  assert.is((await c.cmd('RSET')).code, 250);

  refused(await c.cmd('MAIL FROM:<> SIZE=52428800'), 552, 'SIZE=50MB declared');
  const d = await mx();
  const line = 'y'.repeat(998) + '\r\n';
  const big = Buffer.from('Subject: big\r\n\r\n' + line.repeat(Math.ceil((50 * 1024 * 1024) / line.length)), 'latin1');
  const [answer] = await Promise.all([transaction(d, '', FBL, big, 60_000), wellBehavedMx()]);
  refused(answer, 552, '50 MB streamed', '5.3.4');
});

test('inbound MX: bare LF, NUL and invalid UTF-8 in a bounce are taken (a refused bounce is lost) and stored without harm', async () => {
  const c = await mx();
  const odd = [
    'From: MAILER-DAEMON@old.example\nTo: fbl@bounce.localhost\nSubject: bare LF bounce\n\nbody\n.\nMAIL FROM:<x@example.net>\n',
    'From: MAILER-DAEMON@old.example\r\nSubject: nul\r\n\r\nnul\0here\r\n',
    bytes('From: MAILER-DAEMON@old.example\r\nSubject: caf', [0xe9, 0xff], '\r\n\r\nbody ', [0xc3, 0x28], '\r\n').toString('latin1'),
  ];
  for (const m of odd) {
    tally.tried++;
    const r = await transaction(c, '', FBL, m);
    assert.is(r.code, 250, `stored: ${r.text}`);
    assert.match(r.text, /stored as/);
  }
  assert.is((await c.reply(300)).text, 'timeout', 'the bare-LF "end of data" ended nothing');
  // Each was processed: the process is alive and counted them (processing runs after the answer).
  await sleep(500);
  const metrics = await adminGet(sluice.ports.admin, '/metrics');
  assert.ok((metricValue(metrics.text, 'sluice_feedback_received_total') ?? 0) >= odd.length, 'received and counted');
});

test('inbound MX: an idle connection gets 421 at the socket timeout', async () => {
  const c = await mx();
  const t0 = Date.now();
  refused(await c.reply(SOCKET_TIMEOUT_MS + 3_000), 421, 'idle MX connection');
  assert.ok(Date.now() - t0 >= SOCKET_TIMEOUT_MS - 200);
  await wellBehavedMx();
});

test('after it all: the process is healthy, and only the well-behaved submissions were accepted', async () => {
  const health = await adminGet(sluice.ports.admin, '/healthz');
  assert.is(health.status, 200);
  const metrics = await adminGet(sluice.ports.admin, '/metrics');
  const acceptedSmtp = metricValue(metrics.text, 'sluice_messages_accepted_total', { source: 'smtp' }) ?? 0;
  // Accepted: the well-behaved submissions, the 998-octet line and the latin-1 body; nothing else.
  assert.is(acceptedSmtp, tally.submissionsAccepted, 'no refused message was accepted');
  await recordFigures('smtp_input', { bad_inputs_tried: tally.tried, refused_with_right_code: tally.refused, well_behaved_served: tally.servedMeanwhile, accepted_submissions: acceptedSmtp });
  sluice.signal('SIGTERM');
  const exit = await sluice.waitExit(15_000);
  assert.is(exit.code, 0, `clean exit: ${sluice.stderr().slice(-500)}`);
});

test.run();
